//! The sampler: determinism, equivariance of whole chains, bad input.
mod common;

use common::*;
use equivariant::egnn::Egnn;
use equivariant::sampler::{AtomCounts, Sampler, Transform};
use equivariant::weights::Weights;
use equivariant::Error;

fn model() -> Egnn {
    let mut w = Weights::random(32, 2, 5);
    for (name, t) in w.tensors.iter_mut() {
        if name.ends_with("coord_mlp.4.weight") {
            t.data.iter_mut().for_each(|v| *v *= 100.0);
        }
    }
    Egnn::new(&w).unwrap()
}

#[test]
fn same_seed_same_molecules_other_seed_others() {
    let run = |seed| {
        Sampler::new(model(), config(AtomCounts::Histogram, 3, 20, seed))
            .unwrap()
            .run()
            .unwrap()
    };
    let (a, b, c) = (run(4), run(4), run(5));
    assert_eq!(a, b);
    assert_ne!(a[0].positions, c[0].positions);
    assert!(a
        .iter()
        .all(|m| !m.failed && m.positions.iter().all(|v| v.is_finite())));
    assert!(a.iter().all(|m| m.types.len() >= 3 && m.types.len() <= 29));
}

#[test]
fn frames_count_down_and_end_with_the_molecules() {
    let mut s = Sampler::new(
        model(),
        config(AtomCounts::PerMolecule(vec![4, 9]), 2, 10, 1),
    )
    .unwrap();
    assert_eq!(s.total_steps(), 11);
    assert_eq!(s.frame().t, 1000);
    assert_eq!(s.frame().molecules[1].positions.len(), 27);
    let mut ts = vec![];
    while !s.is_finished() {
        let f = s.step().unwrap();
        ts.push(f.t);
    }
    assert_eq!(ts, vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0, 0]);
    assert!(s.frame().finished);
    assert!(matches!(s.step(), Err(Error::Finished)));
    let mols = s.molecules().unwrap();
    assert_eq!(mols[0].types.len(), 4);
    assert_eq!(s.frame().molecules[1].positions, mols[1].positions);
}

#[test]
fn sampling_is_equivariant_for_every_frame() {
    // right chain = g · left chain, g = reflection-rotation, translation and permutation, over 50 steps
    let n = 11;
    let g = one_molecule_transform(21, 8, n);
    let perm = &g.permutations[0];
    let mut left = Sampler::new(model(), config(AtomCounts::Fixed(n), 1, 50, 9)).unwrap();
    let mut cfg = config(AtomCounts::Fixed(n), 1, 50, 9);
    cfg.transform = Some(g.clone());
    let mut right = Sampler::new(model(), cfg).unwrap();
    let mut worst = 0.0f32;
    for step in 0..=50 {
        let (fl, fr) = (left.frame(), right.frame());
        let (pl, pr) = (&fl.molecules[0].positions, &fr.molecules[0].positions);
        let want = apply_to_positions(&g, pl);
        let d = max_abs_diff(pr, &want);
        worst = worst.max(d);
        // Random weights do not denoise, so the chain drifts to positions of 1000s of Å where f32 has 1e-4 Å
        // steps: allow 1e-3 Å plus ~30 ulp of the coordinate scale (the absolute term rules at molecular scale).
        let scale = pl.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(
            d < 1e-3 + 2e-6 * scale,
            "frame {step}: deviation {d} Å (positions up to {scale} Å)"
        );
        let tl: Vec<u8> = perm.iter().map(|&p| fl.molecules[0].types[p]).collect();
        assert_eq!(
            fr.molecules[0].types, tl,
            "frame {step}: atom types must permute"
        );
        left.step().unwrap();
        right.step().unwrap();
    }
    assert!(
        worst > 0.0,
        "the two chains are bitwise identical, the transform was not applied"
    );
}

#[test]
fn bad_configuration_is_rejected() {
    let e = |c| Sampler::new(model(), c).err().unwrap().to_string();
    assert!(e(config(AtomCounts::Fixed(0), 1, 10, 1)).contains("invalid atom count 0"));
    assert!(e(config(AtomCounts::Fixed(30), 1, 10, 1)).contains("invalid atom count 30"));
    assert!(e(config(AtomCounts::Fixed(5), 1, 0, 1)).contains("invalid number of steps 0"));
    assert!(e(config(AtomCounts::Fixed(5), 1, 1001, 1)).contains("invalid number of steps 1001"));
    assert!(
        e(config(AtomCounts::PerMolecule(vec![3]), 2, 10, 1)).contains("1 atom counts given for 2")
    );
    let mut c = config(AtomCounts::Fixed(3), 1, 10, 1);
    c.transform = Some(Transform {
        rotation: [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]],
        ..Default::default()
    });
    assert!(e(c).contains("not orthogonal"));
    let mut c = config(AtomCounts::Fixed(3), 1, 10, 1);
    c.transform = Some(Transform {
        permutations: vec![vec![0, 0, 1]],
        ..Default::default()
    });
    assert!(e(c).contains("not a permutation"));
}

#[test]
fn set_state_checks_its_input() {
    let mut s = Sampler::new(model(), config(AtomCounts::Fixed(3), 1, 10, 1)).unwrap();
    assert!(s.set_state(0, vec![0.0; 26]).is_err());
    assert!(s.set_state(0, vec![f32::NAN; 27]).is_err());
    let mut z = vec![0.5f32; 27];
    z[0] = 3.0;
    s.set_state(0, z).unwrap();
    let mean: f32 = (0..3).map(|i| s.state()[0][i * 9]).sum::<f32>() / 3.0;
    assert!(mean.abs() < 1e-6, "state is re-centred");
}

#[test]
fn shipped_weights_chain_is_equivariant_to_a_thousandth_of_an_angstrom() {
    // The trained model keeps chains at molecular scale, so the plain 1e-3 Å bound of the issue applies.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/edm_qm9_9x128.safetensors");
    let w = Weights::from_bytes(&std::fs::read(path).unwrap()).unwrap();
    let n = 12;
    let g = Transform {
        rotation: random_orthogonal(5, false),
        translation: [0.0; 3],
        permutations: vec![permutation(3, n)],
    };
    let mut cfg = config(AtomCounts::Fixed(n), 1, 50, 17);
    let mut left = Sampler::new(Egnn::new(&w).unwrap(), cfg.clone()).unwrap();
    cfg.transform = Some(g.clone());
    let mut right = Sampler::new(Egnn::new(&w).unwrap(), cfg).unwrap();
    while !left.is_finished() {
        let (fl, fr) = (left.step().unwrap(), right.step().unwrap());
        let (pl, pr) = (&fl.molecules[0].positions, &fr.molecules[0].positions);
        let want = apply_to_positions(&g, pl);
        let d = max_abs_diff(pr, &want);
        let scale = pl.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(
            d < 1e-3,
            "step {}: deviation {d} Å (positions up to {scale} Å)",
            fl.step
        );
    }
}
