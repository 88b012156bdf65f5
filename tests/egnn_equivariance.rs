//! E(3) × S_n equivariance of the denoiser: rotating/reflecting/translating/permuting the input transforms ε̂.
mod common;

use common::*;
use equivariant::egnn::Egnn;
use equivariant::weights::Weights;

/// A random diffusion state of n atoms (positions spread like a molecule at moderate noise).
fn state(seed: u64, n: usize) -> Vec<f32> {
    let v = normals(seed, n * 9);
    let mut z: Vec<f32> = v.iter().map(|x| x * 1.3).collect();
    for c in 0..3 {
        let mean = (0..n).map(|i| z[i * 9 + c]).sum::<f32>() / n as f32;
        (0..n).for_each(|i| z[i * 9 + c] -= mean);
    }
    z
}

/// Model with larger coordinate weights than EDM's init so the coordinate path is exercised.
fn model(nf: usize, layers: usize) -> Egnn {
    let mut w = Weights::random(nf, layers, 11);
    for (name, t) in w.tensors.iter_mut() {
        if name.ends_with("coord_mlp.4.weight") {
            t.data.iter_mut().for_each(|v| *v *= 30.0);
        }
    }
    Egnn::new(&w).unwrap()
}

#[test]
fn rotations_reflections_translations_and_permutations() {
    let egnn = model(32, 3);
    for (case, &n) in [2usize, 5, 13, 29].iter().enumerate() {
        let z = state(100 + case as u64, n);
        let t = [0.37f32];
        let eps = |z: &[f32]| egnn.eps(n, z, &t).unwrap();
        assert_eps_equivariant(n, &z, 7 + case as u64, [3.0, -1.5, 0.25], eps);
    }
}

#[test]
fn output_is_mean_free_and_depends_on_input() {
    let egnn = model(16, 2);
    let n = 7;
    let z = state(3, n);
    let a = egnn.eps(n, &z, &[0.5]).unwrap();
    for c in 0..3 {
        let s: f32 = (0..n).map(|i| a[i * 9 + c]).sum();
        assert!(s.abs() < 1e-5, "ε̂_x has mean {s} in channel {c}");
    }
    let b = egnn.eps(n, &z, &[0.9]).unwrap();
    assert!(max_abs_diff(&a, &b) > 1e-3, "time input has no effect");
    assert!(
        a[..3].iter().any(|v| v.abs() > 1e-4),
        "coordinate output is zero"
    );
}

#[test]
fn batching_molecules_changes_nothing() {
    let egnn = model(16, 2);
    let n = 6;
    let (z1, z2) = (state(1, n), state(2, n));
    let both: Vec<f32> = z1.iter().chain(&z2).copied().collect();
    let e = egnn.eps(n, &both, &[0.2, 0.8]).unwrap();
    let e1 = egnn.eps(n, &z1, &[0.2]).unwrap();
    let e2 = egnn.eps(n, &z2, &[0.8]).unwrap();
    assert_close(&e[..n * 9], &e1, 1e-6, 1e-5, "first molecule");
    assert_close(&e[n * 9..], &e2, 1e-6, 1e-5, "second molecule");
}

#[test]
fn single_atom_has_no_coordinate_output() {
    let egnn = model(16, 2);
    let z = state(9, 1);
    let e = egnn.eps(1, &z, &[0.5]).unwrap();
    assert_eq!(&e[..3], &[0.0, 0.0, 0.0]);
    assert!(e[3..].iter().all(|v| v.is_finite()));
}

#[test]
fn wrong_input_size_is_an_error() {
    let egnn = model(16, 2);
    let err = egnn.eps(5, &[0.0; 44], &[0.5]).unwrap_err().to_string();
    assert!(err.contains("expected 1 molecules x 5 atoms x 9"), "{err}");
}
