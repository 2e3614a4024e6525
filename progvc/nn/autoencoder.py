"""Convolutional encoder (frame -> latent grid) and the matching decoder (latent grid -> frame).

Each of the ``len(widths)`` stages runs residual blocks at one resolution and then halves it
(encoder) or doubles it (decoder), so the downsampling factor is ``2 ** len(widths)``. The
defaults are sized for CPU training at 128 x 128 crops; widen them for GPU training. Both run
in the channels-last layout (oneDNN's faster path for inference on CPUs; see
docs/benchmarks.md) and return contiguous tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from progvc.nn.blocks import Downsample, ResBlock, Upsample, group_norm


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    w = tuple(int(c) for c in widths)
    if not w or min(w) < 1:
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
    return w


class ConvEncoder(nn.Module):
    """Frames ``[B, in_ch, H, W]`` (values around ``[-1, 1]``) -> latent ``[B, latent_dim, H / ds, W / ds]``.

    Args:
        latent_dim: channels ``C`` of the latent.
        widths: channels of each stage, fine to coarse; ``ds = 2 ** len(widths)``. ``H`` and
            ``W`` must be multiples of ``ds``.
        num_res_blocks: residual blocks per stage (plus one at the coarsest resolution).
        in_ch: input channels (3 for RGB).
    """

    def __init__(
        self,
        latent_dim: int,
        widths: Sequence[int] = (32, 64, 128, 128),
        num_res_blocks: int = 1,
        in_ch: int = 3,
    ) -> None:
        super().__init__()
        widths = _check_widths(widths)
        self.downsample = 2 ** len(widths)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, widths[0], 3, padding=1)]
        for i, c in enumerate(widths):
            layers += [ResBlock(c) for _ in range(num_res_blocks)]
            layers.append(Downsample(c, widths[min(i + 1, len(widths) - 1)]))
        c = widths[-1]
        layers += [ResBlock(c), group_norm(c), nn.SiLU(), nn.Conv2d(c, latent_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last)).contiguous()


class ConvDecoder(nn.Module):
    """Latent ``[B, latent_dim, h, w]`` -> frames ``[B, out_ch, h * ds, w * ds]`` (values around ``[-1, 1]``).

    Mirrors :class:`ConvEncoder` with the same ``widths`` (given fine to coarse).
    """

    def __init__(
        self,
        latent_dim: int,
        widths: Sequence[int] = (32, 64, 128, 128),
        num_res_blocks: int = 1,
        out_ch: int = 3,
    ) -> None:
        super().__init__()
        widths = _check_widths(widths)
        self.upsample = 2 ** len(widths)
        c = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, c, 3, padding=1), ResBlock(c)]
        for i in reversed(range(len(widths))):
            layers.append(Upsample(c, widths[i]))
            c = widths[i]
            layers += [ResBlock(c) for _ in range(num_res_blocks)]
        layers += [group_norm(c), nn.SiLU(), nn.Conv2d(c, out_ch, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f.contiguous(memory_format=torch.channels_last)).contiguous()
