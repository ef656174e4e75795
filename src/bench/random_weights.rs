//! Random weights in memory for `stipple bench unet|vae|clip --family NAME`: a model is built
//! with placeholder weights (shapes only, [`crate::models::Ctx::placeholders`]) and each
//! placeholder its graph binds is replaced by a GPU tensor of the same packed shape and dtype,
//! filled with small values (uniform, standard deviation 0.02; norm scales 1 ± that, as
//! `init-random` writes them). Nothing is downloaded or written to disk; the values do not
//! change the timing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::graph::{Graph, ValueKind};
use crate::weights::random_init::{is_norm_scale, name_hash, uniform};

const STD: f32 = 0.02;

/// Replace every placeholder weight bound by `graph` with a random GPU tensor. A weight bound
/// several times gets one tensor.
pub fn realize_placeholders(gpu: &Gpu, graph: &mut Graph, seed: u64) -> Result<()> {
    let mut made: HashMap<*const wgpu::Buffer, Tensor> = HashMap::new();
    for v in graph.values.iter_mut() {
        let ValueKind::Constant(t) = &mut v.kind else {
            continue;
        };
        if !t.placeholder {
            continue;
        }
        let key = Arc::as_ptr(&t.buffer);
        let real = match made.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = random_tensor(gpu, t, seed)?;
                made.insert(key, r.clone());
                r
            }
        };
        *t = real;
    }
    Ok(())
}

fn random_tensor(gpu: &Gpu, like: &Tensor, seed: u64) -> Result<Tensor> {
    let key = name_hash(seed, &like.label);
    let offset = if is_norm_scale(&like.label, &like.shape) {
        1.0
    } else {
        0.0
    };
    let amplitude = STD * 3f32.sqrt();
    Tensor::from_fill(gpu, &like.label, &like.shape, like.dtype, |start, out| {
        for (i, o) in (start..).zip(out.iter_mut()) {
            *o = offset + uniform(key, i as u64) * amplitude;
        }
    })
}
