//! The command line: bad arguments fail with a clear message; sample -> eval round trip; denoise JSON.
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_equivariant"))
}

fn tiny_weights(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("tiny.safetensors");
    let w = equivariant::weights::Weights::random(16, 2, 3);
    std::fs::write(
        &p,
        w.to_bytes(equivariant::weights::Precision::F32).unwrap(),
    )
    .unwrap();
    p
}

fn fails_with(args: &[&str], needle: &str) {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        err.contains(needle),
        "{args:?}: stderr `{err}` lacks `{needle}`"
    );
}

#[test]
fn bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights(dir.path());
    let w = w.to_str().unwrap();
    let out = dir.path().join("o.xyz");
    let out = out.to_str().unwrap();
    // `sample --weights w` with one bad option, and what the error must say
    for (bad, needle) in [
        (&["--atoms", "0", "--out", out][..], "invalid atom count 0"),
        (&["--atoms", "30", "--out", out], "invalid atom count 30"),
        (&["--steps", "-5", "--out", out], "-5"),
        (&["--steps", "0", "--out", out], "invalid number of steps 0"),
        (&["--out", "x.pdb"], "use a .xyz or .sdf file name"),
    ] {
        let args: Vec<&str> = ["sample", "--weights", w]
            .into_iter()
            .chain(bad.iter().copied())
            .collect();
        fails_with(&args, needle);
    }
    fails_with(
        &[
            "sample",
            "--weights",
            "/nonexistent.safetensors",
            "--out",
            out,
        ],
        "cannot read weights",
    );
    fails_with(&["eval", "/nonexistent.xyz"], "cannot read");
    assert!(
        !std::path::Path::new(out).exists(),
        "a failed run left an output file"
    );
}

#[test]
fn sample_writes_files_that_eval_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights(dir.path());
    let xyz = dir.path().join("s.xyz");
    let st = bin()
        .args([
            "sample",
            "--n",
            "3",
            "--steps",
            "5",
            "--atoms",
            "7",
            "--seed",
            "2",
            "--weights",
        ])
        .arg(&w)
        .arg("--out")
        .arg(&xyz)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&xyz).unwrap();
    let mols = equivariant::export::parse_xyz(&text).unwrap();
    assert_eq!(mols.len(), 3);
    assert!(mols.iter().all(|m| m.types.len() == 7));
    let out = bin().args(["eval", "--json"]).arg(&xyz).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["molecules"], 3);
    assert_eq!(v["atoms"], 21);
    let sdf = dir.path().join("s.sdf");
    let st = bin()
        .args(["sample", "--n", "2", "--steps", "3", "--weights"])
        .arg(&w)
        .arg("--out")
        .arg(&sdf)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&sdf).unwrap();
    assert_eq!(text.matches("$$$$").count(), 2);
    assert_eq!(text.matches("V2000").count(), 2);
    assert_eq!(text.matches("M  END").count(), 2);
}

/// `--jobs` samples batches on several threads; molecule k must not depend on it (nor on --threads).
#[test]
fn parallel_batches_give_the_same_molecules() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights(dir.path());
    let run = |global: &[&str], jobs: &str, name: &str| {
        let out = dir.path().join(name);
        let st = bin()
            .args(global)
            .args([
                "sample", "--n", "7", "--batch", "2", "--steps", "6", "--seed", "4",
            ])
            .args(["--jobs", jobs, "--weights"])
            .arg(&w)
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "{global:?} --jobs {jobs}");
        std::fs::read_to_string(&out).unwrap()
    };
    let serial = run(&["--threads", "1"], "1", "a.xyz");
    let mols = equivariant::export::parse_xyz(&serial).unwrap();
    assert_eq!(mols.len(), 7, "7 molecules in 4 batches");
    assert_eq!(
        serial,
        run(&["--threads", "2"], "1", "b.xyz"),
        "2 matmul threads"
    );
    assert_eq!(serial, run(&[], "3", "c.xyz"), "--jobs 3");
    assert_eq!(
        serial,
        run(&[], "16", "d.xyz"),
        "--jobs above the batch count"
    );
}

/// `convert --f16` on our own safetensors: same configuration and provenance (also entries the crate does not
/// read), every value rounded to float16, about half the bytes.
#[test]
fn convert_restores_safetensors_as_f16() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = equivariant::weights::Weights::random(64, 2, 3);
    w.config.provenance = serde_json::json!({"epochs": 1.5});
    w.config
        .extra
        .insert("attention".into(), serde_json::json!(true));
    let src = dir.path().join("w.safetensors");
    let f32_bytes = w.to_bytes(equivariant::weights::Precision::F32).unwrap();
    std::fs::write(&src, &f32_bytes).unwrap();
    let dst = dir.path().join("w16.safetensors");
    let st = bin()
        .arg("convert")
        .arg(&src)
        .arg(&dst)
        .arg("--f16")
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&dst).unwrap();
    assert!(
        bytes.len() < f32_bytes.len() * 6 / 10,
        "{} bytes",
        bytes.len()
    );
    let h = equivariant::weights::Weights::from_bytes(&bytes).unwrap();
    assert_eq!(h.config, w.config);
    for (name, t) in &w.tensors {
        let u = h.get(name);
        assert_eq!(u.shape, t.shape, "{name}");
        for (a, b) in t.data.iter().zip(&u.data) {
            assert!(
                (a - b).abs() <= 1e-3 * a.abs().max(1e-3),
                "{name}: {a} -> {b}"
            );
        }
    }
}

#[test]
fn denoise_json_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights(dir.path());
    let z: Vec<Vec<f32>> = (0..4)
        .map(|i| {
            let f = i as f32;
            vec![
                f * 0.7 - 1.0,
                (f * 1.3).sin(),
                0.2 * f,
                0.25,
                0.0,
                0.0,
                0.0,
                0.0,
                0.1,
            ]
        })
        .collect();
    let input = dir.path().join("in.json");
    std::fs::write(
        &input,
        serde_json::json!({"molecules": [{"t": 0.4, "z": z}]}).to_string(),
    )
    .unwrap();
    let denoise = |input: &std::path::Path| {
        bin()
            .args(["denoise", "--weights"])
            .arg(&w)
            .arg("--input")
            .arg(input)
            .output()
            .unwrap()
    };
    let out = denoise(&input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let eps = v["molecules"][0]["eps"].as_array().unwrap();
    assert_eq!(eps.len(), 4);
    assert_eq!(eps[0].as_array().unwrap().len(), 9);
    std::fs::write(&input, r#"{"molecules": [{"t": 0.4, "z": [[1, 2, 3]]}]}"#).unwrap();
    let out = denoise(&input);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a row of z has 9 numbers"));
}
