"""LitData streaming: progvc data pack, the litdata: source, disjoint DDP shards, bad input while packing."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from litdata import StreamingDataset

from progvc.cli import main
from progvc.errors import ConfigError
from progvc.io import write_video
from progvc.training.data import VideoDataModule, load_source, resolve_sources
from progvc.training.streaming import FixedStreamingClips, StreamingClips, pack

REPO = Path(__file__).resolve().parents[1]


def _video(t: int, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A folder with a 7-frame lossless video (y4m), two PNG photographs and a text file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    write_video(root / "clip.y4m", _video(7))
    for i in range(2):
        Image.fromarray(_video(1, 48, 64, seed=i + 1)[0]).save(root / f"photo{i}.png")
    (root / "readme.txt").write_text("not media")
    return root


def test_pack_writes_litdata_chunks_of_frames_and_clips(media, tmp_path):
    meta = pack([str(media)], tmp_path / "frames", progress=False)
    assert meta["clip_len"] == 1 and meta["items"] == 7 + 2 and meta["stills"] == 0
    assert sorted(map(tuple, meta["sizes"])) == [(40, 56, 7), (48, 64, 2)]
    assert json.loads((tmp_path / "frames" / "progvc.json").read_text()) == meta
    ds = StreamingDataset(str(tmp_path / "frames"))  # plain LitData reads it
    video = load_source(resolve_sources([str(media / "clip.y4m")])[0])
    items = [np.asarray(ds[i]["frames"]) for i in range(len(ds))]
    assert all(x.dtype == np.uint8 and x.shape[0] == 1 for x in items)
    assert sum(any(np.array_equal(x[0], f) for x in items) for f in video) == 7  # every frame, exactly
    # clips of 3 frames, stills of a motion: source: 2 clips of the video (one frame left over) + 2 stills
    meta = pack([f"motion:{media}"], tmp_path / "clips", clip_len=3, progress=False)
    assert (meta["items"], meta["stills"], meta["frames"]) == (4, 2, 8)
    with pytest.raises(ConfigError, match="motion:"):  # plain images cannot be 3-frame clips
        pack([str(media)], tmp_path / "bad", clip_len=3, progress=False)
    with pytest.raises(ConfigError, match="not empty; pass --overwrite"):
        pack([str(media)], tmp_path / "frames", progress=False)
    assert (
        pack([str(media / "photo0.png")], tmp_path / "frames", overwrite=True, progress=False)["items"] == 1
    )


def test_pack_command_progress_warnings_and_errors(media, tmp_path, capsys, caplog):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_video(mixed / "ok.y4m", _video(2))
    (mixed / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 20)
    with caplog.at_level(logging.WARNING):
        assert main(["data", "pack", str(mixed), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "2 items" in out and "1 unreadable files skipped" in out and "litdata:" in out
    assert "packing into" in err  # the progress bar
    assert any("broken.mp4" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    (mixed / "ok.y4m").unlink()  # only the corrupt file is left: nothing readable
    assert main(["data", "pack", str(mixed), "--out", str(tmp_path / "none")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1].startswith("progvc: error:") and "holds no readable video or image" in errors[-1]
    assert main(["data", "pack", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "pack", f"litdata:{tmp_path / 'out'}", "--out", str(tmp_path / "y")]) == 2
    assert "already packed" in capsys.readouterr().err


def test_litdata_source_streams_random_clips_and_fixed_validation(media, tmp_path, caplog):
    pack([f"motion:{media}"], tmp_path / "pack", clip_len=3, progress=False)
    spec = f"litdata:{tmp_path / 'pack'}"
    with caplog.at_level(logging.WARNING):
        dm = VideoDataModule(train=[spec], clip_len=2, crop=44, batch_size=2, val_clips=3)
        dm.setup("fit")
    assert "2 of the 4 items" in caplog.text and "upscaled" in caplog.text  # 40x56 frames, 44x44 crops
    assert isinstance(dm.train_set, StreamingClips) and isinstance(dm.val_set, FixedStreamingClips)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and all(b.shape == (2, 2, 3, 44, 44) and b.dtype == torch.uint8 for b in batches)
    val = [dm.val_set[i] for i in range(len(dm.val_set))]
    assert len(val) == 3 and all(torch.equal(v, dm.val_set[i]) for i, v in enumerate(val))
    with pytest.raises(ConfigError, match="pack with --clip-len 4"):
        VideoDataModule(train=[spec], clip_len=4, crop=16).setup("fit")
    with pytest.raises(ConfigError, match="cannot be mixed"):
        VideoDataModule(train=[spec, str(media)], clip_len=1)
    with pytest.raises(ConfigError, match="no index.json"):
        VideoDataModule(train=[f"litdata:{media}"])


def test_ddp_ranks_train_on_disjoint_shards(tmp_path):
    """progvc fit on litdata: with DDP on two gloo processes: the ranks see disjoint halves of the items."""
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(24):  # item i (frames 2i, 2i + 1) is recognised by its value 10 * i
        Image.fromarray(np.full((64, 64, 3), 10 * (k // 2), np.uint8)).save(frames / f"{k:03d}.png")
    pack([f"frames:{frames}"], tmp_path / "pack", clip_len=2, progress=False)
    callback = {"class_path": "_record_batches.RecordBatches", "init_args": {"folder": str(tmp_path)}}
    cmd = [sys.executable, "-m", "progvc", "fit", f"--config={REPO / 'recipes' / 'tiny.yaml'}"]
    cmd += [f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_steps=3"]
    cmd += ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.limit_val_batches=0"]
    cmd += [
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.logger=false",
    ]
    cmd += [f"--data.train=[litdata:{tmp_path / 'pack'}]", "--data.val=null", "--data.batch_size=2"]
    cmd += [f"--trainer.callbacks=[{json.dumps(callback)}]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = [[int(v) // 10 for v in (tmp_path / f"rank{r}.txt").read_text().split()] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6  # 3 steps of 2 clips: one epoch of 6 items per rank
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(12))


def test_data_benchmark_measures_both_loaders(media, tmp_path):
    from progvc.bench.data import loader_rate

    pack([str(media / "clip.y4m")], tmp_path / "pack", clip_len=2, progress=False)
    for train in (str(media / "clip.y4m"), f"litdata:{tmp_path / 'pack'}"):
        dm = VideoDataModule(train=[train], clip_len=2, crop=16, batch_size=2, val_clips=1)
        assert loader_rate(dm, batches=4, warmup=1) > 0  # the 3-item LitData epoch restarts on the way
