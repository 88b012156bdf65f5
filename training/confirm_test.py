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
import json
import os
import subprocess
import sys
import time

from digest import tensor_digest
from paired_test import HERE, ROOT, Layout, check_report, parse_seeds, seed_label
from pool_reports import pool, row

MIN_VALIDITY, MIN_ATOM_STABILITY = 0.80, 0.95


def same_protocol(new, shipped):
    """Raise ValueError unless `new` and `shipped` (pool_reports groups, or a plan with seeds, steps and
    counts.asked) cover the same seeds, steps and number of molecules."""
    for key, same in (("seeds", sorted(new["seeds"]) == sorted(shipped["seeds"])),
                      ("steps", new["steps"] == shipped["steps"]),
                      ("molecules", new["counts"]["asked"] == shipped["counts"]["asked"])):
        if not same:
            have = (lambda g: g["counts"]["asked"]) if key == "molecules" else (lambda g: g[key])
            raise ValueError(f"the shipped reports have {key} {have(shipped)}, the candidate's {have(new)}: "
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


def load(paths):
    out = []
    for path in paths:
        try:
            with open(path) as f:
                out.append((path, json.load(f)))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read it as a JSON report ({e})") from None
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", required=True, help="the candidate weights (it passed the paired test)")
    ap.add_argument("--new-name", required=True, help="the candidate's name in file names, e.g. avg5_ft74-78")
    ap.add_argument("--shipped-reports", nargs="+", required=True,
                    help="the shipped file's evaluate.py reports of the same protocol, e.g. its seeds 1 and 2")
    ap.add_argument("--seeds", default="1-2", help="seeds (default 1-2)")
    ap.add_argument("--n", type=int, default=1000, help="molecules per seed (default 1000)")
    ap.add_argument("--steps", type=int, default=1000, help="denoising steps (default 1000)")
    ap.add_argument("--threads", type=int, default=2, help="sampler threads (default 2)")
    ap.add_argument("--expect-new-digest", default=None, metavar="HEX",
                    help="refuse to start unless the candidate's tensor digest begins with this")
    ap.add_argument("--logs", default=os.path.join(HERE, "logs"), help="where the reports go")
    ap.add_argument("--samples", default=os.path.join(HERE, "runs", "eval"), help="where samples and logs go")
    ap.add_argument("--binary", default=None, help="passed on to evaluate.py (default: its own default)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands still to run and stop")
    args = ap.parse_args(argv)
    if args.n < 1 or args.steps < 1:
        ap.error("--n and --steps must be at least 1")
    if not os.path.exists(args.new):
        ap.error(f"{args.new}: no such weights file")
    try:
        seeds = parse_seeds(args.seeds)
        shipped = pool(load(args.shipped_reports), one=True)[0]
        if len(shipped["weights_seen"]) != 1:
            raise ValueError(f"--shipped-reports: they are of {len(shipped['weights_seen'])} weights files "
                             f"({', '.join(map(str, shipped['weights_seen']))}); the shipped file's count comes from "
                             "its own reports alone")
        digest = tensor_digest(args.new)
        if args.expect_new_digest and not digest.startswith(args.expect_new_digest.lower()):
            raise ValueError(f"{args.new}: tensor digest {digest[:12]}…, not the registered "
                             f"{args.expect_new_digest}…")
    except ValueError as e:
        sys.exit(str(e))
    # the protocol must match the shipped reports before anything is sampled
    planned = {"seeds": seeds, "steps": args.steps, "counts": {"asked": args.n * len(seeds)}}
    try:
        same_protocol(planned, shipped)
    except ValueError as e:
        sys.exit(str(e))
    new, logs, samples = (os.path.abspath(p) for p in (args.new, args.logs, args.samples))
    os.makedirs(logs, exist_ok=True)
    os.makedirs(samples, exist_ok=True)
    layout = Layout(logs, samples, args.n, args.steps)
    todo = []
    for s in seeds:
        if os.path.exists(layout.report(args.new_name, s)):
            try:  # reused only when it was sampled from this file
                check_report(layout.report(args.new_name, s), digest, new)
            except ValueError as e:
                sys.exit(str(e))
        else:
            todo.append((s, [sys.executable, os.path.join(HERE, "evaluate.py"), "--weights", new, "--n", str(args.n),
                             "--steps", str(args.steps), "--seed", str(s), "--threads", str(args.threads),
                             "--keep", layout.xyz(args.new_name, s), "--json", layout.report(args.new_name, s)]
                         + (["--binary", os.path.abspath(args.binary)] if args.binary else [])))
    if args.dry_run:
        for _, cmd in todo:
            print(" ".join(cmd))
        return 0
    for i, (s, cmd) in enumerate(todo):
        log = layout.log(args.new_name, s)
        print(f"[{time.strftime('%H:%M:%S')}] {i + 1}/{len(todo)}: seed {s} -> {layout.report(args.new_name, s)}",
              flush=True)
        t0 = time.time()
        with open(log, "w") as fh:
            rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        if rc != 0 or not os.path.exists(layout.report(args.new_name, s)):
            sys.exit(f"seed {s}: evaluate.py failed (exit {rc}); see {log}")
        print(f"  {time.time() - t0:.1f} s", flush=True)
    try:
        for s in seeds:
            check_report(layout.report(args.new_name, s), digest, new)
        group = pool(load([layout.report(args.new_name, s) for s in seeds]), one=True)[0]
        group["tensor_digest"] = digest
        group["verdict"], why = judge(group, shipped)
    except ValueError as e:
        sys.exit(str(e))
    group["shipped"] = {"files": shipped["files"], "counts": shipped["counts"]}
    print(row(group))
    print(f"confirmation: {group['verdict']} ({why})")
    out = os.path.join(logs, f"pooled_{args.new_name}_{args.n}x{args.steps}_{seed_label(seeds)}.json")
    with open(out, "w") as f:
        json.dump(group, f, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
