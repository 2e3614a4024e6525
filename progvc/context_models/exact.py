"""Exact-product inference copies of the Transformer context models, for coding.

The encoder and the decoder must compute bit-identical probability tables whatever their thread
counts. A float32 matrix product sums in an order that depends on the thread count and the
kernel, so its results move by a few ULPs and some table entries cross a rounding boundary
(24 of 817344 entries at 176x144 between 1 and 2 threads, ``python -m progvc.bench speed
--breakdown``). A float64 copy makes such moves too small to matter, at 2-3x the time.

:func:`exact_copy` keeps float64 for everything that works element by element or row by row
(LayerNorm, GELU, softmax, biases, scales) and makes matrix products **exact**: their operands
are 8-bit integers (weights per output channel, activations per row, both scaled by their
absolute maximum over 127) multiplied by :func:`torch._int_mm` into int32, which holds every
partial sum exactly, so the product is the same in any summation order, on any number of threads
and any kernel.

Two variants (``mode``):

* ``"blocks"``: the linear layers of the Transformer blocks (attention projections and MLPs,
  nearly all of the products) are exact; attention, the input projections and the output head
  stay float64. It codes the same bits as the float64 copy within 0.2 %, but it is only a few
  percent faster (int8 products are cheap, the per-row quantization passes around them are
  not, and float64 attention is most of the rest), so **the codec keeps the float64 copy**
  (``docs/benchmarks.md#context-model-arithmetic``).
* ``"exact"`` (the reference): every linear layer and attention too; queries, keys and values
  are 8-bit per token and head, the attention weights integers on a grid (see
  :class:`ExactAttention`). Its attention products are float32 matrices of integers (batched
  over heads), exact by the same kind of bound. In eager PyTorch it is 2-8x *slower* than
  float64, because the attention matrix is materialised and passed over about ten times
  (``docs/benchmarks.md``); it is the reference for a fused exact attention kernel.

Quantizing the operands changes the logits a little, never the agreement between encoder and
decoder.
"""

from __future__ import annotations

import copy

import torch
from einops import rearrange
from torch import Tensor, nn

from progvc.context_models.transformer import Attention, Block, KVCache, LocalKeys
from progvc.errors import ConfigError

#: largest magnitude of an integer operand
QMAX = 127
#: every partial sum of an exact float32 product stays below this (float32 holds all integers up to it)
EXACT_LIMIT = 2**24
#: every partial sum of an int8 product (int32 accumulator) stays below this
INT32_LIMIT = 2**31
#: :func:`exact_copy`'s modes: everything exact (the reference), or the Transformer blocks' linear layers
EXACT_MODES = ("exact", "blocks")
#: attention weights are integers on a grid of 1 / ATTN_GRID (fewer steps only for huge key counts)
ATTN_GRID = 2**16


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """8-bit integers ``q`` (int8, ``|q| <= 127``, ``x``'s shape) and float64 scales ``[..., 1]`` with ``x ~ q * scale``.

    One scale per row (last dimension): its absolute maximum ``m`` over 127 (``m = 1`` for an
    all-zero row); ``q = round(x * (127 / m))``. An exact maximum and correctly rounded
    element-wise operations: a pure function of ``x``, the same on every kernel.
    """
    x = x.double()
    top = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    return torch.round(x * (QMAX / top)).to(torch.int8), top / QMAX


def int8_matmul(a: Tensor, b: Tensor) -> Tensor:
    """The exact product ``[M, K] @ [K, N]`` of int8 matrices, int32 (``K * 127**2 < 2**31``).

    On the CPU :func:`torch._int_mm`; elsewhere (where it needs shapes of at least 16 rows and
    multiples of 8) a float64 product, exact too: integer operands and sums below ``2**53``.
    """
    if a.device.type == "cpu":
        return torch._int_mm(a, b)
    return _float64_matmul(a, b)


def _float64_matmul(a: Tensor, b: Tensor) -> Tensor:
    return (a.double() @ b.double()).to(torch.int32)


class ExactLinear(nn.Module):
    """A :class:`torch.nn.Linear` with per-output-channel 8-bit weights and per-row 8-bit inputs.

    ``y = int_mm(q_x, q_w^T) * s_w * s_x + b``: the int8 product accumulates in int32, exactly
    (``in_features * 127**2 < 2**31``); the rest is float64. Input and output are float64
    ``[..., in_features]`` / ``[..., out_features]``.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.in_features * QMAX * QMAX >= INT32_LIMIT:
            raise ConfigError(f"exact products need in_features < {INT32_LIMIT // QMAX**2}, got {linear.in_features}")
        w = linear.weight.detach().double()
        q, s = quantize_rows(w)  # one scale per output channel
        self.register_buffer("weight_q", q.t().contiguous())  # [in, out] int8
        self.register_buffer("weight_scale", s.reshape(-1))  # float64 [out]
        bias = linear.bias.detach().double() if linear.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        q, s = quantize_rows(x.reshape(-1, x.shape[-1]))
        y = torch.mul(int8_matmul(q, self.weight_q), self.weight_scale).mul_(s).add_(self.bias)
        return y.reshape(*x.shape[:-1], y.shape[-1])


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

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        own: bool = True,
        local: LocalKeys | None = None,
    ) -> Tensor:
        """``x [B, L, width]`` (float64) -> ``[B, L, width]``; see :meth:`Attention.forward` (``local``: not built)."""
        if local is not None:
            raise ConfigError("exact attention over local windows is not built (var local_scales > 0)")
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        (qi, qs), (ki, ks), (vi, vs) = ((i.float(), s) for i, s in map(quantize_rows, (q, k, v)))
        if cache is not None:
            ki, ks, vi, vs = cache.attend(own, ki, ks, vi, vs)
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


def exact_copy(model: nn.Module, mode: str = "exact") -> nn.Module:
    """A float64 inference copy of ``model`` with exact products (the original is left untouched).

    ``mode="exact"``: every :class:`torch.nn.Linear` and
    :class:`~progvc.context_models.transformer.Attention` computes exact products.
    ``mode="blocks"``: only the linear layers inside
    :class:`~progvc.context_models.transformer.Block` modules do; the rest is float64.
    """
    if mode not in EXACT_MODES:
        raise ConfigError(f"mode must be one of {', '.join(EXACT_MODES)}, got {mode!r}")
    copied = copy.deepcopy(model).double().eval()
    _swap(copied, mode, inside_block=False)
    return copied


def _swap(module: nn.Module, mode: str, inside_block: bool) -> None:
    for name, child in module.named_children():
        if mode == "exact" and isinstance(child, Attention):
            setattr(module, name, ExactAttention(child))
        elif isinstance(child, nn.Linear) and (mode == "exact" or inside_block):
            setattr(module, name, ExactLinear(child))
        else:
            _swap(child, mode, inside_block or isinstance(child, Block))


__all__ = ["ExactAttention", "ExactLinear", "exact_copy", "int8_matmul", "quantize_rows"]
