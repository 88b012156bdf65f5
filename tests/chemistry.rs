//! Bond orders and stability on hand-made molecules (spec §4).
use equivariant::chemistry::{bond_order, bonds, formula, stability};
use equivariant::qm9::N_NODES_HISTOGRAM;

const H: u8 = 0;
const C: u8 = 1;
const N: u8 = 2;
const O: u8 = 3;

/// Methane: C at the origin, four H on a tetrahedron at 1.09 Å.
fn methane(ch: f32) -> (Vec<f32>, Vec<u8>) {
    let k = ch / 3f32.sqrt();
    let pos = vec![0.0, 0.0, 0.0, k, k, k, k, -k, -k, -k, k, -k, -k, -k, k];
    (pos, vec![C, H, H, H, H])
}

#[test]
fn methane_is_stable() {
    let (pos, types) = methane(1.09);
    let s = stability(&pos, &types);
    assert_eq!(s.valence, vec![4, 1, 1, 1, 1]);
    assert!(s.molecule_stable());
    assert_eq!(formula(&types), "CH4");
}

#[test]
fn stretched_c_h_bond_is_unstable() {
    let (mut pos, types) = methane(1.09);
    for c in 0..3 {
        pos[3 + c] *= 1.25 / 1.09; // first H at 1.25 Å: beyond 1.19 Å
    }
    let s = stability(&pos, &types);
    assert_eq!(s.valence[0], 3);
    assert!(!s.atom_stable[0] && !s.atom_stable[1]);
    assert!(!s.molecule_stable());
    assert_eq!(s.stable_atoms(), 3);
}

#[test]
fn double_and_triple_bonds() {
    assert_eq!(bond_order(C, C, 1.33), 2, "ethene C=C");
    assert_eq!(bond_order(C, C, 1.20), 3, "ethyne C≡C");
    assert_eq!(bond_order(C, O, 1.21), 2, "formaldehyde C=O");
    assert_eq!(bond_order(C, C, 1.54), 1, "ethane C-C");
    assert_eq!(bond_order(C, N, 1.16), 3, "nitrile");
    assert_eq!(bond_order(O, O, 1.21), 2);
    assert_eq!(bond_order(N, O, 1.22), 2);
    assert_eq!(bond_order(H, H, 0.90), 0);
    // thresholds are strict: C-C single below 1.64 Å only
    assert_eq!(bond_order(C, C, 1.6399), 1);
    assert_eq!(bond_order(C, C, 1.6401), 0);
}

#[test]
fn formaldehyde_is_stable_with_a_double_bond() {
    // H2C=O, planar
    let pos = vec![
        0.0, 0.0, 0.0, 1.21, 0.0, 0.0, -0.55, 0.94, 0.0, -0.55, -0.94, 0.0,
    ];
    let types = vec![C, O, H, H];
    let b = bonds(&pos, &types);
    assert!(
        b.iter().any(|b| b.i == 0 && b.j == 1 && b.order == 2),
        "{b:?}"
    );
    assert!(stability(&pos, &types).molecule_stable());
    assert_eq!(formula(&types), "CH2O");
}

#[test]
fn qm9_histogram_sums_to_training_set() {
    let total: u32 = N_NODES_HISTOGRAM.iter().map(|&(_, c)| c).sum();
    assert_eq!(total, 100_000);
    assert!(N_NODES_HISTOGRAM
        .iter()
        .all(|&(n, _)| n != 1 && n != 2 && n != 28 && n <= 29));
}
