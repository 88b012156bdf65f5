//! Parity with the PyTorch model of training/edm.py: the golden fixture was computed there (float64).
mod common;

use common::assert_close;
use equivariant::egnn::Egnn;
use equivariant::weights::Weights;

#[derive(serde::Deserialize)]
struct Mol {
    t: f32,
    z: Vec<Vec<f32>>,
    eps: Vec<Vec<f32>>,
}
#[derive(serde::Deserialize)]
struct Golden {
    molecules: Vec<Mol>,
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check(egnn: &Egnn) {
    let g: Golden =
        serde_json::from_str(&std::fs::read_to_string(fixture("golden_tiny.json")).unwrap())
            .unwrap();
    assert!(g.molecules.len() >= 4);
    for (k, m) in g.molecules.iter().enumerate() {
        let n = m.z.len();
        let z: Vec<f32> = m.z.iter().flatten().copied().collect();
        let want: Vec<f32> = m.eps.iter().flatten().copied().collect();
        let got = egnn.eps(n, &z, &[m.t]).unwrap();
        assert_close(
            &got,
            &want,
            1e-5,
            1e-5,
            &format!("golden molecule {k} ({n} atoms, t {})", m.t),
        );
    }
}

#[test]
fn rust_egnn_matches_pytorch_model() {
    let w =
        Weights::from_bytes(&std::fs::read(fixture("golden_tiny.safetensors")).unwrap()).unwrap();
    assert_eq!((w.config.nf, w.config.n_layers), (16, 2));
    check(&Egnn::new(&w).unwrap());
}

#[test]
fn converted_torch_checkpoint_matches_pytorch_model() {
    let w =
        equivariant::convert::read_torch_checkpoint(&fixture("tiny_edm_checkpoint.npy")).unwrap();
    assert_eq!((w.config.nf, w.config.n_layers), (16, 2));
    check(&Egnn::new(&w).unwrap());
}
