//! One batch of molecules on the GPU: the state z and the network's scratch buffers, laid out ragged (molecules
//! of any sizes side by side, no padding), the per-step parameter table, and the encoding of a network
//! evaluation as a fixed sequence of dispatches.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::model::GpuModel;
use crate::sampler::Transform;
use crate::{Error, Result};

/// One entry of the step table (the WGSL `Step`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct StepParams {
    pub t_norm: f32,
    pub c_z: f32,
    pub c_eps: f32,
    pub c_noise: f32,
    pub stream: u32,
    pub update: u32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct Globals {
    n_nodes: u32,
    n_mols: u32,
    seed_lo: u32,
    seed_hi: u32,
    emb_w: u32,
    emb_b: u32,
    _pad: [u32; 2],
    rot: [[f32; 4]; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct LinearOp {
    in_dim: u32,
    out_dim: u32,
    rows: u32,
    act: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    w_off: u32,
    b_off: u32,
    residual: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct EdgeOp {
    wr_off: u32,
    w2_off: u32,
    b2_off: u32,
    w3_off: u32,
    b3_off: u32,
    mode: u32,
    _pad: [u32; 2],
}

/// The dynamic-offset slot size of the op table (WebGPU's minUniformBufferOffsetAlignment default).
const SLOT: u64 = 256;

/// Which pair of buffers a linear op reads and writes.
#[derive(Clone, Copy)]
enum Pair {
    HToPq,
    PqToH,
    HToEps,
}

enum Dispatch {
    Linear(Pair, u32, [u32; 2]),
    Edge(usize, u32),
}

/// Builds the op table (one `SLOT`-sized uniform entry per dispatch, read at a dynamic offset) and the dispatch
/// plan of one network evaluation over `rows` nodes.
struct PlanBuilder {
    rows: u32,
    table: Vec<u8>,
    plan: Vec<Dispatch>,
}

impl PlanBuilder {
    fn new(rows: u32) -> Self {
        Self {
            rows,
            table: Vec::new(),
            plan: Vec::new(),
        }
    }

    fn slot(&mut self, bytes: &[u8]) -> u32 {
        let at = self.table.len();
        self.table.extend_from_slice(bytes);
        self.table.resize(at + SLOT as usize, 0);
        at as u32
    }

    /// A linear layer between the buffers of `pair`: workgroups of 64 outputs × 8 rows.
    fn linear(&mut self, pair: Pair, op: LinearOp) {
        let at = self.slot(bytemuck::bytes_of(&op));
        let groups = [op.out_dim.div_ceil(64), self.rows.div_ceil(8)];
        self.plan.push(Dispatch::Linear(pair, at, groups));
    }

    /// An edge kernel with bind group `group` (2·mode + parity, see `GpuBatch::edge_groups`).
    fn edge(&mut self, group: usize, op: EdgeOp) {
        let at = self.slot(bytemuck::bytes_of(&op));
        self.plan.push(Dispatch::Edge(group, at));
    }
}

pub struct GpuBatch {
    model: Rc<GpuModel>,
    pub counts: Vec<usize>,
    pub n_nodes: usize,
    pub z: wgpu::Buffer,
    pub eps: wgpu::Buffer,
    pub failed: wgpu::Buffer,
    steps: wgpu::Buffer,
    steps_len: usize,
    counter: wgpu::Buffer,
    globals: wgpu::Buffer,
    globals_data: Globals,
    perm: wgpu::Buffer,
    linear_groups: [wgpu::BindGroup; 3],
    edge_groups: Vec<wgpu::BindGroup>, // [mode 0 parity 0, mode 0 parity 1, mode 1 parity 0, mode 1 parity 1]
    begin_group: wgpu::BindGroup,
    finish_group: wgpu::BindGroup,
    advance_group: wgpu::BindGroup,
    plan: Vec<Dispatch>,
}

fn rotation_rows(t: &Transform) -> [[f32; 4]; 3] {
    let r = &t.rotation;
    [
        [r[0][0], r[0][1], r[0][2], 0.0],
        [r[1][0], r[1][1], r[1][2], 0.0],
        [r[2][0], r[2][1], r[2][2], 0.0],
    ]
}

/// g's source atom of every node, in node order.
fn permutation_table(t: &Transform, counts: &[usize]) -> Vec<u32> {
    let mut out = Vec::new();
    for (b, &n) in counts.iter().enumerate() {
        match t.permutations.get(b) {
            Some(p) if !p.is_empty() => out.extend(p.iter().map(|&i| i as u32)),
            _ => out.extend(0..n as u32),
        }
    }
    out
}

impl GpuBatch {
    /// Buffers for molecules of the given sizes and a step table of `steps_len` entries.
    pub fn new(
        model: Rc<GpuModel>,
        counts: &[usize],
        steps_len: usize,
        seed: u64,
        transform: &Transform,
    ) -> Result<Self> {
        let ctx = model.ctx.clone();
        let device = &ctx.device;
        let nf = model.nf;
        let n_nodes: usize = counts.iter().sum();
        if counts.is_empty() || n_nodes == 0 {
            return Err(Error::Input("a GPU batch needs at least one atom".into()));
        }
        if let Some(&big) = counts.iter().find(|&&n| n == 0 || n > 32) {
            return Err(Error::Input(format!(
                "the GPU kernels handle molecules of 1 to 32 atoms (one 32-thread workgroup each); got {big}"
            )));
        }
        if n_nodes > 65_535 || counts.len() > 65_535 {
            return Err(Error::Input(format!(
                "a GPU batch holds at most 65,535 atoms and molecules; asked for {n_nodes} atoms in {} molecules",
                counts.len()
            )));
        }
        let limits = device.limits();
        let biggest = (n_nodes * 2 * nf * 4) as u64;
        if biggest > limits.max_storage_buffer_binding_size {
            return Err(Error::Gpu(format!(
                "{n_nodes} atoms need a {biggest}-byte buffer, over this device's binding limit of {} bytes",
                limits.max_storage_buffer_binding_size
            )));
        }
        let usage_rw = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let buffer = |label: &str, floats: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (floats.max(4) * 4) as u64,
                usage: usage_rw,
                mapped_at_creation: false,
            })
        };
        let init = |label: &str, bytes: &[u8], usage: wgpu::BufferUsages| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage,
            })
        };
        let z = buffer("z", n_nodes * 9);
        let eps = buffer("eps", n_nodes * 9);
        let h2 = buffer("h2", n_nodes * 2 * nf);
        let pq = buffer("pq", n_nodes * 2 * nf);
        let xs = [buffer("x0", n_nodes * 4), buffer("x1", n_nodes * 4)];
        let mut nodes = Vec::with_capacity(n_nodes * 4);
        let mut mols = Vec::with_capacity(counts.len() * 4);
        let mut start = 0u32;
        for (b, &n) in counts.iter().enumerate() {
            mols.extend([start, n as u32, 0, 0]);
            for _ in 0..n {
                nodes.extend([b as u32, start, n as u32, 0]);
            }
            start += n as u32;
        }
        let nodes = init("nodes", bytemuck::cast_slice(&nodes), usage_rw);
        let mols = init("mols", bytemuck::cast_slice(&mols), usage_rw);
        let failed = init(
            "failed",
            bytemuck::cast_slice(&vec![0u32; counts.len().max(4)]),
            usage_rw,
        );
        let perm = init(
            "perm",
            bytemuck::cast_slice(&permutation_table(transform, counts)),
            usage_rw,
        );
        let steps = buffer("steps", steps_len.max(1) * 8);
        let counter = buffer("counter", 4);
        let off = &model.offsets;
        let globals_data = Globals {
            n_nodes: n_nodes as u32,
            n_mols: counts.len() as u32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            emb_w: off.emb_w,
            emb_b: off.emb_b,
            _pad: [0; 2],
            rot: rotation_rows(transform),
        };
        let globals = init(
            "globals",
            bytemuck::bytes_of(&globals_data),
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );

        // the op table and the dispatch plan of one network evaluation
        let rows = n_nodes as u32;
        let nf32 = nf as u32;
        // every layer inside the network reads and writes rows of 2·nf floats (the h/pq buffers' stride)
        let linear = |in_dim: u32, out_dim: u32, w_off: u32, b_off: u32| LinearOp {
            in_dim,
            out_dim,
            rows,
            x_stride: 2 * nf32,
            y_stride: 2 * nf32,
            w_off,
            b_off,
            ..Default::default()
        };
        let mut pb = PlanBuilder::new(rows);
        let mut parity = 0usize;
        for bo in &off.blocks {
            // GCL: the edge MLP's first layer as per-node terms, the edge kernel (messages, attention, sum over
            // neighbours), the node MLP with its residual
            pb.linear(Pair::HToPq, linear(nf32, 2 * nf32, bo.e_pre_w, bo.e_pre_b));
            let messages = EdgeOp {
                wr_off: bo.e_wr,
                w2_off: bo.e_w2,
                b2_off: bo.e_b2,
                w3_off: bo.att_w,
                b3_off: bo.att_b,
                mode: 0,
                ..Default::default()
            };
            pb.edge(parity, messages);
            let n1 = linear(2 * nf32, nf32, bo.n_w1, bo.n_b1);
            pb.linear(Pair::HToPq, LinearOp { act: 1, ..n1 });
            let n2 = linear(nf32, nf32, bo.n_w2, bo.n_b2);
            pb.linear(Pair::PqToH, LinearOp { residual: 1, ..n2 });
            // EquivariantUpdate: the coordinate MLP's first layer as per-node terms, the edge kernel moving x
            pb.linear(Pair::HToPq, linear(nf32, 2 * nf32, bo.c_pre_w, bo.c_pre_b));
            let coordinates = EdgeOp {
                wr_off: bo.c_wr,
                w2_off: bo.c_w2,
                b2_off: bo.c_b2,
                w3_off: bo.c_w3,
                b3_off: bo.att_b,
                mode: 1,
                ..Default::default()
            };
            pb.edge(2 + parity, coordinates);
            parity = 1 - parity;
        }
        let out = linear(nf32, 6, off.out_w, off.out_b);
        pb.linear(
            Pair::HToEps,
            LinearOp {
                y_off: 3,
                y_stride: 9,
                ..out
            },
        );
        let PlanBuilder { table, plan, .. } = pb;
        let ops = init("ops", &table, wgpu::BufferUsages::UNIFORM);

        let p = &model.pipelines;
        fn entry(binding: u32, buf: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding,
                resource: buf.as_entire_binding(),
            }
        }
        let op_entry = |binding: u32, size: u64| wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &ops,
                offset: 0,
                size: wgpu::BufferSize::new(size),
            }),
        };
        let linear_group = |x: &wgpu::Buffer, y: &wgpu::Buffer| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("linear"),
                layout: &p.linear_layout,
                entries: &[
                    entry(0, &model.weights),
                    entry(1, x),
                    entry(2, y),
                    op_entry(3, std::mem::size_of::<LinearOp>() as u64),
                ],
            })
        };
        let linear_groups = [
            linear_group(&h2, &pq),
            linear_group(&pq, &h2),
            linear_group(&h2, &eps),
        ];
        let edge_group = |xc: &wgpu::Buffer, out: &wgpu::Buffer| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("edge"),
                layout: &p.edge_layout,
                entries: &[
                    entry(0, &model.weights),
                    entry(1, &pq),
                    entry(2, xc),
                    entry(3, &z),
                    entry(4, &nodes),
                    entry(5, out),
                    op_entry(6, std::mem::size_of::<EdgeOp>() as u64),
                ],
            })
        };
        let edge_groups = vec![
            edge_group(&xs[0], &h2),
            edge_group(&xs[1], &h2),
            edge_group(&xs[0], &xs[1]),
            edge_group(&xs[1], &xs[0]),
        ];
        let auto_group = |pipeline: &wgpu::ComputePipeline, bufs: &[&wgpu::Buffer]| {
            let layout = pipeline.get_bind_group_layout(0);
            let entries: Vec<_> = bufs
                .iter()
                .enumerate()
                .map(|(i, b)| entry(i as u32, b))
                .collect();
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            })
        };
        let begin_group = auto_group(
            &p.begin,
            &[&model.weights, &z, &steps, &counter, &h2, &xs[0], &globals],
        );
        let finish_group = auto_group(
            &p.finish,
            &[
                &xs[parity],
                &z,
                &eps,
                &steps,
                &counter,
                &mols,
                &failed,
                &perm,
                &globals,
            ],
        );
        let advance_group = auto_group(&p.advance, &[&counter]);
        ctx.check()?;
        Ok(GpuBatch {
            model,
            counts: counts.to_vec(),
            n_nodes,
            z,
            eps,
            failed,
            steps,
            steps_len,
            counter,
            globals,
            globals_data,
            perm,
            linear_groups,
            edge_groups,
            begin_group,
            finish_group,
            advance_group,
            plan,
        })
    }

    pub fn model(&self) -> &GpuModel {
        &self.model
    }

    pub fn write_steps(&self, steps: &[StepParams]) -> Result<()> {
        if steps.len() > self.steps_len {
            return Err(Error::Input(format!(
                "{} step entries for a table of {}",
                steps.len(),
                self.steps_len
            )));
        }
        self.model
            .ctx
            .queue
            .write_buffer(&self.steps, 0, bytemuck::cast_slice(steps));
        Ok(())
    }

    pub fn set_counter(&self, k: usize) {
        self.model
            .ctx
            .queue
            .write_buffer(&self.counter, 0, bytemuck::bytes_of(&(k as u32)));
    }

    /// Uploads the state of every molecule (`[N, 9]` in molecule order).
    pub fn write_z(&self, z: &[f32]) -> Result<()> {
        if z.len() != self.n_nodes * 9 {
            return Err(Error::Input(format!(
                "GPU state needs {} values, got {}",
                self.n_nodes * 9,
                z.len()
            )));
        }
        self.model
            .ctx
            .queue
            .write_buffer(&self.z, 0, bytemuck::cast_slice(z));
        Ok(())
    }

    /// Uploads molecule b's state.
    pub fn write_molecule(&self, b: usize, z: &[f32]) {
        let first: usize = self.counts[..b].iter().sum();
        self.model
            .ctx
            .queue
            .write_buffer(&self.z, (first * 9 * 4) as u64, bytemuck::cast_slice(z));
    }

    pub fn write_failed(&self, failed: &[bool]) {
        let v: Vec<u32> = failed.iter().map(|&f| u32::from(f)).collect();
        self.model
            .ctx
            .queue
            .write_buffer(&self.failed, 0, bytemuck::cast_slice(&v));
    }

    /// g for the noise of the following steps (rotation/reflection and permutation).
    pub fn set_transform(&mut self, t: &Transform) {
        self.globals_data.rot = rotation_rows(t);
        let q = &self.model.ctx.queue;
        q.write_buffer(&self.globals, 0, bytemuck::bytes_of(&self.globals_data));
        q.write_buffer(
            &self.perm,
            0,
            bytemuck::cast_slice(&permutation_table(t, &self.counts)),
        );
    }

    /// One network evaluation at the step the counter points to, then `finish` (ε̂ and, for a reverse step, the
    /// update of z).
    pub fn encode_eval(&self, pass: &mut wgpu::ComputePass<'_>) {
        let p = &self.model.pipelines;
        let nodes = self.n_nodes as u32;
        pass.set_pipeline(&p.begin);
        pass.set_bind_group(0, &self.begin_group, &[]);
        pass.dispatch_workgroups((self.model.nf as u32).div_ceil(64), nodes, 1);
        for d in &self.plan {
            match *d {
                Dispatch::Linear(pair, at, [gx, gy]) => {
                    pass.set_pipeline(&p.linear);
                    pass.set_bind_group(0, &self.linear_groups[pair as usize], &[at]);
                    pass.dispatch_workgroups(gx, gy, 1);
                }
                Dispatch::Edge(group, at) => {
                    pass.set_pipeline(&p.edge);
                    pass.set_bind_group(0, &self.edge_groups[group], &[at]);
                    pass.dispatch_workgroups(nodes, 1, 1);
                }
            }
        }
        pass.set_pipeline(&p.finish);
        pass.set_bind_group(0, &self.finish_group, &[]);
        pass.dispatch_workgroups(self.counts.len() as u32, 1, 1);
    }

    pub fn encode_advance(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.model.pipelines.advance);
        pass.set_bind_group(0, &self.advance_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }

    /// Encodes `evals` network evaluations (each followed by a counter advance when `advance`) and submits them.
    pub fn submit(&self, evals: usize, advance: bool) -> Result<()> {
        let ctx = &self.model.ctx;
        ctx.check()?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("steps"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("steps"),
                timestamp_writes: None,
            });
            for _ in 0..evals {
                self.encode_eval(&mut pass);
                if advance {
                    self.encode_advance(&mut pass);
                }
            }
        }
        ctx.queue.submit([enc.finish()]);
        Ok(())
    }

    /// Copies buffers back to the host (f32 or u32 words).
    pub async fn read(&self, bufs: &[&wgpu::Buffer]) -> Result<Vec<Vec<u32>>> {
        let ctx = &self.model.ctx;
        ctx.check()?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        let staging: Vec<wgpu::Buffer> = bufs
            .iter()
            .map(|b| {
                let s = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("staging"),
                    size: b.size(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.copy_buffer_to_buffer(b, 0, &s, 0, b.size());
                s
            })
            .collect();
        ctx.queue.submit([enc.finish()]);
        let mut out = Vec::with_capacity(staging.len());
        for s in &staging {
            let slot = Arc::new(Mutex::new(MapState::default()));
            let cb = slot.clone();
            s.map_async(wgpu::MapMode::Read, .., move |r| {
                if let Ok(mut st) = cb.lock() {
                    st.result = Some(r.map_err(|e| e.to_string()));
                    if let Some(w) = st.waker.take() {
                        w.wake();
                    }
                }
            });
            #[cfg(not(target_arch = "wasm32"))]
            ctx.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
            MapFuture(slot).await.map_err(|e| match ctx.check() {
                Err(lost) => lost,
                Ok(()) => Error::Gpu(format!("reading results back: {e}")),
            })?;
            let words: Vec<u32> = {
                let view = s
                    .get_mapped_range(..)
                    .map_err(|e| Error::Gpu(format!("reading results back: {e}")))?;
                bytemuck::cast_slice(&view).to_vec()
            };
            s.unmap();
            out.push(words);
        }
        ctx.check()?;
        Ok(out)
    }
}

#[derive(Default)]
struct MapState {
    result: Option<std::result::Result<(), String>>,
    waker: Option<Waker>,
}

/// Resolves when a buffer's map_async callback has run (in the browser, from the event loop).
struct MapFuture(Arc<Mutex<MapState>>);

impl Future for MapFuture {
    type Output = std::result::Result<(), String>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(mut st) = self.0.lock() else {
            return Poll::Ready(Err("map state poisoned".into()));
        };
        match st.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Words read back as f32.
pub fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}
