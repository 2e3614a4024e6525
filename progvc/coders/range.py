"""Range coder on ``constriction`` (32-bit words, 64-bit state, 24-bit probabilities).

Tables go to constriction's lazy ``Categorical(perfect=False)`` model. Float32 grid tables
(:func:`~progvc.coders.tables.logits_to_tables`, the codec's path) go as they are, in one call
per chunk; integer frequencies go as float64 rows (every row sums to at most ``2**30``, so
constriction's float64 sums are exact). Either way constriction's 24-bit requantisation
(``floor(cdf * (2**24 - A) / total) + symbol``) is sequential Rust code, a pure function of the
table's bits: encoder and decoder agree bit for bit.

Segment format: the coder's 32-bit words as **big-endian** bytes with the trailing zero bytes cut.
The decoder reads missing words as zeros, so cutting zeros is lossless; big-endian order puts the
low-order bytes of the last word at the end, where the final interval leaves zeros. On top of
that, :func:`_seal` replaces constriction's flush (one or two whole words) with the number in the
final interval that has the most trailing zero bits: about 2 bytes instead of 4-8 per segment,
which matters at low rates where a segment holds a few dozen bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import constriction
import numpy as np
import torch
from torch import Tensor

from progvc.coders import CODERS
from progvc.coders.base import EntropyCoder, SymbolDecoder, SymbolEncoder
from progvc.coders.tables import check_chunk, row_blocks
from progvc.errors import BitstreamError

# constriction's extension module exposes ``stream`` as attributes, not as importable submodules.
_ConstrictionEncoder = constriction.stream.queue.RangeEncoder
_ConstrictionDecoder = constriction.stream.queue.RangeDecoder
Categorical = constriction.stream.model.Categorical

_WORD_BITS = 32
_STATE_BITS = 64


def _most_trailing_zeros(lo: int, hi: int) -> int:
    """The integer in ``[lo, hi)`` (``lo < hi``) with the most trailing zero bits."""
    for k in range(hi.bit_length(), -1, -1):
        candidate = -(-lo >> k) << k  # lo rounded up to a multiple of 2**k
        if candidate < hi:
            return candidate
    raise AssertionError("unreachable: k = 0 gives lo itself")


def _seal(encoder: _ConstrictionEncoder) -> bytes:
    """The encoder's words plus a minimal flush, as big-endian bytes without trailing zeros.

    constriction's own flush writes the top word of ``lower + 2**32 - 1``; any point in the final
    interval ``[lower, lower + range)`` decodes the same, so we take the one with the most
    trailing zeros. When the interval straddles ``2**64`` (words held back awaiting a carry,
    constriction's "inverted" situation) the point stays below ``2**64``, the side constriction's
    flush chose, so the words before it are the ones ``get_compressed`` resolved.
    """
    words = np.asarray(encoder.get_compressed(), dtype=np.uint32)
    if words.size == 0:
        return b""
    position, (lower, width) = encoder.pos()
    top = 1 << _STATE_BITS
    if lower + (1 << _WORD_BITS) - 1 >= top:
        # constriction's flush point carried into the held-back words (odds ~2**-32): keep its flush.
        return words.astype(">u4").tobytes().rstrip(b"\0")
    point = _most_trailing_zeros(lower, min(lower + width, top))
    return (words[:position].astype(">u4").tobytes() + point.to_bytes(_STATE_BITS // 8, "big")).rstrip(b"\0")


def _float64_blocks(freqs: Tensor) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, float64 numpy copy of freqs[rows])`` block by block, in one reused buffer.

    Exact: entries are integers below ``2**53``. Each block must be used before the next one.
    """
    n, a = freqs.shape
    buffer = torch.empty(0, a, dtype=torch.float64)
    for rows in row_blocks(n, a):
        if buffer.shape[0] < rows.stop - rows.start:
            buffer = torch.empty(rows.stop - rows.start, a, dtype=torch.float64)
        block = buffer[: rows.stop - rows.start]
        block.copy_(freqs[rows])
        yield rows, block.numpy()


def _corrupt(exc: Exception) -> BitstreamError:
    """One-line :class:`BitstreamError` for an error constriction raised while decoding."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return BitstreamError(f"range-coded segment is corrupt ({first})")


class RangeSymbolEncoder(SymbolEncoder):
    """Appends chunks to one range-coded segment."""

    def __init__(self) -> None:
        self._encoder = _ConstrictionEncoder()
        self._family = Categorical(perfect=False)
        self._done = False

    def encode(self, symbols: Tensor, freqs: Tensor) -> None:
        if self._done:
            raise RuntimeError("encode() after finish()")
        symbols, freqs = check_chunk(symbols, freqs)
        symbols32 = symbols.to(torch.int32).numpy()
        if freqs.dtype == torch.float32:  # grid tables: constriction reads the floats as they are
            self._encoder.encode(symbols32, self._family, freqs.numpy())
            return
        for rows, probs in _float64_blocks(freqs):
            self._encoder.encode(symbols32[rows], self._family, probs)

    def finish(self) -> bytes:
        if self._done:
            raise RuntimeError("finish() called twice")
        self._done = True
        return _seal(self._encoder)


class RangeSymbolDecoder(SymbolDecoder):
    """Reads a range-coded segment back chunk by chunk.

    A truncated or corrupt segment decodes to wrong symbols (always in ``[0, A)``) or raises
    :class:`~progvc.errors.BitstreamError`; constriction is memory-safe and reads missing words
    as zeros, so it never crashes, hangs or allocates more than the segment's size.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        data += b"\0" * (-len(data) % 4)
        words = np.frombuffer(data, dtype=">u4").astype(np.uint32)
        try:
            self._decoder = _ConstrictionDecoder(words)
        except Exception as exc:  # constriction raises plain Exceptions on bad data
            raise _corrupt(exc) from None
        self._family = Categorical(perfect=False)

    def decode(self, freqs: Tensor) -> Tensor:
        _, freqs = check_chunk(None, freqs)
        try:
            if freqs.dtype == torch.float32:  # grid tables: constriction reads the floats as they are
                return torch.from_numpy(self._decoder.decode(self._family, freqs.numpy())).to(torch.int64)
            symbols = np.empty(freqs.shape[0], dtype=np.int64)
            for rows, probs in _float64_blocks(freqs):
                symbols[rows] = self._decoder.decode(self._family, probs)
        except Exception as exc:
            raise _corrupt(exc) from None
        return torch.from_numpy(symbols)


@CODERS.register("range")
class RangeCoder(EntropyCoder):
    """Range coder (constriction): 24-bit probabilities, within ~0.1 % of the ideal code length."""

    precision = 24

    def encoder(self) -> RangeSymbolEncoder:
        return RangeSymbolEncoder()

    def decoder(
        self, data: bytes | bytearray | memoryview, max_symbols: int | None = None
    ) -> RangeSymbolDecoder:
        return RangeSymbolDecoder(data)
