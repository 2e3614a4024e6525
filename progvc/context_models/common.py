"""Helpers shared by the context models: the per-frame stepping state and a whole-frame step loop."""

from __future__ import annotations

from dataclasses import dataclass

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
