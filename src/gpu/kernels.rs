//! Shader registry and pipeline cache.
//!
//! Every kernel family is one self-contained WGSL file in `shaders/`, embedded at build time.
//! Each file is valid WGSL for f32 storage as written: it declares `alias T = f32;` on a line of
//! its own. The f16 variant replaces that line with `alias T = f16;` and prepends `enable f16;`.
//! Tile and workgroup sizes are `override` constants given per pipeline. Pipelines are cached by
//! (shader, entry point, dtype, overrides).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::DType;

/// Every shader: (name, source). The name is the file stem and the `src/ops/` module name.
pub const SHADERS: &[(&str, &str)] = &[
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("concat", include_str!("../../shaders/concat.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("group_norm", include_str!("../../shaders/group_norm.wgsl")),
    ("layer_norm", include_str!("../../shaders/layer_norm.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("probe", include_str!("../../shaders/probe.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    (
        "timestep_embedding",
        include_str!("../../shaders/timestep_embedding.wgsl"),
    ),
    ("upsample", include_str!("../../shaders/upsample.wgsl")),
];

/// The line each shader declares its storage type with.
const F32_ALIAS: &str = "alias T = f32;";

/// WGSL source of `shader` for storage dtype `dtype`.
pub fn shader_source(shader: &str, dtype: DType) -> Result<String> {
    let (_, source) = SHADERS
        .iter()
        .find(|(name, _)| *name == shader)
        .ok_or_else(|| Error::Shader {
            shader: shader.to_string(),
            message: "no such shader in shaders/".into(),
        })?;
    if source.lines().filter(|l| l.trim() == F32_ALIAS).count() != 1 {
        return Err(Error::Shader {
            shader: shader.to_string(),
            message: format!("must declare `{F32_ALIAS}` on exactly one line"),
        });
    }
    Ok(match dtype {
        DType::F32 => source.to_string(),
        DType::F16 => format!(
            "enable f16;\n{}",
            source.replacen(F32_ALIAS, "alias T = f16;", 1)
        ),
    })
}

/// Identifies one compute pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub shader: &'static str,
    pub entry: &'static str,
    pub dtype: DType,
    /// `override` constants, by name.
    pub overrides: Vec<(&'static str, u32)>,
}

impl KernelKey {
    pub fn new(shader: &'static str, entry: &'static str, dtype: DType) -> Self {
        KernelKey {
            shader,
            entry,
            dtype,
            overrides: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: u32) -> Self {
        self.overrides.push((name, value));
        self
    }
}

/// Compiled shader modules and pipelines, created on first use.
pub struct Kernels {
    modules: Mutex<HashMap<(&'static str, DType), Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<KernelKey, Arc<wgpu::ComputePipeline>>>,
    supports_f16: bool,
}

impl Kernels {
    pub fn new(features: wgpu::Features) -> Self {
        Kernels {
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            supports_f16: features.contains(wgpu::Features::SHADER_F16),
        }
    }

    /// The pipeline for `key`, compiled on first request.
    pub fn pipeline(
        &self,
        gpu: &crate::gpu::Gpu,
        key: &KernelKey,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let poisoned = || Error::DeviceLost("kernel cache poisoned by an earlier panic".into());
        if let Some(p) = self.pipelines.lock().map_err(|_| poisoned())?.get(key) {
            return Ok(p.clone());
        }
        let module = self.module(gpu, key.shader, key.dtype)?;
        let constants: Vec<(&str, f64)> =
            key.overrides.iter().map(|&(n, v)| (n, v as f64)).collect();
        let label = format!("{}::{} ({})", key.shader, key.entry, key.dtype.name());
        let pipeline = gpu
            .scoped(&format!("creating pipeline {label}"), || {
                gpu.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&label),
                        layout: None,
                        module: &module,
                        entry_point: Some(key.entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &constants,
                            // Tiled kernels fill their workgroup memory before reading it.
                            zero_initialize_workgroup_memory: false,
                        },
                        cache: None,
                    })
            })
            .map_err(|e| Error::Shader {
                shader: label.clone(),
                message: e.to_string(),
            })?;
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .lock()
            .map_err(|_| poisoned())?
            .insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }

    fn module(
        &self,
        gpu: &crate::gpu::Gpu,
        shader: &'static str,
        dtype: DType,
    ) -> Result<Arc<wgpu::ShaderModule>> {
        let poisoned = || Error::DeviceLost("kernel cache poisoned by an earlier panic".into());
        if let Some(m) = self
            .modules
            .lock()
            .map_err(|_| poisoned())?
            .get(&(shader, dtype))
        {
            return Ok(m.clone());
        }
        if dtype == DType::F16 && !self.supports_f16 {
            return Err(Error::Shader {
                shader: shader.to_string(),
                message:
                    "f16 storage needs the SHADER_F16 feature, which this adapter lacks; use f32"
                        .into(),
            });
        }
        let source = shader_source(shader, dtype)?;
        let module = gpu
            .scoped(&format!("compiling shader {shader}"), || {
                gpu.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    })
            })
            .map_err(|e| Error::Shader {
                shader: shader.to_string(),
                message: e.to_string(),
            })?;
        let module = Arc::new(module);
        self.modules
            .lock()
            .map_err(|_| poisoned())?
            .insert((shader, dtype), module.clone());
        Ok(module)
    }
}
