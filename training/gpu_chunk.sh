#!/usr/bin/env bash
# One training chunk on a CUDA machine without network (the `device` tool): resumes from the committed EMA
# weights of the lineage (training/resume/; the trainer's log names the file it resumed from), trains MINUTES
# minutes in bf16 and writes the weights and the log to OUT.
#   carry: training/data/qm9_compact.npz (build it here first with `python training/prepare_data.py`)
#   usage: training/gpu_chunk.sh [MINUTES=8] [OUT=$OUT] [BATCH=512] [LR=5e-4] [trainer flags, e.g. --lr-decay]
#   (the trainer flags come last on its command line, so a --resume among them replaces the committed file)
# On a GPU the 9x128 step is bound by kernel launches, not arithmetic, so a large batch costs little extra time
# per step; the full checkpoint (with optimizer state) stays on the machine, only the EMA weights come back.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-8}
OUT=${2:-${OUT:?set OUT}}
BATCH=${3:-512}
LR=${4:-5e-4}
shift $(( $# < 4 ? $# : 4 ))
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, safetensors, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 training/train.py --device cuda --minutes "$MINUTES" --batch "$BATCH" --lr "$LR" \
  --data training/data/qm9_compact.npz --resume training/resume/edm_qm9_9x128.safetensors \
  --out-dir "$OUT" --ckpt /tmp/equivariant_ckpt.pt --eval-minutes 3 --save-minutes 2 --log-every 500 "$@" \
  2>&1 | tee "$OUT/train_gpu.log"
