//! The GPU backend against the CPU path: WGSL validated by naga (no adapter needed), then on the machine's
//! adapter (lavapipe in CI; these tests fail, not skip, when none is found): ε̂ for random weights, equivariance,
//! whole chains from the same seed, transforms, and the errors a caller must be able to act on.
mod common;

use std::rc::Rc;

use common::*;
use equivariant::egnn::Egnn;
use equivariant::gpu::shaders::{edge_tile, Sources};
use equivariant::gpu::{GpuContext, GpuEgnn, GpuModel, GpuSampler};
use equivariant::sampler::{AtomCounts, Denoiser, Sampler};
use equivariant::weights::Weights;
use equivariant::Error;

/// WebGPU's default maxComputeWorkgroupStorageSize.
const WORKGROUP_BYTES: u32 = 16384;

#[test]
fn every_shader_variant_validates_with_naga_within_webgpu_limits() {
    for nf in [8usize, 16, 32, 64, 128, 256] {
        let src = Sources::new(nf).unwrap();
        for (name, wgsl) in src.all() {
            let module = naga::front::wgsl::parse_str(wgsl)
                .unwrap_or_else(|e| panic!("nf {nf} {name}: {}", e.emit_to_string(wgsl)));
            let mut v = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            );
            v.validate(&module)
                .unwrap_or_else(|e| panic!("nf {nf} {name}: {e:?}"));
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let shared: u32 = module
                .global_variables
                .iter()
                .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
                .map(|(_, g)| layouter[g.ty].size)
                .sum();
            assert!(
                shared <= WORKGROUP_BYTES,
                "nf {nf} {name}: {shared} bytes of workgroup memory"
            );
            for ep in &module.entry_points {
                let threads: u32 = ep.workgroup_size.iter().product();
                assert!(threads <= 256, "nf {nf} {name}: {threads} invocations");
            }
        }
        assert!(edge_tile(nf) <= nf && edge_tile(nf) >= 1);
    }
}

#[test]
fn unsupported_width_is_a_clear_error() {
    let err = Sources::new(48).unwrap_err().to_string();
    assert!(err.contains("power of two") && err.contains("48"), "{err}");
}

fn context() -> Rc<GpuContext> {
    Rc::new(GpuContext::new().unwrap_or_else(|e| {
        panic!(
            "these tests need a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers): {e}"
        )
    }))
}

/// Random weights with a coordinate head large enough that the coordinate path matters. Deep models get a
/// smaller boost: random deep blocks are chaotic. Measured on the CPU (nf 64, 9 blocks, n 29): at 30x atoms fly
/// ~10⁴ Å apart and a 1e-6 change of the input moves ε̂ by 8e-3; at 10x most molecules are fine but one of 16
/// still moves by 2.5e-3 (|ε̂| up to 52). No two float summation orders can agree to 1e-4 there, so 3x.
fn weights(nf: usize, layers: usize, seed: u64) -> Weights {
    let boost = if layers <= 4 { 30.0 } else { 3.0 };
    let mut w = Weights::random(nf, layers, seed);
    for (name, t) in w.tensors.iter_mut() {
        if name.ends_with("coord_mlp.4.weight") {
            t.data.iter_mut().for_each(|v| *v *= boost);
        }
    }
    w
}

fn shipped() -> Weights {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/edm_qm9_9x128.safetensors");
    Weights::from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

/// B random diffusion states of n atoms (x mean-free), like a molecule at moderate noise.
fn states(seed: u64, b: usize, n: usize) -> Vec<f32> {
    let mut z: Vec<f32> = normals(seed, b * n * 9).iter().map(|x| x * 1.3).collect();
    for m in 0..b {
        for c in 0..3 {
            let mean = (0..n).map(|i| z[(m * n + i) * 9 + c]).sum::<f32>() / n as f32;
            (0..n).for_each(|i| z[(m * n + i) * 9 + c] -= mean);
        }
    }
    z
}

fn compare(ctx: &Rc<GpuContext>, nf: usize, layers: usize, cases: &[(usize, usize)]) {
    let w = weights(nf, layers, 40 + layers as u64);
    let cpu = Egnn::new(&w).unwrap();
    let mut gpu = GpuEgnn::new(Rc::new(GpuModel::new(ctx.clone(), &w).unwrap()));
    for &(b, n) in cases {
        let z = states((nf * 1000 + layers * 100 + b * 30 + n) as u64, b, n);
        let t: Vec<f32> = (0..b).map(|m| 0.1 + 0.8 * m as f32 / b as f32).collect();
        let want = cpu.eps(n, &z, &t).unwrap();
        let got = gpu.eps(n, &z, &t).unwrap();
        assert_close(
            &got,
            &want,
            1e-4,
            1e-4,
            &format!("nf {nf} layers {layers} B {b} n {n}"),
        );
    }
}

#[test]
fn gpu_eps_matches_cpu_for_random_weights() {
    let ctx = context();
    let all: Vec<(usize, usize)> = [1usize, 3, 16]
        .iter()
        .flat_map(|&b| [1usize, 2, 7, 19, 29].map(|n| (b, n)))
        .collect();
    for layers in [1, 4, 9] {
        compare(&ctx, 64, layers, &all);
    }
    let small: Vec<(usize, usize)> = all.iter().copied().filter(|&(b, _)| b < 16).collect();
    compare(&ctx, 256, 1, &small);
    compare(&ctx, 256, 9, &[(1, 1), (3, 7), (16, 19), (3, 29)]);
}

#[test]
fn gpu_eps_is_equivariant() {
    let ctx = context();
    let w = weights(64, 3, 9);
    let mut gpu = GpuEgnn::new(Rc::new(GpuModel::new(ctx, &w).unwrap()));
    for (case, &n) in [2usize, 13, 29].iter().enumerate() {
        let z = states(300 + case as u64, 1, n);
        let t = [0.42f32];
        let eps = |z: &[f32]| gpu.eps(n, z, &t).unwrap();
        assert_eps_equivariant(n, &z, 17 + case as u64, [-2.0, 0.5, 4.0], eps);
    }
}

fn positions(frame: &equivariant::sampler::Frame) -> Vec<f32> {
    frame
        .molecules
        .iter()
        .flat_map(|m| m.positions.iter().copied())
        .collect()
}

#[test]
fn fifty_step_chain_on_gpu_follows_the_cpu_chain() {
    let ctx = context();
    let w = shipped();
    let model = Rc::new(GpuModel::new(ctx, &w).unwrap());
    // mixed sizes in one batch: the GPU lays them out ragged, the CPU groups them by size
    let cfg = config(AtomCounts::PerMolecule(vec![9, 19, 12]), 3, 50, 2024);
    let mut cpu = Sampler::new(Egnn::new(&w).unwrap(), cfg.clone()).unwrap();
    let mut gpu = GpuSampler::new(model, cfg).unwrap();
    assert_eq!(gpu.total_steps(), 51);
    let mut worst = 0.0f32;
    for k in 0..50 {
        let c = cpu.step().unwrap();
        let g = gpu.step_blocking(1).unwrap();
        assert_eq!((c.step, c.t), (g.step, g.t), "step {k}");
        let d = max_abs_diff(&positions(&g), &positions(&c));
        worst = worst.max(d);
        assert!(
            d < 1e-3,
            "step {k} (t = {}): GPU and CPU chains differ by {d} Å",
            c.t
        );
    }
    let c = cpu.step().unwrap();
    let g = gpu.step_blocking(1).unwrap();
    assert!(c.finished && g.finished);
    let d = max_abs_diff(&positions(&g), &positions(&c));
    assert!(d < 1e-3, "final molecules differ by {d} Å");
    let (cm, gm) = (cpu.molecules().unwrap(), gpu.molecules().unwrap());
    for (a, b) in cm.iter().zip(gm) {
        assert_eq!(a.types, b.types);
        assert!(!a.failed && !b.failed);
    }
    eprintln!("largest GPU-CPU deviation over the chain: {worst:.2e} Å");
}

#[test]
fn gpu_chain_of_a_transformed_input_is_the_transformed_chain() {
    let ctx = context();
    let w = shipped();
    let model = Rc::new(GpuModel::new(ctx, &w).unwrap());
    let n = 11;
    let g = one_molecule_transform(5, 8, n);
    let mut a = GpuSampler::new(model.clone(), config(AtomCounts::Fixed(n), 1, 30, 77)).unwrap();
    let mut cfg = config(AtomCounts::Fixed(n), 1, 30, 77);
    cfg.transform = Some(g.clone());
    let mut b = GpuSampler::new(model, cfg).unwrap();
    for k in 0..6 {
        let fa = a.step_blocking(5).unwrap();
        let fb = b.step_blocking(5).unwrap();
        let want = apply_to_positions(&g, &fa.molecules[0].positions);
        let d = max_abs_diff(&fb.molecules[0].positions, &want);
        assert!(
            d < 1e-3,
            "after {} steps: g·chain and chain(g·z) differ by {d} Å",
            5 * (k + 1)
        );
    }
}

#[test]
fn set_state_and_frames_round_trip_through_the_device() {
    let ctx = context();
    let w = weights(16, 2, 3);
    let model = Rc::new(GpuModel::new(ctx, &w).unwrap());
    let mut s =
        GpuSampler::new(model, config(AtomCounts::PerMolecule(vec![4, 6]), 2, 20, 5)).unwrap();
    s.step_blocking(3).unwrap();
    let state = s.state_blocking().unwrap();
    assert_eq!(state[1].len(), 54);
    let mut replaced = state[0].clone();
    replaced[3] += 0.5;
    s.set_state_blocking(0, replaced.clone()).unwrap();
    let back = s.state_blocking().unwrap();
    // set_state re-centres x, which may move the last bit
    assert_close(&back[0], &replaced, 1e-5, 0.0, "molecule 0 after set_state");
    assert_eq!(back[1], state[1]);
    assert!(matches!(
        s.set_state_blocking(0, vec![0.0; 5]),
        Err(Error::Input(_))
    ));
    assert!(matches!(
        s.set_state_blocking(1, vec![f32::NAN; 54]),
        Err(Error::NonFinite(_))
    ));
    let mols = s.run_blocking().unwrap();
    assert_eq!(mols.len(), 2);
    assert!(s.is_finished());
    assert!(matches!(pollster_block(&mut s), Err(Error::Finished)));
}

fn pollster_block(s: &mut GpuSampler) -> equivariant::Result<equivariant::sampler::Frame> {
    s.step_blocking(1)
}

#[test]
fn a_lost_device_is_an_error_not_a_crash() {
    let ctx = context();
    let w = weights(16, 1, 4);
    let model = Rc::new(GpuModel::new(ctx.clone(), &w).unwrap());
    let mut s = GpuSampler::new(model, config(AtomCounts::Fixed(5), 1, 10, 1)).unwrap();
    s.step_blocking(2).unwrap();
    ctx.simulate_loss();
    let err = s.step_blocking(2).unwrap_err();
    assert!(matches!(err, Error::GpuLost(_)), "{err}");
    assert!(err.to_string().contains("lost"), "{err}");
    // the name the browser bindings give it, on which the page's worker decides to move to the CPU
    assert_eq!(err.kind(), "GpuLostError");
}

#[test]
fn a_failed_gpu_call_is_an_error_on_one_line_not_a_loss() {
    let ctx = context();
    let w = weights(16, 1, 4);
    let model = Rc::new(GpuModel::new(ctx.clone(), &w).unwrap());
    let mut s = GpuSampler::new(model, config(AtomCounts::Fixed(5), 1, 10, 1)).unwrap();
    s.step_blocking(2).unwrap();
    ctx.simulate_error();
    let err = s.step_blocking(2).unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("simulated failure"),
        "names the refused call: {msg}"
    );
    assert!(
        !msg.contains('\n'),
        "one line for the page's label: {msg:?}"
    );
    assert_eq!(err.kind(), "GpuError");
    // the first fault stays: every later call reports it rather than computing on
    assert!(matches!(s.step_blocking(1).unwrap_err(), Error::Gpu(_)));
}
