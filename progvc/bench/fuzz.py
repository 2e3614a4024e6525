"""``python -m progvc.bench fuzz``: structure-aware fuzzing of the decoder with streams whose CRCs are valid.

A CRC stops accidents, not an adversary, who recomputes it. This fuzzer starts from real streams
of small random-init models (two tokenizers, both entropy coders, both prediction modes), takes
them apart into header fields and GOPs of segment payloads, mutates that structure -- header
fields set within and beyond their limits, payloads replaced by random bytes, flipped bits or
another stream's bytes, segments and GOPs reordered, dropped or duplicated, GOP and layer counts
changed, tails cut or extended -- and writes it back with every CRC recomputed, so that the
mutations reach the field checks, the decoder limits and the entropy decoders.

Each case is decoded in-process under a watchdog (``signal.setitimer``): the outcomes are a clean
error (a :class:`~progvc.errors.ProgvcError`), a decode (frames of the header's size), a crash
(any other exception, or frames of another shape) or a hang (over ``--timeout`` seconds). Peak
memory is the process's ``ru_maxrss``. Cases are reproducible: case ``i`` draws from
``random.Random(f"{seed}:{i}")``, so ``--seed S --start i --cases 1`` replays one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import resource
import signal
import struct
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from progvc.codec import bitstream
from progvc.codec.bitstream import MAGIC, VERSION, crc16
from progvc.codec.bitstream import varint as _varint
from progvc.codec.limits import DecodeLimits
from progvc.codec.motion import MOTION_MODES
from progvc.codec.synthesis import SYNTHESIS_MODES, TEMPERATURE_UNIT
from progvc.errors import ProgvcError
from progvc.io import MAX_SIDE

#: the limits the fuzzed decoder runs under: small enough that every accepted case decodes within
#: the watchdog's budget, so that the header mutations exercise the limit checks too.
FUZZ_LIMITS = DecodeLimits(max_pixels=96 * 96, max_frames=12, max_synth_work=12 * 96 * 96 * 2)

_MAX_VARINT = 2**35 - 1
#: header fields, in stream order, and their ``(kind, format limit)``.
_FIELDS: dict[str, tuple[str, int]] = {
    "width": ("varint", MAX_SIDE),
    "height": ("varint", MAX_SIDE),
    "fps_num": ("varint", bitstream.MAX_FPS_TERM),
    "fps_den": ("varint", bitstream.MAX_FPS_TERM),
    "num_frames": ("varint", bitstream.MAX_FRAMES),
    "gop_size": ("varint", bitstream.MAX_GOP),
    "num_scales": ("varint", bitstream.MAX_SCALES),
    "coder_len": ("u8", bitstream.MAX_CODER_NAME),
    "synth_mode": ("u8", len(SYNTHESIS_MODES) - 1),
    "seed": ("varint", 2**32 - 1),
    "temperature": ("u16", 2**16 - 1),
    "top_k": ("varint", bitstream.MAX_TOP_K),
    "layers": ("u8", 255),
    "motion": ("u8", 255),
    "skip": ("u8", 255),
    "version": ("u8", 255),
}


# ---------------------------------------------------------------------- structured streams


@dataclass
class RawStream:
    """A stream taken apart, with every field raw (no limit applied), for mutation.

    ``num_scales`` and ``coder_len`` are written as stored, so they may disagree with ``scales``
    and ``coder``; ``gops`` holds per GOP its layer count byte and its segment payloads (a count
    that disagrees with the payloads gives a framing error). :meth:`to_bytes` recomputes every CRC.
    """

    magic: bytes
    version: int
    fingerprint: bytes
    width: int
    height: int
    fps_num: int
    fps_den: int
    num_frames: int
    gop_size: int
    num_scales: int
    scales: list[int]
    coder_len: int
    coder: bytes
    synth_mode: int
    seed: int
    temperature: int
    top_k: int
    layers: int
    motion: int
    skip: int
    gops: list[tuple[int, list[bytes]]] = field(default_factory=list)
    #: bytes cut from (negative) or appended to (positive) the serialized stream.
    tail: bytes | int = b""

    @classmethod
    def from_bytes(cls, data: bytes) -> RawStream:
        """Take a valid stream apart."""
        s = bitstream.parse(data)
        h = s.header
        return cls(
            magic=MAGIC,
            version=VERSION,
            fingerprint=h.fingerprint,
            width=h.width,
            height=h.height,
            fps_num=h.fps.numerator,
            fps_den=h.fps.denominator,
            num_frames=h.num_frames,
            gop_size=h.gop_size,
            num_scales=len(h.scales),
            scales=list(h.scales),
            coder_len=len(h.coder),
            coder=h.coder.encode("ascii"),
            synth_mode=SYNTHESIS_MODES.index(h.synthesis.mode),
            seed=h.synthesis.seed,
            temperature=round(h.synthesis.temperature * TEMPERATURE_UNIT),
            top_k=h.synthesis.top_k,
            layers=h.layers,
            motion=MOTION_MODES.index(h.motion),
            skip=int(h.skip),
            gops=[(len(g.segments), [bytes(p) for p in g.segments]) for g in s.gops],
        )

    def copy(self) -> RawStream:
        """A deep enough copy to mutate."""
        out = RawStream(**{**self.__dict__, "scales": list(self.scales)})
        out.gops = [(n, list(p)) for n, p in self.gops]
        return out

    def to_bytes(self) -> bytes:
        """Serialize with a valid header CRC and valid segment CRCs (at each segment's position)."""

        def varint(value: int) -> bytes:  # stacked mutations may overflow the 5-byte varint
            return _varint(max(0, min(value, _MAX_VARINT)))

        body = b"".join(
            [
                self.magic,
                bytes([self.version & 0xFF]),
                self.fingerprint,
                *(
                    varint(v)
                    for v in (
                        self.width,
                        self.height,
                        self.fps_num,
                        self.fps_den,
                        self.num_frames,
                        self.gop_size,
                    )
                ),
                varint(self.num_scales),
                *(varint(v) for v in self.scales),
                bytes([self.coder_len & 0xFF]),
                self.coder,
                bytes([self.synth_mode & 0xFF]),
                varint(self.seed),
                struct.pack(">H", self.temperature & 0xFFFF),
                varint(self.top_k),
                bytes([self.layers & 0xFF]),
                bytes([self.motion & 0xFF]),
                bytes([self.skip & 0xFF]),
            ]
        )
        parts = [body, struct.pack(">H", crc16(body))]
        for g, (count, payloads) in enumerate(self.gops):
            parts.append(bytes([count & 0xFF]))
            for k, payload in enumerate(payloads):
                seed = crc16(struct.pack(">IHI", g & 0xFFFFFFFF, k & 0xFFFF, len(payload)))
                parts += [varint(len(payload)), payload, struct.pack(">H", crc16(payload, seed))]
        data = b"".join(parts)
        if isinstance(self.tail, int):
            return data[: max(0, len(data) + self.tail)]
        return data + self.tail


# ---------------------------------------------------------------------- mutations


def _value(rng: random.Random, current: int, limit: int, kind: str) -> int:
    """A value near the interesting places: the current one, 0, 1, the limit and beyond, random."""
    top = {"u8": 255, "u16": 2**16 - 1, "varint": _MAX_VARINT}[kind]
    choices = [
        0,
        1,
        2,
        current - 1,
        current + 1,
        current * 2,
        limit - 1,
        limit,
        limit + 1,
        top,
        rng.randint(0, top),
    ]
    choices += [rng.randint(0, min(top, max(limit, 1) * 2)), rng.randint(max(current - 3, 0), current + 3)]
    return min(top, max(0, rng.choice(choices)))


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def mut_header_field(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Set one header field to a boundary, out-of-range or random value."""
    name = rng.choice(list(_FIELDS))
    kind, limit = _FIELDS[name]
    setattr(s, name, _value(rng, getattr(s, name), limit, kind))
    return f"header.{name}={getattr(s, name)}"


def mut_frame_geometry(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Resize the frames / frame count / GOP size together, within or beyond the decoder limits."""
    side = rng.choice([1, 2, 15, 16, 17, 33, 48, 64, 96, 97, 2048, 4096, 16384])
    s.width, s.height = rng.choice([(side, s.height), (s.width, side), (side, side)])
    s.num_frames = rng.choice([1, 2, s.num_frames, s.gop_size * len(s.gops), 12, 13, 1024, 2**31 - 1])
    if rng.random() < 0.5:
        s.gop_size = rng.choice([1, 2, 3, s.num_frames, 1024])
    return f"geometry={s.width}x{s.height}x{s.num_frames}/gop{s.gop_size}"


def mut_scales(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Change the scale schedule (length, values, order), keeping or breaking the stored count."""
    op = rng.choice(["drop", "add", "swap", "value", "count"])
    if op == "drop" and s.scales:
        s.scales.pop(rng.randrange(len(s.scales)))
    elif op == "add":
        s.scales.insert(rng.randrange(len(s.scales) + 1), _value(rng, 4, bitstream.MAX_SCALE, "varint"))
    elif op == "swap" and len(s.scales) > 1:
        i = rng.randrange(len(s.scales) - 1)
        s.scales[i], s.scales[i + 1] = s.scales[i + 1], s.scales[i]
    elif op == "value" and s.scales:
        s.scales[rng.randrange(len(s.scales))] = _value(rng, s.scales[0], bitstream.MAX_SCALE, "varint")
    if op != "count" or rng.random() < 0.5:
        s.num_scales = len(s.scales)
    else:
        s.num_scales = _value(rng, s.num_scales, bitstream.MAX_SCALES, "varint") % 200
    return f"scales.{op}"


def mut_coder(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Another coder name: the other coder, unknown, invalid characters, non-ASCII, too long."""
    s.coder = rng.choice(
        [b"range", b"rans", b"zstd", b"RANGE", b"", b"x" * 33, b"\xff\xfe", rng.randbytes(5)]
    )
    s.coder_len = len(s.coder) if rng.random() < 0.8 else rng.randint(0, 255)
    return f"coder={s.coder!r}"


def mut_fingerprint(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Another model's fingerprint (a valid one from the pool, or random bytes)."""
    s.fingerprint = rng.choice(pool).fingerprint if rng.random() < 0.7 else rng.randbytes(8)
    return "fingerprint"


def _pick_segment(s: RawStream, rng: random.Random) -> tuple[int, int] | None:
    where = [(g, k) for g, (_, p) in enumerate(s.gops) for k in range(len(p))]
    return rng.choice(where) if where else None


def mut_payload_random(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Replace one segment's payload with random bytes (empty, same length, short or long)."""
    at = _pick_segment(s, rng)
    if at is None:
        return "payload.random(none)"
    g, k = at
    old = s.gops[g][1][k]
    n = rng.choice([0, 1, 2, 3, 4, 5, len(old), len(old) + 1, rng.randint(0, 64), rng.randint(64, 4096)])
    fill = rng.choice(["random", "zeros", "ones"])
    new = {"random": _random_bytes(rng, n), "zeros": bytes(n), "ones": b"\xff" * n}[fill]
    s.gops[g][1][k] = new
    return f"payload.{fill}[{n}]"


def mut_payload_bits(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Flip, set or cut a few bytes of one payload."""
    at = _pick_segment(s, rng)
    if at is None:
        return "payload.bits(none)"
    g, k = at
    b = bytearray(s.gops[g][1][k])
    op = rng.choice(["flip", "cut", "extend"])
    if op == "flip" and b:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == "cut":
        del b[rng.randint(0, len(b)) :]
    else:
        b += rng.randbytes(rng.randint(1, 8))
    s.gops[g][1][k] = bytes(b)
    return f"payload.{op}"


def mut_payload_foreign(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Replace one payload with a segment of another stream (another model, coder, scale or GOP)."""
    at = _pick_segment(s, rng)
    donors = [p for other in pool for _, ps in other.gops for p in ps]
    if at is None or not donors:
        return "payload.foreign(none)"
    g, k = at
    s.gops[g][1][k] = rng.choice(donors)
    return "payload.foreign"


def mut_segments(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Reorder, drop or duplicate the segments of one GOP (its count follows, or not)."""
    if not s.gops:
        return "segments(none)"
    g = rng.randrange(len(s.gops))
    count, payloads = s.gops[g]
    op = rng.choice(["shuffle", "drop", "dup", "count"])
    if op == "shuffle":
        rng.shuffle(payloads)
    elif op == "drop" and payloads:
        payloads.pop(rng.randrange(len(payloads)))
    elif op == "dup" and payloads:
        i = rng.randrange(len(payloads))
        payloads.insert(i, payloads[i])
    follow = rng.random() < 0.8
    if op == "count" or not follow:
        count = _value(rng, count, s.layers, "u8")
    else:
        count = len(payloads)
    s.gops[g] = (count, payloads)
    if follow and rng.random() < 0.5:
        s.layers = max([n for n, _ in s.gops] + [0])
    return f"segments.{op}"


def mut_gops(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Reorder, drop or duplicate GOPs, or take one from another stream; the frame count may follow."""
    op = rng.choice(["shuffle", "drop", "dup", "foreign", "empty"])
    if op == "shuffle":
        rng.shuffle(s.gops)
    elif op == "drop" and s.gops:
        s.gops.pop(rng.randrange(len(s.gops)))
    elif op == "dup" and s.gops:
        i = rng.randrange(len(s.gops))
        s.gops.insert(i, (s.gops[i][0], list(s.gops[i][1])))
    elif op == "foreign":
        other = rng.choice(pool)
        if other.gops:
            s.gops.insert(rng.randint(0, len(s.gops)), rng.choice(other.gops))
    elif op == "empty":
        s.gops = [(0, []) for _ in s.gops]
    if rng.random() < 0.7:
        s.num_frames = max(1, len(s.gops)) * s.gop_size
    return f"gops.{op}"


def mut_layers(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Change the header's layer count (and maybe every GOP's, cutting or padding their segments)."""
    s.layers = rng.choice([0, 1, s.layers - 1, s.layers + 1, len(s.scales), len(s.scales) + 1, 255])
    s.layers = max(0, min(255, s.layers))
    if rng.random() < 0.6:
        donors = [p for _, ps in s.gops for p in ps] or [b""]
        s.gops = [
            (s.layers, (ps + [rng.choice(donors) for _ in range(s.layers)])[: s.layers]) for _, ps in s.gops
        ]
    return f"layers={s.layers}"


def mut_tail(s: RawStream, rng: random.Random, pool: list[RawStream]) -> str:
    """Cut the serialized stream short or append bytes."""
    s.tail = -rng.randint(1, 40) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 8))
    return "tail"


#: every mutation and its weight.
MUTATIONS: dict[str, tuple[Callable[[RawStream, random.Random, list[RawStream]], str], int]] = {
    "header_field": (mut_header_field, 6),
    "geometry": (mut_frame_geometry, 3),
    "scales": (mut_scales, 1),
    "coder": (mut_coder, 1),
    "fingerprint": (mut_fingerprint, 1),
    "payload_random": (mut_payload_random, 6),
    "payload_bits": (mut_payload_bits, 4),
    "payload_foreign": (mut_payload_foreign, 4),
    "segments": (mut_segments, 4),
    "gops": (mut_gops, 3),
    "layers": (mut_layers, 3),
    "tail": (mut_tail, 1),
}


def mutate(base: RawStream, rng: random.Random, pool: list[RawStream]) -> tuple[bytes, list[str]]:
    """One to three stacked mutations of ``base``: the stream (CRCs valid) and what was done."""
    s = base.copy()
    names = list(MUTATIONS)
    weights = [MUTATIONS[n][1] for n in names]
    done = []
    for name in rng.choices(names, weights, k=rng.choice([1, 1, 1, 2, 2, 3])):
        done.append(MUTATIONS[name][0](s, rng, pool))
    return s.to_bytes(), done


# ---------------------------------------------------------------------- corpus


def _frames(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Smooth moving test frames (gradients plus noise), uint8 ``[n, H, W, 3]``."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for t in range(n):
        base = np.stack([(x + 3 * t) / width, (y + 2 * t) / height, ((x + y) / (width + height))], -1)
        out.append(np.clip(255 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def tiny_models() -> list[Any]:
    """Two random-init models: msvq + range + intra prediction, msbsq + rans + prediction loops."""
    import torch

    from progvc.codec import CodecModel
    from progvc.context_models import CONTEXT_MODELS
    from progvc.tokenizers import TOKENIZERS

    models = []
    for i, (kind, coder, prediction) in enumerate((("msvq", "range", "intra"), ("msbsq", "rans", "loops"))):
        torch.manual_seed(i)
        common = dict(latent_dim=8, scales=(1, 2, 3, 4), downsample=16, width=8, max_width=16)
        extra = {"vocab_size": 64} if kind == "msvq" else {"bits": 6}
        tok = TOKENIZERS.create(kind, **common, **extra)
        ctx = CONTEXT_MODELS.create("var", **tok.spec.context_args(), width=32, depth=2, heads=2)
        try:
            models.append(CodecModel(tok, ctx, coder=coder, prediction=prediction))
        except (ProgvcError, TypeError):  # a model version without prediction modes
            models.append(CodecModel(tok, ctx, coder=coder))
    return models


def corpus(codecs: Sequence[Any], seed: int = 0) -> list[bytes]:
    """Real streams of every codec: a few sizes, GOP sizes, layer counts and synthesis modes."""
    from progvc.codec import SynthesisSettings

    rng = np.random.default_rng(seed)
    out = []
    for codec in codecs:
        for frames, (h, w), gop, layers, mode in (
            (3, (48, 64), 2, None, "sample"),
            (2, (32, 32), 1, 2, "argmax"),
            (4, (64, 48), 4, 1, "none"),
        ):
            video = _frames(rng, frames, h, w)
            out.append(
                codec.compress(video, layers=layers, gop=gop, synthesis=SynthesisSettings(mode, seed=7))
            )
    return out


# ---------------------------------------------------------------------- running cases


class _Hang(BaseException):
    """Raised by the watchdog; a BaseException so that no ``except Exception`` swallows it."""


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise :class:`_Hang` in the main thread after ``seconds`` (no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise _Hang()

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def decode_case(data: bytes, codecs: dict[bytes, Any], rng: random.Random) -> str:
    """Decode ``data`` like a user would, with random decode options; ``"decode"`` or raise.

    Raises :class:`AssertionError` when frames of another shape than the header's come back.
    """
    codec = codecs.get(data[5:13]) or next(iter(codecs.values()))
    action = rng.choices(["decompress", "tokens", "bits", "truncate"], [8, 1, 1, 1])[0]
    layers = rng.choice([None, None, 0, 1, 2, 3, 4, 5])
    synthesis = rng.choice([None, None, "none", "argmax", "sample"])
    if action == "truncate":
        cut = bitstream.truncate(data, layers or 0)
        bitstream.inspect(cut)
        data = cut
    if action == "tokens":
        for _ in codec.iter_tokens(data, layers=layers, synthesis=synthesis):
            pass
        return "decode"
    if action == "bits":
        codec.frame_bits(data)
        return "decode"
    frames = codec.decompress(data, layers=layers, synthesis=synthesis)
    h = bitstream.parse(data).header
    expected = (h.num_frames, h.height, h.width, 3)
    if frames.shape != expected or frames.dtype != np.uint8:
        raise AssertionError(f"decoded {frames.dtype} {list(frames.shape)}, header says {list(expected)}")
    return "decode"


@dataclass
class FuzzReport:
    """Counts of a fuzzing run (see :func:`fuzz`)."""

    cases: int = 0
    clean_errors: int = 0
    decodes: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    rss_start_mib: float = 0.0
    peak_rss_mib: float = 0.0
    slowest_case_s: float = 0.0
    errors: Counter = field(default_factory=Counter)
    mutations: Counter = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "cases": self.cases,
            "clean_errors": self.clean_errors,
            "decodes": self.decodes,
            "crashes": self.crashes,
            "hangs": self.hangs,
            "seconds": round(self.seconds, 2),
            "cases_per_second": round(self.cases / self.seconds, 1) if self.seconds else None,
            "slowest_case_s": round(self.slowest_case_s, 3),
            "rss_start_mib": round(self.rss_start_mib, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "errors_by_type": dict(self.errors.most_common()),
            "mutations": dict(self.mutations.most_common()),
            "failures": self.failures,
        }


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fuzz(
    cases: int,
    seed: int = 0,
    start: int = 0,
    timeout: float = 10.0,
    limits: DecodeLimits = FUZZ_LIMITS,
    save: Path | None = None,
    progress: Callable[[FuzzReport], None] | None = None,
) -> FuzzReport:
    """Run cases ``start .. start + cases - 1`` against tiny models; see the module docstring.

    Args:
        cases: how many cases.
        seed: the run's seed (corpus and mutations).
        start: index of the first case (to replay one).
        timeout: a case running longer is a hang (seconds).
        limits: the decoder limits of the fuzzed codecs.
        save: folder for the streams of crashes and hangs (``case-<i>.pgv``).
        progress: called with the report every 1000 cases.
    """
    from progvc.codec import Codec

    models = tiny_models()
    codecs = [Codec(m, progress=False, limits=limits) for m in models]
    pool = [RawStream.from_bytes(d) for d in corpus(codecs, seed)]
    by_fingerprint = {c.fingerprint: c for c in codecs}
    report = FuzzReport(rss_start_mib=_rss_mib())
    began = time.perf_counter()
    for i in range(start, start + cases):
        rng = random.Random(f"{seed}:{i}")
        base = rng.choice(pool)
        try:
            data, done = mutate(base, rng, pool)
        except Exception as exc:  # noqa: BLE001 - a bug of the fuzzer itself: report it, keep going
            report.cases += 1
            report.crashes += 1
            report.failures.append(
                {"case": i, "outcome": "fuzzer error", "mutations": [], "detail": repr(exc)}
            )
            continue
        report.mutations.update(d.split("=")[0].split("[")[0].split("(")[0] for d in done)
        t0 = time.perf_counter()
        outcome, detail = "decode", ""
        try:
            with watchdog(timeout):
                decode_case(data, by_fingerprint, rng)
        except _Hang:
            outcome, detail = "hang", f"over {timeout} s"
        except ProgvcError as exc:
            outcome = "clean"
            report.errors[type(exc).__name__] += 1
            if "\n" in str(exc):
                outcome, detail = "crash", f"multi-line error message: {str(exc)[:300]!r}"
        except Exception as exc:  # noqa: BLE001 - every other exception is what we are looking for
            outcome = "crash"
            detail = f"{type(exc).__name__}: {str(exc)[:300]} | {traceback.format_exc(limit=-3)[-600:]}"
        elapsed = time.perf_counter() - t0
        report.slowest_case_s = max(report.slowest_case_s, elapsed)
        report.cases += 1
        if outcome == "clean":
            report.clean_errors += 1
        elif outcome == "decode":
            report.decodes += 1
        else:
            report.crashes += outcome == "crash"
            report.hangs += outcome == "hang"
            if len(report.failures) < 50:
                report.failures.append({"case": i, "outcome": outcome, "mutations": done, "detail": detail})
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"case-{i}.pgv").write_bytes(data)
        if progress is not None and report.cases % 1000 == 0:
            report.seconds = time.perf_counter() - began
            report.peak_rss_mib = _rss_mib()
            progress(report)
    report.seconds = time.perf_counter() - began
    report.peak_rss_mib = _rss_mib()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzer; exit 1 when a case crashed or hung."""
    p = argparse.ArgumentParser(prog="python -m progvc.bench fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus and the mutations (default 0)")
    p.add_argument("--start", type=int, default=0, help="index of the first case, to replay one (default 0)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds after which a case is a hang (default 10)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--save", type=Path, help="folder to write the streams of crashes and hangs to")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    def progress(r: FuzzReport) -> None:
        print(
            f"[fuzz] {r.cases} cases, {r.crashes} crashes, {r.hangs} hangs, {r.cases / r.seconds:.1f}/s, "
            f"peak RSS {r.peak_rss_mib:.0f} MiB",
            file=sys.stderr,
            flush=True,
        )

    report = fuzz(args.cases, args.seed, args.start, args.timeout, save=args.save, progress=progress)
    d = report.to_dict()
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(
            f"{d['cases']} cases in {d['seconds']} s ({d['cases_per_second']}/s): {d['clean_errors']} clean errors, "
            f"{d['decodes']} decodes, {d['crashes']} crashes, {d['hangs']} hangs; peak RSS {d['peak_rss_mib']} MiB"
        )
        for f in d["failures"]:
            print(f"  case {f['case']} {f['outcome']}: {f['mutations']} {f['detail']}")
    return 1 if report.crashes or report.hangs else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
