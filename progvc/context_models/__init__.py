"""Context models: next-scale token probabilities. See :class:`ContextModel`."""

from progvc.context_models.base import (
    ContextModel,
    cross_entropy_bits,
    interpolated_bits,
    scale_inputs,
    soft_cross_entropy_bits,
)
from progvc.registry import Registry

CONTEXT_MODELS: Registry[ContextModel] = Registry("context model", "progvc.context_models", ContextModel)

__all__ = [
    "CONTEXT_MODELS",
    "ContextModel",
    "cross_entropy_bits",
    "interpolated_bits",
    "scale_inputs",
    "soft_cross_entropy_bits",
]

from progvc.context_models import baselines, var  # noqa: E402,F401  (register "static", "uniform", "var")
