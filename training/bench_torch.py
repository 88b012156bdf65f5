#!/usr/bin/env python3
"""Times the project's PyTorch denoiser (training/edm.py) the way `equivariant bench` times the Rust backends:
ms per network evaluation for B molecules of n atoms, on the CPU or CUDA, fp32 or bf16 autocast.

    python training/bench_torch.py --device cuda --nf 256 --layers 9 --batch 1,16,64 --atoms 9,19,29

On CUDA, evaluations are queued back to back and timed with CUDA events around a synchronised block (the same
as the WGSL backend's one-submit timing); `--graph` additionally captures one evaluation in a CUDA graph, which
removes PyTorch's per-kernel launch cost (the fairest fast baseline).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edm import EnVariationalDiffusion  # noqa: E402


def macs(nf, layers, b, n):
    edges, nodes = b * n * (n - 1), b * n
    return layers * (2 * edges * nf * nf + nodes * 7 * nf * nf) + nodes * 14 * nf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--nf", type=int, default=256)
    ap.add_argument("--layers", type=int, default=9)
    ap.add_argument("--batch", default="1,16,64")
    ap.add_argument("--atoms", default="9,19,29")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--graph", action="store_true", help="also time a CUDA-graph replay")
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 like the WGSL kernels unless --bf16
    model = EnVariationalDiffusion(args.nf, args.layers).to(dev).eval()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"model {args.layers}x{args.nf}, PyTorch {torch.__version__} on {name}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}")
    print("| B | n | ms / evaluation | ms / molecule-evaluation | GFLOP/s |" + (" CUDA graph ms |" if args.graph else ""))
    print("|---|---|---|---|---|" + ("---|" if args.graph else ""))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for b in map(int, args.batch.split(",")):
        for n in map(int, args.atoms.split(",")):
            z = torch.randn(b, n, 9, device=dev)
            z[..., :3] -= z[..., :3].mean(dim=1, keepdim=True)
            t = torch.full((b,), 0.5, device=dev)

            def run():
                with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                    return model(z, t)

            for _ in range(3):
                run()
            sync()
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds or reps < 3:
                for _ in range(10):
                    run()
                sync()
                reps += 10
            ms = (time.perf_counter() - start) * 1e3 / reps
            row = f"| {b} | {n} | {ms:.3f} | {ms / b:.4f} | {2 * macs(args.nf, args.layers, b, n) / ms / 1e6:.1f} |"
            if args.graph and dev.type == "cuda":
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        run()
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    run()
                g.replay()
                sync()
                reps, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds or reps < 3:
                    for _ in range(10):
                        g.replay()
                    sync()
                    reps += 10
                row += f" {(time.perf_counter() - start) * 1e3 / reps:.3f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
