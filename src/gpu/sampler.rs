//! The whole sampling loop on the GPU, behind the CPU sampler's API: z stays on the device, many steps are
//! encoded per submit (the step counter indexes the step table), and positions come back only when a frame is
//! asked for. The final evaluation (t = 0) is read back and decoded on the host by the same code as the CPU path.

use std::rc::Rc;

use super::batch::{as_f32, GpuBatch, StepParams};
use super::model::GpuModel;
use crate::sampler::{Frame, HostOnly, Molecule, Sampler, SamplerConfig, Transform};
use crate::Result;

/// Network evaluations per command buffer.
const EVALS_PER_SUBMIT: usize = 25;

pub struct GpuSampler {
    host: Sampler<HostOnly>,
    batch: GpuBatch,
    /// Position of the device's state in the timesteps (the step counter).
    device_pos: usize,
    synced: bool,
}

/// The step table of a run: one reverse step per timestep t > 0, then the final evaluation at t = 0.
fn step_table(host: &Sampler<HostOnly>) -> Vec<StepParams> {
    let ts = host.timesteps();
    let t_max = host.schedule().t_max() as f32;
    ts.iter()
        .enumerate()
        .map(|(k, &t)| {
            if t > 0 {
                let c = host.schedule().step(ts[k + 1], t);
                StepParams {
                    t_norm: t as f32 / t_max,
                    c_z: c.inv_alpha_ts,
                    c_eps: c.eps,
                    c_noise: c.noise,
                    stream: t as u32,
                    update: 1,
                    _pad: [0; 2],
                }
            } else {
                StepParams::default()
            }
        })
        .collect()
}

fn split(words: &[u32], counts: &[usize]) -> Vec<Vec<f32>> {
    let all = as_f32(words);
    let mut out = Vec::with_capacity(counts.len());
    let mut at = 0;
    for &n in counts {
        out.push(all[at..at + n * 9].to_vec());
        at += n * 9;
    }
    out
}

impl GpuSampler {
    pub fn new(model: Rc<GpuModel>, config: SamplerConfig) -> Result<Self> {
        let host = Sampler::new(HostOnly, config)?;
        let table = step_table(&host);
        let batch = GpuBatch::new(
            model,
            host.counts(),
            table.len(),
            host.seed(),
            host.transform(),
        )?;
        batch.write_steps(&table)?;
        let z: Vec<f32> = host.state().iter().flatten().copied().collect();
        batch.write_z(&z)?;
        batch.set_counter(0);
        Ok(GpuSampler {
            host,
            batch,
            device_pos: 0,
            synced: true,
        })
    }

    pub fn counts(&self) -> &[usize] {
        self.host.counts()
    }

    /// Network evaluations of the whole run.
    pub fn total_steps(&self) -> usize {
        self.host.total_steps()
    }

    /// Network evaluations done (submitted to the device).
    pub fn steps_done(&self) -> usize {
        self.device_pos + usize::from(self.host.is_finished())
    }

    pub fn is_finished(&self) -> bool {
        self.host.is_finished()
    }

    pub fn molecules(&self) -> Option<&[Molecule]> {
        self.host.molecules()
    }

    pub fn transform(&self) -> &Transform {
        self.host.transform()
    }

    /// Runs up to `k` network evaluations. Reverse steps are only submitted (no read-back); the final one is
    /// read back and decoded.
    pub async fn advance(&mut self, k: usize) -> Result<()> {
        if self.is_finished() {
            return Err(crate::Error::Finished);
        }
        let final_pos = self.host.total_steps() - 1;
        let reverse = k.min(final_pos - self.device_pos);
        let mut left = reverse;
        while left > 0 {
            let chunk = left.min(EVALS_PER_SUBMIT);
            self.batch.submit(chunk, true)?;
            left -= chunk;
        }
        self.device_pos += reverse;
        if reverse > 0 {
            self.synced = false;
        }
        if k > reverse && self.device_pos == final_pos {
            self.batch.submit(1, false)?;
            let b = &self.batch;
            let words = b.read(&[&b.z, &b.eps, &b.failed]).await?;
            let counts = self.host.counts().to_vec();
            let failed = words[2][..counts.len()].iter().map(|&f| f != 0).collect();
            self.host
                .sync_from_device(split(&words[0], &counts), failed, self.device_pos);
            self.host.finish_from_device(&split(&words[1], &counts));
            self.synced = true;
        }
        Ok(())
    }

    /// Brings the device's state to the host (one read-back) if it moved since the last one.
    pub async fn sync(&mut self) -> Result<()> {
        if self.synced {
            return Ok(());
        }
        let b = &self.batch;
        let words = b.read(&[&b.z, &b.failed]).await?;
        let counts = self.host.counts().to_vec();
        let failed = words[1][..counts.len()].iter().map(|&f| f != 0).collect();
        self.host
            .sync_from_device(split(&words[0], &counts), failed, self.device_pos);
        self.synced = true;
        Ok(())
    }

    /// The current frame (reads the state back).
    pub async fn frame(&mut self) -> Result<Frame> {
        self.sync().await?;
        Ok(self.host.frame())
    }

    /// `advance(k)` then the frame.
    pub async fn step(&mut self, k: usize) -> Result<Frame> {
        self.advance(k).await?;
        self.frame().await
    }

    /// Runs all remaining steps.
    pub async fn run(&mut self) -> Result<Vec<Molecule>> {
        while !self.is_finished() {
            self.advance(100).await?;
        }
        Ok(self
            .host
            .molecules()
            .map(|m| m.to_vec())
            .unwrap_or_default())
    }

    /// The raw state z of every molecule (reads it back).
    pub async fn state(&mut self) -> Result<Vec<Vec<f32>>> {
        self.sync().await?;
        Ok(self.host.state().to_vec())
    }

    /// Replaces molecule b's state, as [`Sampler::set_state`].
    pub async fn set_state(&mut self, b: usize, z: Vec<f32>) -> Result<()> {
        self.sync().await?;
        self.host.set_state(b, z)?;
        self.batch.write_molecule(b, &self.host.state()[b]);
        self.batch.write_failed(self.host.failed_flags());
        Ok(())
    }

    /// Changes g for the remaining steps, as [`Sampler::set_transform`].
    pub fn set_transform(&mut self, transform: Transform) -> Result<()> {
        self.host.set_transform(transform)?;
        self.batch.set_transform(self.host.transform());
        Ok(())
    }

    /// Blocking [`GpuSampler::run`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_blocking(&mut self) -> Result<Vec<Molecule>> {
        pollster::block_on(self.run())
    }

    /// Blocking [`GpuSampler::step`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_blocking(&mut self, k: usize) -> Result<Frame> {
        pollster::block_on(self.step(k))
    }

    /// Blocking [`GpuSampler::state`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_blocking(&mut self) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.state())
    }

    /// Blocking [`GpuSampler::set_state`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_state_blocking(&mut self, b: usize, z: Vec<f32>) -> Result<()> {
        pollster::block_on(self.set_state(b, z))
    }
}
