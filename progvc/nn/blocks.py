"""Convolutional building blocks: residual blocks with GroupNorm + SiLU, stride-2 resampling."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F


def group_norm(channels: int, max_groups: int = 32, min_group_size: int = 4) -> nn.GroupNorm:
    """GroupNorm with the most groups that divide ``channels``, at most ``max_groups``, each of at least
    ``min_group_size`` channels when possible (one-channel groups would be instance normalisation,
    which wipes out every channel's mean and contrast)."""
    groups = max(1, math.gcd(channels, min(max_groups, max(channels // min_group_size, 1))))
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(norm(conv(silu(norm(x))))))``, ``[B, c_in, H, W] -> [B, c_out, H, W]``.

    A 1x1 convolution matches the skip path when ``c_in != c_out``.
    """

    def __init__(self, c_in: int, c_out: int | None = None) -> None:
        super().__init__()
        c_out = c_out or c_in
        self.body = nn.Sequential(
            group_norm(c_in),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            group_norm(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Downsample(nn.Sequential):
    """Halve the resolution with a stride-2 3x3 convolution: ``[B, c_in, H, W] -> [B, c_out, H/2, W/2]`` (``H, W`` even)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1))


class Upsample(nn.Module):
    """Double the resolution (nearest neighbour, then a 3x3 convolution): ``[B, c_in, H, W] -> [B, c_out, 2H, 2W]``.

    Nearest + conv avoids the checkerboard artefacts of a transposed convolution.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
