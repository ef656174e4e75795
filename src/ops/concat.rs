//! Concatenation along the channel (last) axis (`shaders/concat.wgsl`).

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
    ca: u32,
    cb: u32,
}

/// [a, b] along the last axis: (…, CA) and (…, CB) → (…, CA + CB).
pub fn concat_channels(g: &mut Graph, name: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
    let (sa, sb) = (g.shape(a)?, g.shape(b)?);
    if sa.len() != sb.len() || sa[..sa.len() - 1] != sb[..sb.len() - 1] {
        return Err(Error::shape(
            name,
            format!("cannot concatenate {sa:?} and {sb:?} along channels"),
        ));
    }
    let (ca, cb) = (sa[sa.len() - 1], sb[sb.len() - 1]);
    let mut out = sa.clone();
    *out.last_mut().unwrap_or(&mut 0) = ca + cb;
    let n = numel(&out);
    let p = Params {
        n: to_u32(name, "elements", n)?,
        ca: ca as u32,
        cb: cb as u32,
    };
    let y = g.intermediate(name, &out, g.dtype)?;
    g.dispatch(Dispatch {
        label: name.to_string(),
        kernel: KernelKey::new("concat", "concat_channels", g.dtype),
        params: params(&p),
        buffers: vec![(1, a), (2, b), (3, y)],
        workgroups: grid_1d(name, n.div_ceil(256))?,
    })?;
    Ok(y)
}

/// CPU reference.
pub fn reference(a: &[f32], ca: usize, b: &[f32], cb: usize) -> Vec<f32> {
    a.chunks(ca)
        .zip(b.chunks(cb))
        .flat_map(|(x, y)| x.iter().chain(y).copied())
        .collect()
}
