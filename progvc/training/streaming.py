"""Training data larger than memory: LitData chunks written by :func:`pack`, streamed by :class:`StreamingClips`.

:func:`pack` (``progvc data pack SOURCES... --out DIR``) decodes any sources that
:mod:`progvc.training.data` reads (videos, images, folders, globs, ``frames:``, ``vimeo:``,
``motion:``) and writes them as LitData chunks: every item is ``{"frames": uint8 [L, H, W, 3],
"still": 0 | 1}``, one clip of ``L = clip_len`` consecutive frames of a video (``L = 1``: frames)
or one still of a ``motion:`` source (``[1, H, W, 3]``, set in motion at load time). A file
``progvc.json`` beside LitData's ``index.json`` records what was packed.

The data source ``litdata:DIR`` streams them: :class:`StreamingClips` is a LitData
``StreamingDataset`` (shuffled chunk by chunk, sharded across DDP ranks, nodes and loader
workers, read from a local folder; an object-store URL works the same way where LitData can
reach it) that cuts random crops (:func:`progvc.training.data.random_clip`) from each item;
:class:`FixedStreamingClips` holds the fixed validation clips.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from litdata import StreamingDataset
from torch import Tensor
from torch.utils.data import Dataset

from progvc.errors import ConfigError, VideoReadError
from progvc.training.data import Source, _resize, load_source, random_clip, resolve_sources
from progvc.training.motion import MotionSettings

log = logging.getLogger(__name__)

#: file beside LitData's ``index.json`` that says what :func:`pack` wrote.
META = "progvc.json"
FORMAT = 1


def _clips_of(source: Source, clip_len: int, max_frames: int | None, max_side: int | None):
    """Yield the uint8 ``[clip_len, H, W, 3]`` clips of a video (consecutive, not overlapping),
    decoding one clip at a time; the frames left over at the end are dropped."""
    from progvc.io import iter_video

    count = None if source.stop is None else source.stop - source.start
    if max_frames is not None:
        count = max_frames if count is None else min(count, max_frames)
    _, frames = iter_video(source.path, max_frames=count, start=source.start)
    group: list[np.ndarray] = []
    for frame in frames:
        group.append(frame)
        if len(group) == clip_len:
            yield _resize(np.stack(group), max_side)
            group = []


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"--out {out} is not empty; pass --overwrite to replace a previous pack")
        if not (out / META).is_file():
            raise ConfigError(f"--out {out} is not empty and holds no {META}: refusing to overwrite it")
        for f in [out / META, out / "index.json", *out.glob("chunk-*.bin"), *out.glob("chunk-*.json")]:
            f.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def pack(
    specs: Sequence[str],
    out: str | Path,
    clip_len: int = 1,
    max_side: int | None = None,
    max_frames_per_video: int | None = None,
    chunk_bytes: str | int = "64MB",
    compression: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Decode ``specs`` and write them to ``out`` as LitData chunks of clips (see the module docstring).

    Args:
        specs: data sources (:func:`~progvc.training.data.resolve_sources`); not ``litdata:``.
        out: output folder (created; must be empty unless ``overwrite`` and it holds an earlier pack).
        clip_len: frames per packed clip ``L`` (1: single frames). Training may use any
            ``clip_len <= L``. Plain images need ``L = 1``; stills of ``motion:`` sources fit any ``L``.
        max_side: downscale frames whose longer side exceeds this (antialiased), pixels.
        max_frames_per_video: read at most this many frames of each video.
        chunk_bytes: LitData chunk size (``"64MB"`` or bytes).
        compression: LitData chunk compression (``"zstd"`` needs the ``zstandard`` package), or ``None``.
        overwrite: replace an earlier pack in ``out``.
        progress: show a progress bar (stderr).

    Returns:
        what ``progvc.json`` records: ``clip_len``, ``items``, ``stills``, ``frames``, ``pixels``,
        ``sizes`` (``[h, w, count]`` per distinct size), ``sources`` and ``skipped`` (unreadable files).
    """
    from litdata.streaming.writer import BinaryWriter
    from tqdm import tqdm

    if clip_len < 1:
        raise ConfigError(f"--clip-len must be >= 1, got {clip_len}")
    groups = []
    for spec in [specs] if isinstance(specs, str) else list(specs):
        sources = resolve_sources([spec])
        for s in sources:
            if s.kind == "litdata":
                raise ConfigError(f"data source {spec!r} is already packed")
            if s.kind == "image" and clip_len > 1:
                raise ConfigError(
                    f"data source {spec!r}: {s.path.name} is an image, a single frame, and --clip-len is "
                    f"{clip_len}; pack images with --clip-len 1, or as motion:{spec} (clips along a camera path)"
                )
        groups.append((spec, sources))
    out = Path(out).expanduser()
    _prepare_out(out, overwrite)
    try:
        writer = BinaryWriter(str(out), chunk_bytes=chunk_bytes, compression=compression)
    except (ValueError, ModuleNotFoundError, RuntimeError) as exc:
        raise ConfigError(f"cannot write LitData chunks to {out}: {exc}") from None
    items, stills, frames, pixels = 0, 0, 0, 0
    sizes: Counter[tuple[int, int]] = Counter()
    skipped: list[str] = []
    total = sum(len(sources) for _, sources in groups)
    with tqdm(total=total, desc=f"packing into {out}", unit="source", disable=not progress) as bar:
        for spec, sources in groups:
            before = items
            for source in sources:
                try:
                    if source.kind in ("image", "still"):
                        clips = iter([load_source(source, max_side=max_side)])
                    else:
                        clips = _clips_of(source, clip_len, max_frames_per_video, max_side)
                    for clip in clips:
                        writer[items] = {"frames": clip, "still": int(source.kind == "still")}
                        items += 1
                        stills += source.kind == "still"
                        frames += clip.shape[0]
                        pixels += clip.shape[0] * clip.shape[1] * clip.shape[2]
                        sizes[clip.shape[1:3]] += 1
                        bar.set_postfix(items=items, refresh=False)
                except VideoReadError as exc:
                    if not source.optional:
                        raise
                    log.warning("skipping %s: %s", source.path, exc)
                    skipped.append(str(source.path))
                bar.update(1)
            if items == before:
                raise ConfigError(
                    f"data source {spec!r} holds no readable video or image"
                    + (f" with a clip of {clip_len} frames" if clip_len > 1 else "")
                )
    writer.done()
    writer.merge()
    meta = {
        "format": FORMAT,
        "clip_len": clip_len,
        "items": items,
        "stills": stills,
        "frames": frames,
        "pixels": pixels,
        "sizes": [[h, w, n] for (h, w), n in sorted(sizes.items())],
        "sources": [spec for spec, _ in groups],
        "skipped": skipped,
    }
    (out / META).write_text(json.dumps(meta, indent=1))
    return meta


def read_meta(folder: str | Path) -> dict:
    """The ``progvc.json`` of a folder written by :func:`pack`."""
    path = Path(folder) / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder}: no {META}; write the folder with 'progvc data pack'") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: pack format {meta.get('format')!r}, this progvc reads {FORMAT}; repack")
    return meta


def check_pack(folder: str | Path, clip_len: int, crop: tuple[int, int], role: str) -> dict:
    """Check that a pack holds clips of ``clip_len`` frames (warn about items smaller than ``crop``)."""
    meta = read_meta(folder)
    if clip_len > meta["clip_len"] and meta["items"] > meta["stills"]:
        raise ConfigError(
            f"data.{role}: litdata:{folder} holds clips of {meta['clip_len']} frames, clip_len is {clip_len}; "
            f"pack with --clip-len {clip_len} (or more)"
        )
    small = sum(n for h, w, n in meta["sizes"] if h < crop[0] or w < crop[1])
    if small:
        log.warning(
            "data.%s: %d of the %d items of litdata:%s are smaller than the %dx%d crop; they are upscaled",
            role, small, meta["items"], folder, crop[1], crop[0],
        )  # fmt: skip
    return meta


class StreamingClips(StreamingDataset):
    """Random training clips, uint8 ``[clip_len, 3, h, w]``, streamed from a folder written by :func:`pack`.

    LitData shuffles the chunks and the items within them (``seed``, new order each epoch), and
    gives every DDP rank and every loader worker its own disjoint share of the items
    (``drop_last``: equal shares). Each item becomes one random clip as in the in-memory
    :class:`~progvc.training.data.ClipDataset` (random start, crop, flip, pixel density, camera path of stills).

    Args:
        folder: the packed folder (local path, or an object-store URL LitData reads).
        clip_len: frames per clip (at most the packed clip length, except for stills).
        crop: ``(h, w)`` in pixels.
        flip: random horizontal flips.
        scale: ``(lo, hi)`` pixel-density augmentation, or ``None``.
        motion: camera motion limits for stills.
        seed: shuffling seed.
    """

    def __init__(
        self,
        folder: str | Path,
        clip_len: int,
        crop: tuple[int, int],
        flip: bool = True,
        scale: tuple[float, float] | None = None,
        motion: MotionSettings | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(str(folder), shuffle=True, drop_last=True, seed=seed)
        self.progvc_clip = (clip_len, tuple(crop), flip, scale, motion)

    def __getitem__(self, index) -> Tensor:  # noqa: ANN001 (LitData passes a ChunkedIndex)
        item = super().__getitem__(index)
        clip_len, crop, flip, scale, motion = self.progvc_clip
        u = torch.rand(5, dtype=torch.float64).numpy()  # seeded by Lightning per rank and worker
        return random_clip(
            np.asarray(item["frames"]), clip_len, crop, u, bool(item["still"]), scale, flip, motion
        )


class FixedStreamingClips(Dataset):
    """``count`` fixed clips of a packed folder for validation: items spread evenly over the pack,
    each cut at a place drawn from a generator seeded with ``(seed, index)`` (no flip, no scaling),
    so every epoch, run and rank sees the same clips."""

    def __init__(
        self,
        folder: str | Path,
        clip_len: int,
        crop: tuple[int, int],
        count: int,
        seed: int = 0,
        motion: MotionSettings | None = None,
    ) -> None:
        self.dataset = StreamingDataset(str(folder), shuffle=False)
        n = len(self.dataset)
        self.indices = sorted({int(i * n / max(count, 1)) for i in range(min(count, n))})
        self.clip_len, self.crop, self.seed, self.motion = clip_len, tuple(crop), seed, motion

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Tensor:
        item = self.dataset[self.indices[index]]
        u = np.random.default_rng((self.seed, index)).random(5)
        frames = np.asarray(item["frames"])
        return random_clip(frames, self.clip_len, self.crop, u, bool(item["still"]), motion=self.motion)
