//! The EGNN denoiser of EDM (spec §1) on the CPU: ε̂ = φ(z_t, t).
//!
//! Molecules are evaluated in groups of equal atom count `n` (B molecules, N = B·n nodes, E = B·n·(n−1) edges,
//! self pairs skipped: they carry no message and no coordinate update, spec §1.2). The nf×nf products run on
//! candle-core's CPU matmul; the per-edge element-wise work (first-layer assembly, SiLU, the attention gate, the
//! sums over neighbours) is fused in plain loops so no per-edge temporary is allocated per operation.
//!
//! First-layer split: `W·[h_i ‖ h_j ‖ r_ij ‖ d0_ij] + b = (A·h_i + b) + B·h_j + w_r·r_ij + w_d·d0_ij`, where
//! A, B are the first and second nf columns of W: the 2nf-wide product is done once per node, not per edge.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::weights::Weights;

/// coords_range of EDM's EquivariantUpdate: every block gets the full 15 (spec §5.1).
pub const COORDS_RANGE: f32 = 15.0;
/// norm_constant of the coordinate difference normalisation.
pub const NORM_CONSTANT: f32 = 1.0;

/// A linear layer stored for `x · Wᵀ`: `w_t` is `[in, out]`.
struct Linear {
    w_t: Tensor,
    bias: Vec<f32>,
    out: usize,
}

/// An edge MLP (the GCL's messages, the coordinate update's hidden features): `first`, SiLU, `second`, SiLU.
struct EdgeMlp {
    first: EdgeInput,
    second: Linear,
}

/// First layer of an edge or coordinate MLP, split per node.
struct EdgeInput {
    /// `[nf, 2nf]`: columns 0..nf give A·h (receiver i), nf..2nf give B·h (sender j).
    ab_t: Tensor,
    w_r: Vec<f32>,
    w_d: Vec<f32>,
    bias: Vec<f32>,
}

struct Block {
    edge: EdgeMlp,
    att_w: Vec<f32>,
    att_b: f32,
    node_1: Linear,
    node_2: Linear,
    coord: EdgeMlp,
    coord_3: Vec<f32>,
}

/// The EDM denoiser with its weights laid out for the CPU.
pub struct Egnn {
    pub nf: usize,
    embedding: Linear,
    blocks: Vec<Block>,
    embedding_out: Linear,
}

fn transpose(data: &[f32], rows: usize, cols: usize, col0: usize, ncols: usize) -> Vec<f32> {
    // W is [rows, cols] (PyTorch [out, in]); return W[:, col0..col0+ncols]ᵀ as [ncols, rows].
    let mut out = vec![0.0f32; ncols * rows];
    for r in 0..rows {
        for c in 0..ncols {
            out[c * rows + r] = data[r * cols + col0 + c];
        }
    }
    out
}

fn tensor(data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
}

impl Linear {
    fn new(w: &Weights, prefix: &str, bias: bool) -> Result<Self> {
        let t = w.get(&format!("{prefix}.weight"));
        let (out, inp) = (t.shape[0], t.shape[1]);
        Ok(Linear {
            w_t: tensor(transpose(&t.data, out, inp, 0, inp), inp, out)?,
            bias: if bias {
                w.get(&format!("{prefix}.bias")).data.clone()
            } else {
                vec![0.0; out]
            },
            out,
        })
    }

    /// `x [rows, in] -> x·Wᵀ + b [rows, out]`.
    fn forward(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>> {
        let mut y = matmul(x, rows, &self.w_t)?;
        for row in y.chunks_exact_mut(self.out) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
            }
        }
        Ok(y)
    }
}

impl EdgeMlp {
    /// `prefix.0` (the first layer, split per node) and `prefix.2`.
    fn new(w: &Weights, prefix: &str, nf: usize) -> Result<Self> {
        Ok(Self {
            first: EdgeInput::new(w, &format!("{prefix}.0"), nf)?,
            second: Linear::new(w, &format!("{prefix}.2"), true)?,
        })
    }
}

impl EdgeInput {
    fn new(w: &Weights, prefix: &str, nf: usize) -> Result<Self> {
        let t = w.get(&format!("{prefix}.weight"));
        let cols = 2 * nf + 2;
        let col = |c: usize| (0..nf).map(|r| t.data[r * cols + c]).collect::<Vec<f32>>();
        // ab_t[k, c] = A[c, k] = W[c, k];  ab_t[k, nf + c] = B[c, k] = W[c, nf + k]
        let mut ab = vec![0.0f32; nf * 2 * nf];
        for k in 0..nf {
            for c in 0..nf {
                ab[k * 2 * nf + c] = t.data[c * cols + k];
                ab[k * 2 * nf + nf + c] = t.data[c * cols + nf + k];
            }
        }
        Ok(EdgeInput {
            ab_t: tensor(ab, nf, 2 * nf)?,
            w_r: col(2 * nf),
            w_d: col(2 * nf + 1),
            bias: w.get(&format!("{prefix}.bias")).data.clone(),
        })
    }
}

/// `x [rows, k] · w_t [k, m]` with candle's CPU matmul.
fn matmul(x: Vec<f32>, rows: usize, w_t: &Tensor) -> Result<Vec<f32>> {
    let k = w_t.dims()[0];
    if rows == 0 {
        return Ok(Vec::new());
    }
    let xt = Tensor::from_vec(x, (rows, k), &Device::Cpu)?;
    Ok(xt.matmul(w_t)?.flatten_all()?.to_vec1::<f32>()?)
}

/// `x [rows, k] · w_t [k, m]` as a candle tensor; read it with [`cpu_slice`] (no copy).
#[inline(always)]
fn matmul_tensor(x: &[f32], rows: usize, w_t: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_slice(x, (rows, w_t.dims()[0]), &Device::Cpu)?.matmul(w_t)?)
}

/// The contiguous f32 data of a CPU tensor.
fn cpu_slice<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
) -> Result<&'a [f32]> {
    match storage {
        candle_core::Storage::Cpu(c) => {
            let all = c.as_slice::<f32>()?;
            Ok(&all[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()])
        }
        _ => Err(Error::Input("the CPU EGNN got a non-CPU tensor".into())),
    }
}

/// exp for the SiLU hot loops: range reduction to 2^k·e^r, |r| ≤ ln2/2, degree-7 polynomial; relative error
/// below 5e-7 on the clamped range. Branch-free and without float→int casts, so the loops vectorise.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer, which then sits in the low mantissa bits
    const SHIFT: f32 = 12_582_912.0;
    // max/min (not clamp): they compile to vmaxps/vminps; a NaN input still gives a NaN SiLU via x / (1 + e)
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let kf = x * std::f32::consts::LOG2_E + SHIFT;
    let k = kf - SHIFT;
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668
                        + r * (0.008_333_334 + r * (0.001_388_889 + r * 0.000_198_412_7))))));
    // low bits of kf are k (two's complement); (k + 127) << 23 is the exponent field of 2^k, k in [-126, 127]
    let bits = kf.to_bits().wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + fast_exp(-x))
}

/// `out = SiLU(row + bias)`.
#[inline(always)]
fn silu_row(out: &mut [f32], row: &[f32], bias: &[f32]) {
    for ((u, &v), &b) in out.iter_mut().zip(row).zip(bias) {
        *u = silu(v + b);
    }
}

#[inline(always)]
fn silu_in_place(v: &mut [f32], bias: &[f32]) {
    for row in v.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x = silu(*x + b);
        }
    }
}

/// Dot product with 8 independent partial sums, so it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Geometry of a group: per directed edge (i, j≠i) the squared distance, and the normalised difference.
struct Edges {
    n: usize,
    r: Vec<f32>,
    delta: Vec<[f32; 3]>,
}

impl Edges {
    fn new(x: &[f32], b: usize, n: usize) -> Self {
        let e = b * n * n.saturating_sub(1);
        let mut r = Vec::with_capacity(e);
        let mut delta = Vec::with_capacity(e);
        for m in 0..b {
            for i in 0..n {
                let xi = &x[(m * n + i) * 3..(m * n + i) * 3 + 3];
                for j in (0..n).filter(|&j| j != i) {
                    let xj = &x[(m * n + j) * 3..(m * n + j) * 3 + 3];
                    let d = [xi[0] - xj[0], xi[1] - xj[1], xi[2] - xj[2]];
                    let rr = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                    let norm = (rr + 1e-8).sqrt() + NORM_CONSTANT;
                    r.push(rr);
                    delta.push([d[0] / norm, d[1] / norm, d[2] / norm]);
                }
            }
        }
        Edges { n, r, delta }
    }

    /// The receiving node i of edge e (edges run i-major, j ≠ i inner).
    #[inline(always)]
    fn receiver(&self, e: usize) -> usize {
        e / (self.n - 1)
    }
}

impl Egnn {
    pub fn new(w: &Weights) -> Result<Self> {
        let nf = w.config.nf;
        let mut blocks = Vec::with_capacity(w.config.n_layers);
        for i in 0..w.config.n_layers {
            let p = format!("dynamics.egnn.e_block_{i}");
            blocks.push(Block {
                edge: EdgeMlp::new(w, &format!("{p}.gcl_0.edge_mlp"), nf)?,
                att_w: w.get(&format!("{p}.gcl_0.att_mlp.0.weight")).data.clone(),
                att_b: w.get(&format!("{p}.gcl_0.att_mlp.0.bias")).data[0],
                node_1: Linear::new(w, &format!("{p}.gcl_0.node_mlp.0"), true)?,
                node_2: Linear::new(w, &format!("{p}.gcl_0.node_mlp.2"), true)?,
                coord: EdgeMlp::new(w, &format!("{p}.gcl_equiv.coord_mlp"), nf)?,
                coord_3: w
                    .get(&format!("{p}.gcl_equiv.coord_mlp.4.weight"))
                    .data
                    .clone(),
            });
        }
        Ok(Egnn {
            nf,
            embedding: Linear::new(w, "dynamics.egnn.embedding", true)?,
            blocks,
            embedding_out: Linear::new(w, "dynamics.egnn.embedding_out", true)?,
        })
    }

    pub fn n_layers(&self) -> usize {
        self.blocks.len()
    }

    /// ε̂ for B molecules of `n` atoms each (spec §1.3).
    ///
    /// * `z`: `[B, n, 9]` rows (x, y, z, one-hot/4 ×5, charge/10), x mean-free per molecule
    /// * `t`: `[B]` normalised times t/T
    /// * returns `[B, n, 9]`: (ε̂_x mean-free, ε̂_h)
    pub fn eps(&self, n: usize, z: &[f32], t: &[f32]) -> Result<Vec<f32>> {
        let b = t.len();
        if n == 0 || z.len() != b * n * 9 {
            return Err(Error::Input(format!(
                "denoiser input has {} values, expected {b} molecules x {n} atoms x 9",
                z.len()
            )));
        }
        let nodes = b * n;
        let mut x: Vec<f32> = z.chunks_exact(9).flat_map(|r| [r[0], r[1], r[2]]).collect();
        let x_in = x.clone();
        let mut h_in = Vec::with_capacity(nodes * 7);
        for (k, row) in z.chunks_exact(9).enumerate() {
            h_in.extend_from_slice(&row[3..9]);
            h_in.push(t[k / n]);
        }
        let h_out = self.forward(h_in, &mut x, b, n)?;
        let x_out = x;
        let mut out = vec![0.0f32; nodes * 9];
        let mut vel: Vec<f32> = x_out.iter().zip(&x_in).map(|(a, b)| a - b).collect();
        if vel.iter().any(|v| !v.is_finite()) {
            vel.iter_mut().for_each(|v| *v = 0.0); // spec §1.3 step 6
        }
        for m in 0..b {
            let mut mean = [0.0f64; 3];
            for i in 0..n {
                for c in 0..3 {
                    mean[c] += vel[(m * n + i) * 3 + c] as f64;
                }
            }
            for i in 0..n {
                let k = m * n + i;
                for c in 0..3 {
                    out[k * 9 + c] = vel[k * 3 + c] - (mean[c] / n as f64) as f32;
                }
                out[k * 9 + 3..k * 9 + 9].copy_from_slice(&h_out[k * 7..k * 7 + 6]);
            }
        }
        Ok(out)
    }

    /// EGNN forward (spec §1.4): h `[N, 7]`, x `[N, 3]` (updated in place) -> h_out `[N, 7]`.
    ///
    /// On x86-64 with AVX2 and FMA the per-edge loops are compiled for those instructions (runtime check);
    /// everywhere else (wasm: simd128 from the build flags) the portable build runs.
    fn forward(&self, h_in: Vec<f32>, x: &mut [f32], b: usize, n: usize) -> Result<Vec<f32>> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for (checked above).
            return unsafe { self.forward_avx2(h_in, x, b, n) };
        }
        self.forward_impl(h_in, x, b, n)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(
        &self,
        h_in: Vec<f32>,
        x: &mut [f32],
        b: usize,
        n: usize,
    ) -> Result<Vec<f32>> {
        self.forward_impl(h_in, x, b, n)
    }

    #[inline(always)]
    fn forward_impl(&self, h_in: Vec<f32>, x: &mut [f32], b: usize, n: usize) -> Result<Vec<f32>> {
        let nf = self.nf;
        let nodes = b * n;
        let mut edges = Edges::new(x, b, n);
        let d0 = edges.r.clone(); // squared distances of the input coordinates, fixed for all blocks
        let mut h = self.embedding.forward(h_in, nodes)?;
        let e_count = d0.len();
        // Edges are processed in chunks so the chunk's first-layer activations and products stay in cache.
        let chunk = EDGE_CHUNK.min(e_count.max(1));
        let mut pre = vec![0.0f32; chunk * nf];
        for (l, block) in self.blocks.iter().enumerate() {
            if l > 0 {
                edges = Edges::new(x, b, n); // x moved in the previous block
            }
            // ---- GCL: messages, attention, sum over neighbours, node MLP with residual
            let ab = self.node_terms(&block.edge.first, &h, nodes)?;
            let mut agg = vec![0.0f32; nodes * nf];
            for e0 in (0..e_count).step_by(chunk) {
                let range = e0..(e0 + chunk).min(e_count);
                let m = self.edge_mlp(&block.edge, &ab, &edges, &d0, range.clone(), &mut pre)?;
                for (e, msg) in range.zip(m.chunks_exact(nf)) {
                    let gate = 1.0 / (1.0 + (-(dot(msg, &block.att_w) + block.att_b)).exp());
                    let i = edges.receiver(e);
                    for (a, &v) in agg[i * nf..(i + 1) * nf].iter_mut().zip(msg) {
                        *a += v * gate;
                    }
                }
            }
            let mut cat = Vec::with_capacity(nodes * 2 * nf);
            for k in 0..nodes {
                cat.extend_from_slice(&h[k * nf..(k + 1) * nf]);
                cat.extend_from_slice(&agg[k * nf..(k + 1) * nf]);
            }
            let mut u = matmul(cat, nodes, &block.node_1.w_t)?;
            silu_in_place(&mut u, &block.node_1.bias);
            let upd = block.node_2.forward(u, nodes)?;
            for (hv, uv) in h.iter_mut().zip(&upd) {
                *hv += uv;
            }
            // ---- EquivariantUpdate with the updated h
            let ab = self.node_terms(&block.coord.first, &h, nodes)?;
            for e0 in (0..e_count).step_by(chunk) {
                let range = e0..(e0 + chunk).min(e_count);
                let m = self.edge_mlp(&block.coord, &ab, &edges, &d0, range.clone(), &mut pre)?;
                for (e, hidden) in range.zip(m.chunks_exact(nf)) {
                    let s = dot(hidden, &block.coord_3).tanh() * COORDS_RANGE;
                    let i = edges.receiver(e);
                    let d = edges.delta[e];
                    for c in 0..3 {
                        x[i * 3 + c] += d[c] * s;
                    }
                }
            }
        }
        self.embedding_out.forward(h, nodes)
    }

    /// Per-node terms of a first layer: `[N, 2nf]` rows (A·h_i + b, B·h_i).
    #[inline(always)]
    fn node_terms(&self, layer: &EdgeInput, h: &[f32], nodes: usize) -> Result<Vec<f32>> {
        let nf = self.nf;
        let mut ab = matmul(h.to_vec(), nodes, &layer.ab_t)?;
        for row in ab.chunks_exact_mut(2 * nf) {
            for (v, b) in row[..nf].iter_mut().zip(&layer.bias) {
                *v += b;
            }
        }
        Ok(ab)
    }

    /// The edge MLP's outputs `SiLU(SiLU(first layer) · W2ᵀ + b2)` of the edges in `range`, `nf` per edge,
    /// written over `pre` (scratch for the first layer's activations, at least `range.len() · nf` long).
    #[inline(always)]
    fn edge_mlp<'p>(
        &self,
        mlp: &EdgeMlp,
        ab: &[f32],
        edges: &Edges,
        d0: &[f32],
        range: std::ops::Range<usize>,
        pre: &'p mut [f32],
    ) -> Result<&'p [f32]> {
        let rows = range.len();
        let out = &mut pre[..rows * self.nf];
        self.first_layer(&mlp.first, ab, edges, d0, range, out);
        let y = matmul_tensor(out, rows, &mlp.second.w_t)?;
        let (storage, layout) = y.storage_and_layout();
        let y = cpu_slice(&storage, layout)?;
        for (o, row) in out.chunks_exact_mut(self.nf).zip(y.chunks_exact(self.nf)) {
            silu_row(o, row, &mlp.second.bias);
        }
        Ok(out)
    }

    /// `pre[e − e0] = SiLU(A·h_i + b + B·h_j + w_r·r_ij + w_d·d0_ij)` for the edges e0..e1.
    #[inline(always)]
    fn first_layer(
        &self,
        layer: &EdgeInput,
        ab: &[f32],
        edges: &Edges,
        d0: &[f32],
        range: std::ops::Range<usize>,
        pre: &mut [f32],
    ) {
        let nf = self.nf;
        let n = edges.n;
        for (k, e) in range.enumerate() {
            let i = edges.receiver(e);
            let jj = e % (n - 1);
            let i_local = i % n;
            let j = i - i_local + if jj < i_local { jj } else { jj + 1 };
            let a = &ab[i * 2 * nf..i * 2 * nf + nf];
            let bj = &ab[j * 2 * nf + nf..(j + 1) * 2 * nf];
            let (r, d) = (edges.r[e], d0[e]);
            let out = &mut pre[k * nf..(k + 1) * nf];
            for ((((o, &av), &bv), &wr), &wd) in out
                .iter_mut()
                .zip(a)
                .zip(bj)
                .zip(&layer.w_r)
                .zip(&layer.w_d)
            {
                *o = silu(av + bv + wr * r + wd * d);
            }
        }
    }
}

/// Edges per chunk of the per-edge MLPs (1024 × nf floats: 1 MiB at nf 256).
const EDGE_CHUNK: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((fast_exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }
}
