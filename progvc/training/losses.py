"""Losses of the tokenizer stage: reconstruction, perceptual (LPIPS) and adversarial (PatchGAN, hinge).

The rate loss of the context stage is :func:`progvc.context_models.cross_entropy_bits` divided by
the number of pixels (bits per pixel); it lives in :mod:`progvc.training.module`.
"""

from __future__ import annotations

import logging

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

log = logging.getLogger(__name__)


def reconstruction_losses(recon: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Mean L1 and L2 (MSE) between ``recon`` and ``target`` ``[B, 3, H, W]`` in ``[0, 1]``."""
    return {"l1": F.l1_loss(recon, target), "l2": F.mse_loss(recon, target)}


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017): one realism logit per overlapping patch.

    Strided 4x4 convolutions with GroupNorm (no BatchNorm, so DDP needs no synchronisation);
    the receptive field of a logit is 70x70 pixels for ``layers = 3``.

    Args:
        channels: width of the first layer (doubled per layer, capped at 8x).
        layers: number of stride-2 layers.
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(width, out, 4, stride, 1), nn.GroupNorm(min(32, out), out), nn.LeakyReLU(0.2)]
            width = out
        mods.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, 1, h, w]`` for images ``[B, 3, H, W]`` in ``[0, 1]`` (mapped to ``[-1, 1]`` inside)."""
        return self.net(x * 2 - 1)


def adversarial_losses(disc: nn.Module, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """Hinge losses of one step in which the generator and the discriminator are updated together.

    ``g_adv = -mean(D(fake))`` reaches the generator only (it is computed with detached
    discriminator weights); ``d_hinge = mean(relu(1 - D(real))) + mean(relu(1 + D(fake.detach())))``
    reaches the discriminator only. Their sum can therefore go through one ``backward`` and one
    optimizer whose parameter groups keep the discriminator's own learning rate.
    """
    frozen = {name: p.detach() for name, p in disc.named_parameters()}
    g_adv = -functional_call(disc, frozen, (fake,)).mean()
    logits_real = disc(real.detach())
    logits_fake = disc(fake.detach())
    d_hinge = F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
    return {
        "g_adv": g_adv,
        "d_hinge": d_hinge,
        "d_real": logits_real.detach().mean(),
        "d_fake": logits_fake.detach().mean(),
    }


def perceptual_model(weights: str | None, net: str = "alex") -> nn.Module | None:
    """Frozen LPIPS, ``(x, y) [B, 3, H, W]`` in ``[0, 1]`` -> ``[B]``, or ``None`` with a logged warning.

    Built by :func:`progvc.metrics.build_lpips`, which reads the ImageNet trunk from ``weights``
    (a folder or the torchvision file) or from the torch hub cache and never downloads it.
    """
    from progvc.errors import WeightsNotFoundError
    from progvc.metrics import build_lpips

    try:
        return build_lpips(net, weights)
    except WeightsNotFoundError as exc:
        log.warning("perceptual loss disabled: %s", exc)
        return None


def lpips_loss(model: nn.Module, recon: Tensor, target: Tensor) -> Tensor:
    """Mean LPIPS distance between ``[B, 3, H, W]`` images in ``[0, 1]``."""
    return model(recon, target).mean()
