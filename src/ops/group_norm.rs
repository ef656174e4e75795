//! Group normalisation (`shaders/group_norm.wgsl`) with optional fused SiLU, as a split
//! reduction: partial statistics per chunk of pixels, finalize per group, then apply.
//!
//! The input may be read in place from two tensors split on channels ([`GroupNormInput::concat`]:
//! the UNet's up blocks normalise `torch.cat([hidden, skip], dim=1)` without the concatenation
//! being written) and may have a (B, C) addend broadcast over its pixels
//! ([`GroupNormInput::channel_add`]: ResnetBlock2D's `conv1(…) + time_emb_proj(temb)`, added as
//! it is loaded). The statistics are reduced in workgroup memory ([`StatsKernel::Workgroup`],
//! every adapter), with subgroup operations (`shaders/group_norm_subgroup.wgsl`,
//! [`StatsKernel::Subgroup`]) on GPU-variant targets whose device has SUBGROUP, or one summary
//! per invocation without barriers (the `*_serial` entries, [`StatsKernel::Serial`]) on CPU
//! targets.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32};
use crate::error::{Error, Result};
use crate::gpu::tensor::numel;
use crate::gpu::{DType, KernelKey, Target, Tensor, Variant};
use crate::graph::{Dispatch, Graph, ValueId};

const WG: usize = 256;
/// Elements each `apply` invocation writes (written out in the shader).
const APPLY_ELEMENTS: usize = 4;
/// Reduction workgroups: small, since every workgroup barrier costs a coroutine switch per
/// invocation on lavapipe.
const REDUCE_WG: usize = 64;
/// Elements one partial-statistics workgroup reduces (about).
const CHUNK_ELEMENTS: usize = 8192;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    hw: u32,
    c: u32,
    groups: u32,
    chunk_pixels: u32,
    chunks: u32,
    eps: f32,
    c1: u32,
}

/// A GroupNorm layer's parameters (diffusers `nn.GroupNorm(num_groups, C, eps)`).
#[derive(Clone, Debug)]
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f32,
    /// γ (C).
    pub weight: Tensor,
    /// β (C).
    pub bias: Tensor,
}

/// What a group norm normalises: `x`, or `[x ‖ concat]` on channels, plus `channel_add`.
#[derive(Clone, Copy, Debug)]
pub struct GroupNormInput {
    /// (B, …, C₁): channels [0, C₁).
    pub x: ValueId,
    /// (B, …, C₂): channels [C₁, C₁ + C₂), read in place (never concatenated in memory).
    pub concat: Option<ValueId>,
    /// (B, C): added to every pixel of batch b before normalising, in f32 as it is loaded.
    pub channel_add: Option<ValueId>,
}

impl From<ValueId> for GroupNormInput {
    fn from(x: ValueId) -> Self {
        GroupNormInput {
            x,
            concat: None,
            channel_add: None,
        }
    }
}

/// How the statistics are reduced inside a workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsKernel {
    /// A barrier tree in workgroup memory (`group_norm.wgsl`): every adapter.
    Workgroup,
    /// `subgroupAdd` within each subgroup, then one slot per subgroup (`group_norm_subgroup.wgsl`):
    /// devices with SUBGROUP.
    Subgroup,
    /// One invocation per chunk (and per group to finalize), no workgroup memory or barriers
    /// (`group_norm.wgsl`'s `*_serial` entries): CPU targets, where each barrier is a coroutine
    /// switch per invocation.
    Serial,
}

impl StatsKernel {
    /// The subgroup reduction on GPU-variant targets whose device has SUBGROUP, the serial one
    /// on CPU targets, the workgroup tree elsewhere (docs/kernels.md has the lavapipe
    /// comparisons).
    pub fn for_target(target: &Target) -> StatsKernel {
        match target.variant {
            Variant::Cpu => StatsKernel::Serial,
            Variant::Gpu if target.subgroups => StatsKernel::Subgroup,
            Variant::Gpu => StatsKernel::Workgroup,
        }
    }

    /// The shader file of the statistics entries.
    pub fn shader(self) -> &'static str {
        match self {
            StatsKernel::Workgroup => "group_norm",
            StatsKernel::Subgroup => "group_norm_subgroup",
            StatsKernel::Serial => "group_norm",
        }
    }

    /// The entry point of statistics stage `stage` (`partial_stats` or `finalize`).
    pub fn entry(self, stage: &'static str) -> &'static str {
        match (self, stage) {
            (StatsKernel::Serial, "partial_stats") => "partial_stats_serial",
            (StatsKernel::Serial, "finalize") => "finalize_serial",
            _ => stage,
        }
    }
}

/// GroupNorm over x (B, H, W, C) or (B, T, C) (or the concatenation and sum `input` describes):
/// `groups` groups of C / groups channels, then an optional SiLU. The statistics kernel follows
/// the graph's target ([`StatsKernel::for_target`]).
pub fn group_norm(
    g: &mut Graph,
    name: &str,
    input: impl Into<GroupNormInput>,
    norm: &GroupNorm,
    silu: bool,
) -> Result<ValueId> {
    let stats = StatsKernel::for_target(&g.target);
    group_norm_with(g, name, input.into(), norm, silu, stats)
}

/// [`group_norm`] with the statistics reduced by `stats` (tests and benchmarks compare both).
pub fn group_norm_with(
    g: &mut Graph,
    name: &str,
    input: GroupNormInput,
    norm: &GroupNorm,
    silu: bool,
    stats_kernel: StatsKernel,
) -> Result<ValueId> {
    let GroupNorm {
        groups,
        eps,
        weight: gamma,
        bias: beta,
    } = norm;
    let (groups, eps) = (*groups, *eps);
    let x = input.x;
    let shape = g.shape(x)?;
    if shape.len() < 2 {
        return Err(Error::shape(
            name,
            format!("group norm input must be (B, …, C), got {shape:?}"),
        ));
    }
    let (b, c1) = (shape[0], shape[shape.len() - 1]);
    let hw = numel(&shape[1..shape.len() - 1]);
    let c = match input.concat {
        Some(s) => {
            let second = g.shape(s)?;
            if second.len() != shape.len() || second[..shape.len() - 1] != shape[..shape.len() - 1]
            {
                return Err(Error::shape(
                    name,
                    format!("cannot normalise the concatenation of {shape:?} and {second:?}"),
                ));
            }
            c1 + second[second.len() - 1]
        }
        None => c1,
    };
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(
            name,
            format!("{c} channels do not split into {groups} groups"),
        ));
    }
    for (what, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape != [c] {
            return Err(Error::shape(
                name,
                format!("{what} has shape {:?}, expected [{c}]", t.shape),
            ));
        }
    }
    if let Some(a) = input.channel_add {
        let add = g.value(a)?;
        if add.shape.first() != Some(&b) || add.numel() != b * c || add.dtype != g.dtype {
            return Err(Error::shape(
                name,
                format!(
                    "per-channel addend is {:?} {}, expected ({b}, {c}) {}",
                    add.shape,
                    add.dtype.name(),
                    g.dtype.name()
                ),
            ));
        }
    }
    let mut out_shape = shape.clone();
    *out_shape.last_mut().unwrap_or(&mut 0) = c;
    let n = b * hw * c;
    let cpg = c / groups;
    let chunk_pixels = (CHUNK_ELEMENTS / cpg).clamp(1, hw);
    let chunks = hw.div_ceil(chunk_pixels);
    let u = |what: &str, v: usize| to_u32(name, what, v);
    let p = Params {
        n: u("elements", n)?,
        hw: u("pixels", hw)?,
        c: u("channels", c)?,
        groups: u("groups", groups)?,
        chunk_pixels: u("chunk", chunk_pixels)?,
        chunks: u("chunks", chunks)?,
        eps,
        c1: u("channels", c1)?,
    };
    let partials = g.intermediate(
        &format!("{name}.partials"),
        &[b, groups, chunks, 4],
        DType::F32,
    )?;
    let stats = g.intermediate(&format!("{name}.stats"), &[b, groups, 2], DType::F32)?;
    let gv = g.constant(gamma);
    let bv = g.constant(beta);
    let y = g.intermediate(name, &out_shape, g.dtype)?; // (B, …, C)
    let pb = params(&p);
    let dtype = g.dtype;
    let single_chunk = chunks == 1;
    let two = input.concat.is_some() as u32;
    let add = input.channel_add.is_some() as u32;
    // Unused bindings alias `x` (read-only, never read).
    let sources = [
        (1, x),
        (7, input.concat.unwrap_or(x)),
        (8, input.channel_add.unwrap_or(x)),
    ];
    let stats_key = |stage| {
        KernelKey::new(stats_kernel.shader(), stats_kernel.entry(stage), dtype)
            .with("TWO_SOURCES", two)
            .with("ADD", add)
            .with("WG", REDUCE_WG as u32)
    };
    // Workgroups per summary, or (serial) one invocation per summary in flat workgroups.
    let [partial_grid, finalize_grid] = if stats_kernel == StatsKernel::Serial {
        [
            grid_1d(name, (chunks * groups * b).div_ceil(REDUCE_WG))?,
            grid_1d(name, (groups * b).div_ceil(REDUCE_WG))?,
        ]
    } else {
        [
            [u("chunks", chunks)?, p.groups, u("batch", b)?],
            [p.groups, u("batch", b)?, 1],
        ]
    };
    let mut stages = vec![(
        stats_key("partial_stats"),
        [&sources[..], &[(2, partials)]].concat(),
        partial_grid,
    )];
    if !single_chunk {
        stages.push((
            stats_key("finalize"),
            vec![(2, partials), (3, stats)],
            finalize_grid,
        ));
    }
    let apply = KernelKey::new("group_norm", "apply", dtype)
        .with("SILU", silu as u32)
        .with("FROM_PARTIALS", single_chunk as u32)
        .with("TWO_SOURCES", two)
        .with("ADD", add)
        .with("WG", WG as u32);
    stages.push((
        apply,
        [
            &sources[..],
            &[(2, partials), (3, stats), (4, gv), (5, bv), (6, y)],
        ]
        .concat(),
        grid_1d(name, n.div_ceil(WG * APPLY_ELEMENTS))?,
    ));
    for (kernel, buffers, workgroups) in stages {
        let entry = kernel.entry;
        g.dispatch(Dispatch {
            label: format!("{name}.{entry}"),
            kernel,
            params: pb.clone(),
            buffers,
            workgroups,
        })?;
    }
    Ok(y)
}

/// CPU reference over x (B, HW, C), two-pass statistics in f64.
pub fn reference(
    x: &[f32],
    [b, hw, c]: [usize; 3],
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
) -> Vec<f32> {
    let cpg = c / groups;
    let mut y = vec![0.0; x.len()];
    for n in 0..b {
        for gi in 0..groups {
            let idx = |p: usize, k: usize| (n * hw + p) * c + gi * cpg + k;
            let count = (hw * cpg) as f64;
            let mean: f64 = (0..hw)
                .flat_map(|p| (0..cpg).map(move |k| (p, k)))
                .map(|(p, k)| x[idx(p, k)] as f64)
                .sum::<f64>()
                / count;
            let var: f64 = (0..hw)
                .flat_map(|p| (0..cpg).map(move |k| (p, k)))
                .map(|(p, k)| (x[idx(p, k)] as f64 - mean).powi(2))
                .sum::<f64>()
                / count;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for p in 0..hw {
                for k in 0..cpg {
                    let ch = gi * cpg + k;
                    let mut v =
                        (x[idx(p, k)] as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
                    if silu {
                        v /= 1.0 + (-v).exp();
                    }
                    y[idx(p, k)] = v as f32;
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgroup_statistics_only_on_gpu_targets_with_subgroups() {
        // CPU targets take the barrier-free serial entries, subgroups or not.
        let cpu = Target {
            subgroups: true,
            ..Target::default()
        };
        assert_eq!(StatsKernel::for_target(&cpu), StatsKernel::Serial);
        assert_eq!(StatsKernel::Serial.shader(), "group_norm");
        assert_eq!(StatsKernel::Serial.entry("finalize"), "finalize_serial");
        assert_eq!(StatsKernel::Workgroup.entry("finalize"), "finalize");
        let gpu = cpu.clone().with_variant(Variant::Gpu);
        assert_eq!(StatsKernel::for_target(&gpu), StatsKernel::Subgroup);
        let no_subgroups = Target {
            subgroups: false,
            ..gpu
        };
        assert_eq!(
            StatsKernel::for_target(&no_subgroups),
            StatsKernel::Workgroup
        );
        assert_eq!(StatsKernel::Subgroup.shader(), "group_norm_subgroup");
    }
}
