//! Benchmarks behind `stipple bench`: kernels at Stable Diffusion 1.5 shapes, measured against
//! the adapter's own peak (an FMA-throughput and a copy-bandwidth probe run in the same process).

pub mod cases;
pub mod kernels;
pub mod load;
pub mod memory;
pub mod profile;
pub mod soak;

pub use kernels::{
    run_kernel_bench, run_kernel_compare, CompareReport, KernelBenchOptions, KernelBenchReport,
    KernelResult, Peak,
};
