"""Decoder resource limits: what a stream may ask of the decoder before any work is done.

The format allows frames of ``2**26`` pixels, ``2**31 - 1`` frames and scales that are not sent
but synthesized by the model, so a few dozen bytes can ask for hours of work (a decompression
bomb). :class:`DecodeLimits` bounds the three, with defaults that every ordinary stream meets;
:meth:`Codec._open_stream <progvc.codec.Codec>` and ``progvc decompress`` check them right after
the stream is parsed and refuse with :class:`~progvc.errors.LimitExceededError`.

Torch-free, like :mod:`progvc.codec.bitstream`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from progvc.errors import ConfigError, LimitExceededError

if TYPE_CHECKING:
    from progvc.codec.bitstream import Header, Stream

#: default frame area: 4K UHD.
DEFAULT_MAX_PIXELS = 3840 * 2160
#: default frames per stream: 2**20, 9.7 hours at 30 fps.
DEFAULT_MAX_FRAMES = 1 << 20
#: default synthesized work, in pixel-scales (frames x pixels x scales synthesized): 2**28, that is
#: 1300 CIF (176x144) frames with all 8 scales of the default model synthesized, about 4 minutes
#: of one CPU core (which synthesizes about 1.1 M pixel-scales per second with that model).
DEFAULT_MAX_SYNTH_WORK = 1 << 28

_HOW = {
    "max_pixels": "--max-pixels",
    "max_frames": "--max-frames",
    "max_synth_work": "--max-synth-work",
}


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds on what one stream may make the decoder do (all inclusive).

    Attributes:
        max_pixels: frame area, width x height.
        max_frames: frames in the stream.
        max_synth_work: frames x pixels x scales synthesized (the scales the decoder fills in
            with the model because the stream does not carry them, or ``layers`` drops them),
            summed over GOPs; 0 with synthesis ``"none"``.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_synth_work: int = DEFAULT_MAX_SYNTH_WORK

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{f.name} must be an integer >= 1, got {value!r}")

    def _refuse(self, name: str, what: str) -> LimitExceededError:
        return LimitExceededError(
            f"{what}, over the decoder limit {name}={getattr(self, name)}; if you trust the stream, raise it "
            f"with Codec(..., limits=DecodeLimits({name}=N)) or progvc decompress {_HOW[name]} N"
        )

    def check_header(self, header: Header) -> None:
        """Refuse a header whose frame area or frame count is over the limits."""
        pixels = header.width * header.height
        if pixels > self.max_pixels:
            raise self._refuse(
                "max_pixels", f"stream frames are {header.width}x{header.height} = {pixels} pixels"
            )
        if header.num_frames > self.max_frames:
            raise self._refuse("max_frames", f"stream holds {header.num_frames} frames")

    def check(self, stream: Stream, layers: int | None, synthesis: str) -> None:
        """Refuse ``stream`` decoded with ``layers`` and ``synthesis`` if it is over any limit."""
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 0):
            raise ConfigError(f"layers must be an integer >= 0, got {layers!r}")
        self.check_header(stream.header)
        work = synth_work(stream, layers, synthesis)
        if work > self.max_synth_work:
            h = stream.header
            raise self._refuse(
                "max_synth_work",
                f"decoding synthesizes {work} pixel-scales ({h.num_frames} frames of {h.width}x{h.height}, "
                f"up to {synth_scales(stream, layers, synthesis)} of {len(h.scales)} scales synthesized)",
            )


def synth_scales(stream: Stream, layers: int | None, synthesis: str) -> int:
    """The most scales synthesized in one GOP of ``stream`` decoded with ``layers`` and ``synthesis``."""
    return max((_synthesized(stream, len(g.segments), layers, synthesis) for g in stream.gops), default=0)


def synth_work(stream: Stream, layers: int | None, synthesis: str) -> int:
    """Frames x pixels x scales synthesized, summed over GOPs, when decoding with ``layers`` and ``synthesis``."""
    h = stream.header
    return sum(
        g.num_frames * _synthesized(stream, len(g.segments), layers, synthesis) for g in stream.gops
    ) * (h.width * h.height)


def _synthesized(stream: Stream, sent: int, layers: int | None, synthesis: str) -> int:
    if synthesis == "none":
        return 0
    used = sent if layers is None else min(layers, sent)
    return len(stream.header.scales) - used
