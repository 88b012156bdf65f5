#!/usr/bin/env python3
"""Pool paired comparisons over seeds: one exact McNemar test on all their discordant molecules.

    python training/pool_paired.py training/logs/eval_ft17_1000x100_seed1[1-4].json

Each file is a JSON written by `evaluate.py --json ... --paired OTHER.xyz`: the new weights' samples compared
molecule by molecule with the old weights' samples of the same seed, steps and count. The seeds are
independent draws, so their discordant pairs add up: under the null hypothesis that both files are equally
good, every discordant molecule is a fair coin toss. This is the test the model card's ship rule uses (a
significant pooled gain in molecule stability, nothing else worse). Each (seed, steps) and each old sample file
counts once: the same draw twice would count its molecules twice. One line per file says what was pooled
(weights, the old samples, seed and steps), so that the set can be checked.

It also pools atom stability (stable atoms over all atoms of each file, from reports written since session 32;
older reports lack it) and ends with the ship rule's verdict on the pooled numbers: PASS when the tested metric
(`--metric`, molecule stability unless the pre-registered test names validity) favours the new file at
p < 0.05 and neither other metric is lower; FAIL otherwise; INCOMPLETE when the reports carry no atom
stability to check.

Where the reports carry it (since session 37), it adds up how alike the two sets are (`agreement`: molecules
ending with the same atom types, and valid in both with the same SMILES).

Beside each p value it prints the paired difference in points with its 95 % interval (normal approximation for
paired proportions), so a lean that a test cannot resolve is reported with its size, not only as "p > 0.05".
"""
import argparse
import json
import math
import sys

from evaluate import mcnemar_p

METRICS = ("molecule_stability", "validity")


def paired_difference(only_these, only_other, molecules, z=1.96):
    """(difference, low, high) of two paired proportions, as fractions: the difference is (b - c) / n for b
    molecules only the new file gets right and c only the old one, and its variance (b + c - (b - c)^2 / n) / n^2
    (the paired-proportions normal approximation); the interval is difference +- z standard errors."""
    n = max(molecules, 1)
    d = (only_these - only_other) / n
    se = math.sqrt(max(only_these + only_other - (only_these - only_other) ** 2 / n, 0.0)) / n
    return d, d - z * se, d + z * se


def pool(reports):
    """{metric: {"these", "other", "only_these", "only_other", "molecules", "mcnemar_p"}} over `reports` (the
    parsed JSON files), plus "seeds". Raises ValueError naming a file without a paired comparison, or a seed
    given twice."""
    seeds, others = [], []
    for name, r in reports:
        pr = r.get("paired")
        if not isinstance(pr, dict) or not all(isinstance(pr.get(m), dict) for m in METRICS):
            raise ValueError(f"{name}: no paired comparison of {' and '.join(METRICS)} in it "
                             "(evaluate.py --paired OTHER.xyz --json writes one)")
        key = (r.get("seed"), r.get("steps"))
        if key in seeds:
            raise ValueError(f"{name}: seed {key[0]} at {key[1]} steps is already pooled; each draw counts once")
        if pr.get("other") is not None and pr["other"] in others:
            raise ValueError(f"{name}: compared with {pr['other']}, which another file was compared with too")
        seeds.append(key)
        others.append(pr.get("other"))
    out = {"seeds": [s for s, _ in seeds]}
    for m in METRICS:
        tot = {k: sum(r["paired"][m][k] for _, r in reports) for k in ("these", "other", "only_these", "only_other")}
        tot["molecules"] = sum(r["paired"]["molecules"] for _, r in reports)
        tot["mcnemar_p"] = mcnemar_p(tot["only_these"], tot["only_other"])
        d, lo, hi = paired_difference(tot["only_these"], tot["only_other"], tot["molecules"])
        tot["difference"], tot["difference_95"] = d, [lo, hi]
        out[m] = tot
    atoms = [r["paired"].get("atom_stability") for _, r in reports]
    if all(isinstance(a, dict) for a in atoms):
        tot = {k: sum(a[k] for a in atoms) for k in ("these", "these_atoms", "other", "other_atoms")}
        tot["these_rate"] = tot["these"] / max(tot["these_atoms"], 1)
        tot["other_rate"] = tot["other"] / max(tot["other_atoms"], 1)
        out["atom_stability"] = tot
    agree = [r["paired"].get("agreement") for _, r in reports]
    if all(isinstance(a, dict) for a in agree):  # how alike the two sets are (reports written since session 37)
        out["agreement"] = {k: sum(a[k] for a in agree)
                            for k in ("molecules_in_both", "same_types", "valid_in_both", "same_smiles")}
    return out


def verdict(res, metric="molecule_stability", alpha=0.05):
    """(PASS | FAIL | INCOMPLETE, why) of the ship rule's paired test on pool()'s result: `metric` favours the
    new file at p < alpha, and the other metric and atom stability are not lower (point estimates)."""
    m = res[metric]
    why = [f"{metric} {m['only_these']} against {m['only_other']} only-new/only-old, p = {m['mcnemar_p']:.3g}"]
    ok = m["only_these"] > m["only_other"] and m["mcnemar_p"] < alpha
    for other in METRICS:
        if other != metric:
            o = res[other]
            ok = ok and o["these"] >= o["other"]
            why.append(f"{other} {o['these']} against {o['other']}")
    a = res.get("atom_stability")
    if a is None:
        return ("FAIL" if not ok else "INCOMPLETE"), "; ".join(why + ["atom stability not in the reports"])
    ok = ok and a["these_rate"] >= a["other_rate"]
    why.append(f"atom stability {100 * a['these_rate']:.2f} against {100 * a['other_rate']:.2f} %")
    return ("PASS" if ok else "FAIL"), "; ".join(why)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="evaluate.py JSON files with a paired comparison")
    ap.add_argument("--json", default=None, help="also write the pooled numbers here")
    ap.add_argument("--metric", choices=METRICS, default="molecule_stability",
                    help="the pre-registered metric that must improve at p < 0.05 (default: molecule_stability)")
    args = ap.parse_args()
    reports = []
    for path in args.reports:
        with open(path) as f:
            reports.append((path, json.load(f)))
    try:
        res = pool(reports)
    except ValueError as e:
        sys.exit(str(e))
    for path, r in reports:
        pr = r["paired"]
        print(f"{path}: {r.get('weights')} against {pr.get('other')}, seed {r.get('seed')}, {r.get('steps')} steps, "
              + ", ".join(f"{m} only new {pr[m]['only_these']}, only old {pr[m]['only_other']}" for m in METRICS))
    print(f"pooled over seeds {', '.join(map(str, res['seeds']))}: {res['molecule_stability']['molecules']} "
          "paired molecules")
    for m in METRICS:
        r = res[m]
        n = max(r["molecules"], 1)
        print(f"{m}: new {100 * r['these'] / n:.1f} % against old {100 * r['other'] / n:.1f} %; only new "
              f"{r['only_these']}, only old {r['only_other']}, exact McNemar p = {r['mcnemar_p']:.3g}; difference "
              f"{100 * r['difference']:+.1f} points (95 % interval {100 * r['difference_95'][0]:+.1f} to "
              f"{100 * r['difference_95'][1]:+.1f})")
    if "atom_stability" in res:
        a = res["atom_stability"]
        print(f"atom_stability: new {100 * a['these_rate']:.2f} % against old {100 * a['other_rate']:.2f} % "
              f"({a['these']} of {a['these_atoms']} against {a['other']} of {a['other_atoms']} atoms)")
    if "agreement" in res:
        g = res["agreement"]
        print(f"agreement: {g['same_types']} of {g['molecules_in_both']} molecules end with the same atom types; "
              f"{g['same_smiles']} of the {g['valid_in_both']} valid in both have the same SMILES")
    res["verdict"], why = verdict(res, args.metric)
    print(f"ship rule on {args.metric}: {res['verdict']} ({why})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
