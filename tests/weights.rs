//! The weights loader and the converter on good and bad input.
use equivariant::weights::{expected_tensors, Precision, Weights};
use equivariant::Error;

fn bytes() -> Vec<u8> {
    Weights::random(8, 2, 1).to_bytes(Precision::F32).unwrap()
}

/// Rebuilds a safetensors file from (name, dtype, shape, bytes) entries, with the given metadata.
fn build(
    entries: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    meta: Option<String>,
) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = entries
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = meta.map(|m| std::collections::HashMap::from([("equivariant".to_string(), m)]));
    safetensors::serialize(views, meta).unwrap()
}

fn entries(w: &Weights) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    w.tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                safetensors::Dtype::F32,
                t.shape.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect()
}

fn meta(w: &Weights) -> Option<String> {
    Some(serde_json::to_string(&w.config).unwrap())
}

#[test]
fn round_trip_f32_and_f16() {
    let w = Weights::random(8, 2, 1);
    let back = Weights::from_bytes(&w.to_bytes(Precision::F32).unwrap()).unwrap();
    assert_eq!(back.tensors, w.tensors);
    assert_eq!(back.config, w.config);
    assert_eq!(back.tensors.len(), expected_tensors(8, 2).len());
    let half = Weights::from_bytes(&w.to_bytes(Precision::F16).unwrap()).unwrap();
    let a = &w.get("dynamics.egnn.embedding.weight").data;
    let b = &half.get("dynamics.egnn.embedding.weight").data;
    assert!(a
        .iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= 1e-3 * x.abs().max(1e-3)));
    assert_eq!(half.get("gamma.gamma"), w.get("gamma.gamma"), "γ stays f32");
}

#[test]
fn released_model_has_edm_parameter_count() {
    let names = expected_tensors(256, 9);
    assert_eq!(names.len(), 141);
    let params: usize = names
        .iter()
        .filter(|(n, _)| n.starts_with("dynamics."))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(params, 5_339_920);
}

#[test]
fn truncated_file() {
    let b = bytes();
    for cut in [0, 7, 100, b.len() / 2, b.len() - 1] {
        let err = Weights::from_bytes(&b[..cut]).unwrap_err().to_string();
        assert!(
            err.contains("not a readable safetensors file"),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn missing_tensor_is_named() {
    let w = Weights::random(8, 2, 1);
    let mut e = entries(&w);
    e.retain(|(n, ..)| n != "dynamics.egnn.e_block_1.gcl_0.node_mlp.2.bias");
    match Weights::from_bytes(&build(e, meta(&w))) {
        Err(Error::MissingTensor(n)) => {
            assert_eq!(n, "dynamics.egnn.e_block_1.gcl_0.node_mlp.2.bias")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_shape_is_named() {
    let w = Weights::random(8, 2, 1);
    let mut e = entries(&w);
    for (n, _, s, b) in e.iter_mut() {
        if n == "dynamics.egnn.e_block_0.gcl_0.edge_mlp.2.weight" {
            *s = vec![4, 16];
            b.truncate(4 * 64);
        }
    }
    let err = Weights::from_bytes(&build(e, meta(&w)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dynamics.egnn.e_block_0.gcl_0.edge_mlp.2.weight")
            && err.contains("shape [4, 16]"),
        "{err}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let w = Weights::random(8, 2, 1);
    let mut e = entries(&w);
    for (n, d, _, _) in e.iter_mut() {
        if n == "dynamics.egnn.embedding.bias" {
            *d = safetensors::Dtype::I32;
        }
    }
    let err = Weights::from_bytes(&build(e, meta(&w)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dynamics.egnn.embedding.bias") && err.contains("I32"),
        "{err}"
    );
}

#[test]
fn nan_is_named() {
    let w = Weights::random(8, 2, 1);
    let mut e = entries(&w);
    for (n, _, _, b) in e.iter_mut() {
        if n == "dynamics.egnn.e_block_1.gcl_equiv.coord_mlp.2.weight" {
            b[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    }
    let err = Weights::from_bytes(&build(e, meta(&w)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dynamics.egnn.e_block_1.gcl_equiv.coord_mlp.2.weight")
            && err.contains("non-finite")
            && err.contains("index 3"),
        "{err}"
    );
}

#[test]
fn unexpected_tensor_and_bad_metadata() {
    let w = Weights::random(8, 2, 1);
    let mut e = entries(&w);
    e.push((
        "dynamics.egnn.e_block_7.gcl_0.edge_mlp.0.weight".into(),
        safetensors::Dtype::F32,
        vec![1],
        vec![0; 4],
    ));
    let err = Weights::from_bytes(&build(e, meta(&w)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unexpected tensor `dynamics.egnn.e_block_7"),
        "{err}"
    );
    let err = Weights::from_bytes(&build(entries(&w), Some("{not json".into())))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata entry `equivariant` is not valid"),
        "{err}"
    );
    // metadata claiming another width than the tensors have
    let mut cfg = w.config.clone();
    cfg.nf = 16;
    let err = Weights::from_bytes(&build(
        entries(&w),
        Some(serde_json::to_string(&cfg).unwrap()),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("expected [16, 7] for a 2x16 model"), "{err}");
}

#[test]
fn no_metadata_infers_the_architecture() {
    let w = Weights::random(8, 3, 2);
    let back = Weights::from_bytes(&build(entries(&w), None)).unwrap();
    assert_eq!((back.config.nf, back.config.n_layers), (8, 3));
}

#[test]
fn wrong_gamma_table_is_rejected() {
    let w = Weights::random(8, 2, 1);
    let mut e = entries(&w);
    for (n, _, _, b) in e.iter_mut() {
        if n == "gamma.gamma" {
            b[400..404].copy_from_slice(&1.0f32.to_le_bytes());
        }
    }
    let err = Weights::from_bytes(&build(e, meta(&w)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gamma.gamma") && err.contains("entry 100"),
        "{err}"
    );
}

#[test]
fn converter_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let not_zip = dir.path().join("x.npy");
    std::fs::write(&not_zip, b"definitely not a torch checkpoint").unwrap();
    let err = equivariant::convert::read_torch_checkpoint(&not_zip)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a readable torch.save checkpoint"),
        "{err}"
    );
    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny_edm_checkpoint.npy");
    let bytes = std::fs::read(good).unwrap();
    let truncated = dir.path().join("t.npy");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(equivariant::convert::read_torch_checkpoint(&truncated).is_err());
    let missing = dir.path().join("missing.npy");
    assert!(equivariant::convert::read_torch_checkpoint(&missing).is_err());
}
