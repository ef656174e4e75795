//! Adapter selection and device creation.
//!
//! The adapter is chosen by backend (`vulkan|metal|dx12|gl`) and by a name substring or an index
//! into the listed adapters (`--backend`, `--adapter`; env `STIPPLE_BACKEND`, `STIPPLE_ADAPTER`).
//! `--shaders DIR` (`STIPPLE_SHADERS`) compiles edited shaders from DIR instead of the embedded
//! ones; `STIPPLE_FORCE_VARIANT=cpu|gpu` forces the kernel variant (see [`Target`]).
//! The device is requested with the adapter's own limits and the optional features stipple uses.
//! wgpu's default uncaptured-error handler panics; ours records the error so that the next
//! [`Gpu::check`] returns it as a [`crate::Error`], and the device-lost callback does the same.
//!
//! Opening is async ([`Gpu::new_async`]): on the web, adapter and device requests are promises.
//! Native code calls the blocking [`Gpu::new`], a `pollster` wrapper. [`LimitsRequest`] chooses
//! between the adapter's own limits and WebGPU's defaults (the web's design envelope, see
//! `docs/web.md`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::autotune::Autotuner;
use crate::error::{Error, Result};
use crate::gpu::collector::Collector;
use crate::gpu::kernels::{Kernels, ShaderChecks, ShaderDir};
use crate::gpu::target::Target;
use crate::gpu::tuning::AutotuneOptions;

/// Features used when the adapter has them; none is required.
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::PIPELINE_CACHE);

/// How to pick an adapter. `None` fields mean "the best one found".
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
    /// An index into the listed adapters, or a case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// A directory of edited `<shader>.wgsl` files used instead of the embedded ones.
    pub shaders: Option<PathBuf>,
    /// Which limits the device is created with.
    pub limits: LimitsRequest,
    /// Which shader modules keep wgpu's runtime checks (`None`: `STIPPLE_SHADER_CHECKS`, else
    /// [`ShaderChecks::Auto`]).
    pub shader_checks: Option<ShaderChecks>,
    /// Per-adapter choice of kernel configurations by measurement, cached (on by default;
    /// `--no-autotune`). See [`crate::autotune`].
    pub autotune: AutotuneOptions,
}

/// The limits a device is requested with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitsRequest {
    /// Everything the adapter offers (native default; on the web, more than WebGPU's defaults
    /// when the browser offers more).
    #[default]
    Adapter,
    /// WebGPU's default limits (`wgpu::Limits::default()`: 128 MiB per storage binding,
    /// 256 MiB per buffer, 8 storage buffers per stage, 16 KiB workgroup storage, 256
    /// invocations per workgroup), as a page gets without asking: tests run the pipeline
    /// inside this envelope natively.
    WebGpuDefault,
}

impl GpuOptions {
    /// Options from `STIPPLE_BACKEND` and `STIPPLE_ADAPTER`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        GpuOptions {
            backend: var("STIPPLE_BACKEND"),
            adapter: var("STIPPLE_ADAPTER"),
            shaders: var("STIPPLE_SHADERS").map(PathBuf::from),
            limits: LimitsRequest::default(),
            shader_checks: None,
            autotune: AutotuneOptions::default(),
        }
    }
}

/// What `stipple info` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub info: wgpu::AdapterInfo,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.info;
        write!(
            f,
            "[{}] {} ({:?}, {:?}",
            self.index, i.name, i.backend, i.device_type
        )?;
        if !i.driver.is_empty() {
            write!(f, ", driver {} {}", i.driver, i.driver_info)?;
        }
        write!(f, ")")
    }
}

fn parse_backends(backend: Option<&str>) -> Result<wgpu::Backends> {
    Ok(
        match backend.map(|b| b.trim().to_ascii_lowercase()).as_deref() {
            // On the web, the browser's WebGPU is the only backend compiled in.
            None | Some("") | Some("auto") if cfg!(target_arch = "wasm32") => {
                wgpu::Backends::BROWSER_WEBGPU
            }
            None | Some("") | Some("auto") => {
                wgpu::Backends::all() - wgpu::Backends::BROWSER_WEBGPU
            }
            Some("vulkan") | Some("vk") => wgpu::Backends::VULKAN,
            Some("metal") | Some("mtl") => wgpu::Backends::METAL,
            Some("dx12") | Some("d3d12") => wgpu::Backends::DX12,
            Some("gl") | Some("gles") | Some("opengl") => wgpu::Backends::GL,
            Some(_) => {
                return Err(Error::UnknownBackend(
                    backend.unwrap_or_default().to_string(),
                ))
            }
        },
    )
}

/// Lower is better: discrete GPUs first, CPU emulation last; Vulkan/Metal/DX12 before GL (no f16
/// or subgroups through wgpu's GL backend).
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Adapters of the given backend, best first (the order `--adapter N` indexes). Without a
/// backend, GL is only tried when Vulkan/Metal/DX12 find nothing (it lacks f16 and subgroups, and
/// probing EGL prints noise on headless machines).
async fn sorted_adapters(backend: Option<&str>) -> Result<(wgpu::Instance, Vec<wgpu::Adapter>)> {
    let backends = parse_backends(backend)?;
    let enumerate = async |backends: wgpu::Backends| {
        let instance = new_instance(backends);
        let adapters = instance.enumerate_adapters(backends).await;
        (instance, adapters)
    };
    let (mut instance, mut adapters) = enumerate(backends - wgpu::Backends::GL).await;
    if adapters.is_empty() && backends.contains(wgpu::Backends::GL) {
        (instance, adapters) = enumerate(wgpu::Backends::GL).await;
    }
    adapters.sort_by_key(|a| preference(&a.get_info()));
    Ok((instance, adapters))
}

/// Every adapter wgpu finds for the backend filter, best first (blocking; native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn adapter_summaries(backend: Option<&str>) -> Result<Vec<AdapterSummary>> {
    pollster::block_on(adapter_summaries_async(backend))
}

/// Every adapter wgpu finds for the backend filter, best first.
pub async fn adapter_summaries_async(backend: Option<&str>) -> Result<Vec<AdapterSummary>> {
    let (_, adapters) = sorted_adapters(backend).await?;
    Ok(adapters
        .iter()
        .enumerate()
        .map(|(index, a)| AdapterSummary {
            index,
            info: a.get_info(),
        })
        .collect())
}

/// Errors reported asynchronously by wgpu (uncaptured errors, device loss).
#[derive(Default)]
struct Faults {
    /// Kept as (out of memory, message): on the web a `wgpu::Error` is not `Send`.
    errors: Vec<(bool, String)>,
    lost: Option<String>,
}

/// An open device with its queue, limits, features and shader/pipeline cache. Cheap to clone.
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// What graphs built for this device are shaped for (kernel variant, loop budget).
    pub target: Target,
    pub kernels: Arc<Kernels>,
    /// Tuning settings, the decision cache and the measurement time spent (the decisions
    /// themselves are in `target.tuning`).
    pub autotune: Arc<Autotuner>,
    /// Dispatch-by-dispatch timing of every plan run while enabled (`generate --profile`).
    pub profiler: Arc<Collector>,
    faults: Arc<Mutex<Faults>>,
}

impl Gpu {
    /// Open the adapter the options select (see [`GpuOptions`]); blocks (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(options))
    }

    /// Open the adapter the options select (see [`GpuOptions`]).
    pub async fn new_async(options: &GpuOptions) -> Result<Gpu> {
        // Bad shaders and variant names fail before any adapter is opened.
        let shaders = options
            .shaders
            .as_deref()
            .map(ShaderDir::load)
            .transpose()?;
        let force = Target::forced_variant_from_env()?;
        let checks = match options.shader_checks {
            Some(c) => c,
            None => ShaderChecks::from_env()?.unwrap_or_default(),
        };
        let (_instance, adapters) = sorted_adapters(options.backend.as_deref()).await?;
        let filter = options
            .backend
            .as_ref()
            .map(|b| format!(" for backend {b}"))
            .unwrap_or_default();
        if adapters.is_empty() {
            return Err(Error::NoAdapter { filter });
        }
        let adapter = match options.adapter.as_deref().map(str::trim) {
            None | Some("") => &adapters[0],
            Some(selector) => select(&adapters, selector)?,
        };
        Self::open(adapter, force, shaders, checks, options).await
    }

    async fn open(
        adapter: &wgpu::Adapter,
        force: Option<crate::gpu::Variant>,
        shaders: Option<ShaderDir>,
        checks: ShaderChecks,
        options: &GpuOptions,
    ) -> Result<Gpu> {
        let info = adapter.get_info();
        let features = adapter.features() & OPTIONAL_FEATURES;
        let required_limits = match options.limits {
            LimitsRequest::Adapter => adapter.limits(),
            LimitsRequest::WebGpuDefault => wgpu::Limits::default(),
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("stipple"),
            required_features: features,
            required_limits,
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) =
            adapter
                .request_device(&desc)
                .await
                .map_err(|e| Error::RequestDevice {
                    adapter: info.name.clone(),
                    message: e.to_string(),
                })?;

        let faults = Arc::new(Mutex::new(Faults::default()));
        let sink = faults.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut f) = sink.lock() {
                let oom = matches!(e, wgpu::Error::OutOfMemory { .. });
                f.errors.push((oom, e.to_string()));
            }
        }));
        let sink = faults.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut f) = sink.lock() {
                f.lost = Some(format!("{reason:?}: {message}"));
            }
        });

        let limits = device.limits();
        let mut target = Target::from_adapter(&info, features, &limits, force);
        target.all_shaders_checked = checks == ShaderChecks::On;
        let autotune = Autotuner::open(&options.autotune, &info, shaders.is_some(), &target.tuning);
        Ok(Gpu {
            target,
            autotune: Arc::new(autotune),
            kernels: Arc::new(
                Kernels::new(features)
                    .with_shader_dir(shaders)
                    .with_checks(checks),
            ),
            profiler: Arc::new(Collector::default()),
            device,
            queue,
            info,
            features,
            limits,
            faults,
        })
    }

    /// The same device compiling its kernels from `shaders` (embedded ones where it has none, or
    /// all embedded for `None`), with a cache of its own: tensors are shared, so one benchmark
    /// can time embedded and edited shaders on the same data.
    pub fn with_shader_dir(&self, shaders: Option<ShaderDir>) -> Gpu {
        let autotune = match shaders {
            Some(_) => Arc::new(self.autotune.read_only()),
            None => self.autotune.clone(),
        };
        Gpu {
            autotune,
            kernels: Arc::new(
                Kernels::new(self.features)
                    .with_shader_dir(shaders)
                    .with_checks(self.kernels.checks()),
            ),
            ..self.clone()
        }
    }

    /// Whether kernels can store f16 (SHADER_F16).
    pub fn supports_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether the GPU can time passes with timestamp queries.
    pub fn supports_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Whether dispatches can be timed one by one (timestamps inside passes).
    pub fn supports_profiling(&self) -> bool {
        self.features
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    }

    /// Turn errors wgpu reported asynchronously since the last check into an `Err`.
    pub fn check(&self, context: &str) -> Result<()> {
        let mut faults = self
            .faults
            .lock()
            .map_err(|_| Error::DeviceLost("fault log poisoned".into()))?;
        if let Some(lost) = &faults.lost {
            return Err(Error::DeviceLost(lost.clone()));
        }
        let first = faults.errors.drain(..).next();
        match first {
            None => Ok(()),
            Some((oom, message)) => Err(fault(context, oom, message)),
        }
    }

    /// Run `f` inside validation and out-of-memory error scopes; the first error becomes an `Err`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom.or(validation) {
            return Err(convert_error(context, e));
        }
        self.check(context)?;
        Ok(value)
    }

    /// On the web an error scope resolves as a promise, which a synchronous caller cannot
    /// await: errors reach the uncaptured-error handler instead and the next [`Gpu::check`]
    /// (here, and before every readback) returns them.
    #[cfg(target_arch = "wasm32")]
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        let value = f();
        self.check(context)?;
        Ok(value)
    }

    /// Block until the queue is idle, turning device loss or a timeout into an error.
    pub fn wait(&self, context: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(format!("{context}: {e}")))?;
        self.check(context)
    }
}

/// The `auto` storage dtype: f16 on GPUs with SHADER_F16, f32 on CPU adapters such as lavapipe
/// (f16 is emulated there and measured slower) and where f16 is missing.
pub fn auto_dtype(gpu: &Gpu) -> crate::gpu::DType {
    if gpu.supports_f16() && gpu.info.device_type != wgpu::DeviceType::Cpu {
        crate::gpu::DType::F16
    } else {
        crate::gpu::DType::F32
    }
}

fn fault(context: &str, out_of_memory: bool, message: String) -> Error {
    let context = context.to_string();
    if out_of_memory {
        Error::OutOfMemory { context, message }
    } else {
        Error::GpuValidation { context, message }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn convert_error(context: &str, e: wgpu::Error) -> Error {
    let oom = matches!(e, wgpu::Error::OutOfMemory { .. });
    fault(context, oom, e.to_string())
}

fn select<'a>(adapters: &'a [wgpu::Adapter], selector: &str) -> Result<&'a wgpu::Adapter> {
    let found = match selector.parse::<usize>() {
        Ok(index) => adapters.get(index),
        Err(_) => {
            let needle = selector.to_lowercase();
            adapters
                .iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&needle))
        }
    };
    found.ok_or_else(|| Error::AdapterNotFound {
        selector: selector.to_string(),
        available: adapters
            .iter()
            .enumerate()
            .map(|(index, a)| {
                format!(
                    "  {}",
                    AdapterSummary {
                        index,
                        info: a.get_info()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    })
}
