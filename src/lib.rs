//! stipple: text-to-image diffusion (the Stable Diffusion family) on any GPU wgpu reaches —
//! Vulkan, Metal, DX12, and Mesa's lavapipe — with every tensor op a hand-written WGSL compute
//! shader dispatched by a graph executor.
//!
//! Data flow (see `docs/architecture.md`):
//!
//! ```text
//! prompt ─tokenizer (CLIP BPE, 77 ids per chunk)─▶ text encoder plan ─▶ context (B, 77·chunks, D)
//! seed ─rng─▶ latents (B, h, w, 4)
//!   for t in scheduler.timesteps: UNet plan (latents ×2 for CFG, t, context) ─▶ noise prediction
//!                                 scheduler.step
//! latents ─VAE decoder plan─▶ image (B, H, W, 3) ─readback─▶ PNG
//! ```
//!
//! Prompts longer than 75 tokens are encoded in chunks and `(word:1.3)` emphasis applies, as in
//! AUTOMATIC1111 (see `docs/prompts.md`; [`no_chunking`](pipeline::GenerateOptions::no_chunking)
//! and [`no_emphasis`](pipeline::GenerateOptions::no_emphasis) give diffusers' behaviour).
//!
//! # Embedding stipple
//!
//! Load a model folder (diffusers layout) or a single-file checkpoint once, then generate as
//! often as needed; plans are built on the first call of each size and replayed after:
//!
//! ```
//! use std::path::Path;
//! use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
//! use stipple::{Gpu, GpuOptions};
//!
//! # fn main() -> stipple::Result<()> {
//! let gpu = Gpu::new(&GpuOptions::from_env())?; // STIPPLE_BACKEND, STIPPLE_ADAPTER, …
//! // A tiny test model; the default model is weights/stipple-emoji-64.
//! let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-pipe");
//! let mut pipeline = Pipeline::load(&gpu, &model, None)?;
//! let options = GenerateOptions {
//!     prompt: "a (red:1.2) apple on a wooden table".into(),
//!     steps: 2,
//!     width: 16,
//!     height: 16,
//!     ..Default::default()
//! };
//! let output = pipeline.generate(&options, |step, total| {
//!     eprintln!("step {step}/{total}");
//!     Progress::Continue
//! })?;
//! assert_eq!(output.images.len(), 16 * 16 * 3); // (batch, H, W, 3) in [0, 1]
//! output.save_png(0, &std::env::temp_dir().join("stipple-doc-apple.png"))?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/generate.rs` is this as a program; `examples/embed_thread.rs` keeps the
//! [`Pipeline`](pipeline::Pipeline) (which is `Send`) on a worker thread that the rest of an
//! app sends requests to.
//!
//! # Modules
//!
//! The API an app uses: [`pipeline`] ([`Pipeline`](pipeline::Pipeline),
//! [`GenerateOptions`](pipeline::GenerateOptions), [`LoadOptions`](pipeline::LoadOptions),
//! [`Progress`](pipeline::Progress), [`GenerateOutput`](pipeline::GenerateOutput)), [`Gpu`] /
//! [`GpuOptions`] / [`DType`], [`Error`], [`image_io`] (PNG with A1111 parameters) and
//! [`prompt_syntax`]. The building blocks under them are public for the CLI, the server, tests
//! and benchmarks, and are internal: they change without notice — [`models`] (diffusers
//! modules as graphs), [`weights`], [`schedulers`], [`tokenizer`], [`lora`], [`gpu`] (beyond
//! the types above), [`serve`], [`bench`](mod@bench), and the graph executor and kernels (`graph`, `ops`,
//! hidden from these docs; see `docs/architecture.md`).

// On the web wgpu's handles are neither Send nor Sync (one thread), so the `Arc`s shared with
// native threads are plain shared pointers there; `std::fs::File` has no `Drop` there.
#![cfg_attr(
    target_arch = "wasm32",
    allow(clippy::arc_with_non_send_sync, clippy::drop_non_drop)
)]

// Benchmarks read /proc and time with threads: native tooling.
pub mod autotune;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod error;
pub mod files;
pub mod gpu;
#[doc(hidden)]
pub mod graph;
pub mod image_io;
pub mod lora;
pub mod models;
#[doc(hidden)]
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
#[doc(hidden)]
pub use graph::{Graph, Plan, ValueId};
