//! WGSL sources of the GPU backend. Each kernel is one file in `shaders/`; the width-dependent ones are
//! specialised by substituting `{NF}` (channels = threads per workgroup), `{J}` (edges per tile) and `{NFJ}`.

use crate::{Error, Result};

const COMMON: &str = include_str!("shaders/common.wgsl");
const PHILOX: &str = include_str!("shaders/philox.wgsl");
const LINEAR: &str = include_str!("shaders/linear.wgsl");
const EDGE: &str = include_str!("shaders/edge.wgsl");
const BEGIN: &str = include_str!("shaders/begin.wgsl");
const FINISH: &str = include_str!("shaders/finish.wgsl");
const ADVANCE: &str = include_str!("shaders/advance.wgsl");

/// Bytes of workgroup memory the edge kernel's activation tile may use (half of WebGPU's 16 KiB default).
const EDGE_TILE_BYTES: usize = 8192;

/// Widths the kernels support: a power of two (tree reductions) from 8 to 256 (one thread per channel, and
/// WebGPU's default limit of 256 invocations per workgroup).
pub fn check_width(nf: usize) -> Result<()> {
    if nf.is_power_of_two() && (8..=256).contains(&nf) {
        Ok(())
    } else {
        Err(Error::Gpu(format!(
            "the GPU backend needs a width (nf) that is a power of two from 8 to 256; this model has {nf}"
        )))
    }
}

/// Neighbours per tile in the edge kernel: J·nf floats fill the tile, J ≤ nf (thread e < J prepares edge e).
pub fn edge_tile(nf: usize) -> usize {
    (EDGE_TILE_BYTES / 4 / nf).min(nf).min(32)
}

/// The kernels of one model width.
#[derive(Clone, Debug)]
pub struct Sources {
    pub linear: String,
    pub edge: String,
    pub begin: String,
    pub finish: String,
    pub advance: String,
}

impl Sources {
    pub fn new(nf: usize) -> Result<Self> {
        check_width(nf)?;
        let j = edge_tile(nf);
        let fill = |s: &str| {
            s.replace("{NFJ}", &(nf * j).to_string())
                .replace("{NF}", &nf.to_string())
                .replace("{J}", &j.to_string())
        };
        Ok(Sources {
            linear: LINEAR.to_string(),
            edge: fill(EDGE),
            begin: fill(&format!("{COMMON}\n{BEGIN}")),
            finish: fill(&format!("{COMMON}\n{PHILOX}\n{FINISH}")),
            advance: ADVANCE.to_string(),
        })
    }

    /// (name, source) of every kernel, for validation.
    pub fn all(&self) -> [(&'static str, &str); 5] {
        [
            ("linear", &self.linear),
            ("edge", &self.edge),
            ("begin", &self.begin),
            ("finish", &self.finish),
            ("advance", &self.advance),
        ]
    }
}
