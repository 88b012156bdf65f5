#!/usr/bin/env python3
"""EDM's ancestral sampler (spec §2.8) in PyTorch: an independent check of the Rust sampler.

    python training/sample_torch.py --weights weights/edm_qm9_9x128.safetensors --n 300 --steps 100 --out t.xyz
    python training/evaluate.py --samples t.xyz

It shares nothing with the Rust crate but the weights file and the spec, so when both samplers give the same
statistics (atom stability, validity, atom-type composition) within sampling noise, a property of the samples is the
model's, not the sampler's. Its random numbers differ from the Rust sampler's, so the molecules are not the same
ones: compare rates, not molecules. Time grid as the Rust sampler's (`schedule.rs`): step k of `steps` is
t = (k·T + steps/2) // steps. Molecules of one atom count are denoised together as a dense batch (no padding).
"""
import argparse
import collections
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from edm import ATOM_TYPES, N_NODES_HISTOGRAM, EnVariationalDiffusion, mean_free_noise  # noqa: E402


def timesteps(steps, T=1000):
    """t for k = steps .. 0, as `Schedule::timesteps` in the Rust crate."""
    return [(k * T + steps // 2) // steps for k in range(steps, -1, -1)]


def step_coefficients(gamma, s, t):
    """(σ²_{t|s}, 1/α_{t|s}, ε coefficient, noise std) of one step from t to s (spec §2.8), float64."""
    gs, gt = gamma[s].double(), gamma[t].double()
    s2 = -torch.expm1(F.softplus(gs) - F.softplus(gt))
    a = torch.exp(0.5 * (F.logsigmoid(-gt) - F.logsigmoid(-gs)))
    sig_s, sig_t = torch.sqrt(torch.sigmoid(gs)), torch.sqrt(torch.sigmoid(gt))
    return s2, 1 / a, s2 / a / sig_t, torch.sqrt(s2) * sig_s / sig_t


@torch.no_grad()
def sample(model, n, B, steps, generator):
    """B molecules of n atoms: (positions [B,n,3] in Å, types [B,n] 0..4)."""
    z = mean_free_noise(B, n, "cpu", generator).double()
    return denoise(model, z, timesteps(steps, model.T), generator)


@torch.no_grad()
def denoise(model, z, ts, generator):
    """EDM's reverse chain from the state z [B,n,9] (float64) at t = ts[0] down the grid ts (ending at 0), then
    p(x | z_0): (positions [B,n,3] in Å, centred, and types [B,n] 0..4)."""
    gamma, T = model.gamma.gamma, model.T
    B, n = z.shape[:2]
    for t, s in zip(ts[:-1], ts[1:]):
        _, inv_a, eps_coef, std = step_coefficients(gamma, s, t)
        eps = model(z.float(), torch.full((B,), t / T)).double()
        z = z * inv_a - eps_coef * eps + std * mean_free_noise(B, n, "cpu", generator).double()
        z[..., :3] -= z[..., :3].mean(dim=1, keepdim=True)
    g0 = gamma[0].double()
    sig0, alpha0 = torch.sqrt(torch.sigmoid(g0)), torch.sqrt(torch.sigmoid(-g0))
    eps = model(z.float(), torch.zeros(B)).double()
    x = (z[..., :3] - sig0 * eps[..., :3]) / alpha0 + torch.exp(g0 / 2) * mean_free_noise(B, n, "cpu", generator)[
        ..., :3].double()
    x -= x.mean(dim=1, keepdim=True)
    return x.float(), z[..., 3:8].argmax(-1)


def load_model(path):
    """An exported weights file as a float32 model in eval mode, with its config (size and histogram)."""
    from train import read_safetensors

    tensors, cfg = read_safetensors(path)
    model = EnVariationalDiffusion(cfg["nf"], cfg["n_layers"], cfg.get("diffusion_steps", 1000))
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.eval(), cfg


def comment(index, types, seed, steps):
    """The XYZ comment line, in the form `equivariant sample` writes (evaluate.py reads index, seed and steps)."""
    formula = "".join(f"{e}{c}" for e, c in collections.Counter(ATOM_TYPES[t] for t in types).items())
    return f"molecule {index} {formula} seed {seed} steps {steps} sampler torch"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.path.join(os.path.dirname(HERE), "weights", "edm_qm9_9x128.safetensors"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", required=True, help="XYZ file, readable by evaluate.py --samples")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = load_model(args.weights)
    hist = cfg.get("n_nodes_histogram") or {str(k): v for k, v in N_NODES_HISTOGRAM.items()}
    sizes, weights = np.array([int(k) for k in hist]), np.array(list(hist.values()), dtype=float)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    per_n = rng.choice(sizes, size=args.n, p=weights / weights.sum())
    index = collections.defaultdict(list)
    for i, n in enumerate(per_n):
        index[int(n)].append(i)
    mols = {}
    for n, ids in sorted(index.items()):
        x, types = sample(model, n, len(ids), args.steps, gen)
        for b, i in enumerate(ids):
            mols[i] = (x[b], types[b])
    with open(args.out, "w") as fh:
        skipped = write_samples(fh, [mols[i] for i in range(args.n)], args.seed, args.steps)
    print(f"wrote {args.n - len(skipped)} molecules to {args.out}"
          + (f"; skipped {len(skipped)} whose chain diverged (non-finite positions): {skipped}" if skipped else ""))


def write_samples(fh, mols, seed, steps):
    """Writes (positions, types) molecules as XYZ with their index in the comment line, skipping any with a
    non-finite coordinate as the Rust sampler does (evaluate.py counts a missing index as diverged: unstable and
    invalid). Returns the skipped indices."""
    skipped = []
    for i, (x, types) in enumerate(mols):
        if not torch.isfinite(x).all():
            skipped.append(i)
            continue
        fh.write(f"{len(types)}\n{comment(i, types.tolist(), seed, steps)}\n")
        for t, (a, b, c) in zip(types.tolist(), x.tolist()):
            fh.write(f"{ATOM_TYPES[t]} {a:.6f} {b:.6f} {c:.6f}\n")
    return skipped


if __name__ == "__main__":
    main()
