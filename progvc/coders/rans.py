"""rANS coder on CompressAI (``compressai.ans``: 64-bit state, 32-bit words, 16-bit probabilities).

CompressAI codes a symbol ``s`` of a table with the CDF ``cdf[s], cdf[s + 1]`` (``cdf`` of length
``A + 2``, ``cdf[0] = 0``, ``cdf[A + 1] = 2**16``); index ``A`` is its escape ("bypass") symbol for
values outside the table. Our symbols are always in ``[0, A)``, so the escape gets zero mass
(``cdf[A] = cdf[A + 1]``) and can never be decoded: every decoded symbol is in range.

The 16-bit CDFs are built from the integer tables in torch, vectorised:
``f16 = 1 + floor(f * (2**16 - A) / total)``, the rounding remainder going to the most likely
symbol. Each symbol keeps at least ``1 / 2**16``, so an alphabet of ``A`` symbols reserves
``A / 2**16`` of the mass for symbols that are (nearly) never coded: at ``A = 4096`` that is
6.25 %, of which the rounding remainder gives about half back to the most likely symbol; the
measured cost is ~0.05 bit per token (``python -m progvc.bench coders``, see docs/coders.md).
The range coder (24-bit) does not pay it.

Segment format, trimmed to keep the per-segment overhead near rANS's inherent ~31 bits:

* one header byte ``e << 3 | (m - 4)``: ``e = N.bit_length()`` bounds the number of symbols
  ``N < 2**e``, and ``m`` (4..8) is the byte length of the final rANS state;
* the final 64-bit state in ``m`` little-endian bytes (CompressAI always writes 8; the state is
  below ``2**63`` and often far below, so its top bytes are usually zero);
* CompressAI's remaining 32-bit words.

CompressAI's decoder reads words without bounds checks. Knowing ``N < 2**e`` lets the decoder pad
the stream with the most it can read (two words, plus at most one per symbol) and refuse to decode
``2**e`` symbols or more, so a corrupt segment cannot make it read outside its buffer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from progvc.coders import CODERS
from progvc.coders.base import EntropyCoder, SymbolDecoder, SymbolEncoder
from progvc.coders.tables import check_chunk, row_blocks, tables_to_freqs
from progvc.errors import BitstreamError

PRECISION = 16
_TOTAL = 1 << PRECISION
#: a segment holds fewer than ``2**MAX_COUNT_BITS`` symbols (bounds the decoder's padding to 64 MiB).
MAX_COUNT_BITS = 24
#: symbols appended to every non-empty segment (never decoded; ~1e-4 bit in all): CompressAI's
#: flush writes into a buffer of one word per symbol, which overflows for fewer than 4 symbols.
_FILLER = 4
#: tables with at most this many symbols are deduplicated before going to CompressAI (bits and
#: small alphabets repeat a lot; sorting 4096-wide rows costs more than it saves).
_DEDUPE_MAX_ALPHABET = 256


def _ans() -> ModuleType:
    """``compressai.ans``, imported on first use: importing ``compressai`` takes seconds (it loads
    its datasets, models and torchvision), which every ``import progvc.coders`` would pay otherwise."""
    return importlib.import_module("compressai.ans")


def cdfs_16bit(freqs: Tensor) -> Tensor:
    """CompressAI CDFs ``[N, A + 2]`` (int64) of 16-bit precision from integer tables ``freqs [N, A]``.

    Every symbol gets at least 1 of ``2**16``; the escape symbol ``A`` gets 0. Exact integer
    results, computed in float64 because torch's int64 division is slow: with row sums below
    ``2**37``, ``f * (2**16 - A)`` is exact, and the rounded quotient (error below ``2**-37``)
    floors to the integer quotient, whose fraction is 0 or at least ``1 / total`` from the next
    integer.
    """
    n, a = freqs.shape
    if a > _TOTAL - 1:
        raise ValueError(f"rans codes alphabets of at most {_TOTAL - 1} symbols, got {a}")
    f = freqs.to(torch.float64)
    total = f.sum(dim=1, keepdim=True)
    if n and float(total.max()) >= 2.0**37:  # keeps the float64 arithmetic below exact
        raise ValueError("table rows must sum to less than 2**37 (use logits_to_freqs)")
    f16 = f.mul_(_TOTAL - a).div_(total).floor_().add_(1).to(torch.int64)
    rows = torch.arange(n)
    f16[rows, freqs.argmax(dim=1)] += _TOTAL - f16.sum(dim=1)
    cdf = torch.zeros(n, a + 2, dtype=torch.int64)
    torch.cumsum(f16, dim=1, out=cdf[:, 1 : a + 1])
    cdf[:, a + 1] = _TOTAL
    return cdf


def _compressai_tables(freqs: Tensor) -> tuple[list[int], list[list[int]], list[int], list[int]]:
    """``(indexes, cdfs, cdf_sizes, offsets)`` in CompressAI's calling convention for ``freqs [N, A]``
    (integer frequencies, or float32 grid tables turned into them by :func:`tables_to_freqs`)."""
    if freqs.ndim != 2 or freqs.shape[0] == 0:
        raise ValueError("need at least one table")
    if freqs.dtype == torch.float32:
        freqs = tables_to_freqs(freqs)
    if int(freqs.min()) < 1:
        raise ValueError("every table entry must be >= 1 (use logits_to_freqs)")
    cdf = cdfs_16bit(freqs)
    if freqs.shape[1] <= _DEDUPE_MAX_ALPHABET:
        cdf, index = torch.unique(cdf, dim=0, return_inverse=True)
        indexes = index.tolist()
    else:
        indexes = list(range(cdf.shape[0]))
    size = cdf.shape[1]
    return indexes, cdf.tolist(), [size] * cdf.shape[0], [0] * cdf.shape[0]


def _pack(count: int, stream: bytes) -> bytes:
    """Header byte + the final state in as few bytes as it needs + the other words (see the module doc)."""
    state = int.from_bytes(stream[:8], "little")
    size = max(4, -(-state.bit_length() // 8))
    return bytes([count.bit_length() << 3 | (size - 4)]) + state.to_bytes(size, "little") + stream[8:]


def _unpack(data: bytes) -> tuple[int, bytes]:
    """``(count bound e, CompressAI's stream)`` of a packed segment; raises :class:`BitstreamError`."""
    bits, size = data[0] >> 3, (data[0] & 7) + 4
    if bits > MAX_COUNT_BITS or size > 8:
        raise BitstreamError(f"rans segment header is corrupt (byte {data[0]:#04x})")
    state = data[1 : 1 + size]
    if len(state) < size:
        raise BitstreamError("rans segment is truncated in its final state")
    return bits, state + bytes(8 - size) + data[1 + size :]


class RansSymbolEncoder(SymbolEncoder):
    """Buffers chunks of one rANS segment (rANS codes in reverse, so all of it is coded in ``finish``)."""

    def __init__(self) -> None:
        self._encoder = _ans().BufferedRansEncoder()
        self._count = 0
        self._done = False

    def encode(self, symbols: Tensor, freqs: Tensor) -> None:
        if self._done:
            raise RuntimeError("encode() after finish()")
        symbols, freqs = check_chunk(symbols, freqs)
        if symbols.numel() == 0:
            return
        if (self._count + symbols.numel()).bit_length() > MAX_COUNT_BITS:
            raise ValueError(f"a rans segment holds fewer than 2**{MAX_COUNT_BITS} symbols")
        for rows in row_blocks(*freqs.shape):
            self._encoder.encode_with_indexes(symbols[rows].tolist(), *_compressai_tables(freqs[rows]))
        self._count += symbols.numel()

    def finish(self) -> bytes:
        if self._done:
            raise RuntimeError("finish() called twice")
        self._done = True
        if self._count == 0:
            return b""
        filler = torch.tensor([[_TOTAL - 1, 1]] * _FILLER)  # symbol 0 at probability 1 - 2**-16
        self._encoder.encode_with_indexes([0] * _FILLER, *_compressai_tables(filler))
        return _pack(self._count, self._encoder.flush())


class RansSymbolDecoder(SymbolDecoder):
    """Reads a rANS segment back chunk by chunk; refuses to read past the declared bound on its symbols."""

    def __init__(self, data: bytes | bytearray | memoryview, max_symbols: int | None = None) -> None:
        data = bytes(data)
        self._left = 0
        self._decoder = None
        if not data:
            return
        bits, stream = _unpack(data)
        self._left = (1 << bits) - 1
        if max_symbols is not None:  # the caller's bound: a few forged bytes cannot ask for 64 MiB of padding
            self._left = min(self._left, int(max_symbols) + _FILLER)
        # Whole words, then the most CompressAI can read: 2 words at init, at most 1 per symbol.
        stream += b"\0" * (-len(stream) % 4 + 4 * (self._left + 2))
        self._decoder = _ans().RansDecoder()
        self._decoder.set_stream(stream)

    def decode(self, freqs: Tensor) -> Tensor:
        _, freqs = check_chunk(None, freqs)
        n = freqs.shape[0]
        if n == 0:
            return torch.empty(0, dtype=torch.int64)
        if n > self._left or self._decoder is None:
            raise BitstreamError(f"rans segment ends before the {n} symbols asked for")
        self._left -= n
        symbols = torch.empty(n, dtype=torch.int64)
        for rows in row_blocks(*freqs.shape):
            symbols[rows] = torch.tensor(self._decoder.decode_stream(*_compressai_tables(freqs[rows])))
        return symbols


@CODERS.register("rans")
class RansCoder(EntropyCoder):
    """rANS (CompressAI): 16-bit probabilities (~0.05 bit per token more at 4096 symbols), ~5 bytes per segment."""

    precision = PRECISION

    def encoder(self) -> RansSymbolEncoder:
        return RansSymbolEncoder()

    def decoder(
        self, data: bytes | bytearray | memoryview, max_symbols: int | None = None
    ) -> RansSymbolDecoder:
        return RansSymbolDecoder(data, max_symbols)
