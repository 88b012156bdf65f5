#!/usr/bin/env python3
"""Average several weights files of one model into one (a "model soup" / SWA-style weight average).

    python training/average_weights.py a.safetensors b.safetensors c.safetensors --out soup.safetensors

Every tensor is averaged in float32 (optionally weighted with --weights-of), then stored as float16 like the
shipped file (the γ table stays float32 and must be identical in every input: it is the noise schedule, not a
learned weight). The inputs must share the configuration (width, depth, schedule, atom types) and tensor names.

Averaging only makes sense for files fine-tuned from one common ancestor (same loss basin), e.g. chunks that each
started from the shipped file. Provenance: the compute counters (molecules, epochs, steps, CPU-hours,
GPU-minutes) are the smallest input's plus every other input's excess over it. That is the total compute spent
when the inputs are siblings that each continued the smallest one (or its twin) independently; it overstates
the total when one input continued another (files along one chain, e.g. 159 -> 162 -> 166 epochs, would count
the shared stretch twice): for those, `--chain` records the last file's counters (the largest), the compute of the
whole chain. The configuration is the inputs' own; the list of inputs is recorded under
`averaged_from`.

A file's SHA-256 covers its metadata, which records the commit and the time it was written, so a rebuilt
average never matches the first build's SHA-256. The tensor digest (printed after writing; `--digest FILE ...`
for existing files) covers only the tensors (names, dtypes, shapes, bytes): a rebuild from the same inputs
matches it.

    python training/average_weights.py --digest soup.safetensors
"""
import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digest import tensor_digest  # noqa: E402
from train import git_commit, read_safetensors, write_weights  # noqa: E402

COUNTERS = ("molecules_seen", "epochs", "steps", "cpu_hours", "gpu_minutes", "chunks")


def average(paths, coefficients):
    """Returns (averaged float32 tensors, config of the first input, list of provenances). Raises ValueError naming
    the first mismatch: configuration (anything but the provenance), tensor names, shapes, γ table or a non-finite
    value."""
    if len(paths) < 2:
        raise ValueError("need at least two weights files to average")
    if len(coefficients) != len(paths) or any(c < 0 for c in coefficients) or abs(sum(coefficients) - 1) > 1e-6:
        raise ValueError(f"--weights-of needs {len(paths)} non-negative numbers summing to 1, got {coefficients}")
    acc, first_cfg, provs = None, None, []
    for path, c in zip(paths, coefficients):
        tensors, cfg = read_safetensors(path)
        if not cfg:
            raise ValueError(f"{path}: no `equivariant` metadata (not a file written by train.py or convert)")
        if first_cfg is None:
            if "gamma.gamma" not in tensors:
                raise ValueError(f"{path}: no γ table (`gamma.gamma`): not an EDM weights file")
            first_cfg, acc = cfg, {k: torch.zeros_like(v, dtype=torch.float32) for k, v in tensors.items()}
            gamma = tensors["gamma.gamma"]
        differ = sorted(k for k in set(cfg) | set(first_cfg) if k != "provenance" and cfg.get(k) != first_cfg.get(k))
        if differ:
            key = differ[0]
            raise ValueError(f"{path}: {key} = {cfg.get(key)!r}, but {paths[0]} has {first_cfg.get(key)!r}")
        if set(tensors) != set(acc):
            extra = sorted(set(tensors) ^ set(acc))[:3]
            raise ValueError(f"{path}: tensor names differ from {paths[0]} (e.g. {extra})")
        for k, v in tensors.items():
            if v.shape != acc[k].shape:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, {paths[0]} {tuple(acc[k].shape)}")
            if not torch.isfinite(v).all():
                raise ValueError(f"{path}: {k} holds a non-finite value")
            if k == "gamma.gamma":
                if not torch.equal(v.float(), gamma.float()):
                    raise ValueError(f"{path}: its γ table (noise schedule) differs from {paths[0]}'s")
                continue
            acc[k] += c * v.float()
        provs.append(cfg.get("provenance", {}))
    acc["gamma.gamma"] = gamma.float()
    return acc, first_cfg, provs


def combined_provenance(paths, provs, coefficients, chain=False):
    """Compute counters of the average: siblings (default) add each input's excess over the smallest; a `chain`
    (each input continued the previous one) spent only its last, largest input's compute."""
    base = min(range(len(provs)), key=lambda i: provs[i].get("molecules_seen", 0))
    last = max(range(len(provs)), key=lambda i: provs[i].get("molecules_seen", 0))
    out = {}
    for key in COUNTERS:
        vals = [p.get(key) for p in provs]
        if any(v is None for v in vals):
            continue
        total = vals[last] if chain else vals[base] + sum(v - vals[base] for v in vals)
        out[key] = int(total) if isinstance(vals[base], int) else float(total)
    out["averaged_from"] = [{"file": os.path.relpath(p), "coefficient": round(c, 6), "epochs": pr.get("epochs"),
                             "recipe": pr.get("recipe")} for p, pr, c in zip(paths, provs, coefficients)]
    out["recipe"] = "weight average of " + ", ".join(f"{pr.get('epochs')}-epoch" for pr in provs) + " files"
    out["git_commit"] = git_commit()
    out["updated"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="safetensors weights files of one model configuration")
    ap.add_argument("--out", help="the averaged file to write (needed unless --digest)")
    ap.add_argument("--digest", action="store_true",
                    help="only print each input's tensor digest (SHA-256 of the tensors, not the metadata)")
    ap.add_argument("--weights-of", type=float, nargs="+", help="averaging coefficients (default: equal)")
    ap.add_argument("--precision", choices=["f16", "f32"], default="f16")
    ap.add_argument("--chain", action="store_true",
                    help="the inputs lie along one chain (each continued the one before): count the last file's "
                         "compute, not the sum of every file's excess over the smallest")
    args = ap.parse_args(argv)
    if args.digest:
        for path in args.inputs:
            try:
                print(f"{tensor_digest(path)}  {path}")
            except (ValueError, OSError) as e:
                sys.exit(f"average_weights: {e}")
        return
    if not args.out:
        ap.error("--out is required (or --digest to only print tensor digests)")
    coefficients = args.weights_of or [1.0 / len(args.inputs)] * len(args.inputs)
    try:
        acc, cfg, provs = average(args.inputs, coefficients)
    except (ValueError, OSError) as e:
        sys.exit(f"average_weights: {e}")
    prov = combined_provenance(args.inputs, provs, coefficients, args.chain)
    if not write_weights(args.out, acc, cfg, prov, args.precision):
        sys.exit(f"average_weights: {args.out} not written")
    print(f"wrote {args.out}: average of {len(args.inputs)} files, {prov.get('epochs')} epochs of compute; "
          f"tensor digest {tensor_digest(args.out)}")
    print(json.dumps(prov["averaged_from"], indent=1))


if __name__ == "__main__":
    main()
