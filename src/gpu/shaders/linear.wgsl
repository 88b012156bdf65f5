// y[r, out_off + k] = act(b[k] + Σ_c x[r, x_off + c] · Wᵀ[c, k]) (+ y[r, ...] when `residual`), for the node-wise
// layers of the EGNN: the per-node split of the first edge/coordinate layer, the node MLP and embedding_out.
// Wᵀ is stored transposed ([in, out], row-major) so that neighbouring threads read neighbouring weights.
// A workgroup computes ROWS nodes x COLS outputs; x is staged through workgroup memory KC columns at a time.

struct LinearOp {
    in_dim: u32,
    out_dim: u32,
    rows: u32,
    act: u32,       // 0 = none, 1 = SiLU
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    w_off: u32,     // Wᵀ [in_dim, out_dim] in `weights`
    b_off: u32,     // bias [out_dim] in `weights`
    residual: u32,  // 1: add to what y holds
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> op: LinearOp;

const ROWS: u32 = 8u;
const COLS: u32 = 64u;
const KC: u32 = 64u;

var<workgroup> xs: array<f32, 512>; // ROWS * KC

// exp's argument is clamped: WGSL implementations may assume no infinities
fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(min(-v, 80.0)));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let col = wg.x * COLS + lid;
    let row0 = wg.y * ROWS;
    var acc: array<f32, 8>;
    for (var r = 0u; r < ROWS; r++) {
        acc[r] = 0.0;
    }
    for (var k0 = 0u; k0 < op.in_dim; k0 += KC) {
        for (var r = 0u; r < ROWS; r++) {
            let row = row0 + r;
            let c = k0 + lid;
            var v = 0.0;
            if (row < op.rows && c < op.in_dim) {
                v = x[op.x_off + row * op.x_stride + c];
            }
            xs[r * KC + lid] = v;
        }
        workgroupBarrier();
        if (col < op.out_dim) {
            let kmax = min(KC, op.in_dim - k0);
            for (var c = 0u; c < kmax; c++) {
                let w = weights[op.w_off + (k0 + c) * op.out_dim + col];
                for (var r = 0u; r < ROWS; r++) {
                    acc[r] += xs[r * KC + c] * w;
                }
            }
        }
        workgroupBarrier();
    }
    if (col >= op.out_dim) {
        return;
    }
    let b = weights[op.b_off + col];
    for (var r = 0u; r < ROWS; r++) {
        let row = row0 + r;
        if (row < op.rows) {
            var v = acc[r] + b;
            if (op.act == 1u) {
                v = silu(v);
            }
            let idx = op.y_off + row * op.y_stride + col;
            if (op.residual == 1u) {
                v += y[idx];
            }
            y[idx] = v;
        }
    }
}
