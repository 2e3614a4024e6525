"""The bundled default model (``default.pt``); see docs/model_card.md."""
