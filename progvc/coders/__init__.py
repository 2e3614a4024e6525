"""Entropy coders: symbols + frequency tables <-> bytes. See :class:`EntropyCoder`."""

from progvc.coders.base import EntropyCoder, SymbolDecoder, SymbolEncoder
from progvc.registry import Registry

CODERS: Registry[EntropyCoder] = Registry("entropy coder", "progvc.coders", EntropyCoder)

__all__ = ["CODERS", "EntropyCoder", "SymbolDecoder", "SymbolEncoder"]

from progvc.coders import range as _range  # noqa: E402,F401  (registers "range")
from progvc.coders import rans as _rans  # noqa: E402,F401  (registers "rans")
