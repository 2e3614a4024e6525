"""Benchmark of the context model's coding path: ``python -m progvc.bench context [--json]``.

Times :func:`~progvc.context_models.common.step_all` (one :meth:`ContextModel.step` per scale,
with the KV cache and the previous frame's inputs) for one frame of a random-init ``"var"``
model with its default hyper-parameters, on the default token layout (latent_dim 32, a codebook
of V = 4096, scales (1, 2, 3, 4, 6, 8, 11, 16), downsampling 16), in float32 and in float64
(the precision the codec codes in). Reports the median over repeats, in milliseconds per frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from progvc.context_models import CONTEXT_MODELS
from progvc.context_models.common import step_all
from progvc.errors import ConfigError
from progvc.tokenizers.base import TokenSpec

DEFAULT_SPEC = TokenSpec(latent_dim=32, groups=1, alphabet=4096)
DEFAULT_FRAMES = ((176, 144), (640, 272))


def _frame_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(width, height)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size must look like 176x144, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"frame size must be positive, got {text!r}")
    return w, h


def time_step_path(
    model_name: str, spec: TokenSpec, width: int, height: int, dtype: torch.dtype, repeats: int
) -> dict[str, Any]:
    """Median milliseconds of coding one ``width x height`` frame's scales with ``step`` (plus one warm-up run)."""
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    torch.manual_seed(0)
    model = CONTEXT_MODELS.create(model_name, **spec.context_args())
    model = model.eval().to(dtype)
    sizes = spec.scale_sizes(height, width)
    cur = [torch.randn(1, spec.latent_dim, *s, dtype=dtype) for s in sizes]
    prev = [torch.randn(1, spec.latent_dim, *s, dtype=dtype) for s in sizes]
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            step_all(model, cur, prev)
            if i:  # the first run warms up allocators and kernels
                times.append((time.perf_counter() - start) * 1e3)
    return {
        "model": model_name,
        "frame": f"{width}x{height}",
        "dtype": str(dtype).removeprefix("torch."),
        "tokens_per_frame": spec.tokens_per_frame(height, width),
        "ms_per_frame": round(statistics.median(times), 2),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str]) -> int:
    """Run the benchmark and print a table (or ``{"context": [rows]}`` with ``--json``); returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m progvc.bench context",
        description="Milliseconds per frame of the context model's step-by-step coding path.",
    )
    parser.add_argument("--json", action="store_true", help='print {"context": [rows]} instead of a table')
    parser.add_argument("--model", default="var", help="registered context model to time (default: var)")
    parser.add_argument(
        "--sizes",
        type=_frame_size,
        nargs="+",
        default=list(DEFAULT_FRAMES),
        metavar="WxH",
        help="frame sizes (default: 176x144 640x272)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per row, median reported (default: 5)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    rows = [
        time_step_path(args.model, DEFAULT_SPEC, w, h, dtype, args.repeats)
        for w, h in args.sizes
        for dtype in (torch.float32, torch.float64)
    ]
    if args.json:
        print(json.dumps({"context": rows}))
        return 0
    print(f"{'model':<8} {'frame':>9} {'dtype':>8} {'tokens':>7} {'ms/frame':>9} {'threads':>7}")
    for r in rows:
        print(
            f"{r['model']:<8} {r['frame']:>9} {r['dtype']:>8} {r['tokens_per_frame']:>7} "
            f"{r['ms_per_frame']:>9.2f} {r['threads']:>7}"
        )
    return 0
