#!/usr/bin/env python3
"""Times the trainer's own training step (train.py: diffusion loss, backward, EDM's gradient clipping, AdamW) in
molecules per second, eager against torch.compile, on the same QM9 batches (grouped by atom count as the trainer
draws them). The two are timed in alternating rounds so a change in the machine's load hits both.

    python training/bench_train.py --threads 2 --steps 40 --rounds 3
    python training/bench_train.py --device cuda --batch 512 --steps 100

The first compiled round includes compiling unless PyTorch's cache already holds the graphs (it says how long the
warm-up took). Molecules per second depend on the atom counts drawn: compare the two columns, not runs.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from edm import EnVariationalDiffusion  # noqa: E402
from train import (Data, GradClipper, add_model_args, add_precision_args, bf16_choice, cpu_flags,  # noqa: E402
                   diffusion_loss, edm_divisors, optimizer_step, trained)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=40, help="training steps per round and mode")
    ap.add_argument("--rounds", type=int, default=3)
    add_precision_args(ap)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    use_bf16, bf16_why = bf16_choice(args.bf16, dev.type, cpu_flags() if dev.type == "cpu" else None)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as train.py on CUDA
    data = Data(args.data, dev)
    rng = np.random.default_rng(0)
    batches = data.batches(data.split["train"], args.batch, rng)
    model = EnVariationalDiffusion(args.nf, args.layers).to(dev)
    gamma, T = model.gamma.gamma.detach(), model.T
    params = trained(model)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-12, amsgrad=True)  # as train.py's default
    divisors = edm_divisors(args.batch, data.histogram(data.split["train"]))
    clip = GradClipper()
    modes = {"eager": model, "compiled": torch.compile(model, dynamic=True)}

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16)

    def step(m, ids):
        xh = data.gather(ids)
        t_int = torch.randint(0, T + 1, (len(ids),), device=dev)
        loss, _, _ = diffusion_loss(m, xh, t_int, gamma, T, autocast, divisors, args.batch)
        optimizer_step(loss, opt, clip, params)
        return len(ids)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"model {args.layers}x{args.nf}, batch {args.batch}, PyTorch {torch.__version__} on {where}, "
          f"bf16 {use_bf16} ({bf16_why})")
    start = time.perf_counter()
    for ids in batches[:3]:
        step(modes["compiled"], ids)
    sync()
    print(f"compiled warm-up (3 steps, compiling unless cached): {time.perf_counter() - start:.1f} s", flush=True)
    rates = {k: [] for k in modes}
    k = 3
    for r in range(args.rounds):
        # both modes see the same batches in a round, so the atom counts (the cost) are the same
        round_batches = [batches[(k + j) % len(batches)] for j in range(args.steps)]
        k += args.steps
        # alternate which goes first, so a drift in the machine's load does not always favour the same one
        for name in (["eager", "compiled"] if r % 2 == 0 else ["compiled", "eager"]):
            m = modes[name]
            start = time.perf_counter()
            mols = sum(step(m, ids) for ids in round_batches)
            sync()
            rates[name].append(mols / (time.perf_counter() - start))
        print(f"round {r}: " + ", ".join(f"{name} {v[-1]:.1f} mol/s" for name, v in rates.items()), flush=True)
    e, c = np.mean(rates["eager"]), np.mean(rates["compiled"])
    print(f"mean: eager {e:.1f}, compiled {c:.1f} mol/s ({c / e:.2f}x)")


if __name__ == "__main__":
    main()
