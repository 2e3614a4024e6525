"""Benchmark of the context model's coding path: ``python -m progvc.bench context [--json]``.

Times :func:`~progvc.context_models.common.step_all` (one :meth:`ContextModel.step` per scale,
with the KV cache and the previous frame's inputs) for one frame of a random-init ``"var"``
model with its default hyper-parameters, on the default token layout (latent_dim 32, a codebook
of V = 4096, scales (1, 2, 3, 4, 6, 8, 11, 16), downsampling 16), in float32 and in float64
(the precision the codec codes in). Reports the median over repeats, in milliseconds per frame
and per scale. ``--weights M`` times the context model of a model file or packaged model
(``default``, ``fast``) on its own token layout instead; ``--ops`` adds the share of the time
of the costliest operators (``torch.profiler``, one more run).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any

import torch

from progvc.context_models import CONTEXT_MODELS, ContextModel
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
    model: str | ContextModel,
    spec: TokenSpec,
    width: int,
    height: int,
    dtype: torch.dtype,
    repeats: int,
    ops: int = 0,
) -> dict[str, Any]:
    """Median milliseconds of coding one ``width x height`` frame's scales with ``step`` (plus one warm-up run).

    ``model``: a registered context model's name (random init) or a model to copy. ``ops > 0``
    adds ``"ops"``: the ``ops`` costliest operators' shares of the self CPU time of one more run.
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    torch.manual_seed(0)
    if isinstance(model, str):
        name, model = model, CONTEXT_MODELS.create(model, **spec.context_args())
    else:
        name, model = CONTEXT_MODELS.config_of(model)["name"], copy.deepcopy(model)
    model = model.eval().to(dtype)
    sizes = spec.scale_sizes(height, width)
    cur = [torch.randn(1, spec.latent_dim, *s, dtype=dtype) for s in sizes]
    prev = [torch.randn(1, spec.latent_dim, *s, dtype=dtype) for s in sizes]
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            state, per_scale = model.init_state(1), []
            for k in range(len(sizes)):
                start = time.perf_counter()
                model.step(state, k, cur[k], prev[k])
                per_scale.append((time.perf_counter() - start) * 1e3)
            if i:  # the first run warms up allocators and kernels
                times.append(per_scale)
    row = {
        "model": name,
        "frame": f"{width}x{height}",
        "dtype": str(dtype).removeprefix("torch."),
        "tokens_per_frame": spec.tokens_per_frame(height, width),
        "ms_per_frame": round(statistics.median(sum(t) for t in times), 2),
        "ms_per_scale": [round(statistics.median(t[k] for t in times), 2) for k in range(len(sizes))],
        "threads": torch.get_num_threads(),
    }
    if ops > 0:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            step_all(model, cur, prev)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) or 1
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:ops]
        row["ops"] = {e.key: round(e.self_cpu_time_total / total, 3) for e in top}
    return row


def main(argv: list[str]) -> int:
    """Run the benchmark and print a table (or ``{"context": [rows]}`` with ``--json``); returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m progvc.bench context",
        description="Milliseconds per frame of the context model's step-by-step coding path.",
    )
    parser.add_argument("--json", action="store_true", help='print {"context": [rows]} instead of a table')
    parser.add_argument("--model", default="var", help="registered context model to time (default: var)")
    parser.add_argument(
        "--weights",
        default=None,
        help="time the trained context model of this model file or packaged model (default, fast) "
        "on its own token layout instead of --model",
    )
    parser.add_argument(
        "--ops", type=int, default=0, help="report the N costliest operators' share of the time (torch.profiler)"
    )
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
    model, spec = args.model, DEFAULT_SPEC
    if args.weights is not None:
        from progvc.codec.model import CodecModel

        codec_model = CodecModel.load(args.weights)
        model, spec = codec_model.context_model, codec_model.tokenizer.spec
    rows = [
        time_step_path(model, spec, w, h, dtype, args.repeats, args.ops)
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
        print(f"{'':<8} ms per scale: {' '.join(f'{t:.2f}' for t in r['ms_per_scale'])}")
        if "ops" in r:
            print(f"{'':<8} operators: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["ops"].items()))
    return 0
