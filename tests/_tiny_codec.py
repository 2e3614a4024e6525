"""Tiny random-init codec models and a real clip, shared by the codec, bitstream and CLI tests."""

from __future__ import annotations

import functools

import numpy as np
import torch

from progvc.codec import Codec, CodecModel
from progvc.context_models import CONTEXT_MODELS
from progvc.io import read_video, sample_clip
from progvc.tokenizers import TOKENIZERS

SCALES = (1, 2, 3, 4)


def tiny_model(
    kind: str = "msvq", seed: int = 0, context: str = "var", prediction: str = "intra", **context_args
) -> CodecModel:
    """A random-init model with tiny widths: msvq (64 codes), msbsq (6 bits) or mssq (8 channels of
    9 levels), 4 scales, downsample 16; ``context_args`` go to the context model."""
    torch.manual_seed(seed)
    common = dict(latent_dim=8, scales=SCALES, downsample=16, width=8, max_width=16)
    if kind == "msvq":
        tokenizer = TOKENIZERS.create("msvq", vocab_size=64, **common)
    elif kind == "mssq":
        tokenizer = TOKENIZERS.create("mssq", levels=9, **common)
    else:
        tokenizer = TOKENIZERS.create("msbsq", bits=6, **common)
    spec = tokenizer.spec
    args = dict(
        latent_dim=spec.latent_dim, groups=spec.groups, alphabet=spec.alphabet, num_scales=spec.num_scales
    )
    if context == "var":
        args.update(width=32, depth=2, heads=2)
    args.update(context_args)
    return CodecModel(tokenizer, CONTEXT_MODELS.create(context, **args), prediction=prediction)


@functools.cache
def _clip() -> np.ndarray:
    frames, _ = read_video(sample_clip("bikes"), max_frames=5, start=40)
    frames = np.ascontiguousarray(frames[:, 120:168, 300:364])  # [5, 48, 64, 3]: 3 x 4 latent grid
    frames.setflags(write=False)
    return frames


def clip() -> np.ndarray:
    """Five real frames, 64 x 48 (read-only)."""
    return _clip()


@functools.cache
def codec(kind: str = "msvq", seed: int = 0) -> Codec:
    return Codec(tiny_model(kind, seed))


@functools.cache
def stream(kind: str = "msvq") -> bytes:
    """The clip compressed with every scale, GOP 3 (two GOPs: 3 + 2 frames)."""
    return codec(kind).compress(clip(), gop=3)
