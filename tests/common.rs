//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::needless_range_loop)]

use equivariant::rng;
use equivariant::sampler::{AtomCounts, SamplerConfig, Transform};

/// Deterministic standard normals.
pub fn normals(seed: u64, count: usize) -> Vec<f32> {
    (0..count.div_ceil(9))
        .flat_map(|k| rng::atom_normals(seed, 12345, 0, k as u32))
        .take(count)
        .collect()
}

/// A random orthogonal 3×3 matrix (Gram–Schmidt of normals); `reflect` flips its determinant to −1.
pub fn random_orthogonal(seed: u64, reflect: bool) -> [[f32; 3]; 3] {
    let v = normals(seed, 9);
    let mut rows = [[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]];
    for i in 0..3 {
        for j in 0..i {
            let d: f32 = (0..3).map(|k| rows[i][k] * rows[j][k]).sum();
            for k in 0..3 {
                rows[i][k] -= d * rows[j][k];
            }
        }
        let norm = (0..3).map(|k| rows[i][k] * rows[i][k]).sum::<f32>().sqrt();
        for k in 0..3 {
            rows[i][k] /= norm;
        }
    }
    let det = rows[0][0] * (rows[1][1] * rows[2][2] - rows[1][2] * rows[2][1])
        - rows[0][1] * (rows[1][0] * rows[2][2] - rows[1][2] * rows[2][0])
        + rows[0][2] * (rows[1][0] * rows[2][1] - rows[1][1] * rows[2][0]);
    if (det < 0.0) != reflect {
        for k in 0..3 {
            rows[2][k] = -rows[2][k];
        }
    }
    rows
}

pub fn rotate(r: &[[f32; 3]; 3], v: &[f32]) -> [f32; 3] {
    [
        r[0][0] * v[0] + r[0][1] * v[1] + r[0][2] * v[2],
        r[1][0] * v[0] + r[1][1] * v[1] + r[1][2] * v[2],
        r[2][0] * v[0] + r[2][1] * v[1] + r[2][2] * v[2],
    ]
}

/// g applied to rows of `width` values whose first 3 are a position: row i of the result is row perm[i], its
/// position rotated by r and shifted, the other values unchanged.
fn transform_strided(
    r: &[[f32; 3]; 3],
    shift: [f32; 3],
    perm: &[usize],
    rows: &[f32],
    width: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(perm.len() * width);
    for &p in perm {
        let src = &rows[p * width..(p + 1) * width];
        let x = rotate(r, &src[..3]);
        out.extend((0..3).map(|c| x[c] + shift[c]));
        out.extend_from_slice(&src[3..]);
    }
    out
}

/// g applied to `[n, 3]` positions: atom i of the result is atom perm[i] of `pos`, rotated by r and shifted.
pub fn transform_positions(
    r: &[[f32; 3]; 3],
    shift: [f32; 3],
    perm: &[usize],
    pos: &[f32],
) -> Vec<f32> {
    transform_strided(r, shift, perm, pos, 3)
}

/// g applied to `[n, 9]` rows (a state z or a prediction ε̂): row i of the result is row perm[i], its x part
/// rotated and shifted, its 6 feature channels unchanged. ε̂ transforms with `shift = [0; 3]`.
pub fn transform_rows(
    r: &[[f32; 3]; 3],
    shift: [f32; 3],
    perm: &[usize],
    rows: &[f32],
) -> Vec<f32> {
    transform_strided(r, shift, perm, rows, 9)
}

/// Checks ε̂(g·z) = g·ε̂(z) for one molecule of `n` atoms, with and without a reflection: g rotates (rotation
/// seed `seed`), shifts by `shift` and permutes the atoms (permutation seed `seed + 48`); ε̂_x must rotate and
/// ignore the shift, ε̂_h only permute. `eps` evaluates the network on a `[n, 9]` state.
pub fn assert_eps_equivariant(
    n: usize,
    z: &[f32],
    seed: u64,
    shift: [f32; 3],
    mut eps: impl FnMut(&[f32]) -> Vec<f32>,
) {
    let base = eps(z);
    for reflect in [false, true] {
        let r = random_orthogonal(seed, reflect);
        let perm = permutation(seed + 48, n);
        // g·z: atom i of the new input is atom perm[i] of the old, rotated and shifted
        let gz = transform_rows(&r, shift, &perm, z);
        let want = transform_rows(&r, [0.0; 3], &perm, &base);
        let what = format!("n {n} reflect {reflect}");
        assert_close(&eps(&gz), &want, 1e-4, 1e-4, &what);
    }
}

/// A sampler configuration with the defaults but for these.
pub fn config(atoms: AtomCounts, molecules: usize, steps: usize, seed: u64) -> SamplerConfig {
    SamplerConfig {
        molecules,
        atoms,
        steps,
        seed,
        ..Default::default()
    }
}

/// g of the chain equivariance tests: a seeded rotation-reflection, the shift (1, −2, 0.5) and a seeded
/// permutation of the `n` atoms of one molecule.
pub fn one_molecule_transform(rotation_seed: u64, permutation_seed: u64, n: usize) -> Transform {
    Transform {
        rotation: random_orthogonal(rotation_seed, true),
        translation: [1.0, -2.0, 0.5],
        permutations: vec![permutation(permutation_seed, n)],
    }
}

/// g (one molecule's transform: its first permutation) applied to the molecule's `[n, 3]` positions.
pub fn apply_to_positions(g: &Transform, pos: &[f32]) -> Vec<f32> {
    transform_positions(&g.rotation, g.translation, &g.permutations[0], pos)
}

/// A permutation of 0..n from the seed.
pub fn permutation(seed: u64, n: usize) -> Vec<usize> {
    let keys = normals(seed, n);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    idx
}

/// `|a − b| <= atol + rtol·|b|` for every element, with the first failing index in the message.
pub fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}: index {i}: {x} vs {y} (|diff| {} > {} + {}·|b|)",
            (x - y).abs(),
            atol,
            rtol
        );
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
