//! Group normalisation (`shaders/group_norm.wgsl`) with optional fused SiLU, as a split
//! reduction: partial statistics per chunk of pixels, finalize per group, then apply.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32};
use crate::error::{Error, Result};
use crate::gpu::tensor::numel;
use crate::gpu::{DType, KernelKey, Tensor};
use crate::graph::{Dispatch, Graph, ValueId};

const WG: usize = 256;
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

/// GroupNorm over x (B, H, W, C) or (B, T, C): `groups` groups of C / groups channels, then an
/// optional SiLU.
pub fn group_norm(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    norm: &GroupNorm,
    silu: bool,
) -> Result<ValueId> {
    let GroupNorm {
        groups,
        eps,
        weight: gamma,
        bias: beta,
    } = norm;
    let (groups, eps) = (*groups, *eps);
    let shape = g.shape(x)?;
    if shape.len() < 2 {
        return Err(Error::shape(
            name,
            format!("group norm input must be (B, …, C), got {shape:?}"),
        ));
    }
    let (b, c) = (shape[0], shape[shape.len() - 1]);
    let hw = numel(&shape[1..shape.len() - 1]);
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
    let cpg = c / groups;
    let chunk_pixels = (CHUNK_ELEMENTS / cpg).clamp(1, hw);
    let chunks = hw.div_ceil(chunk_pixels);
    let u = |what: &str, v: usize| to_u32(name, what, v);
    let p = Params {
        n: u("elements", numel(&shape))?,
        hw: u("pixels", hw)?,
        c: u("channels", c)?,
        groups: u("groups", groups)?,
        chunk_pixels: u("chunk", chunk_pixels)?,
        chunks: u("chunks", chunks)?,
        eps,
    };
    let partials = g.intermediate(
        &format!("{name}.partials"),
        &[b, groups, chunks, 4],
        DType::F32,
    )?;
    let stats = g.intermediate(&format!("{name}.stats"), &[b, groups, 2], DType::F32)?;
    let gv = g.constant(gamma);
    let bv = g.constant(beta);
    let y = g.intermediate(name, &shape, g.dtype)?;
    let pb = params(&p);
    let dtype = g.dtype;
    let single_chunk = chunks == 1;
    let key = |entry, wg: usize| {
        KernelKey::new("group_norm", entry, dtype)
            .with("SILU", silu as u32)
            .with("FROM_PARTIALS", single_chunk as u32)
            .with("WG", wg as u32)
    };
    let mut stages = vec![(
        key("partial_stats", REDUCE_WG),
        vec![(1, x), (2, partials)],
        [u("chunks", chunks)?, p.groups, u("batch", b)?],
    )];
    if !single_chunk {
        stages.push((
            key("finalize", REDUCE_WG),
            vec![(2, partials), (3, stats)],
            [p.groups, u("batch", b)?, 1],
        ));
    }
    stages.push((
        key("apply", WG),
        vec![(1, x), (2, partials), (3, stats), (4, gv), (5, bv), (6, y)],
        grid_1d(name, numel(&shape).div_ceil(WG))?,
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
