#!/usr/bin/env python3
"""Run a ship test's second step, the 1000-step confirmation, resumably, and judge it.

    python training/confirm_test.py --new training/runs/avg5_ft74-78.safetensors --new-name avg5_ft74-78 \\
        --shipped-reports training/logs/eval_avg5_ft69-73_1000x1000_seed{1,2}.json

The candidate samples 1000 molecules at 1000 steps on each seed (default seeds 1 and 2, the model card's protocol),
with the reports in `training/logs/eval_{name}_{n}x{steps}_seed{S}.json` and the samples and logs in
`training/runs/eval/`; a seed whose report exists is not sampled again. The reports are pooled with
`pool_reports.py` (exact counts over seeds; a report is reused or pooled only when the tensor digest it records
is the candidate's) and judged by the model card's rule: more stable molecules than the
shipped file's own reports on the same seeds, validity at least 80.0 % and atom stability at least 95 %. The
shipped file's count is pooled from its reports, not typed in, and they must cover the same seeds, molecules and
steps. The verdict (PASS or FAIL, with why) is printed and written with the pooled numbers to
`training/logs/pooled_{name}_{n}x{steps}_seeds{A}-{B}.json`. `--expect-new-digest` (a prefix is enough) refuses a
candidate other than the registered one; `--dry-run` prints the evaluate.py commands left to run.
"""
import argparse
import os
import sys

from paired_test import (add_run_arguments, check_existing, check_report, evaluate_command, load_reports, prepare,
                         run_evaluations, seed_label, write_result)
from pool_reports import pool, row

MIN_VALIDITY, MIN_ATOM_STABILITY = 0.80, 0.95


def same_protocol(new, shipped):
    """Raise ValueError unless `new` and `shipped` (pool_reports groups, or a plan with seeds, steps and
    counts.asked) cover the same seeds, steps and number of molecules."""
    for key, theirs, ours in (("seeds", sorted(shipped["seeds"]), sorted(new["seeds"])),
                              ("steps", shipped["steps"], new["steps"]),
                              ("molecules", shipped["counts"]["asked"], new["counts"]["asked"])):
        if theirs != ours:
            raise ValueError(f"the shipped reports have {key} {theirs}, the candidate's {ours}: "
                             "a confirmation compares the same protocol")


def judge(new, shipped):
    """(PASS | FAIL, why) of the confirmation: `new` and `shipped` are pool_reports groups of the same seeds and
    molecule count; the new one must have more stable molecules, validity >= 80 % and atom stability >= 95 %.
    Raises ValueError when the two groups are not the same protocol."""
    same_protocol(new, shipped)
    c, s, r = new["counts"], shipped["counts"], new["rates"]
    checks = [(c["stable_molecules"] > s["stable_molecules"],
               f"{c['stable_molecules']} against {s['stable_molecules']} of {c['asked']} molecules stable"),
              (r["validity"] >= MIN_VALIDITY, f"validity {100 * r['validity']:.1f} % (at least 80.0)"),
              (r["atom_stability"] >= MIN_ATOM_STABILITY,
               f"atom stability {100 * r['atom_stability']:.2f} % (at least 95)")]
    return ("PASS" if all(ok for ok, _ in checks) else "FAIL"), "; ".join(
        why + ("" if ok else " [not met]") for ok, why in checks)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", required=True, help="the candidate weights (it passed the paired test)")
    ap.add_argument("--new-name", required=True, help="the candidate's name in file names, e.g. avg5_ft74-78")
    ap.add_argument("--shipped-reports", nargs="+", required=True,
                    help="the shipped file's evaluate.py reports of the same protocol, e.g. its seeds 1 and 2")
    ap.add_argument("--seeds", default="1-2", help="seeds (default 1-2)")
    add_run_arguments(ap, steps=1000)
    args = ap.parse_args(argv)
    seeds, layout, digest = prepare(ap, args, (args.new,))
    try:
        shipped = pool(load_reports(args.shipped_reports), one=True)[0]
        if len(shipped["weights_seen"]) != 1:
            raise ValueError(f"--shipped-reports: they are of {len(shipped['weights_seen'])} weights files "
                             f"({', '.join(map(str, shipped['weights_seen']))}); the shipped file's count comes from "
                             "its own reports alone")
        # the protocol must match the shipped reports before anything is sampled
        same_protocol({"seeds": seeds, "steps": args.steps, "counts": {"asked": args.n * len(seeds)}}, shipped)
        todo = []
        for s in seeds:
            if os.path.exists(layout.report(args.new_name, s)):  # reused only when it was sampled from this file
                check_existing(layout.report(args.new_name, s), digest, args.new)
            else:
                todo.append((f"seed {s}", layout.report(args.new_name, s),
                             evaluate_command(layout, args.new, args.new_name, s, args.threads, args.binary),
                             layout.log(args.new_name, s)))
    except ValueError as e:
        sys.exit(str(e))
    if args.dry_run:
        for _, _, cmd, _ in todo:
            print(" ".join(cmd))
        return 0
    run_evaluations(todo)
    try:
        reports = load_reports([layout.report(args.new_name, s) for s in seeds])
        for path, r in reports:
            check_report(path, r, digest, args.new)
        group = pool(reports, one=True)[0]
        group["tensor_digest"] = digest
        group["verdict"], why = judge(group, shipped)
    except ValueError as e:
        sys.exit(str(e))
    group["shipped"] = {"files": shipped["files"], "counts": shipped["counts"]}
    print(row(group))
    print(f"confirmation: {group['verdict']} ({why})")
    write_result(os.path.join(args.logs, f"pooled_{args.new_name}_{args.n}x{args.steps}_{seed_label(seeds)}.json"),
                 group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
