//! Graph builders for every kernel family, one file per shader (same stem), each with a naive
//! CPU reference beside it (`reference`) that tests compare the GPU against.
//!
//! A builder checks shapes, adds its output value(s) and appends one or more dispatches.
//! Activations are NHWC / (B, T, C) row-major.

pub mod attention;
pub mod attention_tiled;
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

/// How a Linear / Conv2d weight is laid out on the GPU. Both hold K·NP values (K the reduction:
/// in_features, or KH·KW·CIN; NP = pad8(N) output columns, the padding zero) and have the
/// tensor shape (K, NP); `docs/kernels.md`, "Weight layouts".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// (K, NP) row-major: `matmul::pack_weight` / `conv2d::pack_weight`. Every kernel reads it.
    #[default]
    Packed,
    /// Column blocks of [`BLOCK_COLS`]: output columns [32b, 32b + 32) ∩ [0, N) of block b in
    /// the Packed layout of that block alone, (K, pad8(width)), the blocks one after another.
    /// Only the subgroup kernels read it: a workgroup's 32 columns are then one contiguous
    /// stream instead of 128 bytes every NP·4 bytes (1.2–1.8× on lavapipe for wide weights).
    Blocked,
}

/// Output columns per block of [`WeightLayout::Blocked`] (= the subgroup kernels' workgroup).
pub const BLOCK_COLS: usize = 32;

impl WeightLayout {
    /// The layout a weight with reduction `k` (a Linear's in_features, a Conv2d's CIN for
    /// `k_unit`) gets when loaded for `target`: Blocked where the subgroup kernels can read it
    /// (CPU variant, subgroups of 8, `k_unit` a multiple of 4), Packed elsewhere.
    pub fn for_target(target: &crate::gpu::Target, k_unit: usize) -> WeightLayout {
        if matmul_subgroup::target_has_subgroup_gemm(target) && k_unit.is_multiple_of(4) {
            WeightLayout::Blocked
        } else {
            WeightLayout::Packed
        }
    }

    /// The output ranges `[start, end)` of `n` outputs that are packed on their own, in order:
    /// all of them (Packed) or blocks of 32 (Blocked). Each range's packed data starts at
    /// `start · K` (every block before it is 32 = pad8(32) columns wide).
    pub fn blocks(self, n: usize) -> Vec<(usize, usize)> {
        match self {
            WeightLayout::Packed => vec![(0, n)],
            WeightLayout::Blocked => (0..n)
                .step_by(BLOCK_COLS)
                .map(|s| (s, (s + BLOCK_COLS).min(n)))
                .collect(),
        }
    }
}
