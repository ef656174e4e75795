//! Softmax over the last axis (`shaders/softmax.wgsl`), with a scale on the logits.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32};
use crate::error::Result;
use crate::gpu::KernelKey;
use crate::graph::{Dispatch, Graph, ValueId};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    scale: f32,
}

/// softmax(scale · x) over the last axis of x (…, C).
pub fn softmax(g: &mut Graph, name: &str, x: ValueId, scale: f32) -> Result<ValueId> {
    let shape = g.shape(x)?;
    let c = *shape.last().unwrap_or(&0);
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let p = Params {
        rows: to_u32(name, "rows", rows)?,
        c: to_u32(name, "features", c)?,
        scale,
    };
    let y = g.intermediate(name, &shape, g.dtype)?;
    g.dispatch(Dispatch {
        label: name.to_string(),
        // Small workgroups: each barrier costs a coroutine switch per invocation on lavapipe.
        kernel: KernelKey::new("softmax", "softmax", g.dtype).with("WG", 64),
        params: params(&p),
        buffers: vec![(1, x), (2, y)],
        workgroups: grid_1d(name, rows)?,
    })?;
    Ok(y)
}

/// CPU reference over rows of `c` values.
pub fn reference(x: &[f32], c: usize, scale: f32) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|row| {
            let m = row
                .iter()
                .map(|&v| scale as f64 * v as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row
                .iter()
                .map(|&v| (scale as f64 * v as f64 - m).exp())
                .collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / s) as f32)
        })
        .collect()
}
