"""Helpers shared by the context models: the per-frame stepping state, a whole-frame step loop,
and :class:`RepeatingSteps`, which reuses a frame's steps where its inputs repeat the frame before's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from progvc.context_models.base import ContextModel
from progvc.errors import ConfigError


@dataclass
class StepState:
    """Where a frame's :meth:`ContextModel.step` calls stand: the batch size and the next scale expected."""

    batch_size: int
    num_scales: int
    next_scale: int = 0

    def advance(self, k: int, cur_k: Tensor) -> None:
        """Check that scale ``k`` of a ``cur_k [B, C, h_k, w_k]`` input is the one expected, then move on."""
        if k != self.next_scale or k >= self.num_scales:
            raise ConfigError(
                f"step() must be called for scales 0..{self.num_scales - 1} in order; "
                f"expected scale {self.next_scale}, got {k}"
            )
        if cur_k.shape[0] != self.batch_size:
            raise ConfigError(f"step() state was made for batch size {self.batch_size}, got {cur_k.shape[0]}")
        self.next_scale += 1

    def fork(self, scales: int) -> StepState:
        """An independent state as after this one's first ``scales`` steps, to step on from.

        Subclasses with caches share their tensors (views of the first ``scales`` steps' part):
        stepping either state makes new tensors, never writes into shared ones.
        """
        if not 0 <= scales <= self.next_scale:
            raise ConfigError(f"cannot fork after {scales} steps from a state after {self.next_scale}")
        return dataclasses.replace(self, next_scale=scales)


def step_all(model: ContextModel, cur: list[Tensor], prev: list[Tensor] | None = None) -> list[Tensor]:
    """Logits ``[B, h_k * w_k, G, A]`` of every given scale, computed scale by scale with :meth:`ContextModel.step`.

    This is the path the codec takes (one call per scale, with a cache); :meth:`ContextModel.forward`
    computes the same numbers in one pass for training.
    """
    state = model.init_state(cur[0].shape[0])
    return [model.step(state, k, c, None if prev is None else prev[k]) for k, c in enumerate(cur)]


def check_inputs(model: ContextModel, cur: list[Tensor], prev: list[Tensor] | None) -> None:
    """Raise :class:`ConfigError` unless ``cur`` has ``1..K`` scales of ``C`` channels and ``prev`` covers them."""
    if not 1 <= len(cur) <= model.num_scales:
        raise ConfigError(f"expected 1..{model.num_scales} scales of inputs, got {len(cur)}")
    if prev is not None and len(prev) < len(cur):
        raise ConfigError(f"prev has {len(prev)} scales but cur has {len(cur)}")
    for k, c in enumerate(cur):
        if c.dim() != 4 or c.shape[1] != model.latent_dim:
            raise ConfigError(f"cur[{k}] must be [B, {model.latent_dim}, h_k, w_k], got {list(c.shape)}")
        if prev is not None and prev[k].shape != c.shape:
            raise ConfigError(f"prev[{k}] has shape {list(prev[k].shape)} but cur[{k}] has {list(c.shape)}")


@dataclass
class _Step:
    """One step's inputs, and its logits (``None`` where too large to keep)."""

    cur: Tensor
    prev: Tensor | None
    logits: Tensor | None


class RepeatingSteps:
    """A frame's :meth:`ContextModel.step` calls, reusing the previous frame's where the inputs repeat.

    By the contract of :class:`ContextModel`, scale ``k``'s logits, and the state after it, are
    functions of ``cur[0..k]`` and ``prev[0..k]`` only. When a frame's inputs for scales
    ``0..k`` are bit for bit those of the frame before, its logits are the frame before's: they
    are taken from there instead of computed again, and stepping goes on from a
    :meth:`StepState.fork` of the frame before's state where the inputs first differ. On still
    content most predicted frames repeat their coarse scales (the prediction loop's latent does
    not move), so the codec skips most of their context-model work; the numbers are the same as
    without reuse.

    Call :meth:`start_frame` before each frame, then :meth:`step` for scales ``0, 1, ...`` in
    order (a prefix is fine). The returned logits must not be modified in place. Memory: one
    frame's logits besides the current one's, of the scales with at most ``max_elements``
    logits (finer scales are not reused); the states share their caches' tensors. Models whose
    states have no ``fork`` are stepped without reuse.
    """

    def __init__(self, model: ContextModel, batch_size: int = 1, max_elements: int = 1 << 22) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_elements = max_elements
        self.previous: list[_Step] = []  # the last frame that ran or reused steps
        self.previous_state: Any = None  # a state after at least len(previous) of its steps
        self.current: list[_Step] = []
        self.state: Any = None  # None while every step of this frame repeats the frame before
        self.reused = 0  # steps taken from the frame before, in all (for benchmarks and tests)

    def start_frame(self) -> None:
        """Begin a new frame; the frame just stepped becomes the one whose steps may be reused."""
        if self.current:
            self.previous = self.current
            self.previous_state = self.state if self.state is not None else self.previous_state
        self.current, self.state = [], None

    def step(self, k: int, cur_k: Tensor, prev_k: Tensor | None = None) -> Tensor:
        """Logits ``[B, h_k * w_k, G, A]`` of scale ``k`` (as :meth:`ContextModel.step`)."""
        if k != len(self.current):
            raise ConfigError(f"steps must come in order: expected scale {len(self.current)}, got {k}")
        if self.state is None:  # every step of this frame so far repeats the frame before
            done = self.previous[k] if k < len(self.previous) else None
            if done is not None and done.logits is not None and _same(done, cur_k, prev_k):
                self.current.append(done)
                self.reused += 1
                return done.logits
            self.state = self.previous_state.fork(k) if k else self.model.init_state(self.batch_size)
        logits = self.model.step(self.state, k, cur_k, prev_k)
        reusable = logits.numel() <= self.max_elements and hasattr(self.state, "fork")
        self.current.append(_Step(cur_k, prev_k, logits if reusable else None))
        return logits


def _same(done: _Step, cur_k: Tensor, prev_k: Tensor | None) -> bool:
    """Whether ``cur_k`` and ``prev_k`` are bit for bit the inputs of ``done``."""
    if (prev_k is None) != (done.prev is None):
        return False
    return torch.equal(done.cur, cur_k) and (prev_k is None or torch.equal(done.prev, prev_k))
