//! Layer normalisation over the last axis (`shaders/layer_norm.wgsl`).

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32, LOOP_BUDGET};
use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Tensor, Variant};
use crate::graph::{Dispatch, Graph, ValueId};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    eps: f32,
}

/// LayerNorm of x (…, C) with `gamma`, `beta` (C).
pub fn layer_norm(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    eps: f32,
    gamma: &Tensor,
    beta: &Tensor,
) -> Result<ValueId> {
    let shape = g.shape(x)?;
    let c = *shape.last().unwrap_or(&0);
    for (what, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape != [c] {
            return Err(Error::shape(
                name,
                format!("{what} has shape {:?}, expected [{c}]", t.shape),
            ));
        }
    }
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let p = Params {
        rows: to_u32(name, "rows", rows)?,
        c: to_u32(name, "features", c)?,
        eps,
    };
    let gv = g.constant(gamma);
    let bv = g.constant(beta);
    let y = g.intermediate(name, &shape, g.dtype)?;
    // CPU targets: one invocation per row, 64 rows per workgroup, no barriers (each barrier is
    // a coroutine switch per invocation on lavapipe), while its 3·C loop iterations fit the loop
    // budget. GPU targets: one workgroup per row (small: 64 invocations).
    let (entry, workgroups) = match g.target.variant {
        Variant::Cpu if 3 * c <= LOOP_BUDGET => {
            ("layer_norm_rows", grid_1d(name, rows.div_ceil(64))?)
        }
        _ => ("layer_norm", grid_1d(name, rows)?),
    };
    g.dispatch(Dispatch {
        label: name.to_string(),
        kernel: KernelKey::new("layer_norm", entry, g.dtype).with("WG", 64),
        params: params(&p),
        buffers: vec![(1, x), (2, gv), (3, bv), (4, y)],
        workgroups,
    })?;
    Ok(y)
}

/// CPU reference over rows of `c` values, f64 statistics.
pub fn reference(x: &[f32], c: usize, eps: f32, gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            row.iter().enumerate().map(move |(i, &v)| {
                ((v as f64 - mean) * rstd * gamma[i] as f64 + beta[i] as f64) as f32
            })
        })
        .collect()
}
