//! The portable, counter-based random numbers every backend draws (CPU, GPU, wasm): same seed, same molecules.
//!
//! Generator: Philox4x32-10 (Salmon et al., SC'11), u32 arithmetic only, so WGSL can compute the identical bits.
//! * key = (seed low 32 bits, seed high 32 bits)
//! * counter = (atom, molecule, stream, block)
//!
//! Streams: [`STREAM_PRIOR`] for z_T, `t` (1..=T) for the noise ε' of the reverse step that leaves timestep t,
//! 0 for the noise of the final step p(x | z_0), [`STREAM_SIZE`] for drawing a molecule's atom count.
//! One atom's 9 normals (x, y, z, then the 6 feature channels) come from blocks 0, 1, 2 (12 normals, first 9 used).
//!
//! u32 -> uniform: `((bits >> 8) + 0.5) · 2⁻²⁴`, strictly inside (0, 1). Normals: Box–Muller in f32,
//! `sqrt(−2 ln u₀)·cos(2π u₁)` and `…·sin(2π u₁)` for the pairs (u₀, u₁), (u₂, u₃) of each block.

pub const STREAM_PRIOR: u32 = 0xFFFF_FFFF;
pub const STREAM_SIZE: u32 = 0xFFFF_FFFE;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Uniform in (0, 1) from 32 random bits.
#[inline]
pub fn uniform(bits: u32) -> f32 {
    ((bits >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// The key of a seed.
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Four standard normals from one Philox block.
pub fn normals4(key: [u32; 2], counter: [u32; 4]) -> [f32; 4] {
    let b = philox4x32_10(counter, key);
    let mut out = [0.0f32; 4];
    for p in 0..2 {
        let u0 = uniform(b[2 * p]);
        let u1 = uniform(b[2 * p + 1]);
        let r = (-2.0 * u0.ln()).sqrt();
        let th = std::f32::consts::TAU * u1;
        out[2 * p] = r * th.cos();
        out[2 * p + 1] = r * th.sin();
    }
    out
}

/// The 9 standard normals of one atom in one stream: (x, y, z, h0..h5).
pub fn atom_normals(seed: u64, stream: u32, molecule: u32, atom: u32) -> [f32; 9] {
    let k = key(seed);
    let mut out = [0.0f32; 9];
    for block in 0..3u32 {
        let v = normals4(k, [atom, molecule, stream, block]);
        for (i, x) in v.iter().enumerate() {
            let idx = block as usize * 4 + i;
            if idx < 9 {
                out[idx] = *x;
            }
        }
    }
    out
}

/// A uniform number in (0, 1) for a molecule-level choice (its atom count).
pub fn molecule_uniform(seed: u64, molecule: u32) -> f64 {
    let b = philox4x32_10([0, molecule, STREAM_SIZE, 0], key(seed));
    // 53 bits from two words for a fine-grained inverse CDF.
    let hi = (b[0] >> 5) as f64;
    let lo = (b[1] >> 6) as f64;
    (hi * 67_108_864.0 + lo) / 9_007_199_254_740_992.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
                [0xA4093822, 0x299F31D0]
            ),
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]
        );
    }

    #[test]
    fn normals_have_unit_moments() {
        let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0.0f64);
        for atom in 0..20_000u32 {
            for v in atom_normals(7, 3, 1, atom) {
                s += v as f64;
                s2 += (v as f64).powi(2);
                n += 1.0;
            }
        }
        let mean = s / n;
        let var = s2 / n - mean * mean;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
    }
}
