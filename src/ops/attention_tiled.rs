//! Configurations of the GPU attention kernel (`shaders/attention.wgsl`, `partial_tiled`): how
//! many queries share a workgroup (WG) and at most how many keys go through workgroup memory
//! per tile (KV_TILE; fewer when the head dim is wide: K and V tiles stay within 16 KiB, every
//! adapter's minimum). [`CONFIGS`] lists the candidates measured per adapter, the first
//! ([`DEFAULT`]: 64 queries, 32 keys) being what runs without a decision; the op takes its
//! configuration from the target's tuning table by shape class ([`config_for`],
//! [`shape_class`]; the tuner: [`crate::autotune`]).

use crate::gpu::{KernelKey, TuneKey};
use crate::graph::Graph;

/// Workgroup memory the K and V tiles may use (f32): fits every adapter's minimum (16 KiB on
/// the web).
pub const TILE_BYTES: usize = 16 << 10;
/// The shader's bound on KV_TILE (its `scores` array).
pub const MAX_TILE_KEYS: usize = 32;

/// One configuration of `partial_tiled` (its override constants WG and KV_TILE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledAttention {
    /// Name in decisions and the cache file, e.g. `wg64-kv32`.
    pub name: &'static str,
    /// Queries (invocations) per workgroup.
    pub queries: usize,
    /// Keys per workgroup-memory tile at most (≤ [`MAX_TILE_KEYS`]).
    pub max_keys: usize,
}

const fn config(name: &'static str, queries: usize, max_keys: usize) -> TiledAttention {
    TiledAttention {
        name,
        queries,
        max_keys,
    }
}

/// The candidates, default first: 128 queries share each K/V tile load between twice the
/// queries; 16-key tiles halve the workgroup memory (more workgroups resident) at twice the
/// barriers.
pub const CONFIGS: [TiledAttention; 4] = [
    config("wg64-kv32", 64, 32),
    config("wg64-kv16", 64, 16),
    config("wg128-kv32", 128, 32),
    config("wg128-kv16", 128, 16),
];

/// What runs without a decision (today's kernel).
pub const DEFAULT: TiledAttention = CONFIGS[0];

impl TiledAttention {
    /// Keys per tile for head dim `d`: `max_keys`, fewer when 16 KiB cannot hold them.
    pub fn keys(&self, d: usize) -> usize {
        let per_key = 2 * d.div_ceil(4) * 16;
        (TILE_BYTES / per_key).clamp(1, self.max_keys)
    }

    /// Workgroup memory of the K and V tiles at head dim `d`.
    pub fn workgroup_bytes(&self, d: usize) -> usize {
        2 * self.keys(d) * d.div_ceil(4) * 16
    }

    /// Keys one invocation may process within `budget` loop iterations (all keys without a
    /// budget), counted as if no loop were unrolled: per tile the key loops (2 + 2·⌈D/4⌉ per
    /// key), the rescale (⌈D/4⌉ + 1), the tile load (⌈keys·⌈D/4⌉ / WG⌉) and the tile loop itself,
    /// plus 4·⌈D/4⌉ outside.
    pub fn keys_per_split(&self, d: usize, budget: usize) -> usize {
        if budget == usize::MAX {
            return usize::MAX;
        }
        let d4 = d.div_ceil(4);
        let keys = self.keys(d);
        let loads = (keys * d4).div_ceil(self.queries);
        let per_tile = keys * (2 + 2 * d4) + d4 + 1 + loads + 1;
        (budget.saturating_sub(4 * d4) / per_tile).max(1) * keys
    }

    /// `key` with this configuration's override constants for head dim `d`.
    pub fn apply(&self, key: KernelKey, d: usize) -> KernelKey {
        key.with("KV_TILE", self.keys(d) as u32)
            .with("WG", self.queries as u32)
    }

    /// The configuration named `name`.
    pub fn named(name: &str) -> Option<TiledAttention> {
        CONFIGS.iter().copied().find(|c| c.name == name)
    }

    /// The configurations worth measuring at head dim `d`: those that differ there (a wide
    /// head caps every tile at the same key count).
    pub fn candidates(d: usize) -> Vec<TiledAttention> {
        let mut out: Vec<TiledAttention> = Vec::new();
        for c in CONFIGS {
            if !out
                .iter()
                .any(|o| o.queries == c.queries && o.keys(d) == c.keys(d))
            {
                out.push(c);
            }
        }
        out
    }
}

/// Shape class of an attention with head dim `d`, as a representative head dim: up to 64
/// (SD1.x 40, SD2.x and SDXL 64), 128 (80) or more (160). The head dim sets the K/V tile and
/// the unrolled loops; query and key counts are left out (the tuner times a typical
/// self-attention), so a model has one to three classes.
pub fn shape_class(d: usize) -> Vec<usize> {
    match d {
        0..=64 => vec![64],
        65..=128 => vec![80],
        _ => vec![160],
    }
}

/// The configuration a graph uses for `partial_tiled` at head dim `d`: the target's decision
/// for the shape class, else [`DEFAULT`].
pub fn config_for(g: &mut Graph, d: usize) -> TiledAttention {
    let key = TuneKey::new("partial_tiled", g.dtype, shape_class(d));
    g.tuned(key)
        .and_then(|name| TiledAttention::named(&name))
        .unwrap_or(DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_fits_16_kib_and_wide_heads_dedupe() {
        let limits = wgpu::Limits::default();
        for c in CONFIGS {
            assert!(c.max_keys <= MAX_TILE_KEYS);
            assert!(c.queries <= limits.max_compute_invocations_per_workgroup as usize);
            for d in [1, 3, 40, 64, 80, 128, 160] {
                assert!(
                    c.workgroup_bytes(d) <= limits.max_compute_workgroup_storage_size as usize,
                    "{} d{d}",
                    c.name
                );
            }
        }
        // Today's tile: 32 keys up to D = 64, 25 at 80, 12 at 160.
        assert_eq!([40, 64, 80, 160].map(|d| DEFAULT.keys(d)), [32, 32, 25, 12]);
        assert_eq!(TiledAttention::candidates(40).len(), 4);
        let wide: Vec<&str> = TiledAttention::candidates(160)
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(wide, ["wg64-kv32", "wg128-kv32"]);
        assert_eq!(shape_class(40), [64]);
        assert_eq!(shape_class(64), [64]);
        assert_eq!(shape_class(80), [80]);
        assert_eq!(shape_class(160), [160]);
    }
}
