"""Rate-distortion points: Bjontegaard delta rate, RD plots, JSON and CSV.

A *point* is a flat dict with at least ``video``, ``codec``, ``setting``, ``bpp`` and one value
per quality metric (``psnr``, ``msssim``, ...); a *curve* is the points of one (video, codec).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: axis labels of the plots.
METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "msssim": "MS-SSIM",
    "haarpsi": "HaarPSI",
    "lpips": "LPIPS (lower is better)",
    "dists": "DISTS (lower is better)",
    "fvd": "FVD (lower is better)",
}


@dataclass(frozen=True)
class BDRate:
    """Bjontegaard delta rate of a test curve against an anchor curve.

    Attributes:
        percent: average rate difference at equal quality, in % (-50 means half the bits); NaN when undefined.
        reason: why ``percent`` is NaN (empty otherwise).
        overlap: the quality interval ``(low, high)`` integrated over (NaN, NaN when undefined).
    """

    percent: float
    reason: str = ""
    overlap: tuple[float, float] = (math.nan, math.nan)


def pareto_front(rates: Sequence[float], quality: Sequence[float], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats, cheapest first: each is better than every cheaper one.

    A point that another reaches at no more rate with at least its quality is never the best
    operating point (a cut whose quality falls, or one encoder setting below another's curve);
    points with a non-finite or non-positive rate or quality are left out.
    """
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(
        (i for i, (r, q) in enumerate(zip(rates, quality)) if math.isfinite(r) and r > 0 and math.isfinite(q)),
        key=lambda i: (rates[i], -sign * quality[i]),
    )
    front: list[int] = []
    for i in order:
        if not front or sign * quality[i] > sign * quality[front[-1]]:
            front.append(i)
    return front


def _curve(
    rates: Sequence[float], quality: Sequence[float], sign: float
) -> tuple[np.ndarray, np.ndarray] | str:
    """Sorted (quality, log-rate) of a curve's :func:`pareto_front`; a reason string when unusable."""
    front = pareto_front(rates, quality, sign > 0)
    if len(front) < 2:
        return f"{len(front)} distinct finite point(s) on its Pareto front, need 2"
    q = sign * np.asarray([quality[i] for i in front], dtype=np.float64)
    log_r = np.log(np.asarray([rates[i] for i in front], dtype=np.float64))
    return q, log_r


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
    higher_is_better: bool = True,
) -> BDRate:
    """Bjontegaard delta rate (VCEG-M33) with piecewise cubic (PCHIP) interpolation.

    Each curve is reduced to its :func:`pareto_front` (the operating points worth choosing).
    Log-rate is interpolated as a function of quality for each curve (monotone PCHIP, as in
    JCTVC-L0242 / the HM and VTM reporting sheets), both are integrated over the quality range the two
    curves share, and the mean log-rate difference ``d`` gives ``100 * (exp(d) - 1)`` percent.

    Args:
        anchor_rates, anchor_quality: the reference curve (rates in any unit > 0, e.g. bpp).
        test_rates, test_quality: the curve being compared.
        higher_is_better: False for distances (LPIPS, DISTS, FVD), whose axis is flipped.
    """
    from scipy.interpolate import PchipInterpolator  # imported on use: scipy.interpolate is slow to import

    sign = 1.0 if higher_is_better else -1.0
    anchor = _curve(anchor_rates, anchor_quality, sign)
    test = _curve(test_rates, test_quality, sign)
    for name, curve in (("anchor", anchor), ("test", test)):
        if isinstance(curve, str):
            return BDRate(math.nan, f"{name} curve has {curve}")
    (qa, la), (qt, lt) = anchor, test  # type: ignore[misc]
    low, high = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not low < high:
        return BDRate(
            math.nan,
            f"quality ranges do not overlap (anchor {sign * qa[0]:.4g}..{sign * qa[-1]:.4g}, "
            f"test {sign * qt[0]:.4g}..{sign * qt[-1]:.4g})",
        )
    area_a = PchipInterpolator(qa, la).integrate(low, high)
    area_t = PchipInterpolator(qt, lt).integrate(low, high)
    mean_diff = (area_t - area_a) / (high - low)
    return BDRate(float(100.0 * np.expm1(mean_diff)), "", tuple(sorted((sign * low, sign * high))))


def curves_of(points: Iterable[Mapping], video: str) -> dict[str, list[Mapping]]:
    """Points of one video grouped by codec label, each curve sorted by rate."""
    curves: dict[str, list[Mapping]] = {}
    for p in points:
        if p["video"] == video:
            curves.setdefault(p["codec"], []).append(p)
    return {k: sorted(v, key=lambda p: p["bpp"]) for k, v in curves.items()}


def _compared_curves(
    points: Sequence[Mapping],
    tests: Sequence[str],
    anchors: Sequence[str],
    higher_is_better: Mapping[str, bool],
) -> Iterable[tuple[str, str, str, str, bool, list[Mapping], list[Mapping]]]:
    """``(video, test, anchor, metric, higher, anchor_points, test_points)`` of every comparison to make."""
    for video in dict.fromkeys(p["video"] for p in points):
        curves = curves_of(points, video)
        for test in tests:
            for anchor in anchors:
                if test in curves and anchor in curves:
                    for metric, higher in higher_is_better.items():
                        yield video, test, anchor, metric, higher, curves[anchor], curves[test]


def bd_rate_table(
    points: Sequence[Mapping],
    tests: Sequence[str],
    anchors: Sequence[str],
    higher_is_better: Mapping[str, bool],
) -> list[dict]:
    """BD-rate of every test codec against every anchor, per video and metric, as rows of a table.

    Args:
        points: RD points (see the module docstring).
        tests, anchors: codec labels of the curves compared.
        higher_is_better: the metrics to compare, each with its direction.
    """
    rows = []
    for video, test, anchor, metric, higher, a, t in _compared_curves(
        points, tests, anchors, higher_is_better
    ):
        result = bd_rate(
            [p["bpp"] for p in a],
            [p.get(metric, math.nan) for p in a],
            [p["bpp"] for p in t],
            [p.get(metric, math.nan) for p in t],
            higher,
        )
        rows.append(
            {
                "video": video,
                "test": test,
                "anchor": anchor,
                "metric": metric,
                "bd_rate_percent": result.percent,
                "overlap_low": result.overlap[0],
                "overlap_high": result.overlap[1],
                "reason": result.reason,
            }
        )
    return rows


def rate_ratio_table(
    points: Sequence[Mapping],
    tests: Sequence[str],
    anchors: Sequence[str],
    higher_is_better: Mapping[str, bool],
) -> list[dict]:
    """The rate multiple at equal quality: at every point of each test curve's :func:`pareto_front`,
    its rate over the rate an anchor needs for the same quality.

    The anchor's rate is interpolated linearly between the two points of its Pareto front whose
    qualities enclose the test point's (as one reads an RD plot); test points outside the
    anchor's range of qualities are left out, never extrapolated. A ratio below 1 means progvc
    needs fewer bits there. Where BD-rate averages over the qualities both curves reach, this
    shows where along the curve one codec overtakes the other.
    """
    rows = []
    for video, test, anchor, metric, higher, a, t in _compared_curves(
        points, tests, anchors, higher_is_better
    ):
        sign = 1.0 if higher else -1.0
        a_front = pareto_front([p["bpp"] for p in a], [p.get(metric, math.nan) for p in a], higher)
        if len(a_front) < 2:
            continue
        qa = [sign * a[i][metric] for i in a_front]  # increasing along the front
        ra = [a[i]["bpp"] for i in a_front]
        for i in pareto_front([p["bpp"] for p in t], [p.get(metric, math.nan) for p in t], higher):
            q = sign * t[i][metric]
            if not qa[0] <= q <= qa[-1]:
                continue
            anchor_bpp = float(np.interp(q, qa, ra))
            rows.append(
                {
                    "video": video,
                    "test": test,
                    "anchor": anchor,
                    "metric": metric,
                    "setting": t[i].get("setting", ""),
                    "quality": t[i][metric],
                    "bpp": t[i]["bpp"],
                    "anchor_bpp": anchor_bpp,
                    "ratio": t[i]["bpp"] / anchor_bpp,
                }
            )
    return rows


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(data: Mapping, path: str | Path) -> Path:
    """Write ``data`` as indented JSON (NaN and infinities become ``null``)."""
    path = Path(path)
    path.write_text(json.dumps(_json_safe(dict(data)), indent=2) + "\n")
    return path


def write_csv(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Write dict rows as CSV, with the union of their keys as columns (first-seen order)."""
    path = Path(path)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_rd(
    points: Sequence[Mapping], video: str, metric: str, path: str | Path, higher_is_better: bool = True
) -> Path:
    """One RD plot (PNG): ``metric`` against bpp for every codec of ``video``.

    Each curve's line joins its :func:`pareto_front`; points off the front are drawn as crosses.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.subplots()
    for codec, curve in curves_of(points, video).items():
        finite = [p for p in curve if p.get(metric) is not None and math.isfinite(p[metric])]
        if not finite:
            continue
        xs, ys = [p["bpp"] for p in finite], [p[metric] for p in finite]
        front = pareto_front(xs, ys, higher_is_better)
        (line,) = ax.plot(
            [xs[i] for i in front],
            [ys[i] for i in front],
            marker="o",
            markersize=3,
            label=codec,
            linestyle="--" if "progvc" not in codec else "-",
        )
        off = [i for i in range(len(xs)) if i not in set(front)]
        if off:  # points off the front (a cut or a setting that another beats): markers only
            ax.plot(
                [xs[i] for i in off],
                [ys[i] for i in off],
                "x",
                markersize=4,
                color=line.get_color(),
                alpha=0.6,
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{video}: {METRIC_LABELS.get(metric, metric)}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
