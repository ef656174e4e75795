//! stipple: text-to-image diffusion (the Stable Diffusion family) on any GPU wgpu reaches —
//! Vulkan, Metal, DX12, and Mesa's lavapipe — with every tensor op a hand-written WGSL compute
//! shader dispatched by a graph executor.
//!
//! Data flow (see `docs/architecture.md`):
//!
//! ```text
//! prompt ─tokenizer (CLIP BPE, 77 ids)─▶ text encoder plan ─▶ context (B, 77, D)
//! seed ─rng─▶ latents (B, h, w, 4)
//!   for t in scheduler.timesteps: UNet plan (latents ×2 for CFG, t, context) ─▶ noise prediction
//!                                 scheduler.step
//! latents ─VAE decoder plan─▶ image (B, H, W, 3) ─readback─▶ PNG
//! ```
//!
//! Layers: [`gpu`] (adapter, device, tensors, shader registry), [`graph`] (graph builder, plans
//! with liveness-based buffer reuse, one encoder per run), [`ops`] (one builder per kernel family
//! with a CPU reference beside it).

// Benchmarks read /proc and time with threads: native tooling.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod error;
pub mod files;
pub mod gpu;
pub mod graph;
pub mod image_io;
pub mod lora;
pub mod models;
pub mod ops;
pub mod output_file;
pub mod pipeline;
pub mod prompt_syntax;
pub mod rng;
pub mod schedulers;
#[cfg(feature = "serve")]
pub mod serve;
pub mod time;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};

pub use gpu::{DType, Gpu, GpuOptions, Tensor};
pub use graph::{Graph, Plan, ValueId};
