#!/usr/bin/env bash
# One training chunk on a CUDA machine without network (the `device` tool): resumes from the committed EMA
# weights, trains MINUTES minutes in bf16 and writes the weights and the log to OUT.
#   carry: training/data/qm9_compact.npz (build it here first with `python training/prepare_data.py`)
#   usage: training/gpu_chunk.sh [MINUTES=8] [OUT=$OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-8}
OUT=${2:-${OUT:?set OUT}}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch, safetensors, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python training/train.py --device cuda --minutes "$MINUTES" --batch 256 --lr 5e-4 \
  --data training/data/qm9_compact.npz --resume weights/edm_qm9_9x128.safetensors \
  --out-dir "$OUT" --ckpt "$OUT/ckpt.pt" --eval-minutes 4 --log-every 200 2>&1 | tee "$OUT/train_gpu.log"
rm -f "$OUT/ckpt.pt"  # optimizer state stays on the machine; the EMA weights come back
