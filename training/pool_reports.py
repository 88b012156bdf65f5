#!/usr/bin/env python3
"""Pool evaluate.py reports of the same weights over seeds: one set of protocol numbers from exact counts.

    python training/pool_reports.py training/logs/eval_avg5_ft42-46_1000x1000_seed{1,2}.json

The model card's 1000-step numbers are two or more seeds of 1000 molecules each. Averaging their percentages
weighs each seed alike; this adds the counts instead: stable atoms over all atoms, stable and valid molecules over
all molecules asked for (a diverged molecule counts as a failure), novel over unique valid SMILES. Reports are
grouped by (weights, steps), one Markdown row per group, so the reports of two files can be pooled side by side;
within a group each seed counts once.

Reports written since session 35 carry their counts (`counts`). Older ones carry only rates; their counts are
recovered exactly where that is possible (molecule rates times the molecules asked for, atoms from the per-element
means, which are exact for up to 1000 molecules) and checked: a count that is not a whole number stops the tool
with the file's name instead of guessing. Such a group is marked "(counts from rates)".

Molecule stability and validity get a 95 % Wilson interval: the draws of different seeds are independent, so their
molecules pool like one larger draw. Uniqueness and novelty are counted across seeds, as EDM counts them over one
set of samples (a SMILES drawn by two seeds is one unique molecule), where every report of a group holds its
SMILES (`smiles`, written by evaluate.py since session 37); otherwise each seed's own uniqueness is added (a
SMILES seen in two seeds counts in both) and the row says "per seed".
"""
import argparse
import json
import math
import sys

from chem import ELEMENTS
COUNTS = ("asked", "atoms", "stable_atoms", "stable_molecules", "valid", "unique")


def wilson(k, n, z=1.96):
    """(low, high) of the 95 % Wilson score interval of k successes in n trials."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _whole(name, what, x, tol=1e-6):
    """round(x), or ValueError naming the file when x is not (within tol) a whole number."""
    k = round(x)
    if abs(x - k) > tol:
        raise ValueError(f"{name}: {what} comes to {x:.4f}, not a whole number; re-run evaluate.py --samples on the "
                         "kept XYZ to get its counts")
    return int(k)


def counts(name, r):
    """(counts, derived): the report's exact counts, from its `counts` field or recovered from its rates (derived
    True). Raises ValueError naming the file when they cannot be recovered exactly."""
    if isinstance(r.get("counts"), dict):
        c = r["counts"]
        missing = [k for k in COUNTS if k not in c]
        if missing:
            raise ValueError(f"{name}: its counts lack {', '.join(missing)}")
        return {k: c[k] for k in COUNTS + ("novel",) if k in c}, False
    try:
        samples = int(r["samples"])
        asked = max(samples, int(r.get("samples_requested") or 0), 1)
        per = r["atoms_per_molecule"]
        rates = {k: float(r[k]) for k in ("atom_stability", "molecule_stability", "validity", "valid_and_unique")}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{name}: not an evaluate.py report (no {e})") from None
    if samples > 1000:
        raise ValueError(f"{name}: {samples} molecules; the per-element means (3 decimals) give exact atom counts "
                         "for up to 1000 only; re-run evaluate.py --samples on the kept XYZ to get its counts")
    atoms = sum(round(float(per.get(e, 0.0)) * samples) for e in ELEMENTS)
    c = {"asked": asked, "atoms": atoms,
         "stable_atoms": _whole(name, "atom stability x atoms", rates["atom_stability"] * atoms),
         "stable_molecules": _whole(name, "molecule stability x molecules", rates["molecule_stability"] * asked),
         "valid": _whole(name, "validity x molecules", rates["validity"] * asked),
         "unique": _whole(name, "valid and unique x molecules", rates["valid_and_unique"] * asked)}
    if r.get("novelty") is not None:
        c["novel"] = _whole(name, "novelty x unique", float(r["novelty"]) * c["unique"])
    return c, True


def _union(smiles, key):
    """The set union of every report's SMILES list `key` ("unique" or "novel"), or None if a report lacks it."""
    if not all(key in sm for sm in smiles):
        return None
    return set().union(*(sm[key] for sm in smiles))


def pool(reports, one=False):
    """[{weights, steps, seeds, files, counts, derived, rates, intervals_95}] over `reports` ([(name, parsed
    JSON)]), one per (weights, steps) in the order first seen; with one=True a single group for all (the same
    weights evaluated under different paths), which must share one step count. Raises ValueError naming a file
    whose seed is missing or already pooled in its group, whose step count differs (one=True), or whose counts
    cannot be recovered."""
    groups = {}
    for name, r in reports:
        key = (r.get("weights"), r.get("steps"))
        if one:
            first = next(iter(groups), key)
            if key[1] != first[1]:
                raise ValueError(f"{name}: {key[1]} steps, but {reports[0][0]} has {first[1]}; one pool holds one "
                                 "step count")
            key = first
        g = groups.setdefault(key, {"weights": key[0], "steps": key[1], "seeds": [], "files": [],
                                    "weights_seen": [], "derived": False,
                                    "counts": dict.fromkeys(COUNTS + ("novel", "novel_of"), 0)})
        seed = r.get("seed")
        if seed is None:
            raise ValueError(f"{name}: no seed in it; a pool needs independent draws, one per seed")
        if seed in g["seeds"]:
            raise ValueError(f"{name}: seed {seed} of {key[0]} at {key[1]} steps is already pooled; each draw counts "
                             "once")
        c, derived = counts(name, r)
        g["seeds"].append(seed)
        g["files"].append(name)
        if r.get("weights") not in g["weights_seen"]:
            g["weights_seen"].append(r.get("weights"))
        g["derived"] = g["derived"] or derived
        g.setdefault("_smiles", []).append(r.get("smiles") if isinstance(r.get("smiles"), dict) else {})
        for k in COUNTS:
            g["counts"][k] += c[k]
        if "novel" in c:  # novelty over the unique SMILES of the seeds whose reports measured it
            g["counts"]["novel"] += c["novel"]
            g["counts"]["novel_of"] += c["unique"]
    out = []
    for g in groups.values():
        c = g["counts"]
        asked = max(c["asked"], 1)
        if not c["novel_of"]:
            c["novel"] = None
        g["rates"] = {"atom_stability": c["stable_atoms"] / max(c["atoms"], 1),
                      "molecule_stability": c["stable_molecules"] / asked,
                      "validity": c["valid"] / asked,
                      "valid_and_unique": c["unique"] / asked,
                      "novelty": c["novel"] / c["novel_of"] if c["novel_of"] else None}
        g["intervals_95"] = {"molecule_stability": list(wilson(c["stable_molecules"], asked)),
                             "validity": list(wilson(c["valid"], asked))}
        # uniqueness and novelty across seeds: the union of the reports' SMILES, where every report holds them
        unique, novel = (_union(g["_smiles"], k) for k in ("unique", "novel"))
        del g["_smiles"]
        g["across_seeds"] = None if unique is None else {
            "unique": len(unique), "novel": None if novel is None else len(novel),
            "valid_and_unique": len(unique) / asked,
            "novelty": None if novel is None else len(novel) / max(len(unique), 1)}
        out.append(g)
    return out


def percent(k, n):
    """k / n in % with one decimal, rounded half up from the exact counts (1637 of 2000 is 81.9, not the 81.8 that
    binary floating point gives)."""
    if not n:
        return "-"
    tenths = (2000 * k + n) // (2 * n)
    return f"{tenths // 10}.{tenths % 10}"


def row(g):
    """The model card's Markdown row for one pooled group: molecules | steps | atom | molecule (interval) |
    validity (interval) | valid and unique | novelty, in %."""
    c, i, x = g["counts"], g["intervals_95"], g.get("across_seeds")
    asked = max(c["asked"], 1)

    def ends(name):
        return "-".join(f"{100 * x:.1f}" for x in i[name])

    if x is not None:  # counted across seeds
        unique = percent(x["unique"], asked)
        novel = percent(x["novel"], x["unique"]) if x["novel"] is not None else "-"
    else:
        per = " (per seed)" if len(g["seeds"]) > 1 else ""
        unique = percent(c["unique"], asked) + per
        novel = percent(c["novel"], c["novel_of"]) + per if c["novel"] is not None else "-"
    return (f"| {c['asked']} | {'-' if g['steps'] is None else g['steps']} | {percent(c['stable_atoms'], c['atoms'])} "
            f"| {percent(c['stable_molecules'], asked)} ({ends('molecule_stability')}) | "
            f"{percent(c['valid'], asked)} ({ends('validity')}) | {unique} | {novel} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="evaluate.py JSON reports (--json)")
    ap.add_argument("--json", default=None, help="also write the pooled numbers here")
    ap.add_argument("--one", action="store_true",
                    help="pool every report as one group (the same weights evaluated under different paths, e.g. a "
                         "file once in training/runs/ and once in weights/); they must share a step count")
    args = ap.parse_args()
    reports = []
    for path in args.reports:
        try:
            with open(path) as f:
                reports.append((path, json.load(f)))
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"{path}: cannot read it as a JSON report ({e})")
    try:
        groups = pool(reports, args.one)
    except ValueError as e:
        sys.exit(str(e))
    print("| molecules | steps | atom stab % | mol stab % (95 %) | validity % (95 %) | V x U % | novelty % |")
    print("|---|---|---|---|---|---|---|")
    for g in groups:
        print(row(g))
    for g in groups:
        c = g["counts"]
        print(f"{' + '.join(map(str, g['weights_seen']))}, {g['steps']} steps, "
              f"seeds {', '.join(map(str, g['seeds']))}{' (counts from rates)' if g['derived'] else ''}: "
              f"{c['stable_atoms']} of {c['atoms']} atoms stable, "
              f"{c['stable_molecules']} of {c['asked']} molecules stable, {c['valid']} valid, {c['unique']} unique"
              + (f", {c['novel']} novel" if c["novel"] is not None else "") + " (each seed's own)"
              + ("" if g["across_seeds"] is None else f"; across seeds {g['across_seeds']['unique']} unique"
                 + ("" if g["across_seeds"]["novel"] is None else f", {g['across_seeds']['novel']} novel")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(groups, f, indent=1)


if __name__ == "__main__":
    main()
