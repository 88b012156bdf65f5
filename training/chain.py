#!/usr/bin/env python3
"""Train the lineage in a chain of chunks, each resuming its predecessor, as the CPU sessions do.

    nohup nice -n 19 python training/chain.py --first 74 --chunks 1e-4:50 2e-5:12 1e-4:50 \\
        --from training/runs/ft73/ft73.pt --deadline 02:20 > /tmp/chain.log 2>&1 &

Chunk k of the chain is named ft<first + k> and trains with `--seed <first + k>`, the learning rate and minutes of
`LR:MINUTES` (the rate decays linearly over the chunk, `--lr-decay`), the lineage's recipe (RECIPE below: the slow
EMA 0.9999 beside EDM's 0.999, 40 % of t drawn from 150..450, 2 threads) and any trainer flags given after `--`.
Before a chunk, its predecessor's full checkpoint (optimizer included; `--from` for the first chunk) is copied to
`training/runs/ftN/ftN.pt` and compared byte for byte; without one the chunk starts a fresh optimizer from the
resume file's EMA weights (200-step warm-up). The resume file is `training/resume/edm_qm9_9x128.safetensors`.

After each chunk that ends well, its EMA weights replace the resume file (so the next session resumes from them
even if this chain is killed) and are validated in float32 (`train.py --validate-only --bf16 off`), as are the
slow EMA's, each into `training/logs/validate_ftN[_ema0.9999]_f32.log`; the chunk's own log is
`training/logs/train_cpu_ftN.log`. Committing stays a person's decision: the chain prints what to commit.

`--deadline HH:MM` (UTC, within the next 12 hours) shortens a chunk so that it ends, with its validations, a few
minutes before then, and skips chunks that would be shorter than `--min-minutes`: a session's end never kills a
chunk halfway. `--dry-run` prints the commands (each chunk's minutes as if it started now). The flags the chain
sets itself (`--minutes`, `--lr`, `--seed`, `--resume`, `--out-dir`, `--name`, `--ckpt`, `--ema-slow`) are refused
after `--`, as are the chain's own flags there, and the trainer's parser checks the rest before anything runs.
"""
import argparse
import datetime
import filecmp
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SLOW_EMA = "0.9999"  # the trainer names the slow EMA's file after it: <name>.ema0.9999.safetensors
RECIPE = ["--lr-decay", "--ema-slow", SLOW_EMA, "--t-low-frac", "0.4", "--t-low-min", "150", "--t-low-max", "450",
          "--threads", "2"]
# what the chain sets for each chunk; the same flags after -- would override it
RESERVED = {"--minutes", "--lr", "--seed", "--resume", "--out-dir", "--name", "--ckpt", "--ema-slow",
            "--validate-only", "--json"}
# minutes a chunk needs beyond its budget: the final evaluations and saving, then two float32 validations
OVERHEAD_MINUTES = 4.0


def parse_chunk(text):
    """'1e-4:50' -> (0.0001, 50.0); ValueError naming the bad chunk."""
    try:
        lr, minutes = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"chunk {text!r}: expected LR:MINUTES, e.g. 1e-4:50") from None
    if not (lr > 0 and minutes > 0):
        raise ValueError(f"chunk {text!r}: the learning rate and minutes must be positive")
    return lr, minutes


def parse_deadline(text, now):
    """'02:20' -> that UTC time within the 12 hours after `now` (an aware datetime); ValueError when it is not
    (a deadline just past is an error, not the same time tomorrow)."""
    try:
        h, m = (int(x) for x in text.split(":"))
        at = now.replace(hour=h, minute=m, second=0, microsecond=0)
    except ValueError:
        raise ValueError(f"--deadline {text!r}: expected HH:MM (UTC)") from None
    if at <= now:
        at += datetime.timedelta(days=1)
    if at - now > datetime.timedelta(hours=12):
        raise ValueError(f"--deadline {text}: already past (it is {now:%H:%M} UTC), or more than 12 hours away")
    return at


def split_flags(extra):
    """Trainer flags with `--flag=value` spelled as `--flag value`, so that each can be looked up."""
    out = []
    for a in extra:
        out += a.split("=", 1) if a.startswith("--") and "=" in a else [a]
    return out


def refuse_reserved(extra):
    """ValueError naming a flag after `--` that the chain sets itself (or one of the chain's own flags, given
    there by mistake): the trainer would take the last value and quietly defeat the chain."""
    chain_flags = {"--first", "--chunks", "--from", "--resume-file", "--runs", "--logs", "--deadline",
                   "--min-minutes", "--dry-run"}
    bad = [a for a in extra if a in RESERVED or a in chain_flags]
    if bad:
        raise ValueError(f"after --: {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} set by the chain (or "
                         "are its own flags, which go before --); the trainer flags after -- must be others")


def budget(minutes, deadline, now, min_minutes):
    """The minutes a chunk may train: `minutes`, cut so that it and its overhead end before `deadline`; None when
    that leaves fewer than `min_minutes`."""
    if deadline is not None:
        minutes = min(minutes, (deadline - now).total_seconds() / 60 - OVERHEAD_MINUTES)
    return round(minutes, 1) if minutes >= min_minutes else None


def chunk_commands(n, lr, minutes, resume, runs, extra, python=sys.executable):
    """(train command, weights path, slow-EMA weights path, checkpoint path) of chunk ftN."""
    out_dir = os.path.join(runs, f"ft{n}")
    name = os.path.basename(resume)
    weights = os.path.join(out_dir, name)
    ckpt = os.path.join(out_dir, f"ft{n}.pt")
    cmd = [python, os.path.join(HERE, "train.py"), *RECIPE, "--resume", resume, "--minutes", f"{minutes:g}",
           "--lr", f"{lr:g}", "--seed", str(n), "--out-dir", out_dir, "--name", name, "--ckpt", ckpt, *extra]
    return cmd, weights, weights.replace(".safetensors", f".ema{SLOW_EMA}.safetensors"), ckpt


def validate_command(weights, extra, python=sys.executable):
    """The float32 validation of a weights file, with the trainer flags that say where the data and model are."""
    keep = []
    for flag in ("--data", "--nf", "--layers", "--eval-molecules", "--threads"):
        if flag in extra:
            keep += extra[extra.index(flag):extra.index(flag) + 2]
    if "--threads" not in keep:
        keep += ["--threads", "2"]
    return [python, os.path.join(HERE, "train.py"), "--validate-only", "--bf16", "off", "--resume", weights, *keep]


def run(cmd, log):
    with open(log, "w") as fh:
        return subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)


def last_line(log, start):
    with open(log) as f:
        lines = [line.rstrip("\n") for line in f if start in line]
    return lines[-1] if lines else f"(no '{start}' line in {log})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", type=int, required=True, help="the first chunk's number N (ftN, --seed N)")
    ap.add_argument("--chunks", nargs="+", required=True, metavar="LR:MINUTES")
    ap.add_argument("--from", dest="start_ckpt", default=None,
                    help="the full checkpoint the first chunk continues (e.g. training/runs/ft73/ft73.pt)")
    ap.add_argument("--resume-file", default=os.path.join(HERE, "resume", "edm_qm9_9x128.safetensors"),
                    help="the lineage's weights: each chunk starts from them and its EMA replaces them")
    ap.add_argument("--runs", default=os.path.join(HERE, "runs"), help="where ftN/ folders go")
    ap.add_argument("--logs", default=os.path.join(HERE, "logs"), help="where the logs go")
    ap.add_argument("--deadline", default=None, metavar="HH:MM", help="end every chunk before this UTC time")
    ap.add_argument("--min-minutes", type=float, default=5.0, help="skip a chunk left shorter than this")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    ap.add_argument("extra", nargs="*", help="trainer flags after --, e.g. -- --batch 64")
    args = ap.parse_args(argv)
    now = datetime.datetime.now(datetime.timezone.utc)
    args.extra = split_flags(args.extra)
    try:
        chunks = [parse_chunk(c) for c in args.chunks]
        deadline = parse_deadline(args.deadline, now) if args.deadline else None
        refuse_reserved(args.extra)
    except ValueError as e:
        ap.error(str(e))
    sys.path.insert(0, HERE)
    import train  # the trainer's own parser checks every chunk's flags before anything is copied or trained

    probe = chunk_commands(args.first, 1e-4, 1.0, args.resume_file, args.runs, args.extra)[0]
    try:
        train.build_parser().parse_args(probe[2:])
    except SystemExit:
        ap.error(f"the trainer refuses the flags after --: {' '.join(args.extra)}")
    if args.start_ckpt and not os.path.exists(args.start_ckpt):
        ap.error(f"--from {args.start_ckpt}: no such checkpoint")
    if not os.path.exists(args.resume_file):
        ap.error(f"--resume-file {args.resume_file}: no such weights file")
    os.makedirs(args.logs, exist_ok=True)
    previous = args.start_ckpt
    done = []
    for k, (lr, minutes) in enumerate(chunks):
        n = args.first + k
        now = datetime.datetime.now(datetime.timezone.utc)
        got = budget(minutes, deadline, now, args.min_minutes)
        if got is None:
            print(f"ft{n}: skipped, fewer than {args.min_minutes:g} minutes left before the deadline", flush=True)
            break
        cmd, weights, slow, ckpt = chunk_commands(n, lr, got, args.resume_file, args.runs, args.extra)
        log = os.path.join(args.logs, f"train_cpu_ft{n}.log")
        if args.dry_run:
            print(" ".join(cmd), ">", log)
            print(" ".join(validate_command(weights, args.extra)))
            previous = ckpt
            continue
        if os.path.exists(os.path.dirname(weights)) and os.listdir(os.path.dirname(weights)):
            sys.exit(f"{os.path.dirname(weights)} already holds files: chunk ft{n} was run before; start the chain at "
                     "a new number")
        os.makedirs(os.path.dirname(weights), exist_ok=True)
        if previous and os.path.exists(previous):
            shutil.copyfile(previous, ckpt)
            if not filecmp.cmp(previous, ckpt, shallow=False):
                sys.exit(f"{ckpt}: the copy of {previous} differs from it")
            start = f"{previous}'s full checkpoint (if it has seen at least the resume file's molecules)"
        else:
            start = f"{args.resume_file}'s EMA weights with a fresh optimizer"
        print(f"[{now:%H:%M:%S}] ft{n}: lr {lr:g} for {got:g} min from {start} -> {log}", flush=True)
        rc = run(cmd, log)
        if rc != 0 or not os.path.exists(weights):
            sys.exit(f"ft{n}: the trainer failed (exit {rc}); see {log}. {args.resume_file} is left as it was")
        tmp = args.resume_file + ".tmp"
        shutil.copyfile(weights, tmp)
        os.replace(tmp, args.resume_file)  # a kill mid-copy leaves the old file whole
        with open(log) as f:
            print(f"  {f.readline().strip()}", flush=True)  # what the trainer took: the checkpoint or fresh
        print(f"  {last_line(log, 'done:')}", flush=True)
        for path, suffix in ((weights, ""), (slow, f"_ema{SLOW_EMA}")):
            if os.path.exists(path):
                vlog = os.path.join(args.logs, f"validate_ft{n}{suffix}_f32.log")
                if run(validate_command(path, args.extra), vlog) != 0:
                    print(f"  validation of {path} failed; see {vlog}", flush=True)
                else:
                    print(f"  {last_line(vlog, 'validate')}", flush=True)
        done.append(n)
        previous = ckpt
    if done:
        print(f"chunks done: {', '.join(f'ft{n}' for n in done)}; {args.resume_file} holds ft{done[-1]}'s EMA weights. "
              "Commit the resume file and the train_cpu/validate logs of these chunks.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
