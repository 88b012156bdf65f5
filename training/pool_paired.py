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
"""
import argparse
import json
import sys

from evaluate import mcnemar_p

METRICS = ("molecule_stability", "validity")


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
        out[m] = tot
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="evaluate.py JSON files with a paired comparison")
    ap.add_argument("--json", default=None, help="also write the pooled numbers here")
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
              f"{r['only_these']}, only old {r['only_other']}, exact McNemar p = {r['mcnemar_p']:.3g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
