//! ε̂ = φ(z_t, t) on the GPU behind the CPU's [`Denoiser`] trait (native, blocking): the same kernels as the
//! GPU sampler, one evaluation per call with a read-back. Used to check the kernels against the CPU EGNN and by
//! the benchmark.

use std::rc::Rc;

use super::batch::{as_f32, GpuBatch, StepParams};
use super::model::GpuModel;
use crate::sampler::{Denoiser, Transform};
use crate::{Error, Result};

pub struct GpuEgnn {
    model: Rc<GpuModel>,
    batch: Option<GpuBatch>,
}

impl GpuEgnn {
    pub fn new(model: Rc<GpuModel>) -> Self {
        GpuEgnn { model, batch: None }
    }

    pub fn model(&self) -> &GpuModel {
        &self.model
    }

    /// The batch for these molecule sizes (kept while the sizes stay the same).
    fn batch(&mut self, counts: &[usize]) -> Result<&GpuBatch> {
        if self.batch.as_ref().map(|b| b.counts.as_slice()) != Some(counts) {
            self.batch = Some(GpuBatch::new(
                self.model.clone(),
                counts,
                1,
                0,
                &Transform::default(),
            )?);
        }
        Ok(self.batch.as_ref().expect("batch"))
    }

    /// The batch for `b` molecules of n atoms, loaded with z and a one-entry step table at time t (ε̂ only).
    fn load(&mut self, n: usize, b: usize, z: &[f32], t: f32) -> Result<&GpuBatch> {
        let batch = self.batch(&vec![n; b])?;
        batch.write_steps(&[StepParams {
            t_norm: t,
            ..Default::default()
        }])?;
        batch.set_counter(0);
        batch.write_z(z)?;
        Ok(batch)
    }

    /// Uploads z and t and encodes `evals` evaluations without reading back (for timing), then waits.
    pub fn eval_only(&mut self, n: usize, z: &[f32], t: f32, evals: usize) -> Result<()> {
        let batch = self.load(n, z.len() / (n * 9).max(1), z, t)?;
        batch.submit(evals, false)?;
        batch.model().ctx.wait()
    }
}

impl Denoiser for GpuEgnn {
    fn eps(&mut self, n: usize, z: &[f32], t: &[f32]) -> Result<Vec<f32>> {
        let b = t.len();
        if n == 0 || z.len() != b * n * 9 {
            return Err(Error::Input(format!(
                "GPU denoiser: {} values for {b} molecules of {n} atoms",
                z.len()
            )));
        }
        if let Some(bad) = z.iter().chain(t).position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "GPU denoiser input (value {bad})"
            )));
        }
        let mut out = vec![0.0f32; z.len()];
        // one evaluation per distinct t (the sampler always passes one t)
        let mut done = vec![false; b];
        for first in 0..b {
            if done[first] {
                continue;
            }
            let members: Vec<usize> = (first..b).filter(|&m| t[m] == t[first]).collect();
            let sub: Vec<f32> = members
                .iter()
                .flat_map(|&m| z[m * n * 9..(m + 1) * n * 9].iter().copied())
                .collect();
            let batch = self.load(n, members.len(), &sub, t[first])?;
            batch.submit(1, false)?;
            let eps = as_f32(&pollster::block_on(batch.read(&[&batch.eps]))?[0]);
            for (k, &m) in members.iter().enumerate() {
                out[m * n * 9..(m + 1) * n * 9].copy_from_slice(&eps[k * n * 9..(k + 1) * n * 9]);
                done[m] = true;
            }
        }
        Ok(out)
    }
}
