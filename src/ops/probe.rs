//! Adapter peak probes (`shaders/probe.wgsl`) used by `stipple bench` to express kernel speed as
//! a fraction of what the adapter can do: FMA throughput and copy bandwidth.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32};
use crate::error::Result;
use crate::gpu::{DType, KernelKey};
use crate::graph::{Dispatch, Graph, ValueId};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    iters: u32,
    seed: f32,
}

/// `invocations` invocations × `iters` rounds of 256 flops; returns (output, flops).
pub fn fma_throughput(g: &mut Graph, invocations: usize, iters: u32) -> Result<(ValueId, f64)> {
    let y = g.intermediate("probe.fma", &[invocations, 4], DType::F32)?;
    let p = Params {
        n: to_u32("probe.fma", "invocations", invocations)?,
        iters,
        seed: 0.5,
    };
    g.dispatch(Dispatch {
        label: "probe.fma".into(),
        kernel: KernelKey::new("probe", "fma_throughput", DType::F32),
        params: params(&p),
        buffers: vec![(2, y)],
        workgroups: grid_1d("probe.fma", invocations.div_ceil(256))?,
    })?;
    Ok((y, invocations as f64 * iters as f64 * 256.0))
}

/// Copy `x` (any f32 tensor whose size is a multiple of 4) into a new value; returns (copy, bytes moved).
pub fn copy_bandwidth(g: &mut Graph, x: ValueId) -> Result<(ValueId, f64)> {
    let shape = g.shape(x)?;
    let n: usize = shape.iter().product();
    let y = g.intermediate("probe.copy", &shape, DType::F32)?;
    let p = Params {
        n: to_u32("probe.copy", "vec4s", n / 4)?,
        iters: 0,
        seed: 0.0,
    };
    g.dispatch(Dispatch {
        label: "probe.copy".into(),
        kernel: KernelKey::new("probe", "copy_bandwidth", DType::F32),
        params: params(&p),
        buffers: vec![(1, x), (2, y)],
        workgroups: grid_1d("probe.copy", (n / 4).div_ceil(256))?,
    })?;
    Ok((y, 2.0 * 4.0 * n as f64))
}
