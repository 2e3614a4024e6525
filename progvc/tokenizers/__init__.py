"""Tokenizers: frames <-> multi-scale residual token maps. See :class:`Tokenizer`."""

from progvc.registry import Registry
from progvc.tokenizers.base import Tokenizer, TokenizerOutput, TokenSpec

TOKENIZERS: Registry[Tokenizer] = Registry("tokenizer", "progvc.tokenizers", Tokenizer)

__all__ = ["TOKENIZERS", "Tokenizer", "TokenizerOutput", "TokenSpec"]

from progvc.tokenizers import msbsq, mssq, msvq  # noqa: E402,F401  (register "msbsq", "mssq", "msvq")
