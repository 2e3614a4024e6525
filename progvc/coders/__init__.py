"""Entropy coders: symbols + frequency tables <-> bytes. See :class:`EntropyCoder`."""

from progvc.coders.base import EntropyCoder, SymbolDecoder, SymbolEncoder
from progvc.registry import Registry

CODERS: Registry[EntropyCoder] = Registry("entropy coder", "progvc.coders", EntropyCoder)

__all__ = ["CODERS", "EntropyCoder", "SymbolDecoder", "SymbolEncoder"]
