"""VAR's "phi": a partial residual 3x3 convolution that refines each upsampled scale.

After scale ``k`` is upsampled to the full latent grid, ``phi_k(x) = x * (1 - r) + conv(x) * r``
smooths the bicubic upsampling. A few convolutions are shared by all ``K`` scales: scale ``k``
uses the one whose position (``ticks``) is nearest to ``k / (K - 1)``, as in VAR.
"""

from __future__ import annotations

from torch import Tensor, nn


class Phi(nn.Conv2d):
    """``x * (1 - ratio) + conv3x3(x) * ratio`` on ``[B, C, h, w]``; ``ratio = 0`` is the identity.

    ``bias=False`` makes phi linear, so a zero contribution stays zero (a scalar quantizer's
    "nothing changed" must cost nothing and add nothing).
    """

    def __init__(self, channels: int, ratio: float = 0.5, bias: bool = True) -> None:
        super().__init__(channels, channels, 3, padding=1, bias=bias)
        self.ratio = float(ratio)

    def forward(self, x: Tensor) -> Tensor:
        if self.ratio == 0.0:
            return x
        return x * (1.0 - self.ratio) + super().forward(x) * self.ratio


class SharedPhi(nn.Module):
    """``num_shared`` :class:`Phi` convolutions shared by ``num_scales`` scales.

    Args:
        channels: latent channels ``C``.
        num_scales: ``K``.
        num_shared: number of distinct convolutions (at most ``K``; VAR uses 4).
        ratio: residual ratio ``r`` (VAR uses 0.5).
        bias: whether the convolutions have a bias (see :class:`Phi`).
    """

    def __init__(
        self, channels: int, num_scales: int, num_shared: int = 4, ratio: float = 0.5, bias: bool = True
    ) -> None:
        super().__init__()
        n = max(1, min(num_shared, num_scales))
        self.phis = nn.ModuleList(Phi(channels, ratio, bias) for _ in range(n))
        # conv j sits at 1/(3n) + j * (1 - 2/(3n)) / (n - 1) in [0, 1]; scale k at k / (K - 1)
        ticks = [0.5] if n == 1 else [1 / (3 * n) + j * (1 - 2 / (3 * n)) / (n - 1) for j in range(n)]
        pos = [k / max(num_scales - 1, 1) for k in range(num_scales)]
        self.index = tuple(min(range(n), key=lambda j, p=p: abs(ticks[j] - p)) for p in pos)

    def forward(self, x: Tensor, k: int) -> Tensor:
        """Refine scale ``k``'s upsampled contribution ``x [B, C, h, w]``."""
        return self.phis[self.index[k]](x)
