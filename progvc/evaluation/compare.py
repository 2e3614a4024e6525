"""Two evaluations against each other: BD-rate of one run's progvc curves over another's.

``progvc compare BASE TEST`` reads the ``results.json`` of two ``progvc evaluate`` runs (two
models, or two encoder settings such as ``--motion none`` and ``--motion global``) and gives, for
every progvc curve present in both (same video, same curve name), the BD-rate of TEST's curve
against BASE's on every metric both runs measured: negative means TEST needs fewer bits for
the same quality. Each curve is compared on its Pareto front (:func:`progvc.evaluation.rd.bd_rate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from progvc.errors import ConfigError
from progvc.evaluation.evaluate import METRIC_CLASSES
from progvc.evaluation.rd import bd_rate_table


def load_results(path: str | Path) -> dict:
    """The ``results.json`` of an evaluation (``path`` is the file or its folder), checked for points."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give a folder written by progvc evaluate)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read evaluation results ({type(exc).__name__})") from None
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list) or not all(
        isinstance(p, dict) and {"video", "codec", "bpp"} <= p.keys() for p in points
    ):
        raise ConfigError(f"{path}: not the results of progvc evaluate (no list of points)")
    return data


def compare_results(base: Mapping, test: Mapping) -> list[dict]:
    """BD-rate rows of TEST's progvc curves against BASE's: ``video, curve, metric, bd_rate_percent,
    overlap_low, overlap_high, reason`` (see :func:`~progvc.evaluation.rd.bd_rate_table`)."""
    metrics = [m for m in METRIC_CLASSES if m in set(base.get("metrics", ())) & set(test.get("metrics", ()))]
    if not metrics:
        raise ConfigError("the two evaluations share no quality metric")

    def curves(data: Mapping) -> set[tuple[str, str]]:
        return {(p["video"], p["codec"]) for p in data["points"] if str(p["codec"]).startswith("progvc")}

    shared = sorted(curves(base) & curves(test))
    if not shared:
        raise ConfigError("the two evaluations have no progvc curve in common (same video and curve name)")
    rows = []
    for video, codec in shared:
        points = [
            {**p, "codec": side}
            for side, data in (("base", base), ("test", test))
            for p in data["points"]
            if p["video"] == video and p["codec"] == codec
        ]
        for row in bd_rate_table(points, ["test"], ["base"], {m: METRIC_CLASSES[m].higher_is_better for m in metrics}):
            rows.append({"video": video, "curve": codec, **{k: row[k] for k in row if k not in ("video", "test", "anchor")}})
    return rows


def format_comparison(rows: list[dict]) -> str:
    """``rows`` of :func:`compare_results` as a table: one line per curve, one column per metric."""
    from progvc.evaluation.report import format_table

    table: dict[tuple[str, str], dict] = {}
    metrics: list[str] = []
    for row in rows:
        cell = table.setdefault((row["video"], row["curve"]), {"video": row["video"], "curve": row["curve"]})
        value = row["bd_rate_percent"]
        cell[row["metric"]] = f"{value:+.1f}" if math.isfinite(value) else "-"
        if row["metric"] not in metrics:
            metrics.append(row["metric"])
    return (
        "BD-rate of TEST against BASE (%, negative = TEST needs fewer bits at equal quality; - = undefined)\n"
        + format_table(list(table.values()), ["video", "curve", *metrics])
    )
