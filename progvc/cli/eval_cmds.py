"""``progvc evaluate | demo``: thin commands over :mod:`progvc.evaluation`."""

from __future__ import annotations

import argparse

from progvc.errors import ConfigError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _size(text: str) -> tuple[int, int]:
    from progvc.io import parse_size

    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _numbers(text: str, what: str, allow_zero: bool) -> list[float]:
    """Comma-separated numbers, all > 0 (or >= 0 with ``allow_zero``); argparse errors otherwise."""
    try:
        values = [float(v) for v in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 0 or (not allow_zero and min(values) == 0):
        raise argparse.ArgumentTypeError(f"{what} must be {'>=' if allow_zero else '>'} 0, got {text!r}")
    return values


def _rates(text: str) -> list[float]:
    return _numbers(text, "rates", allow_zero=False)


def _weights(text: str) -> list[float]:
    return _numbers(text, "weights", allow_zero=True)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` and ``demo`` on ``progvc``'s parser."""
    from progvc.evaluation.anchors import ANCHORS
    from progvc.evaluation.demo import DEFAULT_FRAMES

    p = subparsers.add_parser(
        "evaluate",
        help="RD curves and BD-rates of progvc (every prefix of one stream) against x264, x265 and SVT-AV1",
    )
    p.add_argument(
        "videos", nargs="+", metavar="VIDEO", help="video files, or sample clips: carphone, bikes, ..."
    )
    p.add_argument("--model", default="default", help="progvc model file, Lightning checkpoint, or a packaged model: default, fast")
    p.add_argument("--anchors-only", action="store_true", help="evaluate the anchors alone (no progvc model)")
    p.add_argument(
        "--frames", type=_positive, default=32, help="frames per video, from the first (default 32)"
    )
    p.add_argument("--start", type=_non_negative, default=0, help="first frame of every video (default 0)")
    p.add_argument(
        "--size",
        type=_size,
        metavar="HxW",
        help="area-downscale every video to this size first (e.g. an HD clip at the density of small video)",
    )
    p.add_argument(
        "--gop", type=_positive, default=32, help="GOP size of progvc and the anchors (default 32)"
    )
    p.add_argument("--out", default="progvc-eval", help="output folder (default ./progvc-eval)")
    p.add_argument("--force", action="store_true", help="overwrite the results of an earlier run in --out")
    p.add_argument(
        "--anchors", type=_names, default=list(ANCHORS), help=f"comma-separated (default {','.join(ANCHORS)})"
    )
    p.add_argument(
        "--anchor-bpps",
        type=_rates,
        help="comma-separated target bits per pixel for the anchors (bitrate mode) instead of their crf sweeps",
    )
    p.add_argument(
        "--anchor-low-bpps",
        type=_rates,
        default=[],
        help="comma-separated target bits per pixel at which the anchors are also encoded (bitrate mode), "
        "their points joining each anchor's curve: for progvc curves below the anchors' lowest crf",
    )
    p.add_argument(
        "--synthesis",
        type=_names,
        default=["sample", "none"],
        help="progvc decoder synthesis modes, one curve each (default sample,none)",
    )
    p.add_argument(
        "--weights", help="folder with LPIPS/DISTS/FVD weight files (default: the torch hub cache)"
    )
    p.add_argument("--no-perceptual", action="store_true", help="skip LPIPS, DISTS and FVD")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="synthesis sampling seed (default 0)")
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="STEPS",
        help="progvc's encoder latent refinement, gradient steps per frame (default 0 = off)",
    )
    p.add_argument(
        "--rdoq",
        type=_weights,
        metavar="MU[,MU...]",
        help="progvc's RDOQ rate weight, squared steps per bit (0 = off; default: the model's); "
        "several: one stream each, on one curve per synthesis mode (an encoder sweep)",
    )
    p.add_argument(
        "--motion",
        choices=("global", "none"),
        default="global",
        help="progvc's global motion compensation (default global)",
    )
    p.add_argument(
        "--skip",
        choices=("on", "off"),
        default="on",
        help="progvc's skip flags for predicted frames' all-zero scales (default on)",
    )
    p.add_argument(
        "--pixels",
        choices=("float32", "bfloat16"),
        default="float32",
        help="arithmetic of progvc's decoder to pixels (same streams; default float32)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "compare",
        help="BD-rate of one evaluation's progvc curves against another's (two models or encoder settings)",
    )
    p.add_argument("base", help="folder (or results.json) of the reference run of progvc evaluate")
    p.add_argument("test", help="folder (or results.json) of the run to compare against it")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_compare)

    p = subparsers.add_parser(
        "demo", help="code the held-out carphone clip once, decode every prefix of scales, write a PNG strip"
    )
    p.add_argument("--model", default="default", help="progvc model file, Lightning checkpoint, or a packaged model: default, fast")
    p.add_argument(
        "--frames", type=_positive, default=DEFAULT_FRAMES, help=f"frames to code (default {DEFAULT_FRAMES})"
    )
    p.add_argument("--video", help="another video instead of the held-out carphone clip")
    p.add_argument("--out", default="progvc-demo", help="output folder (default ./progvc-demo)")
    p.add_argument("--force", action="store_true", help="overwrite an earlier demo in --out")
    p.add_argument("--gop", type=_positive, default=32, help="GOP size (default 32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="synthesis sampling seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_demo)


def _evaluate(args: argparse.Namespace) -> int:
    from progvc.evaluation.evaluate import evaluate

    for mode in args.synthesis:
        if mode not in ("sample", "argmax", "none"):
            raise ConfigError(f"unknown synthesis mode {mode!r}; known: sample, argmax, none")
    result = evaluate(
        args.videos,
        model=None if args.anchors_only else args.model,
        frames=args.frames,
        gop=args.gop,
        out=args.out,
        force=args.force,
        anchors=args.anchors,
        anchor_bpps=args.anchor_bpps,
        anchor_low_bpps=args.anchor_low_bpps,
        synthesis=args.synthesis,
        weights=args.weights,
        perceptual=not args.no_perceptual,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
        refine_steps=args.refine,
        rdoq=args.rdoq,
        start=args.start,
        size=args.size,
        motion=args.motion,
        skip=args.skip == "on",
        pixels=args.pixels,
    )
    print(result.summary)
    print(f"\nwrote {len(result.files)} files to {args.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from progvc.evaluation.compare import compare_results, format_comparison, load_results

    rows = compare_results(load_results(args.base), load_results(args.test))
    print(json.dumps(rows, indent=2) if args.json else format_comparison(rows))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from progvc.evaluation.demo import run_demo

    result = run_demo(
        model=args.model,
        frames=args.frames,
        out=args.out,
        force=args.force,
        gop=args.gop,
        device=args.device,
        seed=args.seed,
        video=args.video,
        progress=not args.quiet,
    )
    print(result.table)
    print("\n" + "\n".join(f"wrote {path}" for path in result.files))
    return 0
