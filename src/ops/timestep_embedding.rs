//! Sinusoidal timestep embedding (`shaders/timestep_embedding.wgsl`), diffusers'
//! `get_timestep_embedding` as used by `Timesteps(num_channels, flip_sin_to_cos, freq_shift)`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelKey};
use crate::graph::{Dispatch, Graph, ValueId};

#[derive(Clone, Copy, Debug)]
pub struct TimestepEmbeddingOptions {
    pub dim: usize,
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f32,
    pub scale: f32,
    pub max_period: f32,
}

impl TimestepEmbeddingOptions {
    /// diffusers' defaults for `Timesteps(dim, flip_sin_to_cos, downscale_freq_shift)`.
    pub fn new(dim: usize, flip_sin_to_cos: bool, downscale_freq_shift: f32) -> Self {
        TimestepEmbeddingOptions {
            dim,
            flip_sin_to_cos,
            downscale_freq_shift,
            scale: 1.0,
            max_period: 10000.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    dim: u32,
    flip_sin_to_cos: u32,
    shift: f32,
    log_max_period: f32,
    scale: f32,
}

/// timesteps (B) in f32 → (B, dim).
pub fn timestep_embedding(
    g: &mut Graph,
    name: &str,
    timesteps: ValueId,
    o: TimestepEmbeddingOptions,
) -> Result<ValueId> {
    let v = g.value(timesteps)?;
    if v.shape.len() != 1 || v.dtype != DType::F32 {
        return Err(Error::shape(
            name,
            format!("timesteps must be f32 (B), got {:?} {:?}", v.dtype, v.shape),
        ));
    }
    if o.dim < 2 {
        return Err(Error::shape(name, format!("embedding dim {} < 2", o.dim)));
    }
    let b = v.shape[0];
    let n = b * o.dim;
    let p = Params {
        n: to_u32(name, "elements", n)?,
        dim: o.dim as u32,
        flip_sin_to_cos: o.flip_sin_to_cos as u32,
        shift: o.downscale_freq_shift,
        log_max_period: o.max_period.ln(),
        scale: o.scale,
    };
    let y = g.intermediate(name, &[b, o.dim], g.dtype)?;
    g.dispatch(Dispatch {
        label: name.to_string(),
        kernel: KernelKey::new("timestep_embedding", "timestep_embedding", g.dtype),
        params: params(&p),
        buffers: vec![(1, timesteps), (2, y)],
        workgroups: grid_1d(name, n.div_ceil(256))?,
    })?;
    Ok(y)
}

/// CPU reference in f64.
pub fn reference(timesteps: &[f32], o: TimestepEmbeddingOptions) -> Vec<f32> {
    let half = o.dim / 2;
    let mut out = Vec::with_capacity(timesteps.len() * o.dim);
    for &t in timesteps {
        let args: Vec<f64> = (0..half)
            .map(|i| {
                let exponent = -(o.max_period as f64).ln() * i as f64
                    / (half as f64 - o.downscale_freq_shift as f64);
                o.scale as f64 * t as f64 * exponent.exp()
            })
            .collect();
        let sin = args.iter().map(|a| a.sin() as f32);
        let cos = args.iter().map(|a| a.cos() as f32);
        if o.flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
        if o.dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}
