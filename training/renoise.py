#!/usr/bin/env python3
"""At which noise level does the model lose validity? Re-noise real molecules and let the model denoise them.

    python training/renoise.py --weights weights/edm_qm9_9x128.safetensors --n 500 --t 10 30 100 300

Takes --n molecules of the QM9 test split (seeded choice), diffuses each to step t0 with the forward process
(spec §2.3: z = α_t0·(x, h) + σ_t0·ε, x part mean-free), then runs EDM's ancestral sampler (spec §2.8, the same
steps as `sample_torch.py` with 1000 steps: every integer t from t0 down to 0) and scores the result with the
protocol's verdict (`evaluate.py`). At t0 = 0 the molecules are the data (the protocol's ceiling, ~98 % valid); at
t0 = 1000 it is plain sampling. The validity lost between two t0 is lost by the model in that band of noise levels,
for molecules that start from a real structure: a direct measure of where the failures of the samples arise
(e.g. the bond lengths of the low-noise end, t <= ~30 where σ <= 0.04 Å), which the per-t ε error does not give.
The same molecules and the same noise are used for every weights file given the same --seed, so two files can be
compared molecule by molecule (`--paired` on the JSON of another run).
"""
import argparse
import collections
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from edm import features, mean_free_noise  # noqa: E402
from evaluate import mcnemar_p, verdict  # noqa: E402
from sample_torch import denoise, load_model  # noqa: E402


@torch.no_grad()
def denoise_from(model, x0, types, t0, generator):
    """Forward-diffuse (x0 [B,n,3], types [B,n]) to t0, then sample back to 0. Returns (positions, centred as
    the sampler's are, and types)."""
    gamma = model.gamma.gamma
    B, n = types.shape
    centred = x0 - x0.mean(dim=1, keepdim=True)
    if t0 == 0:
        return centred, types
    g = gamma[t0].double()
    alpha, sigma = torch.sqrt(torch.sigmoid(-g)), torch.sqrt(torch.sigmoid(g))
    xh = torch.cat([centred, features(types)], dim=-1).double()
    z = alpha * xh + sigma * mean_free_noise(B, n, "cpu", generator).double()
    return denoise(model, z, list(range(t0, -1, -1)), generator)


def pick(data, n, seed):
    """n test-split molecules (seeded), grouped by atom count: {n_atoms: [(id, positions, types), ...]}."""
    d = np.load(data)
    ids = np.random.default_rng(seed).permutation(d["test"])[:n]
    groups = collections.defaultdict(list)
    for m in ids:
        lo, hi = d["offsets"][m], d["offsets"][m + 1]
        groups[int(hi - lo)].append((int(m), d["positions"][lo:hi].astype(np.float32), d["types"][lo:hi].astype(np.int64)))
    return groups


def run(model, groups, t0, seed):
    """Per-molecule records {id: (valid, stable, stable_atoms, atoms, types_changed, n_N, displacement)} after
    re-noising to t0; displacement is the median distance (Å) of an atom from where it started (both centred): small
    while the structure survives the noise, about a bond length or more once atoms have swapped places."""
    gen = torch.Generator().manual_seed(seed * 100003 + t0)
    out = {}
    for n in sorted(groups):
        mols = groups[n]
        x0 = torch.tensor(np.stack([m[1] for m in mols]))
        ty = torch.tensor(np.stack([m[2] for m in mols]))
        x, t_out = denoise_from(model, x0, ty, t0, gen)
        moved = (x - (x0 - x0.mean(dim=1, keepdim=True))).norm(dim=-1).median(dim=1).values
        for b, (m, _, types) in enumerate(mols):
            tb = t_out[b].numpy()
            v = verdict(x[b].numpy().astype(np.float64), tb)
            out[m] = (v.smiles is not None, bool(v.stable), int(v.stable_atoms), int(v.atoms),
                      bool((tb != types).any()), int((tb == 2).sum()), float(moved[b]))
    return out


def summary(recs):
    r = list(recs.values())
    k = len(r)
    return {
        "molecules": k,
        "validity": 100 * sum(x[0] for x in r) / k,
        "mol_stability": 100 * sum(x[1] for x in r) / k,
        "atom_stability": 100 * sum(x[2] for x in r) / sum(x[3] for x in r),
        "types_changed": 100 * sum(x[4] for x in r) / k,
        "N_per_molecule": sum(x[5] for x in r) / k,
        "median_displacement": float(np.median([x[6] for x in r])),
    }


def discordant(recs, other):
    """For valid (record field 0) and stable (1): molecules true here but not in `other`, the reverse, and the exact
    McNemar p, over the molecules both hold (records keyed by id as str, as in the JSON)."""
    common = [m for m in recs if str(m) in other]
    out = {}
    for name, i in (("valid", 0), ("stable", 1)):
        a = sum(bool(recs[m][i]) and not other[str(m)][i] for m in common)
        b = sum(bool(other[str(m)][i]) and not recs[m][i] for m in common)
        out[name] = [a, b, mcnemar_p(a, b)]
    return out


def level_contrasts(result, base):
    """Within one run's JSON: for every t0, the molecules valid (stable) at t0 but not at `base` and the reverse,
    with the exact McNemar p. The same molecules and noise draw are used at every t0, so the counts are paired."""
    by = result["by_t0"]
    if str(base) not in by:
        raise SystemExit(f"renoise: t0 = {base} is not in this run (it has {', '.join(by)})")
    ref = by[str(base)]["records"]
    return {t0: {f"{name}_only_t0_vs_base": c for name, c in discordant(level["records"], ref).items()}
            for t0, level in by.items() if t0 != str(base)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.path.join(os.path.dirname(HERE), "weights", "edm_qm9_9x128.safetensors"))
    ap.add_argument("--data", default=os.path.join(HERE, "data", "qm9_compact.npz"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--t", type=int, nargs="+", default=[0, 10, 30, 100, 300])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write the summary and per-molecule records here")
    ap.add_argument("--paired", help="JSON of another run (same --n, --seed, --t): McNemar per t0")
    ap.add_argument("--levels", metavar="JSON", help="no sampling: read a run's JSON and compare each t0 with "
                    "--base (McNemar on the same molecules), e.g. how much validity t0 = 200 loses against the data")
    ap.add_argument("--base", type=int, default=0, help="the t0 that --levels compares against (default 0: the data)")
    args = ap.parse_args()
    if args.levels:
        for t0, row in level_contrasts(json.load(open(args.levels)), args.base).items():
            print(f"t0 {int(t0):4d} vs {args.base}: " + ", ".join(
                f"{k} {a} / {b} (p = {p:.2g})" for k, (a, b, p) in row.items()))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load_model(args.weights)
    groups = pick(args.data, args.n, args.seed)
    other = json.load(open(args.paired)) if args.paired else None
    result = {"weights": args.weights, "n": args.n, "seed": args.seed, "by_t0": {}}
    for t0 in args.t:
        recs = run(model, groups, t0, args.seed)
        s = summary(recs)
        if other and str(t0) in other["by_t0"]:
            for name, c in discordant(recs, other["by_t0"][str(t0)]["records"]).items():
                s[f"{name}_only_this_vs_other"] = c
        print(f"t0 {t0:4d}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()),
              flush=True)
        result["by_t0"][str(t0)] = dict(s, records={str(m): r for m, r in recs.items()})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh)


if __name__ == "__main__":
    main()
