//! The GPU layer: adapter and device ([`context`]), tensors ([`tensor`]), the shader registry and
//! pipeline cache ([`kernels`]), GPU timestamps ([`profile`], [`collector`]), what graphs are
//! built for ([`target`]) and the tuning decisions they carry ([`tuning`]).

pub mod collector;
pub(crate) mod completion;
pub mod context;
pub mod kernels;
pub mod profile;
pub mod target;
pub mod tensor;
pub mod tuning;

#[cfg(not(target_arch = "wasm32"))]
pub use context::adapter_summaries;
pub use context::{
    adapter_summaries_async, auto_dtype, AdapterSummary, Gpu, GpuOptions, LimitsRequest,
};
pub use kernels::{KernelKey, Kernels, ShaderChecks};
pub use target::{Target, Variant};
pub use tensor::{DType, Tensor};
pub use tuning::{AutotuneOptions, TuneKey, Tuning};
