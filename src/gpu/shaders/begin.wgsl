// First dispatch of a network evaluation: x ← z[:, 0..3] and h ← embedding([z[:, 3..9], t]) (spec §1.3, §1.4).

@group(0) @binding(0) var<storage, read> weights: array<f32>;
@group(0) @binding(1) var<storage, read> z: array<f32>;           // [N, 9]
@group(0) @binding(2) var<storage, read> steps: array<Step>;
@group(0) @binding(3) var<storage, read> counter: array<u32>;
@group(0) @binding(4) var<storage, read_write> h2: array<f32>;    // [N, 2NF]: h | agg
@group(0) @binding(5) var<storage, read_write> xc: array<f32>;    // [N, 4]
@group(0) @binding(6) var<uniform> g: Globals;

const NF: u32 = {NF}u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wg.y;
    let k = wg.x * 64u + lid;
    if (i >= g.n_nodes) {
        return;
    }
    let t = steps[counter[0]].t_norm;
    if (k < NF) {
        var v = weights[g.emb_b + k] + weights[g.emb_w + 6u * NF + k] * t;
        for (var c = 0u; c < 6u; c++) {
            v += weights[g.emb_w + c * NF + k] * z[i * 9u + 3u + c];
        }
        h2[i * 2u * NF + k] = v;
    }
    if (k == 0u) {
        xc[i * 4u] = z[i * 9u];
        xc[i * 4u + 1u] = z[i * 9u + 1u];
        xc[i * 4u + 2u] = z[i * 9u + 2u];
        xc[i * 4u + 3u] = 0.0;
    }
}
