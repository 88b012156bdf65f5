//! Equivariant: EDM, the E(3)-equivariant diffusion model for 3D molecules (Hoogeboom et al., 2022), with its
//! EGNN denoiser, in Rust for the CPU, the GPU and the browser.
//!
//! The core is pure Rust and platform-free:
//! * [`schedule`]: the polynomial_2 noise schedule and step coefficients
//! * [`rng`]: the portable counter-based noise every backend draws
//! * [`weights`]: safetensors weights with validation
//! * [`egnn`]: the denoiser ε̂ = φ(z_t, t) on the CPU (candle-core)
//! * [`sampler`]: the step-by-step ancestral sampler
//! * [`chemistry`], [`export`]: bonds, stability, XYZ and SDF
//!
//! Thin layers around it: [`gpu`] (the same sampler as WGSL compute shaders through wgpu: Vulkan, Metal, DX12
//! natively, WebGPU in the browser), [`convert`] and the `equivariant` CLI (native), `wasm` (browser bindings).

// Numeric code indexes parallel arrays (atoms x channels); index loops read closer to the math.
#![allow(clippy::needless_range_loop)]

pub mod chemistry;
pub mod egnn;
pub mod error;
pub mod export;
pub mod gpu;
pub mod qm9;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod weights;

#[cfg(not(target_arch = "wasm32"))]
pub mod convert;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};
