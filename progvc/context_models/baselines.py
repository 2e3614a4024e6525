"""Baseline context models that ignore their inputs: ``"static"`` (learned per-scale marginals)
and ``"uniform"`` (every symbol equally likely). They bound what the Transformer buys, in bits:
uniform costs ``G * log2(A)`` bits per token position, static the entropy of each scale's
marginal distribution.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

from progvc.context_models import CONTEXT_MODELS
from progvc.context_models.base import ContextModel
from progvc.context_models.common import StepState, check_inputs


class _InputFreeModel(ContextModel):
    """A context model whose logits of scale ``k`` are the same at every position: :meth:`scale_logits`."""

    @abstractmethod
    def scale_logits(self, k: int, like: Tensor) -> Tensor:
        """Logits ``[G, A]`` of scale ``k`` (a parameter-free model takes dtype and device from ``like``)."""

    def _broadcast(self, k: int, cur_k: Tensor) -> Tensor:
        """``scale_logits(k)`` repeated to ``[B, h_k * w_k, G, A]`` for an input ``cur_k [B, C, h_k, w_k]``."""
        b, _, h, w = cur_k.shape
        return self.scale_logits(k, cur_k).expand(b, h * w, self.groups, self.alphabet).clone()

    def forward(self, cur: list[Tensor], prev: list[Tensor] | None = None) -> list[Tensor]:
        """Logits ``[B, h_k * w_k, G, A]`` of every given scale; the inputs give only the shapes."""
        check_inputs(self, cur, prev)
        return [self._broadcast(k, c) for k, c in enumerate(cur)]

    def init_state(self, batch_size: int) -> StepState:
        """A fresh per-frame state (these models need no cache, only the scale order check)."""
        return StepState(batch_size, self.num_scales)

    def step(self, state: StepState, k: int, cur_k: Tensor, prev_k: Tensor | None = None) -> Tensor:
        """Logits ``[B, h_k * w_k, G, A]`` of scale ``k``."""
        check_inputs(self, [cur_k], None if prev_k is None else [prev_k])
        state.advance(k, cur_k)
        return self._broadcast(k, cur_k)


@CONTEXT_MODELS.register("static")
class StaticContextModel(_InputFreeModel):
    """Learned per-scale marginals: one logit table ``[G, A]`` per scale, the same at every position.

    Args:
        latent_dim: channels ``C`` of the tokenizer's latent (only checked against inputs).
        groups: symbols per token position ``G``.
        alphabet: values per symbol ``A``.
        num_scales: ``K``.
    """

    def __init__(self, latent_dim: int, groups: int, alphabet: int, num_scales: int) -> None:
        super().__init__(latent_dim, groups, alphabet, num_scales)
        self.logits = nn.Parameter(torch.zeros(num_scales, groups, alphabet))

    def scale_logits(self, k: int, like: Tensor) -> Tensor:
        return self.logits[k]


@CONTEXT_MODELS.register("uniform")
class UniformContextModel(_InputFreeModel):
    """All-zero logits (a uniform distribution over ``A`` values per symbol); no parameters.

    Args:
        latent_dim: channels ``C`` of the tokenizer's latent (only checked against inputs).
        groups: symbols per token position ``G``.
        alphabet: values per symbol ``A``.
        num_scales: ``K``.
    """

    def scale_logits(self, k: int, like: Tensor) -> Tensor:
        return like.new_zeros(self.groups, self.alphabet)
