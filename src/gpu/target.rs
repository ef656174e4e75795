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

use crate::error::{Error, Result};

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
    /// Fewest invocations a subgroup may have (0 without subgroups).
    pub subgroup_min_size: u32,
    pub timestamps: bool,
    pub max_workgroup_storage_bytes: u32,
    pub max_invocations_per_workgroup: u32,
    pub max_storage_binding_bytes: u64,
    /// Loop iterations one invocation may run (`None`: no limit worth planning for).
    pub loop_budget: Option<usize>,
    /// Kernel family the ops use.
    pub variant: Variant,
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
            variant: Variant::Cpu,
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
        Target {
            adapter: info.name.clone(),
            device_type: info.device_type,
            vendor: info.vendor,
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: if features.contains(wgpu::Features::SUBGROUP) {
                info.subgroup_min_size
            } else {
                0
            },
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            // lavapipe's limit; software adapters of other kinds are assumed to share it.
            loop_budget: cpu.then_some(CPU_LOOP_BUDGET),
            variant: force.unwrap_or(implied),
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
        assert!(gpu.f16 && !gpu.subgroups);
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
