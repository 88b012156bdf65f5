//! QM9 (with hydrogens) facts the model depends on (spec §3): atom types, charges, sizes.

/// Element symbols in the model's one-hot order.
pub const ATOM_TYPES: [&str; 5] = ["H", "C", "N", "O", "F"];
/// Atomic numbers, the "charge" feature (divided by 10 at the model input).
pub const CHARGES: [u8; 5] = [1, 6, 7, 8, 9];
/// Largest molecule of QM9; the sampler accepts 1..=29 atoms per molecule.
pub const MAX_ATOMS: usize = 29;
/// Normalisation of positions, one-hot and charge (spec §2.2).
pub const NORMALIZE: [f32; 3] = [1.0, 4.0, 10.0];

/// Node-count histogram of QM9's 100,000 training molecules: (atoms, molecules). Sizes absent here never occur.
pub const N_NODES_HISTOGRAM: [(usize, u32); 26] = [
    (3, 1),
    (4, 4),
    (5, 5),
    (6, 9),
    (7, 16),
    (8, 49),
    (9, 124),
    (10, 362),
    (11, 807),
    (12, 1689),
    (13, 3060),
    (14, 5136),
    (15, 7796),
    (16, 10644),
    (17, 13025),
    (18, 13364),
    (19, 13832),
    (20, 9482),
    (21, 9970),
    (22, 3393),
    (23, 4848),
    (24, 539),
    (25, 1506),
    (26, 48),
    (27, 266),
    (29, 25),
];

/// Index of an element symbol in [`ATOM_TYPES`] (case-insensitive), if it is one of H, C, N, O, F.
pub fn type_index(symbol: &str) -> Option<u8> {
    ATOM_TYPES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(symbol))
        .map(|i| i as u8)
}

/// Inverse CDF of a size histogram: `u` in [0, 1) -> atom count.
pub fn size_from_uniform(histogram: &[(usize, u32)], u: f64) -> usize {
    let total: u64 = histogram.iter().map(|&(_, c)| c as u64).sum();
    let target = u * total as f64;
    let mut acc = 0u64;
    for &(n, c) in histogram {
        acc += c as u64;
        if target < acc as f64 {
            return n;
        }
    }
    histogram.last().map(|&(n, _)| n).unwrap_or(MAX_ATOMS)
}
