"""Entropy-coder speed and size: ``python -m progvc.bench coders [--json]``.

For every registered coder and two kinds of tokens it codes ``--tokens`` tokens, checks the round
trip, and reports (median over ``--repeats`` runs, on ``--threads`` torch threads; with
``--clock cpu``, the default, the time is the CPU time of the calling thread, which on a shared
machine measures the coder rather than its neighbours; ``--clock wall`` measures wall time):

* ``us_per_token_encode``: ``encoder().encode(...)`` + ``finish()``, microseconds per token;
* ``us_per_token_decode``: ``decoder(bytes).decode(...)``, microseconds per token;
* ``us_per_token_tables``: :func:`~progvc.coders.tables.logits_to_freqs` of the same tokens
  (shared by every coder, paid by encoder and decoder alike);
* ``bits``: the segment's size in bits (bytes x 8); ``ideal_bits``: the cross-entropy of the
  symbols under the same integer tables (:func:`~progvc.coders.tables.ideal_bits`);
* ``ideal_bits_16bit`` (rans only): the cross-entropy under rANS's 16-bit CDFs, so
  ``ideal_bits_16bit - ideal_bits`` is the cost of its precision alone.

Token kinds (realistic peaked distributions, symbols sampled from the tables themselves):

* ``categorical-4096``: one symbol of 4096 per token, logits ``3 * N(0, 1)`` (~6.3 bits per token);
* ``bitwise-16``: 16 binary symbols per token, each with logits ``(0, 4 * N(0, 1))`` (~5 bits).

A second table (``"segments"`` in the JSON) gives the fixed cost of a segment: the mean of bytes
written minus ideal bytes over ``--segments`` small segments of ``--segment-tokens`` tokens each,
per coder and kind, and for comparison ``range-untrimmed``, the same range coder with
constriction's own flush (whole 32-bit words, no trimming).

A third (``"cold"``) times one small tables call (``logits_to_tables`` of ``[16, 33]`` float64
logits, the codec's coarsest scale) warm, in a loop, and cold, each time right after a float64
matrix product of the context model's size (``[1500, 128] x [128, 512]``), as in the codec, where
every scale's tables follow a context-model step: the fixed cost per call that a loop hides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from progvc.coders import CODERS
from progvc.coders.rans import cdfs_16bit
from progvc.coders.tables import ideal_bits, logits_to_freqs, logits_to_tables
from progvc.errors import ConfigError


@dataclass(frozen=True)
class TokenKind:
    """A kind of token: ``symbols`` symbols of ``alphabet`` values each, logits ``sigma * N(0, 1)``."""

    name: str
    alphabet: int
    symbols: int
    sigma: float

    def logits(self, tokens: int, generator: torch.Generator) -> Tensor:
        """Logits ``[tokens * symbols, alphabet]`` (for bits: ``(0, sigma * z)``)."""
        n = tokens * self.symbols
        if self.alphabet == 2:
            return torch.cat([torch.zeros(n, 1), self.sigma * torch.randn(n, 1, generator=generator)], dim=1)
        return self.sigma * torch.randn(n, self.alphabet, generator=generator)


KINDS = (
    TokenKind("categorical-4096", alphabet=4096, symbols=1, sigma=3.0),
    TokenKind("bitwise-16", alphabet=2, symbols=16, sigma=4.0),
)


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}


def _median_seconds(fn: Callable[[], Any], repeats: int, clock: Callable[[], float]) -> tuple[float, Any]:
    """Median time of ``repeats`` calls of ``fn`` (after one warm-up call) and its last result.

    The previous result is dropped before each call, as in a coding loop, so big outputs (tables)
    reuse freed memory instead of paying fresh page faults each time.
    """
    fn()
    times = []
    for _ in range(repeats):
        result = None
        start = clock()
        result = fn()
        times.append(clock() - start)
    return statistics.median(times), result


def bench_kind(
    kind: TokenKind, coders: Sequence[str], tokens: int, repeats: int, seed: int = 0, clock: str = "cpu"
) -> list[dict]:
    """One row per coder for ``tokens`` tokens of ``kind`` (see the module docstring for the keys)."""
    timer = CLOCKS[clock]
    generator = torch.Generator().manual_seed(seed)
    logits = kind.logits(tokens, generator)
    t_tables, freqs = _median_seconds(lambda: logits_to_freqs(logits), repeats, timer)
    symbols = torch.multinomial(freqs.to(torch.float64), 1, generator=generator).squeeze(1)
    ideal = ideal_bits(symbols, freqs)
    rows = []
    for name in coders:
        coder = CODERS.create(name)
        t_enc, data = _median_seconds(lambda coder=coder: coder.encode(symbols, freqs), repeats, timer)
        t_dec, decoded = _median_seconds(
            lambda coder=coder, data=data: coder.decode(data, freqs), repeats, timer
        )
        if not torch.equal(decoded, symbols):
            raise RuntimeError(f"coder {name!r} did not round-trip {kind.name} tokens")
        row = {
            "coder": name,
            "tokens": kind.name,
            "num_tokens": tokens,
            "clock": clock,
            "us_per_token_encode": round(1e6 * t_enc / tokens, 3),
            "us_per_token_decode": round(1e6 * t_dec / tokens, 3),
            "us_per_token_tables": round(1e6 * t_tables / tokens, 3),
            "bits": 8 * len(data),
            "ideal_bits": round(ideal, 1),
        }
        if name == "rans":  # the cross-entropy under its 16-bit CDFs: the cost of the precision alone
            row["ideal_bits_16bit"] = round(ideal_bits(symbols, cdfs_16bit(freqs).diff(dim=1)[:, :-1]), 1)
        rows.append(row)
    return rows


def coding_path(kind: TokenKind, tokens: int, repeats: int, seed: int = 0, clock: str = "cpu") -> dict:
    """The codec's path (grid tables + range coder) vs constriction alone on ``tokens`` tokens of ``kind``."""
    import constriction

    timer = CLOCKS[clock]
    generator = torch.Generator().manual_seed(seed)
    logits = kind.logits(tokens, generator)
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    symbols = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    exact = float(-probs.gather(1, symbols[:, None]).log2().sum())
    t_tables, tables = _median_seconds(lambda: logits_to_tables(logits), repeats, timer)
    coder = CODERS.create("range")
    t_enc, data = _median_seconds(lambda: coder.encode(symbols, tables), repeats, timer)
    t_dec, decoded = _median_seconds(lambda: coder.decode(data, tables), repeats, timer)
    if not torch.equal(decoded, symbols):
        raise RuntimeError(f"the coding path did not round-trip {kind.name} tokens")
    family = constriction.stream.model.Categorical(perfect=False)
    symbols32, table_array = symbols.to(torch.int32).numpy(), tables.numpy()

    def raw_encode():
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(symbols32, family, table_array)
        return encoder.get_compressed()

    t_raw_enc, words = _median_seconds(raw_encode, repeats, timer)
    t_raw_dec, _ = _median_seconds(
        lambda: constriction.stream.queue.RangeDecoder(words).decode(family, table_array), repeats, timer
    )
    us = 1e6 / tokens
    return {
        "tokens": kind.name,
        "num_tokens": tokens,
        "clock": clock,
        "us_per_token_tables": round(us * t_tables, 3),
        "us_per_token_encode": round(us * t_enc, 3),
        "us_per_token_decode": round(us * t_dec, 3),
        "raw_us_per_token_encode": round(us * t_raw_enc, 3),
        "raw_us_per_token_decode": round(us * t_raw_dec, 3),
        "path_vs_raw_encode": round((t_tables + t_enc) / t_raw_enc, 3),
        "path_vs_raw_decode": round((t_tables + t_dec) / t_raw_dec, 3),
        "bits_per_token": round(8 * len(data) / tokens, 4),
        "grid_bits_per_token": round(ideal_bits(symbols, tables) / tokens, 4),
        "exact_bits_per_token": round(exact / tokens, 4),
    }


def format_path(rows: Sequence[dict]) -> str:
    """A readable table of :func:`coding_path` rows (microseconds per token, bits per token)."""
    header = (
        f"{'tokens':<17} {'tables':>7} {'enc':>7} {'dec':>7} {'raw enc':>8} {'raw dec':>8} "
        f"{'enc vs raw':>10} {'dec vs raw':>10} {'bits/tok':>8} {'grid':>8} {'exact':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['tokens']:<17} {r['us_per_token_tables']:>7.2f} {r['us_per_token_encode']:>7.2f} "
            f"{r['us_per_token_decode']:>7.2f} {r['raw_us_per_token_encode']:>8.2f} "
            f"{r['raw_us_per_token_decode']:>8.2f} {r['path_vs_raw_encode']:>9.2f}x "
            f"{r['path_vs_raw_decode']:>9.2f}x {r['bits_per_token']:>8.4f} {r['grid_bits_per_token']:>8.4f} "
            f"{r['exact_bits_per_token']:>8.4f}"
        )
    return "\n".join(lines)


def _untrimmed_range_bytes(symbols: Tensor, freqs: Tensor) -> int:
    """Bytes constriction's range coder writes with its own flush (the baseline of the trimmed one)."""
    import constriction

    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    encoder.encode(symbols.to(torch.int32).numpy(), family, freqs.to(torch.float64).numpy())
    return 4 * len(encoder.get_compressed())


def segment_overhead(
    kind: TokenKind, coders: Sequence[str], tokens: int, segments: int, seed: int = 0
) -> list[dict]:
    """Mean bytes written minus ideal bytes per segment of ``tokens`` tokens, one row per coder."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(segments):
        freqs = logits_to_freqs(kind.logits(tokens, generator))
        symbols = torch.multinomial(freqs.to(torch.float64), 1, generator=generator).squeeze(1)
        cases.append((symbols, freqs, ideal_bits(symbols, freqs) / 8))
    sizes: dict[str, Callable[[Tensor, Tensor], int]] = {
        name: lambda s, f, coder=CODERS.create(name): len(coder.encode(s, f)) for name in coders
    }
    if "range" in coders:
        sizes["range-untrimmed"] = _untrimmed_range_bytes
    return [
        {
            "coder": name,
            "tokens": kind.name,
            "segment_tokens": tokens,
            "segments": segments,
            "extra_bytes_per_segment": round(
                statistics.fmean(size(s, f) - ideal for s, f, ideal in cases), 2
            ),
        }
        for name, size in sizes.items()
    ]


def cold_call(repeats: int = 200, clock: str = "cpu") -> dict:
    """Median microseconds of one small ``logits_to_tables`` call, warm and right after a float64 product."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 33, generator=generator, dtype=torch.float64)
    out = torch.empty(16, 33)
    a = torch.randn(1500, 128, generator=generator, dtype=torch.float64)
    b = torch.randn(128, 512, generator=generator, dtype=torch.float64)
    product = torch.empty(1500, 512, dtype=torch.float64)
    tick = CLOCKS[clock]
    times: dict[str, list[float]] = {"warm": [], "cold": []}
    for label in times:
        for _ in range(repeats):
            if label == "cold":
                torch.mm(a, b, out=product)
            start = tick()
            logits_to_tables(logits, out)
            times[label].append(tick() - start)
    warm, cold = (1e6 * statistics.median(times[label]) for label in ("warm", "cold"))
    return {"shape": [16, 33], "us_warm": round(warm, 2), "us_after_product": round(cold, 2), "ratio": round(cold / warm, 2)}


def format_table(rows: Sequence[dict]) -> str:
    """A readable table of benchmark rows, with the overhead over the ideal code length."""
    header = (
        f"{'coder':<6} {'tokens':<17} {'enc us/tok':>10} {'dec us/tok':>10} {'tables us/tok':>13} "
        f"{'bits':>9} {'ideal bits':>10} {'bits/tok':>8} {'overhead':>9} {'16-bit cost/tok':>15}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        extra = r["bits"] - r["ideal_bits"]
        cost = r.get("ideal_bits_16bit")
        cost = "-" if cost is None else f"{(cost - r['ideal_bits']) / r['num_tokens']:.3f}"
        lines.append(
            f"{r['coder']:<6} {r['tokens']:<17} {r['us_per_token_encode']:>10.2f} {r['us_per_token_decode']:>10.2f} "
            f"{r['us_per_token_tables']:>13.2f} {r['bits']:>9d} {r['ideal_bits']:>10.1f} "
            f"{r['bits'] / r['num_tokens']:>8.3f} {100 * extra / max(r['ideal_bits'], 1e-9):>8.2f}% {cost:>15}"
        )
    return "\n".join(lines)


def format_segments(rows: Sequence[dict]) -> str:
    """A readable table of :func:`segment_overhead` rows."""
    header = f"{'coder':<16} {'tokens':<17} {'tokens/segment':>14} {'extra bytes/segment':>19}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['coder']:<16} {r['tokens']:<17} {r['segment_tokens']:>14d} {r['extra_bytes_per_segment']:>19.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Parse ``argv``, run the benchmark, print a table (or JSON with ``--json``); returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m progvc.bench coders", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--json", action="store_true", help='print {"coders": [rows], "path": [rows], "segments": [rows], "cold": {...}} as JSON'
    )
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per run (default 1000)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs; the median is reported (default 5)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core, stable)")
    parser.add_argument(
        "--coders", default=None, help="comma-separated coder names (default: all registered)"
    )
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="cpu (default) or wall time")
    parser.add_argument("--segments", type=int, default=200, help="small segments for the overhead table")
    parser.add_argument("--segment-tokens", type=int, default=8, help="tokens per small segment (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.tokens, args.repeats, args.threads, args.segments, args.segment_tokens) < 1:
        raise ConfigError(
            "--tokens, --repeats, --threads, --segments and --segment-tokens must be at least 1"
        )
    coders = args.coders.split(",") if args.coders else CODERS.names()
    for name in coders:
        CODERS.get(name)  # unknown names fail before any work
    torch.set_num_threads(args.threads)
    rows = [
        row
        for kind in KINDS
        for row in bench_kind(kind, coders, args.tokens, args.repeats, args.seed, args.clock)
    ]
    path = [coding_path(kind, args.tokens, args.repeats, args.seed, args.clock) for kind in KINDS]
    segments = [
        row
        for kind in KINDS
        for row in segment_overhead(kind, coders, args.segment_tokens, args.segments, args.seed)
    ]
    cold = cold_call(clock=args.clock)
    if args.json:
        print(json.dumps({"coders": rows, "path": path, "segments": segments, "cold": cold}, indent=2))
    else:
        line = (
            f"one tables call {cold['shape']}: {cold['us_warm']:.1f} us warm, "
            f"{cold['us_after_product']:.1f} us right after a float64 product ({cold['ratio']:.1f}x)"
        )
        print(format_table(rows), format_path(path), format_segments(segments), line, sep="\n\n")
    return 0
