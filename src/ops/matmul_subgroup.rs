//! Geometry of the subgroup GEMM kernels of CPU targets (`shaders/matmul_subgroup.wgsl` for
//! linear layers, `shaders/conv2d_subgroup.wgsl` for implicit-GEMM convolution): a workgroup is
//! one subgroup of 8 lanes; each lane owns [`rows_per_lane`] rows × 32 columns, reads its rows
//! as `vec4` (4 k at a time, so K, or CIN for a convolution, must be a multiple of 4) and one
//! `vec4` of weights per k row, and subgroup broadcasts share the weights across the lanes. The
//! ops ([`super::matmul::linear`], [`super::conv2d::conv2d`]) pick these kernels for
//! [`Variant::Cpu`] targets with subgroups of at least 8 invocations (lavapipe) when
//! [`use_subgroup`] says so, and keep the register-blocked kernels otherwise. Why this shape:
//! `docs/kernels.md`, "Subgroup GEMM".

use super::WeightLayout;
use crate::error::{Error, Result};
use crate::gpu::{Target, Variant};

/// Lanes per workgroup (= the subgroup the weights are shared across).
pub const LANES: usize = 8;
/// Output columns per workgroup: one chunk of 4 per lane (CHUNKS = 8 in the shaders).
pub const COLS: usize = 32;
/// Fewest rows the subgroup kernels are used for: with fewer (the UNet's time-embedding
/// linears, 2 rows), the register-blocked `linear` measured faster (docs/kernels.md).
pub const MIN_ROWS: usize = 8;

/// Rows each lane owns (the `ROWS` override): 8, or 4 for GEMMs of under 256 rows (text
/// encoders: fewer rows wasted past M in the last row block).
pub fn rows_per_lane(rows: usize) -> usize {
    if rows >= 256 {
        8
    } else {
        4
    }
}

/// Loop iterations of the stores: per chunk of 4 columns, one `store4` loop of 4 per row.
fn store_iterations(rows: usize) -> usize {
    COLS / 4 * (1 + 4 * rows_per_lane(rows))
}

/// Loop iterations one `linear_subgroup` invocation runs (counted as if nothing were unrolled).
pub fn linear_iterations(rows: usize, k: usize) -> usize {
    k / 4 + store_iterations(rows)
}

/// Loop iterations one `conv2d_subgroup` invocation runs: the tap loops and the channel loop.
pub fn conv_iterations(rows: usize, [kh, kw]: [usize; 2], cin: usize) -> usize {
    kh + kh * kw * (1 + cin / 4) + store_iterations(rows)
}

/// Whether graphs for `target` may use the subgroup kernels: CPU variant, subgroups of at
/// least 8 lanes, and a native build (browsers want `enable subgroups;`, which naga rejects in
/// native builds, and the shaders go to the browser as written; a fallback adapter is a CPU
/// adapter there).
pub fn target_has_subgroup_gemm(target: &Target) -> bool {
    !cfg!(target_arch = "wasm32")
        && target.variant == Variant::Cpu
        && target.subgroups
        && target.subgroup_min_size as usize >= LANES
}

/// Whether a graph for `target` uses a subgroup kernel for a GEMM of `rows` rows whose
/// reduction is read as `vec4` (`vec4_reads`: K, or CIN, a multiple of 4) in `iterations` loop
/// iterations, its weight laid out as `layout`: [`target_has_subgroup_gemm`], within the loop
/// budget, and at least [`MIN_ROWS`] rows unless the weight is Blocked (which no other kernel
/// reads; with it the subgroup kernel also beat `linear` at 2 rows).
pub fn use_subgroup(
    target: &Target,
    rows: usize,
    vec4_reads: bool,
    iterations: usize,
    layout: WeightLayout,
) -> bool {
    target_has_subgroup_gemm(target)
        && rows > 0
        && (rows >= MIN_ROWS || layout == WeightLayout::Blocked)
        && vec4_reads
        && iterations <= target.loop_budget()
}

/// Workgroup counts: x over blocks of 32 of the NP packed columns, y over blocks of
/// 8 · [`rows_per_lane`] rows; row blocks beyond 65535 spill into z (the shaders read
/// `wid.y + wid.z · 65535`).
pub fn grid(label: &str, rows: usize, np: usize) -> Result<[u32; 3]> {
    const MAX: usize = 65535;
    let blocks = rows.div_ceil(LANES * rows_per_lane(rows));
    let z = blocks.div_ceil(MAX);
    if z > MAX {
        return Err(Error::shape(
            label,
            format!("{rows} rows exceed the subgroup GEMM grid"),
        ));
    }
    Ok([np.div_ceil(COLS) as u32, blocks.min(MAX) as u32, z as u32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lavapipe() -> Target {
        Target {
            subgroups: true,
            subgroup_min_size: 8,
            ..Target::default()
        }
    }

    #[test]
    fn selection_needs_cpu_variant_subgroups_rows_and_budget() {
        let t = lavapipe();
        let (packed, blocked) = (WeightLayout::Packed, WeightLayout::Blocked);
        assert!(use_subgroup(&t, 8, true, 100, packed));
        assert!(!use_subgroup(&t, 7, true, 100, packed));
        assert!(use_subgroup(&t, 2, true, 100, blocked));
        assert!(!use_subgroup(&t, 0, true, 100, blocked));
        assert!(!use_subgroup(&t, 8, false, 100, packed));
        assert!(use_subgroup(&t, 8, true, t.loop_budget(), packed));
        assert!(!use_subgroup(&t, 8, true, t.loop_budget() + 1, blocked));
        assert!(!use_subgroup(&Target::default(), 8, true, 100, packed));
        let small = Target {
            subgroup_min_size: 4,
            ..lavapipe()
        };
        assert!(!use_subgroup(&small, 8, true, 100, packed));
        let gpu = t.clone().with_variant(Variant::Gpu);
        assert!(!use_subgroup(&gpu, 8, true, 100, packed));
        assert_eq!(WeightLayout::for_target(&t, 320), blocked);
        assert_eq!(WeightLayout::for_target(&t, 3), packed);
        assert_eq!(WeightLayout::for_target(&gpu, 320), packed);
    }

    #[test]
    fn blocks_cover_the_outputs() {
        assert_eq!(WeightLayout::Packed.blocks(70), [(0, 70)]);
        assert_eq!(
            WeightLayout::Blocked.blocks(70),
            [(0, 32), (32, 64), (64, 70)]
        );
        assert_eq!(WeightLayout::Blocked.blocks(32), [(0, 32)]);
    }

    #[test]
    fn iterations_count_every_loop() {
        // 8 rows per lane: 8 chunks × (1 + 32 store iterations).
        assert_eq!(linear_iterations(256, 320), 80 + 8 * 33);
        assert_eq!(linear_iterations(255, 320), 80 + 8 * 17);
        assert_eq!(conv_iterations(512, [3, 3], 320), 3 + 9 * 81 + 8 * 33);
    }

    #[test]
    fn grid_spills_rows_into_z() {
        assert_eq!(grid("g", 8, 8).unwrap(), [1, 1, 1]);
        assert_eq!(grid("g", 255, 320).unwrap(), [10, 8, 1]);
        assert_eq!(grid("g", 256, 328).unwrap(), [11, 4, 1]);
        let rows = 64 * 65535 + 1;
        assert_eq!(grid("g", rows, 8).unwrap(), [1, 65535, 2]);
        assert!(grid("g", 64 * 65535 * 65536, 8).is_err());
    }
}
