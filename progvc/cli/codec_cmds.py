"""``progvc compress | decompress | truncate | info``: thin commands over :mod:`progvc.codec`.

Outputs are never overwritten without ``--force`` and are written to a temporary sibling first,
then moved into place, so a failed run leaves no half-written file behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from progvc.errors import ProgvcError


class FileError(ProgvcError, OSError):
    """An input that is missing or an output that exists (without ``--force``) or cannot be written."""


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register the codec sub-commands on ``progvc``'s parser."""
    p = subparsers.add_parser("compress", help="encode a video into a progressive .pgv stream")
    p.add_argument(
        "input", help="video file (mp4, y4m, ...), folder of images, or a sample clip: carphone, bikes, ..."
    )
    p.add_argument("output", help="stream to write (.pgv)")
    _model_args(p)
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--layers", type=int, help="scales to send per GOP (default: all)")
    rate.add_argument("--target-bpp", type=float, help="send per GOP the most scales that fit this rate")
    p.add_argument("--gop", type=int, default=32, help="frames per group of pictures (default 32)")
    p.add_argument("--frames", type=int, help="code at most this many frames")
    p.add_argument(
        "--synthesis",
        choices=("sample", "argmax", "none"),
        default="sample",
        help="decoder-side synthesis stored as the stream's default (default sample)",
    )
    p.add_argument("--seed", type=int, default=0, help="synthesis seed stored in the stream (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="synthesis temperature (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    p.add_argument(
        "--deadzone",
        metavar="INTRA,PREDICTED",
        help="encoder dead zone in quantization steps for frames coded alone and predicted ones "
        "(scalar tokenizers; default: the model's). Larger: fewer bits, lower quality",
    )
    p.add_argument(
        "--rdoq",
        type=float,
        metavar="MU",
        help="rate-distortion optimised quantization with the context model's tables: rate weight in "
        "squared quantization steps per bit (0 = off, the dead zone decides; default: the model's). "
        "Larger: fewer bits, lower quality",
    )
    p.add_argument(
        "--motion",
        choices=("global", "none"),
        default="global",
        help="global: estimate and send one translation per predicted frame, which the prediction "
        "loops follow (camera pans); none: predict every frame from the previous one in place "
        "(default global)",
    )
    p.add_argument(
        "--skip",
        choices=("on", "off"),
        default="on",
        help="on: a predicted frame flags each scale whose tokens are all zero and sends none for it "
        "(fewer bits, faster decoding of still content); off: every scale's tokens are sent (default on)",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="STEPS",
        help="encoder latent refinement: gradient steps per frame (default 0 = off; slower encoding, "
        "better quality per bit, same decoder)",
    )
    p.add_argument(
        "--refine-lambda",
        type=float,
        default=0.03,
        help="rate weight of the refinement, MSE per bit per pixel (default 0.03)",
    )
    _common_args(p)
    p.set_defaults(func=_compress)

    p = subparsers.add_parser("decompress", help="decode a .pgv stream to .y4m, .mp4 or a folder of PNGs")
    p.add_argument("input", help="stream (.pgv)")
    p.add_argument("output", help="video to write: .y4m, .mp4, .mkv, or a folder (no suffix) of PNGs")
    _model_args(p)
    p.add_argument("--layers", type=int, help="use at most this many received scales per GOP")
    p.add_argument(
        "--synthesis",
        choices=("sample", "argmax", "none"),
        help="how to fill the scales not used (default: the stream's)",
    )
    p.add_argument("--seed", type=int, help="synthesis seed (default: the stream's)")
    p.add_argument(
        "--pixels",
        choices=("float32", "bfloat16"),
        default="float32",
        help="arithmetic of the tokenizer's decoder, latents -> pixels: bfloat16 is about 1.7x faster "
        "on CPUs with native bfloat16 products, within about a level of float32's pixels (default float32)",
    )
    _limit_args(p)
    _common_args(p)
    p.set_defaults(func=_decompress)

    p = subparsers.add_parser("truncate", help="cut a stream to fewer scales, without re-encoding")
    p.add_argument("input", help="stream (.pgv)")
    p.add_argument("output", help="stream to write (.pgv)")
    p.add_argument("--layers", type=int, required=True, help="scales to keep per GOP")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_truncate)

    p = subparsers.add_parser("info", help="describe a .pgv stream (no model needed, except with --frames)")
    p.add_argument("input", help="stream (.pgv)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--frames",
        action="store_true",
        help="also decode with the model and give every frame's GOP, position and bits per scale",
    )
    _model_args(p)
    p.set_defaults(func=_info)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="model file, Lightning checkpoint, YAML recipe (with --weights), or a packaged model: default, "
        "fast (default: compress uses 'default'; decompress and info use the packaged model that made the stream)",
    )
    p.add_argument("--weights", help="weights for a YAML recipe given as --model")
    p.add_argument("--device", default="cpu", help="torch device for the networks (default cpu)")


def _limit_args(p: argparse.ArgumentParser) -> None:
    from progvc.codec import limits

    p.add_argument(
        "--max-pixels",
        type=int,
        default=limits.DEFAULT_MAX_PIXELS,
        help=f"refuse frames larger than this many pixels (default {limits.DEFAULT_MAX_PIXELS}, 3840x2160)",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=limits.DEFAULT_MAX_FRAMES,
        help=f"refuse streams of more frames (default {limits.DEFAULT_MAX_FRAMES})",
    )
    p.add_argument(
        "--max-synth-work",
        type=int,
        default=limits.DEFAULT_MAX_SYNTH_WORK,
        help="refuse streams whose synthesized scales add up to more frames x pixels x scales "
        f"(default {limits.DEFAULT_MAX_SYNTH_WORK})",
    )


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_codec(args: argparse.Namespace, limits=None, fingerprint: bytes | None = None, **options):
    """The codec of ``--model``; without it, the packaged model whose ``fingerprint`` a stream names
    (decompress, info), else the default one."""
    from progvc.codec import Codec, CodecModel
    from progvc.codec.model import packaged_model

    found = packaged_model(fingerprint) if args.model is None and fingerprint else None
    if found:
        model = found[1]
    elif str(args.model).endswith((".yaml", ".yml")):
        model = CodecModel.from_recipe(args.model, weights=args.weights)
    else:
        if args.weights:
            raise FileError("--weights goes with a YAML recipe as --model")
        model = CodecModel.load(args.model or "default")
    return Codec(
        model,
        device=args.device,
        progress=False if getattr(args, "quiet", False) else None,
        limits=limits,
        **options,
    )


def _read_stream(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileError(f"{path} exists; pass --force to overwrite it")
    if path.is_dir() and any(not _is_frame_png(p) for p in path.iterdir()):
        raise FileError(f"{path} is a folder holding other files than frame PNGs; refusing to replace it")
    if not path.parent.is_dir():
        raise FileError(f"{path.parent}: no such folder")


def _is_frame_png(p: Path) -> bool:
    return p.is_file() and p.name.startswith("frame_") and p.suffix == ".png"


def _write_atomically(path: Path, force: bool, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path`` (file or folder), then move it into place."""
    _check_output(path, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    target = tmp / path.name
    try:
        write(target)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(target, path)
    except OSError as exc:
        if isinstance(exc, ProgvcError):
            raise
        raise FileError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compress(args: argparse.Namespace) -> int:
    from progvc.codec import SynthesisSettings
    from progvc.io import probe_video, resolve_video

    out = Path(args.output)
    _check_output(out, args.force)
    args.input = resolve_video(args.input)  # a sample clip's name where no such file exists
    probe_video(args.input)  # an unreadable input fails before the model is loaded
    synthesis = SynthesisSettings(args.synthesis, args.seed, args.temperature, args.top_k)
    codec = _load_codec(
        args, refine_steps=args.refine, refine_lambda=args.refine_lambda, rdoq=args.rdoq, motion=args.motion,
        skip=args.skip == "on",
    )
    if args.deadzone is not None:
        codec.model.set_deadzone(args.deadzone)
    data = codec.compress(
        args.input,
        layers=args.layers,
        target_bpp=args.target_bpp,
        gop=args.gop,
        max_frames=args.frames,
        synthesis=synthesis,
    )
    _write_atomically(out, args.force, lambda tmp: tmp.write_bytes(data))
    info = codec.inspect(data)
    h = info.header
    print(
        f"{out}: {h.num_frames} frames {h.width}x{h.height}, {info.size} bytes, {info.bpp():.5f} bpp, "
        f"layers per GOP {list(info.gop_layers)}"
    )
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from progvc.codec.bitstream import parse
    from progvc.codec.limits import DecodeLimits
    from progvc.io import write_video

    out = Path(args.output)
    _check_output(out, args.force)
    limits = DecodeLimits(args.max_pixels, args.max_frames, args.max_synth_work)
    data = _read_stream(args.input)
    stream = parse(data, limits)  # validates the stream and its demands before the model is loaded
    header = stream.header
    limits.check(stream, args.layers, args.synthesis or header.synthesis.mode)
    codec = _load_codec(args, limits, fingerprint=header.fingerprint, pixels=args.pixels)
    gops = codec.iter_decompress(data, layers=args.layers, synthesis=args.synthesis, seed=args.seed)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        count = write_video(tmp, gops, fps=header.fps)

    _write_atomically(out, args.force, write)
    print(f"{out}: {count} frames {header.width}x{header.height}")
    return 0


def _truncate(args: argparse.Namespace) -> int:
    from progvc.codec import inspect, truncate

    out = Path(args.output)
    _check_output(out, args.force)
    data = truncate(_read_stream(args.input), args.layers)
    _write_atomically(out, args.force, lambda tmp: tmp.write_bytes(data))
    info = inspect(data)
    print(f"{out}: {info.size} bytes, {info.bpp():.5f} bpp, layers per GOP {list(info.gop_layers)}")
    return 0


def _frames_table(frames: list[dict]) -> str:
    """A readable table of :meth:`Codec.frame_bits`: one row per frame, bits per scale (``skip``: a
    skipped scale, whose flag costs a fraction of a bit) and in all, and the frame's global motion
    in latent pixels."""
    from progvc.codec.motion import MOTION_UNIT

    scales = max((len(f["bits"]) for f in frames), default=0)
    head = f"{'frame':>6s} {'gop':>4s} {'pos':>4s} " + " ".join(
        f"{'k=' + str(k + 1):>8s}" for k in range(scales)
    )
    rows = [head + f" {'total':>9s} {'motion (dy, dx)':>16s}"]
    for f in frames:
        skipped = set(f.get("skipped", ()))
        bits = " ".join("skip".rjust(8) if k in skipped else f"{b:8.0f}" for k, b in enumerate(f["bits"]))
        dy, dx = (v / MOTION_UNIT for v in f.get("motion", (0, 0)))
        rows.append(
            f"{f['index']:6d} {f['gop']:4d} {f['position']:4d} {bits} {sum(f['bits']):9.0f} {dy:+7.4f} {dx:+7.4f}"
        )
    first = [sum(f["bits"]) for f in frames if f["position"] == 0]
    rest = [sum(f["bits"]) for f in frames if f["position"] > 0]
    if first and rest:
        ratio = (sum(rest) / len(rest)) / max(sum(first) / len(first), 1e-9)
        rows.append(
            f"mean bits: first frame of a GOP {sum(first) / len(first):.0f}, others {sum(rest) / len(rest):.0f} ({ratio:.3f}x)"
        )
    return "\n".join(rows)


def _info(args: argparse.Namespace) -> int:
    from progvc.codec import inspect

    data = _read_stream(args.input)
    info = inspect(data)
    d = info.to_dict()
    if args.frames:
        d["frames"] = _load_codec(args, fingerprint=info.header.fingerprint).frame_bits(data)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    if args.frames:
        print(_frames_table(d["frames"]))
        return 0
    syn = d["synthesis"]
    lines = [
        f"progvc stream v{d['version']}, model {d['fingerprint']}, coder {d['coder']}",
        f"video: {d['width']}x{d['height']} @ {d['fps']} fps, {d['frames']} frames in {d['gops']} GOPs of {d['gop_size']}",
        f"scales: {d['scales']} ({d['layers']} present; per GOP {d['gop_layers']}), motion {d['motion']}, skip flags {'on' if d.get('skip') else 'off'}",
        f"synthesis: {syn['mode']} (seed {syn['seed']}, temperature {syn['temperature']}, top-k {syn['top_k']})",
        f"size: {d['size_bytes']} bytes ({d['header_bytes']} header), {d['bpp']:.5f} bpp",
        "bytes per scale: " + ", ".join(str(b) for b in d["bytes_per_scale"]),
        "bpp if cut after K scales: "
        + ", ".join(f"K={k}: {info.bpp(k):.5f}" for k in range(d["layers"] + 1)),
    ]
    print("\n".join(lines))
    return 0
