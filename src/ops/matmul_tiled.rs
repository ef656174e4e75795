//! Geometry of the workgroup-memory GEMM kernels of GPU targets (`shaders/matmul_tiled.wgsl`
//! for linear layers, `shaders/conv2d_tiled.wgsl` for implicit-GEMM convolution): output tiles
//! of 128 rows × 64 columns per 256-invocation workgroup, K streamed in steps of 16. The ops
//! ([`super::matmul::linear`], [`super::conv2d::conv2d`]) pick these kernels for
//! [`Variant::Gpu`](crate::gpu::Variant) targets when the reduction fits the target's loop
//! budget (a GPU variant forced on lavapipe), and keep their register-blocked kernel otherwise.
//! Tile shapes and why: `docs/kernels.md`.

use crate::error::{Error, Result};
use crate::gpu::{Target, Variant};

/// Output rows (pixels for conv) per workgroup (BM in the shaders).
pub const TILE_ROWS: usize = 128;
/// Output columns per workgroup (BN = 4·BN4 in the shaders).
pub const TILE_COLS: usize = 64;
/// Reduction step through workgroup memory (BK in the shaders).
pub const TILE_K: usize = 16;
/// Bytes of workgroup memory of `conv2d_tiled` (the larger of the two): the `src` tile (16 k
/// rows of 33 vec4), the `w` tile (16 × 16 vec4) and 128 pixel origins (vec4<i32>).
pub const WORKGROUP_BYTES: usize = 16 * 33 * 16 + 16 * 16 * 16 + 128 * 16;
// WebGPU's default workgroup-memory limit (16 KiB) holds the tiles: checked at compile time.
const _: () = assert!(WORKGROUP_BYTES <= 16 << 10);

/// Loop iterations one invocation runs for a reduction of `k`: per step the 16-iteration inner
/// loop plus the step loop itself, and 32 for the stores (counted as if nothing were unrolled).
pub fn loop_iterations(k: usize) -> usize {
    k.div_ceil(TILE_K) * (TILE_K + 1) + 32
}

/// Whether a graph for `target` uses the tiled kernel for a GEMM with reduction `k` and
/// `rows` output rows: GPU variant, non-empty, within the loop budget and the workgroup limits.
pub fn use_tiled(target: &Target, rows: usize, k: usize) -> bool {
    target.variant == Variant::Gpu
        && rows > 0
        && k > 0
        && loop_iterations(k) <= target.loop_budget()
        && WORKGROUP_BYTES <= target.max_workgroup_storage_bytes as usize
        && target.max_invocations_per_workgroup >= 256
}

/// Workgroup counts: x over column tiles of the NP packed columns, y over row tiles; row tiles
/// beyond 65535 spill into z (the shaders read `wid.y + wid.z · 65535`).
pub fn grid(label: &str, rows: usize, np: usize) -> Result<[u32; 3]> {
    const MAX: usize = 65535;
    let tiles = rows.div_ceil(TILE_ROWS);
    let z = tiles.div_ceil(MAX);
    if z > MAX {
        return Err(Error::shape(
            label,
            format!("{rows} rows exceed the tiled GEMM grid"),
        ));
    }
    Ok([
        np.div_ceil(TILE_COLS) as u32,
        tiles.min(MAX) as u32,
        z as u32,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_follows_variant_and_budget() {
        let gpu = Target::default().with_variant(Variant::Gpu);
        assert!(use_tiled(&gpu, 10, 320));
        // Target::default() carries lavapipe's budget: a reduction past it keeps the
        // register-blocked kernel.
        assert!(!use_tiled(&gpu, 10, 60_000));
        let mut unbounded = gpu.clone();
        unbounded.loop_budget = None;
        assert!(use_tiled(&unbounded, 10, 60_000));
        assert!(!use_tiled(&Target::default(), 10, 320));
        assert!(!use_tiled(&gpu, 0, 320));
    }

    #[test]
    fn grid_spills_rows_into_z() {
        assert_eq!(grid("g", 1, 8).unwrap(), [1, 1, 1]);
        assert_eq!(grid("g", 129, 72).unwrap(), [2, 2, 1]);
        assert_eq!(grid("g", 65536 * 128, 8).unwrap(), [1, 65535, 2]);
    }
}
