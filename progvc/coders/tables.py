"""The one deterministic path from a context model's logits to integer frequency tables.

Entropy coding fails if the decoder's tables differ from the encoder's in a single entry, so the
coders never see floating-point probabilities. :func:`logits_to_freqs` turns logits into integer
frequencies in a way that only depends on the logits' values on a coarse grid:

1. compute in float64 and subtract the row maximum (exact for float32 logits);
2. quantize the distance to the maximum to a grid of ``1 / STEPS_PER_NAT`` nats;
3. look the grid index up in an integer table of ``round(2**S * exp(-j / STEPS_PER_NAT))``,
   floored at 1, computed once with :mod:`decimal` (correctly rounded, so the same integers on
   every platform; ``math.exp`` is only faithful to the last bit on some C libraries).

Steps 1-3 are element-wise or exact reductions (a maximum), so the result does not depend on
thread counts, batch shapes or the device. What remains is the context model's own float noise:
a logit that moves across a grid boundary changes a table entry, which is why the encoder and the
decoder must compute logits along the same path (same ``step`` calls, same shapes). The grid
makes that failure rare; it cannot make it impossible.

``S`` depends on the alphabet size ``A`` only: ``S = min(24, 30 - ceil(log2 A))``, so every row
sums to at most ``2**30`` (well below ``2**31``) and every entry is ``>= 1``.
"""

from __future__ import annotations

import decimal
import functools
import math
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

#: grid of the quantized log-probabilities, in steps per nat (1/16 nat ~ 0.09 bit).
STEPS_PER_NAT = 16
#: every row of a table sums to at most ``2 ** MAX_TOTAL_BITS``.
MAX_TOTAL_BITS = 30
#: the largest table entry is at most ``2 ** MAX_SCALE_BITS``.
MAX_SCALE_BITS = 24
#: table entries processed at a time (2 MiB of float64).
BLOCK_ELEMENTS = 1 << 18


def scale_bits(alphabet: int) -> int:
    """``S``: the most likely symbol of an ``alphabet``-sized row gets frequency ``2**S``."""
    if alphabet < 1:
        raise ValueError(f"alphabet must be at least 1, got {alphabet}")
    bits = min(MAX_SCALE_BITS, MAX_TOTAL_BITS - math.ceil(math.log2(alphabet)))
    if bits < 1:
        raise ValueError(f"alphabet {alphabet} is too large for integer tables (at most 2**29)")
    return bits


@functools.cache
def exp_table(bits: int) -> tuple[int, ...]:
    """``round(2**bits * exp(-j / STEPS_PER_NAT))`` for ``j = 0, 1, ...`` down to (and ending at) 1.

    Computed with 50-digit decimal arithmetic, whose ``exp`` is correctly rounded, so the integers
    are the same on every platform. Cached: tables are built once per ``bits``.
    """
    ctx = decimal.Context(prec=50, rounding=decimal.ROUND_HALF_EVEN)
    top = decimal.Decimal(2**bits)
    entries = []
    j = 0
    while True:
        value = ctx.multiply(top, ctx.exp(decimal.Decimal(-j) / STEPS_PER_NAT))
        entry = max(1, int(value.to_integral_value(rounding=decimal.ROUND_HALF_EVEN, context=ctx)))
        entries.append(entry)
        if entry == 1:
            return tuple(entries)
        j += 1


def row_blocks(rows: int, alphabet: int) -> Iterator[slice]:
    """Slices of about ``BLOCK_ELEMENTS`` table entries covering ``rows`` rows of width ``alphabet``.

    Table work is done block by block with reused buffers: a block stays in cache, and the big
    temporaries (float64 copies of ``[N, A]``) are never allocated, which on a busy machine is
    several times faster than whole-tensor ops.
    """
    step = max(1, BLOCK_ELEMENTS // max(1, alphabet))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def logits_to_freqs(logits: Tensor) -> Tensor:
    """Integer frequency tables from logits (see the module docstring for why this is deterministic).

    Args:
        logits: ``[..., A]`` unnormalised log-probabilities, any float dtype, any device. ``NaN``
            and ``-inf`` count as "least likely", ``+inf`` as "most likely".

    Returns:
        int64 ``[..., A]`` on the logits' device: every entry ``>= 1``, every row sums to at most
        ``2**30``; the most likely symbol of a row has ``2**scale_bits(A)``.
    """
    if logits.ndim == 0 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., A] with A >= 1, got {tuple(logits.shape)}")
    a = logits.shape[-1]
    flat = logits.detach().reshape(-1, a)
    out = torch.empty(flat.shape, dtype=torch.int64, device=flat.device)
    table = exp_table(scale_bits(a))
    lookup = torch.tensor(table, dtype=torch.int64, device=flat.device)
    big = torch.finfo(torch.float64).max / 4
    x = torch.empty(0, dtype=torch.float64, device=flat.device)
    index = torch.empty(0, dtype=torch.int64, device=flat.device)
    for rows in row_blocks(flat.shape[0], a):
        n = rows.stop - rows.start
        if x.shape[0] < n:
            x = torch.empty(n, a, dtype=torch.float64, device=flat.device)
            index = torch.empty(n, a, dtype=torch.int64, device=flat.device)
        xb, ib = x[:n], index[:n]
        xb.copy_(flat[rows])
        torch.nan_to_num(xb, nan=-big, posinf=big, neginf=-big, out=xb)
        xb.sub_(xb.amax(dim=-1, keepdim=True)).mul_(-STEPS_PER_NAT)  # grid steps below the row max
        ib.copy_(xb.round_().clamp_(max=len(table) - 1))
        torch.index_select(lookup, 0, ib.view(-1), out=out[rows].view(-1))
    return out.view(logits.shape)


#: grid tables (:func:`logits_to_tables`): ``bits(p_j) = bits(1.0f) - j * GRID_STEP_BITS``, the
#: float32 whose bit pattern is linear in ``j`` (Mitchell's approximation of ``exp(-j / 16)``).
GRID_STEP_BITS = round(2**23 * math.log2(math.e) / STEPS_PER_NAT)
#: grid tables stop at ``j = GRID_MAX_STEPS`` (``exp(-20)``, about ``2**-29``: far below the
#: range coder's 24-bit precision, which gives every symbol at least ``2**-24`` anyway).
GRID_MAX_STEPS = 20 * STEPS_PER_NAT
_ONE_BITS = 0x3F800000  # bits of float32 1.0


def logits_to_tables(logits: Tensor, out: Tensor | None = None) -> Tensor:
    """Float32 **grid tables** from logits: the fast deterministic path (about 5 passes over the data).

    Per row, ``j = min(GRID_MAX_STEPS, floor(16 * max - 16 * x))`` is the distance below the row
    maximum in grid steps of 1/16 nat, computed in float32 (other dtypes are rounded to float32
    first, a deterministic step) as :func:`logits_to_freqs` quantizes it (the products by 16 are exact and the one subtraction is correctly rounded, so a fused or unfused,
    vectorized or scalar kernel gives the same ``j`` on any thread count). The table entry is the
    float32 whose bit pattern is ``bits(1.0) - j * GRID_STEP_BITS``: an integer operation, so
    there is no ``exp`` and no lookup, and the value is within 6 % of ``exp(-j / 16)`` (Mitchell's
    piecewise-linear approximation of a power of two, monotone in ``j``); the most likely symbol
    gets exactly 1.0 and every entry is at least ``exp(-20)``.

    The range coder hands these floats to constriction as they are (its requantization to 24 bits
    is sequential Rust, a pure function of the float bits); other coders turn them into integer
    frequencies with :func:`tables_to_freqs`. ``NaN`` and ``-inf`` count as least likely,
    ``+inf`` as most likely (a slower path, only for rows with a non-finite or huge maximum).

    Args:
        logits: ``[..., A]`` unnormalised log-probabilities, any float dtype, any device.
        out: optional float32 CPU tensor of ``logits``' shape to write into (a coding loop that
            reuses one keeps the tables in cache instead of faulting in fresh pages).

    Returns:
        float32 ``[..., A]`` on the CPU (``out`` when given).
    """
    if logits.ndim == 0 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., A] with A >= 1, got {tuple(logits.shape)}")
    a = logits.shape[-1]
    flat = logits.detach().reshape(-1, a).cpu()
    work = (
        torch.float32
    )  # float64 logits are rounded to float32 first: several times faster, as deterministic
    if out is None:
        out = torch.empty(logits.shape, dtype=torch.float32)
    elif out.shape != logits.shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {tuple(logits.shape)}")
    bits = out.view(-1, a).view(torch.int32)
    one = torch.tensor(_ONE_BITS, dtype=torch.int32)
    limit = torch.finfo(work).max / 64
    size = min(flat.numel(), max(a, BLOCK_ELEMENTS // a * a))
    d, j, x = _scratch(size)
    for rows in row_blocks(flat.shape[0], a):
        n = rows.stop - rows.start
        db, jb, xb = d[: n * a].view(n, a), j[: n * a].view(n, a), flat[rows]
        if xb.dtype != work:
            xb = x[: n * a].view(n, a).copy_(xb)
        top = xb.amax(dim=-1, keepdim=True)
        if not bool(top.abs().max() < limit):  # NaN, inf or huge logits: make every value finite first
            xb = torch.nan_to_num(xb, nan=-limit, posinf=limit, neginf=-limit).clamp_(-limit, limit)
            top = xb.amax(dim=-1, keepdim=True)
        torch.add(top.mul_(STEPS_PER_NAT), xb, alpha=-STEPS_PER_NAT, out=db)  # >= 0: grid steps below the max
        db.clamp_(max=GRID_MAX_STEPS)
        jb.copy_(db)  # truncation: floor, the values being >= 0
        torch.add(one, jb, alpha=-GRID_STEP_BITS, out=bits[rows])
    return out


_SCRATCH = threading.local()


def _scratch(elements: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-thread float32, int32 and float32 buffers of at least ``elements`` entries, reused across
    calls (fresh buffers cost page faults: several times the arithmetic for a codec-sized table)."""
    have = getattr(_SCRATCH, "buffers", None)
    if have is None or have[0].numel() < elements:
        have = (torch.empty(elements), torch.empty(elements, dtype=torch.int32), torch.empty(elements))
        _SCRATCH.buffers = have
    return have


def tables_to_freqs(tables: Tensor) -> Tensor:
    """Integer frequencies ``[N, A]`` (int64) of grid tables: ``max(1, floor(p * 2**scale_bits(A)))``.

    Exact (a power-of-two scaling and a floor), so deterministic; every entry is ``>= 1`` and a
    row sums to at most ``2**30``, as :func:`logits_to_freqs`' tables do.
    """
    scaled = tables.to(torch.float64).mul_(2.0 ** scale_bits(tables.shape[-1])).floor_().clamp_(min=1)
    return scaled.to(torch.int64)


def ideal_bits(symbols: Tensor, freqs: Tensor) -> float:
    """Code length in **bits** of ``symbols [N]`` under the integer tables ``freqs [N, A]``.

    This is the cross-entropy an ideal coder would reach with these tables; a real coder writes
    a little more (its own precision, its flush).
    """
    symbols, freqs = check_chunk(symbols, freqs)
    if symbols.numel() == 0:
        return 0.0  # (grid tables work too: the float32 values are their own frequencies)
    f = freqs.to(torch.float64)
    chosen = f.gather(1, symbols[:, None]).squeeze(1)
    return float(-(torch.log2(chosen) - torch.log2(f.sum(dim=1))).sum())


def check_chunk(symbols: Tensor | None, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a chunk for a coder and return ``(symbols [N] int64, tables [N, A])`` on the CPU.

    ``freqs`` is either integer frequencies (returned as int64, from :func:`logits_to_freqs`) or
    float32 grid tables (returned as contiguous float32, from :func:`logits_to_tables`).
    ``symbols`` may be ``None`` (a decoder checks only the tables). Violations are programming
    errors, reported as :class:`ValueError`.
    """
    if freqs.ndim != 2 or freqs.shape[1] < 1:
        raise ValueError(f"freqs must have shape [N, A] with A >= 1, got {tuple(freqs.shape)}")
    if freqs.dtype == torch.float32:
        freqs = freqs.detach().cpu().contiguous()
    elif freqs.dtype.is_floating_point or freqs.dtype.is_complex or freqs.dtype == torch.bool:
        raise ValueError(f"freqs must be an integer tensor or float32 grid tables, got {freqs.dtype}")
    else:
        freqs = freqs.detach().to(device="cpu", dtype=torch.int64)
    if symbols is None:
        return torch.empty(0, dtype=torch.int64), freqs
    if symbols.shape != (freqs.shape[0],):
        raise ValueError(
            f"symbols must have shape [{freqs.shape[0]}] to match freqs, got {tuple(symbols.shape)}"
        )
    if symbols.dtype.is_floating_point or symbols.dtype.is_complex or symbols.dtype == torch.bool:
        raise ValueError(f"symbols must be an integer tensor, got {symbols.dtype}")
    symbols = symbols.detach().to(device="cpu", dtype=torch.int64)
    if symbols.numel() and (int(symbols.min()) < 0 or int(symbols.max()) >= freqs.shape[1]):
        raise ValueError(f"symbols must lie in [0, {freqs.shape[1]})")
    return symbols, freqs
