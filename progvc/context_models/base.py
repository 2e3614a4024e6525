"""The :class:`ContextModel` interface: probabilities of a scale's tokens from coarser scales
and earlier frames.

Contract (every implementation):

* Inputs are latents, not token ids: for frame ``t`` and scale ``k`` (0-based),
  ``cur[k]`` is the tokenizer's running latent ``f_hat`` of frame ``t`` after scales ``< k``,
  area-downsampled to scale ``k``'s size ``[B, C, h_k, w_k]`` (zeros for ``k = 0``), and
  ``prev[k]`` is the running latent of frame ``t - 1`` after scales ``<= k`` at the same size
  (``None`` for the first frame of a group of pictures). :func:`scale_inputs` builds both.
* This is the *layered dependency*: scale ``k`` of frame ``t`` never sees scales ``> k`` of an
  earlier frame, so a stream cut after scale ``K`` still yields every probability the decoder
  needs, identical to the encoder's.
* Outputs are logits ``[B, h_k * w_k, G, A]`` (row-major positions, ``G`` symbols of ``A``
  values each); the tokens of one scale are conditionally independent given the inputs, so a
  whole scale is coded from one table per symbol.
* :meth:`forward` scores all scales at once (training, teacher forcing);
  :meth:`step` scores one scale at a time with a cache (coding and synthesis). The encoder and
  the decoder both call :meth:`step`, in the same order and with the same shapes, so their
  probabilities are identical; ``forward`` and ``step`` agree up to float rounding.
* Scale ``k``'s logits and the state after its step are functions of ``cur[0..k]`` and
  ``prev[0..k]`` alone (no other memory, no randomness in eval mode), so the codec reuses the
  steps of a frame whose inputs repeat the frame before's
  (:class:`~progvc.context_models.common.RepeatingSteps`; a state's ``fork(k)`` gives the state
  after its first ``k`` steps).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from progvc.registry import Configurable
from progvc.tokenizers.base import TokenSpec


class ContextModel(Configurable, nn.Module, ABC):
    """Next-scale probability model over multi-scale token maps.

    Args:
        latent_dim: channels ``C`` of the tokenizer's latent.
        groups: symbols per token position ``G``.
        alphabet: values per symbol ``A``.
        num_scales: ``K``, the length of the tokenizer's scale schedule.
    """

    registry_name: str = ""
    #: init args added after models were shipped, with the value that builds the network those
    #: models have: at that value they are left out of the fingerprint, so older models (and
    #: their streams) keep theirs (as :attr:`Tokenizer.late_args`)
    late_args: dict[str, Any] = {}

    def __init__(self, latent_dim: int, groups: int, alphabet: int, num_scales: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.groups = groups
        self.alphabet = alphabet
        self.num_scales = num_scales

    def check_compatible(self, spec: TokenSpec) -> None:
        """Raise :class:`~progvc.errors.ConfigError` when this model cannot score ``spec``'s tokens."""
        from progvc.errors import ConfigError

        mine = (self.latent_dim, self.groups, self.alphabet, self.num_scales)
        theirs = (spec.latent_dim, spec.groups, spec.alphabet, spec.num_scales)
        if mine != theirs:
            raise ConfigError(
                f"context model {type(self).__name__} expects (latent_dim, groups, alphabet, num_scales) = {mine}, "
                f"but the tokenizer produces {theirs}"
            )

    @abstractmethod
    def forward(self, cur: list[Tensor], prev: list[Tensor] | None = None) -> list[Tensor]:
        """Logits ``[B, h_k * w_k, G, A]`` for every scale ``k`` given ``cur`` (and ``prev``) inputs."""

    @abstractmethod
    def init_state(self, batch_size: int) -> Any:
        """A fresh cache for :meth:`step` (one per frame being coded)."""

    @abstractmethod
    def step(self, state: Any, k: int, cur_k: Tensor, prev_k: Tensor | None = None) -> Tensor:
        """Logits ``[B, h_k * w_k, G, A]`` of scale ``k``, updating ``state``; call for ``k = 0, 1, ...`` in order."""


def area_resize(f: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-downsample ``f [B, C, h, w]`` to ``size`` (identity when the size already matches)."""
    if tuple(f.shape[-2:]) == tuple(size):
        return f
    return F.interpolate(f, size=size, mode="area")


def scale_inputs(
    f_hats: list[Tensor], sizes: list[tuple[int, int]], prev_f_hats: list[Tensor] | None = None
) -> tuple[list[Tensor], list[Tensor] | None]:
    """Build the context model's ``cur`` and ``prev`` inputs from running latents.

    Args:
        f_hats: running latents of the current frame, ``f_hats[k]`` after scales ``0..k``, each
            ``[B, C, h, w]``; only the first ``len(sizes) - 1`` are used.
        sizes: the scale sizes to produce inputs for (a prefix of the schedule is fine).
        prev_f_hats: the previous frame's running latents (at least ``len(sizes)`` of them), or ``None``.

    Returns:
        ``(cur, prev)`` as described in the module docstring.
    """
    ref = f_hats[0] if f_hats else prev_f_hats[0]
    b, c = ref.shape[:2]
    cur = [ref.new_zeros(b, c, *sizes[0])]
    cur += [area_resize(f_hats[k - 1], sizes[k]) for k in range(1, len(sizes))]
    prev = None if prev_f_hats is None else [area_resize(prev_f_hats[k], sizes[k]) for k in range(len(sizes))]
    return cur, prev


def flatten_tokens(tokens_k: Tensor) -> Tensor:
    """``[B, h_k, w_k, G]`` token map -> ``[B, h_k * w_k, G]`` in the logits' position order."""
    return tokens_k.flatten(1, 2)


def cross_entropy_bits(logits: list[Tensor], tokens: list[Tensor]) -> Tensor:
    """Total cross-entropy in bits of ``tokens`` under ``logits`` (summed over batch, scales, symbols)."""
    total = logits[0].new_zeros(())
    for lg, tk in zip(logits, tokens):
        total = total + F.cross_entropy(
            lg.flatten(0, 2).float(), flatten_tokens(tk).flatten(), reduction="sum"
        )
    return total / torch.log(torch.tensor(2.0))


def soft_cross_entropy_bits(logits: list[Tensor], targets: list[Tensor]) -> Tensor:
    """Total cross-entropy in bits of the distributions ``softmax(targets)`` under ``logits``.

    ``logits[k]`` and ``targets[k]`` are ``[B, L_k, G, A]``, e.g. a student's and a teacher's
    logits of the same tokens (distillation); summed over batch, scales and symbols. It equals the
    expected code length under ``logits`` of symbols drawn from ``targets``: the teacher's
    entropy plus the KL divergence, so it is at least that entropy and comparable to
    :func:`cross_entropy_bits`. Gradients reach ``logits`` only.
    """
    total = logits[0].new_zeros(())
    for lg, tg in zip(logits, targets, strict=True):
        p = F.softmax(tg.detach().float(), dim=-1)
        total = total - (p * F.log_softmax(lg.float(), dim=-1)).sum()
    return total / math.log(2.0)


def interpolated_bits(logits: list[Tensor], values: list[Tensor]) -> Tensor:
    """Total code length in bits of continuous token values under ``logits``, differentiable in the values.

    A value ``v`` in ``[0, A - 1]`` (token units, ``values[k] [B, h_k, w_k, G]``) between the
    tokens ``n = floor(v)`` and ``n + 1`` costs ``(1 - f) * bits(n) + f * bits(n + 1)`` with
    ``f = v - n`` and ``bits = -log2 softmax(logits)``: the piecewise-linear code length whose
    slope tells an encoder what moving a value toward a cheaper token saves (the rate term that
    lets a context model train a scalar tokenizer, as a learned entropy model does in Balle et
    al.'s rate-distortion training). Gradients reach ``logits`` too; detach them to train only
    the encoder with it.
    """
    total = logits[0].new_zeros(())
    for lg, v in zip(logits, values, strict=True):
        bits = -F.log_softmax(lg.float(), dim=-1) / math.log(2.0)  # [B, L, G, A]
        v = flatten_tokens(v).float().clamp(0, bits.shape[-1] - 1)  # [B, L, G]
        low = v.detach().floor().clamp(max=bits.shape[-1] - 2)
        frac = v - low
        idx = low.long().unsqueeze(-1)
        b0 = bits.gather(-1, idx).squeeze(-1)
        b1 = bits.gather(-1, idx + 1).squeeze(-1)
        total = total + ((1 - frac) * b0 + frac * b1).sum()
    return total
