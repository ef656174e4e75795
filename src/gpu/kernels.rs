//! Shader registry and pipeline cache.
//!
//! Every kernel family is one self-contained WGSL file in `shaders/`, embedded at build time.
//! Each file is valid WGSL for f32 storage as written: it declares `alias T = f32;` on a line of
//! its own. The f16 variant replaces that line with `alias T = f16;` and prepends `enable f16;`.
//! Tile and workgroup sizes are `override` constants given per pipeline. Pipelines are cached by
//! (shader, entry point, dtype, overrides).
//!
//! Shaders in [`SUBGROUP_SHADERS`] use subgroup operations: they are compiled only on devices
//! with the SUBGROUP feature (the ops pick them from `Target::subgroups`), and on the web their
//! source starts with `enable subgroups;`, which browsers require and naga, natively, rejects
//! ([`prelude`]).
//!
//! Modules of the shaders in [`TRUSTED`] are created without wgpu's runtime checks (no index
//! clamping, no loop bounding, no division guards) unless [`ShaderChecks`] says otherwise
//! (`STIPPLE_SHADER_CHECKS=on|off|auto`): their index math is in bounds by construction and
//! covered by the kernel tests over odd shapes (`docs/kernels.md`).
//!
//! A [`ShaderDir`] (`--shaders DIR`, `STIPPLE_SHADERS`) replaces embedded shaders with edited
//! copies read at run time (`DIR/<name>.wgsl`), validated with naga when loaded, so a kernel idea
//! can be tried and benchmarked (`stipple bench kernels --compare DIR`) without rebuilding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::DType;

/// Every shader: (name, source). The name is the file stem and the `src/ops/` module name.
pub const SHADERS: &[(&str, &str)] = &[
    ("attention", include_str!("../../shaders/attention.wgsl")),
    (
        "attention_lanes",
        include_str!("../../shaders/attention_lanes.wgsl"),
    ),
    ("concat", include_str!("../../shaders/concat.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    (
        "conv2d_subgroup",
        include_str!("../../shaders/conv2d_subgroup.wgsl"),
    ),
    (
        "conv2d_tiled",
        include_str!("../../shaders/conv2d_tiled.wgsl"),
    ),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("group_norm", include_str!("../../shaders/group_norm.wgsl")),
    (
        "group_norm_subgroup",
        include_str!("../../shaders/group_norm_subgroup.wgsl"),
    ),
    ("layer_norm", include_str!("../../shaders/layer_norm.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "matmul_subgroup",
        include_str!("../../shaders/matmul_subgroup.wgsl"),
    ),
    (
        "matmul_tiled",
        include_str!("../../shaders/matmul_tiled.wgsl"),
    ),
    ("probe", include_str!("../../shaders/probe.wgsl")),
    (
        "scheduler_step",
        include_str!("../../shaders/scheduler_step.wgsl"),
    ),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    (
        "timestep_embedding",
        include_str!("../../shaders/timestep_embedding.wgsl"),
    ),
    ("upsample", include_str!("../../shaders/upsample.wgsl")),
];

/// Shaders whose modules are created without runtime checks by default ([`ShaderChecks::Auto`]).
/// A shader belongs here only when every index it computes is in bounds by construction (clamped
/// or guarded against the shape parameters the op checked) and its kernel test covers odd,
/// tile-crossing shapes in f32 and f16: `tests/kernel_matmul.rs`, `tests/kernel_conv2d.rs`,
/// `tests/kernel_attention.rs`. `attention_lanes` must be here: wgpu's loop bounding keeps one
/// counter per loop for the whole invocation, so Mesa cannot fold its exits out of the unrolled
/// inner loops, and index clamping hides the induction variables that make Mesa unroll them
/// (docs/kernels.md).
pub const TRUSTED: &[&str] = &[
    "attention_lanes",
    "conv2d",
    "conv2d_subgroup",
    "conv2d_tiled",
    "matmul",
    "matmul_subgroup",
    "matmul_tiled",
];

/// Shaders that use subgroup operations (`subgroupAdd`, `subgroupBroadcast`, `subgroupShuffle`,
/// …): compiled only where the device has the SUBGROUP feature, with `enable subgroups;` on the
/// web ([`prelude`]).
pub const SUBGROUP_SHADERS: &[&str] = &[
    "attention_lanes",
    "conv2d_subgroup",
    "group_norm_subgroup",
    "matmul_subgroup",
];

/// Which shader modules keep wgpu's runtime checks (bounds clamping of every index, loop
/// bounding, integer-division guards). Edited shaders (`--shaders DIR`) are checked unless the
/// checks are [`ShaderChecks::Off`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShaderChecks {
    /// Unchecked for the [`TRUSTED`] shaders, checked for the rest.
    #[default]
    Auto,
    /// Every module checked (wgpu's default).
    On,
    /// Every module unchecked, edited ones too (for measuring what the checks cost, and for
    /// experiments with `attention_lanes`, whose design needs unchecked loops).
    Off,
}

impl ShaderChecks {
    pub fn name(self) -> &'static str {
        match self {
            ShaderChecks::Auto => "auto",
            ShaderChecks::On => "on",
            ShaderChecks::Off => "off",
        }
    }

    /// `STIPPLE_SHADER_CHECKS` (`on`, `off` or `auto`), if set.
    pub fn from_env() -> Result<Option<ShaderChecks>> {
        match std::env::var("STIPPLE_SHADER_CHECKS") {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.parse()?)),
            _ => Ok(None),
        }
    }

    /// Whether embedded shader `shader` is compiled with runtime checks.
    pub fn checked(self, shader: &str) -> bool {
        match self {
            ShaderChecks::On => true,
            ShaderChecks::Off => false,
            ShaderChecks::Auto => !TRUSTED.contains(&shader),
        }
    }
}

impl std::str::FromStr for ShaderChecks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "default" => Ok(ShaderChecks::Auto),
            "on" | "checked" | "1" | "true" => Ok(ShaderChecks::On),
            "off" | "unchecked" | "0" | "false" => Ok(ShaderChecks::Off),
            other => Err(Error::InvalidArgument {
                name: "shader checks (STIPPLE_SHADER_CHECKS)".into(),
                message: format!("{other:?}: expected `on`, `off` or `auto`"),
            }),
        }
    }
}

/// The line each shader declares its storage type with.
const F32_ALIAS: &str = "alias T = f32;";

/// WGSL source of embedded shader `shader` for storage dtype `dtype`, as this build compiles it.
pub fn shader_source(shader: &str, dtype: DType) -> Result<String> {
    embedded_source(shader, dtype, WEB)
}

/// [`shader_source`] as the web build (wasm32, WebGPU) compiles it: what a native test can check
/// (naga, natively, rejects the `enable subgroups;` this may carry).
pub fn web_shader_source(shader: &str, dtype: DType) -> Result<String> {
    embedded_source(shader, dtype, true)
}

/// Whether this build runs on the web (browsers' WGSL compilers want `enable subgroups;`).
const WEB: bool = cfg!(target_arch = "wasm32");

fn embedded_source(shader: &str, dtype: DType, web: bool) -> Result<String> {
    let (_, source) = SHADERS
        .iter()
        .find(|(name, _)| *name == shader)
        .ok_or_else(|| Error::Shader {
            shader: shader.to_string(),
            message: "no such shader in shaders/".into(),
        })?;
    variant_source(shader, shader, source, dtype, web)
}

/// The directives the Rust side puts on a shader's first line: `enable f16;` for f16 storage,
/// and on the web `enable subgroups;` for the [`SUBGROUP_SHADERS`] (the WGSL spec and browsers
/// require it; naga 30 rejects it as unimplemented, and wgpu's native backends enable subgroup
/// operations from the device's SUBGROUP feature instead).
pub fn prelude(shader: &str, dtype: DType, web: bool) -> String {
    let mut p = String::new();
    if dtype == DType::F16 {
        p += "enable f16; ";
    }
    if web && SUBGROUP_SHADERS.contains(&shader) {
        p += "enable subgroups; ";
    }
    p
}

/// `source` of shader `name` (written for f32; `label` names it in errors) as the `dtype`
/// variant. The prelude goes on the first line, so line numbers are the file's in every variant.
fn variant_source(
    name: &str,
    label: &str,
    source: &str,
    dtype: DType,
    web: bool,
) -> Result<String> {
    if source.lines().filter(|l| l.trim() == F32_ALIAS).count() != 1 {
        return Err(Error::Shader {
            shader: label.to_string(),
            message: format!("must declare `{F32_ALIAS}` on exactly one line"),
        });
    }
    let body = match dtype {
        DType::F32 => source.to_string(),
        DType::F16 => source.replacen(F32_ALIAS, "alias T = f16;", 1),
    };
    Ok(format!("{}{body}", prelude(name, dtype, web)))
}

/// Parse and validate WGSL with naga (the capabilities stipple's device may have: f16,
/// subgroups). Errors start with `path:line:column` and include naga's annotated excerpt.
pub fn validate_wgsl(source: &str, path: &str) -> std::result::Result<naga::Module, String> {
    let at = |loc: Option<naga::SourceLocation>| {
        loc.map(|l| format!("{path}:{}:{}", l.line_number, l.line_position))
            .unwrap_or_else(|| path.to_string())
    };
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        format!(
            "{}: {e}\n{}",
            at(e.location(source)),
            e.emit_to_string_with_path(source, path)
        )
    })?;
    let caps = naga::valid::Capabilities::default()
        | naga::valid::Capabilities::SHADER_FLOAT16
        | naga::valid::Capabilities::SUBGROUP
        | naga::valid::Capabilities::SUBGROUP_BARRIER;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| {
            format!(
                "{}: {}\n{}",
                at(e.location(source)),
                e.as_inner(),
                e.emit_to_string_with_path(source, path)
            )
        })?;
    Ok(module)
}

/// Edited shaders read from a directory, replacing the embedded ones of the same name.
#[derive(Clone, Debug, Default)]
pub struct ShaderDir {
    pub dir: PathBuf,
    /// (shader name, f32 source), for each `DIR/<name>.wgsl`.
    pub sources: Vec<(String, String)>,
}

impl ShaderDir {
    /// Read every `*.wgsl` in `dir`. Each must be named after an embedded shader (a typo would
    /// otherwise silently benchmark the embedded copy) and validate in its f32 and f16 variants;
    /// errors name the file, line and column.
    pub fn load(dir: &Path) -> Result<ShaderDir> {
        let io = |e: std::io::Error| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut files = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io)?;
        files.retain(|p| p.extension().is_some_and(|e| e == "wgsl"));
        files.sort();
        if files.is_empty() {
            return Err(Error::InvalidArgument {
                name: format!("shader directory {}", dir.display()),
                message: "contains no .wgsl files".into(),
            });
        }
        let mut sources = Vec::new();
        for path in files {
            let shown = path.display().to_string();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if !SHADERS.iter().any(|(n, _)| *n == name) {
                let known: Vec<&str> = SHADERS.iter().map(|(n, _)| *n).collect();
                return Err(Error::Shader {
                    shader: shown,
                    message: format!(
                        "not the name of a stipple shader (expected one of {})",
                        known.join(", ")
                    ),
                });
            }
            let source = std::fs::read_to_string(&path).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
            for dtype in [DType::F32, DType::F16] {
                let variant = variant_source(&name, &shown, &source, dtype, false)?;
                validate_wgsl(&variant, &shown).map_err(|message| Error::Shader {
                    shader: format!("{shown} ({} variant)", dtype.name()),
                    message,
                })?;
            }
            sources.push((name, source));
        }
        Ok(ShaderDir {
            dir: dir.to_path_buf(),
            sources,
        })
    }

    /// Names of the replaced shaders.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|(n, _)| n.as_str())
    }

    fn get(&self, shader: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|(n, _)| n == shader)
            .map(|(_, s)| s.as_str())
    }
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
    supports_subgroups: bool,
    /// Edited shaders replacing embedded ones.
    shader_dir: Option<ShaderDir>,
    checks: ShaderChecks,
}

impl Kernels {
    pub fn new(features: wgpu::Features) -> Self {
        Kernels {
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            supports_f16: features.contains(wgpu::Features::SHADER_F16),
            supports_subgroups: features.contains(wgpu::Features::SUBGROUP),
            shader_dir: None,
            checks: ShaderChecks::default(),
        }
    }

    /// Kernels whose modules keep runtime checks as `checks` says.
    pub fn with_checks(mut self, checks: ShaderChecks) -> Self {
        self.checks = checks;
        self
    }

    /// Which modules keep wgpu's runtime checks.
    pub fn checks(&self) -> ShaderChecks {
        self.checks
    }

    /// Kernels compiled from `dir`'s shaders where it has them, embedded ones elsewhere.
    pub fn with_shader_dir(mut self, dir: Option<ShaderDir>) -> Self {
        self.shader_dir = dir;
        self
    }

    /// The directory whose shaders replace embedded ones, if any.
    pub fn shader_dir(&self) -> Option<&ShaderDir> {
        self.shader_dir.as_ref()
    }

    /// The source a pipeline of `shader` is compiled from, a label naming where it is from,
    /// and whether it is embedded (edited shaders are never trusted).
    fn source(&self, shader: &str, dtype: DType) -> Result<(String, String, bool)> {
        match self
            .shader_dir
            .as_ref()
            .and_then(|d| d.get(shader).map(|s| (d, s)))
        {
            Some((dir, src)) => {
                let path = dir.dir.join(format!("{shader}.wgsl")).display().to_string();
                Ok((variant_source(shader, &path, src, dtype, WEB)?, path, false))
            }
            None => Ok((shader_source(shader, dtype)?, shader.to_string(), true)),
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
        if SUBGROUP_SHADERS.contains(&shader) && !self.supports_subgroups {
            return Err(Error::Shader {
                shader: shader.to_string(),
                message: "uses subgroup operations, which need the SUBGROUP feature this device \
                          lacks (ops pick it only where `Target::subgroups` is true)"
                    .into(),
            });
        }
        let (source, origin, embedded) = self.source(shader, dtype)?;
        // Edited shaders stay checked unless every check is off (their index math is untested).
        let trusted =
            (embedded || self.checks == ShaderChecks::Off) && !self.checks.checked(shader);
        let module = gpu
            .scoped(&format!("compiling shader {origin}"), || {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(&origin),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                };
                if trusted {
                    // SAFETY: only embedded shaders, and by default only the TRUSTED ones,
                    // whose indices are clamped or guarded against the shape parameters the ops
                    // validate, whose loops have bounds from those parameters, and whose
                    // divisors are shape sizes the ops checked to be non-zero. Their kernel tests
                    // cover odd and tile-crossing shapes. `Off` extends this to every embedded
                    // shader for measurement, on the user's request.
                    unsafe {
                        gpu.device.create_shader_module_trusted(
                            desc,
                            wgpu::ShaderRuntimeChecks::unchecked(),
                        )
                    }
                } else {
                    gpu.device.create_shader_module(desc)
                }
            })
            .map_err(|e| Error::Shader {
                shader: origin.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shader_checks_parse_and_apply() {
        assert_eq!("OFF".parse::<ShaderChecks>().unwrap(), ShaderChecks::Off);
        assert_eq!(" on ".parse::<ShaderChecks>().unwrap(), ShaderChecks::On);
        assert!("maybe".parse::<ShaderChecks>().is_err());
        let auto = ShaderChecks::default();
        assert!(!auto.checked("matmul_tiled") && !auto.checked("conv2d"));
        assert!(auto.checked("attention") && auto.checked("group_norm"));
        assert!(ShaderChecks::On.checked("matmul"));
        assert!(!ShaderChecks::Off.checked("attention"));
        // Every trusted name is an embedded shader (a typo would silently keep checks on).
        for name in TRUSTED {
            assert!(SHADERS.iter().any(|(n, _)| n == name), "{name}");
        }
    }
}
