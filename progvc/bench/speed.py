"""Codec speed: ``python -m progvc.bench speed [--breakdown] [--json] [--model M] [--quick]``.

Encode and decode frames per second of :class:`~progvc.codec.Codec` with a model (default: the
bundled one; ``random-mssq``: a random-init model of the new default's shape, whose speed is that
of the trained one) on real frames: the held-out ``carphone`` clip at 176x144, a centre crop of
``bigbuckbunny`` at 352x288 and ``bikes`` at 640x272 (its full size). Median over repeats of
wall-clock time. ``--skip both`` times the codec with and without skip flags
(:mod:`progvc.codec.skip`) on the same frames in the same run.

With ``--breakdown``, per frame size and torch thread count (1 and 2), the milliseconds per frame
of every component (CPU time of the process: with 2 threads, the sum over both; ``fps`` is
from CPU time, ``wall_fps`` from wall time, which a busy machine inflates), for decoding without synthesis (all scales received), decoding with
synthesis (half the scales received, the rest sampled) and encoding:

* ``context``: the context model's ``step`` (the codec's float64 copy);
* ``tables``: logits -> tables (:func:`~progvc.coders.tables.logits_to_tables`);
* ``coder``: the entropy coder's encode / decode / finish calls;
* ``synthesis``: sampling the scales a stream does not carry;
* ``prediction``: the prediction loop (context inputs, adding a scale's contribution);
* ``tokenizer``: the tokenizer's decoder (latents -> pixels) or encoder (pixels -> tokens);
* ``other``: the rest (stream parsing, conversions, Python).

``raw_coder`` is constriction alone (``RangeEncoder`` / ``RangeDecoder`` with a lazy categorical)
on the same symbols and tables, and ``tables_coder_vs_raw`` the ratio of ``tables + coder`` to
it: the cost of progvc's coding path over the bare coder. ``constriction_ms_per_frame`` is the
part of ``coder`` spent in constriction's own calls, and ``constriction_in_codec_vs_raw`` its
ratio to ``raw_coder``: the same calls on the same tables, interleaved with the codec's other
work instead of back to back (what cold caches cost the bare coder). ``precision`` compares the context
model in float64 (the codec's), float32, with exact int8 products in its Transformer blocks'
linear layers and with exact products throughout
(:func:`~progvc.context_models.exact.exact_copy`) on the frame's real inputs: milliseconds per
frame, the table entries that differ between 1 and 2 threads (the coder needs 0) and the bits
per frame of the encoder's symbols under each variant's tables.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np
import torch

from progvc.codec import Codec
from progvc.codec.model import CodecModel
from progvc.context_models.common import RepeatingSteps
from progvc.errors import ConfigError
from progvc.io import read_video, sample_clip

#: (label, sample clip, (height, width) crop or None); every clip but bigbuckbunny at its native size.
CLIPS = (("176x144", "carphone", None), ("352x288", "bigbuckbunny", (288, 352)), ("640x272", "bikes", None))
#: components of the breakdown, in report order ("other" is the rest).
COMPONENTS = ("context", "tables", "coder", "synthesis", "prediction", "tokenizer", "other")
#: the instrumentation's own copies (``record``), timed apart and left out of the totals
RECORD = "record"
#: constriction's own encode / decode calls inside the coder (a part of "coder", reported apart)
CONSTRICTION = "constriction"
#: the context model's arithmetic variants of the breakdown's ``precision`` part
PRECISIONS = ("float64", "float32", "exact_linear", "exact")
#: what the ``precision`` part reports per variant (``None`` for a variant the model cannot run)
PRECISION_FIELDS = ("ms_per_frame", "table_entries_differing_1_vs_2_threads", "bits_per_frame")
#: random-init models (``--model NAME``), whose speed is that of trained ones of the same shape:
#: name -> (tokenizer, its arguments, ``var`` width). ``random-mssq``: the default's shape when it
#: was measured (16 symbols of 33 values per position, 8x); ``random-msvq``: one token of 4096
#: values per position (16x), the alphabet of issue 13's coding-path target.
RANDOM_MODELS = {
    "random-mssq": ("mssq", {"latent_dim": 16, "levels": 33, "downsample": 8, "width": 16, "max_width": 128}, 192),
    "random-msvq": ("msvq", {"vocab_size": 4096, "latent_dim": 32, "downsample": 16}, 128),
}


def load_model(name: str) -> CodecModel:
    """A packaged model (``"default"``, ``"fast"``), a random-init model (:data:`RANDOM_MODELS`) or a model file."""
    if name not in RANDOM_MODELS:
        return CodecModel.load(name)
    from progvc.context_models import CONTEXT_MODELS
    from progvc.tokenizers import TOKENIZERS

    kind, args, width = RANDOM_MODELS[name]
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.create(kind, **args)
    context = CONTEXT_MODELS.create("var", **tokenizer.spec.context_args(), width=width, depth=4, heads=4)
    return CodecModel(tokenizer, context, prediction="loops")


def load_frames(clip: str, crop: tuple[int, int] | None, count: int) -> np.ndarray:
    """uint8 ``[count, H, W, 3]`` of a sample clip, centre-cropped to ``crop`` when given."""
    frames, _ = read_video(sample_clip(clip), max_frames=count)
    if crop is not None:
        h, w = crop
        top, left = (frames.shape[1] - h) // 2, (frames.shape[2] - w) // 2
        frames = np.ascontiguousarray(frames[:, top : top + h, left : left + w])
    return frames


#: the clock of the breakdown and of ``*_cpu_fps``: CPU time of the process (all its threads),
#: which on a shared machine measures the codec rather than its neighbours (wall time charges
#: preemptions to whatever runs).
CLOCK = time.process_time


def time_codec(codec: Codec, frames, repeats: int, gop: int) -> dict[str, float]:
    """Median encode / decode frames per second over ``repeats`` runs, of wall time (``*_fps``)
    and of the process's CPU time (``*_cpu_fps``: what a busy or virtual machine's stolen time
    does not inflate; with several threads, their sum), the stream's bpp, and the
    frames the decoder showed without running the tokenizer's decoder (``repeated_frames``: their
    latent repeats the frame before's, see ``Codec._pixels``), and the decoder's context-model
    steps (``context_steps``), of which ``reused_steps`` repeated the frame before's inputs and
    were not run again (:class:`~progvc.context_models.common.RepeatingSteps`); counted in one
    more, untimed decode."""
    enc, dec, enc_cpu, dec_cpu = [], [], [], []
    data = b""
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), CLOCK()
        data = codec.compress(frames, gop=gop)
        t1, c1 = time.perf_counter(), CLOCK()
        codec.decompress(data, synthesis="none")
        t2, c2 = time.perf_counter(), CLOCK()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        enc_cpu.append(c1 - c0)
        dec_cpu.append(c2 - c1)
    n = frames.shape[0]
    tokenizer, context = codec.model.tokenizer, codec._context64
    with (
        mock.patch.object(tokenizer, "decode_latent", wraps=tokenizer.decode_latent) as calls,
        mock.patch.object(context, "step", wraps=context.step) as runs,
        mock.patch.object(RepeatingSteps, "step", autospec=True, side_effect=RepeatingSteps.step) as asked,
    ):
        codec.decompress(data, synthesis="none")
    return {
        "encode_fps": n / statistics.median(enc),
        "decode_fps": n / statistics.median(dec),
        "encode_cpu_fps": n / statistics.median(enc_cpu),
        "decode_cpu_fps": n / statistics.median(dec_cpu),
        "bpp": codec.inspect(data).bpp(),
        "repeated_frames": n - sum(call.args[0].shape[0] for call in calls.call_args_list),
        "context_steps": asked.call_count,
        "reused_steps": asked.call_count - runs.call_count,
    }


# ---------------------------------------------------------------------------------------------
# the breakdown


class Timers:
    """Seconds per component, from wrappers patched around the codec's parts (not nested; only
    :data:`CONSTRICTION` lies inside "coder")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (symbols int32, tables) the coder saw
        self.inputs: list[tuple[int, Any, torch.Tensor, torch.Tensor | None]] = []  # context-model calls

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = CLOCK()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += CLOCK() - start

        return timed


@contextlib.contextmanager
def instrument(codec: Codec, timers: Timers, record: bool = False) -> Iterator[None]:
    """Patch timing wrappers around the codec's components while the block runs.

    With ``record``, the coder's chunks (symbols and tables) and the context model's inputs are
    kept for :func:`raw_coder_seconds` and :func:`precision_report`.
    """
    from progvc.codec import codec as codec_module
    from progvc.codec.prediction import PredictionLoop
    from progvc.coders import CODERS
    from progvc.coders import range as range_module
    from progvc.coders import tables as tables_module

    coder = CODERS.create(codec.model.coder)
    enc_cls, dec_cls = type(coder.encoder()), type(coder.decoder(b""))
    step, asked = codec._context64.step, RepeatingSteps.step

    def keep_inputs(k, cur, prev):
        if k == 0:
            timers.inputs.append((-1, None, cur, prev))  # a frame starts
        timers.inputs.append((k, None, cur.clone(), None if prev is None else prev.clone()))

    def keep_chunk(symbols, freqs):  # integer tables (skip flags, motion) go to constriction as float32 too
        timers.chunks.append((symbols.to(torch.int32).numpy().copy(), freqs.numpy().astype(np.float32)))

    # recording is timed apart ("record") and left out of every component and of the total
    keep_inputs, keep_chunk = timers.wrap(RECORD, keep_inputs), timers.wrap(RECORD, keep_chunk)
    timed_step = timers.wrap("context", step)
    timed_encode = timers.wrap("coder", enc_cls.encode)

    def repeating_step(self, k, cur, prev=None):  # every step the codec asks for, run or reused
        if record:
            keep_inputs(k, cur, prev)
        return asked(self, k, cur, prev)

    def encode(self, symbols, freqs):
        if record:
            keep_chunk(symbols, freqs)
        return timed_encode(self, symbols, freqs)

    def timed_constriction(cls: type, method: str) -> Callable:
        """A factory for ``cls`` objects whose ``method`` (encode or decode) is timed as CONSTRICTION."""

        class Timed:
            def __init__(self, *args) -> None:
                self._inner = cls(*args)
                setattr(self, method, timers.wrap(CONSTRICTION, getattr(self._inner, method)))

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

        return Timed

    with contextlib.ExitStack() as stack:
        patch = stack.enter_context
        for name, method in (("_ConstrictionEncoder", "encode"), ("_ConstrictionDecoder", "decode")):
            cls = getattr(range_module, name)
            patch(mock.patch.object(range_module, name, timed_constriction(cls, method)))
        patch(mock.patch.object(RepeatingSteps, "step", repeating_step))
        patch(mock.patch.object(codec._context64, "step", timed_step))
        patch(mock.patch.object(codec, "_pixels", timers.wrap("tokenizer", codec._pixels)))
        patch(mock.patch.object(codec, "_code_frames", timers.wrap("tokenizer", codec._code_frames)))
        patch(
            mock.patch.object(
                tables_module, "logits_to_tables", timers.wrap("tables", tables_module.logits_to_tables)
            )
        )
        patch(
            mock.patch.object(codec_module, "pick_tokens", timers.wrap("synthesis", codec_module.pick_tokens))
        )
        patch(mock.patch.object(PredictionLoop, "inputs", timers.wrap("prediction", PredictionLoop.inputs)))
        patch(
            mock.patch.object(
                PredictionLoop, "add_scale", timers.wrap("prediction", PredictionLoop.add_scale)
            )
        )
        patch(mock.patch.object(enc_cls, "encode", encode))
        patch(mock.patch.object(enc_cls, "finish", timers.wrap("coder", enc_cls.finish)))
        patch(mock.patch.object(dec_cls, "decode", timers.wrap("coder", dec_cls.decode)))
        yield


def raw_coder_seconds(chunks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """``(encode, decode)`` seconds of constriction alone on the chunks (float tables, one call each)."""
    import constriction

    family = constriction.stream.model.Categorical(perfect=False)
    start = CLOCK()
    encoder = constriction.stream.queue.RangeEncoder()
    for symbols, tables in chunks:
        encoder.encode(symbols, family, tables)
    words = encoder.get_compressed()
    middle = CLOCK()
    decoder = constriction.stream.queue.RangeDecoder(words)
    for _, tables in chunks:
        decoder.decode(family, tables)
    return middle - start, CLOCK() - middle


def _run(
    codec: Codec, frames: np.ndarray, action: Callable[[], Any], record: bool = False
) -> tuple[dict, Timers]:
    """Milliseconds per frame of each component of ``action()``, and its timers."""
    timers = Timers()
    with instrument(codec, timers, record):
        start, wall = CLOCK(), time.perf_counter()
        action()
        total, wall = CLOCK() - start - timers.seconds.get(RECORD, 0.0), time.perf_counter() - wall
    n = frames.shape[0]
    ms = {name: 1e3 * timers.seconds.get(name, 0.0) / n for name in COMPONENTS[:-1]}
    ms["other"] = max(0.0, 1e3 * total / n - sum(ms.values()))
    return {
        "ms_per_frame": {k: round(v, 3) for k, v in ms.items()},
        "constriction_ms_per_frame": round(1e3 * timers.seconds.get(CONSTRICTION, 0.0) / n, 3),
        "total_ms": round(1e3 * total / n, 3),
        "fps": round(n / total, 3),
    }, timers


def breakdown(codec: Codec, frames: np.ndarray, repeats: int) -> dict[str, Any]:
    """The breakdown of encoding and decoding ``frames`` (one GOP), the run with the median total of ``repeats``."""
    gop = frames.shape[0]
    data = codec.compress(frames, gop=gop)  # warm-up
    half = max(1, codec.spec.num_scales // 2)
    truncated = codec.truncate(data, half)
    actions = {
        "decode": lambda: codec.decompress(data, synthesis="none"),
        "decode_synthesis": lambda: codec.decompress(truncated, synthesis="sample"),
        "encode": lambda: codec.compress(frames, gop=gop),
    }
    out: dict[str, Any] = {}
    for name, action in actions.items():
        runs = sorted(
            (_run(codec, frames, action, record=name == "encode") for _ in range(repeats)),
            key=lambda r: r[0]["total_ms"],
        )
        row, timers = runs[len(runs) // 2]
        if name == "encode":
            _, timers = runs[0] if runs[0][1].chunks else runs[len(runs) // 2]
            enc, dec = raw_coder_seconds(timers.chunks)
            n = frames.shape[0]
            symbols = sum(len(s) for s, _ in timers.chunks)
            out["raw_coder"] = {
                "symbols_per_frame": symbols // n,
                "alphabet": int(timers.chunks[0][1].shape[1]) if timers.chunks else 0,
                "encode_ms_per_frame": round(1e3 * enc / n, 3),
                "decode_ms_per_frame": round(1e3 * dec / n, 3),
            }
            out["precision"] = precision_report(codec, timers.inputs, n, timers.chunks)
        out[name] = row
    for name, raw in (("decode", "decode_ms_per_frame"), ("encode", "encode_ms_per_frame")):
        ms = out[name]["ms_per_frame"]
        out[name]["tables_coder_vs_raw"] = round(
            (ms["tables"] + ms["coder"]) / max(out["raw_coder"][raw], 1e-9), 3
        )
        # the same constriction calls on the same tables, inside the codec vs back to back
        out[name]["constriction_in_codec_vs_raw"] = round(
            out[name]["constriction_ms_per_frame"] / max(out["raw_coder"][raw], 1e-9), 3
        )
    out["bpp"] = codec.inspect(data).bpp()
    return out


def precision_report(codec: Codec, inputs: list, num_frames: int, chunks: list | None = None) -> dict[str, Any]:
    """The context model in float64, float32 and with exact products on recorded inputs.

    Variants: ``float64`` (the codec's), ``float32``, ``exact_linear`` (exact int8 products in
    the Transformer blocks' linear layers, the rest float64) and ``exact`` (exact products
    throughout, the reference). Per variant: ms per frame (one thread),
    table entries that differ between 1 and 2 threads (the coder needs 0) and, given the encoder's ``chunks`` (one per ``step`` call, in order), the
    bits per frame of their symbols under the variant's tables (the rate the variant would code).
    """
    from progvc.coders.tables import logits_to_tables
    from progvc.context_models.exact import exact_copy

    model32 = copy.deepcopy(codec.model.context_model).float().eval()
    report: dict[str, Any] = {}
    before = torch.get_num_threads()
    for label, model, dtype in (
        ("float64", codec._context64, torch.float64),
        ("float32", model32, torch.float32),
        ("exact_linear", exact_copy(codec.model.context_model, mode="blocks"), torch.float64),
        ("exact", exact_copy(codec.model.context_model), torch.float64),
    ):
        tables = {}
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                out, seconds = [], 0.0
                with torch.inference_mode():
                    for k, _, cur, prev in inputs:
                        if k < 0:
                            state = model.init_state(1)
                            continue
                        start = CLOCK()
                        logits = model.step(state, k, cur.to(dtype), None if prev is None else prev.to(dtype))
                        seconds += CLOCK() - start
                        out.append(logits_to_tables(logits.reshape(-1, logits.shape[-1])))
                tables[threads] = out
                if threads == 1:
                    report[f"{label}_ms_per_frame"] = round(1e3 * seconds / num_frames, 3)
        except ConfigError:  # a variant this model's layers do not have (exact attention over local windows)
            report.update({f"{label}_{field}": None for field in PRECISION_FIELDS})
            continue
        one, two = (torch.cat(tables[n]) if tables[n] else torch.empty(0) for n in (1, 2))
        diff = (one.view(torch.int32) != two.view(torch.int32)).sum()
        report[f"{label}_table_entries_differing_1_vs_2_threads"] = int(diff)
        if chunks is not None and len(chunks) == len(tables[1]):
            bits = sum(_chunk_bits(t, s) for t, (s, _) in zip(tables[1], chunks))
            report[f"{label}_bits_per_frame"] = round(bits / num_frames, 1)
    torch.set_num_threads(before)
    report["table_entries"] = int(one.numel())
    return report


def _chunk_bits(tables: torch.Tensor, symbols: np.ndarray) -> float:
    """Bits of ``symbols [N]`` under float tables ``[N, A]`` (each row normalised; float64 sums)."""
    t = tables.double()
    p = t.gather(1, torch.as_tensor(symbols, dtype=torch.int64)[:, None]).squeeze(1) / t.sum(1)
    return float(-torch.log2(p).sum())


def run_breakdown(
    model: CodecModel, sizes, threads, frames_per_run: int, repeats: int, pixels: str = "float32"
) -> list[dict]:
    """One row per (size, thread count); ``pixels``: the tokenizer decoder's arithmetic (:class:`Codec`)."""
    rows = []
    before = torch.get_num_threads()
    try:
        for label, clip, crop in sizes:
            frames = load_frames(clip, crop, frames_per_run)
            for n in threads:
                torch.set_num_threads(n)
                # one encoder pass per GOP (global motion would code a moving GOP twice) and every
                # scale coded (no skip flags, whose gain `--skip both` measures): the breakdown is
                # of the coding path per frame, one chunk per context-model step
                codec = Codec(model, progress=False, motion="none", skip=False, pixels=pixels)
                row = breakdown(codec, frames, repeats)
                rows.append({"size": label, "threads": n, "frames": frames_per_run, **row})
    finally:
        torch.set_num_threads(before)
    return rows


def format_breakdown(rows: list[dict]) -> str:
    """A readable table of :func:`run_breakdown` rows."""
    head = (
        f"{'size':<8} {'thr':>3} {'mode':<16} "
        + " ".join(f"{c:>10}" for c in COMPONENTS)
        + f" {'total':>9} {'fps':>7} {'vs raw':>7} {'c. in codec':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        for mode in ("decode", "decode_synthesis", "encode"):
            m = r[mode]
            ratio, alone = m.get("tables_coder_vs_raw"), m.get("constriction_in_codec_vs_raw")
            lines.append(
                f"{r['size']:<8} {r['threads']:>3} {mode:<16} "
                + " ".join(f"{m['ms_per_frame'][c]:>10.2f}" for c in COMPONENTS)
                + f" {m['total_ms']:>9.2f} {m['fps']:>7.2f} {'-' if ratio is None else f'{ratio:.2f}x':>7}"
                + f" {'-' if alone is None else f'{alone:.2f}x':>11}"
            )
        raw, p = r["raw_coder"], r["precision"]
        lines.append(
            f"{'':<8} {'':>3} raw coder: {raw['symbols_per_frame']} symbols/frame of {raw['alphabet']}, "
            f"{raw['encode_ms_per_frame']:.2f} ms enc / {raw['decode_ms_per_frame']:.2f} ms dec per frame; "
            f"context ms / entries differing 1 vs 2 threads (of {p['table_entries']}) / bits per frame: "
            + ", ".join(
                f"{v} {_or_dash(p[v + '_ms_per_frame'], '.1f')} / {_or_dash(p[v + '_table_entries_differing_1_vs_2_threads'])}"
                f" / {_or_dash(p.get(v + '_bits_per_frame'))}"
                for v in PRECISIONS
            )
        )
    return "\n".join(lines)


def _or_dash(value: float | None, spec: str = "") -> str:
    """``value`` formatted with ``spec``, or ``-`` where there is none."""
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m progvc.bench speed", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="default", help=f"model file, Lightning checkpoint, a packaged model (default, fast) or one of {', '.join(RANDOM_MODELS)}"
    )
    parser.add_argument("--frames", type=int, default=8, help="frames per run, one GOP (default 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 2; with --breakdown: 1 and 2)"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="ms per frame of every component (see the module doc)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="176x144 only, 2 frames, 1 repeat, 1 thread (a smoke test)"
    )
    parser.add_argument(
        "--skip",
        choices=("on", "off", "both"),
        default="on",
        help="skip flags (progvc.codec.skip) on, off, or both in the same run (default on; not with --breakdown)",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(label for label, _, _ in CLIPS),
        help=f"comma-separated frame sizes to run, of {', '.join(label for label, _, _ in CLIPS)} (default: all)",
    )
    parser.add_argument(
        "--pixels",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the tokenizer decoder's arithmetic (progvc.codec.Codec's pixels; default float32)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    wanted = args.sizes.split(",")
    unknown = [w for w in wanted if w not in {label for label, _, _ in CLIPS}]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; known: {', '.join(label for label, _, _ in CLIPS)}")
    sizes = tuple(c for c in CLIPS if c[0] in wanted)
    if args.quick:
        sizes, args.frames, args.repeats = CLIPS[:1], 2, 1
        args.threads = args.threads or 1
    model = load_model(args.model)
    if args.breakdown:
        threads = (args.threads,) if args.threads else (1, 2)
        rows = run_breakdown(model, sizes, threads, args.frames, args.repeats, args.pixels)
        if args.json:
            print(json.dumps({"model": args.model, "pixels": args.pixels, "breakdown": rows}, indent=2))
        else:
            print(format_breakdown(rows))
        return 0
    threads = args.threads or 2
    torch.set_num_threads(threads)
    modes = ("on", "off") if args.skip == "both" else (args.skip,)
    codecs = {mode: Codec(model, progress=False, skip=mode == "on", pixels=args.pixels) for mode in modes}
    rows = []
    for label, clip, crop in sizes:
        frames = load_frames(clip, crop, args.frames)
        for mode, codec in codecs.items():
            timed = time_codec(codec, frames, args.repeats, args.frames)
            rows.append({"size": label, "frames": args.frames, "skip": mode, **timed})
    if args.json:
        print(json.dumps({"threads": threads, "pixels": args.pixels, "speed": rows}, indent=2))
    else:
        print(
            f"{'size':<9} {'skip':>4} {'encode fps':>10} {'decode fps':>10} {'bpp':>8} {'repeated':>8}"
            f" {'steps (reused)':>15}   ({threads} threads)"
        )
        for r in rows:
            print(
                f"{r['size']:<9} {r['skip']:>4} {r['encode_fps']:>10.2f} {r['decode_fps']:>10.2f} {r['bpp']:>8.4f}"
                f" {r['repeated_frames']:>8} {r['context_steps']:>7} ({r['reused_steps']:>5})"
            )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
