"""Decoder-side synthesis: tokens for the scales that were not sent, drawn from the context model.

Sampling goes through the same integer tables as entropy coding
(:func:`progvc.coders.tables.logits_to_freqs`): the logits are divided by the temperature,
turned into integer frequencies, cut to the ``top_k`` largest, and a symbol is drawn by
inverse-CDF lookup of one float64 uniform draw per symbol from a seeded ``torch.Generator``.
Everything after the logits is integer arithmetic, so the encoder can replay exactly what a
decoder with the same seed will synthesize, and float noise below the table resolution (thread
counts) does not change the draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from progvc.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used, so that the bitstream layer stays light
    import torch
    from torch import Tensor

#: synthesis modes, in the order of their code in the bitstream header.
SYNTHESIS_MODES = ("none", "argmax", "sample")
#: the header stores the temperature in units of 1/1000.
TEMPERATURE_UNIT = 1000


@dataclass(frozen=True)
class SynthesisSettings:
    """How a decoder fills the scales that were not sent (stored in the stream's header).

    Attributes:
        mode: ``"sample"`` (draw from the context model), ``"argmax"`` (most likely token) or
            ``"none"`` (decode the received scales only, the missing ones stay zero).
        seed: seed of the generator (0 .. 2**32 - 1); GOP ``g`` uses its own stream derived from it.
        temperature: divides the logits before sampling (0.001 .. 65.535, kept to 1/1000).
        top_k: sample among the ``top_k`` most likely values only (0 = all).
    """

    mode: str = "sample"
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SYNTHESIS_MODES:
            raise ConfigError(
                f"synthesis mode must be one of {', '.join(SYNTHESIS_MODES)}, got {self.mode!r}"
            )
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        milli = round(float(self.temperature) * TEMPERATURE_UNIT)
        if not 1 <= milli < 2**16:
            raise ConfigError(f"temperature must lie in [0.001, 65.535], got {self.temperature}")
        object.__setattr__(self, "temperature", milli / TEMPERATURE_UNIT)
        if not (isinstance(self.top_k, int) and 0 <= self.top_k < 2**24):
            raise ConfigError(f"top_k must be an integer in [0, 2**24), got {self.top_k!r}")


def gop_generator(seed: int, gop_index: int) -> torch.Generator:
    """The generator of GOP ``gop_index``: independent of the GOPs decoded before it."""
    import torch

    return torch.Generator(device="cpu").manual_seed(seed * 2**31 + gop_index)


def pick_tokens(logits: Tensor, settings: SynthesisSettings, generator: torch.Generator) -> Tensor:
    """Synthesize one symbol per row of ``logits [N, A]`` (float64, CPU): int64 ``[N]`` in ``[0, A)``."""
    import torch

    from progvc.coders.tables import logits_to_freqs

    if settings.mode == "argmax":
        return logits_to_freqs(logits).argmax(dim=-1)  # first of equal maxima
    freqs = logits_to_freqs(logits / settings.temperature)
    if 0 < settings.top_k < freqs.shape[-1]:
        kth = freqs.topk(settings.top_k, dim=-1).values[:, -1:]
        freqs = torch.where(freqs >= kth, freqs, torch.zeros_like(freqs))
    cdf = freqs.cumsum(dim=-1)
    u = torch.rand(freqs.shape[0], generator=generator, dtype=torch.float64)
    target = (u * cdf[:, -1].to(torch.float64)).floor().to(torch.int64).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=freqs.shape[-1] - 1)
