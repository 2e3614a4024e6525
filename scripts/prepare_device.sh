#!/usr/bin/env bash
# prepare_device.sh -- get what scripts/device_train.sh needs on an offline GPU machine that receives
# only the repository's working tree (at most 64 MiB, git-ignored folders included when named):
#
#   1. wheels: manylinux x86-64 wheels for Python 3.12 of the packages that machine's Python lacks
#      (compressai, constriction, av, jsonargparse, piq, lpips and their own missing needs), into
#      OUT/wheels; device_train.sh installs them there with `pip install --no-index --target`;
#   2. a data pack of at most 40 MiB from the offline corpus (python scripts/build_corpus.py):
#      every video re-encoded with x264 (all frames, so the recipes' frame ranges still apply;
#      kept as it is when that is not smaller) at crf 20, else 26, else 30, and every photograph
#      as a JPEG whose longer side is the largest of 1024, 768, 640, 512 (384, 256 only at crf 30)
#      that fits, into OUT/pack, with OUT/pack/pack.json mapping corpus paths to packed files;
#   3. a check of the sizes against the limits: pack <= 40 MiB, and the working tree + wheels +
#      pack <= 64 MiB. It prints each size and fails when something does not fit.
#
# Usage (from anywhere; OUT defaults to device/ in the repository, which git ignores):
#   bash scripts/prepare_device.sh [--out DIR] [--corpus DIR] [--no-wheels] [--pack-mib N]
# Then: the device call carries OUT and runs `bash scripts/device_train.sh --out "$OUT"`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/device"
corpus="$repo/data/corpus"
wheels=1
pack_mib=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --corpus) corpus="$2"; shift 2 ;;
    --no-wheels) wheels=0; shift ;;
    --pack-mib) pack_mib="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prepare_device.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -d "$corpus" ] || { echo "prepare_device.sh: no corpus at $corpus (run: python scripts/build_corpus.py)" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# Exact versions, one of each (two versions of a package stop the whole install there). The GPU
# image already has torch, torchvision, lightning, torchmetrics, timm, einops, numpy, scipy,
# pillow, pyyaml, tqdm, matplotlib, pandas, torch-geometric and tensorboard.
PACKAGES=(
  compressai==1.2.8 pytorch-msssim==1.0.0
  constriction==0.5.0
  av==18.1.0
  jsonargparse==4.53.0 typeshed-client==2.15.0 docstring-parser==0.18.0
  piq==0.8.0
  lpips==0.1.4
)
if [ "$wheels" = 1 ]; then
  echo "== wheels -> $out/wheels"
  rm -rf "$out/wheels"
  mkdir -p "$out/wheels"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_34_x86_64 -d "$out/wheels" "${PACKAGES[@]}"
fi

echo "== data pack -> $out/pack (from $corpus)"
python3 - "$corpus" "$out" "$repo" "$pack_mib" <<'EOF'
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from progvc.io import read_video, write_video

MIB = 2**20
corpus, out, repo = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
PACK_LIMIT, TREE_LIMIT = 40 * MIB, 64 * MIB
VIDEO = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".y4m", ".m4v", ".mpg", ".mpeg"}
IMAGE = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
SIDES = (1024, 768, 640, 512, 384, 256)


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


# what travels besides: the tracked and untracked-but-not-ignored files of the working tree
names = subprocess.run(
    ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    cwd=repo, capture_output=True, check=True,
).stdout.split(b"\0")
tree = sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())
wheels = size(out / "wheels")
budget = min(PACK_LIMIT, TREE_LIMIT - tree - wheels - MIB)  # 1 MiB to spare
if sys.argv[4]:
    budget = min(budget, int(float(sys.argv[4]) * MIB))

pack = out / "pack"
shutil.rmtree(pack, ignore_errors=True)
(pack / "videos").mkdir(parents=True)
(pack / "images").mkdir()
videos = [
    src for src in sorted((corpus / "videos").glob("*")) if src.suffix.lower() in VIDEO
] if (corpus / "videos").is_dir() else []
images = []
for src in sorted((corpus / "images").rglob("*")) if (corpus / "images").is_dir() else []:
    if src.suffix.lower() in IMAGE:
        with Image.open(src) as img:
            img = img.convert("RGB")
            img.thumbnail((SIDES[0], SIDES[0]), Image.Resampling.LANCZOS)
            images.append((src, np.asarray(img)))


def pack_videos(crf: int) -> dict[str, str]:
    """Every video re-encoded at ``crf`` (all frames), or copied when that is not smaller."""
    files = {}
    for f in (pack / "videos").glob("*"):
        f.unlink()
    for src in videos:
        frames, fps = read_video(src)
        dst = pack / "videos" / (src.stem + ".mp4")
        write_video(dst, frames, fps=fps, crf=crf)
        if dst.stat().st_size >= src.stat().st_size:  # already compact: keep the original
            dst.unlink()
            dst = pack / "videos" / src.name
            shutil.copyfile(src, dst)
        files[f"videos/{src.name}"] = f"videos/{dst.name}"
        mib = (src.stat().st_size / MIB, dst.stat().st_size / MIB)
        print(f"  {src.name}: {len(frames)} frames, {mib[0]:.2f} -> {mib[1]:.2f} MiB (crf {crf})")
    return files


def pack_images(side: int) -> None:
    for f in (pack / "images").glob("*"):
        f.unlink()
    for src, pixels in images:
        img = Image.fromarray(pixels)
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        name = "__".join(src.relative_to(corpus / "images").with_suffix(".jpg").parts)
        img.save(pack / "images" / name, quality=90)


# the best quality that fits: x264 crf 20, 26 or 30 for the videos, and photographs whose longer
# side is as large as possible but at least 512 (256 as a last resort, with crf 30)
chosen = None
for crf in (20, 26, 30):
    files = pack_videos(crf)
    for side in SIDES:
        if side < 512 and crf != 30:
            break
        pack_images(side)
        if size(pack) <= budget:
            chosen = side
            break
    if chosen:
        break
files["images"] = "images"  # the recipes name the folder
total = size(pack)
print(f"  {len(images)} photographs, longer side <= {chosen or SIDES[-1]}: {size(pack / 'images') / MIB:.2f} MiB")
manifest = {"corpus": str(corpus), "max_side": chosen, "bytes": total, "files": files}
(pack / "pack.json").write_text(json.dumps(manifest, indent=1) + "\n")

print("== sizes")
print(f"  working tree (tracked + untracked)   {tree / MIB:7.2f} MiB")
print(f"  wheels ({out / 'wheels'})  {wheels / MIB:7.2f} MiB")
print(f"  data pack ({pack})  {total / MIB:7.2f} MiB   (limit {min(PACK_LIMIT, budget) / MIB:.2f} MiB)")
print(f"  all that travels                     {(tree + wheels + total) / MIB:7.2f} MiB   (limit 64 MiB)")
if chosen is None or total > PACK_LIMIT or tree + wheels + total > TREE_LIMIT:
    sys.exit(
        f"prepare_device.sh: the data pack ({total / MIB:.2f} MiB) does not fit: the limits are 40 MiB for "
        f"the pack and 64 MiB for working tree + wheels + pack (budget left for the pack: {budget / MIB:.2f} MiB)"
    )
print("  everything is within the limits")
EOF
