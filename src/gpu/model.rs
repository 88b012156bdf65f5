//! The EGNN's weights on the GPU (one storage buffer, packed once, with an offset table) and the compiled
//! pipelines of the backend's kernels.

use std::rc::Rc;

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use super::shaders::Sources;
use crate::weights::Weights;
use crate::{Error, Result};

/// Offsets (in f32 elements) of one block's packed tensors in the weights buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockOffsets {
    /// Node-wise split of edge_mlp.0: Wᵀ [nf, 2nf] = [Aᵀ | Bᵀ], bias [2nf] = [b1 | 0].
    pub e_pre_w: u32,
    pub e_pre_b: u32,
    /// edge_mlp.0's columns for r_ij and d0_ij: [nf] each, contiguous.
    pub e_wr: u32,
    pub e_w2: u32,
    pub e_b2: u32,
    pub att_w: u32,
    pub att_b: u32,
    pub n_w1: u32,
    pub n_b1: u32,
    pub n_w2: u32,
    pub n_b2: u32,
    pub c_pre_w: u32,
    pub c_pre_b: u32,
    pub c_wr: u32,
    pub c_w2: u32,
    pub c_b2: u32,
    pub c_w3: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Offsets {
    pub emb_w: u32,
    pub emb_b: u32,
    pub out_w: u32,
    pub out_b: u32,
    pub blocks: Vec<BlockOffsets>,
}

/// Packs EDM's tensors into one f32 array in the kernels' layout (weights transposed to [in, out]).
pub fn pack(w: &Weights) -> Result<(Vec<f32>, Offsets)> {
    let nf = w.config.nf;
    let mut buf: Vec<f32> = Vec::new();
    let get = |name: &str| -> Result<&[f32]> {
        w.tensors
            .get(name)
            .map(|t| t.data.as_slice())
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    };
    // appends a block of values, 16-float aligned, and returns its offset
    fn put(buf: &mut Vec<f32>, v: impl IntoIterator<Item = f32>) -> u32 {
        while !buf.len().is_multiple_of(16) {
            buf.push(0.0);
        }
        let off = buf.len() as u32;
        buf.extend(v);
        off
    }
    // Wᵀ of rows [r0, r0 + out) and columns [c0, c0 + inp) of a row-major [rows, cols] matrix
    let transpose = |m: &[f32], cols: usize, r0: usize, out: usize, c0: usize, inp: usize| {
        let mut t = vec![0.0f32; inp * out];
        for c in 0..inp {
            for k in 0..out {
                t[c * out + k] = m[(r0 + k) * cols + c0 + c];
            }
        }
        t
    };
    let mut off = Offsets::default();
    let e = get("dynamics.egnn.embedding.weight")?;
    off.emb_w = put(&mut buf, transpose(e, 7, 0, nf, 0, 7));
    off.emb_b = put(
        &mut buf,
        get("dynamics.egnn.embedding.bias")?.iter().copied(),
    );
    let o = get("dynamics.egnn.embedding_out.weight")?;
    off.out_w = put(&mut buf, transpose(o, nf, 0, 6, 0, nf));
    off.out_b = put(
        &mut buf,
        get("dynamics.egnn.embedding_out.bias")?[..6]
            .iter()
            .copied(),
    );
    let wide = 2 * nf + 2;
    // first layer [nf, 2nf + 2] -> (Wᵀ [nf, 2nf] of [A | B], bias [2nf], [w_r | w_d])
    let split = |m: &[f32], b: &[f32]| {
        let mut t = vec![0.0f32; nf * 2 * nf];
        for c in 0..nf {
            for k in 0..nf {
                t[c * 2 * nf + k] = m[k * wide + c];
                t[c * 2 * nf + nf + k] = m[k * wide + nf + c];
            }
        }
        let mut bias = b.to_vec();
        bias.resize(2 * nf, 0.0);
        let ra: Vec<f32> = (0..nf)
            .map(|k| m[k * wide + 2 * nf])
            .chain((0..nf).map(|k| m[k * wide + 2 * nf + 1]))
            .collect();
        (t, bias, ra)
    };
    for l in 0..w.config.n_layers {
        let p = format!("dynamics.egnn.e_block_{l}.");
        let t = |s: &str| get(&format!("{p}{s}"));
        let mut bo = BlockOffsets::default();
        let (ew, eb, er) = split(t("gcl_0.edge_mlp.0.weight")?, t("gcl_0.edge_mlp.0.bias")?);
        bo.e_pre_w = put(&mut buf, ew);
        bo.e_pre_b = put(&mut buf, eb);
        bo.e_wr = put(&mut buf, er);
        bo.e_w2 = put(
            &mut buf,
            transpose(t("gcl_0.edge_mlp.2.weight")?, nf, 0, nf, 0, nf),
        );
        bo.e_b2 = put(&mut buf, t("gcl_0.edge_mlp.2.bias")?.iter().copied());
        bo.att_w = put(&mut buf, t("gcl_0.att_mlp.0.weight")?.iter().copied());
        bo.att_b = put(&mut buf, t("gcl_0.att_mlp.0.bias")?.iter().copied());
        bo.n_w1 = put(
            &mut buf,
            transpose(t("gcl_0.node_mlp.0.weight")?, 2 * nf, 0, nf, 0, 2 * nf),
        );
        bo.n_b1 = put(&mut buf, t("gcl_0.node_mlp.0.bias")?.iter().copied());
        bo.n_w2 = put(
            &mut buf,
            transpose(t("gcl_0.node_mlp.2.weight")?, nf, 0, nf, 0, nf),
        );
        bo.n_b2 = put(&mut buf, t("gcl_0.node_mlp.2.bias")?.iter().copied());
        let (cw, cb, cr) = split(
            t("gcl_equiv.coord_mlp.0.weight")?,
            t("gcl_equiv.coord_mlp.0.bias")?,
        );
        bo.c_pre_w = put(&mut buf, cw);
        bo.c_pre_b = put(&mut buf, cb);
        bo.c_wr = put(&mut buf, cr);
        bo.c_w2 = put(
            &mut buf,
            transpose(t("gcl_equiv.coord_mlp.2.weight")?, nf, 0, nf, 0, nf),
        );
        bo.c_b2 = put(&mut buf, t("gcl_equiv.coord_mlp.2.bias")?.iter().copied());
        bo.c_w3 = put(&mut buf, t("gcl_equiv.coord_mlp.4.weight")?.iter().copied());
        off.blocks.push(bo);
    }
    Ok((buf, off))
}

pub struct Pipelines {
    pub linear: wgpu::ComputePipeline,
    pub linear_layout: wgpu::BindGroupLayout,
    pub edge: wgpu::ComputePipeline,
    pub edge_layout: wgpu::BindGroupLayout,
    pub begin: wgpu::ComputePipeline,
    pub finish: wgpu::ComputePipeline,
    pub advance: wgpu::ComputePipeline,
}

/// A model ready to run: weights uploaded once, kernels compiled for its width.
pub struct GpuModel {
    pub ctx: Rc<GpuContext>,
    pub nf: usize,
    pub n_layers: usize,
    pub weights: wgpu::Buffer,
    pub offsets: Offsets,
    pub pipelines: Pipelines,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn dynamic_uniform(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: None,
        },
        count: None,
    }
}

impl GpuModel {
    pub fn new(ctx: Rc<GpuContext>, w: &Weights) -> Result<Self> {
        let (nf, n_layers) = (w.config.nf, w.config.n_layers);
        let sources = Sources::new(nf)?;
        let (packed, offsets) = pack(w)?;
        let device = &ctx.device;
        let weights = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("weights"),
            contents: bytemuck::cast_slice(&packed),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let module = |name: &str, src: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            })
        };
        let explicit = |name: &str, src: &str, layout: &wgpu::BindGroupLayout| {
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(name),
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: Some(&pl),
                module: &module(name, src),
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let auto = |name: &str, src: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module(name, src),
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let linear_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("linear"),
            entries: &[
                storage(0, true),
                storage(1, true),
                storage(2, false),
                dynamic_uniform(3),
            ],
        });
        let edge_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("edge"),
            entries: &[
                storage(0, true),
                storage(1, true),
                storage(2, true),
                storage(3, true),
                storage(4, true),
                storage(5, false),
                dynamic_uniform(6),
            ],
        });
        let pipelines = Pipelines {
            linear: explicit("linear", &sources.linear, &linear_layout),
            edge: explicit("edge", &sources.edge, &edge_layout),
            begin: auto("begin", &sources.begin),
            finish: auto("finish", &sources.finish),
            advance: auto("advance", &sources.advance),
            linear_layout,
            edge_layout,
        };
        ctx.wait()?;
        Ok(GpuModel {
            ctx,
            nf,
            n_layers,
            weights,
            offsets,
            pipelines,
        })
    }
}
