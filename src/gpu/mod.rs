//! The GPU layer: adapter and device ([`context`]), tensors ([`tensor`]), the shader registry and
//! pipeline cache ([`kernels`]), GPU timestamps ([`profile`]) and what graphs are built for
//! ([`target`]).

pub mod context;
pub mod kernels;
pub mod profile;
pub mod target;
pub mod tensor;

pub use context::{adapter_summaries, auto_dtype, AdapterSummary, Gpu, GpuOptions};
pub use kernels::{KernelKey, Kernels};
pub use target::{Target, Variant};
pub use tensor::{DType, Tensor};
