"""Shared neural blocks: conv encoder/decoder, residual blocks, VAR's phi refinement."""

from progvc.nn.autoencoder import ConvDecoder, ConvEncoder
from progvc.nn.blocks import Downsample, ResBlock, Upsample, group_norm
from progvc.nn.phi import Phi, SharedPhi

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "Downsample",
    "Phi",
    "ResBlock",
    "SharedPhi",
    "Upsample",
    "group_norm",
]
