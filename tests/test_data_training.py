"""Every kind of data source trains recipes/tiny.yaml for a few steps: a folder of videos and
photographs, frames:, vimeo:, motion: and litdata: (each test builds its own tiny inputs)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from progvc.cli.train_cmds import run_lightning
from progvc.io import write_video
from progvc.training.streaming import pack

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
FAST = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
    "--trainer.val_check_interval=2",
    "--trainer.limit_val_batches=1",
    "--trainer.max_steps=2",
    "--data.batch_size=2",
    "--data.val_clips=2",
]


def _frames(t: int, seed: int, h: int = 72, w: int = 88) -> np.ndarray:
    """Smooth moving content (a shifted gradient plus a little noise), uint8 ``[t, h, w, 3]``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = [
        np.stack([(xx + 2 * k) * 2, yy * 3, (xx + yy + k) % 256], -1) + rng.integers(0, 20, (h, w, 3))
        for k in range(t)
    ]
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    media = root / "media"  # two short mp4 files and three PNGs
    media.mkdir()
    for i in range(2):
        write_video(media / f"clip{i}.mp4", _frames(6, seed=i))
    for i in range(3):
        Image.fromarray(_frames(1, seed=10 + i)[0]).save(media / f"photo{i}.png")
    write_video(root / "frames", _frames(5, seed=20))  # a folder of PNG frames
    vimeo = root / "vimeo"
    for n, name in enumerate(["00001/0001", "00001/0002", "00002/0001"]):
        write_video(vimeo / "sequences" / name, _frames(7, seed=30 + n))
        for k, png in enumerate(sorted((vimeo / "sequences" / name).iterdir())):
            png.rename(png.with_name(f"im{k + 1}.png"))
    (vimeo / "sep_trainlist.txt").write_text("00001/0001\n00002/0001\n")
    (vimeo / "sep_testlist.txt").write_text("00001/0002\n")
    pack([f"motion:{media}"], root / "packed", clip_len=2, progress=False)
    return {
        "root": root,
        "media": media,
        "frames": root / "frames",
        "vimeo": vimeo,
        "packed": root / "packed",
    }


CASES = {
    "folder": (["{media}"], None, 1),
    "frames": (["frames:{frames}[:3]"], ["frames:{frames}[3:]"], 2),
    "vimeo": (["vimeo:{vimeo}"], ["vimeo:{vimeo}/sep_testlist.txt"], 2),
    "motion": (["motion:{media}"], None, 3),
    "litdata": (["litdata:{packed}"], ["litdata:{packed}"], 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_source_kind_trains_the_tiny_recipe(case, inputs, tmp_path):
    train, val, clip_len = CASES[case]
    args = ["fit", f"--config={TINY}", f"--trainer.default_root_dir={tmp_path}", *FAST]
    args += [f"--data.train={[s.format(**inputs) for s in train]}".replace("'", '"')]
    args += [
        f"--data.val={[s.format(**inputs) for s in val]}".replace("'", '"') if val else "--data.val=null"
    ]
    args += [f"--data.clip_len={clip_len}"]
    assert run_lightning(args) == 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
