"""Synthetic motion from still images: clips along a smooth random camera path.

A :class:`CameraPath` says, for every frame ``t``, where a virtual camera looks in the still
(``center(t)``, in source pixels), how many source pixels one output pixel covers (``zoom(t)``),
how far it is turned (``angle(t)``, radians) and how bright the frame is (``gain(t)``):

* pan: ``center(t) = (x0, y0) + v t + a t^2 / 2`` (sub-pixel, smooth: constant acceleration);
* zoom: ``zoom(t) = zoom0 * exp(zoom_rate * t)``;
* rotation: ``angle(t) = angle0 + angle_rate * t``;
* brightness: ``gain(t) = 1 + brightness_rate * t``.

:func:`random_camera_path` draws such a path that stays inside the still, and
:func:`motion_clip` renders it (bilinear sampling; an antialiased downscale first where the
camera is zoomed out, so that pixel-density augmentation does not alias). The data module's
``motion:SOURCE`` source uses both, so that the temporal context model sees global motion when
real video is scarce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class MotionSettings:
    """Largest motion per frame that :func:`random_camera_path` draws (each uniformly in ``[-max, max]``).

    Attributes:
        max_pan: pan speed, source pixels per frame (per axis).
        max_accel: change of the pan speed, pixels per frame^2 (per axis); keeps the path smooth.
        max_zoom: log-zoom change per frame (0.01 is 1 % per frame).
        max_rotation: rotation, degrees per frame.
        max_brightness: brightness gain change per frame (0.01 is 1 % per frame).
    """

    max_pan: float = 2.0
    max_accel: float = 0.1
    max_zoom: float = 0.01
    max_rotation: float = 0.2
    max_brightness: float = 0.01


@dataclass(frozen=True)
class CameraPath:
    """A smooth camera path over a still (see the module docstring for the formulas).

    Attributes:
        x0, y0: centre of frame 0, source pixels (pixel centres are integers).
        vx, vy: pan speed, pixels per frame.
        ax, ay: pan acceleration, pixels per frame^2.
        zoom0: source pixels per output pixel at frame 0 (``1``: native density, ``2``: half).
        zoom_rate: log-zoom change per frame.
        angle0: rotation at frame 0, radians.
        angle_rate: rotation per frame, radians.
        brightness_rate: gain change per frame.
    """

    x0: float
    y0: float
    vx: float = 0.0
    vy: float = 0.0
    ax: float = 0.0
    ay: float = 0.0
    zoom0: float = 1.0
    zoom_rate: float = 0.0
    angle0: float = 0.0
    angle_rate: float = 0.0
    brightness_rate: float = 0.0

    def center(self, t: float) -> tuple[float, float]:
        """``(x, y)`` of frame ``t``'s centre in source pixels."""
        return self.x0 + self.vx * t + 0.5 * self.ax * t * t, self.y0 + self.vy * t + 0.5 * self.ay * t * t

    def zoom(self, t: float) -> float:
        """Source pixels per output pixel at frame ``t``."""
        return self.zoom0 * math.exp(self.zoom_rate * t)

    def angle(self, t: float) -> float:
        """Rotation of frame ``t``, radians."""
        return self.angle0 + self.angle_rate * t

    def gain(self, t: float) -> float:
        """Brightness gain of frame ``t``."""
        return 1.0 + self.brightness_rate * t

    def source_coords(self, t: int, crop: tuple[int, int]) -> Tensor:
        """Source coordinates of every output pixel of frame ``t``: float64 ``[h, w, 2]`` as ``(x, y)``."""
        h, w = crop
        dy, dx = torch.meshgrid(
            torch.arange(h, dtype=torch.float64) - (h - 1) / 2,
            torch.arange(w, dtype=torch.float64) - (w - 1) / 2,
            indexing="ij",
        )
        z, a = self.zoom(t), self.angle(t)
        c, s = math.cos(a) * z, math.sin(a) * z
        cx, cy = self.center(t)
        return torch.stack([cx + c * dx - s * dy, cy + s * dx + c * dy], dim=-1)

    def footprint(self, clip_len: int, crop: tuple[int, int]) -> tuple[float, float, float, float]:
        """Bounding box ``(x_min, y_min, x_max, y_max)`` in source pixels of every frame's corners."""
        h, w = crop
        xs, ys = [], []
        for t in range(clip_len):
            z, a = self.zoom(t), self.angle(t)
            c, s = math.cos(a) * z, math.sin(a) * z
            cx, cy = self.center(t)
            for dx in (-(w - 1) / 2, (w - 1) / 2):
                for dy in (-(h - 1) / 2, (h - 1) / 2):
                    xs.append(cx + c * dx - s * dy)
                    ys.append(cy + s * dx + c * dy)
        return min(xs), min(ys), max(xs), max(ys)


def random_camera_path(
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    clip_len: int,
    crop: tuple[int, int],
    settings: MotionSettings = MotionSettings(),
    zoom0: float = 1.0,
) -> CameraPath:
    """A random path of ``clip_len`` frames of ``crop`` pixels that stays inside a still of ``image_hw``.

    Speeds are drawn uniformly within ``settings``; where the still is too small for the motion
    drawn, the motion is halved until it fits (and dropped altogether if it still does not), and
    ``zoom0`` is lowered until one frame fits. The start position is uniform over the positions
    that keep every frame inside.
    """
    h, w = image_hw
    zoom0 = min(zoom0, (w - 1) / max(crop[1] - 1, 1), (h - 1) / max(crop[0] - 1, 1))
    u = rng.uniform(-1.0, 1.0, size=8)
    motion = np.array(
        [
            settings.max_pan * u[0],
            settings.max_pan * u[1],
            settings.max_accel * u[2],
            settings.max_accel * u[3],
            settings.max_zoom * u[4],
            math.radians(settings.max_rotation) * u[5],
            settings.max_brightness * u[6],
        ]
    )
    start = rng.random(2)
    for attempt in range(12):
        if attempt == 11:
            motion = motion * 0
        vx, vy, ax, ay, zr, ar, br = (float(m) for m in motion)
        path = CameraPath(0.0, 0.0, vx, vy, ax, ay, zoom0, zr, 0.0, ar, br)
        x_min, y_min, x_max, y_max = path.footprint(clip_len, crop)
        room_x, room_y = (w - 1) - (x_max - x_min), (h - 1) - (y_max - y_min)
        if room_x >= 0 and room_y >= 0:
            break
        motion = motion * 0.5
    x0 = -x_min + max(room_x, 0.0) * float(start[0])
    y0 = -y_min + max(room_y, 0.0) * float(start[1])
    return CameraPath(x0, y0, vx, vy, ax, ay, zoom0, zr, 0.0, ar, br)


def motion_clip(image: np.ndarray | Tensor, path: CameraPath, clip_len: int, crop: tuple[int, int]) -> Tensor:
    """Render ``clip_len`` frames of ``crop = (h, w)`` pixels of a still along ``path``.

    Args:
        image: uint8 ``[H, W, 3]`` (numpy) or ``[3, H, W]`` (tensor).
        path: the camera path, in the still's pixel coordinates.
        clip_len: frames ``T``.
        crop: output size ``(h, w)``.

    Returns:
        uint8 ``[T, 3, h, w]``. Bilinear sampling (exact for sub-pixel shifts of smooth content);
        where the camera covers more than 1.25 source pixels per output pixel, the region it
        sees is first downscaled with an antialiased filter, so the frames do not alias.
    """
    x = (
        torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if isinstance(image, np.ndarray)
        else image
    )
    coords = torch.stack([path.source_coords(t, crop) for t in range(clip_len)])  # [T, h, w, 2]
    zoom_min = min(path.zoom(t) for t in range(clip_len))
    if zoom_min > 1.25:  # prefilter: cut the region seen, downscale it (antialiased), move the coordinates
        H, W = x.shape[1:]
        x_min, y_min, x_max, y_max = path.footprint(clip_len, crop)
        x_lo, y_lo = max(0, math.floor(x_min) - 2), max(0, math.floor(y_min) - 2)
        x_hi, y_hi = min(W, math.ceil(x_max) + 3), min(H, math.ceil(y_max) + 3)
        region = x[:, y_lo:y_hi, x_lo:x_hi].float()[None]
        size = (max(2, round((y_hi - y_lo) / zoom_min)), max(2, round((x_hi - x_lo) / zoom_min)))
        x = F.interpolate(region, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        fy, fx = size[0] / (y_hi - y_lo), size[1] / (x_hi - x_lo)
        coords = torch.stack(
            [(coords[..., 0] - x_lo + 0.5) * fx - 0.5, (coords[..., 1] - y_lo + 0.5) * fy - 0.5], -1
        )
    x = x.float()
    H, W = x.shape[1:]
    grid = torch.stack(
        [coords[..., 0] * (2 / max(W - 1, 1)) - 1, coords[..., 1] * (2 / max(H - 1, 1)) - 1], -1
    )
    frames = F.grid_sample(
        x[None].expand(clip_len, -1, -1, -1),
        grid.float(),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    gain = torch.tensor([path.gain(t) for t in range(clip_len)], dtype=torch.float32).view(-1, 1, 1, 1)
    return (frames * gain).round().clamp(0, 255).to(torch.uint8)
