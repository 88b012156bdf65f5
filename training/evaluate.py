#!/usr/bin/env python3
"""Evaluate weights with the EDM protocol (spec §4), sampling with the Rust CLI (`equivariant sample`).

    python training/evaluate.py --weights weights/edm_qm9_9x128.safetensors --n 1000 --steps 1000

Reports atom stability, molecule stability (EDM bond rule, computed here in Python and cross-checked against the
Rust `equivariant eval`), RDKit validity, uniqueness and novelty against the training SMILES
(`training/data/train_smiles.txt`, written by `prepare_data.py --smiles`). Prints a Markdown table row and, with
--json, writes all numbers to a file.

    python training/evaluate.py --samples new.xyz --paired old.xyz   # compare two kept sample files
    python training/evaluate.py --data-reference 3000                 # the protocol on QM9 test molecules

It also says why molecules fail (`over_bonded`: over-valent atoms with too many neighbours, against those whose
neighbour count fits but a bond counts double or triple, and how far inside its threshold that bond lies).
`--paired` compares two sample files drawn with the same --n, --seed and --steps (so the same atom counts and
noise) molecule by molecule, matched by the index in each molecule's comment line: the exact McNemar test on
molecule stability and validity, a cheap way to tell whether new weights are better than noise, and how alike
the two sets are (`agreement`: same atom types, coordinate differences, same SMILES).
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from chem import ELEMENTS, bond_counts, bonds, over_bonded, rdkit_verdict, stability  # noqa: E402
from digest import tensor_digest  # noqa: E402


# the comment line `equivariant sample` writes for each molecule
LABEL = re.compile(r"^molecule (\d+) \S+ seed (\d+) steps (\d+)\b")


def read_xyz(path, comments=False):
    """[(positions, types)] of a multi-molecule XYZ file; with comments=True, (positions, types, comment line)."""
    with open(path) as fh:
        lines = fh.read().splitlines()
    mols, k = [], 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        n = int(lines[k])
        rows = [ln.split() for ln in lines[k + 2:k + 2 + n]]
        types = [ELEMENTS.index(r[0]) for r in rows]
        pos = np.array([[float(v) for v in r[1:4]] for r in rows], dtype=np.float32)
        mols.append((pos, types, lines[k + 1]) if comments else (pos, types))
        k += 2 + n
    return mols


def mcnemar(a, b):
    """Exact two-sided McNemar test on paired booleans: (only a, only b, p). Under the null hypothesis that both
    are equally good, the discordant pairs split like fair coin tosses."""
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    return only_a, only_b, mcnemar_p(only_a, only_b)


def mcnemar_p(only_a, only_b):
    """Exact two-sided McNemar p from the discordant counts (also what `pool_paired.py` pools)."""
    from math import comb

    n, lo = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(comb(n, i) for i in range(lo + 1)) / 2 ** n) if n else 1.0


# everything the protocol says about one molecule; `over` lists its over-valent atoms (chem.OverBonded), `bonds`
# counts its bonds by label ("C-H": 4, ...)
Verdict = collections.namedtuple("Verdict", "stable_atoms atoms stable smiles reason over bonds")


def verdict(pos, types):
    """The protocol's verdict on one molecule, from one pass of the bond rule."""
    bs = bonds(pos, types)
    return Verdict(*stability(pos, types, bs), *rdkit_verdict(pos, types, bs), over_bonded(pos, types, bs),
                   bond_counts(types, bs))


def verdicts(mols):
    """A Verdict per molecule of read_xyz's list."""
    return [verdict(m[0], m[1]) for m in mols]


def labels(mols):
    """(index, seed, steps) of each molecule from its `equivariant sample` comment line, or None for a file
    without them (e.g. --data-reference)."""
    found = [LABEL.match(m[2]) for m in mols]
    if not found or not all(found):
        return None
    return [tuple(int(g) for g in f.groups()) for f in found]


def requested(lab, n_arg=None):
    """How many molecules a kept file's sampler was asked for: --n when given (it must cover every index in the
    file), else the highest index + 1, which misses diverged molecules skipped at the very end."""
    last = max(i for i, _, _ in lab) + 1 if lab else None
    if n_arg is None:
        return last
    if last is not None and last > n_arg:
        raise ValueError(f"--n {n_arg}, but the file holds molecule index {last - 1}")
    return n_arg


def over_bonded_summary(vs):
    """Over-valent atoms by cause; per cause, by element, by the bond nearest its threshold (one per atom), and the
    quantiles of how far inside the threshold that bond lies."""
    atoms = [a for v in vs for a in v.over]
    out = {"molecules": sum(bool(v.over) for v in vs),
           "atoms": len(atoms), "by_cause": dict(collections.Counter(a.cause for a in atoms).most_common())}
    for cause in ("neighbours", "order"):
        these = [a for a in atoms if a.cause == cause]
        if these:
            m = np.array([a.margin for a in these])
            out[f"{cause}_by_element"] = dict(collections.Counter(a.element for a in these).most_common())
            out[f"{cause}_by_bond"] = dict(collections.Counter(a.bond for a in these).most_common())
            out[f"{cause}_margin_A_q10_q50_q90"] = [round(float(q), 4) for q in np.quantile(m, [0.1, 0.5, 0.9])]
            out[f"{cause}_within_0.02_A"] = round(float((m < 0.02).mean()), 3)
    return out


def composition(types):
    """Count of each element (H C N O F) in one molecule."""
    return np.bincount(types, minlength=len(ELEMENTS))


def atoms_per_molecule(mols):
    """Mean count of each element per molecule (H C N O F): compare with --data-reference."""
    counts = sum((composition(m[1]) for m in mols), np.zeros(len(ELEMENTS)))
    return {e: round(float(c) / max(len(mols), 1), 3) for e, c in zip(ELEMENTS, counts)}


def bonds_per_molecule(vs):
    """Mean count of each bond label per molecule, most common first: compare with --data-reference."""
    total = sum((v.bonds for v in vs), collections.Counter())
    return {k: round(c / max(len(vs), 1), 3) for k, c in total.most_common()}


def paired(mols, vs, other_path):
    """Molecule-by-molecule comparison with another sample file of the same protocol (McNemar). Molecules are
    matched by their index; one missing from a file (its chain diverged and the sampler skipped it) counts as
    failing there."""
    other = read_xyz(other_path, comments=True)
    la, lb = labels(mols), labels(other)
    if la is None or lb is None:
        sys.exit("--paired needs two files written by `equivariant sample` (a comment line per molecule)")
    if {(s, st) for _, s, st in la} != {(s, st) for _, s, st in lb} or len({(s, st) for _, s, st in la}) != 1:
        sys.exit(f"{other_path}: drawn with another seed or step count than these samples")
    wo = verdicts(other)
    a_by = {i: (m, v) for (i, _, _), m, v in zip(la, mols, vs)}
    b_by = {i: (m, v) for (i, _, _), m, v in zip(lb, other, wo)}
    for i in a_by.keys() & b_by.keys():
        if len(a_by[i][0][1]) != len(b_by[i][0][1]):
            sys.exit(f"{other_path}: molecule {i} has another atom count; draw both with the same --n and --seed")
    ids = sorted(a_by.keys() | b_by.keys())
    res = {"other": other_path, "molecules": len(ids)}
    for name, passed in [("molecule_stability", lambda v: v.stable), ("validity", lambda v: v.smiles is not None)]:
        a = [i in a_by and bool(passed(a_by[i][1])) for i in ids]
        b = [i in b_by and bool(passed(b_by[i][1])) for i in ids]
        only_a, only_b, p = mcnemar(a, b)
        res[name] = {"these": sum(a), "other": sum(b), "only_these": only_a, "only_other": only_b,
                     "mcnemar_p": round(p, 4)}
    # atom stability over each file's own atoms (a diverged molecule has none): what pool_paired.py weighs by atoms
    res["atom_stability"] = {"these": sum(v.stable_atoms for _, v in a_by.values()),
                             "these_atoms": sum(v.atoms for _, v in a_by.values()),
                             "other": sum(v.stable_atoms for _, v in b_by.values()),
                             "other_atoms": sum(v.atoms for _, v in b_by.values())}
    # per element: the mean over molecules in both files of (count here - count there), and its standard error
    both = sorted(a_by.keys() & b_by.keys())
    diff = np.array([composition(a_by[i][0][1]) - composition(b_by[i][0][1]) for i in both]).reshape(
        -1, len(ELEMENTS))
    res["atoms_per_molecule_difference"] = {
        e: [round(float(diff[:, j].mean()), 3), round(float(diff[:, j].std(ddof=1) / np.sqrt(len(both))), 3)]
        for j, e in enumerate(ELEMENTS)} if len(both) > 1 else {}
    res["agreement"] = agreement([a_by[i] for i in both], [b_by[i] for i in both])
    return res


def agreement(pairs_a, pairs_b):
    """How alike two paired sample sets are molecule by molecule (both lists of (molecule, verdict) in the same
    order): chains ending with the same atom types, the largest coordinate difference of each such molecule
    (quantiles, in Ångström: both files place molecules in the same frame, so no alignment), and valid molecules
    with the same canonical SMILES. Near-identical weights (float16 against float32) agree almost everywhere."""
    same = [(ma, mb) for (ma, _), (mb, _) in zip(pairs_a, pairs_b) if list(ma[1]) == list(mb[1])]
    dmax = [float(np.abs(ma[0] - mb[0]).max()) for ma, mb in same]
    valid = [(va.smiles, vb.smiles) for (_, va), (_, vb) in zip(pairs_a, pairs_b)
             if va.smiles is not None and vb.smiles is not None]
    res = {"molecules_in_both": len(pairs_a), "same_types": len(same), "valid_in_both": len(valid),
           "same_smiles": sum(sa == sb for sa, sb in valid)}
    if dmax:
        q = np.quantile(dmax, [0.5, 0.9, 1.0])
        res["max_coordinate_difference_angstrom"] = {k: round(float(v), 4) for k, v in zip(("median", "q90", "max"), q)}
    return res


def summarise(mols, vs, n, train=None, **label):
    """The protocol's report on `mols` (read_xyz's list) and their verdicts `vs`: the rates, per molecule asked
    for (`n`; one whose chain diverged and was skipped by the sampler counts as unstable and invalid), and the
    exact counts behind them (`counts`), which `pool_reports.py` adds over seeds. `train` is the set of training
    SMILES for novelty (None: no novelty); `label` (weights, steps, seed, sampling_seconds) leads the report."""
    stable_atoms, atoms = sum(v.stable_atoms for v in vs), sum(v.atoms for v in vs)
    stable_mols = sum(bool(v.stable) for v in vs)
    valid = [v.smiles for v in vs if v.smiles is not None]
    unique = set(valid)
    asked = max(len(mols), n or 0, 1)
    res = {
        "weights": label.get("weights"),
        "samples_requested": n,
        "samples": len(mols),
        "steps": label.get("steps"),
        "seed": label.get("seed"),
        "atom_stability": stable_atoms / max(atoms, 1),
        "diverged": max(0, (n or 0) - len(mols)),
        "molecule_stability": stable_mols / asked,
        "validity": len(valid) / asked,
        "uniqueness": len(unique) / max(len(valid), 1),
        "valid_and_unique": len(unique) / asked,
        "sampling_seconds": label.get("sampling_seconds"),
        # why the invalid ones fail ("N valence 4": an atom over-bonded by the distance rule), most common first
        "invalid_reasons": dict(collections.Counter(v.reason for v in vs if v.reason is not None).most_common()),
        "over_bonded": over_bonded_summary(vs),
        "atoms_per_molecule": atoms_per_molecule(mols),
        "bonds_per_molecule": bonds_per_molecule(vs),
        "counts": {"asked": asked, "atoms": atoms, "stable_atoms": stable_atoms, "stable_molecules": stable_mols,
                   "valid": len(valid), "unique": len(unique)},
    }
    # the unique valid SMILES themselves, so that pool_reports.py can count uniqueness and novelty across seeds
    res["smiles"] = {"unique": sorted(unique)}
    if train is not None:
        novel = sorted(s for s in unique if s not in train)
        res["novelty"] = len(novel) / max(len(unique), 1)
        res["counts"]["novel"] = len(novel)
        res["smiles"]["novel"] = novel
    return res


def write_data_reference(path, n, seed, data=os.path.join(HERE, "data", "qm9_compact.npz")):
    """Write n molecules of the QM9 test split (seeded choice) as XYZ: the protocol's ceiling on real molecules
    (the EDM paper reports 99.0 / 95.2 / 97.7 for the data), and the yardstick for `over_bonded`. Returns how many
    were written: all of the test split when n asks for more."""
    d = np.load(data)
    ids = np.random.default_rng(seed).permutation(d["test"])[:n]
    with open(path, "w") as fh:
        for m in ids:
            lo, hi = d["offsets"][m], d["offsets"][m + 1]
            fh.write(f"{hi - lo}\nQM9 molecule {d['index'][m]}\n")
            for t, (x, y, z) in zip(d["types"][lo:hi], d["positions"][lo:hi]):
                fh.write(f"{ELEMENTS[t]} {x:.6f} {y:.6f} {z:.6f}\n")
    return len(ids)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=os.path.join(ROOT, "weights", "edm_qm9_9x128.safetensors"))
    ap.add_argument("--n", type=int, default=None,
                    help="molecules to sample (default 1000); with --samples, how many the sampler was asked for, so "
                         "that diverged molecules it skipped at the end of the file count too (default: the "
                         "highest index in the file + 1)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads: batches of 64 sampled in parallel, one per thread (default: all cores); "
                         "the molecules do not depend on it")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "equivariant"))
    ap.add_argument("--smiles", default=os.path.join(HERE, "data", "train_smiles.txt"))
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    ap.add_argument("--keep", default=None, help="keep the sampled XYZ here")
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--samples", default=None,
                        help="evaluate this XYZ file (kept earlier) instead of sampling; its seed and steps are "
                             "read from its comment lines")
    source.add_argument("--data-reference", type=int, default=0, metavar="N",
                        help="evaluate N molecules of the QM9 test split (chosen with --seed) instead of samples")
    ap.add_argument("--paired", default=None,
                    help="another `equivariant sample` XYZ file of the same --n, --seed and --steps: McNemar test "
                         "molecule by molecule")
    args = ap.parse_args()
    if args.samples and args.keep:
        ap.error("--keep names where to keep new samples; --samples evaluates a file that is already kept")
    if args.n is not None and args.n < 1:
        ap.error(f"--n {args.n}: evaluate at least one molecule")
    if args.data_reference < 0:
        ap.error(f"--data-reference {args.data_reference}: evaluate at least one molecule")

    if not os.path.exists(args.binary):
        subprocess.check_call(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    # what the evaluated molecules are: drawn now, a kept file, or QM9 test molecules
    n, seed, steps, sample_s = 1000 if args.n is None else args.n, args.seed, args.steps, None
    digest = None
    if args.data_reference:
        out = args.keep or os.path.join(tempfile.mkdtemp(), "qm9_test.xyz")
        n = write_data_reference(out, args.data_reference, seed)  # fewer if the test split is smaller
        steps, source = None, f"QM9 test split, {n} molecules (seed {seed})" + (
            f", of {args.data_reference} asked: the split holds no more" if n < args.data_reference else "")
    elif args.samples:
        out, source = args.samples, args.samples
    else:
        out, source = args.keep or os.path.join(tempfile.mkdtemp(), "samples.xyz"), os.path.relpath(args.weights, ROOT)
        cmd = [args.binary, "sample", "--n", str(n), "--steps", str(steps), "--seed", str(seed),
               "--weights", args.weights, "--out", out, "--jobs", str(args.threads or os.cpu_count() or 1)]
        try:
            digest = tensor_digest(args.weights)  # before sampling: the file the sampler reads
        except (OSError, ValueError) as e:
            sys.exit(f"--weights: {e}")
        t0 = time.time()
        subprocess.check_call(cmd)
        sample_s = round(time.time() - t0, 1)
    mols = read_xyz(out, comments=True)
    if args.samples:
        # label the result with what the file holds, not with the defaults of --n/--seed/--steps
        lab = labels(mols)
        seeds, steps_seen = ({s for _, s, _ in lab}, {st for _, _, st in lab}) if lab else (set(), set())
        try:
            n = requested(lab, args.n)
        except ValueError as e:
            ap.error(str(e))
        seed = seeds.pop() if len(seeds) == 1 else None
        steps = steps_seen.pop() if len(steps_seen) == 1 else None
    rust = json.loads(subprocess.check_output([args.binary, "eval", "--json", out]))

    vs = verdicts(mols)
    train = set(open(args.smiles).read().split()) if os.path.exists(args.smiles) else None
    res = summarise(mols, vs, n, train, weights=source, steps=steps, seed=seed, sampling_seconds=sample_s)
    if digest is not None:  # which weights drew these samples, whatever the file is called (paired_test.py checks it)
        res["tensor_digest"] = digest
    if args.paired:
        res["paired"] = paired(mols, vs, args.paired)
    c = res["counts"]
    # the Rust and Python implementations of the stability rule must agree
    if rust["stable_atoms"] != c["stable_atoms"] or rust["stable_molecules"] != c["stable_molecules"]:
        sys.exit(f"stability mismatch: Rust {rust} vs Python {c['stable_atoms']} atoms, {c['stable_molecules']} "
                 "molecules")
    nov = f"{100 * res['novelty']:.1f}" if "novelty" in res else "-"
    print(f"| {res['samples']} | {'-' if steps is None else steps} | {100 * res['atom_stability']:.1f} | "
          f"{100 * res['molecule_stability']:.1f} | {100 * res['validity']:.1f} | "
          f"{100 * res['valid_and_unique']:.1f} | {nov} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "smiles"}, indent=1))  # the SMILES lists: in --json


if __name__ == "__main__":
    main()
