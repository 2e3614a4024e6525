"""The VAR-style next-scale Transformer context model (``"var"``).

All scales of one frame form one sequence, coarse to fine. The input of the tokens of scale
``k`` is a sum of embeddings::

    x_k = Linear(cur[k]) + (Linear(prev[k]) or a learned "no previous frame" vector)
          + level[k] + sincos_2d(h_k, w_k) (+ a learned start vector for k = 0)

A block-causal mask lets a token see every token of its own and earlier scales, so the logits
of scale ``k`` depend on ``cur[0..k]`` and ``prev[0..k]`` only: the previous frame enters scale
``k`` through its latent after scales ``<= k`` and never through finer scales (the layered
dependency that keeps a truncated stream decodable). :meth:`VARContextModel.step` runs one
scale per call with a per-layer KV cache and gives the same logits as :meth:`forward`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from einops import rearrange
from timm.layers import trunc_normal_
from torch import Tensor, nn

from progvc.context_models import CONTEXT_MODELS
from progvc.context_models.base import ContextModel
from progvc.context_models.common import StepState, check_inputs
from progvc.context_models.transformer import Block, KVCache, block_causal_mask, local_keys, sincos_2d
from progvc.errors import ConfigError


@dataclass
class VARState(StepState):
    """Stepping state of :class:`VARContextModel`: one :class:`KVCache` per Transformer block."""

    caches: list[KVCache] = field(default_factory=list)
    #: cached tokens after each step so far
    ends: list[int] = field(default_factory=list)
    #: ``(h_k, w_k)`` of each step's scale so far
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def fork(self, scales: int) -> VARState:
        """A state as after the first ``scales`` steps, whose caches are views of this one's (see :meth:`StepState.fork`)."""
        length = self.ends[scales - 1] if scales else 0
        caches = [c.prefix(length) for c in self.caches]
        return dataclasses.replace(
            super().fork(scales), caches=caches, ends=self.ends[:scales], sizes=self.sizes[:scales]
        )


@CONTEXT_MODELS.register("var")
class VARContextModel(ContextModel):
    """Block-causal Transformer over all scales of a frame, with the previous frame as added features.

    Args:
        latent_dim: channels ``C`` of the tokenizer's latent.
        groups: symbols per token position ``G`` (1 for a codebook, ``d`` for bitwise tokens).
        alphabet: values per symbol ``A`` (``V`` for a codebook, 2 for bits).
        num_scales: ``K``, the length of the scale schedule.
        width: Transformer width (divisible by ``heads`` and by 4).
        depth: number of blocks.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP over ``width``.
        dropout: dropout on attention weights, projections and MLP (training only).
        drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
        prev_dropout: probability, per training sample, of replacing the previous frame's
            features by the "no previous frame" embedding, so that the first frame of a group of
            pictures (coded without ``prev``) is trained too.
        strict_scales: the last ``strict_scales`` scales attend to the coarser scales only, not to
            their own tokens (0: every scale sees its own). At the finest scale, which has about
            half of a frame's tokens, this about halves the keys per query: attention, most of the
            coding time at large frames, costs about half as much there.
        local_scales: the last ``local_scales`` scales are *local*: their tokens attend to every
            token of the coarser, global scales and, in each local scale up to their own, to the
            ``(2 window + 1)^2`` tokens around their position only
            (:func:`~progvc.context_models.transformer.local_keys`). Their attention then costs
            ``prefix + W`` keys per query instead of the whole frame's, so coding time grows
            about linearly with the frame's area instead of with its square (0: none).
        window: radius of the local windows, in tokens of each local scale.
    """

    late_args = {"strict_scales": 0, "local_scales": 0, "window": 1}

    def __init__(
        self,
        latent_dim: int,
        groups: int,
        alphabet: int,
        num_scales: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        prev_dropout: float = 0.1,
        strict_scales: int = 0,
        local_scales: int = 0,
        window: int = 1,
    ) -> None:
        super().__init__(latent_dim, groups, alphabet, num_scales)
        if min(width, depth, heads) < 1 or mlp_ratio <= 0:
            raise ConfigError("var: width, depth and heads must be >= 1 and mlp_ratio > 0")
        if width % heads or width % 4:
            raise ConfigError(f"var: width {width} must be divisible by heads ({heads}) and by 4")
        if not 0.0 <= prev_dropout <= 1.0:
            raise ConfigError(f"var: prev_dropout must lie in [0, 1], got {prev_dropout}")
        if not 0 <= strict_scales < num_scales:
            raise ConfigError(f"var: strict_scales must lie in [0, {num_scales - 1}], got {strict_scales}")
        if not 0 <= local_scales < num_scales or window < 0:
            raise ConfigError(
                f"var: local_scales must lie in [0, {num_scales - 1}] and window be >= 0, got {local_scales}, {window}"
            )
        self.width = width
        self.prev_dropout = prev_dropout
        #: the first scale that attends to coarser scales only (``num_scales``: none)
        self.strict_from = num_scales - strict_scales
        #: the first local scale (``num_scales``: none) and the windows' radius
        self.local_from, self.window = num_scales - local_scales, window
        self.cur_proj = nn.Linear(latent_dim, width)
        self.prev_proj = nn.Linear(latent_dim, width)
        self.no_prev = nn.Parameter(torch.zeros(width))
        self.start = nn.Parameter(torch.zeros(width))
        self.level_embed = nn.Embedding(num_scales, width)
        # the fixed position code has unit amplitude; scaled down at first (as VAR's learned positions, std 0.02)
        # it does not drown the content features (at unit scale, small models overfit the training positions)
        self.pos_gain = nn.Parameter(torch.tensor(0.02))
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout, r) for r in rates)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, groups * alphabet)
        self.apply(_init_weights)
        for p in (self.no_prev, self.start, self.level_embed.weight):
            trunc_normal_(p, std=0.02)

    def _embed(self, k: int, cur_k: Tensor, prev_k: Tensor | None, keep_prev: Tensor | None) -> Tensor:
        """Input embeddings ``[B, h_k * w_k, width]`` of scale ``k`` from ``cur_k, prev_k [B, C, h_k, w_k]``.

        ``keep_prev [B]`` (bool) marks the samples whose ``prev_k`` is used; the others get the
        "no previous frame" embedding.
        """
        h, w = cur_k.shape[-2:]
        x = self.cur_proj(rearrange(cur_k, "b c h w -> b (h w) c"))
        if prev_k is None:
            x = x + self.no_prev
        else:
            p = self.prev_proj(rearrange(prev_k, "b c h w -> b (h w) c"))
            if keep_prev is not None:
                p = torch.where(keep_prev[:, None, None], p, self.no_prev)
            x = x + p
        x = (
            x
            + self.level_embed.weight[k]
            + self.pos_gain * sincos_2d(h, w, self.width, dtype=x.dtype, device=x.device)
        )
        if k == 0:
            x = x + self.start
        return x

    def _logits(self, x: Tensor) -> Tensor:
        """``[B, L, width]`` -> logits ``[B, L, G, A]``."""
        return rearrange(self.head(self.norm(x)), "b l (g a) -> b l g a", g=self.groups)

    def forward(self, cur: list[Tensor], prev: list[Tensor] | None = None) -> list[Tensor]:
        """Logits ``[B, h_k * w_k, G, A]`` of every given scale in one pass (teacher forcing).

        Args:
            cur: ``K' <= K`` inputs ``[B, C, h_k, w_k]`` (a prefix of the scales is fine).
            prev: the previous frame's inputs at the same sizes, or ``None``.
        """
        check_inputs(self, cur, prev)
        keep_prev = None
        if prev is not None and self.training and self.prev_dropout > 0:
            keep_prev = torch.rand(cur[0].shape[0], device=cur[0].device) >= self.prev_dropout
        xs = [self._embed(k, c, None if prev is None else prev[k], keep_prev) for k, c in enumerate(cur)]
        lengths = [x.shape[1] for x in xs]
        x = torch.cat(xs, dim=1)
        local = ([tuple(c.shape[-2:]) for c in cur], self.local_from, self.window)
        mask = block_causal_mask(lengths, x.device, self.strict_from, local if self.local_from < len(cur) else None)
        for blk in self.blocks:
            x = blk(x, mask=mask)
        return list(self._logits(x).split(lengths, dim=1))

    def init_state(self, batch_size: int) -> VARState:
        """A fresh per-frame state with an empty KV cache per block."""
        return VARState(batch_size, self.num_scales, caches=[KVCache() for _ in self.blocks])

    def step(self, state: VARState, k: int, cur_k: Tensor, prev_k: Tensor | None = None) -> Tensor:
        """Logits ``[B, h_k * w_k, G, A]`` of scale ``k``; its keys and values join ``state``'s caches."""
        check_inputs(self, [cur_k], None if prev_k is None else [prev_k])
        state.advance(k, cur_k)
        x = self._embed(k, cur_k, prev_k, None)
        own = k < self.strict_from
        state.sizes.append(tuple(cur_k.shape[-2:]))
        local = None
        if k >= self.local_from:
            local = local_keys(state.sizes, k, self.local_from, self.window, own)
        for blk, cache in zip(self.blocks, state.caches):
            x = blk(x, cache=cache, own=own, local=local)
        state.ends.append(state.caches[0].length)
        return self._logits(x)


def _init_weights(m: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear and embedding weights, zero biases (as in ViT / VAR)."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        trunc_normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
