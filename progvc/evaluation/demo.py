"""The demo: one stream of the held-out clip, decoded at every prefix of scales.

Compresses the first frames of ``carphone_pristine.mp4`` (176 x 144, never used for training) once,
decodes every prefix of ``k`` scales with decoder-side synthesis (``sample``) and without
(``none``), prints a table and writes a PNG strip: the original frame beside the decoded frame at
every prefix, one row per synthesis mode.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from progvc.evaluation.rd import write_csv, write_json
from progvc.evaluation.report import format_table, prepare_output_dir

#: default frame count; the demo must finish within 5 minutes on a 2-core CPU (see docs/evaluation.md).
DEFAULT_FRAMES = 8
#: files the demo writes (for the no-overwrite check).
OUTPUT_PATTERNS = ("demo.json", "demo.csv", "demo_strip.png")
SYNTHESIS_MODES = ("sample", "none")


@dataclass
class DemoResult:
    """Rows of the demo table (one per prefix and synthesis mode), the table as text, the files written."""

    rows: list[dict]
    table: str
    files: list[Path]


def save_strip(
    original: np.ndarray, decoded: dict[tuple[int, str], np.ndarray], rows: list[dict], path: str | Path
) -> Path:
    """PNG grid: one row per synthesis mode, the original frame then the frame after each prefix of scales.

    Args:
        original: uint8 ``[H, W, 3]``.
        decoded: ``(scales, mode) -> uint8 [H, W, 3]``.
        rows: the demo rows (for the labels: bpp and PSNR of the whole clip).
        path: the PNG file.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state

    modes = list(dict.fromkeys(mode for _, mode in decoded))
    scales = sorted({k for k, _ in decoded})
    by_key = {(r["scales"], r["synthesis"]): r for r in rows}
    h, w = original.shape[:2]
    cell = 1.9
    fig = Figure(figsize=(cell * (len(scales) + 1), cell * h / w * len(modes) + 0.7 * len(modes)), dpi=110)
    axes = fig.subplots(len(modes), len(scales) + 1, squeeze=False)
    for i, mode in enumerate(modes):
        axes[i][0].imshow(original)
        axes[i][0].set_title("original", fontsize=8)
        axes[i][0].set_ylabel(f"synthesis={mode}", fontsize=8)
        for j, k in enumerate(scales, start=1):
            row = by_key[(k, mode)]
            axes[i][j].imshow(decoded[(k, mode)])
            axes[i][j].set_title(
                f"{k}/{scales[-1]} scales\n{row['bpp']:.4f} bpp, {row['psnr']:.1f} dB", fontsize=7
            )
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def run_demo(
    model: str | Path = "default",
    frames: int = DEFAULT_FRAMES,
    out: str | Path = "progvc-demo",
    force: bool = False,
    gop: int = 32,
    device: str = "cpu",
    seed: int = 0,
    video: str | Path | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo and write ``demo.json``, ``demo.csv`` and ``demo_strip.png`` into ``out``.

    Args:
        model: a progvc model file, a Lightning checkpoint, or a packaged model (``"default"``, ``"fast"``).
        frames: frames of the clip to code (from the first).
        out: output folder; refused when it holds an earlier demo, unless ``force``.
        gop: frames per GOP.
        device: where the model runs.
        seed: synthesis sampling seed.
        video: another video (or sample clip name) instead of the held-out carphone clip.
        progress: progress bar on stderr.
    """
    from progvc.codec import Codec, CodecModel
    from progvc.errors import ConfigError
    from progvc.evaluation.evaluate import QualityMeter
    from progvc.io import read_video, resolve_video, sample_clip

    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    out = prepare_output_dir(out, OUTPUT_PATTERNS, force)
    codec = Codec(CodecModel.load(model), device=device)
    clip, fps = read_video(
        resolve_video(video) if video is not None else sample_clip("carphone"), max_frames=frames
    )
    num, height, width = clip.shape[:3]
    meter = QualityMeter.build((height, width), num, perceptual=False, device=device)
    start = time.perf_counter()
    data = codec.compress(clip, gop=gop, fps=fps)
    encode_fps = num / (time.perf_counter() - start)
    num_scales = codec.spec.num_scales
    shown = num // 2  # the frame of the strip
    rows: list[dict] = []
    strip: dict[tuple[int, str], np.ndarray] = {}
    with tqdm(
        total=num_scales * len(SYNTHESIS_MODES), desc="demo", file=sys.stderr, disable=not progress
    ) as bar:
        for k in range(1, num_scales + 1):
            size = len(codec.truncate(data, k))
            for mode in SYNTHESIS_MODES:
                if k < num_scales or mode == SYNTHESIS_MODES[0]:
                    start = time.perf_counter()
                    decoded = codec.decompress(data, layers=k, synthesis=mode, seed=seed)
                    decode_fps = num / (time.perf_counter() - start)
                    scores = meter.score(decoded, clip)
                # else: every scale was sent, nothing to synthesize: the same frames as the row above
                rows.append(
                    {
                        "scales": k,
                        "synthesis": mode,
                        "bytes": size,
                        "bpp": 8 * size / (num * height * width),
                        **scores,
                        "encode_fps": encode_fps,
                        "decode_fps": decode_fps,
                    }
                )
                strip[(k, mode)] = decoded[shown]
                bar.update()
    columns = ["scales", "synthesis", "bytes", "bpp", *meter.names, "encode_fps", "decode_fps"]
    table = format_table(rows, columns)
    info = {
        "video": str(video or "carphone"),
        "frames": num,
        "size": [width, height],
        "gop": gop,
        "seed": seed,
        "stream_bytes": len(data),
        "strip_frame": shown,
        "skipped_metrics": meter.skipped,
        "rows": rows,
    }
    files = [
        write_json(info, out / "demo.json"),
        write_csv(rows, out / "demo.csv"),
        save_strip(clip[shown], strip, rows, out / "demo_strip.png"),
    ]
    return DemoResult(rows, table, files)
