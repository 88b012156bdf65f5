#!/usr/bin/env python3
"""Run a paired ship test of two weights files over a range of seeds, resumably, and pool it.

    python training/paired_test.py --new training/runs/avg5_ft74-78.safetensors --new-name avg5_ft74-78 \\
        --old weights/edm_qm9_9x128.safetensors --old-name shipped343avg --seeds 130-145 \\
        --expect-new-digest 0123abcd...

For each seed, the old file samples first (`evaluate.py --keep`), then the new file samples the same seed, count
and steps and is compared with it molecule by molecule (`evaluate.py --paired`). The files are named after the
sides, as the model card's tests always named them:

    training/logs/eval_{name}_{n}x{steps}_seed{S}.json    the report (committed)
    training/runs/eval/{name}_{n}x{steps}_seed{S}.xyz     the samples (not committed)
    training/runs/eval/{name}_{n}x{steps}_seed{S}.log     what evaluate.py printed

A seed whose report exists is not sampled again, so an interrupted test resumes where it stopped. Each report
records the tensor digest of the weights that sampled it (evaluate.py, since session 46), and a report is reused
only when that digest is its side's file's and, on the new side, its samples were paired with the old side's file
of the same seed: a name reused for other weights, or a shipped file replaced halfway through a test, stops the
test with the report's name instead of pooling two different comparisons. Reports without a digest (older ones)
are refused the same way. `--expect-new-digest` (a prefix is enough) refuses a candidate other than the one the
test registered.

When every seed is done, the reports are pooled with `pool_paired.py` (one exact McNemar test on all discordant
molecules) and the ship rule's verdict on `--metric` is printed and written, with the metric, to
`training/logs/pooled_{new}_vs_{old}_seeds{A}-{B}.json` (`..._validity.json` for a test on validity). `--dry-run`
prints the evaluate.py commands left to run.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from digest import tensor_digest
from pool_paired import METRICS, pool, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_seeds(text):
    """'130-145' or '1,3,5' (or a mix, '1-3,7') -> a list of distinct seeds in the given order."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds {text!r}: expected seeds like 130-145 or 1,3,5") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is listed twice; each draw counts once")
    return seeds


def seed_label(seeds):
    """How the pooled and plan files name the seed set: 'seeds130-145' for a run of consecutive seeds."""
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed{seeds[0]}"
    return "seeds" + "_".join(map(str, seeds))


class Layout:
    """Where each side's report, samples and log go (see the module doc)."""

    def __init__(self, logs, samples, n, steps):
        self.logs, self.samples, self.n, self.steps = logs, samples, n, steps

    def stem(self, name, seed):
        return f"{name}_{self.n}x{self.steps}_seed{seed}"

    def report(self, name, seed):
        return os.path.join(self.logs, f"eval_{self.stem(name, seed)}.json")

    def xyz(self, name, seed):
        return os.path.join(self.samples, self.stem(name, seed) + ".xyz")

    def log(self, name, seed):
        return os.path.join(self.samples, self.stem(name, seed) + ".log")


def load_reports(paths):
    """[(path, parsed JSON)] of evaluate.py reports; ValueError naming one that cannot be read."""
    out = []
    for path in paths:
        try:
            with open(path) as f:
                out.append((path, json.load(f)))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read it as a JSON report ({e})") from None
    return out


def check_report(path, r, digest, weights, paired_with=None):
    """Raise ValueError unless the evaluate.py report `r` (read from `path`) was sampled from weights with tensor
    digest `digest` (the file `weights`) and, where `paired_with` is given, compared with the samples at that
    path."""
    got = r.get("tensor_digest")
    if got is None:
        raise ValueError(f"{path}: it records no tensor digest (written before session 46, or from --samples), so "
                         f"it cannot be matched to {weights}; move it away, or run the test under another name")
    if got != digest:
        raise ValueError(f"{path}: sampled from weights with tensor digest {got[:12]}…, but {weights} has "
                         f"{digest[:12]}…: a name reused for other weights, or a file replaced since; move the "
                         "report away, or run the test under another name")
    if paired_with is not None:
        other = (r.get("paired") or {}).get("other")
        if other is None or os.path.abspath(os.path.join(ROOT, other)) != os.path.abspath(paired_with):
            raise ValueError(f"{path}: compared with {other}, not with {paired_with}")


def check_existing(path, digest, weights, paired_with=None):
    """check_report on the report already at `path`."""
    check_report(*load_reports([path])[0], digest, weights, paired_with)


def evaluate_command(layout, weights, name, seed, threads, binary=None, paired=None, python=sys.executable):
    """The evaluate.py command that samples `weights` on `seed` into `name`'s samples and report (paired with the
    samples at `paired`, where given)."""
    return ([python, os.path.join(HERE, "evaluate.py"), "--weights", weights, "--n", str(layout.n),
             "--steps", str(layout.steps), "--seed", str(seed), "--threads", str(threads),
             "--keep", layout.xyz(name, seed)]
            + (["--paired", paired] if paired else [])
            + ["--json", layout.report(name, seed)]
            + (["--binary", os.path.abspath(binary)] if binary else []))


def run_evaluations(runs):
    """Run each (what, report, command, log) in turn, its output into its log; exit naming the first that fails
    or writes no report."""
    for i, (what, report, cmd, log) in enumerate(runs):
        print(f"[{time.strftime('%H:%M:%S')}] {i + 1}/{len(runs)}: {what} -> {report}", flush=True)
        t0 = time.time()
        with open(log, "w") as fh:
            rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        if rc != 0 or not os.path.exists(report):
            sys.exit(f"{what}: evaluate.py failed (exit {rc}); see {log}")
        print(f"  {time.time() - t0:.1f} s", flush=True)


def add_run_arguments(ap, steps):
    """The flags both runners share: protocol, registered digest, where files go, the sampler, --dry-run."""
    ap.add_argument("--n", type=int, default=1000, help="molecules per seed (and side) (default 1000)")
    ap.add_argument("--steps", type=int, default=steps, help=f"denoising steps (default {steps})")
    ap.add_argument("--threads", type=int, default=2, help="sampler threads (default 2)")
    ap.add_argument("--expect-new-digest", default=None, metavar="HEX",
                    help="refuse to start unless the candidate's tensor digest begins with this")
    ap.add_argument("--logs", default=os.path.join(HERE, "logs"), help="where the reports go")
    ap.add_argument("--samples", default=os.path.join(HERE, "runs", "eval"), help="where samples and logs go")
    ap.add_argument("--binary", default=None, help="passed on to evaluate.py (default: its own default)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands still to run and stop")


def prepare(ap, args, weights):
    """Check the shared flags and the weights files, make every path absolute (evaluate.py runs from the
    repository root), create the folders and return (seeds, Layout, the candidate's digest); ValueErrors exit."""
    if args.n < 1 or args.steps < 1:
        ap.error("--n and --steps must be at least 1")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        ap.error(str(e))
    for path in weights:
        if not os.path.exists(path):
            ap.error(f"{path}: no such weights file")
    args.new, args.logs, args.samples = (os.path.abspath(p) for p in (args.new, args.logs, args.samples))
    os.makedirs(args.logs, exist_ok=True)
    os.makedirs(args.samples, exist_ok=True)
    try:
        digest = tensor_digest(args.new)
    except ValueError as e:
        sys.exit(str(e))
    if args.expect_new_digest and not digest.startswith(args.expect_new_digest.lower()):
        sys.exit(f"{args.new}: tensor digest {digest[:12]}…, not the registered {args.expect_new_digest}…")
    return seeds, Layout(args.logs, args.samples, args.n, args.steps), digest


def write_result(path, res):
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {path}")


def plan(layout, new, new_name, old, old_name, seeds, threads, digests, binary=None):
    """The (seed, side, report path, evaluate.py command) still to run, in order: on each seed the old side, then
    the new side paired with the old side's samples. A side whose report exists is done, once check_report finds
    it is of that side's file (`digests`: {"new": ..., "old": ...}); otherwise ValueError. A new side whose old
    samples are gone while its own report is missing cannot be paired, so that raises ValueError too."""
    todo = []
    for s in seeds:
        old_xyz = layout.xyz(old_name, s)
        old_pending = not os.path.exists(layout.report(old_name, s))
        if old_pending:
            todo.append((s, "old", layout.report(old_name, s),
                         evaluate_command(layout, old, old_name, s, threads, binary)))
        else:
            check_existing(layout.report(old_name, s), digests["old"], old)
        if os.path.exists(layout.report(new_name, s)):
            if old_pending:
                raise ValueError(f"{layout.report(new_name, s)} exists but the old side's report of seed {s} does "
                                 "not: it was paired with samples that are not this test's; move it away")
            check_existing(layout.report(new_name, s), digests["new"], new, paired_with=old_xyz)
        else:
            if not old_pending and not os.path.exists(old_xyz):
                raise ValueError(f"seed {s}: {layout.report(old_name, s)} exists but its samples {old_xyz} are "
                                 "gone, so the new side cannot be paired with them; delete that report to resample "
                                 "the old side")
            todo.append((s, "new", layout.report(new_name, s),
                         evaluate_command(layout, new, new_name, s, threads, binary, paired=old_xyz)))
    return todo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", required=True, help="the candidate weights")
    ap.add_argument("--new-name", required=True, help="the candidate's name in file names, e.g. avg5_ft74-78")
    ap.add_argument("--old", default=os.path.join(ROOT, "weights", "edm_qm9_9x128.safetensors"),
                    help="the weights to beat (default: the shipped file)")
    ap.add_argument("--old-name", required=True, help="the old side's name in file names, e.g. shipped343avg")
    ap.add_argument("--seeds", required=True, help="seeds to run, e.g. 130-145 (fresh ones: never used in a test)")
    ap.add_argument("--metric", choices=METRICS, default="molecule_stability",
                    help="the pre-registered metric that must improve at p < 0.05 (default: molecule_stability)")
    add_run_arguments(ap, steps=100)
    args = ap.parse_args(argv)
    if args.new_name == args.old_name:
        ap.error(f"--new-name and --old-name are both {args.new_name!r}: the two sides would share files")
    seeds, layout, new_digest = prepare(ap, args, (args.new, args.old))
    args.old = os.path.abspath(args.old)
    try:
        digests = {"new": new_digest, "old": tensor_digest(args.old)}
        todo = plan(layout, args.new, args.new_name, args.old, args.old_name, seeds, args.threads, digests,
                    args.binary)
    except ValueError as e:
        sys.exit(str(e))
    if args.dry_run:
        for _, _, _, cmd in todo:
            print(" ".join(cmd))
        return 0
    run_evaluations([(f"seed {seed}, {side} side", report, cmd,
                      layout.log(args.new_name if side == "new" else args.old_name, seed))
                     for seed, side, report, cmd in todo])
    try:
        reports = load_reports([layout.report(args.new_name, s) for s in seeds])
        for s, (path, r) in zip(seeds, reports):  # what was sampled while this ran is checked like the rest
            check_existing(layout.report(args.old_name, s), digests["old"], args.old)
            check_report(path, r, digests["new"], args.new, paired_with=layout.xyz(args.old_name, s))
        res = pool(reports)
    except ValueError as e:
        sys.exit(str(e))
    res["metric"], res["tensor_digests"] = args.metric, digests
    res["verdict"], why = verdict(res, args.metric)
    for m in METRICS:
        r = res[m]
        n = max(r["molecules"], 1)
        print(f"{m}: new {100 * r['these'] / n:.1f} % against old {100 * r['other'] / n:.1f} %; only new "
              f"{r['only_these']}, only old {r['only_other']}, exact McNemar p = {r['mcnemar_p']:.3g}")
    print(f"ship rule on {args.metric}: {res['verdict']} ({why})")
    suffix = "" if args.metric == "molecule_stability" else "_validity"
    write_result(os.path.join(args.logs, f"pooled_{args.new_name}_vs_{args.old_name}_{seed_label(seeds)}{suffix}.json"),
                 res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
