"""The :class:`EntropyCoder` interface: (symbols, frequency tables) -> bytes and back.

Contract (every implementation):

* A coded segment is written by a :class:`SymbolEncoder` in chunks (``encode`` may be called
  many times) and read back by a :class:`SymbolDecoder` in the same chunks, in the same order:
  the decoder of a chunk needs only the tables of that chunk, which lets the context model
  compute the next chunk's tables from the symbols already decoded.
* Tables are integer frequencies ``freqs [N, A]`` (int64, every entry ``>= 1``), one row per
  symbol; they come from :func:`logits_to_freqs`, which is deterministic, so the encoder and
  the decoder see bit-identical tables. Coders may renormalise to their own precision.
* Sizes are in **bytes** for streams and **bits** for code lengths.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from progvc.registry import Configurable


class SymbolEncoder(ABC):
    """Accumulates chunks of symbols into one coded segment."""

    @abstractmethod
    def encode(self, symbols: Tensor, freqs: Tensor) -> None:
        """Append ``symbols [N]`` (int64 in ``[0, A)``) coded with ``freqs [N, A]``."""

    @abstractmethod
    def finish(self) -> bytes:
        """Flush and return the segment's bytes; the encoder is unusable afterwards."""


class SymbolDecoder(ABC):
    """Reads a coded segment back in the chunks it was written in."""

    @abstractmethod
    def decode(self, freqs: Tensor) -> Tensor:
        """The next ``N`` symbols (int64 ``[N]``) given their tables ``freqs [N, A]``."""


class EntropyCoder(Configurable, ABC):
    """Lossless coder of symbols under per-symbol frequency tables."""

    registry_name: str = ""
    #: bits of integer precision of the coder's probabilities.
    precision: int = 0

    @abstractmethod
    def encoder(self) -> SymbolEncoder:
        """A fresh encoder for one segment."""

    @abstractmethod
    def decoder(self, data: bytes, max_symbols: int | None = None) -> SymbolDecoder:
        """A decoder over one segment's bytes.

        ``max_symbols``: how many symbols the caller will ask for at most (the codec knows it from
        the frame size); a coder may use it to bound its buffers against a hostile segment.
        """

    def encode(self, symbols: Tensor, freqs: Tensor) -> bytes:
        """One-shot: code ``symbols [N]`` under ``freqs [N, A]`` into a segment."""
        enc = self.encoder()
        enc.encode(symbols, freqs)
        return enc.finish()

    def decode(self, data: bytes, freqs: Tensor) -> Tensor:
        """One-shot inverse of :meth:`encode`."""
        return self.decoder(data).decode(freqs)
