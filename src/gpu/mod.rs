//! The GPU layer: adapter and device ([`context`]), tensors ([`tensor`]), the shader registry and
//! pipeline cache ([`kernels`]), and GPU timestamps ([`profile`]).

pub mod context;
pub mod kernels;
pub mod profile;
pub mod tensor;

pub use context::{adapter_summaries, auto_dtype, AdapterSummary, Gpu, GpuOptions};
pub use kernels::{KernelKey, Kernels};
pub use tensor::{DType, Tensor};
