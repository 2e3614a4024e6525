"""Training throughput of a recipe on this device: steps/s, samples/s and peak memory, in Lightning's own loop.

    python -m progvc.bench training --config recipes/default_tokenizer.yaml --steps 10
    python -m progvc.bench training --config recipes/large.yaml --json        # on a GPU
    python -m progvc.bench training --config recipes/tiny.yaml --trainer.precision=bf16-mixed

Runs ``warmup + steps`` optimizer steps of the recipe (no validation, no logger, checkpoints
in a temporary folder) on the device the recipe selects, and reports the median wall-clock and
process CPU seconds of one step, steps/s and samples/s (clips of ``data.clip_len`` frames, over
all ranks) at that median, the peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
process's peak resident set, which includes the decoded training data), and how long the
recipe's ``trainer.max_steps`` would take at that pace. Any other argument is passed to the CLI
as an override (``--data.batch_size=4``, ``--model.compile=true``). ``--json`` prints one JSON
object instead of the sentence, so that a GPU run can be sized before it starts.

``--fit --seconds S --report FILE`` instead trains the recipe for real (its loggers, checkpoints
and validation) within a wall-clock budget: after a few steps the pace is measured and
``trainer.max_steps`` -- with it the end of the cosine learning-rate schedule -- is set to the
steps that fit in the rest of the budget (re-estimated every ``--probe`` steps); the budget also
stops training outright. It then saves ``<default_root_dir>/checkpoints/final.ckpt``, validates,
and writes the throughput and the validation metrics to FILE (JSON). ``scripts/device_train.sh``
runs both stages of ``recipes/large.yaml`` this way.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback


class StepTimer(Callback):
    """Records the wall-clock and process CPU seconds of every training batch (forward, backward, step).

    On CUDA the device is synchronised at both ends of a batch, so that a step's time includes
    its kernels, not only their launch.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self._sync(pl_module)
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._sync(pl_module)
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


class TimeBudget(Callback):
    """Fits training into ``seconds`` of wall-clock time from the first training batch (compilation included).

    Every ``probe`` steps (the first after ``skip`` steps, which absorb compilation and warm-up)
    the median pace of the recent steps gives how many more steps fit in the remaining time;
    ``trainer.max_steps`` and the ``total`` of every :class:`~progvc.training.module.WarmupCosine`
    schedule are set to that, so the learning rate still decays to its floor at the end.
    Training also stops once the budget is spent.
    """

    def __init__(self, seconds: float, probe: int = 50, skip: int = 5, margin: float = 0.97) -> None:
        self.seconds, self.probe, self.skip, self.margin = float(seconds), probe, skip, margin
        self.start: float | None = None
        self.times: list[float] = []
        self.planned: int | None = None
        self.recipe_steps = -1
        self._t = 0.0

    def elapsed(self) -> float:
        """Seconds since the first training batch started."""
        return 0.0 if self.start is None else time.perf_counter() - self.start

    def on_train_start(self, trainer, pl_module) -> None:
        self.recipe_steps = trainer.max_steps

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.times.append(time.perf_counter() - self._t)
        measured = len(self.times) - self.skip
        if measured == 3 or (measured > 0 and measured % self.probe == 0):
            self._replan(trainer)
        if self.elapsed() >= self.seconds:
            trainer.should_stop = True

    def _replan(self, trainer) -> None:
        from progvc.training.module import WarmupCosine

        pace = statistics.median(self.times[self.skip :][-self.probe :])
        remaining = self.seconds - self.elapsed()
        total = trainer.global_step + max(1, int(self.margin * remaining / pace))
        if self.recipe_steps > 0:
            total = min(total, self.recipe_steps)
        trainer.fit_loop.epoch_loop.max_steps = total
        for config in trainer.lr_scheduler_configs:
            for fn in getattr(config.scheduler, "lr_lambdas", []):
                if isinstance(fn, WarmupCosine):
                    fn.total = total
        self.planned = total


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(wall: Sequence[float], cpu: Sequence[float], cli) -> dict[str, Any]:
    """Steps/s, samples/s, frames/s (at the median step time) and peak memory of a fitted ``ProgVCCLI``."""
    trainer, data, device = cli.trainer, cli.datamodule, cli.model.device
    wall_s = statistics.median(wall)
    samples = data.batch_size * trainer.world_size
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
        name = torch.cuda.get_device_name(device)
    else:
        peak, peak_kind, name = peak_rss_mib(), "process_peak_rss", "cpu"
    return {
        "device": device.type,
        "device_name": name,
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
        "compile": bool(cli.model.hparams.get("compile", False)),
        "threads": torch.get_num_threads(),
        "batch_size": data.batch_size,
        "clip_len": data.clip_len,
        "steps": len(wall),
        "wall_s": wall_s,
        "cpu_s": statistics.median(cpu),
        "steps_per_s": 1.0 / wall_s,
        "samples_per_s": samples / wall_s,
        "frames_per_s": samples * data.clip_len / wall_s,
        "peak_memory_mib": peak,
        "peak_memory_kind": peak_kind,
    }


def measure(config: str, steps: int = 10, warmup: int = 2, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Throughput of a recipe (:func:`throughput` of ``steps`` steps after ``warmup``), and its ``max_steps``."""
    from progvc.training.cli import ProgVCCLI

    if steps < 1 or warmup < 0:
        raise ValueError("steps must be >= 1 and warmup >= 0")
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
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        cli.trainer.fit(cli.model, cli.datamodule)
    res = {"config": str(config), **throughput(timer.wall[warmup:], timer.cpu[warmup:], cli)}
    res["max_steps"] = max_steps
    res["max_steps_hours"] = res["wall_s"] * max_steps / 3600 if max_steps and max_steps > 0 else None
    return res


def fit_within(config: str, seconds: float, overrides: Sequence[str] = (), probe: int = 50) -> dict[str, Any]:
    """Train a recipe for real within ``seconds`` (:class:`TimeBudget`), save ``final.ckpt``, validate.

    Returns the throughput of the run's steps (the first ``TimeBudget.skip`` left out, they hold
    the compilation), the steps done, the seconds spent (training, validation) and the validation
    metrics of the final weights.
    """
    from progvc.training.cli import ProgVCCLI

    cli = ProgVCCLI(args=[f"--config={config}", *overrides], run=False)
    timer, budget = StepTimer(), TimeBudget(seconds, probe=probe)
    cli.trainer.callbacks += [timer, budget]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_s = time.perf_counter() - start
    final = Path(cli.trainer.checkpoint_callback.dirpath) / "final.ckpt"
    cli.trainer.save_checkpoint(final)
    start = time.perf_counter()
    metrics = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)
    val_s = time.perf_counter() - start
    skip = min(budget.skip, max(0, len(timer.wall) - 1))
    res = {"config": str(config), **throughput(timer.wall[skip:], timer.cpu[skip:], cli)}
    res.update(
        steps=int(cli.trainer.global_step),
        budget_s=seconds,
        fit_s=fit_s,
        train_s=budget.elapsed(),
        first_steps_s=sum(timer.wall[:skip]),
        validate_s=val_s,
        checkpoint=str(final),
        validation={k: float(v) for k, v in (metrics[0] if metrics else {}).items()},
    )
    return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m progvc.bench training", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--fit", action="store_true", help="train for real within --seconds (see above)")
    parser.add_argument("--seconds", type=float, default=600.0, help="--fit: wall-clock budget of training")
    parser.add_argument("--probe", type=int, default=50, help="--fit: re-plan the steps every N steps")
    parser.add_argument("--report", help="--fit: also write the JSON report to this file")
    args, overrides = parser.parse_known_args(argv)
    if args.fit:
        res = fit_within(args.config, args.seconds, overrides, probe=args.probe)
        text = json.dumps(res, indent=1)
        if args.report:
            Path(args.report).write_text(text + "\n")
        print(text)
        return 0
    res = measure(args.config, args.steps, args.warmup, overrides)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    hours = "" if res["max_steps_hours"] is None else f" -> {res['max_steps_hours']:.2f} h at this pace"
    print(
        f"{args.config} on {res['device_name']} ({res['precision']}, {res['threads']} threads): "
        f"{res['wall_s']:.3f} s/step wall, {res['cpu_s']:.3f} s/step CPU (median of {args.steps}); "
        f"{res['steps_per_s']:.2f} steps/s, {res['samples_per_s']:.1f} samples/s "
        f"({res['frames_per_s']:.1f} frames/s), peak memory {res['peak_memory_mib']:.0f} MiB "
        f"({res['peak_memory_kind']}); max_steps={res['max_steps']}{hours}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
