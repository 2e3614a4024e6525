"""Traditional codecs as anchors: x264, x265 and SVT-AV1 through PyAV, low-delay and fast.

Every anchor encodes RGB frames ``uint8 [T, H, W, 3]`` as 8-bit 4:2:0 (PyAV's default BT.601
conversion both ways, frames padded to even sizes by edge replication and cropped back), with
one GOP size (an IDR / key frame every ``gop`` frames, no scene-cut key frames), no B-frames and
no look-ahead, on ``threads`` threads. The rate is the **bits** of the coded video packets: no
container, and without the SEI messages x264 and x265 add (their version and settings as text:
x264 in the first frame, x265 in every key frame; a decoder does not need them).

Rate control is either a quality parameter (``crf``; the sweeps :attr:`AnchorCodec.sweep`) or a
target bitrate in bits per second (x264/x265 ABR; SVT-AV1 CBR, since SVT-AV1 refuses VBR with
low-delay prediction).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.logging
import numpy as np

from progvc.errors import ConfigError


def _h264_sei(nal: bytes) -> bool:
    return nal[0] & 0x1F == 6


def _hevc_sei(nal: bytes) -> bool:
    return (nal[0] >> 1) & 0x3F in (39, 40)  # prefix / suffix SEI


@dataclass(frozen=True)
class AnchorCodec:
    """One anchor encoder and how it is driven.

    Attributes:
        name: short name (``"x264"``).
        encoder: FFmpeg encoder in PyAV (``"libx264"``).
        decoder: FFmpeg decoder for its packets.
        options: fixed private options; ``{gop}`` and ``{threads}`` are filled in.
        bitrate_options: extra options in bitrate mode.
        sweep: ``crf`` values of the default sweep, lowest rate first.
        is_sei: tells an Annex B NAL unit that carries SEI, stripped before counting bits (None: no stripping).
        bitrate_min_side: smallest frame side the encoder's rate control accepts.
    """

    name: str
    encoder: str
    decoder: str
    options: dict[str, str]
    sweep: tuple[int, ...]
    bitrate_options: dict[str, str] = field(default_factory=dict)
    is_sei: Callable[[bytes], bool] | None = None
    bitrate_min_side: int = 1

    def encoder_options(self, gop: int, threads: int, crf: int | None) -> dict[str, str]:
        """The PyAV ``options`` of one encode (``crf=None``: bitrate mode)."""
        opts = {k: v.format(gop=gop, threads=threads) for k, v in self.options.items()}
        if crf is None:
            opts.update({k: v.format(gop=gop, threads=threads) for k, v in self.bitrate_options.items()})
        else:
            opts["crf"] = str(crf)
        return opts

    def describe(self, gop: int, threads: int = 1, bitrate: bool = False) -> dict:
        """The settings of a sweep, for reports: encoder, options (but the varying ``crf``), ``crf`` values."""
        options = self.encoder_options(gop, threads, None if bitrate else self.sweep[0])
        options.pop("crf", None)
        info = {"encoder": self.encoder, "decoder": self.decoder, "options": options}
        return info if bitrate else {**info, "crf_sweep": list(self.sweep)}


ANCHORS: dict[str, AnchorCodec] = {
    "x264": AnchorCodec(
        name="x264",
        encoder="libx264",
        decoder="h264",
        options={
            "preset": "veryfast",
            "tune": "zerolatency",
            "x264-params": "keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
        },
        sweep=(51, 47, 43, 39, 35, 31, 27),
        is_sei=_h264_sei,
    ),
    "x265": AnchorCodec(
        name="x265",
        encoder="libx265",
        decoder="hevc",
        options={
            "preset": "veryfast",
            "tune": "zerolatency",
            "x265-params": "keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:info=0:"
            "pools={threads}:frame-threads=1:log-level=error",
        },
        sweep=(51, 47, 43, 39, 35, 31, 27),
        is_sei=_hevc_sei,
    ),
    "svtav1": AnchorCodec(
        name="svtav1",
        encoder="libsvtav1",
        decoder="libdav1d",
        options={"preset": "10", "svtav1-params": "pred-struct=1:lp={threads}"},  # 1 = low delay
        bitrate_options={"svtav1-params": "pred-struct=1:lp={threads}:rc=2"},  # 2 = CBR
        sweep=(63, 59, 55, 50, 45, 40, 35),
        bitrate_min_side=64,  # below, SVT-AV1 turns adaptive quantisation off, which its rate control refuses
    ),
}


@dataclass
class AnchorResult:
    """One anchor encode and its decode.

    Attributes:
        codec: anchor name.
        setting: ``"crf=43"`` or ``"bitrate=12000"`` (bits per second).
        bits: bits of the coded packets (SEI removed).
        frames: decoded frames ``uint8 [T, H, W, 3]``.
        encode_seconds, decode_seconds: wall-clock times.
    """

    codec: str
    setting: str
    bits: int
    frames: np.ndarray
    encode_seconds: float
    decode_seconds: float

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole clip."""
        t, h, w = self.frames.shape[:3]
        return self.bits / (t * h * w)


def get_anchor(name: str | AnchorCodec) -> AnchorCodec:
    """The anchor called ``name``; :class:`~progvc.errors.ConfigError` lists the known ones otherwise."""
    if isinstance(name, AnchorCodec):
        return name
    try:
        return ANCHORS[name]
    except KeyError:
        raise ConfigError(f"unknown anchor {name!r}; known: {', '.join(ANCHORS)}") from None


def _open_checked(ctx: av.CodecContext) -> None:
    """Open an encoder, failing when it ignored an option.

    FFmpeg silently drops option names an encoder does not have, and the encoders only log a
    warning for unknown keys of ``x264-params`` / ``x265-params`` / ``svtav1-params``; both would
    make an anchor run with other settings than the documented ones.
    """
    known = {
        o.name for group in (ctx.supported_options.generic, ctx.supported_options.private) for o in group
    }
    unknown = sorted(set(ctx.options) - known)
    if unknown:
        raise ConfigError(f"{ctx.name} in this PyAV build has no option(s) {', '.join(unknown)}")
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs:
            ctx.open()
    finally:
        av.logging.set_level(previous)
    rejected = [
        m.strip() for _, _, m in logs if "error parsing option" in m.lower() or "unknown option" in m.lower()
    ]
    if rejected:
        raise ConfigError(f"{ctx.name} rejected a setting: {'; '.join(rejected)}")


def strip_sei(packet: bytes, is_sei: Callable[[bytes], bool]) -> bytes:
    """An Annex B packet without its SEI NAL units; every other byte is kept as it was."""
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", packet)]
    bounds = [*starts, len(packet)]
    kept = [packet[: bounds[0]]]
    for begin, end in zip(bounds, bounds[1:]):
        unit = packet[begin:end]  # 3-byte start code, NAL unit, zeros that belong to the next start code
        nal = unit[3:].rstrip(b"\x00")
        kept.append(unit[3 + len(nal) :] if nal and is_sei(nal) else unit)
    return b"".join(kept)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    t, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def encode_decode(
    frames: np.ndarray,
    codec: str | AnchorCodec,
    *,
    crf: int | None = None,
    bitrate: int | None = None,
    gop: int = 32,
    fps: float = 30.0,
    threads: int = 1,
) -> AnchorResult:
    """Encode ``frames`` (uint8 ``[T, H, W, 3]``) with anchor ``codec`` and decode them back.

    Args:
        frames: RGB frames.
        codec: a key of :data:`ANCHORS` (or an :class:`AnchorCodec`).
        crf: quality parameter (x264/x265 0..51, SVT-AV1 0..63); exactly one of ``crf`` and ``bitrate``.
        bitrate: target rate in bits per second.
        gop: frames per GOP (key-frame interval).
        fps: frame rate (rate control uses it; the bits do not include timing).
        threads: encoder threads.
    """
    anchor = get_anchor(codec)
    if (crf is None) == (bitrate is None):
        raise ConfigError("give exactly one of crf and bitrate")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ConfigError(f"anchors take uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if gop < 1 or threads < 1:
        raise ConfigError(f"gop and threads must be >= 1, got {gop}, {threads}")
    if bitrate is not None and min(frames.shape[1:3]) < anchor.bitrate_min_side:
        side = anchor.bitrate_min_side
        raise ConfigError(f"{anchor.name} needs frames of at least {side}x{side} in bitrate mode; use crf")
    if anchor.encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr unless told not to
    t, h, w, _ = frames.shape
    padded = _pad_even(frames)
    rate = Fraction(fps).limit_denominator(1001)

    enc = av.CodecContext.create(anchor.encoder, "w")
    enc.width, enc.height = padded.shape[2], padded.shape[1]
    enc.pix_fmt = "yuv420p"
    enc.time_base = 1 / rate
    enc.framerate = rate
    enc.gop_size = gop
    enc.max_b_frames = 0
    enc.thread_count = threads
    if bitrate is not None:
        enc.bit_rate = int(bitrate)
    enc.options = anchor.encoder_options(gop, threads, crf)
    _open_checked(enc)

    start = time.perf_counter()
    packets: list[bytes] = []
    for i, rgb in enumerate(padded):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in enc.encode(frame)]
    packets += [bytes(p) for p in enc.encode(None)]
    encode_seconds = time.perf_counter() - start
    if anchor.is_sei is not None:
        packets = [strip_sei(p, anchor.is_sei) for p in packets]

    start = time.perf_counter()
    dec = av.CodecContext.create(anchor.decoder, "r")
    decoded = [f.to_ndarray(format="rgb24") for p in packets for f in dec.decode(av.Packet(p))]
    decoded += [f.to_ndarray(format="rgb24") for f in dec.decode(None)]
    decode_seconds = time.perf_counter() - start
    if len(decoded) != t:
        raise RuntimeError(
            f"{anchor.name} decoded {len(decoded)} frames of {t}"
        )  # an anchor bug, not a user error
    return AnchorResult(
        codec=anchor.name,
        setting=f"crf={crf}" if crf is not None else f"bitrate={int(bitrate)}",
        bits=8 * sum(len(p) for p in packets),
        frames=np.stack(decoded)[:, :h, :w],
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
    )


def sweep(
    frames: np.ndarray,
    codec: str,
    *,
    crfs: Sequence[int] | None = None,
    bpps: Sequence[float] | None = None,
    gop: int = 32,
    fps: float = 30.0,
    threads: int = 1,
) -> Iterator[AnchorResult]:
    """Encode ``frames`` at every point of a rate sweep, lowest rate first.

    Args:
        crfs: quality parameters (default: the anchor's :attr:`AnchorCodec.sweep`).
        bpps: target rates in bits per pixel instead (bitrate mode: ``bpp * W * H * fps`` bits/s).
    """
    anchor = get_anchor(codec)
    if bpps is not None:
        _, h, w, _ = frames.shape
        for bpp in bpps:
            yield encode_decode(
                frames, codec, bitrate=round(bpp * w * h * fps), gop=gop, fps=fps, threads=threads
            )
        return
    for crf in crfs if crfs is not None else anchor.sweep:
        yield encode_decode(frames, codec, crf=crf, gop=gop, fps=fps, threads=threads)
