//! Nearest-neighbour 2× upsampling, NHWC (`shaders/upsample.wgsl`).

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32};
use crate::error::{Error, Result};
use crate::gpu::tensor::numel;
use crate::gpu::KernelKey;
use crate::graph::{Dispatch, Graph, ValueId};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
}

/// x (B, H, W, C) → (B, 2H, 2W, C).
pub fn upsample_nearest2x(g: &mut Graph, name: &str, x: ValueId) -> Result<ValueId> {
    let shape = g.shape(x)?;
    let &[b, h, w, c] = shape.as_slice() else {
        return Err(Error::shape(
            name,
            format!("upsample input must be (B, H, W, C), got {shape:?}"),
        ));
    };
    let out = [b, 2 * h, 2 * w, c];
    let n = numel(&out);
    let p = Params {
        n: to_u32(name, "elements", n)?,
        h: h as u32,
        w: w as u32,
        c: c as u32,
    };
    let y = g.intermediate(name, &out, g.dtype)?;
    g.dispatch(Dispatch {
        label: name.to_string(),
        kernel: KernelKey::new("upsample", "upsample_nearest2x", g.dtype),
        params: params(&p),
        buffers: vec![(1, x), (2, y)],
        workgroups: grid_1d(name, n.div_ceil(256))?,
    })?;
    Ok(y)
}

/// CPU reference.
pub fn reference(x: &[f32], [b, h, w, c]: [usize; 4]) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len() * 4);
    for n in 0..b {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                let base = ((n * h + oy / 2) * w + ox / 2) * c;
                y.extend_from_slice(&x[base..base + c]);
            }
        }
    }
    y
}
