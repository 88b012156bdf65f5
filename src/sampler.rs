//! EDM's ancestral sampler (spec §2.8) behind a step API shared by the CLI, the browser and the tests.
//!
//! ```text
//! let mut s = Sampler::new(egnn, SamplerConfig { molecules: 4, steps: 1000, seed: 1, ..Default::default() })?;
//! while !s.is_finished() { let frame = s.step()?; /* draw frame */ }
//! let molecules = s.molecules();
//! ```
//! Every call to [`Sampler::step`] is one network evaluation: `steps` reverse steps p(z_s | z_t) over evenly
//! respaced timesteps, then the final p(x, h | z_0). All noise comes from [`crate::rng`] keyed by
//! (seed, stream, molecule, atom), so a seed gives the same molecules on every platform and backend.
//!
//! A [`Transform`] g (orthogonal matrix, translation, atom permutation) applied to z_T and to every noise draw
//! produces the chain of g·z_T; by E(3) equivariance it is g applied to the untransformed chain.

use crate::error::{Error, Result};
use crate::qm9::{self, MAX_ATOMS};
use crate::rng;
use crate::schedule::Schedule;

/// Something that predicts ε̂ for B molecules of n atoms (`z`: `[B, n, 9]`, `t`: `[B]` in [0, 1]).
pub trait Denoiser {
    fn eps(&mut self, n: usize, z: &[f32], t: &[f32]) -> Result<Vec<f32>>;
}

impl Denoiser for crate::egnn::Egnn {
    fn eps(&mut self, n: usize, z: &[f32], t: &[f32]) -> Result<Vec<f32>> {
        crate::egnn::Egnn::eps(self, n, z, t)
    }
}

/// How many atoms each molecule gets.
#[derive(Clone, Debug, PartialEq)]
pub enum AtomCounts {
    /// Drawn from the model's QM9 size histogram with the seed.
    Histogram,
    /// The same count for every molecule.
    Fixed(usize),
    /// One count per molecule.
    PerMolecule(Vec<usize>),
}

/// An element g of E(3) × S_n applied to the sampler's input: x ↦ R·x + translation, atoms permuted.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Row-major 3×3 orthogonal matrix (rotation or reflection).
    pub rotation: [[f32; 3]; 3],
    pub translation: [f32; 3],
    /// Per molecule, `permutation[b][i]` = which atom of the untransformed chain atom i is (empty = identity).
    pub permutations: Vec<Vec<usize>>,
}

impl Default for Transform {
    fn default() -> Self {
        Transform {
            rotation: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            translation: [0.0; 3],
            permutations: Vec::new(),
        }
    }
}

impl Transform {
    pub fn rotate(&self, v: [f32; 3]) -> [f32; 3] {
        let r = &self.rotation;
        [
            r[0][0] * v[0] + r[0][1] * v[1] + r[0][2] * v[2],
            r[1][0] * v[0] + r[1][1] * v[1] + r[1][2] * v[2],
            r[2][0] * v[0] + r[2][1] * v[1] + r[2][2] * v[2],
        ]
    }

    fn source_atom(&self, molecule: usize, atom: usize) -> usize {
        match self.permutations.get(molecule) {
            Some(p) if !p.is_empty() => p[atom],
            _ => atom,
        }
    }

    fn validate(&self, counts: &[usize]) -> Result<()> {
        let r = &self.rotation;
        for i in 0..3 {
            for j in 0..3 {
                let d: f32 = (0..3).map(|k| r[i][k] * r[j][k]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                if (d - want).abs() > 1e-4 || !d.is_finite() {
                    return Err(Error::Input(format!(
                        "transform matrix is not orthogonal: row {i}·row {j} = {d}"
                    )));
                }
            }
        }
        if self.translation.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("transform translation".into()));
        }
        for (b, p) in self.permutations.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let n = counts.get(b).copied().unwrap_or(0);
            let mut seen = vec![false; n];
            if p.len() != n
                || p.iter()
                    .any(|&i| i >= n || std::mem::replace(&mut seen[i], true))
            {
                return Err(Error::Input(format!(
                    "permutation of molecule {b} is not a permutation of {n} atoms"
                )));
            }
        }
        Ok(())
    }
}

/// Settings of one sampling run.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    pub molecules: usize,
    pub atoms: AtomCounts,
    /// Reverse steps, 1 to 1000 (1000 = EDM). Network evaluations = steps + 1.
    pub steps: usize,
    pub seed: u64,
    pub transform: Option<Transform>,
    /// Size histogram for [`AtomCounts::Histogram`] (default QM9's).
    pub histogram: Vec<(usize, u32)>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            molecules: 1,
            atoms: AtomCounts::Histogram,
            steps: crate::schedule::T,
            seed: 1,
            transform: None,
            histogram: qm9::N_NODES_HISTOGRAM.to_vec(),
        }
    }
}

/// One molecule in a frame: positions in Å `[n, 3]`, current atom types (argmax of the noisy one-hot).
#[derive(Clone, Debug, PartialEq)]
pub struct MoleculeFrame {
    pub positions: Vec<f32>,
    pub types: Vec<u8>,
}

/// The state after a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Network evaluations done so far (0 = z_T).
    pub step: usize,
    /// Diffusion time of the state shown (T .. 0).
    pub t: usize,
    pub finished: bool,
    pub molecules: Vec<MoleculeFrame>,
}

/// A generated molecule.
#[derive(Clone, Debug, PartialEq)]
pub struct Molecule {
    pub positions: Vec<f32>,
    pub types: Vec<u8>,
    /// Atomic numbers decoded from the charge channel (EDM keeps them; the metrics ignore them).
    pub charges: Vec<i32>,
    /// The chain went non-finite and was frozen; the molecule is not usable.
    pub failed: bool,
}

pub struct Sampler<D: Denoiser> {
    denoiser: D,
    schedule: Schedule,
    timesteps: Vec<usize>,
    /// Index into `timesteps` of the current state.
    pos: usize,
    counts: Vec<usize>,
    z: Vec<Vec<f32>>,
    failed: Vec<bool>,
    seed: u64,
    transform: Transform,
    result: Option<Vec<Molecule>>,
}

fn argmax_type(row: &[f32]) -> u8 {
    let mut best = 0;
    for k in 1..5 {
        if row[3 + k] > row[3 + best] {
            best = k;
        }
    }
    best as u8
}

fn center(z: &mut [f32], n: usize) {
    let mut mean = [0.0f64; 3];
    for i in 0..n {
        for c in 0..3 {
            mean[c] += z[i * 9 + c] as f64;
        }
    }
    for i in 0..n {
        for c in 0..3 {
            z[i * 9 + c] -= (mean[c] / n as f64) as f32;
        }
    }
}

impl<D: Denoiser> Sampler<D> {
    pub fn new(denoiser: D, config: SamplerConfig) -> Result<Self> {
        if config.steps == 0 || config.steps > crate::schedule::T {
            return Err(Error::Steps(config.steps));
        }
        if config.molecules == 0 {
            return Err(Error::Input("at least one molecule is needed".into()));
        }
        let counts: Vec<usize> = match &config.atoms {
            AtomCounts::Fixed(n) => vec![*n; config.molecules],
            AtomCounts::PerMolecule(v) => {
                if v.len() != config.molecules {
                    return Err(Error::Input(format!(
                        "{} atom counts given for {} molecules",
                        v.len(),
                        config.molecules
                    )));
                }
                v.clone()
            }
            AtomCounts::Histogram => (0..config.molecules)
                .map(|b| {
                    qm9::size_from_uniform(
                        &config.histogram,
                        rng::molecule_uniform(config.seed, b as u32),
                    )
                })
                .collect(),
        };
        if let Some(&bad) = counts.iter().find(|&&n| n == 0 || n > MAX_ATOMS) {
            return Err(Error::AtomCount(bad));
        }
        let transform = config.transform.clone().unwrap_or_default();
        transform.validate(&counts)?;
        let schedule = Schedule::default();
        let timesteps = schedule.timesteps(config.steps);
        let mut s = Sampler {
            denoiser,
            schedule,
            timesteps,
            pos: 0,
            z: Vec::new(),
            failed: vec![false; counts.len()],
            counts,
            seed: config.seed,
            transform,
            result: None,
        };
        s.z = (0..s.counts.len())
            .map(|b| s.noise(rng::STREAM_PRIOR, b))
            .collect();
        Ok(s)
    }

    /// Mean-free Gaussian noise for molecule b in one stream (spec §2.3), transformed by g (no translation).
    fn noise(&self, stream: u32, b: usize) -> Vec<f32> {
        let n = self.counts[b];
        let mut out = vec![0.0f32; n * 9];
        for i in 0..n {
            let src = self.transform.source_atom(b, i);
            let v = rng::atom_normals(self.seed, stream, b as u32, src as u32);
            let x = self.transform.rotate([v[0], v[1], v[2]]);
            out[i * 9..i * 9 + 3].copy_from_slice(&x);
            out[i * 9 + 3..i * 9 + 9].copy_from_slice(&v[3..9]);
        }
        center(&mut out, n);
        out
    }

    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// Network evaluations of the whole run (reverse steps + the final step).
    pub fn total_steps(&self) -> usize {
        self.timesteps.len()
    }

    /// Network evaluations done.
    pub fn steps_done(&self) -> usize {
        self.pos + usize::from(self.result.is_some())
    }

    pub fn is_finished(&self) -> bool {
        self.result.is_some()
    }

    /// Diffusion time of the current state.
    pub fn t(&self) -> usize {
        self.timesteps[self.pos]
    }

    /// The raw state z (`[n, 9]` per molecule, centred frame, no translation).
    pub fn state(&self) -> &[Vec<f32>] {
        &self.z
    }

    /// Replaces molecule b's state (e.g. the rotated current state of another chain). x is re-centred.
    pub fn set_state(&mut self, b: usize, z: Vec<f32>) -> Result<()> {
        let n = *self
            .counts
            .get(b)
            .ok_or_else(|| Error::Input(format!("no molecule {b}")))?;
        if z.len() != n * 9 {
            return Err(Error::Input(format!(
                "state of molecule {b} needs {} values, got {}",
                n * 9,
                z.len()
            )));
        }
        if z.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("state of molecule {b}")));
        }
        self.z[b] = z;
        center(&mut self.z[b], n);
        Ok(())
    }

    /// Changes g for the remaining steps (noise draws and the translation of frames).
    pub fn set_transform(&mut self, transform: Transform) -> Result<()> {
        transform.validate(&self.counts)?;
        self.transform = transform;
        Ok(())
    }

    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// The current frame (positions include g's translation).
    pub fn frame(&self) -> Frame {
        let tr = self.transform.translation;
        let molecules = match &self.result {
            Some(res) => res
                .iter()
                .map(|m| MoleculeFrame {
                    positions: m.positions.clone(),
                    types: m.types.clone(),
                })
                .collect(),
            None => self
                .z
                .iter()
                .map(|z| MoleculeFrame {
                    positions: z
                        .chunks_exact(9)
                        .flat_map(|r| [r[0] + tr[0], r[1] + tr[1], r[2] + tr[2]])
                        .collect(),
                    types: z.chunks_exact(9).map(argmax_type).collect(),
                })
                .collect(),
        };
        Frame {
            step: self.steps_done(),
            t: self.t(),
            finished: self.result.is_some(),
            molecules,
        }
    }

    /// ε̂ for every molecule at the current time, grouping molecules of equal size into one batch.
    fn predict(&mut self, t_norm: f32) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); self.z.len()];
        let mut sizes: Vec<usize> = self.counts.clone();
        sizes.sort_unstable();
        sizes.dedup();
        for n in sizes {
            let members: Vec<usize> = (0..self.z.len())
                .filter(|&b| self.counts[b] == n && !self.failed[b])
                .collect();
            if members.is_empty() {
                continue;
            }
            let z: Vec<f32> = members
                .iter()
                .flat_map(|&b| self.z[b].iter().copied())
                .collect();
            let t = vec![t_norm; members.len()];
            let eps = self.denoiser.eps(n, &z, &t)?;
            for (k, &b) in members.iter().enumerate() {
                out[b] = eps[k * n * 9..(k + 1) * n * 9].to_vec();
            }
        }
        Ok(out)
    }

    /// One network evaluation: a reverse step, or the final decoding when the state is z_0.
    pub fn step(&mut self) -> Result<Frame> {
        if self.result.is_some() {
            return Err(Error::Finished);
        }
        let t = self.timesteps[self.pos];
        let t_max = self.schedule.t_max() as f32;
        let eps = self.predict(t as f32 / t_max)?;
        if t > 0 {
            let s = self.timesteps[self.pos + 1];
            let c = self.schedule.step(s, t);
            for b in 0..self.z.len() {
                if self.failed[b] {
                    continue;
                }
                let noise = self.noise(t as u32, b);
                let z = &mut self.z[b];
                for k in 0..z.len() {
                    z[k] = z[k] * c.inv_alpha_ts - c.eps * eps[b][k] + c.noise * noise[k];
                }
                center(z, self.counts[b]);
                if z.iter().any(|v| !v.is_finite()) {
                    self.failed[b] = true;
                }
            }
            self.pos += 1;
        } else {
            self.result = Some(self.decode(&eps));
        }
        Ok(self.frame())
    }

    /// p(x, h | z_0) (spec §2.8 step 3): denoised positions plus σ_0/α_0 noise; types and charges from z_0.
    fn decode(&self, eps: &[Vec<f32>]) -> Vec<Molecule> {
        let f = self.schedule.final_step();
        let tr = self.transform.translation;
        (0..self.z.len())
            .map(|b| {
                let n = self.counts[b];
                let z = &self.z[b];
                let noise = self.noise(0, b);
                let mut xh = vec![0.0f32; n * 9];
                let failed = self.failed[b] || eps[b].len() != n * 9;
                if !failed {
                    for k in 0..n * 9 {
                        xh[k] = (z[k] - f.sigma0 * eps[b][k]) * f.inv_alpha0 + f.noise * noise[k];
                    }
                    center(&mut xh, n);
                }
                let positions: Vec<f32> = xh
                    .chunks_exact(9)
                    .flat_map(|r| [r[0] + tr[0], r[1] + tr[1], r[2] + tr[2]])
                    .collect();
                let failed = failed || positions.iter().any(|v| !v.is_finite());
                Molecule {
                    positions,
                    types: z.chunks_exact(9).map(argmax_type).collect(),
                    charges: z
                        .chunks_exact(9)
                        .map(|r| (10.0 * r[8]).round() as i32)
                        .collect(),
                    failed,
                }
            })
            .collect()
    }

    /// The generated molecules (after the last step).
    pub fn molecules(&self) -> Option<&[Molecule]> {
        self.result.as_deref()
    }

    /// Runs all remaining steps.
    pub fn run(&mut self) -> Result<Vec<Molecule>> {
        while !self.is_finished() {
            self.step()?;
        }
        Ok(self.result.clone().unwrap_or_default())
    }

    pub fn denoiser(&self) -> &D {
        &self.denoiser
    }
}

/// Hooks for backends that keep the state on a device (the GPU sampler): the host-side `Sampler` still owns
/// the configuration, the timesteps, z_T, the transform and the final decoding.
impl<D: Denoiser> Sampler<D> {
    pub(crate) fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    pub(crate) fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    pub(crate) fn failed_flags(&self) -> &[bool] {
        &self.failed
    }

    /// Takes the device's state after it ran to position `pos`.
    pub(crate) fn sync_from_device(&mut self, z: Vec<Vec<f32>>, failed: Vec<bool>, pos: usize) {
        self.z = z;
        self.failed = failed;
        self.pos = pos;
    }

    /// Decodes z_0 with the device's ε̂ of the final evaluation.
    pub(crate) fn finish_from_device(&mut self, eps: &[Vec<f32>]) {
        self.result = Some(self.decode(eps));
    }
}

/// The denoiser of a host-side sampler whose network runs elsewhere; it is never called.
pub(crate) struct HostOnly;

impl Denoiser for HostOnly {
    fn eps(&mut self, _n: usize, _z: &[f32], _t: &[f32]) -> Result<Vec<f32>> {
        Err(Error::Input(
            "the network of this sampler runs on the device".into(),
        ))
    }
}

impl<D: Denoiser> Sampler<D> {
    /// Gives the denoiser back (to reuse its weights for another run).
    pub fn into_denoiser(self) -> D {
        self.denoiser
    }
}

/// The built-in self-test: 2 molecules of 9 atoms, 20 steps, seed 42, random 3x32 weights. The browser page and
/// `equivariant selftest` print [`self_test_summary`] of it: equal text means equal molecules across platforms.
pub fn self_test() -> Result<Vec<Molecule>> {
    let egnn = crate::egnn::Egnn::new(&crate::weights::Weights::random(32, 3, 1))?;
    let config = SamplerConfig {
        molecules: 2,
        atoms: AtomCounts::Fixed(9),
        steps: 20,
        seed: 42,
        ..Default::default()
    };
    Sampler::new(egnn, config)?.run()
}

/// One line describing the self-test molecules: formulas and the first atoms' positions to 1e-4 Å.
pub fn self_test_summary(mols: &[Molecule]) -> String {
    mols.iter()
        .map(|m| {
            let p: Vec<String> = m
                .positions
                .iter()
                .take(6)
                .map(|v| format!("{v:.4}"))
                .collect();
            format!("{} [{}]", crate::chemistry::formula(&m.types), p.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
