"""Exact-product inference copies of the Transformer context models, for coding.

The encoder and the decoder must compute bit-identical probability tables whatever their thread
counts. A float32 matrix product sums in an order that depends on the thread count and the
kernel, so its results move by a few ULPs and some table entries cross a rounding boundary
(24 of 817344 entries at 176x144 between 1 and 2 threads, ``python -m progvc.bench speed
--breakdown``). A float64 copy makes such moves too small to matter, at 2-3x the time.

:func:`exact_copy` keeps float64 for everything that works element by element or row by row
(LayerNorm, GELU, softmax, biases, scales) and makes every matrix product **exact**: its operands
are integers of at most 127 in magnitude stored as float32 (weights per output channel,
activations per row, both scaled by their absolute maximum), and no partial sum can exceed
``2**24``, so every partial sum is an exactly representable integer and the product is the same
in any summation order, on any number of threads. Attention weights become integers on a grid of
``2**-16`` (times the values' per-token scale, folded in), whose sum over the keys bounds the
product the same way. The products then run at float32 speed.

Quantizing the operands changes the logits a little (+0.05 to +0.2 % bits), never the agreement
between encoder and decoder. **The codec does not use it:** in eager PyTorch the copy is 2-8x
slower than the float64 one, because the attention matrix is materialised and passed over about
ten times in float64 where float64 attention is one fused kernel (``docs/benchmarks.md``). It is
the reference for a fused exact attention kernel.
"""

from __future__ import annotations

import copy

import torch
from einops import rearrange
from torch import Tensor, nn

from progvc.context_models.transformer import Attention, KVCache
from progvc.errors import ConfigError

#: largest magnitude of an integer operand
QMAX = 127
#: every partial sum of an exact product stays below this (float32 holds all integers up to it)
EXACT_LIMIT = 2**24
#: attention weights are integers on a grid of 1 / ATTN_GRID (fewer steps only for huge key counts)
ATTN_GRID = 2**16


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Integers ``|q| <= 127`` (float32, ``x``'s shape) and float64 scales ``[..., 1]`` with ``x ~ q * scale``.

    One scale per row (last dimension): its absolute maximum over 127 (1 for an all-zero row).
    Element-wise correctly rounded operations and an exact maximum: a pure function of ``x``.
    """
    x = x.double()
    scale = x.abs().amax(dim=-1, keepdim=True) / QMAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(x / scale).clamp_(-QMAX, QMAX).float(), scale


class ExactLinear(nn.Module):
    """A :class:`torch.nn.Linear` with per-output-channel 8-bit weights and per-row 8-bit inputs.

    ``y = (q_x @ q_w^T) * s_x * s_w + b``: the product of integer-valued float32 operands is
    exact (``in_features * 127**2 < 2**24``), the rest float64. Input and output are float64
    ``[..., in_features]`` / ``[..., out_features]``.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.in_features * QMAX * QMAX >= EXACT_LIMIT:
            raise ConfigError(
                f"exact products need in_features < {EXACT_LIMIT // QMAX**2}, got {linear.in_features}"
            )
        w = linear.weight.detach().double()
        q, s = quantize_rows(w)  # one scale per output channel
        self.register_buffer("weight_q", q.t().contiguous())  # [in, out], float32 integers
        self.register_buffer("weight_scale", s.reshape(-1))  # float64 [out]
        bias = linear.bias.detach().double() if linear.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        q, s = quantize_rows(x)
        return (q @ self.weight_q).double() * s * self.weight_scale + self.bias


class ExactAttention(nn.Module):
    """:class:`~progvc.context_models.transformer.Attention` with exact products (same two modes).

    Queries, keys and values are 8-bit per token and head; the attention weights, times each
    value's scale over the largest, are integers on a grid of ``1 / P`` with ``P = 2**16`` (or
    the largest power of two that keeps ``127 * (P + L / 2) < 2**24`` for ``L`` keys), which
    bounds every partial sum of ``weights @ values``. A :class:`KVCache` keeps the integer keys and
    values with their scales.
    """

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.heads = attn.heads
        if (attn.qkv.in_features // attn.heads) * QMAX * QMAX >= EXACT_LIMIT:
            raise ConfigError(f"exact attention needs a head width < {EXACT_LIMIT // QMAX**2}")
        self.qkv = ExactLinear(attn.qkv)
        self.proj = ExactLinear(attn.proj)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """``x [B, L, width]`` (float64) -> ``[B, L, width]``; see :meth:`Attention.forward`."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        qi, qs = quantize_rows(q)
        ki, ks = quantize_rows(k)
        vi, vs = quantize_rows(v)
        if cache is not None:
            ki, ks, vi, vs = cache.append(ki, ks, vi, vs)
        scores = (qi @ ki.transpose(-1, -2)).double() * qs * ks.transpose(-1, -2) * qi.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        # fold each value's scale into its weight (relative to the largest, so weights stay <= 1)
        vmax = vs.amax(dim=-2, keepdim=True)  # [B, h, 1, 1]
        weights = weights * (vs / vmax).transpose(-1, -2)
        grid = _attention_grid(ki.shape[2])
        wi = torch.round(weights * grid).float()
        out = (wi @ vi).double() * (vmax / grid)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


def _attention_grid(num_keys: int) -> float:
    """``P``: the largest power of two <= ATTN_GRID with ``127 * (P + L / 2) < 2**24`` (rounding adds <= 1/2 per key)."""
    room = (EXACT_LIMIT - 1) // QMAX - num_keys // 2 - 1
    if room < 2**8:
        raise ConfigError(f"exact attention supports at most {2 * ((EXACT_LIMIT - 1) // QMAX - 2**8)} keys, got {num_keys}")
    return float(min(ATTN_GRID, 1 << (room.bit_length() - 1)))


def exact_copy(model: nn.Module) -> nn.Module:
    """A float64 inference copy of ``model`` whose attention layers and linear layers compute exact products.

    Works on any module built from :class:`~progvc.context_models.transformer.Attention` and
    :class:`torch.nn.Linear` (the ``var`` context model); the original is left untouched.
    """
    copied = copy.deepcopy(model).double().eval()
    _swap(copied)
    return copied


def _swap(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, Attention):
            setattr(module, name, ExactAttention(child))
        elif isinstance(child, nn.Linear):
            setattr(module, name, ExactLinear(child))
        else:
            _swap(child)


__all__ = ["ExactAttention", "ExactLinear", "exact_copy", "quantize_rows"]
