"""Validation on the codec's real streams, during training (:class:`StreamValidation`).

The validation step of :class:`~progvc.training.module.ProgVCModule` scores random crops with the
training losses' estimates of the rate. What a model is chosen for is the codec's real stream:
range-coded bits under the context model's tables, RDOQ, prediction loops over whole frames. The
two disagree often enough (a continuation with the best validation PSNR has lost on real streams
more than once, ``docs/model_card.md``) that a run should show both. This callback codes
held-out clips with the codec at every validation and logs, per RDOQ weight, the stream's bits
per pixel and the PSNR of what a decoder shows with every scale (``stream/bpp_rdoq=W``,
``stream/psnr_rdoq=W``, averaged over the clips), and ``stream/delta_psnr``: the mean PSNR
gain in dB at equal rate over the weights the run started from (each clip's curve of
PSNR against log-rate, read at the starting curve's rates where the two overlap).

In a recipe::

    trainer:
      callbacks:
        - class_path: progvc.training.callbacks.StreamValidation
          init_args:
            sources: ["data/corpus/videos/opencv-doc__Megamind.avi[230:]"]
            frames: 8
            size: 176x240
            rdoq: [0.25, 0.0]
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from progvc.errors import ConfigError

log = logging.getLogger(__name__)


class StreamValidation(Callback):
    """Code held-out clips with the codec at every validation and log the real streams' rate and PSNR.

    Args:
        sources: data source strings as the data module takes them (``"path[start:]"``), one clip
            each, read from its first frame in range; the held-out evaluation clip is refused.
        frames: frames per clip (one GOP).
        size: ``"HxW"``: area-downscale every clip to this size first (``None``: as it is).
        rdoq: the codec's RDOQ weights, one stream each (0: the dead zone alone).
    """

    def __init__(
        self,
        sources: Sequence[str],
        frames: int = 8,
        size: str | None = None,
        rdoq: Sequence[float] = (0.25, 0.0),
    ) -> None:
        from progvc.io import parse_size

        if isinstance(sources, str):
            sources = [sources]
        if not sources:
            raise ConfigError("StreamValidation: give at least one source")
        if frames < 1:
            raise ConfigError(f"StreamValidation: frames must be >= 1, got {frames}")
        if not rdoq or any(not (w >= 0 and math.isfinite(w)) for w in rdoq) or len(set(rdoq)) != len(rdoq):
            raise ConfigError(
                f"StreamValidation: rdoq must be distinct finite weights >= 0, got {list(rdoq)}"
            )
        self.sources = list(sources)
        self.frames = frames
        self.size = None if size is None else parse_size(size)
        self.rdoq = [float(w) for w in rdoq]
        self._clips: list[np.ndarray] | None = None
        #: ``[clip][weight] -> (bpp, psnr)`` of the weights the run started from.
        self.reference: list[list[tuple[float, float]]] | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference = state_dict.get("reference")

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.reference is None and trainer.is_global_zero:  # a resumed run keeps its own start
            self.reference = self.measure(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        points = self.measure(pl_module)
        logs: dict[str, float] = {}
        for i, weight in enumerate(self.rdoq):
            logs[f"stream/bpp_rdoq={weight:g}"] = float(np.mean([clip[i][0] for clip in points]))
            logs[f"stream/psnr_rdoq={weight:g}"] = float(np.mean([clip[i][1] for clip in points]))
        if self.reference is not None:
            gains = [delta_psnr(ref, now) for ref, now in zip(self.reference, points, strict=True)]
            gains = [g for g in gains if math.isfinite(g)]
            if gains:
                logs["stream/delta_psnr"] = float(np.mean(gains))
        for name, value in logs.items():
            pl_module.log(name, value, rank_zero_only=True)
        log.info("real streams at step %d: %s", trainer.global_step, logs)

    # ------------------------------------------------------------------ work
    def clips(self) -> list[np.ndarray]:
        """uint8 ``[frames, H, W, 3]`` of every source (read once)."""
        if self._clips is None:
            from progvc.io import area_downscale, read_video
            from progvc.training.data import resolve_sources

            clips = []
            for source in resolve_sources(self.sources):
                if source.kind != "video":
                    raise ConfigError(f"StreamValidation: {source.path} is not a video")
                frames, _ = read_video(source.path, max_frames=self.frames, start=source.start)
                clips.append(frames if self.size is None else area_downscale(frames, self.size))
            self._clips = clips
        return self._clips

    @torch.no_grad()
    def measure(self, pl_module: LightningModule) -> list[list[tuple[float, float]]]:
        """``[clip][weight] -> (bpp, PSNR in dB)`` of the module's current weights, coded for real."""
        from progvc.codec import Codec, CodecModel
        from progvc.metrics import PSNR

        model = CodecModel(
            copy.deepcopy(pl_module.tokenizer).float().cpu(),
            copy.deepcopy(pl_module.context_model).float().cpu(),
            prediction=pl_module.prediction,
        ).eval()
        codecs = [Codec(model, progress=False, rdoq=weight) for weight in self.rdoq]  # one float64 copy each
        psnr = PSNR()
        out = []
        for clip in self.clips():
            row = []
            for codec in codecs:
                data = codec.compress(clip, gop=len(clip))
                shown = codec.decompress(data, synthesis="none")
                bpp = 8 * len(data) / clip[..., 0].size
                row.append((bpp, float(psnr.score(_unit(shown), _unit(clip)).mean())))
            out.append(row)
        return out


def _unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float64 ``[T, 3, H, W]`` in ``[0, 1]``."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255


def delta_psnr(reference: Sequence[tuple[float, float]], current: Sequence[tuple[float, float]]) -> float:
    """Mean PSNR gain in dB of ``current`` over ``reference`` at equal rate (``[(bpp, psnr), ...]`` curves).

    ``current``'s PSNR is interpolated linearly in log-rate at each reference point's rate inside
    ``current``'s range of rates; ``nan`` when no reference rate lies in it (or a curve has fewer
    than 2 points).
    """
    if len(reference) < 2 or len(current) < 2:
        return math.nan
    now = sorted(current)
    log_r, q = np.log([r for r, _ in now]), np.array([p for _, p in now])
    gains = [
        np.interp(math.log(r), log_r, q) - p for r, p in reference if log_r[0] <= math.log(r) <= log_r[-1]
    ]
    return float(np.mean(gains)) if gains else math.nan
