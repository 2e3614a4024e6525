"""Scalar tokens: each latent channel of each position is an integer times a learned step.

The scalar quantizer is the one that says "nothing changed" for free: its zero is a value, so a
residual that is already below half a step is coded as zero tokens, which add exactly nothing
to the latent (phi has no bias here). That is what temporal prediction needs
(:mod:`progvc.codec.prediction`): a static region of a P-frame costs only the bits of
predictable zeros. It also trains with the rate directly: CompressAI's
:class:`~compressai.entropy_models.EntropyBottleneck` (one per scale, a learned factorized
density over the scaled residual, with uniform noise in training) estimates the bits of every
scale, and the training loss adds ``lambda x rate`` (Balle et al.'s rate-distortion training).

**Dead zone.** The encoder may round a residual to zero more often than to-nearest does: with
dead zone ``d``, ``|y| < 0.5 + d`` becomes zero (and ``|y|`` in ``[n + d - 0.5, n + d + 0.5)``
becomes ``n``). A token just above half a step costs many bits under an entropy model where
zero dominates, and buys little distortion; x264's ``--deadzone-inter/intra`` make the same trade.
It is the encoder's choice only (decoding is unchanged), with one value for frames coded alone
and one for frames predicted from a reference. ``python -m progvc.bench prediction --deadzone``
measures it (docs/codec.md).

**RDOQ.** Better still, the codec can choose each token with the context model's own tables:
:meth:`MultiScaleScalarTokenizer.rd_quantize_scale` picks, per symbol, among the nearest value,
one step toward zero and zero, the one that minimises ``(y - q)**2 + rdoq * bits(q)``. The
symbols of a scale are coded independently given the coarser scales, so the choice is exact
per scale; it replaces the dead zone where it is on (``rdoq > 0``; docs/codec.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from progvc.errors import ConfigError
from progvc.tokenizers import TOKENIZERS
from progvc.tokenizers.multiscale import MultiScaleResidualTokenizer


@TOKENIZERS.register("mssq")
class MultiScaleScalarTokenizer(MultiScaleResidualTokenizer):
    """Multi-scale residual scalar quantization: ``C`` integers per position, a learned step per scale and channel.

    Scale ``k`` maps its residual ``z [B, C, h_k, w_k]`` to ``round(z / step_k)``, clamped to
    ``[-(A // 2), A // 2]``; the tokens are those integers plus ``A // 2`` (``G = C``, ``A = levels``),
    so token ``A // 2`` is zero. Straight-through rounding; the steps ``step_k [C]`` are learned
    (their gradient is the rounding error, as in LSQ) against the rate estimate of
    :meth:`scale_rate_bits`.

    Args:
        latent_dim: latent channels ``C`` (= symbols per position).
        levels: values per symbol ``A`` (odd, so that zero is the middle value).
        init_step: initial quantization step of every scale and channel.
        rate_model: estimate each scale's bits with an ``EntropyBottleneck`` (for rate-distortion training).
        deadzone: the encoder's dead zone ``(d_intra, d_predicted)``, each in ``[0, 1)``, in
            quantization steps: for frames coded alone and for residuals against a reference.
        encoder_width: a wider encoder than decoder (see the base class).
        decoder_width: a wider decoder (see the base class); it changes the fingerprint, not the tokens.
        rdoq: the codec's rate weight for rate-distortion optimised quantization with the context
            model's tables (:meth:`rd_quantize_scale`), in squared steps per bit; 0 keeps the
            dead zone. Like the dead zone, an encoder-only choice.
        Other arguments: see :class:`~progvc.tokenizers.multiscale.MultiScaleResidualTokenizer`;
        phi has no bias (zero tokens must add nothing).
    """

    #: parameters indexed by latent channel, grown channel by channel (:func:`progvc.nn.grow.per_channel_keys`)
    per_channel_parameters = ("log_step",)

    encoder_only_args = ("deadzone", "rdoq", "encoder_width")  # (the encoder's weights are hashed anyway)
    late_args = {"decoder_width": None}

    def __init__(
        self,
        latent_dim: int = 16,
        levels: int = 33,
        scales: Sequence[int] = (1, 2, 3, 4, 6, 8, 11, 16),
        downsample: int = 8,
        width: int = 32,
        max_width: int = 128,
        num_res_blocks: int = 1,
        phi_shared: int = 4,
        phi_ratio: float = 0.5,
        init_step: float = 0.25,
        rate_model: bool = True,
        deadzone: Sequence[float] = (0.0, 0.0),
        encoder_width: int | None = None,
        rdoq: float = 0.0,
        decoder_width: int | None = None,
    ) -> None:
        if levels < 3 or levels % 2 == 0:
            raise ConfigError(f"levels must be odd and >= 3 (zero is the middle value), got {levels}")
        if not init_step > 0:
            raise ConfigError(f"init_step must be > 0, got {init_step}")
        if len(deadzone) != 2:
            raise ConfigError(f"deadzone must be two values (intra, predicted), got {deadzone}")
        super().__init__(
            latent_dim,
            latent_dim,
            levels,
            scales,
            downsample,
            width,
            max_width,
            num_res_blocks,
            phi_shared,
            phi_ratio,
            beta=0.0,
            phi_bias=False,
            encoder_width=encoder_width,
            decoder_width=decoder_width,
        )
        self.half = levels // 2
        self.zero_token = self.half
        self.set_deadzone(*deadzone)
        self.set_rdoq(rdoq)
        num_scales = self.spec.num_scales
        self.log_step = nn.Parameter(torch.full((num_scales, latent_dim), math.log(init_step)))
        self.rate_models = (
            nn.ModuleList(EntropyBottleneck(latent_dim) for _ in range(num_scales)) if rate_model else None
        )

    def set_deadzone(self, intra: float, predicted: float) -> None:
        """Change the encoder's dead zone (see the module docstring); recorded in the config."""
        deadzone = (float(intra), float(predicted))
        if not all(0.0 <= d < 1.0 for d in deadzone):
            raise ConfigError(f"deadzone must be two values in [0, 1) (intra, predicted), got {deadzone}")
        self.deadzone = deadzone
        self.init_args["deadzone"] = list(deadzone)

    def set_rdoq(self, rdoq: float) -> None:
        """Change the codec's default RDOQ rate weight (:meth:`rd_quantize_scale`; 0: off); recorded in the config."""
        rdoq = float(rdoq)
        if not 0.0 <= rdoq <= 100.0:
            raise ConfigError(f"rdoq must lie in [0, 100] (squared steps per bit; 0: off), got {rdoq}")
        self.rdoq = rdoq
        self.init_args["rdoq"] = rdoq

    def step(self, k: int) -> Tensor:
        """Quantization steps of scale ``k``, ``[1, C, 1, 1]``."""
        return self.log_step[k].exp().view(1, -1, 1, 1)

    def dequantize_scale(self, k: int, tokens: Tensor) -> Tensor:
        values = (tokens - self.half).to(self.log_step.dtype).permute(0, 3, 1, 2)
        return values * self.step(k)

    def quantize_scale(self, k: int, z: Tensor, predicted: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        y = z / self.step(k)
        dz = self.deadzone[int(predicted)]
        yd = y.detach()
        q = yd.round() if dz == 0.0 else yd.sign() * (yd.abs() + (0.5 - dz)).floor().clamp(min=0.0)
        q = q.clamp(-self.half, self.half)
        idx = (q.to(torch.long) + self.half).permute(0, 2, 3, 1).contiguous()
        vec = (y + (q - y).detach()) * self.step(k)  # straight through; d vec / d step = rounding error
        # the density's quantiles (CompressAI's auxiliary parameters, used only by its own coder, not
        # here) join the graph with weight 0, so that DDP finds no unused parameter; fitting them with
        # CompressAI's aux loss would put its large gradients under the tokenizer's gradient clipping
        loss = z.new_zeros(())
        if self.rate_models is not None:
            loss = loss + 0.0 * self.rate_models[k].quantiles.sum()
        return idx, vec, loss

    def rd_quantize_scale(self, k: int, z: Tensor, bits: Tensor, lam: float) -> Tensor:
        """Per symbol, the value among nearest, one step toward zero and zero that minimises
        ``(y - q)**2 + lam * bits(q)`` (``y = z / step``, distortion in squared steps): rate-distortion
        optimised quantization with the context model's own tables, exact per scale because the
        symbols of one scale are coded independently given the coarser ones. Replaces the dead zone."""
        y = (z / self.step(k)).permute(0, 2, 3, 1)  # [B, h, w, C]
        nearest = y.round().clamp(-self.half, self.half)
        candidates = torch.stack([torch.zeros_like(nearest), nearest - nearest.sign(), nearest], -1)
        idx = candidates.to(torch.long) + self.half
        cost = (y.unsqueeze(-1) - candidates).square() + lam * bits.gather(-1, idx)
        return idx.gather(-1, cost.argmin(-1, keepdim=True)).squeeze(-1)  # ties: the value nearer zero

    def scale_values(self, k: int, z: Tensor) -> Tensor:
        """``z / step`` in token units (``A // 2`` is zero), clamped to the tokens' range, ``[B, h_k, w_k, C]``."""
        return (z / self.step(k) + self.half).clamp(0, 2 * self.half).permute(0, 2, 3, 1)

    def scale_rate_bits(self, k: int, z: Tensor) -> Tensor | None:
        if self.rate_models is None:
            return None
        model = self.rate_models[k]
        # the density is over the scaled residual; uniform noise where a gradient is wanted (training,
        # or an encoder refining its latent: progvc.codec.refine), rounding otherwise (CompressAI's convention)
        _, likelihoods = model(z / self.step(k), training=self.training or torch.is_grad_enabled())
        return -torch.log2(likelihoods).sum()

    def quantizer_stats(self, zs: list[Tensor], tokens: list[Tensor], update: bool) -> dict[str, Tensor]:
        nonzero = torch.stack([(t != self.half).float().mean() for t in tokens])
        return {
            "nonzero": nonzero.mean(),
            "nonzero_last": nonzero[-1],
            "step_mean": self.log_step.detach().exp().mean(),
        }
