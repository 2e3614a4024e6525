"""Skip flags: a predicted frame says "nothing changes at this scale" in a fraction of a bit.

With the prediction loops, content that did not change is coded as zero tokens, and the context
model gives each of them a high probability, but not a certain one, so a scale of a few thousand
zero tokens still costs bits, and the decoder still runs the context model for it. A skip flag
removes both: the first 32 frames of carphone at the bundled model's default rate take 416 bytes
instead of 543 (``progvc compress carphone c.pgv --frames 32 --skip on|off``).

**Format** (streams of version 4 with ``skip`` on). Every segment ``k`` of a GOP opens with one
*mode* symbol (a fixed even table, 1 bit): with mode 1, every frame but the first opens its chunk
(after its motion symbols, in segment ``motion_scale``) with a binary flag, ``1`` ("skipped")
when the frame's scale-``k`` tokens are all the zero token and none follow, ``0`` when they
follow as usual; with mode 0 the segment has no flags. The flag's probability is adaptive and
deterministic: Krichevsky-Trofimov counts, reset at every GOP, of the GOP's earlier predicted
frames whose scale ``k`` was all zero or not, kept per scale and per *context*: whether the
same frame's scale ``k - 1`` was all zero (scale 0 has its own). The counts follow the tokens,
not the flags, so they are the same whatever mode a segment has, and the flag of frame ``t``,
scale ``k`` depends on frame ``t``'s scales ``< k`` and earlier frames' scales ``<= k`` only: the
layered rule holds and a cut stream decodes every flag it carries.

**Encoder.** A scale is skipped when its tokens (after RDOQ, if on) are all zero. Each segment is
coded both ways, with flags and without, and the shorter is kept: on a scale that is rarely all
zero, or whose zeros the context model already codes for almost nothing (the coarse scales),
flags cost more than they save, and the segment then costs one bit more than without them.
With RDOQ (``rdoq > 0``) the encoder also zeroes a predicted frame's **finest** scale when that
lowers the scale's ``D + rdoq * R`` (:func:`rd_skip`: ``D`` the squared error in quantization
steps, ``R`` the tokens' bits and the flag's), the trade RDOQ makes token by token, made for the
scale as a whole, whose zeros the flag makes nearly free. Only the finest scale: a coarser
scale's skipped residual returns in the finer scales of the same frame, which a per-scale
choice does not see (a trial that skipped any scale this way lost bits at a higher rate on vtest).

**Decoder.** A skipped scale needs no probabilities, so the context model's step for it runs
only when a later scale of the same frame needs logits (its keys and values must be in the
cache); a frame whose remaining scales are all skipped costs no context model at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

#: the skip flag's two values.
CODED, SKIPPED = 0, 1


#: integer frequencies ``[1, 2]`` of a segment's mode symbol (0: no flags, 1: flags).
MODE_TABLES = torch.tensor([[1, 1]], dtype=torch.int64)


@dataclass(frozen=True)
class Flag:
    """The skip flag of one frame's scale, before it is coded: its context, tables and costs."""

    ctx: tuple[int, int]
    #: integer frequencies ``[1, 2]`` (int64) of ``(CODED, SKIPPED)``.
    tables: Tensor
    #: what each value costs, in bits.
    bits: tuple[float, float]


@dataclass
class SkipFlags:
    """The adaptive model of one GOP's skip flags (integer counts, identical in encoder and decoder)."""

    #: ``(scale, context) -> [not all zero, all zero]`` predicted frames seen so far in the GOP.
    counts: dict[tuple[int, int], list[int]] = field(default_factory=dict)

    def flag(self, k: int, coarser: int | None) -> Flag:
        """Scale ``k``'s flag, ``coarser`` being 1 when scale ``k - 1`` of the same frame was all zero,
        0 when not, ``None`` for scale 0: Krichevsky-Trofimov frequencies ``2 * count + 1``."""
        ctx = (k, -1 if coarser is None else coarser)
        coded, skipped = self.counts.get(ctx, (0, 0))
        freqs = (2 * coded + 1, 2 * skipped + 1)
        total = sum(freqs)
        return Flag(ctx, torch.tensor([freqs], dtype=torch.int64), tuple(math.log2(total / f) for f in freqs))

    def update(self, flag: Flag, value: int) -> None:
        """Count a frame's scale: ``SKIPPED`` when its tokens were all zero, else ``CODED``."""
        self.counts.setdefault(flag.ctx, [0, 0])[value] += 1


def rd_skip(y: Tensor, symbols: Tensor, zero: int, token_bits: float, flag: Flag, rdoq: float) -> bool:
    """Whether zeroing a scale lowers ``D + rdoq * R`` against coding ``symbols`` (an encoder's choice).

    Args:
        y: the scale's residual in token units (the zero token at 0), ``[N]``.
        symbols: the tokens the encoder would code, ``[N]``.
        zero: the zero token.
        token_bits: what ``symbols`` cost under the context model's tables, in bits.
        flag: the scale's skip flag, whose cost counts to ``R`` either way.
        rdoq: squared quantization steps per bit.
    """
    if bool((symbols == zero).all()):
        return True
    y = y.to(torch.float64)
    coded = float((y - (symbols - zero).to(torch.float64)).square().sum()) + rdoq * (token_bits + flag.bits[CODED])
    skipped = float(y.square().sum()) + rdoq * flag.bits[SKIPPED]
    return skipped < coded
