#!/usr/bin/env python
"""Plot the validation (and smoothed training) curves of Lightning runs from their CSV logs.

    python scripts/plot_training.py runs/default_tokenizer runs/default --out docs/img/training_curves.png

Each run contributes one column of panels: its validation metrics (``val/*``) against the
step, and the smoothed training loss. Reads ``<run>/logs/version_*/metrics.csv`` (every version,
so that resumed runs join up).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_metrics(run: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from every ``metrics.csv`` of a run, sorted by step."""
    series: dict[str, dict[int, float]] = {}
    files = sorted(run.glob("logs/version_*/metrics.csv"))
    if not files:
        raise SystemExit(f"plot_training: error: {run} has no logs/version_*/metrics.csv")
    for f in files:
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                step = int(row["step"])
                for key, value in row.items():
                    if key in ("epoch", "step") or value in ("", None):
                        continue
                    series.setdefault(key, {})[step] = float(value)
    return {k: sorted(v.items()) for k, v in series.items()}


def smooth(points: list[tuple[int, float]], window: int = 20) -> list[tuple[int, float]]:
    """Running mean over ``window`` points."""
    out = []
    for i in range(len(points)):
        chunk = points[max(0, i - window + 1) : i + 1]
        out.append((points[i][0], sum(v for _, v in chunk) / len(chunk)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(run, read_metrics(run)) for run in args.runs]
    rows = max(len([k for k in m if k.startswith("val/")]) for _, m in data) + 1
    fig, axes = plt.subplots(rows, len(data), figsize=(4.5 * len(data), 2.4 * rows), squeeze=False)
    for col, (run, metrics) in enumerate(data):
        val = sorted(k for k in metrics if k.startswith("val/"))
        for row, key in enumerate(val):
            ax = axes[row][col]
            steps, values = zip(*metrics[key])
            ax.plot(steps, values, marker="o", ms=3)
            ax.set_title(f"{run.name}: {key}", fontsize=9)
            ax.grid(alpha=0.3)
        ax = axes[rows - 1][col]
        if "train/loss" in metrics:
            steps, values = zip(*smooth(metrics["train/loss"]))
            ax.plot(steps, values, color="gray")
            ax.set_title(f"{run.name}: train/loss (smoothed)", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for row in range(len(val), rows - 1):
            axes[row][col].axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
