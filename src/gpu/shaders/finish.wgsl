// Last dispatch of a network evaluation, one workgroup per molecule (thread a = atom a):
//  ε̂_x = (x_L − x_0) with a non-finite velocity zeroed (spec §1.3 step 6, here per molecule), minus its mean;
//  then, for a reverse step, z_s = c_z·z_t − c_eps·ε̂ + c_noise·ε' with ε' drawn from the same Philox streams as
//  the CPU path and transformed by g (rotation of x, permutation of atoms), both made mean-free (spec §2.8).
// A molecule whose state turns non-finite is flagged and frozen, as on the CPU.

@group(0) @binding(0) var<storage, read> xf: array<f32>;            // [N, 4] coordinates after the last block
@group(0) @binding(1) var<storage, read_write> z: array<f32>;       // [N, 9]
@group(0) @binding(2) var<storage, read_write> eps: array<f32>;     // [N, 9]; columns 3..9 already hold ε̂_h
@group(0) @binding(3) var<storage, read> steps: array<Step>;
@group(0) @binding(4) var<storage, read> counter: array<u32>;
@group(0) @binding(5) var<storage, read> mols: array<vec4<u32>>;    // (first node, atom count, _, _)
@group(0) @binding(6) var<storage, read_write> failed: array<u32>;
@group(0) @binding(7) var<storage, read> perm: array<u32>;          // per node: g's source atom (local index)
@group(0) @binding(8) var<uniform> g: Globals;

var<workgroup> red: array<vec4<f32>, 32>;
var<workgroup> info: vec4<u32>;

fn nonfinite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7F800000u) == 0x7F800000u;
}

fn bad3(v: vec3<f32>) -> f32 {
    return select(0.0, 1.0, nonfinite(v.x) || nonfinite(v.y) || nonfinite(v.z));
}

// Sum over the workgroup's 32 threads (called from uniform control flow only).
fn sum32(a: u32, v: vec4<f32>) -> vec4<f32> {
    red[a] = v;
    workgroupBarrier();
    for (var s = 16u; s > 0u; s = s / 2u) {
        if (a < s) {
            red[a] = red[a] + red[a + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) a: u32) {
    let b = wg.x;
    let st = steps[counter[0]];
    if (a == 0u) {
        let m = mols[b];
        info = vec4<u32>(m.x, m.y, select(0u, 1u, st.update == 1u && failed[b] == 0u), 0u);
    }
    let inf = workgroupUniformLoad(&info);
    let start = inf.x;
    let cnt = inf.y;
    let live = a < cnt;
    let idx = start + a;
    let fcnt = f32(max(cnt, 1u));

    var vel = vec3<f32>(0.0, 0.0, 0.0);
    if (live) {
        vel = vec3<f32>(xf[idx * 4u] - z[idx * 9u], xf[idx * 4u + 1u] - z[idx * 9u + 1u],
                        xf[idx * 4u + 2u] - z[idx * 9u + 2u]);
    }
    let vs = sum32(a, vec4<f32>(vel, bad3(vel)));
    if (vs.w > 0.0) {
        vel = vec3<f32>(0.0, 0.0, 0.0);
    } else {
        vel = vel - vs.xyz / fcnt;
    }
    if (live) {
        eps[idx * 9u] = vel.x;
        eps[idx * 9u + 1u] = vel.y;
        eps[idx * 9u + 2u] = vel.z;
    }
    if (inf.z == 0u) {
        return;
    }

    var nx = vec3<f32>(0.0, 0.0, 0.0);
    var nh = array<f32, 6>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    if (live) {
        let key = vec2<u32>(g.seed_lo, g.seed_hi);
        let src = perm[idx];
        let v0 = normals4(key, vec4<u32>(src, b, st.stream, 0u));
        let v1 = normals4(key, vec4<u32>(src, b, st.stream, 1u));
        let v2 = normals4(key, vec4<u32>(src, b, st.stream, 2u));
        let n3 = v0.xyz;
        nx = vec3<f32>(dot(g.rot0.xyz, n3), dot(g.rot1.xyz, n3), dot(g.rot2.xyz, n3));
        nh = array<f32, 6>(v0.w, v1.x, v1.y, v1.z, v1.w, v2.x);
    }
    let ns = sum32(a, vec4<f32>(nx, 0.0));
    nx = nx - ns.xyz / fcnt;

    var zx = vec3<f32>(0.0, 0.0, 0.0);
    var zh = array<f32, 6>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    var bad = 0.0;
    if (live) {
        let zo = vec3<f32>(z[idx * 9u], z[idx * 9u + 1u], z[idx * 9u + 2u]);
        zx = zo * st.c_z - vel * st.c_eps + nx * st.c_noise;
        for (var c = 0u; c < 6u; c++) {
            let v = z[idx * 9u + 3u + c] * st.c_z - eps[idx * 9u + 3u + c] * st.c_eps + nh[c] * st.c_noise;
            zh[c] = v;
            if (nonfinite(v)) {
                bad = 1.0;
            }
        }
    }
    let zs = sum32(a, vec4<f32>(zx, 0.0));
    zx = zx - zs.xyz / fcnt;
    bad = max(bad, bad3(zx));
    let total_bad = sum32(a, vec4<f32>(bad, 0.0, 0.0, 0.0));
    if (live) {
        z[idx * 9u] = zx.x;
        z[idx * 9u + 1u] = zx.y;
        z[idx * 9u + 2u] = zx.z;
        for (var c = 0u; c < 6u; c++) {
            z[idx * 9u + 3u + c] = zh[c];
        }
    }
    if (a == 0u && total_bad.x > 0.0) {
        failed[b] = 1u;
    }
}
