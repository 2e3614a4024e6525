"""Seconds per training step of a recipe, measured in Lightning's own training loop.

    python -m progvc.bench training --config recipes/default_tokenizer.yaml --steps 10

Runs ``warmup + steps`` optimizer steps of the recipe (no validation, no logger, checkpoints
in a temporary folder), prints the median wall-clock and process CPU seconds of one step, and
how long the recipe's ``trainer.max_steps`` would take at that pace. Any other argument is
passed to the CLI as an override (``--data.batch_size=4``). This is how the recipes were sized.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

from lightning.pytorch import Callback


class StepTimer(Callback):
    """Records the wall-clock and process CPU seconds of every training batch (forward, backward, step)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def on_train_batch_start(self, *args) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, *args) -> None:
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def measure(config: str, steps: int = 10, warmup: int = 2, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Median seconds per step (``wall_s``, ``cpu_s``) of a recipe, and its ``max_steps``."""
    from progvc.training.cli import ProgVCCLI

    with tempfile.TemporaryDirectory() as tmp:
        args = [f"--config={config}", *overrides, f"--trainer.default_root_dir={tmp}"]
        args += [
            f"--trainer.max_steps={warmup + steps}",
            "--trainer.limit_val_batches=0",
            "--trainer.logger=false",
        ]
        args += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
        cli = ProgVCCLI(args=args, run=False)
        max_steps = cli.parser.parse_args([f"--config={config}", *overrides]).trainer.max_steps
        timer = StepTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
    wall, cpu = timer.wall[warmup:], timer.cpu[warmup:]
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "max_steps": float(max_steps)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m progvc.bench training", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=2)
    args, overrides = parser.parse_known_args(argv)
    res = measure(args.config, args.steps, args.warmup, overrides)
    hours = res["wall_s"] * res["max_steps"] / 3600
    print(
        f"{args.config}: {res['wall_s']:.3f} s/step wall, {res['cpu_s']:.3f} s/step CPU (median of {args.steps}); "
        f"max_steps={int(res['max_steps'])} -> {hours:.2f} h at this pace"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
