//! The GPU backend: EDM's EGNN and the whole sampling loop as WGSL compute shaders through wgpu (Vulkan, Metal,
//! DX12 natively; WebGPU in the browser), checked against the CPU path.
//!
//! * [`context`]: adapter and device with WebGPU's default limits; device loss and validation errors as [`Error`]s
//! * [`shaders`]: the kernels' WGSL (in `shaders/`), specialised per model width
//! * [`model`]: weights packed once into one storage buffer with an offset table; compiled pipelines
//! * [`batch`]: a batch's buffers (ragged, no padding), the step table and one evaluation's dispatch sequence
//! * [`sampler`]: [`GpuSampler`], the CPU sampler's API with the state kept on the device
//! * `egnn`: [`GpuEgnn`], one evaluation per call behind the CPU's `Denoiser` trait (native)
//!
//! Kernels per evaluation: `begin` (x and the embedding), then per block: a node-wise linear for the first
//! edge layer's per-node split, the fused `edge` kernel (messages, attention, sum over neighbours), the node MLP
//! (two linears, residual), the same split for the coordinate MLP and `edge` in coordinate mode; then
//! `embedding_out` and `finish` (mean-free ε̂_x, the reverse step with on-device Philox noise), `advance`.
//!
//! [`Error`]: crate::Error

pub mod batch;
pub mod context;
#[cfg(not(target_arch = "wasm32"))]
mod egnn;
pub mod model;
pub mod sampler;
pub mod shaders;

pub use context::GpuContext;
#[cfg(not(target_arch = "wasm32"))]
pub use egnn::GpuEgnn;
pub use model::GpuModel;
pub use sampler::GpuSampler;
