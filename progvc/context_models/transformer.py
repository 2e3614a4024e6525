"""Transformer pieces of the next-scale context model: attention with a block-causal mask or a
KV cache (optionally over local windows of the fine scales), a pre-norm block, and a 2-D
sinusoidal position embedding for any grid size.

Everything here takes its dtype and device from its parameters or inputs (no hard-coded
``float32``), so a ``.double()`` copy of a model computes in float64 end to end, which the codec
uses for reproducible probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, Mlp
from torch import Tensor, nn


@dataclass
class KVCache:
    """Per-token tensors ``[B, heads, L, *]`` of every token seen so far by one attention layer.

    :class:`Attention` keeps keys and values; an exact copy
    (:mod:`progvc.context_models.exact`) keeps integer keys and values with their scales.
    """

    parts: tuple[Tensor, ...] = ()

    @property
    def length(self) -> int:
        """Number of cached tokens ``L``."""
        return self.parts[0].shape[2] if self.parts else 0

    def prefix(self, length: int) -> KVCache:
        """A cache of the first ``length`` tokens, sharing this one's tensors (views)."""
        return KVCache(tuple(p[:, :, :length] for p in self.parts) if length else ())

    def append(self, *parts: Tensor) -> tuple[Tensor, ...]:
        """Add the new tokens' tensors ``[B, heads, L_new, *]`` and return all of them, old first."""
        if self.parts:
            parts = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.parts, parts, strict=True))
        self.parts = tuple(parts)
        return self.parts

    def attend(self, own: bool, *parts: Tensor) -> tuple[Tensor, ...]:
        """Append the new tokens' tensors; return what they attend to: all tokens (``own``) or the earlier ones."""
        before = self.parts
        if not own and not before:
            raise ValueError("tokens that do not attend to each other need earlier tokens in the cache")
        everything = self.append(*parts)
        return everything if own else before


@dataclass(frozen=True)
class LocalKeys:
    """The keys that the ``Lq`` tokens of one scale attend to when that scale is *local*.

    Every token sees the first ``prefix`` tokens of the frame (the coarse scales, all of them) and,
    in each local scale up to its own, the ``(2r + 1)^2`` tokens around the cell that holds its
    centre (``index [Lq, W]`` into the frame's sequence; ``valid [Lq, W]`` is ``False`` where a
    window leaves its scale's grid). Built by :func:`local_keys`.
    """

    prefix: int
    index: Tensor
    valid: Tensor


def local_keys(
    sizes: list[tuple[int, int]], k: int, local_from: int, radius: int, own: bool = True
) -> LocalKeys:
    """:class:`LocalKeys` of scale ``k >= local_from`` of a frame whose scales have ``sizes [(h, w), ...]``.

    The window of scale ``j`` is centred on the cell ``(floor((y + 1/2) h_j / h_k), floor((x + 1/2)
    w_j / w_k))`` of a token at ``(y, x)`` of scale ``k`` (exact integer arithmetic); scales
    ``local_from .. k`` take part, or ``.. k - 1`` without ``own``.
    """
    starts = [0]
    for h, w in sizes[:k]:
        starts.append(starts[-1] + h * w)
    hq, wq = sizes[k]
    yq = torch.arange(hq).repeat_interleave(wq)  # [Lq], row-major
    xq = torch.arange(wq).repeat(hq)
    offsets = torch.arange(-radius, radius + 1)
    index, valid = [torch.zeros(hq * wq, 0, dtype=torch.long)], [torch.zeros(hq * wq, 0, dtype=torch.bool)]
    for j in range(local_from, k + 1 if own else k):
        hj, wj = sizes[j]
        ky = ((2 * yq + 1) * hj // (2 * hq))[:, None, None] + offsets[None, :, None]  # [Lq, 2r+1, 1]
        kx = ((2 * xq + 1) * wj // (2 * wq))[:, None, None] + offsets[None, None, :]  # [Lq, 1, 2r+1]
        inside = (ky >= 0) & (ky < hj) & (kx >= 0) & (kx < wj)
        index.append((starts[j] + ky.clamp(0, hj - 1) * wj + kx.clamp(0, wj - 1)).reshape(hq * wq, -1))
        valid.append(inside.reshape(hq * wq, -1))
    return LocalKeys(starts[local_from], torch.cat(index, dim=1), torch.cat(valid, dim=1))


#: gathered window keys and values per chunk of queries in :func:`local_attention`: 2 MiB of
#: float64, so the temporaries stay below glibc's largest mmap threshold (32 MiB) and reuse heap
#: memory; one tensor of a whole 352x288 scale's windows (44 MB) would be mapped fresh, page by
#: page, on every call, which took several times longer than the gather itself.
LOCAL_CHUNK_ELEMENTS = 1 << 18


def local_attention(q: Tensor, k: Tensor, v: Tensor, keys: LocalKeys) -> Tensor:
    """Attention of ``q [B, h, Lq, d]`` over ``keys`` of ``k, v [B, h, L, d]``: ``[B, h, Lq, d]``.

    The same numbers as :func:`torch.nn.functional.scaled_dot_product_attention` with the mask of
    :func:`block_causal_mask` (``local``), for ``prefix + W`` keys per query instead of ``L``: the
    prefix in one fused kernel (:func:`prefix_attention`), the windows gathered, and the two
    softmax parts joined by their log-sum-exps. Queries go in chunks of about
    :data:`LOCAL_CHUNK_ELEMENTS` gathered numbers.
    """
    index, valid = keys.index.to(k.device), keys.valid.to(k.device)
    k_prefix, v_prefix = k[:, :, : keys.prefix], v[:, :, : keys.prefix]
    step = max(1, LOCAL_CHUNK_ELEMENTS // max(1, index.shape[1] * k.shape[1] * k.shape[3]))
    out = torch.empty_like(q)
    for start in range(0, q.shape[2], step):
        rows = slice(start, start + step)
        qc, ic = q[:, :, rows], index[rows]
        k_local, v_local = k[:, :, ic], v[:, :, ic]  # [B, h, rows, W, d]
        scores = torch.einsum("bhld,bhlwd->bhlw", qc, k_local).mul_(q.shape[-1] ** -0.5)
        scores.masked_fill_(~valid[rows], float("-inf"))
        part, lse = prefix_attention(qc, k_prefix, v_prefix)
        total = torch.logaddexp(lse, scores.logsumexp(dim=-1))  # [B, h, rows]
        weights = scores.sub_(total.unsqueeze(-1)).exp_()
        part = part.mul_((lse - total).exp_().unsqueeze(-1))
        out[:, :, rows] = part.add_(torch.einsum("bhlw,bhlwd->bhld", weights, v_local))
    return out


#: PyTorch's fused CPU attention kernel that also returns the log-sum-exp of each query's scores
#: (what :func:`torch.nn.functional.scaled_dot_product_attention` runs on the CPU without a mask)
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def prefix_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Unmasked attention ``[B, h, Lq, d]`` and the log-sum-exp ``[B, h, Lq]`` of each query's scaled scores."""
    if _FLASH_CPU is not None and q.device.type == "cpu":
        return _FLASH_CPU(q, k, v)
    scores = (q @ k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    lse = scores.logsumexp(dim=-1)
    return scores.sub_(lse.unsqueeze(-1)).exp_() @ v, lse


class Attention(nn.Module):
    """Multi-head self-attention on :func:`torch.nn.functional.scaled_dot_product_attention`.

    Two modes: the whole sequence with a boolean mask (training), or only the new tokens
    attending to a :class:`KVCache` plus themselves (incremental coding, one scale per call).

    Args:
        width: model width (divisible by ``heads``).
        heads: attention heads.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(self, width: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        own: bool = True,
        local: LocalKeys | None = None,
    ) -> Tensor:
        """``x [B, L, width]`` -> ``[B, L, width]``.

        Args:
            x: the tokens to compute (all of them, or only the new ones with ``cache``).
            mask: boolean ``[L, L_total]``, ``True`` where a query may attend to a key; ``None``
                lets every query see every key.
            cache: keys and values of earlier tokens; ``x``'s own are appended to it.
            own: with ``cache``, whether the new tokens attend to each other too (``False``: to
                the earlier tokens only; the cache must hold some).
            local: with ``cache``, the keys of a local scale (:class:`LocalKeys`) instead of all.
        """
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if cache is not None:
            k, v = cache.attend(own, k, v)
        if local is not None:
            out = local_attention(q, k, v, local)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
            )
        return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))


class GELU(nn.GELU):
    """Exact (erf) GELU; in float64 inference it is ``x / 2 * (1 + erf(x / sqrt(2)))`` in place.

    On x86 CPUs PyTorch's float64 ``gelu`` kernel is slower than this composition of vectorized
    ``erf`` and in-place products, which agrees with it within 1e-15 (the codec's float64
    context model gives the same tables and streams). Float32 and training use ``F.gelu``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x [...]`` -> GELU of ``x`` (the same shape and dtype)."""
        if x.dtype != torch.float64 or x.requires_grad:
            return super().forward(x)
        return torch.mul(x, math.sqrt(0.5)).erf_().add_(1.0).mul_(x).mul_(0.5)


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``, with stochastic depth."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, dropout: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, attn_drop=dropout, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden_features=int(width * mlp_ratio), act_layer=GELU, drop=dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        own: bool = True,
        local: LocalKeys | None = None,
    ) -> Tensor:
        """``x [B, L, width]`` -> ``[B, L, width]`` (see :meth:`Attention.forward` for the other arguments)."""
        x = x + self.drop_path(self.attn(self.norm1(x), mask=mask, cache=cache, own=own, local=local))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sincos_2d(
    height: int, width: int, dim: int, *, max_freq: float = 64.0, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Fixed 2-D sinusoidal position embedding ``[height * width, dim]`` (row-major positions).

    Coordinates are cell centres normalised to ``(0, 1)``, so the same spot of the frame gets
    nearly the same code at every scale and at every frame size. Half of ``dim`` encodes the
    row, half the column, each with ``dim / 4`` geometric frequencies from ``pi`` to
    ``pi * max_freq`` (sin and cos). ``dim`` must be divisible by 4.
    """
    n = dim // 4
    exponent = torch.arange(n, dtype=dtype, device=device) / max(n - 1, 1)
    freqs = math.pi * max_freq**exponent  # [n]
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
    ang_y = (ys[:, None] * freqs)[:, None, :].expand(height, width, n)
    ang_x = (xs[:, None] * freqs)[None, :, :].expand(height, width, n)
    emb = torch.cat([ang_y.sin(), ang_y.cos(), ang_x.sin(), ang_x.cos()], dim=-1)
    return emb.reshape(height * width, 4 * n)


def block_causal_mask(
    lengths: list[int],
    device: torch.device,
    strict_from: int | None = None,
    local: tuple[list[tuple[int, int]], int, int] | None = None,
) -> Tensor:
    """Boolean ``[L, L]`` mask, ``L = sum(lengths)``: a token sees every token of its own and earlier blocks.

    Tokens of blocks ``>= strict_from`` (``None``: none) see the earlier blocks only, not their own.
    With ``local = (sizes, local_from, radius)`` (blocks are scales of ``sizes [(h, w), ...]``), the
    tokens of scales ``>= local_from`` see only their :func:`local_keys`.
    """
    level = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
    )
    mask = level[None, :] <= level[:, None]
    if strict_from is not None:
        mask &= (level[None, :] < level[:, None]) | (level[:, None] < strict_from)
    if local is not None:
        sizes, local_from, radius = local
        start = sum(lengths[:local_from])
        for k in range(local_from, len(lengths)):
            keys = local_keys(sizes, k, local_from, radius, own=strict_from is None or k < strict_from)
            rows = mask[start : start + lengths[k]]
            rows[:, keys.prefix :] = False
            queries = torch.arange(lengths[k])[:, None].expand_as(keys.index)
            rows[queries[keys.valid].to(device), keys.index[keys.valid].to(device)] = True
            start += lengths[k]
    return mask
