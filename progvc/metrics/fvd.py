"""Fréchet video distance (Unterthiner et al. 2018) with the I3D TorchScript of StyleGAN-V.

Features of the reference clips and of the decoded clips are summarised by their mean and
covariance (running sums in float64, which reduce across DDP ranks); the distance between the two
Gaussians is computed in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from progvc.metrics.base import MetricInputError
from progvc.metrics.weights import locate_weights

I3D_FILE = "i3d_torchscript.pt"


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative rounding noise clipped)."""
    eigvals, eigvecs = torch.linalg.eigh(matrix)
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, where the last trace
    is computed as ``tr((s1^(1/2) sigma2 s1^(1/2))^(1/2))``: the same eigenvalues, but of a symmetric
    matrix, so no complex arithmetic and no ill-conditioned general square root.

    Args:
        mu1: mean ``[D]`` of the first distribution.
        sigma1: covariance ``[D, D]`` of the first distribution.
        mu2: mean ``[D]`` of the second distribution.
        sigma2: covariance ``[D, D]`` of the second distribution.
    """
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * tr_covmean


class I3DFeatures(nn.Module):
    """Kinetics-400 I3D features ``[N, 400]`` of clips ``[N, T, 3, H, W]`` in ``[0, 1]``.

    Reads ``i3d_torchscript.pt`` (the TorchScript published with StyleGAN-V, the common FVD
    reference) and calls it as StyleGAN-V does: pixels in ``[0, 255]``, ``rescale=True,
    resize=True, return_features=True`` (the model rescales to ``[-1, 1]`` and resizes to 224 x 224
    itself). A TorchScript archive cannot be read by ``torch.load``; ``torch.jit.load`` runs no
    Python code from it.

    Args:
        weights: the file, or a folder holding it; default: the torch hub cache.
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        path = locate_weights(I3D_FILE, weights)
        with warnings.catch_warnings():  # TorchScript is deprecated in recent torch; the file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.detector = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, clips: Tensor) -> Tensor:
        videos = clips.permute(0, 2, 1, 3, 4).float() * 255.0  # [N, 3, T, H, W]
        return self.detector(videos, rescale=True, resize=True, return_features=True)


class FVD(Metric):
    """Fréchet video distance between decoded clips and reference clips (lower is better).

    ``update(preds, target)`` takes clips ``[N, T, 3, H, W]`` in ``[0, 1]`` (16 frames per clip is
    the usual protocol). The covariance of ``D``-dimensional features needs
    at least two clips per side, and is only a good estimate with many more than ``D``.

    Args:
        weights: where ``i3d_torchscript.pt`` is (the file or a folder); default: the torch hub cache.
        feature_extractor: replaces I3D: clips ``[N, T, 3, H, W]`` -> features ``[N, feature_dim]``.
        feature_dim: size of the features (400 for I3D).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        weights: str | Path | None = None,
        feature_extractor: Callable[[Tensor], Tensor] | None = None,
        feature_dim: int = 400,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.extractor = feature_extractor if feature_extractor is not None else I3DFeatures(weights)
        self.feature_dim = feature_dim
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(feature_dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                f"{side}_outer",
                torch.zeros(feature_dim, feature_dim, dtype=torch.float64),
                dist_reduce_fx="sum",
            )
            self.add_state(f"{side}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _features(self, clips: Tensor) -> Tensor:
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise MetricInputError(f"FVD: expected clips [N, T, 3, H, W], got {tuple(clips.shape)}")
        with torch.no_grad():
            feats = self.extractor(clips.float().clamp(0, 1))
        if feats.shape != (clips.shape[0], self.feature_dim):
            raise MetricInputError(f"FVD: features {tuple(feats.shape)}, expected [N, {self.feature_dim}]")
        return feats.double()

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add decoded clips ``preds`` and reference clips ``target``, both ``[N, T, 3, H, W]`` in ``[0, 1]``."""
        for side, clips in (("fake", preds), ("real", target)):
            feats = self._features(clips)
            setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(0))
            setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.T @ feats)
            setattr(self, f"{side}_count", getattr(self, f"{side}_count") + feats.shape[0])

    def _gaussian(self, side: str) -> tuple[Tensor, Tensor]:
        n = getattr(self, f"{side}_count")
        if n < 2:
            raise MetricInputError(f"FVD needs at least 2 clips on each side, got {int(n)}")
        mean = getattr(self, f"{side}_sum") / n
        cov = (getattr(self, f"{side}_outer") - n * torch.outer(mean, mean)) / (n - 1)
        return mean, cov

    def compute(self) -> Tensor:
        """The Fréchet distance (float64 scalar) between the two feature distributions."""
        return frechet_distance(*self._gaussian("fake"), *self._gaussian("real"))
