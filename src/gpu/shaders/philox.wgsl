// Philox4x32-10 and Box–Muller exactly as src/rng.rs: key = seed, counter = (atom, molecule, stream, block).

fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    // 32 x 32 -> 64-bit product from 16-bit halves (WGSL has no 64-bit integers): (hi, lo)
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let lo = (ll & 0xFFFFu) | (mid << 16u);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, lo);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

fn uniform01(bits: u32) -> f32 {
    return (f32(bits >> 8u) + 0.5) * (1.0 / 16777216.0);
}

// cos/sin of 2πu computed as −cos/−sin of 2πu − π: WGSL guarantees their accuracy on [−π, π] only.
fn normals4(key: vec2<u32>, counter: vec4<u32>) -> vec4<f32> {
    let b = philox(counter, key);
    let pi = 3.14159265358979323846;
    let r0 = sqrt(-2.0 * log(uniform01(b.x)));
    let t0 = 2.0 * pi * uniform01(b.y) - pi;
    let r1 = sqrt(-2.0 * log(uniform01(b.z)));
    let t1 = 2.0 * pi * uniform01(b.w) - pi;
    return vec4<f32>(-r0 * cos(t0), -r0 * sin(t0), -r1 * cos(t1), -r1 * sin(t1));
}
