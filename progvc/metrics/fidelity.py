"""Rate and hand-crafted quality metrics: bits per pixel, PSNR, MS-SSIM, HaarPSI (no weights needed)."""

from __future__ import annotations

import piq
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from progvc.metrics.base import FrameMetric, MetricInputError


class BitsPerPixel(Metric):
    """Rate in bits per pixel: all bits seen divided by all pixels seen (frames x height x width).

    ``update(bits, pixels)`` adds a stream's size in **bits** (not bytes) and its pixel count.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    bits: Tensor
    pixels: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("bits", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, bits: float | Tensor, pixels: int | Tensor) -> None:
        """Add ``bits`` (a size in bits, >= 0) coding ``pixels`` pixels (> 0)."""
        bits_t = torch.as_tensor(bits, dtype=torch.float64, device=self.bits.device).sum()
        pixels_t = torch.as_tensor(pixels, dtype=torch.float64, device=self.pixels.device).sum()
        if bits_t < 0 or pixels_t <= 0:
            raise MetricInputError(
                f"BitsPerPixel: need bits >= 0 and pixels > 0, got {float(bits_t)}, {float(pixels_t)}"
            )
        self.bits += bits_t
        self.pixels += pixels_t

    def compute(self) -> Tensor:
        """Bits per pixel (float64 scalar); NaN before any update."""
        return self.bits / self.pixels


class PSNR(FrameMetric):
    """Peak signal-to-noise ratio in dB of RGB frames in ``[0, 1]``, computed per frame, then averaged.

    Identical frames have an infinite PSNR; each frame's value is capped at ``max_db`` so that
    the average stays finite.

    Args:
        max_db: cap of the per-frame PSNR.
    """

    higher_is_better = True

    def __init__(self, max_db: float = 100.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_db = max_db

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        mse = (preds.double() - target.double()).square().mean(dim=(1, 2, 3))
        return (-10.0 * torch.log10(mse)).clamp(max=self.max_db)


def _gaussian_window(size: int, sigma: float, like: Tensor) -> Tensor:
    """Normalised 1-D Gaussian ``[size]`` with the dtype and device of ``like``."""
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    window = torch.exp(-coords.square() / (2 * sigma**2))
    return window / window.sum()


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """'Valid' separable Gaussian filtering of every channel of ``x [N, C, H, W]``."""
    c, k = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ms_ssim(
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    kernel_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """MS-SSIM ``[N]`` of frames ``[N, C, H, W]`` in ``[0, 1]`` with one scale per entry of ``weights``.

    The same numbers as ``piq.multi_scale_ssim`` (Gaussian window, 'valid' filtering, 2 x 2 average
    pooling after replicate-padding odd sizes, negative terms clipped to 0, channels averaged), but
    with a separable window, which is faster on a CPU, where a grouped 11 x 11 convolution is slow.
    """
    c1, c2 = k1**2, k2**2
    window = _gaussian_window(kernel_size, sigma, x)
    weights = weights / weights.sum()
    terms = []
    for level in range(weights.numel()):
        if level:
            pad = max(x.shape[-2] % 2, x.shape[-1] % 2)
            x, y = (F.avg_pool2d(F.pad(t, [pad, 0, pad, 0], mode="replicate"), 2) for t in (x, y))
        mu_x, mu_y, e_xx, e_yy, e_xy = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), window).chunk(
            5, dim=1
        )
        mu_xy = mu_x * mu_y
        cs = (2 * (e_xy - mu_xy) + c2) / (e_xx - mu_x.square() + e_yy - mu_y.square() + c2)
        if level < weights.numel() - 1:
            terms.append(cs.mean(dim=(-1, -2)))
        else:
            terms.append(((2 * mu_xy + c1) / (mu_x.square() + mu_y.square() + c1) * cs).mean(dim=(-1, -2)))
    stacked = torch.stack(terms).relu()  # [levels, N, C]
    return (stacked ** weights.view(-1, 1, 1)).prod(dim=0).mean(dim=1)


class MSSSIM(FrameMetric):
    """Multi-scale SSIM (Wang et al. 2003) of RGB frames, per frame (channels averaged), then averaged.

    MS-SSIM with 5 scales and an 11-tap window needs frames of at least 161 x 161 pixels. Smaller
    frames use the largest number of scales that fits, ``(kernel_size - 1) * 2**(scales - 1) + 1 <=
    min(H, W)``, with the first weights of the standard five renormalised (one scale is plain SSIM);
    :attr:`scales_used` tells how many were used. Frames smaller than the window are an error.

    Args:
        kernel_size: side of the Gaussian window (odd).
        max_scales: at most this many scales (1..5).
    """

    higher_is_better = True
    #: scale weights of Wang et al. 2003, coarse scales last.
    SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

    def __init__(self, kernel_size: int = 11, max_scales: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        if kernel_size % 2 != 1 or not 1 <= max_scales <= len(self.SCALE_WEIGHTS):
            raise MetricInputError(
                f"MSSSIM: kernel_size must be odd and max_scales in 1..5, got {kernel_size}, {max_scales}"
            )
        self.kernel_size = kernel_size
        self.max_scales = max_scales
        self.min_size = kernel_size
        self.scales_used: int | None = None

    def scales_for(self, height: int, width: int) -> int:
        """Number of scales used for ``height x width`` frames (0 when even one does not fit)."""
        side = min(height, width)
        fits = [s for s in range(1, self.max_scales + 1) if (self.kernel_size - 1) * 2 ** (s - 1) + 1 <= side]
        return max(fits, default=0)

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        scales = self.scales_for(*preds.shape[-2:])
        self.scales_used = scales
        weights = torch.tensor(self.SCALE_WEIGHTS[:scales], dtype=preds.dtype, device=preds.device)
        return ms_ssim(preds, target, weights, self.kernel_size)


class HaarPSI(FrameMetric):
    """Haar wavelet-based perceptual similarity (Reisenhofer et al. 2018, via ``piq``), per frame, averaged.

    In ``[0, 1]``, 1 for identical frames; needs frames of at least 16 x 16 pixels.
    """

    higher_is_better = True
    min_size = 16

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        # float32 rounding can give 1 + 1e-6 on identical frames; the index is at most 1 by definition
        return piq.haarpsi(preds, target, data_range=1.0, reduction="none").clamp(max=1.0)
