"""End-to-end evaluation: progvc at every prefix of one stream against x264, x265 and SVT-AV1.

For every video: compress once with progvc, decode every prefix of ``k`` scales with and without
decoder-side synthesis; encode the anchors at their rate sweep; score every decode with the
quality metrics; then BD-rate of each progvc curve against each anchor per metric, one RD plot
per metric, and every point in JSON and CSV.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from progvc.codec.codec import frames_to_tensor
from progvc.errors import ConfigError, WeightsNotFoundError
from progvc.evaluation.anchors import ANCHORS, get_anchor, sweep
from progvc.evaluation.rd import bd_rate_table, plot_rd, rate_ratio_table, write_csv, write_json
from progvc.evaluation.report import format_table, prepare_output_dir
from progvc.io import resolve_video
from progvc.metrics import DISTS, FVD, LPIPS, MSSSIM, PSNR, FrameMetric, HaarPSI

#: every quality metric by its name in the results, in table order; the first three need no weights.
METRIC_CLASSES = {
    "psnr": PSNR,
    "msssim": MSSSIM,
    "haarpsi": HaarPSI,
    "lpips": LPIPS,
    "dists": DISTS,
    "fvd": FVD,
}
#: files an evaluation writes (for the no-overwrite check).
OUTPUT_PATTERNS = ("results.json", "points.csv", "bd_rate.csv", "rate_ratio.csv", "rd_*.png")


def synthesis_label(mode: str) -> str:
    """Curve name of progvc decoded with synthesis ``mode`` (``"sample"`` -> ``"progvc-synth"``)."""
    return {"sample": "progvc-synth", "none": "progvc-nosynth"}.get(mode, f"progvc-{mode}")


@dataclass
class QualityMeter:
    """The quality metrics of one evaluation, built once and reused for every decode.

    Attributes:
        frame_metrics: per-frame metrics by name (psnr, msssim, haarpsi, and lpips / dists when available).
        fvd: the FVD metric, or None.
        skipped: metric name -> why it is not computed.
        batch_size: frames per metric update (bounds memory).
        clip_len: frames per FVD clip (consecutive, not overlapping).
        device: where the metrics run.
    """

    frame_metrics: dict[str, FrameMetric]
    fvd: FVD | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    batch_size: int = 8
    clip_len: int = 16
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def build(
        cls,
        size: tuple[int, int],
        num_frames: int,
        weights: str | Path | None = None,
        perceptual: bool = True,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        clip_len: int = 16,
    ) -> QualityMeter:
        """Metrics for ``num_frames`` frames of ``size = (H, W)``; those that cannot run are recorded in ``skipped``.

        Args:
            weights: folder with the LPIPS / DISTS / FVD weight files (default: the torch hub cache).
            perceptual: also try LPIPS, DISTS and FVD.
        """
        metrics: dict[str, FrameMetric] = {"psnr": PSNR(), "msssim": MSSSIM(), "haarpsi": HaarPSI()}
        skipped: dict[str, str] = {}
        fvd = None
        if perceptual:
            for name, factory in (
                ("lpips", lambda: LPIPS(weights=weights)),
                ("dists", lambda: DISTS(weights=weights)),
            ):
                try:
                    metrics[name] = factory()
                except WeightsNotFoundError as exc:
                    skipped[name] = str(exc)
            if num_frames < 2 * clip_len:
                skipped["fvd"] = (
                    f"needs at least {2 * clip_len} frames (2 clips of {clip_len}), got {num_frames}"
                )
            else:
                try:
                    fvd = FVD(weights=weights)
                except WeightsNotFoundError as exc:
                    skipped["fvd"] = str(exc)
        else:
            skipped.update(dict.fromkeys(("lpips", "dists", "fvd"), "not requested"))
        height, width = size
        for name, metric in list(metrics.items()):
            if min(height, width) < metric.min_size:
                skipped[name] = (
                    f"frames of {width}x{height} are below its minimum of {metric.min_size}x{metric.min_size}"
                )
                del metrics[name]
        device = torch.device(device)
        for metric in [*metrics.values(), *([fvd] if fvd is not None else [])]:
            metric.to(device)
        return cls(metrics, fvd, skipped, batch_size, clip_len, device)

    @property
    def names(self) -> list[str]:
        """Names of the metrics this meter computes, in :data:`METRIC_CLASSES` order."""
        have = set(self.frame_metrics) | ({"fvd"} if self.fvd is not None else set())
        return [m for m in METRIC_CLASSES if m in have]

    def score(self, decoded: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """Every metric of ``decoded`` against ``reference`` (both uint8 ``[T, H, W, 3]``)."""
        if decoded.shape != reference.shape:
            raise ConfigError(f"decoded {decoded.shape} and reference {reference.shape} differ")
        for metric in self.frame_metrics.values():
            metric.reset()
        for start in range(0, len(reference), self.batch_size):
            x = frames_to_tensor(decoded[start : start + self.batch_size], self.device)
            y = frames_to_tensor(reference[start : start + self.batch_size], self.device)
            for metric in self.frame_metrics.values():
                metric.update(x, y)
        scores = {name: float(metric.compute()) for name, metric in self.frame_metrics.items()}
        if self.fvd is not None:
            self.fvd.reset()
            usable = len(reference) // self.clip_len * self.clip_len  # whole clips only
            chunk = self.batch_size * self.clip_len
            for start in range(0, usable, chunk):
                stop = min(usable, start + chunk)
                self.fvd.update(self._clips(decoded[start:stop]), self._clips(reference[start:stop]))
            scores["fvd"] = float(self.fvd.compute())
        return scores

    def _clips(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[n * L, H, W, 3]`` -> clips ``[n, L, 3, H, W]`` in ``[0, 1]`` (``L`` = :attr:`clip_len`)."""
        x = frames_to_tensor(frames, self.device)
        return x.reshape(-1, self.clip_len, *x.shape[1:])


def _point(video: str, codec: str, setting: str, bits: int, frames: np.ndarray, **extra) -> dict:
    t, h, w = frames.shape[:3]
    return {
        "video": video,
        "codec": codec,
        "setting": setting,
        "bits": int(bits),
        "bpp": bits / (t * h * w),
        **extra,
    }


def _progvc_points(
    name: str,
    frames: np.ndarray,
    fps: float,
    codec,
    meter: QualityMeter,
    gop: int,
    synthesis: Sequence[str],
    seed: int,
    step: Callable[[str], None],
    tag: str = "",
) -> list[dict]:
    """progvc's points: compress once, decode every prefix of ``k`` scales in every synthesis mode.

    ``tag`` prefixes every point's setting (``"rdoq=0.1 "`` when several encoder settings share a curve).
    """
    num = len(frames)
    start = time.perf_counter()
    data = codec.compress(frames, gop=gop, fps=fps)
    encode_seconds = time.perf_counter() - start
    num_scales = codec.spec.num_scales
    points: list[dict] = []
    for k in range(1, num_scales + 1):
        bits = 8 * len(codec.truncate(data, k))  # the header and every GOP's first k segments
        full: tuple[dict, float] | None = None
        for mode in synthesis:
            if k == num_scales and full is not None:
                scores, decode_seconds = full  # every scale was sent: nothing to synthesize, same frames
            else:
                start = time.perf_counter()
                decoded = codec.decompress(data, layers=k, synthesis=mode, seed=seed)
                decode_seconds = time.perf_counter() - start
                scores = meter.score(decoded, frames)
                full = (scores, decode_seconds)
            points.append(
                _point(
                    name,
                    synthesis_label(mode),
                    f"{tag}scales={k}/{num_scales}",
                    bits,
                    frames,
                    rdoq=codec.rdoq,
                    **scores,
                    encode_fps=num / encode_seconds,
                    decode_fps=num / decode_seconds,
                )
            )
            step(f"{name} progvc {tag}{k}/{num_scales} {mode}")
    return points


def evaluate_video(
    name: str,
    frames: np.ndarray,
    fps: float,
    codec,
    meter: QualityMeter,
    anchors: Sequence[str] = tuple(ANCHORS),
    gop: int = 32,
    synthesis: Sequence[str] = ("sample", "none"),
    seed: int = 0,
    step: Callable[[str], None] | None = None,
    anchor_bpps: Sequence[float] | None = None,
    anchor_low_bpps: Sequence[float] = (),
) -> list[dict]:
    """RD points of one video: progvc at every prefix of one stream (per synthesis mode) and every anchor setting.

    Args:
        name: the video's name in the points.
        frames: uint8 ``[T, H, W, 3]``.
        fps: frame rate.
        codec: a :class:`progvc.codec.Codec`, a list of them (one stream each, e.g. several RDOQ
            weights: their points join one curve per synthesis mode, whose Pareto front the
            BD-rates and plots use), or None for the anchors alone.
        meter: the quality metrics.
        anchors: anchor names (keys of :data:`~progvc.evaluation.anchors.ANCHORS`).
        gop: frames per GOP, for progvc and the anchors alike.
        synthesis: decoder synthesis modes; each gives one progvc curve.
        seed: sampling seed of the synthesis.
        step: called with a short description after every decode (progress bars).
        anchor_bpps: target rates of the anchors in bits per pixel (bitrate mode) instead of their crf sweeps.
        anchor_low_bpps: target rates in bits per pixel at which every anchor is also encoded in
            bitrate mode, beside its sweep: its points join the anchor's curve (whose Pareto front
            the BD-rates use), so that it reaches below its lowest crf.
    """
    step = step or (lambda _desc: None)
    num = len(frames)
    points: list[dict] = []
    codecs = [] if codec is None else codec if isinstance(codec, list) else [codec]
    for c in codecs:
        tag = f"rdoq={c.rdoq:g} " if len(codecs) > 1 else ""
        points += _progvc_points(name, frames, fps, c, meter, gop, synthesis, seed, step, tag)
    for anchor in anchors:
        results = sweep(frames, anchor, bpps=anchor_bpps, gop=gop, fps=fps)
        if anchor_low_bpps:
            results = itertools.chain(sweep(frames, anchor, bpps=anchor_low_bpps, gop=gop, fps=fps), results)
        for result in results:
            scores = meter.score(result.frames, frames)
            points.append(
                _point(
                    name,
                    anchor,
                    result.setting,
                    result.bits,
                    frames,
                    **scores,
                    encode_fps=num / result.encode_seconds,
                    decode_fps=num / result.decode_seconds,
                )
            )
            step(f"{name} {anchor} {result.setting}")
    return points


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced.

    Attributes:
        points: every RD point (one dict per decode).
        bd_rates: BD-rate rows (video, test, anchor, metric, bd_rate_percent, reason).
        skipped: metric -> why it was not computed.
        files: the files written.
        summary: the text table printed at the end.
    """

    points: list[dict]
    bd_rates: list[dict]
    skipped: dict[str, str]
    files: list[Path]
    summary: str


def summarize(
    points: Sequence[dict], bd_rates: Sequence[dict], skipped: dict[str, str], metrics: Sequence[str]
) -> str:
    """The human-readable report: every point, the BD-rates, and the metrics that were skipped."""
    parts = []
    for video in dict.fromkeys(p["video"] for p in points):
        rows = [p for p in points if p["video"] == video]
        columns = ["codec", "setting", "bpp", *metrics, "encode_fps", "decode_fps"]
        parts.append(f"== {video}\n" + format_table(rows, columns))
    if bd_rates:
        table: dict[tuple, dict] = {}
        for row in bd_rates:
            key = (row["video"], row["test"], row["anchor"])
            cell = table.setdefault(key, {"video": key[0], "progvc": key[1], "anchor": key[2]})
            cell[row["metric"]] = row["bd_rate_percent"]
        parts.append(
            "== BD-rate (%, negative = progvc needs fewer bits at equal quality; - = undefined, see bd_rate.csv)\n"
            + format_table(list(table.values()), ["video", "progvc", "anchor", *metrics])
        )
    if skipped:
        parts.append("\n".join(f"skipped {name}: {reason}" for name, reason in skipped.items()))
    return "\n\n".join(parts)


def evaluate(
    videos: Sequence[str | Path],
    model: str | Path | None = "default",
    frames: int | None = 32,
    gop: int = 32,
    out: str | Path = "progvc-eval",
    force: bool = False,
    anchors: Sequence[str] = tuple(ANCHORS),
    anchor_bpps: Sequence[float] | None = None,
    anchor_low_bpps: Sequence[float] = (),
    synthesis: Sequence[str] = ("sample", "none"),
    weights: str | Path | None = None,
    perceptual: bool = True,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    refine_steps: int = 0,
    rdoq: float | Sequence[float] | None = None,
    start: int = 0,
    size: tuple[int, int] | None = None,
    motion: str = "global",
    skip: bool = True,
    pixels: str = "float32",
) -> EvaluationResult:
    """Evaluate progvc against the anchors on ``videos`` and write the results into ``out``.

    Args:
        videos: video files (or sample clip names: ``"carphone"``, ``"bikes"``, ``"bigbuckbunny"``).
        model: a progvc model file, a Lightning checkpoint, ``"default"``, or None for the anchors alone.
        frames: frames per video (from the first; ``None``: all).
        gop: GOP size of progvc and of every anchor.
        out: output folder: ``results.json``, ``points.csv``, ``bd_rate.csv``, ``rate_ratio.csv``,
            ``rd_<video>_<metric>.png``.
        force: overwrite the results of an earlier run in ``out``.
        anchors: anchor names (``x264``, ``x265``, ``svtav1``).
        anchor_bpps: target rates of the anchors in bits per pixel (bitrate mode); default: their crf sweeps.
        anchor_low_bpps: target rates in bits per pixel at which every anchor is also encoded in
            bitrate mode, its points joining the anchor's curve: for a progvc curve that lies below
            the lowest quality of the anchors' crf sweeps (their BD-rates are undefined otherwise).
        synthesis: progvc decoder synthesis modes, one curve each (``sample``, ``argmax``, ``none``).
        weights: folder with the LPIPS / DISTS / FVD weights (default: the torch hub cache).
        perceptual: also compute LPIPS, DISTS and FVD where their weights are found.
        device: where progvc and the metrics run.
        seed: synthesis sampling seed.
        progress: show a progress bar on stderr.
        refine_steps: progvc's encoder latent refinement, steps per frame (0: off; :mod:`progvc.codec.refine`).
        rdoq: progvc's RDOQ rate weight (0: off; ``None``: the model's; :class:`~progvc.codec.Codec`),
            or several: one stream each, all on one curve per synthesis mode (an encoder sweep,
            like the anchors' crf sweeps; the BD-rates use the curve's Pareto front).
        start: first frame of every video to evaluate (e.g. a training video's held-out frames).
        size: ``(H, W)``: area-downscale every video to this size first
            (:func:`~progvc.io.area_downscale`; e.g. an HD clip at the density of small video).
        motion: progvc's global motion, ``"global"`` or ``"none"`` (:mod:`progvc.codec.motion`).
        skip: progvc's skip flags (:mod:`progvc.codec.skip`).
        pixels: the arithmetic of progvc's decoder to pixels (:class:`~progvc.codec.Codec`'s ``pixels``).
    """
    from progvc.codec import Codec, CodecModel
    from progvc.io import area_downscale, read_video

    if not videos:
        raise ConfigError("give at least one video")
    if frames is not None and frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    if start < 0:
        raise ConfigError(f"start must be >= 0, got {start}")
    for name in anchors:
        get_anchor(name)
    if any(not (b > 0 and math.isfinite(b)) for b in (*(anchor_bpps or ()), *anchor_low_bpps)):
        raise ConfigError("anchor rates must be finite and > 0 bits per pixel")
    weights_rdoq = [rdoq] if rdoq is None or isinstance(rdoq, int | float) else list(rdoq)
    if not weights_rdoq or len(set(weights_rdoq)) != len(weights_rdoq):
        raise ConfigError(f"rdoq: give distinct weights, got {rdoq!r}")
    out = prepare_output_dir(out, OUTPUT_PATTERNS, force)
    codecs = []
    if model is not None:
        loaded = CodecModel.load(model)
        codecs = [
            Codec(loaded, device=device, refine_steps=refine_steps, rdoq=r, motion=motion, skip=skip, pixels=pixels)
            for r in weights_rdoq
        ]
    modes = list(synthesis) if codecs else []
    points: list[dict] = []
    skipped: dict[str, str] = {}
    metrics: list[str] = []
    names: list[str] = []
    for video in videos:
        path = resolve_video(video)
        clip, fps = read_video(path, max_frames=frames, start=start)
        if size is not None:
            clip = area_downscale(clip, size)
        name = path.stem if path.stem not in names else f"{path.stem}-{len(names)}"
        names.append(name)
        meter = QualityMeter.build(clip.shape[1:3], len(clip), weights, perceptual, device)
        skipped.update(meter.skipped)
        metrics += [m for m in meter.names if m not in metrics]
        steps = sum(len(anchor_bpps or get_anchor(a).sweep) + len(anchor_low_bpps) for a in anchors) + sum(
            c.spec.num_scales * len(modes) for c in codecs
        )
        with tqdm(total=steps, desc=name, file=sys.stderr, disable=not progress, leave=False) as bar:
            points += evaluate_video(
                name,
                clip,
                fps,
                codecs or None,
                meter,
                anchors,
                gop,
                modes,
                seed,
                lambda _d: bar.update(),
                anchor_bpps,
                anchor_low_bpps,
            )
    for name in metrics:
        skipped.pop(name, None)  # computed for some video after all
    tests = [synthesis_label(m) for m in modes]
    directions = {m: METRIC_CLASSES[m].higher_is_better for m in metrics}
    bd_rates = bd_rate_table(points, tests, list(anchors), directions)
    ratios = rate_ratio_table(points, tests, list(anchors), directions)
    results = {
        "videos": [str(v) for v in videos],
        "settings": {
            "model": None if model is None else str(model),
            "frames": frames,
            "start": start,
            "size": None if size is None else list(size),
            "gop": gop,
            "synthesis": modes,
            "seed": seed,
            "refine_steps": refine_steps,
            "rdoq": [c.rdoq for c in codecs] if len(codecs) > 1 else codecs[0].rdoq if codecs else None,
            "motion": codecs[0].motion if codecs else None,
            "skip": codecs[0].skip if codecs else None,
            "pixels": codecs[0].pixels if codecs else None,
            "deadzone": getattr(codecs[0].model.tokenizer, "deadzone", None) if codecs else None,
        },
        "anchors": {a: get_anchor(a).describe(gop, bitrate=anchor_bpps is not None) for a in anchors},
        "anchor_bpps": None if anchor_bpps is None else list(anchor_bpps),
        "anchor_low_bpps": list(anchor_low_bpps),
        "metrics": metrics,
        "skipped_metrics": skipped,
        "points": points,
        "bd_rate": bd_rates,
        "rate_ratio": ratios,
    }
    files = [write_json(results, out / "results.json"), write_csv(points, out / "points.csv")]
    if bd_rates:
        files.append(write_csv(bd_rates, out / "bd_rate.csv"))
    if ratios:
        files.append(write_csv(ratios, out / "rate_ratio.csv"))
    for name in names:
        for metric in metrics:
            files.append(plot_rd(points, name, metric, out / f"rd_{name}_{metric}.png", directions[metric]))
    return EvaluationResult(points, bd_rates, skipped, files, summarize(points, bd_rates, skipped, metrics))
