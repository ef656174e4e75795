//! The registry of tunable kernels: for each, the target variant whose graphs use it, its
//! candidate configurations per key (default first) and the representative problem the tuner
//! times them on.
//!
//! # Adding a tunable kernel (the extension point)
//!
//! 1. Make the kernel's configuration selectable (override constants or entry points) and give
//!    the configurations names; the first must be today's kernel.
//! 2. In the op, ask the graph for the decision of the problem's key when adding the dispatch:
//!    `g.tuned(TuneKey::new("<entry>", g.dtype, class))` with a coarse shape class (a model
//!    should have only a handful); fall back to the default when it returns `None` or an unknown
//!    name ([`crate::ops::matmul_tiled::tile_for`] is the example).
//! 3. Add a [`Tunable`] to [`TUNABLES`] with the variant (CPU-variant kernels such as the
//!    register-blocked linear kernel of lavapipe register with [`Variant::Cpu`]), the candidate
//!    names and a problem builder whose graph runs the kernel on the class's representative
//!    sizes, scaled down to the flop cap the tuner passes.
//! 4. Test every configuration against the CPU reference (`tests/kernel_*.rs`), forcing each
//!    with [`Target::with_config`].
//!
//! Nothing else changes: graphs record the keys they used, the tuner measures the undecided
//! ones at first use, and decisions reach the op through the target.

use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Target, TuneKey, Variant};
use crate::graph::{Graph, ValueId};
use crate::ops::attention::{self, AttentionOptions};
use crate::ops::attention_tiled::TiledAttention;
use crate::ops::conv2d::{self, Conv2dOptions, Conv2dWeight};
use crate::ops::matmul::{self, LinearOptions, LinearWeight};
use crate::ops::matmul_tiled::TILES;

/// Builds a problem's graph for a target (the candidate forced in it).
pub type BuildGraph = Box<dyn Fn(&Target) -> Result<Graph>>;

/// A representative problem: builds its one-op graph for a target (the candidate forced in
/// it) and names the inputs to write. Weights are uploaded once, when the problem is made.
pub struct Problem {
    pub build: BuildGraph,
    /// (input name, values).
    pub inputs: Vec<(String, Vec<f32>)>,
    /// What the problem computes, for tables (e.g. `M=1024 N=320 K=576`).
    pub shape: String,
}

/// A kernel whose configuration is chosen by measurement.
pub struct Tunable {
    /// The key's op: the kernel's entry point.
    pub op: &'static str,
    /// Graphs of this variant use the kernel.
    pub variant: Variant,
    /// Names of the class sizes of its keys, for tables.
    pub dims: &'static [&'static str],
    /// Candidate configuration names for a key, the default (today's kernel) first.
    pub candidates: fn(&TuneKey) -> Vec<&'static str>,
    /// The representative problem of a key, with at most about `max_flops` FLOPs.
    pub problem: fn(&Gpu, &TuneKey, u64) -> Result<Problem>,
}

impl Tunable {
    /// The default configuration of `key`.
    pub fn default_config(&self, key: &TuneKey) -> Option<&'static str> {
        (self.candidates)(key).first().copied()
    }
}

/// Every tunable kernel. CPU-variant kernels: none yet (see the module docs to add one).
pub const TUNABLES: &[Tunable] = &[
    Tunable {
        op: "linear_tiled",
        variant: Variant::Gpu,
        dims: &["M", "N"],
        candidates: gemm_candidates,
        problem: linear_problem,
    },
    Tunable {
        op: "conv2d_tiled",
        variant: Variant::Gpu,
        dims: &["M", "N"],
        candidates: gemm_candidates,
        problem: conv2d_problem,
    },
    Tunable {
        op: "partial_tiled",
        variant: Variant::Gpu,
        dims: &["D"],
        candidates: attention_candidates,
        problem: attention_problem,
    },
];

/// The registry entry of `op` in `registry`.
pub fn find<'a>(registry: &'a [Tunable], op: &str) -> Option<&'a Tunable> {
    registry.iter().find(|t| t.op == op)
}

/// Whether any kernel of `registry` is tuned on graphs of `variant`.
pub fn tunes(registry: &[Tunable], variant: Variant) -> bool {
    registry.iter().any(|t| t.variant == variant)
}

fn gemm_candidates(_: &TuneKey) -> Vec<&'static str> {
    TILES.iter().map(|t| t.name).collect()
}

fn attention_candidates(key: &TuneKey) -> Vec<&'static str> {
    let d = key.class.first().copied().unwrap_or(1);
    TiledAttention::candidates(d)
        .iter()
        .map(|c| c.name)
        .collect()
}

/// The class sizes of `key`, `n` of them, or an error naming the key.
fn class<const N: usize>(key: &TuneKey) -> Result<[usize; N]> {
    <[usize; N]>::try_from(key.class.as_slice())
        .ok()
        .filter(|c| c.iter().all(|&s| s > 0))
        .ok_or_else(|| Error::invalid("tuning key", format!("{key}: expected {N} sizes")))
}

/// Shrinks `sizes` in order (each to no less than its floor) until `flops(sizes)` ≤ `max`;
/// halving keeps them multiples of what they were multiples of, down to the floor.
fn fit(sizes: &mut [usize], floors: &[usize], max: u64, flops: impl Fn(&[usize]) -> u64) {
    for i in 0..sizes.len() {
        while flops(sizes) > max && sizes[i] > floors[i] {
            sizes[i] = (sizes[i] / 2).max(floors[i]);
        }
    }
}

/// Deterministic values in [-1, 1) (the values do not change the timing).
fn filler(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

fn dtype_of(key: &TuneKey, gpu: &Gpu) -> Result<DType> {
    if key.dtype == DType::F16 && !gpu.supports_f16() {
        return Err(Error::invalid(
            "tuning key",
            format!("{key}: f16 needs SHADER_F16, which this adapter lacks"),
        ));
    }
    Ok(key.dtype)
}

/// A one-op graph: inputs `inputs` (name, shape), `op` adds the dispatch(es).
fn one_op(
    target: &Target,
    dtype: DType,
    inputs: &[(&str, Vec<usize>)],
    op: impl Fn(&mut Graph, &[ValueId]) -> Result<ValueId>,
) -> Result<Graph> {
    let mut g = Graph::for_target(dtype, target);
    let ids = inputs
        .iter()
        .map(|(n, s)| g.input(n, s))
        .collect::<Result<Vec<_>>>()?;
    let y = op(&mut g, &ids)?;
    g.output("out", y)?;
    Ok(g)
}

/// Reduction of the linear problems (SD's 1280-wide layers; classes leave K out).
const LINEAR_K: usize = 1280;
/// Input channels of the 3×3 conv problems (K = 2880, SD's first level).
const CONV_CIN: usize = 320;

/// x (M, K) · Wᵀ with W (N, K): the class's M and N, K = [`LINEAR_K`]; M, then N, then K
/// shrunk to the flop cap.
fn linear_problem(gpu: &Gpu, key: &TuneKey, max_flops: u64) -> Result<Problem> {
    let dtype = dtype_of(key, gpu)?;
    let [m, n] = class::<2>(key)?;
    let mut s = vec![m, n, LINEAR_K];
    fit(&mut s, &[64, 64, 64], max_flops, |s| {
        2 * (s[0] * s[1] * s[2]) as u64
    });
    let [m, n, k] = [s[0], s[1], s[2]];
    let w = LinearWeight::upload(gpu, "tune.linear", &filler(n * k, 1), None, n, k, dtype)?;
    Ok(Problem {
        build: Box::new(move |target| {
            one_op(target, dtype, &[("x", vec![m, k])], |g, ids| {
                matmul::linear(g, "tune.linear", ids[0], &w, LinearOptions::default())
            })
        }),
        inputs: vec![("x".into(), filler(m * k, 2))],
        shape: format!("M={m} N={n} K={k}"),
    })
}

/// A 3×3 convolution, padding 1, of a (1, M/32, 32, [`CONV_CIN`]) image to N channels: the
/// class's M (pixels) and N (output channels); rows, then input, then output channels shrunk
/// to the flop cap.
fn conv2d_problem(gpu: &Gpu, key: &TuneKey, max_flops: u64) -> Result<Problem> {
    let dtype = dtype_of(key, gpu)?;
    let [m, n] = class::<2>(key)?;
    let mut s = vec![m.div_ceil(32), CONV_CIN, n];
    fit(&mut s, &[2, 8, 64], max_flops, |s| {
        2 * (s[0] * 32 * s[2] * 9 * s[1]) as u64
    });
    let [h, cin, cout] = [s[0], s[1], s[2]];
    let input = [1, h, 32, cin];
    let weights = filler(cout * cin * 9, 3);
    let w = Conv2dWeight::upload(gpu, "tune.conv", &weights, None, [cout, cin, 3, 3], dtype)?;
    Ok(Problem {
        build: Box::new(move |target| {
            one_op(target, dtype, &[("x", input.to_vec())], |g, ids| {
                conv2d::conv2d(g, "tune.conv", ids[0], &w, Conv2dOptions::padded(1))
            })
        }),
        inputs: vec![("x".into(), filler(h * 32 * cin, 4))],
        shape: format!("3x3 {h}x32x{cin} -> {cout}"),
    })
}

/// Self-attention of 8 heads of the class's head dim over 1024 tokens (SD's second level);
/// queries, then keys shrunk to the flop cap.
fn attention_problem(gpu: &Gpu, key: &TuneKey, max_flops: u64) -> Result<Problem> {
    let dtype = dtype_of(key, gpu)?;
    let [d] = class::<1>(key)?;
    let heads = 8;
    let mut s = vec![1024, 1024];
    fit(&mut s, &[128, 16], max_flops, |s| {
        4 * (s[0] * s[1] * heads * d) as u64
    });
    let [tq, tk] = [s[0], s[1]];
    let opts = AttentionOptions {
        heads,
        head_dim: d,
        scale: None,
        causal: false,
    };
    let w = heads * d;
    Ok(Problem {
        build: Box::new(move |target| {
            let inputs = [("q", vec![1, tq, w]), ("kv", vec![1, tk, w])];
            one_op(target, dtype, &inputs, |g, ids| {
                attention::attention(
                    g,
                    "tune.attn",
                    ids[0].into(),
                    ids[1].into(),
                    ids[1].into(),
                    opts,
                )
            })
        }),
        inputs: vec![
            ("q".into(), filler(tq * w, 5)),
            ("kv".into(), filler(tk * w, 6)),
        ],
        shape: format!("{heads} heads D={d} queries={tq} keys={tk}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_real_configurations() {
        let key = |op: &str, class: Vec<usize>| TuneKey::new(op, DType::F32, class);
        for t in TUNABLES {
            assert_eq!(t.variant, Variant::Gpu, "{}", t.op);
        }
        assert!(!tunes(TUNABLES, Variant::Cpu));
        let linear = find(TUNABLES, "linear_tiled").unwrap();
        let k = key("linear_tiled", vec![1024, 320]);
        assert_eq!(
            linear.default_config(&k),
            Some(crate::ops::matmul_tiled::DEFAULT_TILE.name)
        );
        let attn = find(TUNABLES, "partial_tiled").unwrap();
        assert_eq!(
            attn.default_config(&key("partial_tiled", vec![64])),
            Some(crate::ops::attention_tiled::DEFAULT.name)
        );
        assert!(find(TUNABLES, "nope").is_none());
    }

    #[test]
    fn problems_shrink_to_the_flop_cap() {
        let mut s = vec![16384, 1280, 2880];
        fit(&mut s, &[64, 64, 64], 1 << 26, |s| {
            2 * (s[0] * s[1] * s[2]) as u64
        });
        assert!(2 * (s[0] * s[1] * s[2]) as u64 <= 1 << 26, "{s:?}");
        assert_eq!(s[0], 64);
        let mut s = vec![1024, 320, 576];
        fit(&mut s, &[64, 64, 64], 1 << 34, |s| {
            2 * (s[0] * s[1] * s[2]) as u64
        });
        assert_eq!(s, [1024, 320, 576]);
    }
}
