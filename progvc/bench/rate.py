"""What the context model buys, in bits: ``python -m progvc.bench rate [--json]``.

Codes one clip with one tokenizer and several context models and reports the bits the range
coder actually wrote: bits per token (payload only) and bits per pixel (header included), per
context model. Context models are given as ``own`` (the model's), ``uniform``, or the path of a
model file / Lightning checkpoint whose context model is swapped in (its tokenizer must match).

    python -m progvc.bench rate --model default --context own runs/static/checkpoints/last.ckpt uniform
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from progvc.codec import Codec
from progvc.codec.model import CodecModel
from progvc.context_models import CONTEXT_MODELS
from progvc.errors import ConfigError
from progvc.io import read_video, resolve_video


def context_variant(model: CodecModel, which: str) -> tuple[str, CodecModel]:
    """``(label, model)`` with the context model named by ``which`` and ``model``'s tokenizer."""
    spec = model.tokenizer.spec
    if which == "own":
        return model.context_model.registry_name, model
    if which == "uniform":
        cm = CONTEXT_MODELS.create("uniform", **spec.context_args())
        return "uniform", CodecModel(model.tokenizer, cm, coder=model.coder)
    other = CodecModel.load(which)
    if other.tokenizer.spec != spec:
        raise ConfigError(f"{which}: its tokenizer's token layout differs from the model's")
    return other.context_model.registry_name, CodecModel(
        model.tokenizer, other.context_model, coder=model.coder
    )


def measure(model: CodecModel, frames: Any, gop: int) -> dict[str, float]:
    """Bits per token and bits per pixel of coding ``frames`` (uint8 ``[T, H, W, 3]``) with all scales."""
    codec = Codec(model, progress=False)
    data = codec.compress(frames, gop=gop)
    info = codec.inspect(data)
    t, h, w = frames.shape[:3]
    tokens = t * model.tokenizer.spec.tokens_per_frame(h, w) * model.tokenizer.spec.groups
    payload_bits = 8 * (info.size - info.header_bytes)
    return {
        "bits_per_token": payload_bits / tokens,
        "bpp": info.bpp(),
        "bytes": info.size,
        "tokens": tokens,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m progvc.bench rate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model file, Lightning checkpoint or a packaged model (default, fast)")
    parser.add_argument(
        "--context", nargs="+", default=["own", "uniform"], help="own, uniform, or model paths"
    )
    parser.add_argument(
        "--video", default="carphone", help="a path or a sample clip name (default: carphone)"
    )
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--gop", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = resolve_video(args.video)
    frames, _ = read_video(path, max_frames=args.frames)
    base = CodecModel.load(args.model)
    rows = []
    for which in args.context:
        label, model = context_variant(base, which)
        rows.append({"context": label, "source": which, **measure(model, frames, args.gop)})
    if args.json:
        print(json.dumps({"video": str(path), "frames": int(frames.shape[0]), "rate": rows}, indent=2))
    else:
        print(f"{path.name}: {frames.shape[0]} frames, GOP {args.gop}")
        print(f"{'context':<10} {'bits/token':>10} {'bpp':>8} {'bytes':>8}")
        for r in rows:
            print(f"{r['context']:<10} {r['bits_per_token']:>10.3f} {r['bpp']:>8.4f} {r['bytes']:>8d}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
