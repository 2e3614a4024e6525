"""Codec speed: ``python -m progvc.bench speed [--json]``.

Encode and decode frames per second of :class:`~progvc.codec.Codec` with a model (default: the
bundled one) on real frames: the held-out ``carphone`` clip at 176x144 and a centre crop of
``bikes`` at 640x272 (its full size). Encoding includes tokenization, the context model's
float64 coding path and range coding; decoding the inverse plus pixel decoding, all scales
received (no synthesis). Median over repeats of wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from progvc.codec import Codec
from progvc.codec.model import CodecModel
from progvc.io import read_video, sample_clip

#: (label, sample clip) pairs; both clips are used at their native size.
CLIPS = (("176x144", "carphone"), ("640x272", "bikes"))


def time_codec(codec: Codec, frames, repeats: int, gop: int) -> dict[str, float]:
    """Median encode / decode frames per second over ``repeats`` runs, and the stream's bpp."""
    enc, dec = [], []
    data = b""
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = codec.compress(frames, gop=gop)
        t1 = time.perf_counter()
        codec.decompress(data, synthesis="none")
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    n = frames.shape[0]
    return {
        "encode_fps": n / statistics.median(enc),
        "decode_fps": n / statistics.median(dec),
        "bpp": codec.inspect(data).bpp(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m progvc.bench speed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model file, Lightning checkpoint or 'default'")
    parser.add_argument("--frames", type=int, default=8, help="frames per run (default 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    codec = Codec(CodecModel.load(args.model), progress=False)
    rows = []
    for label, clip in CLIPS:
        frames, _ = read_video(sample_clip(clip), max_frames=args.frames)
        rows.append({"size": label, "frames": args.frames, **time_codec(codec, frames, args.repeats, args.frames)})
    if args.json:
        print(json.dumps({"threads": args.threads, "speed": rows}, indent=2))
    else:
        print(f"{'size':<9} {'encode fps':>10} {'decode fps':>10} {'bpp':>8}   ({args.threads} threads)")
        for r in rows:
            print(f"{r['size']:<9} {r['encode_fps']:>10.2f} {r['decode_fps']:>10.2f} {r['bpp']:>8.4f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
