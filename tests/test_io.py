"""progvc.io: reading real clips, writing y4m / mp4 / PNG folders, and clear errors."""

from fractions import Fraction

import numpy as np
import pytest

from progvc.errors import ConfigError, VideoReadError
from progvc.io import (
    VideoWriteError,
    area_downscale,
    iter_video,
    parse_size,
    probe_video,
    read_video,
    sample_clip,
    write_video,
)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    frames, _ = read_video(sample_clip("bikes"), max_frames=4)
    return np.ascontiguousarray(frames[:, 100:148, 200:264])  # [4, 48, 64, 3]


def test_sample_clips_probe():
    info = probe_video(sample_clip("bikes"))
    assert (info.width, info.height) == (640, 272) and info.fps == pytest.approx(25, abs=5)
    carphone = probe_video(sample_clip("carphone"))
    assert (carphone.width, carphone.height) == (176, 144)
    with pytest.raises(ConfigError, match="unknown sample clip"):
        sample_clip("nope")


def test_read_video_window_matches_stream():
    path = sample_clip("carphone")
    frames, fps = read_video(path, max_frames=3, start=2)
    assert frames.shape == (3, 144, 176, 3) and frames.dtype == np.uint8 and fps > 0
    info, it = iter_video(path, max_frames=5)
    streamed = np.stack(list(it))
    assert streamed.shape[0] == 5 and info.width == 176
    np.testing.assert_array_equal(streamed[2:5], frames)
    assert read_video(path, max_frames=0)[0].shape == (0, 144, 176, 3)


def test_read_video_bounds_memory():
    with pytest.raises(VideoReadError, match="use iter_video"):
        read_video(sample_clip("carphone"), max_bytes=176 * 144 * 3 * 2)


def test_y4m_round_trip(tmp_path, clip):
    path = tmp_path / "a.y4m"
    assert write_video(path, clip, fps=Fraction(30000, 1001)) == 4
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (64, 48, 4)
    assert info.fps == pytest.approx(30000 / 1001)
    back, _ = read_video(path)
    # 4:4:4 raw YUV: only the 8-bit RGB<->YUV rounding is lost
    assert np.abs(back.astype(int) - clip.astype(int)).mean() < 2.0


def test_odd_size_and_generator_input(tmp_path, clip):
    odd = clip[:, :47, :63]
    path = tmp_path / "odd.mp4"
    assert write_video(path, (f for f in odd), fps=25) == 4
    back, fps = read_video(path)
    assert back.shape == odd.shape and fps == pytest.approx(25)
    assert np.abs(back.astype(int) - odd.astype(int)).mean() < 6.0


def test_png_folder_round_trip_is_exact(tmp_path, clip):
    folder = tmp_path / "frames"
    write_video(folder, [clip[:2], clip[2:]])  # chunks of [t, H, W, 3]
    back, fps = read_video(folder)
    np.testing.assert_array_equal(back, clip)
    # natural order: frame 10 after frame 9
    for i in range(4, 11):
        write_video(tmp_path / "tmp", clip[i % 4 : i % 4 + 1])
        (tmp_path / "tmp" / "frame_000000.png").rename(folder / f"frame_{i}.png")
    assert probe_video(folder).num_frames == 11


@pytest.mark.parametrize(
    "content, match",
    [(b"", "not a readable video"), (b"\x00garbage" * 100, "not a readable video")],
)
def test_unreadable_inputs(tmp_path, content, match):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match=match):
        read_video(path)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(VideoReadError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoReadError, match="holds no images"):
        read_video(tmp_path)
    with pytest.raises(VideoReadError, match="no frames from frame 500"):
        read_video(sample_clip("carphone"), start=500)
    with pytest.raises(ConfigError, match="max_frames"):
        read_video(sample_clip("carphone"), max_frames=-1)


@pytest.mark.parametrize("size", [b"W20000 H100", b"W100000 H100000"])
def test_absurd_y4m_size_is_refused_before_decoding(tmp_path, size):
    path = tmp_path / "huge.y4m"
    path.write_bytes(b"YUV4MPEG2 " + size + b" F25:1 Ip C420\nFRAME\n" + b"\x00" * 64)
    with pytest.raises(VideoReadError):
        read_video(path)


def test_write_errors(tmp_path, clip):
    with pytest.raises(ConfigError, match="unsupported output type"):
        write_video(tmp_path / "a.gif", clip)
    with pytest.raises(ConfigError, match="uint8"):
        write_video(tmp_path / "a.y4m", clip.astype(np.float32))
    with pytest.raises(ConfigError, match="one size"):
        write_video(tmp_path / "b.y4m", [clip[0], clip[0, :10]])
    with pytest.raises(VideoWriteError):
        write_video(tmp_path / "no" / "dir" / "a.mp4", clip)


def test_area_downscale_averages_blocks_and_refuses_to_upscale():
    frames = np.zeros((2, 4, 6, 3), np.uint8)
    frames[:, :2, :3] = 200  # one 2x3 block bright: its average survives a 2x3 reduction exactly
    small = area_downscale(frames, (2, 2))
    assert small.shape == (2, 2, 2, 3) and small.dtype == np.uint8
    assert small[0, 0, 0].tolist() == [200] * 3 and small[0, 1, 1].tolist() == [0] * 3
    assert np.array_equal(area_downscale(frames, (4, 6)), frames)
    with pytest.raises(ConfigError, match="no larger"):
        area_downscale(frames, (8, 6))
    assert parse_size("144x176") == (144, 176) and parse_size("2X3") == (2, 3)
    for bad in ("144", "ax3", "0x5", "3x4x5"):
        with pytest.raises(ConfigError, match="HxW"):
            parse_size(bad)
