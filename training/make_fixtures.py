#!/usr/bin/env python3
"""Writes the small fixtures the Rust tests check the crate against (committed under tests/fixtures/).

* golden_tiny.safetensors: a tiny random EDM model (nf 16, 2 layers) from training/edm.py, exported like the
  trainer exports (spec §1.7 names, `equivariant` metadata). The last coordinate layer gets larger weights than
  EDM's init so that the coordinate path visibly matters.
* golden_tiny.json: inputs z, t for molecules of 1, 2, 5 and 13 atoms and ε̂ computed by the PyTorch model in
  float64: the Rust EGNN must reproduce them to 1e-5.
* tiny_edm_checkpoint.npy: the same model's state dict written with torch.save, i.e. the format of EDM's
  released generative_model_ema.npy, for the converter test.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edm import EnVariationalDiffusion, config_metadata, features  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(20261127)
    model = EnVariationalDiffusion(nf=16, n_layers=2)
    with torch.no_grad():
        for i in range(2):
            w = getattr(model.dynamics.egnn, f"e_block_{i}").gcl_equiv.coord_mlp[4].weight
            w.normal_(0.0, 0.02)
    from safetensors.torch import save_file

    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, "golden_tiny.safetensors"),
              metadata=config_metadata(16, 2, provenance={"source": "training/make_fixtures.py (random)"}))
    torch.save(model.state_dict(), os.path.join(OUT, "tiny_edm_checkpoint.npy"))

    model = model.double()
    mols = []
    for n, t in [(1, 0.3), (2, 0.0), (5, 0.25), (13, 1.0), (13, 0.7)]:
        x = torch.randn(1, n, 3, dtype=torch.float64) * 1.5
        x = x - x.mean(dim=1, keepdim=True)
        types = torch.randint(0, 5, (1, n))
        h = features(types).double()
        h = h + 0.3 * torch.randn_like(h)  # noisy features, as in a diffusion state
        z = torch.cat([x, h], dim=-1)
        with torch.no_grad():
            eps = model(z, torch.tensor([t], dtype=torch.float64))
        mols.append({"t": t, "z": z[0].tolist(), "eps": eps[0].tolist()})
    with open(os.path.join(OUT, "golden_tiny.json"), "w") as fh:
        json.dump({"about": "eps computed by training/edm.py in float64 for golden_tiny.safetensors",
                   "molecules": mols}, fh, indent=1)
    print("fixtures written to", OUT)


if __name__ == "__main__":
    main()
