//! Geometry of the workgroup-memory GEMM kernels of GPU targets (`shaders/matmul_tiled.wgsl`
//! for linear layers, `shaders/conv2d_tiled.wgsl` for implicit-GEMM convolution). The ops
//! ([`super::matmul::linear`], [`super::conv2d::conv2d`]) pick these kernels for
//! [`Variant::Gpu`](crate::gpu::Variant) targets when the reduction fits the target's loop
//! budget (a GPU variant forced on lavapipe), and keep their register-blocked kernel otherwise.
//!
//! The tile geometry is a set of override constants; [`TILES`] lists the configurations worth
//! measuring per adapter, the first ([`DEFAULT_TILE`]: 128 × 64 output tiles of 256 invocations,
//! 8 × 4 outputs each, K in steps of 16) being what runs without a decision. Each GEMM's
//! configuration comes from the target's tuning table by shape class ([`tile_for`],
//! [`shape_class`]; the tuner: [`crate::autotune`]). Tile shapes and why: `docs/kernels.md`.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Target, TuneKey, Variant};
use crate::graph::Graph;

/// One tile geometry of both tiled GEMM shaders (their override constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    /// Name in decisions and the cache file, e.g. `128x64k16`.
    pub name: &'static str,
    /// Output rows (pixels for conv) per workgroup (BM).
    pub rows: usize,
    /// Output columns per workgroup (BN = 4·BN4).
    pub cols: usize,
    /// Reduction step through workgroup memory (BK).
    pub k_step: usize,
    /// Output rows per invocation (TM: 4 or 8; 4 columns each).
    pub rows_per_invocation: usize,
}

const fn tile(
    name: &'static str,
    rows: usize,
    cols: usize,
    k_step: usize,
    rows_per_invocation: usize,
) -> GemmTile {
    GemmTile {
        name,
        rows,
        cols,
        k_step,
        rows_per_invocation,
    }
}

/// The candidate configurations, default first. 128 × 64 with 8 × 4 per invocation is the
/// published choice for WGSL GEMMs (`docs/kernels.md`); 64 × 64 and 64 × 32 with 4 × 4 per
/// invocation give small GEMMs more workgroups; K steps of 8 halve the tiles (more workgroups
/// per compute unit) at twice the barriers.
pub const TILES: [GemmTile; 5] = [
    tile("128x64k16", 128, 64, 16, 8),
    tile("128x64k8", 128, 64, 8, 8),
    tile("64x64k16", 64, 64, 16, 4),
    tile("64x32k16", 64, 32, 16, 4),
    tile("64x32k8", 64, 32, 8, 4),
];

/// What runs without a decision (today's kernel).
pub const DEFAULT_TILE: GemmTile = TILES[0];

/// Output rows (pixels for conv) per workgroup of the default tile.
pub const TILE_ROWS: usize = DEFAULT_TILE.rows;
/// Output columns per workgroup of the default tile.
pub const TILE_COLS: usize = DEFAULT_TILE.cols;
/// Reduction step of the default tile.
pub const TILE_K: usize = DEFAULT_TILE.k_step;
/// Bytes of workgroup memory of the default tile in `conv2d_tiled` (the larger of the two).
pub const WORKGROUP_BYTES: usize = DEFAULT_TILE.workgroup_bytes(true);
/// WebGPU's default workgroup-memory limit.
pub const WEBGPU_WORKGROUP_BYTES: usize = 16 << 10;

// Every configuration fits WebGPU's default limits (16 KiB of workgroup memory, 256
// invocations) and the shaders' load pattern: checked at compile time.
const _: () = {
    let mut i = 0;
    while i < TILES.len() {
        assert!(TILES[i].is_valid());
        i += 1;
    }
};

impl GemmTile {
    /// Invocations per workgroup (WG): one per TM × 4 outputs.
    pub const fn invocations(&self) -> usize {
        self.rows / self.rows_per_invocation * (self.cols / 4)
    }

    /// Workgroup memory of the shader: the `src` tile (BK k rows of BM/4 + 1 vec4), the `w` tile
    /// (BK × BN/4 vec4) and, for conv (`conv`), BM window origins (vec4<i32>).
    pub const fn workgroup_bytes(&self, conv: bool) -> usize {
        let tiles = 16 * self.k_step * (self.rows / 4 + 1 + self.cols / 4);
        tiles + if conv { 16 * self.rows } else { 0 }
    }

    /// The shaders' assumptions and WebGPU's default limits hold: TM of 4 or 8, one or two
    /// `src` vec4 loads and at most one `w` vec4 per invocation per step, the conv origins
    /// loaded by one invocation each, ≤ 256 invocations and ≤ 16 KiB.
    pub const fn is_valid(&self) -> bool {
        let wg = self.invocations();
        let a_vec4 = self.k_step * self.rows / 4;
        (self.rows_per_invocation == 4 || self.rows_per_invocation == 8)
            && self.rows.is_multiple_of(self.rows_per_invocation)
            && self.cols.is_multiple_of(4)
            && wg <= 256
            && wg.is_multiple_of(self.k_step)
            && (a_vec4 == wg || a_vec4 == 2 * wg)
            && self.k_step * self.cols / 4 <= wg
            && self.rows <= wg
            && self.workgroup_bytes(true) <= WEBGPU_WORKGROUP_BYTES
    }

    /// Loop iterations one invocation runs for a reduction of `k`: per step the BK-iteration
    /// inner loop plus the step loop itself, and 4·TM for the stores (counted as if nothing were
    /// unrolled).
    pub fn loop_iterations(&self, k: usize) -> usize {
        k.div_ceil(self.k_step) * (self.k_step + 1) + 4 * self.rows_per_invocation
    }

    /// Whether a graph for `target` can run this tile for a reduction of `k`: loop budget,
    /// workgroup memory and invocations.
    pub fn fits(&self, target: &Target, k: usize) -> bool {
        self.loop_iterations(k) <= target.loop_budget()
            && self.workgroup_bytes(true) <= target.max_workgroup_storage_bytes as usize
            && self.invocations() <= target.max_invocations_per_workgroup as usize
    }

    /// `key` with this geometry's override constants.
    pub fn apply(&self, key: KernelKey) -> KernelKey {
        key.with("BM", self.rows as u32)
            .with("BN4", (self.cols / 4) as u32)
            .with("BK", self.k_step as u32)
            .with("TM", self.rows_per_invocation as u32)
            .with("WG", self.invocations() as u32)
    }

    /// Workgroup counts: x over column tiles of the NP packed columns, y over row tiles; row
    /// tiles beyond 65535 spill into z (the shaders read `wid.y + wid.z · 65535`).
    pub fn grid(&self, label: &str, rows: usize, np: usize) -> Result<[u32; 3]> {
        const MAX: usize = 65535;
        let tiles = rows.div_ceil(self.rows);
        let z = tiles.div_ceil(MAX);
        if z > MAX {
            return Err(Error::shape(
                label,
                format!("{rows} rows exceed the tiled GEMM grid"),
            ));
        }
        Ok([
            np.div_ceil(self.cols) as u32,
            tiles.min(MAX) as u32,
            z as u32,
        ])
    }

    /// The configuration named `name`.
    pub fn named(name: &str) -> Option<GemmTile> {
        TILES.iter().copied().find(|t| t.name == name)
    }
}

/// Loop iterations of the default tile for a reduction of `k` (see
/// [`GemmTile::loop_iterations`]).
pub fn loop_iterations(k: usize) -> usize {
    DEFAULT_TILE.loop_iterations(k)
}

/// Whether a graph for `target` uses the tiled kernel for a GEMM with reduction `k` and
/// `rows` output rows: GPU variant, non-empty, and the default tile fits the target.
pub fn use_tiled(target: &Target, rows: usize, k: usize) -> bool {
    target.variant == Variant::Gpu && rows > 0 && k > 0 && DEFAULT_TILE.fits(target, k)
}

/// Shape class of a GEMM with `rows` × `n` outputs, as representative sizes (M, N): the
/// output size, which sets how many workgroups each tile gives (up to 2¹⁹ outputs, 2²², more).
/// Coarse on purpose: a model has a handful of classes, each measured once; the reduction
/// length is left out (the tuner times a typical one).
pub fn shape_class(rows: usize, n: usize) -> Vec<usize> {
    match rows.saturating_mul(n) {
        0..=0x8_0000 => vec![1024, 320],
        0x8_0001..=0x40_0000 => vec![4096, 640],
        _ => vec![8192, 1280],
    }
}

/// The tile a graph uses for a tiled GEMM of kernel `op` (`linear_tiled` or `conv2d_tiled`),
/// or `None` when the tiled kernel does not fit the target (the op keeps its register-blocked
/// kernel): the target's decision for the shape class, if it names a configuration that fits,
/// else [`DEFAULT_TILE`].
pub fn tile_for(g: &mut Graph, op: &str, rows: usize, n: usize, k: usize) -> Option<GemmTile> {
    if !use_tiled(&g.target, rows, k) {
        return None;
    }
    let key = TuneKey::new(op, g.dtype, shape_class(rows, n));
    let decided = g.tuned(key).and_then(|name| GemmTile::named(&name));
    Some(
        decided
            .filter(|t| t.fits(&g.target, k))
            .unwrap_or(DEFAULT_TILE),
    )
}

/// Workgroup counts of the default tile (see [`GemmTile::grid`]).
pub fn grid(label: &str, rows: usize, np: usize) -> Result<[u32; 3]> {
    DEFAULT_TILE.grid(label, rows, np)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;

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
        let small = GemmTile::named("64x32k8").unwrap();
        assert_eq!(small.grid("g", 129, 72).unwrap(), [3, 3, 1]);
    }

    /// Workgroup memory and invocations of every configuration under WebGPU's defaults (16 KiB,
    /// 256); the default is today's kernel (12.3 KiB for linear, 14.3 KiB for conv).
    #[test]
    fn every_tile_fits_webgpu_default_limits() {
        let limits = wgpu::Limits::default();
        for t in TILES {
            assert!(t.is_valid(), "{t:?}");
            assert!(
                t.workgroup_bytes(true) <= limits.max_compute_workgroup_storage_size as usize,
                "{}: {} B",
                t.name,
                t.workgroup_bytes(true)
            );
            assert!(t.invocations() <= limits.max_compute_invocations_per_workgroup as usize);
            assert!(t.name.starts_with(&format!("{}x{}k", t.rows, t.cols)));
        }
        assert_eq!(
            DEFAULT_TILE.workgroup_bytes(false),
            16 * 33 * 16 + 16 * 16 * 16
        );
        assert_eq!(DEFAULT_TILE.workgroup_bytes(true), 14592);
        assert_eq!(DEFAULT_TILE.invocations(), 256);
        assert_eq!(loop_iterations(32), 2 * 17 + 32);
        // A tile breaking the load pattern is refused.
        assert!(!tile("x", 64, 64, 8, 4).is_valid());
    }

    #[test]
    fn decisions_pick_the_tile_and_unknown_names_fall_back() {
        let target = Target::default().with_variant(Variant::Gpu);
        let mut g = Graph::for_target(DType::F32, &target);
        assert_eq!(
            tile_for(&mut g, "linear_tiled", 100, 320, 320),
            Some(DEFAULT_TILE)
        );
        let key = TuneKey::new("linear_tiled", DType::F32, shape_class(100, 320));
        assert_eq!(g.tuning_uses()[0].key, key);
        assert_eq!(g.tuning_uses()[0].decision, None);
        target.tuning.decide(key.clone(), "64x32k8");
        let mut g = Graph::for_target(DType::F32, &target);
        assert_eq!(
            tile_for(&mut g, "linear_tiled", 100, 320, 320).map(|t| t.name),
            Some("64x32k8")
        );
        target.tuning.decide(key, "no-such-tile");
        let mut g = Graph::for_target(DType::F32, &target);
        assert_eq!(
            tile_for(&mut g, "linear_tiled", 100, 320, 320),
            Some(DEFAULT_TILE)
        );
        // Classes: output size and reduction.
        assert_eq!(shape_class(154, 768), [1024, 320]);
        assert_eq!(shape_class(8192, 320), [4096, 640]);
        assert_eq!(shape_class(8192, 2560), [8192, 1280]);
        // CPU variant: no tiled kernel, nothing asked.
        let mut g = Graph::new(DType::F32);
        assert_eq!(tile_for(&mut g, "linear_tiled", 100, 320, 320), None);
        assert!(g.tuning_uses().is_empty());
    }
}
