//! Graph builders for every kernel family, one file per shader (same stem), each with a naive
//! CPU reference beside it (`reference`) that tests compare the GPU against.
//!
//! A builder checks shapes, adds its output value(s) and appends one or more dispatches.
//! Activations are NHWC / (B, T, C) row-major.

pub mod attention;
pub mod concat;
pub mod conv2d;
pub mod elementwise;
pub mod group_norm;
pub mod layer_norm;
pub mod matmul;
pub mod matmul_subgroup;
pub mod matmul_tiled;
pub mod probe;
pub mod scheduler_step;
pub mod softmax;
pub mod timestep_embedding;
pub mod upsample;

use crate::error::{Error, Result};

/// Loop iterations one invocation may run. Mesa's llvmpipe (lavapipe) silently ends an
/// invocation after 65535 loop iterations in total, all loops of the shader together
/// (`LP_MAX_TGSI_LOOP_ITERATIONS`), leaving its outputs partly written. Kernels with long loops
/// (attention over many keys, GEMMs with a long reduction) split their work to stay below this,
/// with a margin for the short loops around the main one.
pub const LOOP_BUDGET: usize = crate::gpu::target::CPU_LOOP_BUDGET;

/// Workgroup counts for `groups` workgroups laid out 2-D (x ≤ 65535); shaders flatten them as
/// `wid.y · num_workgroups.x + wid.x` and skip the excess.
pub(crate) fn grid_1d(label: &str, groups: usize) -> Result<[u32; 3]> {
    const MAX: usize = 65535;
    let x = groups.clamp(1, MAX);
    let y = groups.div_ceil(MAX).max(1);
    if y > MAX {
        return Err(Error::shape(
            label,
            format!("{groups} workgroups exceed 65535 × 65535"),
        ));
    }
    Ok([x as u32, y as u32, 1])
}

/// Workgroup counts for the register-blocked GEMM kernels (matmul, conv2d): 8 × 8 invocations of
/// 4 rows × 8 columns each; row groups beyond 65535 spill into z.
pub(crate) fn gemm_grid(label: &str, rows: usize, np: usize) -> Result<[u32; 3]> {
    const MAX: usize = 65535;
    let groups = rows.div_ceil(32);
    let y = groups.min(MAX);
    let z = groups.div_ceil(MAX);
    if z > MAX {
        return Err(Error::shape(
            label,
            format!("{rows} rows exceed the GEMM grid"),
        ));
    }
    Ok([(np / 8).div_ceil(8) as u32, y as u32, z as u32])
}

/// Bytes of a `#[repr(C)]` params struct.
pub(crate) fn params<P: bytemuck::Pod>(p: &P) -> Vec<u8> {
    bytemuck::bytes_of(p).to_vec()
}

/// Shape and value count as `u32` (the kernels index with u32).
pub(crate) fn to_u32(label: &str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(label, format!("{what} = {n} exceeds u32 indexing")))
}

/// Round `n` up to a multiple of 8: packed weights have NP columns.
pub fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}
