#!/usr/bin/env bash
# GPU benchmark on a lent H100/H200 (the `device` tool), in one prepared command: the WGSL backend natively
# (Vulkan) and the project's PyTorch denoiser on the same GPU, same shapes, written to $OUT.
#   here, once:  apt-get download libvulkan1 into .gl/ (see /work/.library/device/README.md), cargo build --release
#   run:         carry [".gl", "target/release/equivariant"]; command: bash scripts/device_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT}
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for model in "256 9" "128 9"; do
  set -- $model
  timeout 200 target/release/equivariant bench --backend gpu --nf "$1" --layers "$2" --batch 1,16,64 \
    --atoms 9,19,29 --seconds 1 2>&1 | grep -v XDG_RUNTIME | tee -a "$OUT/bench_wgsl.md"
  timeout 120 python3 training/bench_torch.py --device cuda --nf "$1" --layers "$2" --batch 1,16,64 \
    --atoms 9,19,29 --seconds 0.5 --graph 2>&1 | tee -a "$OUT/bench_torch.md"
  timeout 120 python3 training/bench_torch.py --device cuda --nf "$1" --layers "$2" --batch 1,16,64 \
    --atoms 9,19,29 --seconds 0.5 --bf16 --graph 2>&1 | tee -a "$OUT/bench_torch.md"
done
