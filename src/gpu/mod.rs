//! The GPU layer: adapter and device ([`context`]), tensors ([`tensor`]), the shader registry and
//! pipeline cache ([`kernels`]), GPU timestamps ([`profile`], [`collector`]) and what graphs are
//! built for ([`target`]).

pub mod collector;
pub(crate) mod completion;
pub mod context;
pub mod kernels;
pub mod profile;
pub mod target;
pub mod tensor;

#[cfg(not(target_arch = "wasm32"))]
pub use context::adapter_summaries;
pub use context::{
    adapter_summaries_async, auto_dtype, AdapterSummary, Gpu, GpuOptions, LimitsRequest,
};
pub use kernels::{KernelKey, Kernels, ShaderChecks};
pub use target::{Target, Variant};
pub use tensor::{DType, Tensor};
