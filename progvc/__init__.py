"""progvc: progressive generative video compression.

Frames become multi-scale residual token maps (:mod:`progvc.tokenizers`), a next-scale
Transformer gives their probabilities (:mod:`progvc.context_models`), and a range coder turns
them into a progressive bitstream (:mod:`progvc.coders`, :mod:`progvc.codec`).
"""

__version__ = "0.1.0"

from progvc.errors import BitstreamError, ModelMismatchError, ProgvcError  # noqa: E402

__all__ = ["BitstreamError", "ModelMismatchError", "ProgvcError", "__version__"]
