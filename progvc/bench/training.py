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


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(config: str, steps: int = 10, warmup: int = 2, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Throughput of a recipe: median step times, steps/s, samples/s, frames/s, peak memory, device."""
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
        device = cli.model.device
        world = cli.trainer.world_size
        data = cli.datamodule
    wall, cpu = timer.wall[warmup:], timer.cpu[warmup:]
    wall_s = statistics.median(wall)
    samples = data.batch_size * world
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
        name = torch.cuda.get_device_name(device)
    else:
        peak, peak_kind, name = peak_rss_mib(), "process_peak_rss", "cpu"
    return {
        "config": str(config),
        "device": device.type,
        "device_name": name,
        "world_size": world,
        "precision": str(cli.trainer.precision),
        "threads": torch.get_num_threads(),
        "batch_size": data.batch_size,
        "clip_len": data.clip_len,
        "steps": steps,
        "wall_s": wall_s,
        "cpu_s": statistics.median(cpu),
        "steps_per_s": 1.0 / wall_s,
        "samples_per_s": samples / wall_s,
        "frames_per_s": samples * data.clip_len / wall_s,
        "peak_memory_mib": peak,
        "peak_memory_kind": peak_kind,
        "max_steps": max_steps,
        "max_steps_hours": wall_s * max_steps / 3600 if max_steps and max_steps > 0 else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m progvc.bench training", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args, overrides = parser.parse_known_args(argv)
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
