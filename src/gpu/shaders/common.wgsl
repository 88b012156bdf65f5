// Shared by begin.wgsl and finish.wgsl: the per-step parameter table and the run's constants.

// One entry per network evaluation of the run, indexed by the step counter (the sampler's position).
struct Step {
    t_norm: f32,    // t / T, the network's time input
    c_z: f32,       // z_s = c_z · z_t − c_eps · ε̂ + c_noise · ε'   (spec §2.8)
    c_eps: f32,
    c_noise: f32,
    stream: u32,    // random stream of ε' (= t)
    update: u32,    // 1: reverse step (update z); 0: only write ε̂ (the final step, decoded on the host)
    _pad0: u32,
    _pad1: u32,
}

struct Globals {
    n_nodes: u32,
    n_mols: u32,
    seed_lo: u32,
    seed_hi: u32,
    emb_w: u32,     // embedding Wᵀ [7, NF] in `weights`
    emb_b: u32,     // embedding bias [NF]
    _pad0: u32,
    _pad1: u32,
    rot0: vec4<f32>, // rows of g's orthogonal matrix (xyz)
    rot1: vec4<f32>,
    rot2: vec4<f32>,
}
