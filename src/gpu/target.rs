//! The target a graph is built for: what each op needs to know about the adapter to pick its
//! kernel variant, tile sizes and workgroup counts when the graph is built (not when it runs).
//!
//! Two kernel families exist today:
//! - [`Variant::Cpu`]: shaped for CPU adapters such as Mesa's lavapipe (register blocking without
//!   workgroup memory, few barriers: each barrier is a coroutine switch per invocation there);
//! - [`Variant::Gpu`]: shaped for real GPUs (workgroup-memory tiles shared by many invocations).
//!
//! The variant follows the device type unless forced (`STIPPLE_FORCE_VARIANT=cpu|gpu`, or
//! [`Target::with_variant`] in tests), so every GPU variant also runs in CI on lavapipe. The loop
//! budget is a property of the adapter, not of the variant: a GPU variant forced on lavapipe
//! still splits its loops to stay under lavapipe's limit.
//!
//! Tile configurations measured per adapter ([`crate::autotune`]) reach the ops through
//! [`Target::tuning`], the decision table every clone of the target shares.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::tuning::Tuning;

/// Loop iterations one invocation may run on a CPU adapter. Mesa's llvmpipe (lavapipe) silently
/// ends an invocation after 65535 loop iterations in total, all loops of the shader together
/// (`LP_MAX_TGSI_LOOP_ITERATIONS`), leaving its outputs partly written; the margin covers the
/// short loops around the main one.
pub const CPU_LOOP_BUDGET: usize = 60_000;

/// Which family of kernel shapes a graph uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// CPU adapters (lavapipe): register blocking, no workgroup memory.
    Cpu,
    /// Discrete and integrated GPUs: workgroup-memory tiles.
    Gpu,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Cpu => "cpu",
            Variant::Gpu => "gpu",
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" | "lavapipe" => Ok(Variant::Cpu),
            "gpu" | "discrete" => Ok(Variant::Gpu),
            other => Err(Error::InvalidArgument {
                name: "kernel variant (STIPPLE_FORCE_VARIANT)".into(),
                message: format!("{other:?}: expected `cpu` or `gpu`"),
            }),
        }
    }
}

/// What ops know about the adapter when a graph is built.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Adapter name (for reports and cache keys).
    pub adapter: String,
    pub device_type: wgpu::DeviceType,
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel, 0x10005 Mesa).
    pub vendor: u32,
    pub f16: bool,
    pub subgroups: bool,
    /// Smallest subgroup the adapter may run (0 without SUBGROUP). Kernels that share loads
    /// across an 8-invocation workgroup with subgroup broadcasts or shuffles need at least 8.
    pub subgroup_min_size: u32,
    pub timestamps: bool,
    pub max_workgroup_storage_bytes: u32,
    pub max_invocations_per_workgroup: u32,
    pub max_storage_binding_bytes: u64,
    /// Loop iterations one invocation may run (`None`: no limit worth planning for).
    pub loop_budget: Option<usize>,
    /// Every shader module keeps wgpu's runtime checks (`STIPPLE_SHADER_CHECKS=on`): kernels that
    /// only compile in reasonable time without them (lavapipe's attention kernel, whose checked
    /// module did not compile in 8 CPU-minutes) are not picked.
    pub all_shaders_checked: bool,
    /// Kernel family the ops use.
    pub variant: Variant,
    /// Measured configuration choices per (op, shape class), shared by every clone (empty:
    /// every op runs its default configuration).
    pub tuning: Arc<Tuning>,
}

impl Default for Target {
    /// A conservative target that runs everywhere: today's CPU-shaped kernels under the loop
    /// budget (what a graph gets when it is built without an adapter).
    fn default() -> Self {
        let limits = wgpu::Limits::default();
        Target {
            adapter: "portable".into(),
            device_type: wgpu::DeviceType::Other,
            vendor: 0,
            f16: false,
            subgroups: false,
            subgroup_min_size: 0,
            timestamps: false,
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            loop_budget: Some(CPU_LOOP_BUDGET),
            all_shaders_checked: false,
            variant: Variant::Cpu,
            tuning: Arc::default(),
        }
    }
}

impl Target {
    /// The target of an opened adapter; `force` (e.g. from `STIPPLE_FORCE_VARIANT`) overrides the
    /// variant the device type implies.
    pub fn from_adapter(
        info: &wgpu::AdapterInfo,
        features: wgpu::Features,
        limits: &wgpu::Limits,
        force: Option<Variant>,
    ) -> Target {
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let implied = if cpu { Variant::Cpu } else { Variant::Gpu };
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        Target {
            adapter: info.name.clone(),
            device_type: info.device_type,
            vendor: info.vendor,
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups,
            subgroup_min_size: if subgroups { info.subgroup_min_size } else { 0 },
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            // lavapipe's limit; software adapters of other kinds are assumed to share it.
            loop_budget: cpu.then_some(CPU_LOOP_BUDGET),
            all_shaders_checked: false,
            variant: force.unwrap_or(implied),
            tuning: Arc::default(),
        }
    }

    /// `STIPPLE_FORCE_VARIANT` (`cpu` or `gpu`), if set.
    pub fn forced_variant_from_env() -> Result<Option<Variant>> {
        match std::env::var("STIPPLE_FORCE_VARIANT") {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.parse()?)),
            _ => Ok(None),
        }
    }

    /// The same target with another kernel variant (tests force GPU variants on lavapipe).
    pub fn with_variant(mut self, variant: Variant) -> Target {
        self.variant = variant;
        self
    }

    /// The same target with configuration `config` forced for every shape of tunable kernel
    /// `op`, in a table of its own (tests run every candidate; the tuner measures each).
    pub fn with_config(mut self, op: &str, config: &str) -> Target {
        self.tuning = Arc::new(self.tuning.with_forced(op, config));
        self
    }

    /// Loop iterations a kernel may plan for one invocation (`usize::MAX` without a budget).
    pub fn loop_budget(&self) -> usize {
        self.loop_budget.unwrap_or(usize::MAX)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, vendor {:#x}): {} kernels, f16 {}, subgroups {}, timestamps {}, loop budget {}",
            self.adapter,
            self.device_type,
            self.vendor,
            self.variant.name(),
            self.f16,
            self.subgroups,
            self.timestamps,
            self.loop_budget
                .map(|b| b.to_string())
                .unwrap_or_else(|| "none".into())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(device_type: wgpu::DeviceType) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: "test".into(),
            vendor: 0x10de,
            device: 0,
            device_type,
            device_pci_bus_id: String::new(),
            driver: String::new(),
            driver_info: String::new(),
            backend: wgpu::Backend::Vulkan,
            subgroup_min_size: 32,
            subgroup_max_size: 32,
            transient_saves_memory: None,
            limit_bucket: None,
        }
    }

    #[test]
    fn variant_and_budget_follow_the_device_type() {
        let limits = wgpu::Limits::default();
        let cpu = Target::from_adapter(
            &info(wgpu::DeviceType::Cpu),
            wgpu::Features::empty(),
            &limits,
            None,
        );
        assert_eq!(cpu.variant, Variant::Cpu);
        assert_eq!(cpu.loop_budget, Some(CPU_LOOP_BUDGET));
        let gpu = Target::from_adapter(
            &info(wgpu::DeviceType::DiscreteGpu),
            wgpu::Features::SHADER_F16,
            &limits,
            None,
        );
        assert_eq!(gpu.variant, Variant::Gpu);
        assert_eq!(gpu.loop_budget, None);
        assert!(gpu.f16 && !gpu.subgroups && gpu.subgroup_min_size == 0);
        let with_subgroups = Target::from_adapter(
            &info(wgpu::DeviceType::Cpu),
            wgpu::Features::SUBGROUP,
            &limits,
            None,
        );
        assert!(with_subgroups.subgroups && with_subgroups.subgroup_min_size == 32);
        // Forcing the GPU variant on a CPU adapter keeps the CPU adapter's loop budget.
        let forced = Target::from_adapter(
            &info(wgpu::DeviceType::Cpu),
            wgpu::Features::empty(),
            &limits,
            Some(Variant::Gpu),
        );
        assert_eq!(forced.variant, Variant::Gpu);
        assert_eq!(forced.loop_budget, Some(CPU_LOOP_BUDGET));
    }

    #[test]
    fn variant_names_parse() {
        assert_eq!("GPU".parse::<Variant>().unwrap(), Variant::Gpu);
        assert_eq!("lavapipe".parse::<Variant>().unwrap(), Variant::Cpu);
        assert!("tpu".parse::<Variant>().is_err());
    }
}
