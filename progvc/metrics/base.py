"""Shared pieces of the metrics: input checks and a per-frame averaging :class:`~torchmetrics.Metric`."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor
from torchmetrics import Metric

from progvc.errors import ProgvcError


class MetricInputError(ProgvcError, ValueError):
    """Frames of the wrong shape, of different sizes, or too small for a metric."""


def check_frames(preds: Tensor, target: Tensor, name: str, min_size: int = 1) -> tuple[Tensor, Tensor]:
    """Validate two batches of frames ``[N, 3, H, W]`` and return them as float, clamped to ``[0, 1]``.

    Args:
        preds: decoded frames ``[N, 3, H, W]``, float in ``[0, 1]``.
        target: reference frames of the same shape.
        name: metric name used in error messages.
        min_size: smallest height and width the metric can score.
    """
    if preds.shape != target.shape:
        raise MetricInputError(
            f"{name}: preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape"
        )
    if preds.ndim != 4 or preds.shape[1] != 3:
        raise MetricInputError(f"{name}: expected frames [N, 3, H, W], got {tuple(preds.shape)}")
    if min(preds.shape[-2:]) < min_size:
        raise MetricInputError(
            f"{name} needs frames of at least {min_size}x{min_size} pixels, got {preds.shape[-1]}x{preds.shape[-2]}"
        )
    if not (preds.is_floating_point() and target.is_floating_point()):
        raise MetricInputError(
            f"{name}: expected float frames in [0, 1], got {preds.dtype} and {target.dtype}"
        )
    return preds.clamp(0, 1), target.clamp(0, 1)


class FrameMetric(Metric):
    """Mean over frames of a per-frame score; the states are sums, so they reduce across DDP ranks.

    Subclasses set :attr:`min_size` and implement :meth:`score`. ``update(preds, target)`` takes
    frames ``[N, 3, H, W]`` in ``[0, 1]``; ``compute()`` returns the mean score of every frame seen.
    """

    is_differentiable = False
    full_state_update = False
    #: smallest height and width the score is defined for.
    min_size: int = 1

    score_sum: Tensor
    frames: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    @abstractmethod
    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        """Per-frame scores ``[N]`` of checked frames ``[N, 3, H, W]`` in ``[0, 1]``."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the scores of ``preds`` against ``target`` (both ``[N, 3, H, W]`` in ``[0, 1]``)."""
        preds, target = check_frames(preds, target, type(self).__name__, self.min_size)
        with torch.no_grad():
            scores = self.score(preds, target).reshape(-1)
        self.score_sum += scores.double().sum()
        self.frames += scores.numel()

    def compute(self) -> Tensor:
        """Mean per-frame score (float64 scalar); NaN before any update."""
        return self.score_sum / self.frames
