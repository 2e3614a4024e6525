"""The progressive bitstream format (version 4): header, then GOPs of scale-major segments.

Layout (all integers unsigned; ``varint`` is LEB128, at most 5 bytes; see docs/bitstream.md)::

    header  = "PGVC" | version u8 | fingerprint 8B | width, height, fps_num, fps_den,
              num_frames, gop_size varint | num_scales varint, scales varint * num_scales |
              coder_len u8, coder ascii | synth_mode u8, seed varint, temperature_milli u16,
              top_k varint | layers u8 | motion u8 | skip u8 | crc16 u16
    gop     = layers_g u8 | segment * layers_g
    segment = length varint | payload (length bytes) | crc16 u16

GOP ``g`` holds ``min(gop_size, num_frames - g * gop_size)`` frames; segment ``k`` of a GOP holds
scale ``k`` of all its frames, frame after frame. Dropping trailing segments (and lowering the
``layers`` fields) is all :func:`truncate` does, so a cut stream is byte-identical to one encoded
with fewer layers. The CRC-16 (CCITT, ``binascii.crc_hqx``) of a segment is seeded with its GOP
index, scale index and length, so a corrupt, moved or re-sized segment is detected; it costs 2
bytes per scale per GOP (16 bytes per 32-frame GOP of 8 scales, 0.5 byte per frame).

:func:`parse` checks every field against its limits and every segment's bounds and CRC before
anything is decoded; malformed input raises :class:`~progvc.errors.BitstreamError`.
"""

from __future__ import annotations

import binascii
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from progvc.codec.motion import MOTION_MODES
from progvc.codec.synthesis import SYNTHESIS_MODES, TEMPERATURE_UNIT, SynthesisSettings
from progvc.errors import BitstreamError, ConfigError
from progvc.io import MAX_PIXELS, MAX_SIDE

if TYPE_CHECKING:
    from progvc.codec.limits import DecodeLimits

MAGIC = b"PGVC"
VERSION = 4
#: older versions this progvc still reads: version 3 has no skip field (no skip flags), version 2
#: no motion field either (no motion).
READABLE_VERSIONS = (2, 3, 4)
FINGERPRINT_BYTES = 8
MAX_FRAMES = 2**31 - 1
MAX_GOP = 1024
MAX_SCALES = 64
MAX_SCALE = 4096
MAX_FPS_TERM = 2**20
MAX_FPS = 1000
MAX_CODER_NAME = 32
MAX_TOP_K = 2**24 - 1
_CODER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_VARINT_BYTES = 5


def crc16(data: bytes | memoryview, seed: int = 0xFFFF) -> int:
    """CRC-16/CCITT of ``data`` (``binascii.crc_hqx``), continuing from ``seed``."""
    return binascii.crc_hqx(data, seed)


def _segment_crc(gop: int, scale: int, payload: bytes | memoryview) -> int:
    return crc16(payload, crc16(struct.pack(">IHI", gop, scale, len(payload))))


def varint(value: int) -> bytes:
    """LEB128 encoding of ``0 <= value < 2**35``."""
    if not 0 <= value < 2 ** (7 * _VARINT_BYTES):
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs before the first GOP.

    Attributes:
        fingerprint: :meth:`CodecModel.fingerprint` of the model that made the stream (8 bytes).
        width, height: frame size in pixels.
        fps: frame rate as a fraction.
        num_frames: frames in the stream (>= 1).
        gop_size: frames per group of pictures (the last GOP may be shorter).
        scales: the tokenizer's scale schedule ``s_1 < ... < s_K``.
        coder: name of the registered entropy coder of the segments.
        synthesis: default decoder-side synthesis of the scales not sent.
        layers: scales present in the fullest GOP (``0 .. K``).
        motion: the prediction loops' motion (:mod:`progvc.codec.motion`): ``"none"`` or
            ``"global"`` (every predicted frame's chunk of segment ``motion_scale`` starts with its translation).
        skip: skip flags (:mod:`progvc.codec.skip`): every segment opens with its mode, and with
            mode 1 every predicted frame's chunk with a flag; a skipped scale carries no tokens.
        version: the format version the header was read with (:meth:`to_bytes` always writes
            :data:`VERSION`, whose fields mean the same with ``skip`` off).
    """

    fingerprint: bytes
    width: int
    height: int
    fps: Fraction
    num_frames: int
    gop_size: int
    scales: tuple[int, ...]
    coder: str
    synthesis: SynthesisSettings
    layers: int
    motion: str = "none"
    skip: bool = False
    version: int = VERSION

    @property
    def num_gops(self) -> int:
        return -(-self.num_frames // self.gop_size)

    def gop_frames(self, index: int) -> int:
        """Frames in GOP ``index``."""
        return min(self.gop_size, self.num_frames - index * self.gop_size)

    def check(self, error: type[Exception] = BitstreamError) -> None:
        """Raise ``error`` (one line) unless every field lies within the format's limits."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise error(message)

        need(len(self.fingerprint) == FINGERPRINT_BYTES, "model fingerprint must be 8 bytes")
        need(
            1 <= self.width <= MAX_SIDE
            and 1 <= self.height <= MAX_SIDE
            and self.width * self.height <= MAX_PIXELS,
            f"frame size {self.width}x{self.height} is outside the limits ({MAX_SIDE} per side, {MAX_PIXELS} pixels)",
        )
        need(
            0 < self.fps <= MAX_FPS
            and self.fps.numerator <= MAX_FPS_TERM
            and self.fps.denominator <= MAX_FPS_TERM,
            f"frame rate {self.fps} is outside (0, {MAX_FPS}] or not representable",
        )
        need(1 <= self.num_frames <= MAX_FRAMES, f"frame count {self.num_frames} is outside 1..{MAX_FRAMES}")
        need(1 <= self.gop_size <= MAX_GOP, f"GOP size {self.gop_size} is outside 1..{MAX_GOP}")
        s = self.scales
        need(
            1 <= len(s) <= MAX_SCALES
            and all(1 <= v <= MAX_SCALE for v in s)
            and all(b > a for a, b in zip(s, s[1:])),
            f"scale schedule {list(s)[:8]} is not strictly increasing in 1..{MAX_SCALE} (at most {MAX_SCALES})",
        )
        need(
            len(self.coder) <= MAX_CODER_NAME and bool(_CODER_NAME.match(self.coder)),
            f"coder name {self.coder[:40]!r} is not valid",
        )
        need(0 <= self.layers <= len(s), f"layers {self.layers} is outside 0..{len(s)}")
        need(self.motion in MOTION_MODES, f"motion {self.motion!r} is not one of {', '.join(MOTION_MODES)}")

    def to_bytes(self) -> bytes:
        """The serialized header, CRC included."""
        self.check(ConfigError)
        syn = self.synthesis
        body = b"".join(
            [
                MAGIC,
                bytes([VERSION]),
                self.fingerprint,
                *(varint(v) for v in (self.width, self.height, self.fps.numerator, self.fps.denominator)),
                varint(self.num_frames),
                varint(self.gop_size),
                varint(len(self.scales)),
                *(varint(v) for v in self.scales),
                bytes([len(self.coder)]),
                self.coder.encode("ascii"),
                bytes([SYNTHESIS_MODES.index(syn.mode)]),
                varint(syn.seed),
                struct.pack(">H", round(syn.temperature * TEMPERATURE_UNIT)),
                varint(syn.top_k),
                bytes([self.layers]),
                bytes([MOTION_MODES.index(self.motion)]),
                bytes([int(self.skip)]),
            ]
        )
        return body + struct.pack(">H", crc16(body))


@dataclass(frozen=True)
class Gop:
    """One parsed group of pictures: its index, frame count and verified segment payloads (scale order)."""

    index: int
    num_frames: int
    segments: tuple[memoryview, ...]
    #: bytes of each segment in the stream, framing (length varint, CRC) included.
    segment_sizes: tuple[int, ...]


@dataclass(frozen=True)
class Stream:
    """A fully validated stream: header, GOPs, and the header's size in bytes."""

    header: Header
    gops: tuple[Gop, ...]
    header_bytes: int
    size: int


class _Reader:
    """Bounds-checked reading of a byte string; every failure is a :class:`BitstreamError`."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(data).cast("B")
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.remaining:
            raise BitstreamError(f"stream truncated in {what} (needs {n} bytes, {self.remaining} left)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack(">H", self.take(2, what))[0]

    def varint(self, what: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
        value = 0
        for i in range(_VARINT_BYTES):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and not byte:
                    raise BitstreamError(f"{what}: non-canonical varint")
                if not lo <= value <= hi:
                    raise BitstreamError(f"{what} {value} is outside {lo}..{hi}")
                return value
        raise BitstreamError(f"{what}: varint longer than {_VARINT_BYTES} bytes")


def _parse_header(reader: _Reader) -> Header:
    if bytes(reader.take(len(MAGIC), "magic")) != MAGIC:
        raise BitstreamError("not a progvc stream (bad magic)")
    version = reader.u8("format version")
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"stream format version {version} is not supported (this progvc reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    fingerprint = bytes(reader.take(FINGERPRINT_BYTES, "model fingerprint"))
    width = reader.varint("width", 1, MAX_SIDE)
    height = reader.varint("height", 1, MAX_SIDE)
    num = reader.varint("frame rate numerator", 1, MAX_FPS_TERM)
    den = reader.varint("frame rate denominator", 1, MAX_FPS_TERM)
    num_frames = reader.varint("frame count", 1, MAX_FRAMES)
    gop_size = reader.varint("GOP size", 1, MAX_GOP)
    num_scales = reader.varint("number of scales", 1, MAX_SCALES)
    scales = tuple(reader.varint("scale", 1, MAX_SCALE) for _ in range(num_scales))
    coder_len = reader.u8("coder name length")
    try:
        coder = bytes(reader.take(coder_len, "coder name")).decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("coder name is not ASCII") from None
    mode = reader.u8("synthesis mode")
    if mode >= len(SYNTHESIS_MODES):
        raise BitstreamError(f"synthesis mode {mode} is unknown")
    seed = reader.varint("seed")
    temperature = reader.u16("temperature")
    top_k = reader.varint("top-k", 0, MAX_TOP_K)
    layers = reader.u8("layers")
    motion = reader.u8("motion") if version >= 3 else 0
    if motion >= len(MOTION_MODES):
        raise BitstreamError(f"motion mode {motion} is unknown")
    skip = reader.u8("skip") if version >= 4 else 0
    if skip > 1:
        raise BitstreamError(f"skip field {skip} is neither 0 nor 1")
    end = reader.pos
    crc = reader.u16("header checksum")
    if crc != crc16(reader.buf[:end]):
        raise BitstreamError("header checksum mismatch (corrupt stream)")
    if temperature == 0:
        raise BitstreamError("temperature 0 is invalid")
    header = Header(
        fingerprint=fingerprint,
        width=width,
        height=height,
        fps=Fraction(num, den),
        num_frames=num_frames,
        gop_size=gop_size,
        scales=scales,
        coder=coder,
        synthesis=SynthesisSettings(SYNTHESIS_MODES[mode], seed, temperature / TEMPERATURE_UNIT, top_k),
        layers=layers,
        motion=MOTION_MODES[motion],
        skip=bool(skip),
        version=version,
    )
    header.check(BitstreamError)
    return header


def parse(data: bytes | bytearray | memoryview, limits: DecodeLimits | None = None) -> Stream:
    """Validate a whole stream -- header fields, every GOP's framing, every segment's CRC -- without decoding.

    Raises :class:`BitstreamError` (one line) on the first problem: truncation, a bad field,
    a checksum mismatch, missing GOPs or trailing bytes. With ``limits``, a header over its frame
    area or frame count raises :class:`~progvc.errors.LimitExceededError` before the GOPs are read.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"a stream is bytes, got {type(data).__name__}")
    reader = _Reader(data)
    header = _parse_header(reader)
    if limits is not None:
        limits.check_header(header)
    header_bytes = reader.pos
    gops = []
    for g in range(header.num_gops):
        layers = reader.u8(f"GOP {g} layer count")
        if layers > header.layers:
            raise BitstreamError(f"GOP {g} has {layers} layers, more than the header's {header.layers}")
        segments, sizes = [], []
        for k in range(layers):
            start = reader.pos
            length = reader.varint(f"length of GOP {g} scale {k}")  # take() checks it against what is left
            payload = reader.take(length, f"GOP {g} scale {k}")
            if reader.u16(f"checksum of GOP {g} scale {k}") != _segment_crc(g, k, payload):
                raise BitstreamError(f"checksum mismatch in GOP {g} scale {k} (corrupt stream)")
            segments.append(payload)
            sizes.append(reader.pos - start)
        gops.append(Gop(g, header.gop_frames(g), tuple(segments), tuple(sizes)))
    if reader.remaining:
        raise BitstreamError(f"{reader.remaining} unexpected bytes after the last GOP")
    return Stream(header, tuple(gops), header_bytes, len(reader.buf))


def encode_gop(index: int, segments: Iterable[bytes]) -> bytes:
    """Serialize GOP ``index`` from its scale segments' payloads (coarse first)."""
    segments = list(segments)
    if len(segments) > 255:
        raise ConfigError("at most 255 layers per GOP")
    parts = [bytes([len(segments)])]
    for k, payload in enumerate(segments):
        parts += [varint(len(payload)), bytes(payload), struct.pack(">H", _segment_crc(index, k, payload))]
    return b"".join(parts)


def truncate(data: bytes, layers: int) -> bytes:
    """Keep the first ``layers`` scales of every GOP: equals re-encoding with ``layers``, byte for byte."""
    if not isinstance(layers, int) or layers < 0:
        raise ConfigError(f"layers must be an integer >= 0, got {layers!r}")
    stream = parse(data)
    header = replace(stream.header, layers=min(stream.header.layers, layers))
    return header.to_bytes() + b"".join(encode_gop(g.index, g.segments[:layers]) for g in stream.gops)


@dataclass(frozen=True)
class StreamInfo:
    """What :func:`inspect` reports about a stream (sizes in bytes).

    Attributes:
        header: the parsed header (size, frame rate, model fingerprint, synthesis defaults, ...).
        size: bytes of the whole stream.
        header_bytes: bytes of the header.
        gop_layers: scales present in each GOP.
        bytes_per_scale: bytes of scale ``k`` summed over GOPs, framing included.
    """

    header: Header
    size: int
    header_bytes: int
    gop_layers: tuple[int, ...]
    bytes_per_scale: tuple[int, ...]

    @property
    def num_frames(self) -> int:
        return self.header.num_frames

    @property
    def num_gops(self) -> int:
        return len(self.gop_layers)

    def bytes_at(self, layers: int) -> int:
        """Size in bytes of ``truncate(stream, layers)``, without truncating."""
        return self.header_bytes + self.num_gops + sum(self.bytes_per_scale[:layers])

    def bpp(self, layers: int | None = None) -> float:
        """Bits per pixel of the stream (cut to ``layers`` scales), header included."""
        h = self.header
        size = self.size if layers is None else self.bytes_at(layers)
        return 8 * size / (h.num_frames * h.width * h.height)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        h = self.header
        return {
            "version": h.version,
            "fingerprint": h.fingerprint.hex(),
            "width": h.width,
            "height": h.height,
            "fps": f"{h.fps.numerator}/{h.fps.denominator}",
            "frames": h.num_frames,
            "gop_size": h.gop_size,
            "gops": self.num_gops,
            "scales": list(h.scales),
            "layers": h.layers,
            "gop_layers": list(self.gop_layers),
            "coder": h.coder,
            "motion": h.motion,
            "skip": h.skip,
            "synthesis": {
                "mode": h.synthesis.mode,
                "seed": h.synthesis.seed,
                "temperature": h.synthesis.temperature,
                "top_k": h.synthesis.top_k,
            },
            "size_bytes": self.size,
            "header_bytes": self.header_bytes,
            "bytes_per_scale": list(self.bytes_per_scale),
            "bpp": self.bpp(),
        }


def inspect(data: bytes) -> StreamInfo:
    """Validate ``data`` (see :func:`parse`) and summarize it, without a model."""
    stream = parse(data)
    per_scale = [0] * stream.header.layers
    for gop in stream.gops:
        for k, n in enumerate(gop.segment_sizes):
            per_scale[k] += n
    return StreamInfo(
        header=stream.header,
        size=stream.size,
        header_bytes=stream.header_bytes,
        gop_layers=tuple(len(g.segments) for g in stream.gops),
        bytes_per_scale=tuple(per_scale),
    )
