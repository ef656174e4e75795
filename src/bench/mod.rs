//! Benchmarks behind `stipple bench`: kernels at Stable Diffusion 1.5 shapes, and whole models
//! (`bench unet|vae|clip`, [`model`]) with FLOPs counted from their graphs, both measured against
//! the adapter's own peak (an FMA-throughput and a copy-bandwidth probe run in the same process);
//! per-kernel and per-module profile tables ([`tables`]) and Chrome traces ([`trace`]);
//! `bench autotune` measures a family's kernel configurations again ([`autotune`]).

pub mod autotune;
pub mod cases;
pub mod kernels;
pub mod load;
pub mod memory;
pub mod model;
pub mod random_weights;
pub mod soak;
pub mod tables;
pub mod trace;

pub use kernels::{
    run_kernel_bench, run_kernel_compare, CompareReport, KernelBenchOptions, KernelBenchReport,
    KernelResult, Peak,
};
