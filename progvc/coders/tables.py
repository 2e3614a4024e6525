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
import struct
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


def row_blocks(rows: int, alphabet: int, elements: int = BLOCK_ELEMENTS) -> Iterator[slice]:
    """Slices of about ``elements`` table entries covering ``rows`` rows of width ``alphabet``.

    Table work is done block by block with reused buffers: a block stays in cache, and the big
    temporaries (float64 copies of ``[N, A]``) are never allocated, which on a busy machine is
    several times faster than whole-tensor ops.
    """
    step = max(1, elements // max(1, alphabet))
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


#: grid tables (:func:`logits_to_tables`): a table entry's bit pattern moves by ``GRID_STEP_BITS`` per
#: grid step of 1/16 nat, so the float32 is Mitchell's approximation of ``exp(j / 16)``.
GRID_STEP_BITS = round(2**23 * math.log2(math.e) / STEPS_PER_NAT)
#: grid tables hold ``|j| <= GRID_LIMIT_STEPS`` (60 nats either side of 0: entries between about
#: ``exp(-60)`` and ``exp(60)``, whose sums constriction's float32 arithmetic holds exactly enough
#: and without overflow for any alphabet below ``2**40``).
GRID_LIMIT_STEPS = 60 * STEPS_PER_NAT
_ONE_BITS = 0x3F800000  # bits of float32 1.0
_MAGIC_BASE_BITS = 0x49400000  # bits of float32 1.5 * 2**19, whose ulp is 1/16
#: bits of ``GRID_MAGIC``: ``1.5 * 2**19 + d / 16`` with ``d`` chosen so that ``j = 0`` gets
#: ``GRID_STEP_BITS * GRID_MAGIC_BITS mod 2**32 = GRID_ZERO_BITS``, the bit pattern nearest 1.0.
GRID_MAGIC_BITS = _MAGIC_BASE_BITS + round(((_ONE_BITS - GRID_STEP_BITS * _MAGIC_BASE_BITS) % 2**32) / GRID_STEP_BITS)
#: float32 whose addition rounds a logit to the grid: ``bits(x + GRID_MAGIC) = GRID_MAGIC_BITS + j``.
GRID_MAGIC = struct.unpack("<f", struct.pack("<I", GRID_MAGIC_BITS))[0]
#: bit pattern of the entry of ``j = 0`` (about 0.998; Mitchell's ``exp(j / 16)`` is relative to it).
GRID_ZERO_BITS = GRID_STEP_BITS * GRID_MAGIC_BITS % 2**32
_LOW_BITS, _HIGH_BITS = GRID_MAGIC_BITS - GRID_LIMIT_STEPS, GRID_MAGIC_BITS + GRID_LIMIT_STEPS
#: grid-table entries processed at a time (4 MiB of float32: fewer, larger blocks are faster here,
#: the per-block cost being a few torch calls and one ``aminmax`` synchronisation).
GRID_BLOCK_ELEMENTS = 1 << 20
_HUGE = 2.0**100  # non-finite logits of out-of-range rows become +-_HUGE first


def logits_to_tables(logits: Tensor, out: Tensor | None = None) -> Tensor:
    """Float32 **grid tables** from logits: the fast deterministic path (three element-wise passes).

    Every entry is an element-wise function of its own logit ``x`` (rounded to float32 first,
    a deterministic step for other dtypes): ``j = round(16 * x)`` by one correctly rounded float32
    addition (``x + GRID_MAGIC``, whose ulp is 1/16), then the float32 whose bit pattern is
    ``GRID_STEP_BITS * bits(x + GRID_MAGIC) mod 2**32 = GRID_ZERO_BITS + j * GRID_STEP_BITS``: an
    integer multiplication, so no ``exp``, no lookup and no reduction over the row. The value is
    within 6 % of ``exp(j / 16)`` (Mitchell's piecewise-linear approximation of a power of two,
    monotone in ``j``, times about 0.998). A row is thus the same on any thread count, batch shape,
    block split or kernel (vectorized or scalar: one rounding, exact integer arithmetic).

    The grid holds ``|j| <= GRID_LIMIT_STEPS`` (logits within 60 nats of 0; trained models' logits
    are: the bundled model's lie within +-29). A row with a logit outside (or ``NaN``, ``+-inf``)
    is built relative to its maximum instead: ``x - max`` (float32), floored at -60 nats, where
    ``NaN`` and ``-inf`` count as least likely and ``+inf`` as most likely. That is a property of the
    row alone too; the check costs one exact reduction per block (``aminmax``), the slow path runs
    only for blocks that hold such a row.

    The range coder hands these floats to constriction as they are (its requantization to 24 bits
    is sequential Rust, a pure function of the float bits); other coders turn them into integer
    frequencies with :func:`tables_to_freqs`.

    Args:
        logits: ``[..., A]`` unnormalised log-probabilities, any float dtype, any device.
        out: optional float32 CPU tensor of ``logits``' shape to write into (a coding loop that
            reuses one per scale keeps the tables in cache and skips an allocation per call).

    Returns:
        float32 ``[..., A]`` on the CPU (``out`` when given).
    """
    if logits.ndim == 0 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., A] with A >= 1, got {tuple(logits.shape)}")
    if logits.requires_grad:
        logits = logits.detach()
    if logits.device.type != "cpu":
        logits = logits.cpu()
    if out is None:
        out = torch.empty(logits.shape, dtype=torch.float32)
    elif out.shape != logits.shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {tuple(logits.shape)}")
    a = logits.shape[-1]
    flat, tables = logits.reshape(-1, a), out.view(-1, a)
    blocks = [slice(None)] if flat.numel() <= GRID_BLOCK_ELEMENTS else row_blocks(flat.shape[0], a, GRID_BLOCK_ELEMENTS)
    for rows in blocks:
        x, y = flat[rows], tables[rows]
        if x.dtype == torch.float32:
            torch.add(x, GRID_MAGIC, out=y)
        else:
            y.copy_(x)  # round to float32
            y.add_(GRID_MAGIC)  # round to the grid: bits(y) = GRID_MAGIC_BITS + j
        bits = y.view(torch.int32)
        if bits.numel() == 0:
            continue
        low, high = torch.aminmax(bits)
        if low.item() < _LOW_BITS or high.item() > _HIGH_BITS:
            _rows_out_of_range(x, y)
        bits.mul_(GRID_STEP_BITS)  # modulo 2**32 (two's complement, as every torch CPU kernel wraps)
    return out


def _rows_out_of_range(x: Tensor, y: Tensor) -> None:
    """Redo, in place, the rows of ``y [n, A]`` (``x + GRID_MAGIC``) whose logits ``x [n, A]`` leave the
    grid's range (or are not finite), relative to each row's maximum (see :func:`logits_to_tables`)."""
    bits = y.view(torch.int32)
    bad = ((bits < _LOW_BITS) | (bits > _HIGH_BITS)).any(dim=1)
    z = torch.nan_to_num(x[bad].to(torch.float32), nan=-_HUGE, posinf=_HUGE, neginf=-_HUGE)
    z = z.clamp_(-_HUGE, _HUGE)
    z = z.sub_(z.amax(dim=1, keepdim=True)).clamp_(min=-GRID_LIMIT_STEPS / STEPS_PER_NAT)
    y[bad] = z.add_(GRID_MAGIC)


def tables_to_freqs(tables: Tensor) -> Tensor:
    """Integer frequencies ``[N, A]`` (int64) of grid tables: ``max(1, floor(p / max_row(p) * 2**scale_bits(A)))``.

    Deterministic (one correctly rounded float64 division, a power-of-two scaling and a floor);
    the most likely symbol of a row gets exactly ``2**scale_bits(A)``, every entry is ``>= 1`` and
    a row sums to at most ``2**30``, as :func:`logits_to_freqs`' tables do.
    """
    scaled = tables.to(torch.float64)
    scaled = scaled.div_(scaled.amax(dim=-1, keepdim=True)).mul_(2.0 ** scale_bits(tables.shape[-1]))
    return scaled.floor_().clamp_(min=1).to(torch.int64)


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
    ``symbols`` may be ``None`` (a decoder checks only the tables; an empty tensor comes back).
    Violations are programming errors, reported as :class:`ValueError`. Tensors that already have
    the right dtype, device and layout pass without a copy (the codec's chunks: a few attribute
    reads and one ``aminmax``).
    """
    if freqs.ndim != 2 or freqs.shape[1] < 1:
        raise ValueError(f"freqs must have shape [N, A] with A >= 1, got {tuple(freqs.shape)}")
    if freqs.dtype == torch.float32:
        if freqs.requires_grad or freqs.device.type != "cpu" or not freqs.is_contiguous():
            freqs = freqs.detach().cpu().contiguous()
    elif freqs.dtype.is_floating_point or freqs.dtype.is_complex or freqs.dtype == torch.bool:
        raise ValueError(f"freqs must be an integer tensor or float32 grid tables, got {freqs.dtype}")
    else:
        freqs = freqs.detach().to(device="cpu", dtype=torch.int64)
    if symbols is None:
        return _NO_SYMBOLS, freqs
    if symbols.shape != (freqs.shape[0],):
        raise ValueError(
            f"symbols must have shape [{freqs.shape[0]}] to match freqs, got {tuple(symbols.shape)}"
        )
    if symbols.dtype.is_floating_point or symbols.dtype.is_complex or symbols.dtype == torch.bool:
        raise ValueError(f"symbols must be an integer tensor, got {symbols.dtype}")
    if symbols.dtype != torch.int64 or symbols.requires_grad or symbols.device.type != "cpu":
        symbols = symbols.detach().to(device="cpu", dtype=torch.int64)
    if symbols.numel():
        low, high = torch.aminmax(symbols)  # torch, not numpy: in a coding loop its code is warm
    if symbols.numel() and (low.item() < 0 or high.item() >= freqs.shape[1]):
        raise ValueError(f"symbols must lie in [0, {freqs.shape[1]})")
    return symbols, freqs


_NO_SYMBOLS = torch.empty(0, dtype=torch.int64)
