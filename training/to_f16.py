"""Writes a float16 copy of exported weights (the γ table stays float32, as `equivariant convert --f16` does).

    python training/to_f16.py weights/edm_qm9_9x128.safetensors /tmp/edm_qm9_9x128_f16.safetensors

Halves the download; whether sampling quality is unchanged is measured with `training/evaluate.py`.
"""
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def main(src, dst):
    with safe_open(src, framework="numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    out = {k: (v if k == "gamma.gamma" else v.astype(np.float16)) for k, v in tensors.items()}
    worst = max(float(np.max(np.abs(out[k].astype(np.float32) - v))) for k, v in tensors.items())
    save_file(out, dst, metadata=meta)
    print(f"{src} -> {dst}: {len(out)} tensors, largest rounding error {worst:.2e}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
