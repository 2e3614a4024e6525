"""Rate and quality metrics as torchmetrics ``Metric``s (states reduce across DDP ranks).

Frames are float ``[N, 3, H, W]`` in ``[0, 1]``; FVD takes clips ``[N, T, 3, H, W]``.
LPIPS, DISTS and FVD read pretrained weights from disk only (see :mod:`progvc.metrics.weights`).
"""

from progvc.metrics.base import FrameMetric, MetricInputError
from progvc.metrics.fidelity import MSSSIM, PSNR, BitsPerPixel, HaarPSI
from progvc.metrics.fvd import FVD, I3DFeatures, frechet_distance
from progvc.metrics.perceptual import DISTS, LPIPS, build_dists, build_lpips
from progvc.metrics.weights import hub_checkpoints_dir, locate_weights

__all__ = [
    "DISTS",
    "FVD",
    "LPIPS",
    "MSSSIM",
    "PSNR",
    "BitsPerPixel",
    "FrameMetric",
    "HaarPSI",
    "I3DFeatures",
    "MetricInputError",
    "build_dists",
    "build_lpips",
    "frechet_distance",
    "hub_checkpoints_dir",
    "locate_weights",
]
