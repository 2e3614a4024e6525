"""An example progvc plug-in: a context model made of 3x3 convolutions.

Each token of scale ``k`` gets its logits from the 3x3 neighbourhood of the coarser scales'
latent at its position (``cur[k]``) and of the previous frame's latent (``prev[k]``), plus a
learned embedding of ``k``. It sees no other token of its own scale, so a whole scale is
scored in one call -- exactly what the :class:`~progvc.context_models.ContextModel` contract asks.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from progvc.context_models import ContextModel


class ConvContextModel(ContextModel):
    """Per-scale 3x3-convolution context model (example plug-in).

    Args:
        latent_dim: channels ``C`` of the tokenizer's latent.
        groups: symbols per token position ``G``.
        alphabet: values per symbol ``A``.
        num_scales: ``K``.
        width: channels of the hidden convolutions.
    """

    def __init__(self, latent_dim: int, groups: int, alphabet: int, num_scales: int, width: int = 64) -> None:
        super().__init__(latent_dim, groups, alphabet, num_scales)
        # inputs: cur, prev (zeros without a previous frame) and a "has previous frame" channel
        self.inp = nn.Conv2d(2 * latent_dim + 1, width, 3, padding=1)
        self.level = nn.Embedding(num_scales, width)
        self.body = nn.Sequential(nn.GELU(), nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.head = nn.Conv2d(width, groups * alphabet, 1)

    def _scale(self, k: int, cur_k: Tensor, prev_k: Tensor | None) -> Tensor:
        """Logits ``[B, h_k * w_k, G, A]`` of scale ``k`` from ``cur_k`` (and ``prev_k``) ``[B, C, h_k, w_k]``."""
        b, _, h, w = cur_k.shape
        has_prev = cur_k.new_full((b, 1, h, w), float(prev_k is not None))
        x = torch.cat([cur_k, torch.zeros_like(cur_k) if prev_k is None else prev_k, has_prev], dim=1)
        x = self.inp(x) + self.level.weight[k][None, :, None, None]
        logits = self.head(self.body(x))
        return rearrange(logits, "b (g a) h w -> b (h w) g a", g=self.groups)

    def forward(self, cur: list[Tensor], prev: list[Tensor] | None = None) -> list[Tensor]:
        """Logits of every given scale (teacher forcing is trivial: scales are independent given their inputs)."""
        return [self._scale(k, c, None if prev is None else prev[k]) for k, c in enumerate(cur)]

    def init_state(self, batch_size: int) -> None:
        """No cache is needed: a scale depends only on its own inputs."""
        return None

    def step(self, state: None, k: int, cur_k: Tensor, prev_k: Tensor | None = None) -> Tensor:
        """Logits ``[B, h_k * w_k, G, A]`` of scale ``k``; identical to ``forward(...)[k]``."""
        return self._scale(k, cur_k, prev_k)
