"""The :class:`Tokenizer` interface: frames <-> multi-scale residual token maps.

Contract (every implementation):

* Frames are float tensors ``[B, 3, H, W]`` with values in ``[0, 1]``, any ``H, W >= 1``.
  The tokenizer pads to a multiple of :attr:`TokenSpec.downsample` itself and crops back.
* The latent grid of a frame is ``h x w = ceil(H / ds) x ceil(W / ds)`` with ``C`` channels.
* Tokens are a list of ``K`` int64 tensors, coarse to fine: ``tokens[k]`` has shape
  ``[B, h_k, w_k, G]`` with values in ``[0, A)``, where ``(h_k, w_k) = scale_sizes(H, W)[k]``,
  ``G = spec.groups`` symbols per position and ``A = spec.alphabet`` values per symbol
  (a codebook quantizer has ``G = 1, A = V``; a bitwise one ``G = d, A = 2``).
* Scale ``k`` quantizes the residual left by scales ``< k`` (VAR's next-scale scheme), so
  ``latents(tokens)[k]`` -- the running sum ``f_hat`` after scales ``0..k`` -- is exactly what
  the decoder has after receiving ``k + 1`` scales. Any prefix of scales decodes.
* ``encode`` / ``latents`` / ``decode`` are deterministic for fixed weights (no sampling).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from progvc.registry import Configurable


@dataclass(frozen=True)
class TokenSpec:
    """What a context model and a coder need to know about a tokenizer's tokens.

    Attributes:
        latent_dim: channels ``C`` of the latent grid.
        groups: symbols per token position ``G`` (1 for a codebook, ``d`` bits for bitwise).
        alphabet: values per symbol ``A`` (codebook size ``V``, or 2 for bits).
        scales: scale schedule ``s_1 < ... < s_K``; scale ``k`` of an ``h x w`` latent has
            ``round(h * s_k / s_K) x round(w * s_k / s_K)`` positions (at least 1 x 1), so the
            last scale is the full grid and every scale keeps the latent's aspect ratio.
        downsample: pixels per latent position along each side (8 or 16).
    """

    latent_dim: int
    groups: int
    alphabet: int
    scales: tuple[int, ...] = field(default=(1, 2, 3, 4, 6, 8, 11, 16))
    downsample: int = 16

    def __post_init__(self) -> None:
        s = tuple(int(v) for v in self.scales)
        if not s or any(b <= a for a, b in zip(s, s[1:])) or s[0] < 1:
            raise ValueError(f"scales must be strictly increasing positive integers, got {self.scales}")
        object.__setattr__(self, "scales", s)

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def bits_per_symbol_uniform(self) -> float:
        """Bits per token position under a uniform model: ``G * log2(A)``."""
        return self.groups * math.log2(self.alphabet)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent grid ``(h, w)`` of an ``H x W`` frame (after padding to the downsampling multiple)."""
        ds = self.downsample
        return -(-height // ds), -(-width // ds)

    def scale_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Token-map sizes ``[(h_k, w_k)]`` of an ``H x W`` frame, coarse to fine; the last is the latent grid."""
        h, w = self.latent_size(height, width)
        top = self.scales[-1]
        sizes = [(max(1, round(h * s / top)), max(1, round(w * s / top))) for s in self.scales[:-1]]
        return [*sizes, (h, w)]

    def context_args(self) -> dict[str, int]:
        """The shape arguments every :class:`~progvc.context_models.ContextModel` takes from the
        tokenizer: ``latent_dim``, ``groups``, ``alphabet``, ``num_scales``."""
        return {
            "latent_dim": self.latent_dim,
            "groups": self.groups,
            "alphabet": self.alphabet,
            "num_scales": self.num_scales,
        }

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Token positions of one frame summed over all scales (each carries ``G`` symbols)."""
        return sum(a * b for a, b in self.scale_sizes(height, width))


@dataclass
class TokenizerOutput:
    """What :meth:`Tokenizer.forward` returns for training.

    Attributes:
        recon: reconstruction ``[B, 3, H, W]`` in ``[0, 1]`` from the first ``prefix`` scales.
        tokens: all ``K`` token maps (see the module docstring).
        loss: quantizer loss (commitment / codebook / entropy terms), a scalar.
        prefix: number of scales the reconstruction used.
        stats: scalars worth logging (codebook usage, perplexity, ...), detached.
        rate_bits: the quantizer's differentiable estimate of the bits of all scales (summed over
            the batch), for rate-distortion training; ``None`` when the tokenizer has no rate model.
        f_hats: the frame's running latents after scales ``0..k``, ``[B, C, h, w]`` each (the
            context model's inputs), or ``None``.
        values: per scale, the continuous value ``[B, h_k, w_k, G]`` in token units whose rounding
            (with the encoder's dead zone, if any) gives the token, differentiable (scalar
            tokenizers), so that a context model's rate can reach the encoder
            (:func:`~progvc.context_models.interpolated_bits`); ``None`` when tokens are not
            rounded numbers (codebooks).
    """

    recon: Tensor
    tokens: list[Tensor]
    loss: Tensor
    prefix: int
    stats: dict[str, Tensor] = field(default_factory=dict)
    rate_bits: Tensor | None = None
    f_hats: list[Tensor] | None = None
    values: list[Tensor] | None = None


class Tokenizer(Configurable, nn.Module, ABC):
    """Frames ``[B, 3, H, W]`` in ``[0, 1]`` <-> ``K`` multi-scale residual token maps."""

    registry_name: str = ""
    #: init args that change only the encoder's choices (e.g. a dead zone), not what tokens mean:
    #: a decoder needs no agreement on them, so they are left out of the model's fingerprint
    encoder_only_args: tuple[str, ...] = ()
    #: init args added after models were shipped, with the value that builds the network those
    #: models have: at that value they are left out of the fingerprint, so older models (and
    #: their streams) keep theirs
    late_args: dict[str, Any] = {}
    #: the token that adds nothing to the latent ("no change"), if the quantizer has one; a codec
    #: with prediction loops can then skip a scale whose tokens are all this one (:mod:`progvc.codec.skip`)
    zero_token: int | None = None

    @property
    @abstractmethod
    def spec(self) -> TokenSpec:
        """Shapes and alphabet of the tokens (see :class:`TokenSpec`)."""

    @abstractmethod
    def encode(self, frames: Tensor, refs: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Quantize ``frames [B, 3, H, W]`` to ``K`` token maps ``[B, h_k, w_k, G]`` (int64).

        ``refs``: one reference latent ``[B, C, h, w]`` per level for temporal prediction (scale
        ``k`` then codes the frame minus ``refs[k]``, see :mod:`progvc.codec.prediction`);
        ``None`` codes each frame alone. A tokenizer that cannot predict raises ``ConfigError``.
        """

    @abstractmethod
    def latents(self, tokens: list[Tensor], size: tuple[int, int]) -> list[Tensor]:
        """Running sums ``f_hat`` after each given scale: entry ``k`` is ``[B, C, h, w]`` after scales ``0..k``.

        ``tokens`` may be any prefix of the ``K`` scales; ``size`` is the frame's ``(H, W)``.
        """

    @abstractmethod
    def decode_latent(self, f_hat: Tensor, size: tuple[int, int]) -> Tensor:
        """Pixels ``[B, 3, H, W]`` in ``[0, 1]`` from a latent ``[B, C, h, w]``, cropped to ``size``."""

    @abstractmethod
    def forward(self, frames: Tensor, prefix: int | None = None) -> TokenizerOutput:
        """Training pass: quantize, reconstruct from the first ``prefix`` scales (all when ``None``)."""

    def scale_contribution(self, tokens: list[Tensor], size: tuple[int, int]) -> Tensor:
        """What the last of ``tokens`` (scales ``0..k``) adds to the running sum: ``[B, C, h, w]``.

        The default takes the difference of :meth:`latents` (``O(k)``); multi-scale residual
        tokenizers compute it directly, since scale ``k``'s contribution depends on its tokens only.
        """
        sums = self.latents(tokens, size)
        return sums[-1] if len(sums) == 1 else sums[-1] - sums[-2]

    def decode(self, tokens: list[Tensor], size: tuple[int, int], batch_size: int | None = None) -> Tensor:
        """Pixels ``[B, 3, H, W]`` from any prefix of scales (an empty prefix decodes the zero latent)."""
        if tokens:
            f_hat = self.latents(tokens, size)[-1]
        else:
            h, w = self.spec.latent_size(*size)
            param = next(self.parameters())
            f_hat = param.new_zeros(batch_size or 1, self.spec.latent_dim, h, w)
        return self.decode_latent(f_hat, size)

    def scale_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Shortcut for :meth:`TokenSpec.scale_sizes`."""
        return self.spec.scale_sizes(height, width)
