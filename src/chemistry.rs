//! EDM's chemistry rules (spec §4): bond order from an interatomic distance, valences, atom and molecule
//! stability. Positions in Å, atom types as indices into [`crate::qm9::ATOM_TYPES`] (H, C, N, O, F).

/// Single-bond lengths in pm (symmetric), order H, C, N, O, F.
const BONDS1: [[u32; 5]; 5] = [
    [74, 109, 101, 96, 92],
    [109, 154, 147, 143, 135],
    [101, 147, 145, 140, 136],
    [96, 143, 140, 148, 142],
    [92, 135, 136, 142, 142],
];
/// Double-bond lengths in pm (0 = no double bond for the pair).
const BONDS2: [[u32; 5]; 5] = [
    [0, 0, 0, 0, 0],
    [0, 134, 129, 120, 0],
    [0, 129, 125, 121, 0],
    [0, 120, 121, 121, 0],
    [0, 0, 0, 0, 0],
];
/// Triple-bond lengths in pm (0 = none).
const BONDS3: [[u32; 5]; 5] = [
    [0, 0, 0, 0, 0],
    [0, 120, 116, 113, 0],
    [0, 116, 110, 0, 0],
    [0, 113, 0, 0, 0],
    [0, 0, 0, 0, 0],
];
const MARGIN1: u32 = 10;
const MARGIN2: u32 = 5;
const MARGIN3: u32 = 3;

/// Allowed valence (bond-order sum) of H, C, N, O, F.
pub const VALENCE: [u32; 5] = [1, 4, 3, 2, 1];

/// Bond order 0..=3 of two atoms at distance `d` Å (spec §4.1; strict comparisons in pm, in f32 like EDM).
pub fn bond_order(a: u8, b: u8, d: f32) -> u8 {
    let (a, b) = (a as usize, b as usize);
    let pm = 100.0f32 * d;
    if pm < (BONDS1[a][b] + MARGIN1) as f32 {
        let b2 = BONDS2[a][b];
        if b2 > 0 && pm < (b2 + MARGIN2) as f32 {
            let b3 = BONDS3[a][b];
            if b3 > 0 && pm < (b3 + MARGIN3) as f32 {
                return 3;
            }
            return 2;
        }
        return 1;
    }
    0
}

/// Distance between atoms i and j of a `[n, 3]` position array, in f32.
pub fn distance(pos: &[f32], i: usize, j: usize) -> f32 {
    let d: f32 = (0..3)
        .map(|c| (pos[i * 3 + c] - pos[j * 3 + c]).powi(2))
        .sum();
    d.sqrt()
}

/// A bond between atoms `i < j` with its order (1, 2 or 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bond {
    pub i: usize,
    pub j: usize,
    pub order: u8,
}

/// Every bond of a molecule: every pair is tested (no neighbour limit), as in EDM.
pub fn bonds(pos: &[f32], types: &[u8]) -> Vec<Bond> {
    let mut out = Vec::new();
    for i in 0..types.len() {
        for j in i + 1..types.len() {
            let order = bond_order(types[i], types[j], distance(pos, i, j));
            if order > 0 {
                out.push(Bond { i, j, order });
            }
        }
    }
    out
}

/// Stability of one molecule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stability {
    /// Bond-order sum of every atom.
    pub valence: Vec<u32>,
    /// Whether each atom's sum equals its allowed valence.
    pub atom_stable: Vec<bool>,
}

impl Stability {
    pub fn stable_atoms(&self) -> usize {
        self.atom_stable.iter().filter(|&&s| s).count()
    }
    pub fn molecule_stable(&self) -> bool {
        self.atom_stable.iter().all(|&s| s)
    }
}

/// Atom and molecule stability (spec §4.2).
pub fn stability(pos: &[f32], types: &[u8]) -> Stability {
    let mut valence = vec![0u32; types.len()];
    for b in bonds(pos, types) {
        valence[b.i] += b.order as u32;
        valence[b.j] += b.order as u32;
    }
    let atom_stable = valence
        .iter()
        .zip(types)
        .map(|(&v, &t)| v == VALENCE[t as usize])
        .collect();
    Stability {
        valence,
        atom_stable,
    }
}

/// Hill-order formula, e.g. `C2H6O`.
pub fn formula(types: &[u8]) -> String {
    let mut counts = [0usize; 5];
    for &t in types {
        counts[t as usize] += 1;
    }
    let order: &[usize] = if counts[1] > 0 {
        &[1, 0, 4, 2, 3]
    } else {
        &[4, 0, 2, 3, 1]
    };
    let mut s = String::new();
    for &k in order {
        match counts[k] {
            0 => {}
            1 => s.push_str(crate::qm9::ATOM_TYPES[k]),
            c => s.push_str(&format!("{}{c}", crate::qm9::ATOM_TYPES[k])),
        }
    }
    s
}

/// Totals over many molecules (EDM protocol).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StabilityReport {
    pub molecules: usize,
    pub stable_molecules: usize,
    pub atoms: usize,
    pub stable_atoms: usize,
}

impl StabilityReport {
    pub fn add(&mut self, pos: &[f32], types: &[u8]) {
        let s = stability(pos, types);
        self.molecules += 1;
        self.atoms += types.len();
        self.stable_atoms += s.stable_atoms();
        self.stable_molecules += usize::from(s.molecule_stable());
    }
    pub fn atom_stability(&self) -> f64 {
        self.stable_atoms as f64 / self.atoms.max(1) as f64
    }
    pub fn molecule_stability(&self) -> f64 {
        self.stable_molecules as f64 / self.molecules.max(1) as f64
    }
}
