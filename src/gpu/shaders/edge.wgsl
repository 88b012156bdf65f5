// The fused per-edge part of one EGNN block, for every receiving atom i (one workgroup, NF threads, thread k owns
// channel k), over all its neighbours j ≠ i in the same molecule, J neighbours at a time:
//   pre_ij = P_i + Q_j + w_r·r_ij + w_d·d0_ij        (P_i = A·h_i + b1, Q_j = B·h_j from the node-wise layer)
//   m_ij   = SiLU(W2 · SiLU(pre_ij) + b2)            (W2 read once per tile of J edges, SiLU(pre) in workgroup memory)
//   mode 0 (gcl_0):      agg_i = Σ_j m_ij · sigmoid(w_a·m_ij + b_a)                  -> h2[i, NF..2NF]
//   mode 1 (gcl_equiv):  x_i' = x_i + Σ_j Δ_ij · tanh(w_c·m_ij) · 15                 -> x_next[i]
// with r_ij = |x_i − x_j|², d0_ij = |x0_i − x0_j|², Δ_ij = (x_i − x_j) / (sqrt(r_ij + 1e-8) + 1).
// No per-edge NF-wide tensor ever reaches global memory.

struct EdgeOp {
    wr_off: u32,    // [NF] weights of r_ij in the first layer; d0_ij's follow at wr_off + NF
    w2_off: u32,    // W2ᵀ [NF, NF]
    b2_off: u32,    // [NF]
    w3_off: u32,    // [NF]: attention weights (mode 0) or the coordinate head (mode 1)
    b3_off: u32,    // attention bias (mode 0)
    mode: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<f32>;
@group(0) @binding(1) var<storage, read> pq: array<f32>;              // [N, 2NF]: P | Q
@group(0) @binding(2) var<storage, read> xc: array<f32>;              // [N, 4] current coordinates
@group(0) @binding(3) var<storage, read> z: array<f32>;               // [N, 9] input state: x0 = z[:, 0..3]
@group(0) @binding(4) var<storage, read> nodes: array<vec4<u32>>;     // (molecule, first node, atom count, _)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;       // mode 0: h2 [N, 2NF]; mode 1: x_next [N, 4]
@group(0) @binding(6) var<uniform> op: EdgeOp;

const NF: u32 = {NF}u;
const J: u32 = {J}u;

var<workgroup> s: array<f32, {NFJ}>;      // J x NF activations, reused for the gate/head reductions
var<workgroup> geo: array<vec4<f32>, {J}>; // Δ_ij and a validity flag
var<workgroup> ra: array<vec2<f32>, {J}>;  // (r_ij, d0_ij)
var<workgroup> info: vec4<u32>;

// exp's argument is clamped: WGSL implementations may assume no infinities
fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(min(-v, 80.0)));
}

@compute @workgroup_size({NF})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) k: u32) {
    let i = wg.x;
    if (k == 0u) {
        info = nodes[i];
    }
    let inf = workgroupUniformLoad(&info);
    let start = inf.y;
    let cnt = inf.z;
    let xi = vec3<f32>(xc[i * 4u], xc[i * 4u + 1u], xc[i * 4u + 2u]);
    let x0i = vec3<f32>(z[i * 9u], z[i * 9u + 1u], z[i * 9u + 2u]);
    let pi = pq[i * 2u * NF + k];
    let wr = weights[op.wr_off + k];
    let wd = weights[op.wr_off + NF + k];
    let b2 = weights[op.b2_off + k];
    let w3 = weights[op.w3_off + k];
    let b3 = weights[op.b3_off];
    var acc = 0.0;
    var accx = vec3<f32>(0.0, 0.0, 0.0);
    var m: array<f32, {J}>;
    for (var j0 = 0u; j0 < cnt; j0 += J) {
        if (k < J) {
            let j = start + j0 + k;
            var g = vec4<f32>(0.0, 0.0, 0.0, 0.0);
            var a = vec2<f32>(0.0, 0.0);
            if (j0 + k < cnt && j != i) {
                let d = xi - vec3<f32>(xc[j * 4u], xc[j * 4u + 1u], xc[j * 4u + 2u]);
                let d0 = x0i - vec3<f32>(z[j * 9u], z[j * 9u + 1u], z[j * 9u + 2u]);
                let r = dot(d, d);
                a = vec2<f32>(r, dot(d0, d0));
                g = vec4<f32>(d / (sqrt(r + 1e-8) + 1.0), 1.0);
            }
            geo[k] = g;
            ra[k] = a;
        }
        workgroupBarrier();
        for (var e = 0u; e < J; e++) {
            var v = 0.0;
            if (geo[e].w != 0.0) {
                let j = start + j0 + e;
                v = silu(pi + pq[j * 2u * NF + NF + k] + wr * ra[e].x + wd * ra[e].y);
            }
            s[e * NF + k] = v;
        }
        workgroupBarrier();
        for (var e = 0u; e < J; e++) {
            m[e] = b2;
        }
        for (var c = 0u; c < NF; c++) {
            let w = weights[op.w2_off + c * NF + k];
            for (var e = 0u; e < J; e++) {
                m[e] += s[e * NF + c] * w;
            }
        }
        workgroupBarrier();
        for (var e = 0u; e < J; e++) {
            m[e] = silu(m[e]);
            s[e * NF + k] = m[e] * w3;
        }
        workgroupBarrier();
        for (var stride = NF / 2u; stride > 0u; stride = stride / 2u) {
            if (k < stride) {
                for (var e = 0u; e < J; e++) {
                    s[e * NF + k] += s[e * NF + k + stride];
                }
            }
            workgroupBarrier();
        }
        for (var e = 0u; e < J; e++) {
            if (geo[e].w != 0.0) {
                let dotv = s[e * NF];
                if (op.mode == 0u) {
                    acc += m[e] / (1.0 + exp(min(-(dotv + b3), 80.0)));
                } else {
                    // tanh through exp of a non-positive argument: no inf/inf for large |φ| on any backend
                    let q = exp(-2.0 * abs(dotv));
                    let th = sign(dotv) * (1.0 - q) / (1.0 + q);
                    accx += geo[e].xyz * (th * 15.0);
                }
            }
        }
        workgroupBarrier();
    }
    if (op.mode == 0u) {
        out[i * 2u * NF + NF + k] = acc;
    } else if (k == 0u) {
        out[i * 4u] = xi.x + accx.x;
        out[i * 4u + 1u] = xi.y + accx.y;
        out[i * 4u + 2u] = xi.z + accx.z;
        out[i * 4u + 3u] = 0.0;
    }
}
