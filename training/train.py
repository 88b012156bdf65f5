#!/usr/bin/env python3
"""Train EDM's QM9 denoiser (spec §2.5) on the CPU or on CUDA, in wall-clock-budgeted chunks.

    python training/train.py --minutes 150                       # continue training/resume/ for 150 min
    python training/train.py --device cuda --minutes 8 --batch 256 --data qm9_compact.npz --out-dir $OUT

Recipe (EDM's unless a flag says otherwise): ε-prediction, l2 loss normalised by 9·N_pad as EDM's padded
batches give it in expectation, t uniform over {0..T} (at t = 0 only the x error trains, spec §2.5 step 6),
AdamW with AMSGrad, EDM's adaptive gradient clipping, EMA of the weights. Batches hold molecules of one atom
count (no padding). bf16 autocast on CUDA, and on a CPU with bf16 instructions (flag --bf16 auto|on|off).

Resuming: `--resume` names a safetensors file written by this script (or converted from the original EDM); its
EMA weights seed both the trained model and the EMA (fresh optimizer), and its provenance counters continue.
A full checkpoint (model, EMA, optimizer) is also kept in --ckpt for resuming within one machine's life: it is
used when it has seen at least as many molecules as the weights resumed from, and alone when neither --resume nor
weights in --out-dir are there (`--resume none` trains from scratch whatever --ckpt holds).
Weights are saved atomically every --save-minutes and at the end, and never when any tensor is non-finite.
"""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edm import (N_NODES_HISTOGRAM, EnVariationalDiffusion, config, count_params, features,  # noqa: E402
                 mean_free_noise, metadata)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EVAL_LEVELS = [1, 10, 50, 100, 250, 500, 750, 1000]
# this many batches in a row with a non-finite loss stop the run: the data or the weights are broken, and skipping
# on would only spend the budget (a rare bad batch is skipped and training goes on)
MAX_NONFINITE_IN_ROW = 20


class NonFiniteStreak:
    """Counts batches in a row whose loss was not finite: a run skips such a batch, and stops at `limit` in a row
    (diverged weights or bad data), since skipping would otherwise go on until the time budget ends. A finite loss
    ends the streak."""

    def __init__(self, limit=MAX_NONFINITE_IN_ROW):
        self.limit, self.count = limit, 0

    def record(self, finite):
        """Returns True when the run must stop."""
        self.count = 0 if finite else self.count + 1
        return self.stopped

    @property
    def stopped(self):
        return self.count >= self.limit


def log(msg, fh=None):
    line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
    print(line, flush=True)


# CPU flags (/proc/cpuinfo) of instructions that compute in bf16; without them PyTorch emulates bf16 matmuls
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags from the first `flags` line of /proc/cpuinfo, or None where it cannot be read
    (not Linux)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def bf16_choice(mode, device_type, flags=None):
    """Whether to train under bf16 autocast, and why (for the log). 'on' and 'off' are obeyed. 'auto' turns it on
    for CUDA, and on the CPU only where the CPU computes in bf16 (one of BF16_CPU_FLAGS): on the Zen 4 of
    ../shared/training-notes.md (avx512_bf16) bf16 trained 1.44x faster than f32, while on a Zen 3 (AVX2 only,
    session 21) a chunk ran at about 6 molecules/s against 44.8 in f32 (bf16 kept one core busy, f32 both), the
    bf16 products being emulated. Where the flags cannot be read, f32 is the cautious choice."""
    if mode in ("on", "off"):
        return mode == "on", f"--bf16 {mode}"
    if device_type == "cuda":
        return True, "auto: CUDA"
    if device_type != "cpu":
        return False, f"auto: {device_type}, f32"
    if flags is None:
        return False, "auto: CPU flags unknown, f32"
    have = sorted(f for f in BF16_CPU_FLAGS if f in flags)
    if have:
        return True, f"auto: the CPU has {', '.join(have)}"
    return False, f"auto: the CPU has none of {', '.join(BF16_CPU_FLAGS)} (bf16 would be emulated), f32"


def chunk_seeds(seed, molecules_seen):
    """The torch seed and numpy generator of a chunk that starts after `molecules_seen` molecules: the same for the
    same start and --seed, different for another start (a resumed chunk does not repeat its predecessor's draws)."""
    ss = np.random.SeedSequence([seed, molecules_seen])
    torch_ss, np_ss = ss.spawn(2)
    return int(torch_ss.generate_state(1, np.uint64)[0]), np.random.default_rng(np_ss)


def learning_rate(base, step, warmup, decay, left):
    """Learning rate of step `step` of this run: linear warm-up over `warmup` steps (a fresh optimizer), then
    `base`, or with `decay` linearly down to 5 % of `base` as the budget runs out (`left` = fraction left)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.05 + 0.95 * left) if decay else base


class Data:
    def __init__(self, path, device):
        d = np.load(path)
        pos = d["positions"]
        bad = ~np.isfinite(pos).all(axis=1)
        if bad.any():
            mol = int(np.searchsorted(d["offsets"], np.flatnonzero(bad)[0], side="right")) - 1
            raise ValueError(f"{path}: {int(bad.sum())} atoms have a non-finite position (first in molecule {mol}); "
                             "rebuild it with training/prepare_data.py")
        self.pos = torch.from_numpy(pos).to(device)
        self.typ = torch.from_numpy(d["types"].astype(np.int64)).to(device)
        self.offs = d["offsets"]
        self.offs_t = torch.from_numpy(self.offs).to(device)
        self.n = np.diff(self.offs)
        self.split = {k: d[k] for k in ("train", "valid", "test")}
        self.device = device

    def histogram(self, ids):
        """{atom count: molecules} over `ids`: the sizes a minibatch drawn from them holds."""
        sizes, counts = np.unique(self.n[ids], return_counts=True)
        return {int(k): int(c) for k, c in zip(sizes, counts)}

    def batches(self, ids, batch, rng):
        """Batches of equal atom count, shuffled."""
        out = []
        n = self.n[ids]
        for size in np.unique(n):
            group = ids[n == size]
            group = group[rng.permutation(len(group))]
            out += [group[i:i + batch] for i in range(0, len(group), batch)]
        return [out[i] for i in rng.permutation(len(out))]

    def gather(self, ids):
        ids_t = torch.from_numpy(np.asarray(ids)).to(self.device)
        n = int(self.n[ids[0]])
        idx = self.offs_t[ids_t][:, None] + torch.arange(n, device=self.device)[None, :]
        x = self.pos[idx]
        x = x - x.mean(dim=1, keepdim=True)
        return torch.cat([x, features(self.typ[idx])], dim=-1)  # [B,n,9]


def edm_divisors(batch, histogram=N_NODES_HISTOGRAM):
    """{n: 1 / E[1/N_pad | a molecule of n atoms is in the minibatch]}: EDM divides each molecule's squared error by
    9·N_pad, N_pad the largest atom count of its padded minibatch of `batch` molecules (spec §2.5 step 4), so a
    molecule of n atoms gets weight E[1/max(n, M)], M the largest of the other batch − 1 molecules drawn from
    `histogram` (P(M ≤ k) = F(k)^(batch−1), F the share with ≤ k atoms); train.py passes its training split's,
    so that every atom count it trains on has a divisor. Our batches hold one size and no padding; dividing by 9
    times this divisor gives every molecule EDM's expected weight: for QM9 and batches of 64, 24.78 up to 22
    atoms, then 24.79, 25.04, 25.37, 26.19, 27.03 and 29 for the largest (QM9 has no molecule of 28 atoms; its
    training split gives the same values to 0.001). Batch 1 gives n itself."""
    total = sum(histogram.values())
    sizes = sorted(histogram)
    cum, acc = [], 0.0
    for k in sizes:
        acc += histogram[k] / total
        cum.append(min(acc, 1.0) ** (batch - 1))  # P(M ≤ k)
    out = {}
    for n in sizes:
        prev, e = 0.0, 0.0
        for k, c in zip(sizes, cum):
            e += (c - prev) / max(n, k)
            prev = c
        out[n] = 1.0 / e
    return out


def stale_optimizer(ck_loss_norm, ck_divisors, loss_norm, divisors, ck_h_weight=1.0, h_weight=1.0):
    """Why a checkpoint's optimizer must not be resumed, or None when it may: AMSGrad keeps the largest second
    moment it has seen, so moments gathered on another loss scale would damp (or inflate) every later step. The
    scale is set by the loss normalisation and, for 'atom', by its divisors, which change with the training
    split's sizes and the batch, and by the weight of the atom-type error (--h-weight; a lower one would leave
    the type-driven parameters damped for good). Divisors of None (unknown) are taken to match; train.py rebuilds
    those of a checkpoint written before they were recorded from its --batch and the data loaded now."""
    if ck_loss_norm != loss_norm:
        return f"it was trained with --loss-norm {ck_loss_norm}, this run uses {loss_norm}"
    if not math.isclose(ck_h_weight, h_weight, rel_tol=1e-9):
        return f"it was trained with --h-weight {ck_h_weight:g}, this run uses {h_weight:g}"
    if ck_divisors is None or divisors is None:
        return None
    def show(v):
        return "none" if v is None else f"{v:.2f}"
    for n in sorted(set(ck_divisors) | set(divisors)):
        was, now = ck_divisors.get(n), divisors.get(n)
        if was is None or now is None or not math.isclose(was, now, rel_tol=1e-6):
            return f"its loss divisor at {n} atoms was {show(was)}, this run's data and --batch give {show(now)}"
    return None


def checkpoint_loss_scale(ck, histogram):
    """(loss normalisation, divisors) a full checkpoint was trained with, for stale_optimizer. A checkpoint
    written before divisors were recorded gets them rebuilt from its --batch, its data taken to be the training
    split's `histogram` loaded now; one older still (before --loss-norm) trained with 'molecule'. Divisors are
    None for 'molecule' (it uses none) and unknown (None) where neither they nor the batch were saved."""
    ck_args, ck_divisors = ck.get("args", {}), ck.get("divisors")
    ck_norm = ck_args.get("loss_norm", "molecule")
    if ck_divisors is None and ck_norm == "atom" and "batch" in ck_args:
        ck_divisors = edm_divisors(ck_args["batch"], histogram)
    return ck_norm, ck_divisors


def checkpoint_h_weight(ck):
    """The --h-weight a full checkpoint was trained with (1, EDM's loss, for those written before the flag)."""
    return float(ck.get("args", {}).get("h_weight", 1.0))


def diffusion_loss(model, xh, t_int, gamma, T, autocast, divisors=None, batch=None, h_weight=1.0):
    """0.5·Σ(ε − ε̂)² / (9·N_pad) per molecule (spec §2.5) with N_pad from `divisors` (edm_divisors: EDM's
    expected weight for this atom count), summed over the batch and divided by the nominal batch size `batch`, so
    that the last, short batch of a size weighs per molecule what a full one does: every molecule weighs what it
    does in EDM's training, in expectation. divisors=None divides by each molecule's own 9·n and averages over the
    batch's molecules (every batch weighs the same: the recipe of sessions 1-11). `h_weight` multiplies the
    error of the atom-type part (one-hot and charge) in the loss only (1 = EDM's l2 loss); the returned mse are
    unweighted. Returns (loss, per-molecule x mse, h mse)."""
    B, n, _ = xh.shape
    g = gamma[t_int][:, None, None]
    alpha, sigma = torch.sqrt(torch.sigmoid(-g)), torch.sqrt(torch.sigmoid(g))
    eps = mean_free_noise(B, n, xh.device)
    z = alpha * xh + sigma * eps
    with autocast():
        pred = model(z, t_int.float() / T)
    err = (eps - pred.float()) ** 2
    ex = err[..., :3].sum(dim=(1, 2))
    eh = err[..., 3:].sum(dim=(1, 2)) * (t_int != 0).float()  # at t=0 EDM's h term has no network gradient
    eh = eh * h_weight
    if divisors is None:
        loss = (0.5 * (ex + eh) / (9 * n)).mean()
    else:
        loss = (0.5 * (ex + eh) / (9 * divisors[n])).sum() / (batch or B)
    return loss, err[..., :3].mean(dim=(1, 2)), err[..., 3:].mean(dim=(1, 2))


def set_amsgrad(opt, on):
    """Switch AMSGrad (EDM's AdamW(amsgrad=True), spec §2.5) on or off, also in an optimizer state loaded from a
    checkpoint written without it: load_state_dict restores the saved flag, and a state without the running
    maximum of the second moment starts it from the current second moment."""
    for g in opt.param_groups:
        g["amsgrad"] = on
        for p in g["params"]:
            st = opt.state.get(p)
            if on and st and "exp_avg_sq" in st and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = st["exp_avg_sq"].clone()


def trained(m):
    """The parameters an optimizer updates: all but the γ table, which is fixed, not learned."""
    return [p for n, p in m.named_parameters() if not n.startswith("gamma.")]


def optimizer_step(loss, opt, clip, params, lr=None):
    """One update as the trainer makes it: backward, the learning rate from lr() if given (read after backward, as the
    time budget has moved on), EDM's adaptive clipping, AdamW. Returns the gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if lr is not None:
        for g in opt.param_groups:
            g["lr"] = lr()
    gnorm, _ = clip(params)
    opt.step()
    return gnorm


def add_model_args(ap):
    """The data and model flags the trainer and its benchmark share."""
    ap.add_argument("--data", default=os.path.join(HERE, "data", "qm9_compact.npz"))
    ap.add_argument("--nf", type=int, default=128)
    ap.add_argument("--layers", type=int, default=9)
    ap.add_argument("--batch", type=int, default=64)


def add_precision_args(ap):
    """The bf16 flags the trainer and its benchmark share; read with bf16_choice."""
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                    help="bf16 autocast: 'auto' = on CUDA and on CPUs with bf16 instructions (avx512_bf16, "
                         "amx_bf16), f32 elsewhere, where bf16 is emulated and several times slower")
    ap.add_argument("--no-bf16", dest="bf16", action="store_const", const="off", help="the same as --bf16 off")


class GradClipper:
    """EDM's adaptive clipping: max = 1.5·mean(Q) + 2·std(Q) over the last 50 (clipped) norms, Q starts at [3000]."""

    def __init__(self):
        self.q = [3000.0]

    def __call__(self, params):
        q = np.asarray(self.q)
        max_norm = 1.5 * q.mean() + 2 * q.std()
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, norm_type=2.0))
        self.q = (self.q + [min(norm, max_norm)])[-50:]
        return norm, max_norm


def read_safetensors(path):
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["equivariant"]) if "equivariant" in meta else {}
    return tensors, cfg


def save_weights(path, ema, provenance, precision="f32"):
    """Writes a model's (the EMA's) weights with its configuration; see write_weights."""
    return write_weights(path, ema.state_dict(), config(ema.nf, ema.n_layers, ema.T), provenance, precision)


def write_weights(path, state, cfg, provenance, precision="f32"):
    """Writes tensors with the configuration cfg (its provenance replaced), atomically. With precision "f16" every
    tensor but the γ table (tiny, and the sampler's precision hangs on it) is stored as float16, like `equivariant
    convert --f16` (all as float32 if a weight is too large for float16). Refuses non-finite weights; leaves
    non-finite provenance values out."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    bad = [k for k, v in sd.items() if not torch.isfinite(v).all()]
    if bad:
        log(f"NOT saving {path}: non-finite tensors {bad[:3]}")
        return False
    if precision == "f16":
        half = {k: v if k == "gamma.gamma" else v.half() for k, v in sd.items()}
        over = [k for k, v in half.items() if not torch.isfinite(v).all()]
        if over:
            log(f"{over[:3]} overflow float16: {path} written as float32")
        else:
            sd = half
    # the metadata is strict JSON for the crate: a NaN or infinity there would make the file unreadable
    odd = [k for k, v in provenance.items() if isinstance(v, float) and not math.isfinite(v)]
    if odd:
        log(f"provenance {odd} not finite: left out of {path}")
        provenance = {k: v for k, v in provenance.items() if k not in odd}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    save_file(sd, tmp, metadata=metadata(dict(cfg, provenance=provenance)))
    os.replace(tmp, path)
    return True


def git_commit():
    if os.environ.get("EQUIVARIANT_GIT_COMMIT"):  # set where the tree travels without .git (the GPU machine)
        return os.environ["EQUIVARIANT_GIT_COMMIT"]
    try:
        head = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
        # the trainer's own code edited but not committed: the commit alone would not describe what ran
        edited = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "training/*.py"],
                                stderr=subprocess.DEVNULL).returncode != 0
        return head + ("+edited" if edited else "")
    except Exception:
        return "unknown"


@torch.no_grad()
def evaluate(model, data, ids, T, gamma, autocast, batch):
    """ε-MSE (x part, h part) of the model at fixed noise levels on fixed validation molecules, fixed noise."""
    torch.manual_seed(1234)
    rng = np.random.default_rng(1234)
    res = {}
    batches = data.batches(ids, batch, rng)
    for lvl in EVAL_LEVELS:
        sx = sh = cnt = 0.0
        for b in batches:
            xh = data.gather(b)
            t_int = torch.full((len(b),), lvl, device=xh.device, dtype=torch.long)
            _, ex, eh = diffusion_loss(model, xh, t_int, gamma, T, autocast)
            sx += float(ex.sum())
            sh += float(eh.sum())
            cnt += len(b)
        res[lvl] = (sx / cnt, sh / cnt)
    return res


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (fresh optimizer)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--ema-slow", type=float, default=0.0,
                    help="also keep a second, slower EMA of the weights (e.g. 0.9998), started from the same weights, "
                         "saved beside the main file as <name>.ema<decay>.safetensors and validated at the end: a "
                         "measured comparison of the two averages at no extra training cost")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="also stop after this many optimizer steps in this run (0 = no limit): a run whose length "
                         "does not depend on the machine's speed, as the tests need")
    ap.add_argument("--resume", default=None, help="safetensors weights to start from ('none' = scratch)")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "resume"),
                    help="where the EMA weights go (default training/resume/, the lineage's newest file, which a "
                         "run without --resume also continues); the shipped weights/ file is replaced by hand, only "
                         "when training/evaluate.py measures the new file better")
    ap.add_argument("--name", default=None, help="weights file name (default edm_qm9_<layers>x<nf>.safetensors)")
    ap.add_argument("--ckpt", default=None, help="full checkpoint path (default training/runs/<name>.pt); resumed "
                    "from when it is at least as far as the --resume weights, or when there are none")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    add_precision_args(ap)
    ap.add_argument("--seed", type=int, default=0,
                    help="seeds the initial weights (from scratch) and, with the molecules seen so far, the chunk's "
                         "batch order, t and noise: a chunk rerun from the same weights draws the same")
    ap.add_argument("--t-low-frac", type=float, default=0.0,
                    help="fraction of molecules whose t is drawn from {--t-low-min..--t-low-max} instead of {0..T} "
                         "(0 = EDM's uniform t; an experiment to train one band of noise levels more: the low-noise "
                         "end, where bond lengths are set, or with --t-low-min a middle band, where the atom types "
                         "and bonds are decided, see training/renoise.py)")
    ap.add_argument("--t-low-max", type=int, default=100)
    ap.add_argument("--t-low-min", type=int, default=0)
    ap.add_argument("--h-weight", type=float, default=1.0,
                    help="weight of the atom-type (one-hot and charge) error in the loss; 1 = EDM's l2 loss")
    ap.add_argument("--loss-norm", choices=["atom", "molecule"], default="atom",
                    help="'atom': divide each molecule's squared error by 9·N_pad, EDM's padded batch size, as "
                         "EDM's batches give it in expectation (spec §2.5: about every atom weighs the same); "
                         "'molecule': by its own 9·n, averaged per batch (every batch weighs the same, small "
                         "molecules more per atom: the recipe up to session 11). A checkpoint trained with the "
                         "other one, or with other divisors (other data or --batch), is resumed with a fresh "
                         "optimizer")
    ap.add_argument("--no-amsgrad", action="store_true",
                    help="plain AdamW instead of EDM's AMSGrad variant (the recipe up to session 11)")
    ap.add_argument("--lr-decay", action="store_true",
                    help="after warm-up, decay the learning rate linearly over the --minutes budget to 5 %% of --lr "
                         "(a fine-tuning chunk that ends at a low learning rate)")
    ap.add_argument("--precision", choices=["f16", "f32"], default="f16",
                    help="stored precision of the exported EMA weights (the shipped file is f16: measured unchanged "
                         "against f32, see training/HISTORY.md; resuming from it casts back to f32)")
    ap.add_argument("--compile", action="store_true",
                    help="train through torch.compile (dynamic shapes: one graph for the atom counts and batch sizes, "
                         "plus size-1 specialisations; minutes of compiling unless cached). On 2 CPU threads it "
                         "measured no faster than eager (0.93x, training/bench_train.py, see training/HISTORY.md); "
                         "untried on CUDA")
    ap.add_argument("--save-minutes", type=float, default=10.0)
    ap.add_argument("--eval-minutes", type=float, default=30.0)
    ap.add_argument("--eval-molecules", type=int, default=512)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--validate-only", action="store_true",
                    help="train nothing and write no weights: load the --resume file, log its ε-MSE on the first "
                         "--eval-molecules validation molecules at the fixed noise levels (the line every chunk "
                         "ends with) and exit; with --json, also write the numbers there. Compare files with the "
                         "same --bf16 setting: at t = 1 bf16 and f32 differ (see training/HISTORY.md)")
    ap.add_argument("--json", default=None, help="with --validate-only: write the validation numbers to this file")
    return ap


def read_model_weights(path, args):
    """The tensors and config of an exported weights file, refused when it is not the --layers x --nf model."""
    tensors, cfg = read_safetensors(path)
    if cfg and (cfg.get("nf"), cfg.get("n_layers")) != (args.nf, args.layers):
        sys.exit(f"{path} is {cfg.get('n_layers')}x{cfg.get('nf')}, asked for {args.layers}x{args.nf}")
    return tensors, cfg


def format_eval(res):
    """evaluate()'s numbers as the validation line's tail: t<level>=<x>/<h> for each level."""
    return " ".join(f"t{k}={v[0]:.4f}/{v[1]:.4f}" for k, v in res.items())


def validate_only(args, dev, autocast, use_bf16):
    """--validate-only: the validation line of the --resume weights, nothing trained or written but --json."""
    if not args.resume or args.resume == "none" or not os.path.isfile(args.resume):
        sys.exit(f"--validate-only needs --resume with a weights file (got {args.resume!r})")
    tensors, cfg = read_model_weights(args.resume, args)
    model = EnVariationalDiffusion(args.nf, args.layers).to(dev)
    model.load_state_dict(tensors)
    data = Data(args.data, dev)
    val_ids = data.split["valid"][: args.eval_molecules]
    res = evaluate(model, data, val_ids, model.T, model.gamma.gamma.detach().to(dev), autocast, args.batch)
    epochs = cfg.get("provenance", {}).get("epochs")
    log(f"validate {args.resume} ({'?' if epochs is None else epochs} epochs, bf16 {use_bf16}, {len(val_ids)} molecules): {format_eval(res)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"weights": args.resume, "epochs": epochs, "bf16": use_bf16, "molecules": len(val_ids),
                       "eps_mse_x_h_by_t": {str(k): list(v) for k, v in res.items()}}, fh, indent=1)


def main():
    ap = build_parser()
    args = ap.parse_args()
    if args.seed < 0:
        ap.error(f"--seed must be 0 or more (got {args.seed})")
    if not (math.isfinite(args.h_weight) and args.h_weight > 0):
        ap.error(f"--h-weight must be a positive number (got {args.h_weight})")
    if not 0 <= args.t_low_frac <= 1 or not 0 <= args.t_low_min <= args.t_low_max:
        ap.error(f"--t-low-frac must lie in [0, 1] and --t-low-min <= --t-low-max (got {args.t_low_frac}, "
                 f"{args.t_low_min}..{args.t_low_max})")
    if args.json and not args.validate_only:
        ap.error("--json goes with --validate-only")

    dev = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                       ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16, bf16_why = bf16_choice(args.bf16, dev.type, cpu_flags() if dev.type == "cpu" else None)

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16)

    if args.validate_only:
        return validate_only(args, dev, autocast, use_bf16)
    torch.manual_seed(args.seed)  # the initial weights of a run from scratch
    name = args.name or f"edm_qm9_{args.layers}x{args.nf}.safetensors"
    out_path = os.path.join(args.out_dir, name)
    ckpt_path = args.ckpt or os.path.join(HERE, "runs", name.replace(".safetensors", ".pt"))
    # what to start from: --resume; else the weights already in --out-dir; else the full checkpoint itself (a chunk
    # continued with only --ckpt); else scratch. `--resume none` always means scratch, whatever --ckpt holds.
    if args.resume is not None:
        resume = args.resume
    elif os.path.exists(out_path):
        resume = out_path
    else:
        resume = ckpt_path if os.path.exists(ckpt_path) else "none"

    model = EnVariationalDiffusion(args.nf, args.layers).to(dev)
    ema = EnVariationalDiffusion(args.nf, args.layers).to(dev)
    prov = {"molecules_seen": 0, "epochs": 0.0, "cpu_hours": 0.0, "gpu_minutes": 0.0, "steps": 0, "chunks": 0}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-12)
    fresh_opt = True
    from_ckpt = False  # model, EMA and provenance from the full checkpoint (its optimizer too, unless fresh_opt)
    if os.path.exists(ckpt_path) and resume != "none":
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if resume == ckpt_path or ck["provenance"]["molecules_seen"] >= read_safetensors(resume)[1].get(
                "provenance", {}).get("molecules_seen", 0):
            try:
                model.load_state_dict(ck["model"])
                ema.load_state_dict(ck["ema"])
            except RuntimeError as e:
                sys.exit(f"--ckpt {ckpt_path} does not fit a {args.layers}x{args.nf} model (check --layers and "
                         f"--nf): {str(e).splitlines()[0]}")
            prov = ck["provenance"]
            from_ckpt = True  # its optimizer is loaded below, once the data (so the loss divisors) are known
    if not from_ckpt and resume != "none":
        tensors, cfg = read_model_weights(resume, args)
        model.load_state_dict(tensors)
        ema.load_state_dict(tensors)
        prov.update({k: v for k, v in cfg.get("provenance", {}).items() if k in prov})
        log(f"resumed EMA weights {resume} (fresh optimizer)")
    elif not from_ckpt:
        ema.load_state_dict(model.state_dict())
        log("training from scratch")
    for p in ema.parameters():
        p.requires_grad_(False)
    # batch order, t and noise: fixed by --seed and where the chunk starts, so a chunk can be rerun (on the same
    # machine and thread count; an --lr-decay chunk whose clock runs out before --max-steps decays by wall time)
    # and the next chunk from its weights draws afresh
    torch_seed, rng = chunk_seeds(args.seed, prov["molecules_seen"])
    torch.manual_seed(torch_seed)
    slow = slow_path = None
    if args.ema_slow:
        slow = EnVariationalDiffusion(args.nf, args.layers).to(dev)
        slow.load_state_dict(ck["ema_slow"] if from_ckpt and "ema_slow" in ck else ema.state_dict())
        for p in slow.parameters():
            p.requires_grad_(False)
        slow_path = out_path.replace(".safetensors", f".ema{args.ema_slow:g}.safetensors")
    data = Data(args.data, dev)
    train_ids = data.split["train"]
    sizes = data.histogram(train_ids)
    divisors = edm_divisors(args.batch, sizes) if args.loss_norm == "atom" else None
    if from_ckpt:
        ck_norm, ck_divisors = checkpoint_loss_scale(ck, sizes)
        why = stale_optimizer(ck_norm, ck_divisors, args.loss_norm, divisors, checkpoint_h_weight(ck),
                              args.h_weight)
        if why is None:
            opt.load_state_dict(ck["opt"])
            fresh_opt = False
            log(f"resumed full checkpoint {ckpt_path}")
        else:
            log(f"resumed full checkpoint {ckpt_path} with a fresh optimizer: {why}")
    for g in opt.param_groups:
        g["lr"] = args.lr
    set_amsgrad(opt, not args.no_amsgrad)
    val_ids = data.split["valid"][: args.eval_molecules]
    gamma = model.gamma.gamma.detach().to(dev)
    T = model.T
    if args.t_low_frac and args.t_low_max > T:
        sys.exit(f"--t-low-max {args.t_low_max} exceeds the model's T = {T}")
    params, ema_params = trained(model), trained(ema)
    slow_params = trained(slow) if slow else []
    # the compiled module shares model's parameters: the optimizer, EMA and checkpoints see no difference
    step_model = torch.compile(model, dynamic=True) if args.compile else model
    clip = GradClipper()
    threads = torch.get_num_threads()
    log(f"device {dev} threads {threads} bf16 {use_bf16} ({bf16_why}) compiled {args.compile} "
        f"model {args.layers}x{args.nf} "
        f"({count_params(model):,} params) batch {args.batch} lr {args.lr} ema {args.ema} "
        f"h-weight {args.h_weight:g} -> {out_path}")
    log(f"provenance so far: {json.dumps(prov)}")

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    t_start = time.time()
    cpu_start = time.process_time()  # CPU seconds of all this process's threads: what training actually got
    # fixed for the whole chunk, so read once: the tree may move on while it runs
    code_commit = git_commit()
    lr = (f"AdamW{'' if args.no_amsgrad else ' (AMSGrad)'} lr {args.lr}"
          + (" decaying linearly to 5 %" if args.lr_decay else ""))
    t_draw = f"t uniform 0..{T}" + (f" ({args.t_low_frac:.0%} from {args.t_low_min}..{args.t_low_max})" if args.t_low_frac else "")
    norm = "error / (9·n), mean per batch"
    if divisors:
        lo, hi = min(divisors), max(divisors)
        norm = (f"error / (9·N_pad) in EDM's expectation (N_pad {divisors[lo]:.2f} at {lo} atoms, "
                f"{divisors[hi]:.2f} at {hi})")

    def recipe(ema_decay):
        weighted = "" if args.h_weight == 1 else f"atom-type error weighted x{args.h_weight:g}, "
        return (f"{lr}, batch {args.batch} grouped by atom count, EMA {ema_decay}, {t_draw}, {norm}, "
                f"{weighted}bf16 {use_bf16}")
    deadline = t_start + args.minutes * 60
    last_save = last_eval = t_start
    seen0, step_in_run = prov["molecules_seen"], 0
    acc_loss = acc_n = 0.0
    t_log = time.time()
    mol_log = 0
    last_loss = float("nan")

    def account():
        hours = (time.time() - t_start) / 3600
        p = dict(prov)
        if dev.type == "cuda":
            p["gpu_minutes"] = prov["gpu_minutes"] + hours * 60
        else:
            p["cpu_hours"] = prov["cpu_hours"] + (time.process_time() - cpu_start) / 3600
        p["molecules_seen"] = seen
        p["epochs"] = round(seen / len(train_ids), 4)
        p["steps"] = prov["steps"] + step_in_run
        p["chunks"] = prov["chunks"] + 1
        if math.isfinite(last_loss):  # none yet when a chunk ends before its first log line
            p["final_loss"] = last_loss
        p["git_commit"] = code_commit
        p["recipe"] = recipe(args.ema)
        p["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return p

    def checkpoint():
        p = account()
        if save_weights(out_path, ema, p, args.precision):
            os.makedirs(os.path.dirname(ckpt_path), exist_ok=True)
            state = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                     "provenance": p, "args": vars(args), "divisors": divisors}
            if slow is not None and save_weights(slow_path, slow, dict(p, recipe=recipe(args.ema_slow)),
                                                  args.precision):
                state["ema_slow"] = slow.state_dict()
            torch.save(state, ckpt_path + ".tmp")
            os.replace(ckpt_path + ".tmp", ckpt_path)
            log(f"saved {out_path} ({p['epochs']:.3f} epochs, {p['molecules_seen']} molecules)")

    def validate(label, m):
        res = evaluate(m, data, val_ids, T, gamma, autocast, args.batch)
        log(f"{label}, valid, eps-MSE x/h by t): {format_eval(res)}")

    def lr_now():  # read at each step: the budget left moves on with the clock and the step count
        left = max(0.0, (deadline - time.time()) / (deadline - t_start))
        if args.max_steps:
            left = min(left, 1 - step_in_run / args.max_steps)
        return learning_rate(args.lr, step_in_run, args.warmup if fresh_opt else 0, args.lr_decay, left)

    seen = seen0
    done = False
    streak = NonFiniteStreak()
    while not done:
        for ids in data.batches(train_ids, args.batch, rng):
            if time.time() > deadline or stop["flag"] or 0 < args.max_steps <= step_in_run:
                done = True
                break
            xh = data.gather(ids)
            t_int = torch.randint(0, T + 1, (len(ids),), device=dev)
            if args.t_low_frac > 0:
                low = torch.rand(len(ids), device=dev) < args.t_low_frac
                t_int = torch.where(low, torch.randint(args.t_low_min, args.t_low_max + 1, (len(ids),), device=dev), t_int)
            loss, _, _ = diffusion_loss(step_model, xh, t_int, gamma, T, autocast, divisors, args.batch,
                                     args.h_weight)
            finite = bool(torch.isfinite(loss))
            stop_run = streak.record(finite)
            if not finite:
                log("non-finite loss, batch skipped")
                opt.zero_grad(set_to_none=True)
                if stop_run:
                    done = True
                    break
                continue
            gnorm = optimizer_step(loss, opt, clip, params, lr_now)
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1 - args.ema)
                if slow_params:
                    torch._foreach_lerp_(slow_params, params, 1 - args.ema_slow)
            step_in_run += 1
            seen += len(ids)
            mol_log += len(ids)
            acc_loss += float(loss.detach()) * len(ids)
            acc_n += len(ids)
            if step_in_run % args.log_every == 0:
                now = time.time()
                last_loss = acc_loss / acc_n
                log(f"step {prov['steps'] + step_in_run} epoch {seen / len(train_ids):.3f} loss {last_loss:.5f} "
                    f"gnorm {gnorm:.2f} {mol_log / (now - t_log):.1f} mol/s")
                acc_loss = acc_n = 0.0
                t_log, mol_log = now, 0
            if time.time() - last_save > args.save_minutes * 60:
                checkpoint()
                last_save = time.time()
            if time.time() - last_eval > args.eval_minutes * 60:
                validate("eval (EMA", ema)
                last_eval = time.time()
                t_log, mol_log = time.time(), 0
    if streak.stopped:
        # no save: the weights may have diverged to huge finite values, and the last periodic save (or the file it
        # resumed from) is the last state known to be good
        sys.exit(f"train.py: stopped after {streak.count} batches in a row with a non-finite loss: the data "
                 f"({args.data}) or the weights hold NaN or infinity, or training diverged; nothing saved since "
                 f"the last save")
    checkpoint()
    validate("final eval (EMA", ema)
    if slow is not None:
        validate(f"final eval (EMA {args.ema_slow}", slow)
    log(f"done: {seen - seen0} molecules in {(time.time() - t_start) / 60:.1f} min "
        f"({(seen - seen0) / (time.time() - t_start):.1f} mol/s)")


if __name__ == "__main__":
    main()
