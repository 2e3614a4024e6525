"""Global motion of the prediction loops: one translation per frame, in 1/16 of a latent pixel.

A camera pan moves the whole picture between frames; without compensation, each prediction loop
copies the previous frame's reconstruction at the same place, and the difference (small per
frame, but growing over the GOP) is coded or left as error. With global motion the encoder sends,
for every frame after the first of a GOP, a translation ``(dy, dx)`` of the latent grid in
sixteenths of a latent pixel, and the references ``R_{t-1}[k]`` of the fine levels are
translated by it before frame ``t`` is predicted from them (:class:`~progvc.codec.prediction.PredictionLoop`).

* :func:`translate` is separable linear interpolation with replicated borders: element-wise
  float arithmetic on exact weights (``a / 16``), so the encoder and the decoder compute the
  same reference on any thread count.
* :func:`estimate` is the encoder's search: the translation that minimises the squared
  difference between two latents, coarse to fine (whole pixels, quarters, sixteenths);
  :func:`estimate_gop` tracks every frame of a GOP against its first frame with it.
* :func:`motion_tables` is the fixed entropy model of the two symbols per frame: the change of
  each component from the previous frame's motion, coded in segment ``motion_scale`` before the
  frame's symbols of that scale (about 0.13 bit per frame when the motion does not change).

The motion belongs to scale ``motion_scale``: a stream cut before it carries and uses none (it
is exactly the stream without motion), every longer cut keeps it, and the layered rule (frame
``t``, scale ``k`` depends on frame ``t``'s scales ``< k`` and earlier frames' scales ``<= k``)
holds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from progvc.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used, so that the bitstream layer stays light
    from torch import Tensor

#: motion modes: ``"none"`` (the loops copy the reference in place) and ``"global"``.
MOTION_MODES = ("none", "global")
#: sub-pixel precision: motion is in units of ``1 / MOTION_UNIT`` latent pixel.
MOTION_UNIT = 16
#: the largest motion component, in latent pixels (8 pixels of the latent grid: 64 pixels of
#: a frame at 8x downsampling).
MOTION_RANGE = 8
#: the same in motion units: every motion component and position lies in ``[-MOTION_LIMIT, MOTION_LIMIT]``.
MOTION_LIMIT = MOTION_RANGE * MOTION_UNIT
#: values of one coded symbol: the change of a component, ``-2R .. 2R`` units (``R`` = range in units).
MOTION_ALPHABET = 4 * MOTION_RANGE * MOTION_UNIT + 1

Motion = tuple[int, int]  # (dy, dx) in 1 / MOTION_UNIT latent pixels


def _clip(m: Motion) -> Motion:
    """``m`` with each component clipped to ``[-MOTION_LIMIT, MOTION_LIMIT]``."""
    return max(-MOTION_LIMIT, min(MOTION_LIMIT, int(m[0]))), max(-MOTION_LIMIT, min(MOTION_LIMIT, int(m[1])))

#: the encoder keeps the previous frame's motion (the cheapest to code) unless another one lowers
#: the squared difference by more than this fraction.
KEEP_TOLERANCE = 0.005


def motion_scale(scales: Sequence[int]) -> int:
    """Index of the first scale that global motion moves: the first whose grid is at least half
    the latent grid (scale 6 of the bundled model's 8). Coarser levels are smooth fields that a
    sub-pixel translation hardly changes, so they are not moved and a stream cut before this
    scale carries no motion at all."""
    return next(k for k, s in enumerate(scales) if 2 * s >= scales[-1])


def check_motion_mode(mode: str) -> str:
    """``mode`` if it is a known motion mode, else :class:`ConfigError`."""
    if mode not in MOTION_MODES:
        raise ConfigError(f"motion must be one of {', '.join(MOTION_MODES)}, got {mode!r}")
    return mode


def _translate_axis(x: Tensor, units: int, dim: int) -> Tensor:
    """``out[i] = x[i - units / MOTION_UNIT]`` along ``dim``, linearly interpolated, borders replicated."""
    import torch

    if units == 0:
        return x
    whole, frac = divmod(units, MOTION_UNIT)
    n = x.shape[dim]
    index = torch.arange(n, device=x.device) - whole
    x0 = x.index_select(dim, index.clamp(0, n - 1))
    if frac == 0:
        return x0
    x1 = x.index_select(dim, (index - 1).clamp(0, n - 1))
    a = frac / MOTION_UNIT  # exact in binary floating point
    return x0 * (1.0 - a) + x1 * a


def translate(x: Tensor, motion: Motion) -> Tensor:
    """Latents ``[B, C, h, w]`` moved by ``motion = (dy, dx)`` sixteenths of a latent pixel.

    Content at ``(i, j)`` moves to ``(i + dy / 16, j + dx / 16)``; the borders are replicated.
    Element-wise arithmetic only, so deterministic on any thread count.
    """
    dy, dx = motion
    return _translate_axis(_translate_axis(x, int(dy), -2), int(dx), -1)


def estimate(f: Tensor, ref: Tensor, guess: Motion = (0, 0)) -> Motion:
    """The translation of ``ref [1, C, h, w]`` that best predicts ``f [1, C, h, w]`` (the encoder's search).

    Coarse to fine: whole latent pixels within 2 of ``guess`` and of no motion (then a descent in
    whole pixels while it improves), then quarters, then sixteenths around the best so far,
    minimising the mean squared difference. Each round compares
    its candidates on one crop that leaves out the borders their translations replicate (at most
    a quarter of the grid per side); exact ties go to the candidate nearest ``guess``. Near-ties
    of the result and ``guess`` (within :data:`KEEP_TOLERANCE`) keep ``guess``, which costs the
    fewest bits.
    """
    h, w = f.shape[-2:]

    def costs(candidates: list[Motion]) -> dict[Motion, float]:
        candidates = [m for m in dict.fromkeys(candidates) if max(abs(m[0]), abs(m[1])) <= MOTION_LIMIT]
        my = min(h // 4, max(-(-abs(m[0]) // MOTION_UNIT) for m in candidates))
        mx = min(w // 4, max(-(-abs(m[1]) // MOTION_UNIT) for m in candidates))
        inner = (..., slice(my, h - my), slice(mx, w - mx))
        return {m: float((f[inner] - translate(ref, m)[inner]).pow(2).mean()) for m in candidates}

    guess = _clip(guess)
    u = MOTION_UNIT

    def pick(seen: dict[Motion, float]) -> Motion:  # the cheapest; among ties, the nearest to the guess
        return min(seen, key=lambda m: (seen[m], abs(m[0] - guess[0]) + abs(m[1] - guess[1])))

    seen = costs([(s[0] + dy * u, s[1] + dx * u) for s in ((0, 0), guess) for dy in range(-2, 3) for dx in range(-2, 3)])
    best = pick(seen)
    for _ in range(2 * MOTION_RANGE):  # whole-pixel descent, for motions beyond the first window
        seen = costs([(best[0] + dy * u, best[1] + dx * u) for dy in range(-1, 2) for dx in range(-1, 2)])
        moved = pick(seen)
        if not seen[moved] < seen[best]:  # strictly better only: ties (flat content) would wander
            break
        best = moved
    for step in (u // 4, u // 16):
        seen = costs([(best[0] + dy * step, best[1] + dx * step) for dy in range(-3, 4) for dx in range(-3, 4)])
        best = pick(seen)
    final = costs([best, guess])
    return guess if final[guess] <= final[best] * (1.0 + KEEP_TOLERANCE) else best


def estimate_gop(latents: Tensor) -> list[Motion]:
    """Per frame of a GOP's latents ``[T, C, h, w]`` (the encoder's, before quantization), its motion.

    Each frame's position relative to the GOP's first frame is estimated against that frame
    (:func:`estimate`, guessing the previous position plus the previous motion: a steady pan costs
    nothing to code); a frame's motion is its position minus the previous frame's. Estimating
    against the first frame's own latent, not against the reconstructions, keeps the quantization
    error of the references out of the search: a slow pan of 1/20 of a latent pixel per frame
    shows as one sixteenth every frame or two. Positions are searched within
    :data:`MOTION_RANGE` latent pixels of the first frame, and a motion never exceeds it.
    """
    motions: list[Motion] = [(0, 0)]
    position: Motion = (0, 0)
    for t in range(1, latents.shape[0]):
        last = motions[-1]
        found = estimate(latents[t : t + 1], latents[:1], guess=(position[0] + last[0], position[1] + last[1]))
        # positions lie within the range (estimate's candidates), so motions within twice it: clip them
        motion = _clip((found[0] - position[0], found[1] - position[1]))
        motions.append(motion)
        position = (position[0] + motion[0], position[1] + motion[1])
    return motions


@functools.cache
def motion_tables() -> Tensor:
    """Integer frequencies ``[2, MOTION_ALPHABET]`` (int64) of a frame's two motion symbols (the same row twice).

    Symbol ``s`` stands for a change of ``s - 2R`` units; no change is the most likely (about
    0.07 bit), a change of ``v`` units costs about ``7 + 0.36 |v|`` bits. Built once by the same
    deterministic path as every other table (:func:`progvc.coders.tables.logits_to_freqs`).
    """
    import torch

    from progvc.coders.tables import logits_to_freqs

    half = MOTION_ALPHABET // 2
    v = torch.arange(MOTION_ALPHABET, dtype=torch.float64) - half
    logits = -0.25 * v.abs() - 5.0 * (v != 0)
    return logits_to_freqs(logits[None]).repeat(2, 1)


def motion_symbols(motion: Motion, previous: Motion) -> Tensor:
    """The two symbols (int64 ``[2]``) that code ``motion`` after ``previous``."""
    import torch

    half = MOTION_ALPHABET // 2
    return torch.tensor([motion[0] - previous[0] + half, motion[1] - previous[1] + half], dtype=torch.int64)


def motion_from_symbols(symbols: Tensor, previous: Motion) -> Motion:
    """Inverse of :func:`motion_symbols`; a motion outside the range is a :class:`~progvc.errors.BitstreamError`."""
    from progvc.errors import BitstreamError

    half = MOTION_ALPHABET // 2
    dy, dx = (int(s) - half + p for s, p in zip(symbols.tolist(), previous))
    if max(abs(dy), abs(dx)) > MOTION_LIMIT:
        raise BitstreamError(f"global motion ({dy}, {dx}) / {MOTION_UNIT} exceeds {MOTION_RANGE} latent pixels")
    return dy, dx


def motion_bits(motion: Motion, previous: Motion) -> float:
    """What :func:`motion_symbols` cost under :func:`motion_tables`, in bits."""
    import torch

    f = motion_tables()[0].to(torch.float64)
    chosen = f[motion_symbols(motion, previous)]
    return float((math.log2(float(f.sum())) - chosen.log2()).sum())
