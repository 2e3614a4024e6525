"""Bitwise tokens by binary spherical quantization (BSQ, as in Infinity): ``d`` bits per position."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from progvc.errors import ConfigError
from progvc.tokenizers import TOKENIZERS
from progvc.tokenizers.multiscale import (
    Chooser,
    MultiScaleResidualTokenizer,
    QuantizeResult,
    is_distributed,
    resize,
)


def _binary_entropy(p: Tensor) -> Tensor:
    """Entropy in nats of Bernoulli(p), elementwise."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


@TOKENIZERS.register("msbsq")
class MultiScaleBSQTokenizer(MultiScaleResidualTokenizer):
    """Multi-scale residual binary spherical quantization: each position carries ``bits`` bits.

    Per scale ``k``, the residual ``z [B, C, h_k, w_k]`` is projected to ``d = bits`` dimensions
    (a linear map shared by the scales), L2-normalised to ``u`` and quantized to the nearest
    corner of the hypercube on the unit sphere, ``sign(u) / sqrt(d)``; the token is the ``d``
    signs as bits (``G = d``, ``A = 2``). Dequantization maps the corner back to ``C`` channels
    (a second linear map, initialised as the transpose of the first) and multiplies by a gain of
    scale ``k``: normalising removed the residual's magnitude, which shrinks from scale to scale.
    The gains are set from data on the first training step, then learned.

    Losses, averaged over scales: as a codebook loss, ``|v - sg(z)|^2`` for the dequantized
    vector ``v`` (trains the back-projection and the gains); commitments
    ``beta * (|z - sg(v)|^2 + |u - sg(corner)|^2)``; and BSQ's entropy regulariser
    ``entropy_weight * (H(bit | position) - H(bit))``, factorised over bits, which makes each
    bit confident and keeps both of its values in use (without it, bits freeze to constants and
    the fine scales stop carrying information). Straight-through gradient from ``u``.

    Args:
        bits: bits per position ``d``.
        entropy_weight: weight of the entropy regulariser (0 disables it).
        entropy_temperature: temperature of the soft bit assignment ``sigmoid(2 u sqrt(d) / T)``.
        Other arguments: see :class:`~progvc.tokenizers.multiscale.MultiScaleResidualTokenizer`.
    """

    def __init__(
        self,
        bits: int = 16,
        latent_dim: int = 32,
        scales: Sequence[int] = (1, 2, 3, 4, 6, 8, 11, 16),
        downsample: int = 16,
        width: int = 32,
        max_width: int = 128,
        num_res_blocks: int = 1,
        phi_shared: int = 4,
        phi_ratio: float = 0.5,
        beta: float = 0.25,
        entropy_weight: float = 0.1,
        entropy_temperature: float = 1.0,
    ) -> None:
        if bits < 1:
            raise ConfigError(f"bits must be >= 1, got {bits}")
        if entropy_temperature <= 0:
            raise ConfigError(f"entropy_temperature must be > 0, got {entropy_temperature}")
        super().__init__(
            latent_dim,
            bits,
            2,
            scales,
            downsample,
            width,
            max_width,
            num_res_blocks,
            phi_shared,
            phi_ratio,
            beta,
        )
        self.bits = int(bits)
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.proj_in = nn.Linear(latent_dim, bits, bias=False)
        self.proj_out = nn.Linear(bits, latent_dim, bias=False)
        # start as an orthogonal projection and its transpose, so that a corner points back along the
        # residual it came from (independent random maps would make them uncorrelated)
        nn.init.orthogonal_(self.proj_in.weight)
        with torch.no_grad():
            self.proj_out.weight.copy_(self.proj_in.weight.T)
        self.gain = nn.Parameter(torch.ones(self.spec.num_scales))
        # the gains are set from data on the first training step (see _calibrate_gains)
        self.register_buffer("gain_ready", torch.zeros((), dtype=torch.bool))

    def _corner(self, bits: Tensor) -> Tensor:
        """Bits ``[..., d]`` -> hypercube corner on the unit sphere, ``(2 b - 1) / sqrt(d)``."""
        return (bits.to(self.proj_out.weight.dtype) * 2.0 - 1.0) * (1.0 / math.sqrt(self.bits))

    def _to_latent(self, k: int, corner: Tensor) -> Tensor:
        """Corner ``[B, h_k, w_k, d]`` -> scale ``k``'s vector ``[B, C, h_k, w_k]``."""
        return (self.proj_out(corner) * self.gain[k]).permute(0, 3, 1, 2).contiguous()

    def dequantize_scale(self, k: int, tokens: Tensor) -> Tensor:
        return self._to_latent(k, self._corner(tokens))

    def _sphere(self, z: Tensor) -> Tensor:
        """Residual ``z [B, C, h_k, w_k]`` -> its projection on the unit sphere ``u [B, h_k, w_k, d]``."""
        return F.normalize(self.proj_in(z.permute(0, 2, 3, 1)), dim=-1)

    @torch.no_grad()
    def _calibrate_gains(self, f: Tensor) -> None:
        """Set each scale's gain to the least-squares scale of its dequantized corners onto its residual.

        Done once, on the first training step: a gain learned from 1 by Adam moves by about the
        learning rate per step, far too slowly to match the encoder's latent magnitude, and the
        residual of every later scale depends on it. Under ``torch.distributed`` the sums are
        reduced over ranks, so every replica sets the same gains.
        """
        size = tuple(f.shape[-2:])
        ds = self.spec.downsample
        f_rest = f
        for k, hw in enumerate(self.spec.scale_sizes(size[0] * ds, size[1] * ds)):
            z = resize(f_rest, hw, "area")
            v = self.proj_out(self._corner((self._sphere(z) >= 0).long())).permute(0, 3, 1, 2)
            sums = torch.stack([(z * v).sum(), v.square().sum()]).float()
            if is_distributed():
                dist.all_reduce(sums)
            self.gain[k] = sums[0] / sums[1].clamp_min(1e-12)
            f_rest = f_rest - self._expand(k, v * self.gain[k], size)
        self.gain_ready.fill_(True)

    def quantize(
        self,
        f: Tensor,
        update: bool = False,
        refs: Sequence[Tensor] | None = None,
        choose: Chooser | None = None,
    ) -> QuantizeResult:
        if update and not bool(self.gain_ready):
            self._calibrate_gains(f.detach())
        return super().quantize(f, update, refs, choose)

    def quantize_scale(self, k: int, z: Tensor, predicted: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        u = self._sphere(z)
        bits = (u >= 0).long()
        corner = self._corner(bits)
        v = self._to_latent(k, corner)  # gradients to proj_out and the gain only
        # as a codebook loss: the dequantized corner should match the residual; plus commitments
        loss = F.mse_loss(v, z.detach()) + self.beta * (F.mse_loss(z, v.detach()) + F.mse_loss(u, corner))
        if self.entropy_weight:
            p = torch.sigmoid(2.0 * math.sqrt(self.bits) * u / self.entropy_temperature).flatten(0, 2)
            loss = loss + self.entropy_weight * (
                _binary_entropy(p).mean() - _binary_entropy(p.mean(0)).mean()
            )
        return bits, self._to_latent(k, corner + (u - u.detach())), loss

    def quantizer_stats(self, zs: list[Tensor], tokens: list[Tensor], update: bool) -> dict[str, Tensor]:
        ones = torch.cat([t.reshape(-1, self.bits) for t in tokens]).float().mean(0)
        # 1.0 when every bit is 0 and 1 equally often, in bits
        return {"bit_entropy": (_binary_entropy(ones) / math.log(2)).mean()}
