#!/usr/bin/env python3
"""Evaluate weights with the EDM protocol (spec §4), sampling with the Rust CLI (`equivariant sample`).

    python training/evaluate.py --weights weights/edm_qm9_9x128.safetensors --n 1000 --steps 1000

Reports atom stability, molecule stability (EDM bond rule, computed here in Python and cross-checked against the
Rust `equivariant eval`), RDKit validity, uniqueness and novelty against the training SMILES
(`training/data/train_smiles.txt`, written by `prepare_data.py --smiles`). Prints a Markdown table row and, with
--json, writes all numbers to a file.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from chem import ELEMENTS, rdkit_verdict, stability  # noqa: E402


def read_xyz(path):
    mols, lines, k = [], open(path).read().splitlines(), 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        n = int(lines[k])
        rows = [ln.split() for ln in lines[k + 2:k + 2 + n]]
        types = [ELEMENTS.index(r[0]) for r in rows]
        pos = np.array([[float(v) for v in r[1:4]] for r in rows], dtype=np.float32)
        mols.append((pos, types))
        k += 2 + n
    return mols


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.path.join(ROOT, "weights", "edm_qm9_9x128.safetensors"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads: batches of 64 sampled in parallel, one per thread (default: all cores); "
                         "the molecules do not depend on it")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "equivariant"))
    ap.add_argument("--smiles", default=os.path.join(HERE, "data", "train_smiles.txt"))
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    ap.add_argument("--keep", default=None, help="keep the sampled XYZ here")
    args = ap.parse_args()

    if not os.path.exists(args.binary):
        subprocess.check_call(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    out = args.keep or os.path.join(tempfile.mkdtemp(), "samples.xyz")
    cmd = [args.binary, "sample", "--n", str(args.n), "--steps", str(args.steps), "--seed", str(args.seed),
           "--weights", args.weights, "--out", out, "--jobs", str(args.threads or os.cpu_count() or 1)]
    t0 = time.time()
    subprocess.check_call(cmd)
    sample_s = time.time() - t0
    mols = read_xyz(out)
    rust = json.loads(subprocess.check_output([args.binary, "eval", "--json", out]))

    stable_atoms = atoms = stable_mols = 0
    smiles = []
    # why the invalid ones fail ("N valence 4": an atom over-bonded by the distance rule), most common first
    reasons = collections.Counter()
    for pos, types in mols:
        sa, na, ok = stability(pos, types)
        stable_atoms += sa
        atoms += na
        stable_mols += ok
        smi, reason = rdkit_verdict(pos, types)
        smiles.append(smi)
        if reason is not None:
            reasons[reason] += 1
    valid = [s for s in smiles if s is not None]
    unique = set(valid)
    res = {
        "weights": os.path.relpath(args.weights, ROOT),
        "samples_requested": args.n,
        "samples": len(mols),
        "steps": args.steps,
        "seed": args.seed,
        "atom_stability": stable_atoms / max(atoms, 1),
        "molecule_stability": stable_mols / max(len(mols), 1),
        "validity": len(valid) / max(len(mols), 1),
        "uniqueness": len(unique) / max(len(valid), 1),
        "valid_and_unique": len(unique) / max(len(mols), 1),
        "sampling_seconds": round(sample_s, 1),
        "invalid_reasons": dict(reasons.most_common()),
    }
    if os.path.exists(args.smiles):
        train = set(open(args.smiles).read().split())
        res["novelty"] = len([s for s in unique if s not in train]) / max(len(unique), 1)
    # the Rust and Python implementations of the stability rule must agree
    if rust["stable_atoms"] != stable_atoms or rust["stable_molecules"] != stable_mols:
        sys.exit(f"stability mismatch: Rust {rust} vs Python {stable_atoms} atoms, {stable_mols} molecules")
    nov = f"{100 * res['novelty']:.1f}" if "novelty" in res else "-"
    print(f"| {res['samples']} | {args.steps} | {100 * res['atom_stability']:.1f} | "
          f"{100 * res['molecule_stability']:.1f} | {100 * res['validity']:.1f} | "
          f"{100 * res['valid_and_unique']:.1f} | {nov} |")
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
