"""Tests of the PyTorch side: model parity with the golden fixture, EDM's parameter layout, the schedule,
that training reduces the loss, export/resume, and the QM9 CSV parser."""
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
ROOT = os.path.dirname(os.path.dirname(HERE))

import edm  # noqa: E402
import train  # noqa: E402
import prepare_data  # noqa: E402
import chem  # noqa: E402


def tiny_data_and_start(d, data_seed, weights_seed):
    """A compact data file of 24 random 4-atom molecules (16 train, 4 valid, 4 test) and a random 1 x 8 model's
    weights to resume from, both in the folder d, for short real runs of train.py. Returns their paths."""
    rng = np.random.default_rng(data_seed)
    n_mol, n_at = 24, 4
    data = os.path.join(d, "tiny.npz")
    np.savez(data, positions=rng.normal(size=(n_mol * n_at, 3)).astype(np.float32),
             types=rng.integers(0, 5, n_mol * n_at).astype(np.uint8),
             offsets=np.arange(0, n_mol * n_at + 1, n_at, dtype=np.int64),
             train=np.arange(16), valid=np.arange(16, 20), test=np.arange(20, 24))
    torch.manual_seed(weights_seed)
    start = os.path.join(d, "start.safetensors")
    if not train.save_weights(start, edm.EnVariationalDiffusion(8, 1), {}):
        raise RuntimeError(f"{start} not written")
    return data, start


torch.set_num_threads(1)


class ModelTests(unittest.TestCase):
    def test_matches_golden_fixture(self):
        tensors, cfg = train.read_safetensors(os.path.join(ROOT, "tests/fixtures/golden_tiny.safetensors"))
        m = edm.EnVariationalDiffusion(cfg["nf"], cfg["n_layers"])
        m.load_state_dict(tensors)
        m = m.double()
        with open(os.path.join(ROOT, "tests/fixtures/golden_tiny.json")) as f:
            g = json.load(f)
        for mol in g["molecules"]:
            z = torch.tensor([mol["z"]], dtype=torch.float64)
            with torch.no_grad():
                eps = m(z, torch.tensor([mol["t"]], dtype=torch.float64))[0]
            np.testing.assert_allclose(eps.numpy(), np.array(mol["eps"]), atol=1e-9, rtol=1e-9)

    def test_edm_state_dict_layout(self):
        m = edm.EnVariationalDiffusion(256, 9)
        sd = m.state_dict()
        self.assertEqual(len(sd), 141)
        self.assertEqual(edm.count_params(m), 5_339_920)
        self.assertEqual(tuple(sd["dynamics.egnn.e_block_8.gcl_0.edge_mlp.0.weight"].shape), (256, 514))
        self.assertEqual(tuple(sd["dynamics.egnn.e_block_0.gcl_equiv.coord_mlp.4.weight"].shape), (1, 256))
        self.assertNotIn("dynamics.egnn.e_block_0.gcl_equiv.coord_mlp.4.bias", sd)

    def test_gamma_reference_values(self):
        g = edm.polynomial_2_gamma()
        for i, want in [(0, -11.51291546), (100, -3.89644268), (500, -0.25130935), (1000, 11.51251595)]:
            self.assertAlmostEqual(float(g[i]), want, delta=2e-5 * max(1, abs(want)))

    def test_rotation_equivariance(self):
        torch.manual_seed(0)
        m = edm.EnVariationalDiffusion(16, 2)
        z = torch.randn(2, 6, 9)
        z[..., :3] -= z[..., :3].mean(1, keepdim=True)
        q, _ = torch.linalg.qr(torch.randn(3, 3))
        zr = z.clone()
        zr[..., :3] = z[..., :3] @ q.T
        t = torch.tensor([0.3, 0.8])
        with torch.no_grad():
            a, b = m(z, t), m(zr, t)
        torch.testing.assert_close(b[..., :3], a[..., :3] @ q.T, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b[..., 3:], a[..., 3:], atol=1e-5, rtol=1e-4)


class TrainingTests(unittest.TestCase):
    def test_bf16_is_chosen_only_where_the_cpu_computes_in_it(self):
        choose = train.bf16_choice
        zen3 = {"fpu", "avx", "avx2", "fma"}  # no bf16 instructions: bf16 would be emulated
        zen4 = zen3 | {"avx512f", "avx512_bf16"}
        spr = zen3 | {"avx512f", "amx_tile", "amx_bf16"}
        self.assertFalse(choose("auto", "cpu", zen3)[0])
        self.assertIn("f32", choose("auto", "cpu", zen3)[1])
        self.assertTrue(choose("auto", "cpu", zen4)[0])
        self.assertIn("avx512_bf16", choose("auto", "cpu", zen4)[1])
        self.assertTrue(choose("auto", "cpu", spr)[0])
        self.assertFalse(choose("auto", "cpu", None)[0], "unknown flags: the safe choice is f32")
        self.assertTrue(choose("auto", "cuda", None)[0])
        self.assertTrue(choose("on", "cpu", zen3)[0], "an explicit choice is obeyed")
        self.assertFalse(choose("off", "cpu", zen4)[0])
        self.assertFalse(choose("off", "cuda", None)[0])
        self.assertEqual(choose("auto", "mps", None), (False, "auto: mps, f32"))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "cpuinfo")
            with open(path, "w") as f:
                f.write("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                        "processor\t: 1\nflags\t\t: fpu\n")
            self.assertEqual(train.cpu_flags(path), {"fpu", "avx2", "avx512_bf16"})
            self.assertIsNone(train.cpu_flags(os.path.join(d, "missing")))
            with open(path, "w") as f:  # no flags line (e.g. aarch64 names them "Features"): unknown
                f.write("processor\t: 0\nFeatures\t: fp asimd\n")
            self.assertIsNone(train.cpu_flags(path))

    def test_no_bf16_flag_is_the_same_as_bf16_off(self):
        # --no-bf16 is what older commands type (session 21's pre-registered chunk, 539f602); it must still mean f32
        parse = train.build_parser().parse_args
        self.assertEqual(parse([]).bf16, "auto")
        self.assertEqual(parse(["--no-bf16"]).bf16, "off")
        self.assertEqual(parse(["--bf16", "on"]).bf16, "on")
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            parse(["--bf16", "maybe"])

    def test_a_bare_run_writes_the_lineage_file_not_the_shipped_weights(self):
        # the shipped weights/ file is replaced only when evaluate.py measures better, never by a chunk by itself:
        # a run without --out-dir writes (and, without --resume, continues) the lineage's file in training/resume/
        out_dir = os.path.realpath(train.build_parser().parse_args([]).out_dir)
        self.assertEqual(out_dir, os.path.realpath(os.path.join(train.HERE, "resume")))

    def test_learning_rate_warm_up_and_decay(self):
        lr = train.learning_rate
        self.assertAlmostEqual(lr(1e-4, 0, 200, True, 1.0), 5e-7)
        self.assertAlmostEqual(lr(1e-4, 199, 200, True, 0.9), 1e-4)
        self.assertAlmostEqual(lr(1e-4, 500, 200, False, 0.3), 1e-4, msg="constant without --lr-decay")
        self.assertAlmostEqual(lr(1e-4, 500, 200, True, 1.0), 1e-4)
        self.assertAlmostEqual(lr(1e-4, 500, 200, True, 0.5), 5.25e-5)
        self.assertAlmostEqual(lr(1e-4, 500, 200, True, 0.0), 5e-6, msg="ends at 5 %")
        self.assertAlmostEqual(lr(1e-4, 0, 0, True, 1.0), 1e-4, msg="resumed optimizer: no warm-up")

    def test_optimizer_resumes_only_on_the_same_loss_scale(self):
        """AMSGrad's moments belong to one loss scale: another normalisation, or divisors from other data or
        another batch size, start a fresh optimizer; the same ones do not, nor do unknown divisors (None: train.py
        rebuilds an older checkpoint's from its --batch before asking)."""
        stale = train.stale_optimizer
        qm9 = train.edm_divisors(64)
        self.assertIsNone(stale("atom", qm9, "atom", train.edm_divisors(64)))
        self.assertIsNone(stale("atom", None, "atom", qm9), "unknown divisors: nothing to compare")
        self.assertIsNone(stale("molecule", None, "molecule", None))
        self.assertEqual(stale("atom", qm9, "molecule", None),
                         "it was trained with --loss-norm atom, this run uses molecule")
        # the GPU chunks' batch 512 weighs a small molecule as if padded to 26.79 atoms; the CPU's 64 to 24.78
        self.assertEqual(stale("atom", train.edm_divisors(512), "atom", qm9),
                         "its loss divisor at 3 atoms was 26.79, this run's data and --batch give 24.78")
        self.assertEqual(stale("atom", {3: 4.0, 4: 4.0}, "atom", {3: 4.0, 4: 4.0, 5: 5.0}),
                         "its loss divisor at 5 atoms was none, this run's data and --batch give 5.00")
        self.assertEqual(stale("atom", {3: 4.0, 9: 9.0}, "atom", {3: 4.0}),
                         "its loss divisor at 9 atoms was 9.00, this run's data and --batch give none")
        # another weight of the atom-type error is another loss scale, either way; the same one is not
        self.assertIsNone(stale("atom", qm9, "atom", qm9, 3.0, 3.0))
        self.assertEqual(stale("atom", qm9, "atom", qm9, 3.0, 1.0),
                         "it was trained with --h-weight 3, this run uses 1")
        self.assertEqual(stale("atom", qm9, "atom", qm9, 1.0, 2.5),
                         "it was trained with --h-weight 1, this run uses 2.5")
        # a checkpoint from before the flag trained with EDM's loss (weight 1)
        self.assertEqual(train.checkpoint_h_weight({"args": {"batch": 64}}), 1.0)
        self.assertEqual(train.checkpoint_h_weight({"args": {"h_weight": 3.0}}), 3.0)

    def test_an_older_checkpoints_loss_scale_is_rebuilt_from_its_batch(self):
        """A checkpoint saved before divisors were recorded: its divisors come from its --batch on the data loaded
        now, so a batch-512 GPU checkpoint resumed at batch 64 on mixed sizes is stale, one of batch 64 is not;
        without a recorded --loss-norm it trained per molecule; with neither divisors nor batch they stay unknown."""
        sizes = {5: 40, 9: 300, 12: 500, 19: 80}
        scale = train.checkpoint_loss_scale
        now = train.edm_divisors(64, sizes)
        norm, rebuilt = scale({"args": {"loss_norm": "atom", "batch": 512}}, sizes)
        self.assertEqual(norm, "atom")
        self.assertEqual(rebuilt, train.edm_divisors(512, sizes))
        self.assertIn("its loss divisor at 5 atoms was", train.stale_optimizer(norm, rebuilt, "atom", now))
        norm, rebuilt = scale({"args": {"loss_norm": "atom", "batch": 64}}, sizes)
        self.assertIsNone(train.stale_optimizer(norm, rebuilt, "atom", now))
        recorded = {5: 7.0}
        self.assertEqual(scale({"args": {"loss_norm": "atom", "batch": 64}, "divisors": recorded}, sizes),
                         ("atom", recorded), "recorded divisors win over a rebuild")
        self.assertEqual(scale({"args": {"batch": 64}}, sizes), ("molecule", None))
        self.assertEqual(scale({"args": {"loss_norm": "atom"}}, sizes), ("atom", None))
        self.assertEqual(scale({}, sizes), ("molecule", None))

    def test_slow_ema_is_saved_validated_and_resumed(self):
        """A short real run of train.py with --ema-slow: both averages written with their own decay in the recipe,
        the slower one nearer the starting weights, and a resumed run continuing it from the checkpoint."""
        with tempfile.TemporaryDirectory() as d:
            data, start = tiny_data_and_start(d, data_seed=0, weights_seed=3)
            cmd = [sys.executable, os.path.join(ROOT, "training", "train.py"), "--data", data, "--nf", "8",
                   "--layers", "1", "--batch", "4", "--lr", "1e-2", "--warmup", "1", "--ema", "0.9",
                   "--ema-slow", "0.999", "--threads", "1", "--eval-molecules", "4", "--precision", "f32",
                   "--out-dir", d, "--name", "w.safetensors", "--ckpt", os.path.join(d, "w.pt"), "--no-bf16"]
            # step counts, not a time budget: how far each average moves must not depend on the machine's speed
            cmd += ["--minutes", "3"]  # a backstop below the 300-s timeout, should the steps never come
            wall = time.time()
            out = subprocess.run(cmd + ["--resume", start, "--max-steps", "60"], capture_output=True, text=True,
                                 timeout=300)
            wall = time.time() - wall
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            self.assertIn("final eval (EMA 0.999,", out.stdout)
            # the precision flag reaches the run, and its reason is logged and recorded
            self.assertIn("bf16 False (--bf16 off)", out.stdout)
            init, _ = train.read_safetensors(start)
            fast, cfg_fast = train.read_safetensors(os.path.join(d, "w.safetensors"))
            slow, cfg_slow = train.read_safetensors(os.path.join(d, "w.ema0.999.safetensors"))
            self.assertIn("EMA 0.9,", cfg_fast["provenance"]["recipe"])
            # the spec's loss normalisation and AMSGrad by default, recorded with the weights
            recipe = cfg_fast["provenance"]["recipe"]
            # divisors from the data trained on, not from QM9: molecules of 4 atoms only pad to 4 in EDM's batches
            self.assertIn("error / (9·N_pad) in EDM's expectation (N_pad 4.00 at 4 atoms, 4.00 at 4)", recipe)
            self.assertIn("AdamW (AMSGrad) lr 0.01", recipe)
            self.assertTrue(recipe.endswith("bf16 False"), recipe)
            self.assertIn("EMA 0.999,", cfg_slow["provenance"]["recipe"])
            self.assertEqual(cfg_slow["provenance"]["steps"], 60)
            # a sanity check of the CPU time the process got (one thread): above 0 and within the run's wall time
            # (the wall-time-x-threads figure it replaced passes this too on one thread; it differs when starved)
            self.assertGreater(cfg_fast["provenance"]["cpu_hours"], 0.0)
            self.assertLess(cfg_fast["provenance"]["cpu_hours"] * 3600, 1.25 * wall)

            def moved(w):
                return sum(float((w[k] - init[k]).norm()) for k in init if k != "gamma.gamma")

            self.assertGreater(moved(slow), 0.0)
            self.assertLess(moved(slow), 0.5 * moved(fast))
            ck = torch.load(os.path.join(d, "w.pt"), weights_only=False)
            self.assertIn("ema_slow", ck)
            self.assertEqual(ck["divisors"], {4: 4.0}, "the loss scale its optimizer state belongs to")
            # the same loss scale (divisors from this training split again): its optimizer state continues
            out = subprocess.run(cmd + ["--resume", start, "--max-steps", "10"], capture_output=True, text=True,
                                 timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            self.assertIn(f"resumed full checkpoint {os.path.join(d, 'w.pt')}\n", out.stdout)
            self.assertNotIn("fresh optimizer", out.stdout)
            # resumed with the old recipe's loss and optimizer: the weights continue, the optimizer starts afresh
            # (its moment estimates belong to the other loss scale)
            out = subprocess.run(cmd + ["--resume", start, "--max-steps", "30", "--loss-norm", "molecule",
                                        "--no-amsgrad"], capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            self.assertIn("resumed full checkpoint", out.stdout)
            self.assertIn("with a fresh optimizer: it was trained with --loss-norm atom", out.stdout)
            again, cfg_again = train.read_safetensors(os.path.join(d, "w.ema0.999.safetensors"))
            self.assertEqual(cfg_again["provenance"]["steps"], 100)
            self.assertIn("AdamW lr 0.01", cfg_again["provenance"]["recipe"])
            self.assertIn("error / (9·n), mean per batch", cfg_again["provenance"]["recipe"])
            # continued from the checkpoint's slow average, not restarted from the (much further) fast EMA
            self.assertLess(moved(again), 0.5 * moved(fast))
            self.assertGreater(sum(float((again[k] - slow[k]).norm()) for k in init), 0.0)
            # the same loss but another weight of the atom-type error: the optimizer starts afresh again, and the
            # weight reaches the recipe recorded with the weights
            out = subprocess.run(cmd + ["--resume", start, "--max-steps", "10", "--loss-norm", "molecule",
                                        "--no-amsgrad", "--h-weight", "2"], capture_output=True, text=True,
                                 timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            self.assertIn("with a fresh optimizer: it was trained with --h-weight 1, this run uses 2", out.stdout)
            _, cfg_h = train.read_safetensors(os.path.join(d, "w.safetensors"))
            self.assertIn("atom-type error weighted x2, bf16", cfg_h["provenance"]["recipe"])

    def test_a_full_checkpoint_alone_resumes_and_resume_none_ignores_it(self):
        """--ckpt alone (no --resume, no weights in --out-dir) continues the checkpoint's model, EMA, optimizer and
        counters; `--resume none` trains from scratch beside the same checkpoint; a checkpoint of another model size
        stops with an error naming it."""
        with tempfile.TemporaryDirectory() as d:
            data, start = tiny_data_and_start(d, data_seed=2, weights_seed=5)
            ckpt = os.path.join(d, "w.pt")

            def run(out_dir, *extra, steps=10, nf="8"):
                cmd = [sys.executable, os.path.join(ROOT, "training", "train.py"), "--data", data, "--nf", nf,
                       "--layers", "1", "--batch", "4", "--lr", "1e-2", "--warmup", "1", "--ema", "0.9",
                       "--threads", "1", "--eval-molecules", "4", "--precision", "f32", "--no-bf16",
                       "--out-dir", os.path.join(d, out_dir), "--name", "w.safetensors", "--ckpt", ckpt,
                       "--max-steps", str(steps), "--minutes", "3", *extra]
                return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

            out = run("a", "--resume", start)
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            first = train.read_safetensors(os.path.join(d, "a", "w.safetensors"))[1]["provenance"]
            self.assertEqual(first["steps"], 10)
            ck_ema = torch.load(ckpt, weights_only=False)["ema"]
            out = run("b", steps=5)  # an empty --out-dir and no --resume: the checkpoint alone
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            self.assertIn(f"resumed full checkpoint {ckpt}\n", out.stdout)
            self.assertNotIn("training from scratch", out.stdout)
            cont = train.read_safetensors(os.path.join(d, "b", "w.safetensors"))[1]["provenance"]
            self.assertEqual(cont["steps"], 15, "the counters continue from the checkpoint's")
            self.assertEqual(cont["molecules_seen"], first["molecules_seen"] + 5 * 4)
            self.assertEqual(cont["chunks"], first["chunks"] + 1)
            # the checkpoint's EMA was the start: after 5 more steps it is saved again, moved from there
            ck2 = torch.load(ckpt, weights_only=False)
            self.assertEqual(ck2["provenance"]["steps"], 15)
            self.assertGreater(sum(float((ck2["ema"][k] - ck_ema[k]).norm()) for k in ck_ema), 0.0)
            out = run("c", "--resume", "none", steps=3)
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            self.assertIn("training from scratch", out.stdout)
            self.assertNotIn("resumed full checkpoint", out.stdout)
            self.assertEqual(train.read_safetensors(os.path.join(d, "c", "w.safetensors"))[1]["provenance"]["steps"],
                             3)
            # the scratch run overwrote the checkpoint; a run of another width cannot take it
            out = run("d", steps=3, nf="16")
            self.assertNotEqual(out.returncode, 0)
            self.assertIn(f"--ckpt {ckpt} does not fit a 1x16 model", out.stderr)
            self.assertFalse(os.path.exists(os.path.join(d, "d", "w.safetensors")), "nothing written")

    def test_chain_runs_chunks_that_resume_their_predecessor_and_updates_the_resume_file(self):
        """chain.py: two real tiny chunks, the second continuing the first's full checkpoint (copied into its own
        folder), each with its own seed; the resume file ends as the last chunk's EMA weights; both EMAs are
        validated; a chunk number already used is refused; a failing trainer leaves the resume file alone; the
        deadline shortens or skips chunks."""
        import datetime
        import chain

        self.assertEqual(chain.parse_chunk("1e-4:50"), (1e-4, 50.0))
        for bad in ("1e-4", "x:5", "1e-4:0"):
            with self.assertRaises(ValueError):
                chain.parse_chunk(bad)
        now = datetime.datetime(2026, 12, 7, 23, 0, tzinfo=datetime.timezone.utc)
        at = chain.parse_deadline("02:20", now)
        self.assertEqual(at - now, datetime.timedelta(hours=3, minutes=20))
        self.assertEqual(chain.budget(50, at, now, 5), 50)
        self.assertEqual(chain.budget(50, at, at - datetime.timedelta(minutes=30), 5), 30 - chain.OVERHEAD_MINUTES)
        self.assertIsNone(chain.budget(50, at, at - datetime.timedelta(minutes=8), 5))
        with self.assertRaisesRegex(ValueError, "already past"):
            chain.parse_deadline("22:50", now)  # ten minutes ago, not tomorrow
        self.assertEqual(chain.split_flags(["--data=x.npz", "--nf", "8"]), ["--data", "x.npz", "--nf", "8"])
        for flags in (["--minutes", "5"], ["--dry-run"], ["--seed", "3"]):
            with self.assertRaisesRegex(ValueError, "set by the chain"):
                chain.refuse_reserved(flags)
        with tempfile.TemporaryDirectory() as d:
            data, start = tiny_data_and_start(d, data_seed=3, weights_seed=6)
            runs, logs = os.path.join(d, "runs"), os.path.join(d, "logs")
            extra = ["--data", data, "--nf", "8", "--layers", "1", "--batch", "4", "--warmup", "1", "--threads", "1",
                     "--eval-molecules", "4", "--precision", "f32", "--no-bf16", "--max-steps", "4"]
            argv = ["--first", "7", "--chunks", "1e-2:3", "1e-3:3", "--resume-file", start, "--runs", runs, "--logs",
                    logs, "--min-minutes", "0.5", "--", *extra]
            with contextlib.redirect_stdout(io.StringIO()) as out:
                self.assertEqual(chain.main(argv), 0)
            self.assertIn("chunks done: ft7, ft8", out.getvalue())
            with open(os.path.join(logs, "train_cpu_ft8.log")) as f:
                self.assertIn(f"resumed full checkpoint {os.path.join(runs, 'ft8', 'ft8.pt')}", f.read())
            last = os.path.join(runs, "ft8", "start.safetensors")
            with open(last, "rb") as a, open(start, "rb") as b:
                self.assertEqual(a.read(), b.read(), "the resume file is the last chunk's EMA")
            prov = train.read_safetensors(start)[1]["provenance"]
            self.assertEqual(prov["steps"], 8, "the second chunk continued the first's counters")
            for n in (7, 8):
                for suffix in ("", "_ema0.9999"):
                    with open(os.path.join(logs, f"validate_ft{n}{suffix}_f32.log")) as f:
                        self.assertIn("bf16 False", f.read())
            with self.assertRaises(SystemExit) as e:
                chain.main(argv)
            self.assertIn("chunk ft7 was run before", str(e.exception))
            def read(path):
                with open(path, "rb") as f:
                    return f.read()

            before = read(start)
            with contextlib.redirect_stdout(io.StringIO()), self.assertRaises(SystemExit) as e:
                chain.main(["--first", "9", "--chunks", "1e-2:3", "--resume-file", start, "--runs", runs, "--logs",
                            logs, "--min-minutes", "0.5", "--", *extra, "--nf", "16"])  # does not fit the weights
            self.assertIn("ft9: the trainer failed", str(e.exception))
            self.assertEqual(read(start), before)
            with contextlib.redirect_stdout(io.StringIO()) as out:
                late = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=6)).strftime("%H:%M")
                self.assertEqual(chain.main(["--first", "10", "--chunks", "1e-2:3", "--resume-file", start, "--runs",
                                             runs, "--logs", logs, "--deadline", late, "--", *extra]), 0)
            self.assertIn("ft10: skipped", out.getvalue())
            self.assertFalse(os.path.exists(os.path.join(runs, "ft10")))

    def test_chunk_seeds_follow_the_seed_and_the_start(self):
        same = [train.chunk_seeds(26, 1000) for _ in range(2)]
        self.assertEqual(same[0][0], same[1][0])
        self.assertEqual(same[0][1].integers(1 << 62, size=4).tolist(), same[1][1].integers(1 << 62, size=4).tolist())
        for other in (train.chunk_seeds(27, 1000), train.chunk_seeds(26, 1064)):
            self.assertNotEqual(other[0], same[0][0])
        # the torch and numpy streams are not the same numbers
        torch_seed, rng = train.chunk_seeds(0, 0)
        self.assertNotEqual(torch_seed, int(rng.integers(0, 2**63)))

    def test_a_chunk_rerun_with_its_seed_trains_the_same_weights(self):
        """Two short real runs of train.py from the same weights with the same --seed write the same weights (batch
        order, t and noise drawn alike); another --seed writes other weights. A negative seed is refused."""
        with tempfile.TemporaryDirectory() as d:
            data, start = tiny_data_and_start(d, data_seed=1, weights_seed=4)

            def run(name, seed):
                cmd = [sys.executable, os.path.join(ROOT, "training", "train.py"), "--data", data, "--nf", "8",
                       "--layers", "1", "--batch", "4", "--lr", "1e-2", "--warmup", "1", "--ema", "0.9",
                       "--threads", "1", "--eval-molecules", "4", "--precision", "f32", "--no-bf16",
                       "--out-dir", d, "--name", f"{name}.safetensors", "--ckpt", os.path.join(d, f"{name}.pt"),
                       "--resume", start, "--max-steps", "20", "--minutes", "3", "--seed", str(seed)]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                self.assertEqual(out.returncode, 0, out.stderr[-2000:])
                return train.read_safetensors(os.path.join(d, f"{name}.safetensors"))[0]

            a, b, c = run("a", 7), run("b", 7), run("c", 8)
            init, _ = train.read_safetensors(start)
            self.assertGreater(sum(float((a[k] - init[k]).norm()) for k in init), 0.0, "the run trained")
            for k in init:
                self.assertTrue(torch.equal(a[k], b[k]), f"{k} differs between two runs with --seed 7")
            self.assertGreater(sum(float((a[k] - c[k]).norm()) for k in init), 0.0, "--seed 8 drew the same")
            out = subprocess.run([sys.executable, os.path.join(ROOT, "training", "train.py"), "--data", data,
                                  "--seed", "-1"], capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 2)
            self.assertIn("--seed must be 0 or more (got -1)", out.stderr)

    def test_validate_only_reports_the_final_eval_line_and_writes_nothing(self):
        """--validate-only logs the same ε-MSE numbers as the final eval of a run that leaves the weights unchanged
        (lr 0), writes no weights or checkpoint, and refuses a run without a weights file."""
        with tempfile.TemporaryDirectory() as d:
            data, start = tiny_data_and_start(d, data_seed=2, weights_seed=5)
            base = [sys.executable, os.path.join(ROOT, "training", "train.py"), "--data", data, "--nf", "8",
                    "--layers", "1", "--batch", "4", "--threads", "1", "--eval-molecules", "4", "--no-bf16",
                    "--precision", "f32", "--resume", start]
            out_dir = os.path.join(d, "out")
            js = os.path.join(d, "val.json")
            val = subprocess.run(base + ["--validate-only", "--out-dir", out_dir, "--json", js],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(val.returncode, 0, val.stderr[-2000:])
            self.assertFalse(os.path.exists(out_dir), "--validate-only wrote into --out-dir")
            line = next(ln for ln in val.stdout.splitlines() if " validate " in ln)
            self.assertIn("4 molecules", line)
            nums = line.split("): ", 1)[1]
            with open(js) as fh:
                rec = json.load(fh)
            self.assertEqual(sorted(rec["eps_mse_x_h_by_t"], key=int), [str(t) for t in train.EVAL_LEVELS])
            self.assertTrue(all(v[0] > 0 for v in rec["eps_mse_x_h_by_t"].values()))
            # one step at lr 0 leaves model and EMA as loaded: its final eval is the same line
            run = subprocess.run(base + ["--lr", "0", "--max-steps", "1", "--minutes", "3", "--out-dir", out_dir,
                                         "--name", "w.safetensors", "--ckpt", os.path.join(d, "w.pt")],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(run.returncode, 0, run.stderr[-2000:])
            final = next(ln for ln in run.stdout.splitlines() if "final eval (EMA" in ln)
            self.assertEqual(final.split("by t): ", 1)[1], nums)
            for bad in (["--resume", "none"], ["--resume", os.path.join(d, "missing.safetensors")]):
                out = subprocess.run(base[:-2] + bad + ["--validate-only"], capture_output=True, text=True,
                                     timeout=120)
                self.assertNotEqual(out.returncode, 0)
                self.assertIn("--validate-only needs --resume with a weights file", out.stderr)
            out = subprocess.run(base + ["--json", js, "--max-steps", "1"], capture_output=True, text=True,
                                 timeout=120)
            self.assertEqual(out.returncode, 2)
            self.assertIn("--json goes with --validate-only", out.stderr)

    def test_broken_data_or_weights_stop_with_a_clear_error(self):
        """NaN in the data is refused on loading; weights that overflow every loss stop the run after a few
        batches with an error, instead of skipping batches until the time budget ends."""
        rng = np.random.default_rng(0)
        n_mol, n_at = 24, 4
        with tempfile.TemporaryDirectory() as d:
            data = os.path.join(d, "tiny.npz")
            pos = rng.normal(size=(n_mol * n_at, 3)).astype(np.float32)
            split = dict(types=rng.integers(0, 5, n_mol * n_at).astype(np.uint8),
                         offsets=np.arange(0, n_mol * n_at + 1, n_at, dtype=np.int64),
                         train=np.arange(16), valid=np.arange(16, 20), test=np.arange(20, 24))
            bad = pos.copy()
            bad[9, 1] = np.nan  # an atom of molecule 2
            np.savez(data, positions=bad, **split)
            with self.assertRaisesRegex(ValueError, "1 atoms have a non-finite position \\(first in molecule 2\\)"):
                train.Data(data, "cpu")
            np.savez(data, positions=pos, **split)
            m = edm.EnVariationalDiffusion(8, 1)
            with torch.no_grad():
                m.dynamics.egnn.embedding.weight.fill_(1e30)
            start = os.path.join(d, "start.safetensors")
            self.assertTrue(train.save_weights(start, m, {}))
            cmd = [sys.executable, os.path.join(ROOT, "training", "train.py"), "--data", data, "--nf", "8",
                   "--layers", "1", "--batch", "4", "--threads", "1", "--eval-molecules", "4", "--precision",
                   "f32", "--out-dir", d, "--name", "w.safetensors", "--ckpt", os.path.join(d, "w.pt"),
                   "--resume", start, "--minutes", "3"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn(f"stopped after {train.MAX_NONFINITE_IN_ROW} batches in a row with a non-finite loss",
                          out.stderr)
            # it stopped there, not after the 3-minute budget (which skipped batches used to spend), and saved
            # nothing: weights that overflow are not worth keeping
            self.assertEqual(out.stdout.count("non-finite loss, batch skipped"), train.MAX_NONFINITE_IN_ROW)
            self.assertFalse(os.path.exists(os.path.join(d, "w.safetensors")))

    def test_non_finite_streak_stops_only_on_batches_in_a_row(self):
        streak = train.NonFiniteStreak(3)
        # two bad batches, a good one, two bad: never three in a row, so the run goes on
        self.assertEqual([streak.record(f) for f in (False, False, True, False, False)], [False] * 5)
        self.assertFalse(streak.stopped)
        self.assertEqual(streak.count, 2)
        self.assertTrue(streak.record(False))  # the third in a row
        self.assertTrue(streak.stopped)
        self.assertEqual(train.NonFiniteStreak().limit, train.MAX_NONFINITE_IN_ROW)

    def test_loss_decreases_when_overfitting_a_batch(self):
        torch.manual_seed(1)
        m = edm.EnVariationalDiffusion(32, 2)
        opt = torch.optim.Adam(m.parameters(), lr=2e-3)
        types = torch.randint(0, 5, (8, 7))
        x = torch.randn(8, 7, 3)
        xh = torch.cat([x - x.mean(1, keepdim=True), edm.features(types)], -1)
        gamma = m.gamma.gamma.detach()
        t_int = torch.full((8,), 300)

        def autocast():
            return torch.autocast("cpu", enabled=False)

        losses = []
        for _ in range(80):
            torch.manual_seed(5)  # the same noise every step: a fixed regression target
            loss, _, _ = train.diffusion_loss(m, xh, t_int, gamma, 1000, autocast)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        self.assertLess(np.mean(losses[-5:]), 0.5 * np.mean(losses[:5]), losses[::10])

    def test_edm_divisors_are_the_padded_sizes_edm_divides_by_in_expectation(self):
        # one molecule per batch: no padding, each molecule divides by its own size
        self.assertEqual(train.edm_divisors(1), {n: float(n) for n in edm.N_NODES_HISTOGRAM})
        # two sizes, equally common, batches of two: a 2-atom molecule pads to 2 or 4 (1/E[1/N_pad] = 8/3),
        # a 4-atom one always to 4
        d = train.edm_divisors(2, {2: 1, 4: 1})
        self.assertAlmostEqual(d[2], 8 / 3)
        self.assertAlmostEqual(d[4], 4.0)
        # train.py passes the histogram of the split it trains on: sizes QM9 lacks (31) get a divisor, and the
        # molecules outside the split (the 5-atom one) do not count
        with tempfile.TemporaryDirectory() as tmp:
            sizes = [3, 3, 5, 31]
            path = os.path.join(tmp, "mixed.npz")
            np.savez(path, positions=np.zeros((sum(sizes), 3), np.float32), types=np.zeros(sum(sizes), np.uint8),
                     offsets=np.cumsum([0] + sizes), train=np.array([0, 1, 3]), valid=np.array([2]),
                     test=np.array([], np.int64))
            data = train.Data(path, "cpu")
            hist = data.histogram(data.split["train"])
        self.assertEqual(hist, {3: 2, 31: 1})
        d = train.edm_divisors(2, hist)
        self.assertAlmostEqual(d[3], 1 / (1 / 3 * 2 / 3 + 1 / 31 / 3))  # the other molecule: 3 atoms (2/3), or 31
        self.assertEqual(d[31], 31.0)
        d = train.edm_divisors(64)
        self.assertEqual(d[29], 29.0)  # QM9's largest molecule is its own batch's largest
        self.assertEqual([d[n] for n in sorted(d)], sorted(d.values()))  # larger molecules never divide by less
        # EDM's batches of 64 by simulation from the same histogram: E[1/N_pad] for the molecules of 18 and 25 atoms
        rng = np.random.default_rng(0)
        keys = np.array(list(edm.N_NODES_HISTOGRAM))
        probs = np.array(list(edm.N_NODES_HISTOGRAM.values()), float)
        draws = rng.choice(keys, size=(40000, 64), p=probs / probs.sum())
        pad = draws.max(axis=1, keepdims=True).repeat(64, axis=1)
        for n in (18, 25):
            # within 0.2 % (the simulation's error is below 0.05 % for seeds 0-4): tight enough to tell the
            # per-size divisor at 18 atoms (24.78) from one overall average (24.87, 0.36 % above)
            self.assertAlmostEqual(1 / float((1 / pad[draws == n]).mean()), d[n], delta=0.002 * d[n])

    def test_loss_divides_by_the_padded_size_not_each_molecules_own(self):
        torch.manual_seed(1)
        m = edm.EnVariationalDiffusion(16, 2)
        types = torch.randint(0, 5, (4, 9))
        x = torch.randn(4, 9, 3)
        xh = torch.cat([x - x.mean(1, keepdim=True), edm.features(types)], -1)
        gamma = m.gamma.gamma.detach()
        t_int = torch.tensor([0, 10, 500, 1000])

        def autocast():
            return torch.autocast("cpu", enabled=False)

        def loss(*args):
            torch.manual_seed(7)  # the same noise each time
            return train.diffusion_loss(m, xh, t_int, gamma, 1000, autocast, *args)

        per_atom, ex, eh = loss({9: 24.5}, 4)
        per_molecule, ex2, eh2 = loss()
        self.assertTrue(torch.equal(ex, ex2) and torch.equal(eh, eh2))
        self.assertGreater(float(per_molecule), 0.0)
        # same squared error, divided by 9·24.5 instead of 9·9 (these molecules have 9 atoms)
        self.assertAlmostEqual(float(per_atom) / float(per_molecule), 9 / 24.5, places=5)
        # and by hand: 0.5·Σ(x error + h error except at t = 0) / (9·N_pad), summed, over the nominal batch
        by_hand = 0.5 * (ex * 27 + eh * 54 * (t_int != 0)).sum() / (9 * 24.5) / 4
        self.assertAlmostEqual(float(per_atom), float(by_hand), places=5)
        # a short batch (4 molecules where 16 is the batch size) weighs per molecule what a full one does
        self.assertAlmostEqual(float(loss({9: 24.5}, 16)[0]), float(per_atom) / 4, places=6)
        # --h-weight scales the atom-type error in the loss only; the reported errors stay unweighted
        weighted, ex3, eh3 = loss({9: 24.5}, 4, 3.0)
        self.assertTrue(torch.equal(ex, ex3) and torch.equal(eh, eh3))
        by_hand3 = 0.5 * (ex * 27 + 3.0 * eh * 54 * (t_int != 0)).sum() / (9 * 24.5) / 4
        self.assertAlmostEqual(float(weighted), float(by_hand3), places=5)
        self.assertGreater(float(weighted), float(per_atom))
        # and in the per-molecule normalisation (each molecule's own 9·n, mean over the batch)
        by_hand_m = (0.5 * (ex * 27 + 3.0 * eh * 54 * (t_int != 0)) / (9 * 9)).mean()
        self.assertAlmostEqual(float(loss(None, None, 3.0)[0]), float(by_hand_m), places=5)

    def test_amsgrad_switches_on_in_a_state_saved_without_it(self):
        torch.manual_seed(2)
        w = torch.nn.Parameter(torch.randn(5))
        plain = torch.optim.AdamW([w], lr=1e-2, weight_decay=1e-12)
        for _ in range(3):
            plain.zero_grad()
            (w ** 2).sum().backward()
            plain.step()
        saved = plain.state_dict()
        again = torch.optim.AdamW([w], lr=1e-2, weight_decay=1e-12, amsgrad=True)
        again.load_state_dict(saved)
        self.assertFalse(again.param_groups[0]["amsgrad"])  # what load_state_dict brings back: the saved flag
        train.set_amsgrad(again, True)
        self.assertTrue(again.param_groups[0]["amsgrad"])
        st = again.state[w]
        self.assertTrue(torch.equal(st["max_exp_avg_sq"], st["exp_avg_sq"]))
        before = st["max_exp_avg_sq"].clone()
        again.zero_grad()
        (100 * w ** 2).sum().backward()  # a larger gradient: the running maximum must follow it up
        again.step()
        self.assertTrue(bool((st["max_exp_avg_sq"] > before).all()))
        self.assertTrue(torch.equal(st["max_exp_avg_sq"], torch.maximum(before, st["exp_avg_sq"])))
        # an empty (fresh) optimizer is switched too, and torch starts the maximum itself
        fresh = torch.optim.AdamW([w], lr=1e-2)
        train.set_amsgrad(fresh, True)
        fresh.zero_grad()
        (w ** 2).sum().backward()
        fresh.step()
        self.assertIn("max_exp_avg_sq", fresh.state[w])

    def test_export_round_trip_and_refuses_non_finite(self):
        m = edm.EnVariationalDiffusion(8, 2)
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "w.safetensors")
            self.assertTrue(train.save_weights(p, m, {"molecules_seen": 64, "epochs": 0.00064}))
            tensors, cfg = train.read_safetensors(p)
            self.assertEqual((cfg["nf"], cfg["n_layers"]), (8, 2))
            self.assertEqual(cfg["provenance"]["molecules_seen"], 64)
            self.assertEqual(set(tensors), set(m.state_dict()))
            # float16 export: all but the γ table halved, values within float16 rounding, provenance kept
            h = os.path.join(d, "h.safetensors")
            # a chunk that ends before its first loss: no NaN in the metadata (the crate reads strict JSON)
            self.assertTrue(train.save_weights(h, m, {"molecules_seen": 64, "final_loss": float("nan")}, "f16"))
            with open(h, "rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            strict = json.loads(header["__metadata__"]["equivariant"], parse_constant=lambda c: self.fail(c))
            self.assertNotIn("final_loss", strict["provenance"])
            half, cfg16 = train.read_safetensors(h)
            self.assertEqual(cfg16["provenance"]["molecules_seen"], 64)
            self.assertEqual(half["gamma.gamma"].dtype, torch.float32)
            for k, v in m.state_dict().items():
                if k != "gamma.gamma":
                    self.assertEqual(half[k].dtype, torch.float16, k)
                    self.assertTrue(torch.allclose(half[k].float(), v, rtol=2 ** -10, atol=1e-7), k)
            # a finite weight too large for float16: that file falls back to float32 rather than failing the save
            with torch.no_grad():
                m.dynamics.egnn.embedding.weight[0, 0] = 1e6
            self.assertTrue(train.save_weights(h, m, {}, "f16"))
            big, _ = train.read_safetensors(h)
            self.assertEqual(big["dynamics.egnn.embedding.weight"].dtype, torch.float32)
            self.assertEqual(float(big["dynamics.egnn.embedding.weight"][0, 0]), 1e6)
            with torch.no_grad():
                m.dynamics.egnn.embedding.weight[0, 0] = float("nan")
            q = os.path.join(d, "bad.safetensors")
            self.assertFalse(train.save_weights(q, m, {}))
            self.assertFalse(os.path.exists(q))

    def test_weight_average_is_the_mean_and_refuses_mismatches(self):
        import average_weights

        torch.manual_seed(0)
        a, b = edm.EnVariationalDiffusion(8, 2), edm.EnVariationalDiffusion(8, 2)
        with tempfile.TemporaryDirectory() as d:
            pa, pb, out = (os.path.join(d, n) for n in ("a.safetensors", "b.safetensors", "s.safetensors"))
            train.save_weights(pa, a, {"molecules_seen": 100, "epochs": 0.001, "cpu_hours": 1.0, "chunks": 1})
            train.save_weights(pb, b, {"molecules_seen": 160, "epochs": 0.0016, "cpu_hours": 1.5, "chunks": 2})
            average_weights.main([pa, pb, "--out", out, "--weights-of", "0.25", "0.75", "--precision", "f32"])
            soup, cfg = train.read_safetensors(out)
            sa, sb = a.state_dict(), b.state_dict()
            params = {n for n, _ in a.named_parameters()}
            for k in sa:
                if k == "gamma.gamma":
                    self.assertTrue(torch.equal(soup[k], sa[k]))
                else:
                    if k in params:
                        self.assertFalse(torch.equal(sa[k], sb[k]), k)  # the inputs really differ
                    torch.testing.assert_close(soup[k], 0.25 * sa[k] + 0.75 * sb[k], rtol=1e-6, atol=1e-7)
            self.assertEqual(soup["dynamics.egnn.embedding.weight"].dtype, torch.float32)
            # the shipped form (default --precision f16): all but the γ table halved, the configuration kept
            half = os.path.join(d, "h.safetensors")
            average_weights.main([pa, pb, "--out", half])
            soup16, cfg16 = train.read_safetensors(half)
            self.assertEqual(soup16["gamma.gamma"].dtype, torch.float32)
            self.assertEqual(soup16["dynamics.egnn.embedding.weight"].dtype, torch.float16)
            k = "dynamics.egnn.embedding.weight"
            torch.testing.assert_close(soup16[k].float(), 0.5 * (sa[k] + sb[k]), rtol=2 ** -10, atol=1e-7)
            self.assertEqual({k: v for k, v in cfg16.items() if k != "provenance"},
                             {k: v for k, v in cfg.items() if k != "provenance"})
            # b continued from a: total compute is b's, not the sum
            prov = cfg["provenance"]
            self.assertEqual(prov["molecules_seen"], 160)
            self.assertAlmostEqual(prov["cpu_hours"], 1.5)
            self.assertEqual([x["coefficient"] for x in prov["averaged_from"]], [0.25, 0.75])
            # three files: siblings of the smallest add their excess; a chain spent only its last file's compute
            pc3 = os.path.join(d, "c3.safetensors")
            train.save_weights(pc3, b, {"molecules_seen": 220, "epochs": 0.0022, "cpu_hours": 2.5, "chunks": 3})
            for flags, molecules, hours, chunks in (([], 280, 3.0, 4), (["--chain"], 220, 2.5, 3)):
                average_weights.main([pb, pa, pc3, "--out", out, *flags])
                prov = train.read_safetensors(out)[1]["provenance"]
                self.assertEqual((prov["molecules_seen"], prov["chunks"]), (molecules, chunks), flags)
                self.assertAlmostEqual(prov["cpu_hours"], hours)
            # a different width, a changed noise schedule, a non-finite weight: refused, naming the file
            c = edm.EnVariationalDiffusion(16, 2)
            pc = os.path.join(d, "c.safetensors")
            train.save_weights(pc, c, {})
            with self.assertRaisesRegex(ValueError, "c.safetensors: nf"):
                average_weights.average([pa, pc], [0.5, 0.5])
            tensors, _ = train.read_safetensors(pb)
            from safetensors.torch import save_file

            tensors["gamma.gamma"] = tensors["gamma.gamma"] * 1.01
            pg = os.path.join(d, "g.safetensors")
            save_file(tensors, pg, metadata=edm.config_metadata(8, 2))
            with self.assertRaisesRegex(ValueError, "γ table"):
                average_weights.average([pa, pg], [0.5, 0.5])
            tensors["gamma.gamma"] = sa["gamma.gamma"].clone()
            tensors["dynamics.egnn.embedding.weight"][0, 0] = float("nan")
            save_file(tensors, pg, metadata=edm.config_metadata(8, 2))
            with self.assertRaisesRegex(ValueError, "non-finite"):
                average_weights.average([pa, pg], [0.5, 0.5])
            with self.assertRaisesRegex(ValueError, "summing to 1"):
                average_weights.average([pa, pb], [0.5, 0.6])

    def test_tensor_digest_ignores_metadata_but_not_tensors(self):
        import hashlib
        import pathlib

        import average_weights

        torch.manual_seed(0)
        a = edm.EnVariationalDiffusion(8, 2)
        with tempfile.TemporaryDirectory() as d:
            p1, p2 = os.path.join(d, "one.safetensors"), os.path.join(d, "two.safetensors")
            # the same tensors written with different provenance (as a rebuild at another time and commit would)
            train.save_weights(p1, a, {"molecules_seen": 100, "updated": "2026-01-01T00:00:00Z"})
            train.save_weights(p2, a, {"molecules_seen": 100, "updated": "2026-01-01T00:00:01Z", "git_commit": "x"})
            sha = [hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest() for p in (p1, p2)]
            self.assertNotEqual(sha[0], sha[1])
            self.assertEqual(average_weights.tensor_digest(p1), average_weights.tensor_digest(p2))
            # one weight moved by one float32 step: a different digest
            with torch.no_grad():
                w = a.dynamics.egnn.embedding.weight
                w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(10.0))
            train.save_weights(p2, a, {"molecules_seen": 100})
            self.assertNotEqual(average_weights.tensor_digest(p1), average_weights.tensor_digest(p2))
            # a truncated file: an error naming it, not a digest of what is left
            blob = pathlib.Path(p1).read_bytes()
            cut = os.path.join(d, "cut.safetensors")
            pathlib.Path(cut).write_bytes(blob[: len(blob) // 2])
            with self.assertRaisesRegex(ValueError, "cut.safetensors"):
                average_weights.tensor_digest(cut)

    def test_clipper_limits_outliers(self):
        clip = train.GradClipper()
        p = torch.nn.Parameter(torch.zeros(3))
        for _ in range(60):
            p.grad = torch.ones(3)
            clip([p])
        p.grad = torch.full((3,), 1000.0)
        norm, max_norm = clip([p])
        self.assertGreater(norm, 1000)
        self.assertLess(float(p.grad.norm()), max_norm + 1e-3)
        self.assertLess(max_norm, 10)


class TorchSamplerTests(unittest.TestCase):
    def test_step_coefficients_match_the_spec_reference(self):
        import sample_torch

        gamma = torch.from_numpy(edm.polynomial_2_gamma())
        # spec §2.8 reference values (float64): σ²_{t|s}, 1/α_{t|s}, ε coefficient, noise std
        ref = {(0, 1): (2.0000e-6, 1.000001, 5.7735e-4, 1.29099e-3),
               (499, 500): (2.65864e-3, 1.001332, 4.0248e-3, 5.1474e-2),
               (998, 999): (0.461026, 1.362122, 0.627978, 0.678985),
               (999, 1000): (0.285221, 1.182807, 0.337363, 0.534059)}
        for (s, t), want in ref.items():
            got = [float(v) for v in sample_torch.step_coefficients(gamma, s, t)]
            for g, w in zip(got, want):
                self.assertAlmostEqual(g / w, 1.0, delta=2e-4, msg=f"step {t}->{s}: {got} vs {want}")
        # the Rust sampler's grid
        self.assertEqual(sample_torch.timesteps(1000), list(range(1000, -1, -1)))
        self.assertEqual(sample_torch.timesteps(100)[:3] + sample_torch.timesteps(100)[-2:], [1000, 990, 980, 10, 0])
        self.assertEqual(sample_torch.timesteps(3), [1000, 667, 333, 0])

    def test_samples_are_centred_finite_and_typed(self):
        import sample_torch

        torch.manual_seed(0)
        model = edm.EnVariationalDiffusion(16, 2)
        x, types = sample_torch.sample(model, 5, 3, 4, torch.Generator().manual_seed(1))
        self.assertEqual((tuple(x.shape), tuple(types.shape)), ((3, 5, 3), (3, 5)))
        self.assertTrue(torch.isfinite(x).all())
        np.testing.assert_allclose(x.mean(1).numpy(), 0, atol=1e-5)
        self.assertTrue(((types >= 0) & (types < 5)).all())
        # seeded: the same generator gives the same molecules
        x2, types2 = sample_torch.sample(model, 5, 3, 4, torch.Generator().manual_seed(1))
        self.assertTrue(torch.equal(x, x2) and torch.equal(types, types2))
        # its XYZ comment line is one evaluate.py reads (index, seed, steps)
        import evaluate

        line = sample_torch.comment(7, types[0].tolist(), 5, 4)
        self.assertEqual(evaluate.LABEL.match(line).groups(), ("7", "5", "4"))

    def test_renoising_keeps_the_molecule_at_low_noise_and_is_seeded(self):
        import renoise

        torch.manual_seed(0)
        model = edm.EnVariationalDiffusion(16, 2)
        # two molecules of 3 atoms, CH2 and H2O (types H C N O F = 0..4)
        x0 = torch.tensor([[[0.0, 0.0, 0.0], [1.09, 0.0, 0.0], [-0.36, 1.03, 0.0]],
                           [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]])
        ty = torch.tensor([[1, 0, 0], [3, 0, 0]])
        centred = x0 - x0.mean(1, keepdim=True)
        # t0 = 0 is the data itself (centred, as every output is)
        x, t = renoise.denoise_from(model, x0, ty, 0, torch.Generator().manual_seed(1))
        self.assertTrue(torch.equal(x, centred) and torch.equal(t, ty))
        # t0 = 1 (σ ≈ 1.4 mÅ): even an untrained model moves atoms by hundredths of an Å at most and keeps the
        # types, and the result is centred; a wrong sign or scale in the forward or reverse step would not
        x, t = renoise.denoise_from(model, x0, ty, 1, torch.Generator().manual_seed(1))
        self.assertLess(float((x - centred).abs().max()), 0.05)
        self.assertTrue(torch.equal(t, ty))
        np.testing.assert_allclose(x.mean(1).numpy(), 0, atol=1e-5)
        # the same seed gives the same molecules (so two weights files are compared on the same noise)
        a = renoise.denoise_from(model, x0, ty, 30, torch.Generator().manual_seed(2))
        b = renoise.denoise_from(model, x0, ty, 30, torch.Generator().manual_seed(2))
        self.assertTrue(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]))
        # per-molecule records: valid, stable, stable atoms, atoms, types changed, N count
        groups = {3: [(7, x0[0].numpy(), ty[0].numpy()), (9, x0[1].numpy(), ty[1].numpy())]}
        recs = renoise.run(model, groups, 0, 0)
        self.assertEqual(sorted(recs), [7, 9])
        self.assertEqual(recs[9][3], 3)
        self.assertFalse(recs[7][4] or recs[9][4])
        s = renoise.summary(recs)
        self.assertEqual((s["molecules"], s["types_changed"], s["N_per_molecule"], s["median_displacement"]),
                         (2, 0.0, 0.0, 0.0))
        # at t0 = 1 the atoms stay where they were (hundredths of an Å), so the structure is the data's
        moved = renoise.summary(renoise.run(model, groups, 1, 0))["median_displacement"]
        self.assertTrue(0 < moved < 0.05, moved)

    def test_renoise_levels_compare_each_t0_with_the_base_on_the_same_molecules(self):
        import renoise

        # records: valid, stable, ...; molecule "1" valid and stable only at the base, "2" valid only at t0 = 200,
        # "3" valid at both and stable only at the base, "4" the same at both
        run = {"by_t0": {
            "0": {"records": {"1": [True, True], "2": [False, False], "3": [True, True], "4": [True, True]}},
            "200": {"records": {"1": [False, False], "2": [True, False], "3": [True, False], "4": [True, True]}},
        }}
        out = renoise.level_contrasts(run, 0)
        self.assertEqual(list(out), ["200"])
        self.assertEqual(out["200"]["valid_only_t0_vs_base"][:2], [1, 1])
        self.assertEqual(out["200"]["stable_only_t0_vs_base"][:2], [0, 2])
        self.assertAlmostEqual(out["200"]["valid_only_t0_vs_base"][2], 1.0)
        self.assertAlmostEqual(out["200"]["stable_only_t0_vs_base"][2], 0.5)
        # a base the run does not have is refused by name
        with self.assertRaisesRegex(SystemExit, "t0 = 100 is not in this run"):
            renoise.level_contrasts(run, 100)

    def test_a_diverged_molecule_is_skipped_not_written_as_nan(self):
        import evaluate
        import sample_torch

        t = torch.tensor([1, 0, 0])
        ok = torch.tensor([[0.0, 0.0, 0.0], [1.09, 0.0, 0.0], [-1.09, 0.0, 0.0]])
        bad = ok.clone()
        bad[1, 2] = float("nan")
        far = ok.clone()
        far[0, 0] = float("inf")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s.xyz")
            with open(path, "w") as fh:
                skipped = sample_torch.write_samples(fh, [(ok, t), (bad, t), (far, t)], 3, 10)
            self.assertEqual(skipped, [1, 2])
            self.assertNotIn("nan", open(path).read().lower())
            mols = evaluate.read_xyz(path, comments=True)
            # the kept molecule keeps its own index, so a paired comparison still matches molecules by index
            self.assertEqual([evaluate.LABEL.match(c).group(1) for _, _, c in mols], ["0"])
            # the skipped ones were the last: only --n tells evaluate.py that 3 were asked for (2 diverged)
            lab = evaluate.labels(mols)
            self.assertEqual(evaluate.requested(lab), 1)
            self.assertEqual(evaluate.requested(lab, 3), 3)
            with self.assertRaises(ValueError):
                evaluate.requested([(4, 3, 10)], 3)


class DataTests(unittest.TestCase):
    def test_csv_parser_handles_qm9_number_forms(self):
        csv = ('Index,SMILES,N_atoms,Elements,XYZ_Ang\n'
               '1,C,5,"[\'C\', \'H\', \'H\', \'H\', \'H\']","[[0.,1.,2.],[1.5*^-1,0,0],[0,1,0],[0,0,1],[-1.,-1.,-1.]]"\n'
               '2,O,3,"[\'O\',\'H\',\'H\']","[[0,0,0],[0.96,0,0],[-0.24,0.93,0]]"\n')
        with tempfile.TemporaryDirectory() as d:
            f = os.path.join(d, "part.csv")
            with open(f, "w") as out:
                out.write(csv)
            pos, typ, offs, index = prepare_data.parse([f])
        self.assertEqual(offs.tolist(), [0, 5, 8])
        self.assertEqual(typ.tolist(), [1, 0, 0, 0, 0, 3, 0, 0])
        self.assertEqual(index.tolist(), [1, 2])
        np.testing.assert_allclose(pos[:5].mean(0), 0, atol=1e-6)  # centred
        raw = np.array([[0, 1, 2], [0.15, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]])
        np.testing.assert_allclose(pos[:5], raw - raw.mean(0), atol=1e-6)

    def test_bond_rule_matches_spec(self):
        self.assertEqual(chem.bond_order("C", "C", 1.33), 2)
        self.assertEqual(chem.bond_order("C", "C", 1.20), 3)
        self.assertEqual(chem.bond_order("C", "O", 1.21), 2)
        self.assertEqual(chem.bond_order("C", "H", 1.25), 0)

    def test_invalid_reason_names_the_over_bonded_atom(self):
        # N or C at the origin with four H 1.0 A away, tetrahedral (H-H 1.63 A: no bond)
        d = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float32) / np.sqrt(3)
        pos = np.vstack([np.zeros((1, 3), np.float32), d])
        self.assertIsNone(chem.molecule_smiles(pos, [2, 0, 0, 0, 0]))
        self.assertEqual(chem.molecule_smiles(pos, [1, 0, 0, 0, 0]), "[H]C([H])([H])[H]")
        # the evaluation's single sanitisation gives the SMILES or the reason
        self.assertEqual(chem.rdkit_verdict(pos, [2, 0, 0, 0, 0]), (None, "N valence 4"))
        self.assertEqual(chem.rdkit_verdict(pos, [1, 0, 0, 0, 0]), ("[H]C([H])([H])[H]", None))
        # two fragments: the SMILES is the largest one's (CH4 beside a lone H 5 A from the C)
        two = np.vstack([pos, [[5.0, 0.0, 0.0]]]).astype(np.float32)
        self.assertEqual(chem.rdkit_verdict(two, [1, 0, 0, 0, 0, 0]), ("[H]C([H])([H])[H]", None))

    def test_over_bonded_tells_extra_neighbours_from_bond_order(self):
        # C-C-C with 1.20 A bonds: each counts triple (< 1.23 A), so the middle C has 6 by order from 2 neighbours;
        # 0.03 A longer and they would count double
        chain = np.array([[0, 0, 0], [1.2, 0, 0], [2.4, 0, 0]], dtype=np.float32)
        (el, cause, margin, bond), = chem.over_bonded(chain, [1, 1, 1])
        self.assertEqual((el, cause, bond), ("C", "order", "C#C"))
        self.assertAlmostEqual(margin, 0.03, places=5)
        # CH4 plus a fifth H 1.15 A from the C (single threshold 1.19 A): extra neighbour, 0.04 A inside
        d = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float32) / np.sqrt(3) * 1.09
        ch5 = np.vstack([np.zeros((1, 3)), d, [[0, 0, -1.15]]]).astype(np.float32)
        over = chem.over_bonded(ch5, [1, 0, 0, 0, 0, 0])
        self.assertEqual([(a.element, a.cause, a.bond) for a in over], [("C", "neighbours", "C-H")])
        self.assertAlmostEqual(over[0].margin, 0.04, places=5)
        # the margin is the bond nearest its own threshold, whatever the elements: a sixth neighbour, C 1.55 A away
        # (0.09 inside 1.64), leaves the H at 1.15 A (0.04 inside 1.19) the nearest
        ch5c = np.vstack([ch5, [[0, 0, 1.55]]]).astype(np.float32)
        (el, cause, margin, bond), = [a for a in chem.over_bonded(ch5c, [1, 0, 0, 0, 0, 0, 1]) if a.element == "C"][:1]
        self.assertEqual((cause, bond), ("neighbours", "C-H"))
        self.assertAlmostEqual(margin, 0.04, places=5)
        # C=O=C with 1.22 A bonds: double (< 1.25 A), not triple (>= 1.16 A), so the O has 4 by order from 2
        # neighbours, 0.03 A inside the double threshold
        coc = np.array([[-1.22, 0, 0], [0, 0, 0], [1.22, 0, 0]], dtype=np.float32)
        self.assertEqual([(a.element, a.cause, a.bond) for a in chem.over_bonded(coc, [1, 3, 1])],
                         [("O", "order", "C=O")])
        self.assertAlmostEqual(chem.over_bonded(coc, [1, 3, 1])[0].margin, 0.03, places=5)
        # a stable molecule has none
        self.assertEqual(chem.over_bonded(ch5[:5], [1, 0, 0, 0, 0]), [])

    def test_verdict_computes_bonds_once_and_summarises_them(self):
        import evaluate

        # CH4 (stable) and C=O=C (the O over-valent by order): one bond pass gives every verdict
        d = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float32) / np.sqrt(3) * 1.09
        ch4 = (np.vstack([np.zeros((1, 3)), d]).astype(np.float32), [1, 0, 0, 0, 0])
        coc = (np.array([[-1.22, 0, 0], [0, 0, 0], [1.22, 0, 0]], dtype=np.float32), [1, 3, 1])
        calls, inner = [], []
        real = evaluate.bonds
        evaluate.bonds = lambda p, t: calls.append(1) or real(p, t)
        chem.bonds = lambda p, t: inner.append(1) or real(p, t)  # what stability & co. call when not given bonds
        try:
            vs = evaluate.verdicts([ch4, coc])
        finally:
            evaluate.bonds = chem.bonds = real
        self.assertEqual((len(calls), len(inner)), (2, 0))
        self.assertEqual((vs[0].stable_atoms, vs[0].atoms, vs[0].stable, vs[0].smiles),
                         (5, 5, True, "[H]C([H])([H])[H]"))
        self.assertEqual(vs[0].over, [])
        self.assertEqual((vs[1].stable, vs[1].smiles, vs[1].reason), (False, None, "O valence 4"))
        self.assertEqual(evaluate.bonds_per_molecule(vs), {"C-H": 2.0, "C=O": 1.0})
        summary = evaluate.over_bonded_summary(vs)
        self.assertEqual((summary["molecules"], summary["atoms"], summary["order_by_bond"]), (1, 1, {"C=O": 1}))
        self.assertNotIn("neighbours_by_bond", summary)

    def test_evaluate_refuses_fewer_than_one_molecule(self):
        out = subprocess.run([sys.executable, os.path.join(ROOT, "training", "evaluate.py"), "--n", "0"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--n 0: evaluate at least one molecule", out.stderr)
        # a negative count used to slice the test split from its end: all but the last 5 molecules
        out = subprocess.run([sys.executable, os.path.join(ROOT, "training", "evaluate.py"), "--data-reference",
                              "-5"], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--data-reference -5: evaluate at least one molecule", out.stderr)

    def test_mcnemar_exact(self):
        import evaluate

        a = [True] * 6 + [False] * 3 + [True] * 10
        b = [False] * 6 + [True] * 1 + [False] * 2 + [True] * 10
        only_a, only_b, p = evaluate.mcnemar(a, b)
        self.assertEqual((only_a, only_b), (6, 1))
        self.assertAlmostEqual(p, 2 * (1 + 7) / 2 ** 7)  # P(X <= 1) for X ~ Bin(7, 1/2), both tails
        self.assertEqual(evaluate.mcnemar(a, a)[2], 1.0)

    def test_paired_matches_molecules_by_index(self):
        import evaluate

        ch4 = "5\n{}\nC 0 0 0\nH 0.63 0.63 0.63\nH 0.63 -0.63 -0.63\nH -0.63 0.63 -0.63\nH -0.63 -0.63 0.63\n"
        bad = "5\n{}\nN 0 0 0\nH 0.63 0.63 0.63\nH 0.63 -0.63 -0.63\nH -0.63 0.63 -0.63\nH -0.63 -0.63 0.63\n"
        label = "molecule {} X seed 3 steps 100 stable true"
        with tempfile.TemporaryDirectory() as d:
            a, b = os.path.join(d, "a.xyz"), os.path.join(d, "b.xyz")
            # a: molecules 0, 1, 2 all CH4 (stable); b: molecule 1 diverged (missing), molecule 2 is NH4 (unstable)
            open(a, "w").write("".join(ch4.format(label.format(i)) for i in range(3)))
            open(b, "w").write(ch4.format(label.format(0)) + bad.format(label.format(2)))
            mols = evaluate.read_xyz(a, comments=True)
            res = evaluate.paired(mols, evaluate.verdicts(mols), b)
            self.assertEqual(res["molecules"], 3)
            self.assertEqual({k: res["molecule_stability"][k] for k in ("these", "other", "only_these", "only_other")},
                             {"these": 3, "other": 1, "only_these": 2, "only_other": 0})
            # composition over the molecules in both (0 and 2): molecule 2 has a C here and an N there
            # mean and standard error (sample standard deviation of [1, 0] / sqrt 2)
            self.assertEqual(res["atoms_per_molecule_difference"]["C"], [0.5, 0.5])
            self.assertEqual(res["atoms_per_molecule_difference"]["N"], [-0.5, 0.5])
            self.assertEqual(res["atoms_per_molecule_difference"]["H"], [0.0, 0.0])
            # atom stability over each file's own atoms: 15 of 15 here; there CH4 (5 of 5) and NH4, whose N is over-valent
            self.assertEqual(res["atom_stability"], {"these": 15, "these_atoms": 15, "other": 9, "other_atoms": 10})
            # agreement over molecules 0 and 2: only 0 ends with the same types (identical), and only 0 is valid in both
            self.assertEqual(res["agreement"], {"molecules_in_both": 2, "same_types": 1, "valid_in_both": 1,
                                                "same_smiles": 1, "max_coordinate_difference_angstrom":
                                                    {"median": 0.0, "q90": 0.0, "max": 0.0}})
            self.assertEqual(evaluate.atoms_per_molecule(evaluate.read_xyz(b)),
                             {"H": 4.0, "C": 0.5, "N": 0.5, "O": 0.0, "F": 0.0})
            # another step count is not a pair
            open(b, "w").write(ch4.format(label.format(0).replace("steps 100", "steps 1000")))
            with self.assertRaises(SystemExit):
                evaluate.paired(mols, evaluate.verdicts(mols), b)

    def test_agreement_measures_coordinates_and_smiles_of_paired_molecules(self):
        import evaluate

        ch4 = (np.array([[0, 0, 0], [0.63, 0.63, 0.63], [0.63, -0.63, -0.63], [-0.63, 0.63, -0.63],
                         [-0.63, -0.63, 0.63]], dtype=np.float32), [1, 0, 0, 0, 0])
        moved = (ch4[0] + np.array([[0, 0, 0.002]] * 4 + [[0.05, 0, 0]], dtype=np.float32), ch4[1])
        nh4 = (ch4[0], [2, 0, 0, 0, 0])
        a = [(m, evaluate.verdict(*m)) for m in (ch4, ch4, ch4)]
        b = [(m, evaluate.verdict(*m)) for m in (ch4, moved, nh4)]
        res = evaluate.agreement(a, b)
        self.assertEqual({k: res[k] for k in ("molecules_in_both", "same_types", "valid_in_both", "same_smiles")},
                         {"molecules_in_both": 3, "same_types": 2, "valid_in_both": 2, "same_smiles": 2})
        q = res["max_coordinate_difference_angstrom"]  # per molecule 0 and 0.05: the median halfway
        self.assertAlmostEqual(q["median"], 0.025, places=4)
        self.assertAlmostEqual(q["max"], 0.05, places=4)
        self.assertNotIn("max_coordinate_difference_angstrom", evaluate.agreement(a[2:], b[2:]))

    def test_pooled_paired_test_adds_discordant_molecules_over_seeds(self):
        """Two seeds each too small to tell anything (3 against 0: p = 0.25; 2 against 0: p = 0.5) pool to 5
        against 0 (p = 2/32); a seed given twice, or a file without a paired comparison, is refused by name."""
        import pool_paired

        def report(seed, only_new, only_old):
            return {"seed": seed, "steps": 100, "weights": "new.safetensors", "paired": {
                "other": f"old_{seed}.xyz", "molecules": 10,
                "molecule_stability": {"these": 5 + only_new, "other": 5 + only_old, "only_these": only_new,
                                       "only_other": only_old, "mcnemar_p": 0.0},
                "validity": {"these": 8, "other": 8, "only_these": 1, "only_other": 1,
                             "mcnemar_p": 1.0}}}

        res = pool_paired.pool([("a", report(13, 3, 0)), ("b", report(14, 2, 0))])
        self.assertEqual(res["seeds"], [13, 14])
        self.assertEqual({k: res["molecule_stability"][k] for k in ("these", "other", "only_these", "only_other",
                                                                    "molecules")},
                         {"these": 15, "other": 10, "only_these": 5, "only_other": 0, "molecules": 20})
        self.assertAlmostEqual(res["molecule_stability"]["mcnemar_p"], 0.0625)
        self.assertEqual(res["validity"]["mcnemar_p"], 1.0)  # 2 against 2
        with self.assertRaisesRegex(ValueError, "b: seed 13 at 100 steps is already pooled"):
            pool_paired.pool([("a", report(13, 3, 0)), ("b", report(13, 2, 0))])
        twice = report(14, 2, 0)
        twice["paired"]["other"] = "old_13.xyz"
        with self.assertRaisesRegex(ValueError, "b: compared with old_13.xyz, which another file was compared"):
            pool_paired.pool([("a", report(13, 3, 0)), ("b", twice)])
        # agreement adds up where every report has it, and is left out where one lacks it
        self.assertNotIn("agreement", res)
        agreed = [report(13, 3, 0), report(14, 2, 0)]
        for r, k in zip(agreed, (4, 6)):
            r["paired"]["agreement"] = {"molecules_in_both": 10, "same_types": k, "valid_in_both": 8,
                                        "same_smiles": k - 1}
        self.assertEqual(pool_paired.pool([("a", agreed[0]), ("b", agreed[1])])["agreement"],
                         {"molecules_in_both": 20, "same_types": 10, "valid_in_both": 16, "same_smiles": 8})
        self.assertNotIn("agreement", pool_paired.pool([("a", agreed[0]), ("b", report(14, 2, 0))]))
        with self.assertRaisesRegex(ValueError, "c: no paired comparison"):
            pool_paired.pool([("c", {"seed": 1, "steps": 100})])
        with self.assertRaisesRegex(ValueError, "c: no paired comparison of molecule_stability and validity"):
            pool_paired.pool([("c", {"seed": 1, "steps": 100, "paired": {"molecule_stability": {}}})])
        with tempfile.TemporaryDirectory() as d:  # the command line reads the JSON files evaluate.py writes
            paths = []
            for seed, new in ((13, 3), (14, 2)):
                paths.append(os.path.join(d, f"{seed}.json"))
                with open(paths[-1], "w") as f:
                    json.dump(report(seed, new, 0), f)
            out = subprocess.run([sys.executable, os.path.join(ROOT, "training", "pool_paired.py"), *paths],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("molecule_stability: new 75.0 % against old 50.0 %; only new 5, only old 0, exact "
                          "McNemar p = 0.0625", out.stdout)
            self.assertIn("ship rule on molecule_stability: FAIL (molecule_stability 5 against 0", out.stdout)

    def test_paired_difference_interval(self):
        """The paired difference and its 95 % interval: symmetric about 0 when both files win as often; of zero
        width when every molecule is a win for one file; and for 406 against 374 of 4,000 (session 33's test)
        +0.8 points with an interval of about +-1.37 points, computed here from the definition."""
        import pool_paired

        d, lo, hi = pool_paired.paired_difference(50, 50, 1000)
        self.assertEqual(d, 0.0)
        self.assertAlmostEqual(lo, -hi)
        self.assertAlmostEqual(hi, 1.96 * math.sqrt(100) / 1000)
        self.assertEqual(pool_paired.paired_difference(10, 0, 10), (1.0, 1.0, 1.0))
        d, lo, hi = pool_paired.paired_difference(406, 374, 4000)
        self.assertAlmostEqual(d, 0.008)
        se = math.sqrt((406 / 4000 + 374 / 4000 - 0.008 ** 2) / 4000)
        self.assertAlmostEqual(hi - d, 1.96 * se)
        self.assertAlmostEqual(d - lo, 1.96 * se)
        self.assertLess(lo, 0.0)  # p = 0.27: the interval holds 0
        res = pool_paired.pool([("a", {"seed": 1, "steps": 100, "paired": {
            "other": "o.xyz", "molecules": 4000,
            "molecule_stability": {"these": 2398, "other": 2366, "only_these": 406, "only_other": 374},
            "validity": {"these": 3254, "other": 3235, "only_these": 267, "only_other": 248}}})])
        self.assertAlmostEqual(res["molecule_stability"]["difference_95"][1], hi)

    def test_pooled_verdict_applies_the_ship_rule(self):
        """The pooled verdict: PASS only when the tested metric wins at p < 0.05 and validity and atom stability
        (pooled over all atoms) are not lower; reports without atom stability give INCOMPLETE, not PASS."""
        import pool_paired

        def report(seed, only_new, only_old, valid_new=8, stable_atoms_new=95, atoms=100):
            return {"seed": seed, "steps": 100, "paired": {
                "other": f"old_{seed}.xyz", "molecules": 10,
                "molecule_stability": {"these": 2 + only_new, "other": 2 + only_old, "only_these": only_new,
                                       "only_other": only_old, "mcnemar_p": 0.0},
                "validity": {"these": valid_new, "other": 8, "only_these": 1, "only_other": 1, "mcnemar_p": 1.0},
                "atom_stability": {"these": stable_atoms_new, "these_atoms": atoms, "other": 95, "other_atoms": 100}}}

        # 6 against 0 discordant molecules: p = 2/64
        res = pool_paired.pool([("a", report(1, 3, 0)), ("b", report(2, 3, 0, atoms=300, stable_atoms_new=290))])
        self.assertEqual({k: res["atom_stability"][k] for k in ("these", "these_atoms", "other", "other_atoms")},
                         {"these": 385, "these_atoms": 400, "other": 190, "other_atoms": 200})
        self.assertAlmostEqual(res["atom_stability"]["these_rate"], 385 / 400)
        self.assertEqual(pool_paired.verdict(res)[0], "PASS")
        # the same molecules with validity lower, or atom stability lower, or too few discordant ones
        self.assertEqual(pool_paired.verdict(pool_paired.pool([("a", report(1, 3, 0)),
                                                               ("b", report(2, 3, 0, valid_new=7))]))[0], "FAIL")
        lower = pool_paired.pool([("a", report(1, 3, 0)), ("b", report(2, 3, 0, stable_atoms_new=94))])
        verdict, why = pool_paired.verdict(lower)
        self.assertEqual(verdict, "FAIL")
        self.assertIn("atom stability 94.50 against 95.00 %", why)
        self.assertEqual(pool_paired.verdict(pool_paired.pool([("a", report(1, 3, 0)), ("b", report(2, 2, 0))]))[0],
                         "FAIL")  # 5 against 0: p = 2/32
        # validity as the tested metric: 2 against 2 discordant is no gain
        self.assertEqual(pool_paired.verdict(res, "validity")[0], "FAIL")
        old = report(2, 3, 0)
        del old["paired"]["atom_stability"]
        res = pool_paired.pool([("a", report(1, 3, 0)), ("b", old)])
        self.assertNotIn("atom_stability", res)
        self.assertEqual(pool_paired.verdict(res), ("INCOMPLETE", "molecule_stability 6 against 0 only-new/only-old, "
                                                    "p = 0.0312; validity 16 against 16; atom stability not in the "
                                                    "reports"))

    def test_paired_test_runner_samples_old_first_resumes_and_refuses_other_weights(self):
        """paired_test.py: the old side samples before the new one on each seed and the new side is paired with
        the old side's samples; done seeds are skipped, but only when the report's recorded tensor digest is its
        side's file's and the new side was paired with this test's old samples; a seed set with a repeat is
        refused; and a real run (the Rust sampler on the tiny golden weights, the same file on both sides) pools
        to zero discordant molecules and the verdict FAIL, and its reports name the file by its digest."""
        import paired_test
        from digest import tensor_digest

        self.assertEqual(paired_test.parse_seeds("130-132,7"), [130, 131, 132, 7])
        with self.assertRaisesRegex(ValueError, "listed twice"):
            paired_test.parse_seeds("1-3,2")
        with self.assertRaisesRegex(ValueError, "expected seeds"):
            paired_test.parse_seeds("5-3")
        self.assertEqual(paired_test.seed_label([130, 131, 132]), "seeds130-132")
        self.assertEqual(paired_test.seed_label([1, 5]), "seeds1_5")
        tiny = os.path.join(ROOT, "tests", "fixtures", "golden_tiny.safetensors")
        digests = {"new": "b" * 64, "old": "a" * 64}

        def write(path, **report):
            with open(path, "w") as f:
                json.dump(report, f)

        with tempfile.TemporaryDirectory() as d:
            logs, samples = os.path.join(d, "logs"), os.path.join(d, "eval")
            os.makedirs(logs)
            os.makedirs(samples)
            layout = paired_test.Layout(logs, samples, 3, 2)
            todo = paired_test.plan(layout, "new.st", "B", "old.st", "A", [1, 2], 1, digests)
            self.assertEqual([(s, side) for s, side, _, _ in todo], [(1, "old"), (1, "new"), (2, "old"), (2, "new")])
            new_cmd = todo[1][3]
            self.assertEqual(new_cmd[new_cmd.index("--paired") + 1], layout.xyz("A", 1))
            self.assertEqual(new_cmd[new_cmd.index("--weights") + 1], "new.st")
            # seed 1 done on the old side: only its new side is left, paired with the kept samples
            write(layout.report("A", 1), tensor_digest="a" * 64)
            open(layout.xyz("A", 1), "w").close()
            self.assertEqual([(s, side) for s, side, _, _ in paired_test.plan(layout, "n", "B", "o", "A", [1, 2], 1,
                                                                              digests)],
                             [(1, "new"), (2, "old"), (2, "new")])
            # a report of other weights under the same name, or of none recorded, is not reused
            for bad, why in (({"tensor_digest": "c" * 64}, "sampled from weights with tensor digest cccccccccccc"),
                             ({}, "records no tensor digest")):
                write(layout.report("A", 1), **bad)
                with self.assertRaisesRegex(ValueError, why):
                    paired_test.plan(layout, "n", "B", "o", "A", [1, 2], 1, digests)
            write(layout.report("A", 1), tensor_digest="a" * 64)
            # the new side's report must have been paired with this test's old samples
            write(layout.report("B", 1), tensor_digest="b" * 64, paired={"other": os.path.join(d, "elsewhere.xyz")})
            with self.assertRaisesRegex(ValueError, "compared with .*elsewhere.xyz, not with"):
                paired_test.plan(layout, "n", "B", "o", "A", [1, 2], 1, digests)
            write(layout.report("B", 1), tensor_digest="b" * 64, paired={"other": layout.xyz("A", 1)})
            self.assertEqual([(s, side) for s, side, _, _ in paired_test.plan(layout, "n", "B", "o", "A", [1, 2], 1,
                                                                              digests)], [(2, "old"), (2, "new")])
            os.remove(layout.report("B", 1))
            os.remove(layout.xyz("A", 1))
            with self.assertRaisesRegex(ValueError, "cannot be paired"):
                paired_test.plan(layout, "n", "B", "o", "A", [1, 2], 1, digests)

        binary = os.path.join(ROOT, "target", "release", "equivariant")
        if not os.path.exists(binary):
            self.skipTest(f"{binary} not built (cargo build --release)")
        with tempfile.TemporaryDirectory() as d:
            logs, samples = os.path.join(d, "logs"), os.path.join(d, "eval")
            argv = ["--new", tiny, "--new-name", "B", "--old", tiny, "--old-name", "A", "--seeds", "1-2", "--n", "3",
                    "--steps", "2", "--threads", "1", "--logs", logs, "--samples", samples, "--binary", binary]
            with contextlib.redirect_stdout(io.StringIO()) as out:
                self.assertEqual(paired_test.main(argv), 0)
            with open(os.path.join(logs, "pooled_B_vs_A_seeds1-2.json")) as f:
                res = json.load(f)
            self.assertEqual(res["seeds"], [1, 2])
            self.assertEqual(res["molecule_stability"]["molecules"], 6)
            self.assertEqual(res["molecule_stability"]["only_these"] + res["molecule_stability"]["only_other"], 0)
            self.assertEqual(res["agreement"]["same_types"], 6)  # the same weights and seed: the same molecules
            self.assertEqual((res["verdict"], res["metric"]), ("FAIL", "molecule_stability"))
            self.assertIn("4/4: seed 2, new side", out.getvalue())
            with open(os.path.join(logs, "eval_A_3x2_seed2.json")) as f:
                self.assertEqual(json.load(f)["tensor_digest"], tensor_digest(tiny))
            # a rerun samples nothing and pools the same reports again
            stamp = os.path.getmtime(os.path.join(logs, "eval_B_3x2_seed1.json"))
            with contextlib.redirect_stdout(io.StringIO()) as out:
                self.assertEqual(paired_test.main(argv), 0)
            self.assertNotIn("side ->", out.getvalue())
            self.assertEqual(os.path.getmtime(os.path.join(logs, "eval_B_3x2_seed1.json")), stamp)
            with self.assertRaises(SystemExit) as e:
                paired_test.main(argv[:1] + [tiny, "--expect-new-digest", "ffff"] + argv[2:])
            self.assertIn("not the registered ffff", str(e.exception))
            # the same name given to other weights (a grown seed set too) stops before sampling
            other = os.path.join(d, "other.safetensors")
            torch.manual_seed(3)
            self.assertTrue(train.save_weights(other, edm.EnVariationalDiffusion(8, 1), {}))
            with self.assertRaises(SystemExit) as e:
                paired_test.main(["--new", other, *argv[2:9], "1-3", *argv[10:]])
            self.assertIn("eval_B_3x2_seed1.json: sampled from weights with tensor digest", str(e.exception))
            self.assertFalse(os.path.exists(os.path.join(logs, "eval_A_3x2_seed3.json")))

    def test_confirmation_rule_and_runner(self):
        """confirm_test.py: PASS needs more stable molecules than the shipped file on the same seeds, validity of at
        least 80 % and atom stability of at least 95 %, each failing alone; another protocol is refused; a real run
        (the Rust sampler on the tiny golden weights, judged against its own earlier reports) ties on stable
        molecules and so FAILs, and a rerun samples nothing."""
        import confirm_test

        def group(stable, valid=1700, atoms_stable=34000, seeds=(1, 2), steps=1000, asked=2000):
            return {"seeds": list(seeds), "steps": steps,
                    "counts": {"asked": asked, "stable_molecules": stable, "valid": valid, "atoms": 35000,
                               "stable_atoms": atoms_stable},
                    "rates": {"validity": valid / asked, "atom_stability": atoms_stable / 35000}}

        shipped = group(1396)
        self.assertEqual(confirm_test.judge(group(1397), shipped)[0], "PASS")
        for failing, what in ((group(1396), "1396 against 1396 of 2000 molecules stable [not met]"),
                              (group(1500, valid=1599), "validity 80.0 % (at least 80.0) [not met]"),
                              (group(1500, atoms_stable=33249), "atom stability 95.00 % (at least 95) [not met]")):
            verdict, why = confirm_test.judge(failing, shipped)
            self.assertEqual(verdict, "FAIL")
            self.assertIn(what, why)
        self.assertEqual(confirm_test.judge(group(1500, valid=1600), shipped)[0], "PASS")  # 80.0 % exactly
        for other in (group(1500, seeds=(1, 3)), group(1500, steps=100), group(1500, asked=1999)):
            with self.assertRaisesRegex(ValueError, "a confirmation compares the same protocol"):
                confirm_test.judge(other, shipped)

        binary = os.path.join(ROOT, "target", "release", "equivariant")
        if not os.path.exists(binary):
            self.skipTest(f"{binary} not built (cargo build --release)")
        tiny = os.path.join(ROOT, "tests", "fixtures", "golden_tiny.safetensors")
        with tempfile.TemporaryDirectory() as d:
            logs = os.path.join(d, "logs")
            common = ["--n", "3", "--steps", "2", "--threads", "1", "--logs", logs, "--samples",
                      os.path.join(d, "eval"), "--binary", binary]
            import paired_test  # the shipped side's reports, sampled the same way
            with contextlib.redirect_stdout(io.StringIO()):
                paired_test.main(["--new", tiny, "--new-name", "B", "--old", tiny, "--old-name", "A", "--seeds",
                                  "1-2", *common])
            argv = ["--new", tiny, "--new-name", "C", "--shipped-reports",
                    os.path.join(logs, "eval_A_3x2_seed1.json"), os.path.join(logs, "eval_A_3x2_seed2.json"),
                    *common]
            with contextlib.redirect_stdout(io.StringIO()) as out:
                self.assertEqual(confirm_test.main(argv), 0)
            self.assertIn("2/2: seed 2", out.getvalue())
            with open(os.path.join(logs, "pooled_C_3x2_seeds1-2.json")) as f:
                res = json.load(f)
            self.assertEqual(res["counts"]["asked"], 6)
            self.assertEqual(res["counts"]["stable_molecules"], res["shipped"]["counts"]["stable_molecules"])
            self.assertEqual(res["verdict"], "FAIL")
            with contextlib.redirect_stdout(io.StringIO()) as out:
                self.assertEqual(confirm_test.main(argv), 0)
            self.assertNotIn("seed 1 ->", out.getvalue())
            for extra, what in ((["--seeds", "1,3"], "seeds [1, 2], the candidate's [1, 3]"),
                                (["--n", "4"], "molecules 6, the candidate's 8")):
                with self.assertRaises(SystemExit) as e:  # refused before anything is sampled
                    confirm_test.main(argv + extra)
                self.assertIn(what, str(e.exception))
            self.assertFalse(os.path.exists(os.path.join(logs, "eval_C_3x2_seed3.json")))
            self.assertFalse(os.path.exists(os.path.join(logs, "eval_C_4x2_seed1.json")))
            # the candidate's name given to other weights: its reports are not reused
            other = os.path.join(d, "other.safetensors")
            torch.manual_seed(3)
            self.assertTrue(train.save_weights(other, edm.EnVariationalDiffusion(8, 1), {}))
            with self.assertRaises(SystemExit) as e:
                confirm_test.main(["--new", other, *argv[2:]])
            self.assertIn("eval_C_3x2_seed1.json: sampled from weights with tensor digest", str(e.exception))
            # the shipped count comes from one file's reports
            with open(os.path.join(logs, "eval_A_3x2_seed2.json")) as f:
                r = json.load(f)
            r["weights"] = "another.safetensors"
            mixed = os.path.join(d, "mixed_seed2.json")
            with open(mixed, "w") as f:
                json.dump(r, f)
            with self.assertRaises(SystemExit) as e:
                confirm_test.main(["--new", tiny, "--new-name", "C", "--shipped-reports",
                                   os.path.join(logs, "eval_A_3x2_seed1.json"), mixed, *common])
            self.assertIn("they are of 2 weights files", str(e.exception))

    def test_unpaired_reports_pool_their_exact_counts_over_seeds(self):
        """Two seeds' reports (built by evaluate.summarise from real molecules) pool by adding counts: atoms weigh
        by their number, not each seed alike; an older report without `counts` gives the same pool from its rates;
        a seed twice, a mixed step count under --one, or rates that are no whole count are refused by name."""
        import evaluate
        import pool_reports

        ch4 = ("5\nmolecule {} X seed {} steps 100\nC 0 0 0\nH 0.63 0.63 0.63\nH 0.63 -0.63 -0.63\n"
               "H -0.63 0.63 -0.63\nH -0.63 -0.63 0.63\n")
        nh4 = ch4.replace("C 0 0 0", "N 0 0 0")  # N with four H: over-valent, unstable and invalid
        h2o = "3\nmolecule {} X seed {} steps 100\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
        reports = []
        with tempfile.TemporaryDirectory() as d:
            # seed 1: CH4, NH4 (2 of 3 asked: molecule 2 diverged); seed 2: CH4, H2O, CH4 again
            for seed, mols in ((1, [ch4, nh4]), (2, [ch4, h2o, ch4])):
                path = os.path.join(d, f"{seed}.xyz")
                with open(path, "w") as f:
                    f.write("".join(m.format(i, seed) for i, m in enumerate(mols)))
                read = evaluate.read_xyz(path, comments=True)
                reports.append((f"seed{seed}.json", evaluate.summarise(
                    read, evaluate.verdicts(read), 3, train={"[H]C([H])([H])[H]"}, weights="w.safetensors",
                    steps=100, seed=seed)))
        one = reports[0][1]
        self.assertEqual(one["counts"], {"asked": 3, "atoms": 10, "stable_atoms": 9, "stable_molecules": 1,
                                         "valid": 1, "unique": 1, "novel": 0})
        self.assertAlmostEqual(one["molecule_stability"], 1 / 3)
        (g,) = pool_reports.pool(reports)
        self.assertEqual(g["seeds"], [1, 2])
        # CH4 is in the training SMILES, water is not: 1 novel of seed 2's 2 unique, none of seed 1's 1
        self.assertEqual(g["counts"], {"asked": 6, "atoms": 23, "stable_atoms": 22, "stable_molecules": 4,
                                       "valid": 4, "unique": 3, "novel": 1, "novel_of": 3})
        self.assertAlmostEqual(g["rates"]["atom_stability"], 22 / 23)  # not (9/10 + 13/13) / 2
        self.assertFalse(g["derived"])
        lo, hi = g["intervals_95"]["validity"]
        self.assertTrue(lo < 4 / 6 < hi)
        # across seeds CH4 is one molecule: 2 unique of 6 asked (not 3), 1 novel of them (water)
        self.assertEqual(one["smiles"], {"unique": ["[H]C([H])([H])[H]"], "novel": []})
        self.assertEqual(g["across_seeds"], {"unique": 2, "novel": 1, "valid_and_unique": 2 / 6, "novelty": 0.5})
        self.assertEqual(pool_reports.row(g), "| 6 | 100 | 95.7 | 66.7 (30.0-90.3) | 66.7 (30.0-90.3) | 33.3 | "
                                              "50.0 |")
        # the same reports as older files wrote them (rates only, no SMILES) pool to the same counts; uniqueness
        # and novelty are then each seed's own, and the row says so
        old = [(n, {k: v for k, v in r.items() if k not in ("counts", "smiles")}) for n, r in reports]
        (g_old,) = pool_reports.pool(old)
        self.assertTrue(g_old["derived"])
        self.assertEqual(g_old["counts"], g["counts"])
        self.assertIsNone(g_old["across_seeds"])
        self.assertTrue(pool_reports.row(g_old).endswith("| 50.0 (per seed) | 33.3 (per seed) |"))
        # one report without SMILES is enough to fall back for the whole group
        self.assertIsNone(pool_reports.pool([reports[0], old[1]])[0]["across_seeds"])
        with self.assertRaisesRegex(ValueError, "seed1b.json: seed 1 of w.safetensors at 100 steps is already"):
            pool_reports.pool(reports + [("seed1b.json", reports[0][1])])
        elsewhere = dict(reports[1][1], weights="weights/w.safetensors")
        self.assertEqual(len(pool_reports.pool([reports[0], ("b", elsewhere)])), 2)  # by path, unless --one
        self.assertEqual(pool_reports.pool([reports[0], ("b", elsewhere)], one=True)[0]["seeds"], [1, 2])
        with self.assertRaisesRegex(ValueError, "b: 1000 steps, but seed1.json has 100"):
            pool_reports.pool([reports[0], ("b", dict(elsewhere, steps=1000))], one=True)
        broken = dict(old[0][1], molecule_stability=0.4)  # 0.4 x 3 molecules is no count
        with self.assertRaisesRegex(ValueError, "x.json: molecule stability x molecules comes to 1.2000"):
            pool_reports.pool([("x.json", broken)])
        # the half-up rounding of exact counts: 1637 of 2000 is 81.85 %
        self.assertEqual((pool_reports.percent(1637, 2000), pool_reports.percent(2, 3)), ("81.9", "66.7"))
        # the command line: rows and counts, and an unreadable file named
        with tempfile.TemporaryDirectory() as d:
            paths = [os.path.join(d, n) for n, _ in reports]
            for path, (_, r) in zip(paths, reports):
                with open(path, "w") as f:
                    json.dump(r, f)
            out = subprocess.run([sys.executable, os.path.join(ROOT, "training", "pool_reports.py"), *paths],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("| 6 | 100 | 95.7 | 66.7", out.stdout)
            self.assertIn("seeds 1, 2: 22 of 23 atoms stable, 4 of 6 molecules stable, 4 valid, 3 unique, 1 novel "
                          "(each seed's own); across seeds 2 unique, 1 novel", out.stdout)
            with open(paths[0], "w") as f:
                f.write("{")
            out = subprocess.run([sys.executable, os.path.join(ROOT, "training", "pool_reports.py"), *paths],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 1)
            self.assertIn("seed1.json: cannot read it as a JSON report", out.stderr)

    def test_data_reference_writes_test_molecules_as_xyz(self):
        import evaluate

        # three molecules: CH4, H2O, HF; the test split holds the first and the last
        offsets = np.array([0, 5, 8, 10])
        pos = np.arange(30, dtype=np.float32).reshape(10, 3) / 10
        types = np.array([1, 0, 0, 0, 0, 3, 0, 0, 4, 0], dtype=np.uint8)
        with tempfile.TemporaryDirectory() as d:
            npz, xyz = os.path.join(d, "q.npz"), os.path.join(d, "q.xyz")
            np.savez(npz, positions=pos, types=types, offsets=offsets, index=np.array([11, 12, 13]),
                     train=np.array([1]), valid=np.array([], dtype=np.int64), test=np.array([0, 2]))
            # asked for 5, the split holds 2: both are written and the count says so (it is the rates' denominator)
            self.assertEqual(evaluate.write_data_reference(xyz, 5, seed=1, data=npz), 2)
            mols = evaluate.read_xyz(xyz)
            # one molecule: the seeded choice among the test split's two
            first = np.random.default_rng(7).permutation([0, 2])[0]
            evaluate.write_data_reference(xyz, 1, seed=7, data=npz)
            (one,) = evaluate.read_xyz(xyz)
        self.assertEqual(sorted(t for _, t in mols), [[1, 0, 0, 0, 0], [4, 0]])
        for p, t in mols:
            lo = 0 if t[0] == 1 else 8
            np.testing.assert_allclose(p, pos[lo:lo + len(t)], atol=1e-6)
        self.assertEqual(one[1], [[1, 0, 0, 0, 0], None, [4, 0]][first])


if __name__ == "__main__":
    unittest.main()
