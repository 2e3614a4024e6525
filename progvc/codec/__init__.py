"""The codec floor: :class:`Codec` (compress / decompress / truncate / inspect), the model file
(:class:`CodecModel`), the bitstream format (:mod:`progvc.codec.bitstream`) and decoder-side
synthesis (:class:`SynthesisSettings`).

Names are imported lazily, so that ``progvc info`` and ``progvc truncate`` (bitstream only) start
without loading torch and the plug-in registries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Codec": "progvc.codec.codec",
    "CodecModel": "progvc.codec.model",
    "ModelLoadError": "progvc.codec.model",
    "StreamInfo": "progvc.codec.bitstream",
    "inspect": "progvc.codec.bitstream",
    "truncate": "progvc.codec.bitstream",
    "SynthesisSettings": "progvc.codec.synthesis",
}

__all__ = ["Codec", "CodecModel", "ModelLoadError", "StreamInfo", "SynthesisSettings", "inspect", "truncate"]

if TYPE_CHECKING:
    from progvc.codec.bitstream import StreamInfo, inspect, truncate
    from progvc.codec.codec import Codec
    from progvc.codec.model import CodecModel, ModelLoadError
    from progvc.codec.synthesis import SynthesisSettings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'progvc.codec' has no attribute {name!r}")
