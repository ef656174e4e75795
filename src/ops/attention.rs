//! Scaled dot-product attention (`shaders/attention.wgsl`, `shaders/attention_lanes.wgsl`),
//! flash style: online softmax, the (queries × keys) score matrix is never stored. Self- and
//! cross-attention, optional causal mask.
//!
//! Three kernels compute the same partial results; the graph's [`Target`] picks one
//! ([`AttentionKernel::for_target`]):
//! - `attention_lanes::partial` (CPU adapters such as lavapipe with subgroups of ≥ 8 lanes, head
//!   dim ≤ 512, ops of at least [`LANES_MIN_FLOPS`]): one subgroup of 8 lanes per workgroup,
//!   several queries per lane, each lane loading a different key of a tile and sharing it by
//!   subgroup shuffles (docs/kernels.md);
//! - `attention::partial` (other CPU adapters, and any head dim ≤ 512 elsewhere, e.g. the SD
//!   VAE's single head of 512 on GPUs): one query per invocation, K/V read straight from memory
//!   (workgroup memory buys nothing on a CPU, and each barrier is a coroutine switch there);
//! - `attention::partial_tiled` (GPUs, head dim ≤ 160): K/V tiles in workgroup memory shared by
//!   the workgroup's queries (64 by default; configurations and their per-adapter choice in
//!   [`super::attention_tiled`]).
//!
//! Under a loop budget (lavapipe) the keys are split across invocations and a `combine` pass
//! merges the partial softmax states.

use bytemuck::{Pod, Zeroable};

use super::attention_tiled::{self, TiledAttention};
use super::{grid_1d, params, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelKey, Target, Variant};
use crate::graph::{Dispatch, Graph, ValueId};

const WG: usize = 64;
/// Most bytes of f32 partial results one dispatch may hold (queries are chunked to fit).
const PARTIAL_BYTES: usize = 32 << 20;
/// Head dims up to this get their loops unrolled (a pipeline constant); wider ones loop.
const UNROLLED_HEAD_DIM: usize = 160;
/// Keys scored between two rescales of the accumulator (TILE_KEYS in the shader).
const TILE_KEYS: usize = 32;
/// `attention_lanes`: lanes per workgroup (= keys per tile), most queries per lane, vec4s per
/// head-dim chunk and most chunks (LANES, MAX_NQ, CH, MAX_CHUNKS in the shader).
const LANES: usize = 8;
const LANES_MAX_NQ: usize = 16;
const LANES_CH: usize = 8;
const LANES_MAX_CHUNKS: usize = 16;
const LANES_HEAD_DIM: usize = 4 * LANES_CH * LANES_MAX_CHUNKS;
/// Head-dim elements of the queries one lane holds (NQ · D), at most.
const LANES_STATE: usize = 640;
/// Smallest attention op (FLOPs, [`attention_flops`]) given the lanes kernel. Creating a lanes
/// pipeline takes llvmpipe 1.2–1.5 s even with Mesa's shader cache warm (6–17 s cold), the
/// one-query kernel's 0.02 s; below this size the one-query kernel's longer runs (≈ 10 ms more
/// per op) cost less than that compile over a whole generation, and the default model, text
/// encoders and small VAEs never pay it (docs/kernels.md, "Which ops get it").
pub const LANES_MIN_FLOPS: f64 = 32e6;
/// The shader keeps a query and its accumulator in registers: head_dim ≤ 512 (the SD VAE's
/// mid-block attention has one head of 512).
pub const MAX_HEAD_DIM: usize = 512;

/// Which kernel computes the attention partials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// `attention::partial`: one query per invocation; any head dim.
    OneQuery,
    /// `attention::partial_tiled`: K/V tiles in workgroup memory; head dim ≤ 160.
    Tiled,
    /// `attention_lanes::partial`: one subgroup of 8 lanes per workgroup, several queries per
    /// lane, key tiles shared through subgroup shuffles; head dims and q/k/v row widths and
    /// offsets multiples of 4, head dim ≤ 512, subgroups of ≥ 8 lanes, not on the web.
    Lanes,
}

impl AttentionKernel {
    /// The kernel the target's variant uses for this head dim.
    pub fn for_target(target: &Target, head_dim: usize) -> AttentionKernel {
        match target.variant {
            Variant::Gpu if head_dim <= UNROLLED_HEAD_DIM => AttentionKernel::Tiled,
            Variant::Cpu if AttentionKernel::Lanes.runs_on(target, head_dim) => {
                AttentionKernel::Lanes
            }
            _ => AttentionKernel::OneQuery,
        }
    }

    /// Whether this kernel can run head dim `head_dim` on `target`'s adapter (the lanes kernel
    /// also needs q, k and v rows on vec4s: [`attention`] falls back to the one-query kernel).
    pub fn runs_on(self, target: &Target, head_dim: usize) -> bool {
        match self {
            AttentionKernel::OneQuery => head_dim <= MAX_HEAD_DIM,
            AttentionKernel::Tiled => head_dim <= UNROLLED_HEAD_DIM,
            AttentionKernel::Lanes => {
                head_dim <= LANES_HEAD_DIM && head_dim.is_multiple_of(4) && lanes_fit(target)
            }
        }
    }

    /// Keys one invocation may process within `budget` loop iterations (all keys without a
    /// budget). Counted as if no loop were unrolled: drivers need not unroll.
    pub fn keys_per_split(self, head_dim: usize, budget: usize) -> usize {
        if budget == usize::MAX {
            return usize::MAX;
        }
        let d4 = head_dim.div_ceil(4);
        let (per_tile, tile, fixed) = match self {
            // Per key two key-loop iterations and 2·⌈D/4⌉ head-loop iterations, plus ⌈D/4⌉ + 1
            // per tile.
            AttentionKernel::OneQuery => (TILE_KEYS * (2 + 2 * d4) + d4 + 1, TILE_KEYS, 4 * d4),
            // The default configuration (see `TiledAttention::keys_per_split`).
            AttentionKernel::Tiled => {
                return attention_tiled::DEFAULT.keys_per_split(head_dim, budget)
            }
            AttentionKernel::Lanes => {
                let (per_tile, fixed) = lanes_iterations(head_dim, lanes_queries(head_dim));
                (per_tile, LANES, fixed)
            }
        };
        (budget.saturating_sub(fixed) / per_tile).max(1) * tile
    }
}

/// Whether the target's subgroups hold a whole `attention_lanes` workgroup. Not on the web:
/// browsers want `enable subgroups;`, which naga's native front end rejects.
fn lanes_fit(target: &Target) -> bool {
    !cfg!(target_arch = "wasm32")
        && target.subgroups
        && target.subgroup_min_size as usize >= LANES
        && !target.all_shaders_checked
}

/// Queries per lane of `attention_lanes` for head dim `d`: the most (a power of two) whose
/// query and accumulator rows stay within LANES_STATE floats, which bounds the straight-line code
/// of a key tile and so lavapipe's shader compile time (docs/kernels.md). For experiments,
/// [`with_lanes_queries`] or `STIPPLE_ATTN_NQ` override it.
pub fn lanes_queries(d: usize) -> usize {
    let mut nq = LANES_MAX_NQ;
    while nq > 1 && nq * d > LANES_STATE {
        nq /= 2;
    }
    LANES_NQ
        .with(|c| c.get())
        .or_else(|| {
            std::env::var("STIPPLE_ATTN_NQ")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(nq)
        .clamp(1, LANES_MAX_NQ)
}

thread_local! {
    static LANES_NQ: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with `nq` queries per lane (1..=16) for the graphs it builds with the lanes kernel
/// (benchmarks compare NQ side by side in one process).
#[doc(hidden)]
pub fn with_lanes_queries<R>(nq: usize, f: impl FnOnce() -> R) -> R {
    let before = LANES_NQ.with(|c| c.replace(Some(nq)));
    let out = f();
    LANES_NQ.with(|c| c.set(before));
    out
}

/// Loop iterations of one `attention_lanes` invocation, counted as if no loop were unrolled:
/// (per key tile, once). Mirrors the shader, whose loops over the MAX_CHUNKS head-dim chunks and
/// the MAX_NQ queries of a lane still count when their bodies are skipped (past the chunks
/// used, past NQ); the vec4s of a chunk are written out. Per tile: the key loop, a chunk loop with
/// a query loop inside for the scores and for P·V, a query loop for the softmax. Once: a query
/// loop with a chunk loop inside, to load q and to write the results.
fn lanes_iterations(d: usize, nq: usize) -> (usize, usize) {
    let chunks = d.div_ceil(4).div_ceil(LANES_CH);
    let per_tile = 1 + 2 * (LANES_MAX_CHUNKS + chunks * LANES_MAX_NQ) + LANES_MAX_NQ;
    let once = 2 * (LANES_MAX_NQ + nq * LANES_MAX_CHUNKS);
    (per_tile, once)
}

/// Keys per split of the CPU kernel under lavapipe's loop budget.
pub fn keys_per_split(head_dim: usize) -> usize {
    let target = Target::default();
    AttentionKernel::for_target(&target, head_dim).keys_per_split(head_dim, target.loop_budget())
}

/// A (B, T, C) tensor whose heads start at column `offset` (e.g. a slice of a fused QKV output).
#[derive(Clone, Copy, Debug)]
pub struct HeadsOf {
    pub value: ValueId,
    pub offset: usize,
}

impl From<ValueId> for HeadsOf {
    fn from(value: ValueId) -> Self {
        HeadsOf { value, offset: 0 }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AttentionOptions {
    pub heads: usize,
    pub head_dim: usize,
    /// Defaults to 1/√head_dim.
    pub scale: Option<f32>,
    /// Query i attends to keys j ≤ i (CLIP's text encoder).
    pub causal: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    tq: u32,
    tk: u32,
    heads: u32,
    d: u32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    o_stride: u32,
    scale: f32,
    batch: u32,
    splits: u32,
    split_keys: u32,
    q_row0: u32,
    q_rows: u32,
}

/// Attention of q (B, Tq, ·) over k, v (B, Tk, ·) with `heads` heads of `head_dim` each:
/// output (B, Tq, heads · head_dim).
pub fn attention(
    g: &mut Graph,
    name: &str,
    q: HeadsOf,
    k: HeadsOf,
    v: HeadsOf,
    opts: AttentionOptions,
) -> Result<ValueId> {
    let mut kernel = AttentionKernel::for_target(&g.target, opts.head_dim);
    if kernel == AttentionKernel::Lanes
        && (!vec4_rows(g, q, k, v, opts.head_dim)?
            || attention_flops(g, q, k, opts)? < LANES_MIN_FLOPS)
    {
        kernel = AttentionKernel::OneQuery;
    }
    attention_with(g, name, q, k, v, opts, kernel, PARTIAL_BYTES)
}

/// FLOPs of one attention op: 4·B·heads·Tq·Tk·D (q·kᵀ and p·v, a multiply and an add each),
/// half of that under a causal mask.
fn attention_flops(g: &Graph, q: HeadsOf, k: HeadsOf, opts: AttentionOptions) -> Result<f64> {
    let (qs, ks) = (g.shape(q.value)?, g.shape(k.value)?);
    let (batch, queries) = (qs.first().copied(), qs.get(1).copied());
    let keys = ks.get(1).copied();
    let [Some(b), Some(tq), Some(tk)] = [batch, queries, keys] else {
        return Ok(0.0); // attention_with reports the bad shape
    };
    let full = 4.0 * (b * opts.heads * tq * tk * opts.head_dim) as f64;
    Ok(if opts.causal { full / 2.0 } else { full })
}

/// Whether every head of q, k and v starts on a vec4 (head dim, row widths and column offsets
/// multiples of 4): the lanes kernel reads and writes only vec4s.
fn vec4_rows(g: &Graph, q: HeadsOf, k: HeadsOf, v: HeadsOf, head_dim: usize) -> Result<bool> {
    let mut all = head_dim.is_multiple_of(4);
    for x in [q, k, v] {
        let width = g.shape(x.value)?.last().copied().unwrap_or(0);
        all &= width.is_multiple_of(4) && x.offset.is_multiple_of(4);
    }
    Ok(all)
}

/// [`attention`] with a chosen kernel and bound on the partial results per dispatch (tests and
/// benchmarks compare kernels, and use a small bound to exercise query chunking).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    g: &mut Graph,
    name: &str,
    q: HeadsOf,
    k: HeadsOf,
    v: HeadsOf,
    opts: AttentionOptions,
    kernel: AttentionKernel,
    partial_bytes: usize,
) -> Result<ValueId> {
    let AttentionOptions {
        heads,
        head_dim: d,
        scale,
        causal,
    } = opts;
    let max_d = match kernel {
        AttentionKernel::OneQuery => MAX_HEAD_DIM,
        AttentionKernel::Tiled => UNROLLED_HEAD_DIM,
        AttentionKernel::Lanes => LANES_HEAD_DIM,
    };
    if d == 0 || d > max_d || heads == 0 {
        return Err(Error::shape(
            name,
            format!(
                "head_dim {d} with {heads} heads for kernel {kernel:?}: head_dim must be \
                 1..={max_d} for this kernel (1..={MAX_HEAD_DIM} for the one-query kernel)"
            ),
        ));
    }
    let (qs, ks, vs) = (g.shape(q.value)?, g.shape(k.value)?, g.shape(v.value)?);
    let width = heads * d;
    for (what, s, off) in [
        ("q", &qs, q.offset),
        ("k", &ks, k.offset),
        ("v", &vs, v.offset),
    ] {
        if s.len() != 3 || off + width > s[2] {
            return Err(Error::shape(
                name,
                format!("{what} {s:?} (column offset {off}) has no room for {heads} heads of {d}"),
            ));
        }
    }
    if ks[0] != qs[0] || vs[0] != qs[0] || ks[1] != vs[1] {
        return Err(Error::shape(
            name,
            format!("q {qs:?}, k {ks:?}, v {vs:?}: batch or key counts differ"),
        ));
    }
    if causal && ks[1] < qs[1] {
        return Err(Error::shape(
            name,
            "causal attention needs at least as many keys as queries",
        ));
    }
    let (b, tq, tk) = (qs[0], qs[1], ks[1]);
    let u = |what: &str, n: usize| to_u32(name, what, n);
    let p = Params {
        batch: 0,
        splits: 0,
        split_keys: 0,
        q_row0: 0,
        q_rows: 0,
        tq: u("queries", tq)?,
        tk: u("keys", tk)?,
        heads: u("heads", heads)?,
        d: u("head_dim", d)?,
        q_stride: u("q stride", qs[2])?,
        q_off: u("q offset", q.offset)?,
        k_stride: u("k stride", ks[2])?,
        k_off: u("k offset", k.offset)?,
        v_stride: u("v stride", vs[2])?,
        v_off: u("v offset", v.offset)?,
        o_stride: u("width", width)?,
        scale: scale.unwrap_or(1.0 / (d as f32).sqrt()),
    };
    u("output elements", b * tq * width)?;
    let y = g.intermediate(name, &[b, tq, width], g.dtype)?;
    // Causal attention only ever reads the first Tq keys.
    let keys_read = if causal { tq.min(tk) } else { tk };
    let tiled: Option<TiledAttention> =
        (kernel == AttentionKernel::Tiled).then(|| attention_tiled::config_for(g, d));
    let split_keys = match tiled {
        Some(c) => c.keys_per_split(d, g.target.loop_budget()),
        None => kernel.keys_per_split(d, g.target.loop_budget()),
    }
    .min(keys_read.max(1));
    let splits = keys_read.div_ceil(split_keys).max(1);
    let p = Params {
        batch: u("batch", b)?,
        splits: u("splits", splits)?,
        split_keys: u("split keys", split_keys)?,
        ..p
    };
    let final_pass = splits == 1;
    // Queries per dispatch: bound the f32 partials to PARTIAL_BYTES (the SD VAE's single 512-wide
    // head over 4096 tokens would otherwise need 150 MiB of partials).
    let per_query = (splits * b * heads * (d + 2) * 4).max(1);
    let q_chunk = if final_pass {
        tq
    } else {
        (partial_bytes / per_query).clamp(WG, tq.max(WG)).min(tq)
    };
    // Partials in f32; small placeholders (one vec2, one vec4) when a single split writes the
    // output directly.
    let (ml_shape, acc_shape) = if final_pass {
        (vec![1, 2], vec![4])
    } else {
        (
            vec![splits, b, q_chunk, heads, 2],
            vec![splits, b, q_chunk, heads, d],
        )
    };
    let part_ml = g.intermediate(&format!("{name}.partial_ml"), &ml_shape, DType::F32)?;
    let part_acc = g.intermediate(&format!("{name}.partial_acc"), &acc_shape, DType::F32)?;
    let aligned = [d, ks[2], k.offset, vs[2], v.offset]
        .iter()
        .all(|n| n % 4 == 0);
    if kernel == AttentionKernel::Lanes && !vec4_rows(g, q, k, v, d)? {
        return Err(Error::shape(
            name,
            format!(
                "the lanes kernel reads whole vec4s: head_dim {d}, the widths of q {qs:?}, k \
                 {ks:?}, v {vs:?} and the column offsets {}, {}, {} must be multiples of 4",
                q.offset, k.offset, v.offset
            ),
        ));
    }
    // The one-query kernel loops over wide heads instead of unrolling them; the lanes kernel
    // always unrolls.
    let unrolled_d4 = if d <= UNROLLED_HEAD_DIM || kernel == AttentionKernel::Lanes {
        d.div_ceil(4) as u32
    } else {
        0
    };
    let (shader, entry) = match kernel {
        AttentionKernel::OneQuery => ("attention", "partial"),
        AttentionKernel::Tiled => ("attention", "partial_tiled"),
        AttentionKernel::Lanes => ("attention_lanes", "partial"),
    };
    let lanes_nq = lanes_queries(d);
    let mut key = KernelKey::new(shader, entry, g.dtype)
        .with("CAUSAL", causal as u32)
        .with("FINAL", final_pass as u32)
        .with("D4", unrolled_d4);
    key = match kernel {
        AttentionKernel::Lanes => key.with("NQ", lanes_nq as u32),
        _ => key.with("ALIGNED", aligned as u32),
    };
    if let Some(c) = tiled {
        key = c.apply(key, d);
    }
    // Queries per workgroup.
    let group_queries = match kernel {
        AttentionKernel::Lanes => LANES * lanes_nq,
        _ => tiled.map_or(WG, |c| c.queries),
    };
    for q_row0 in (0..tq).step_by(q_chunk) {
        let q_rows = q_chunk.min(tq - q_row0);
        let p = Params {
            q_row0: u("first query", q_row0)?,
            q_rows: u("queries", q_rows)?,
            ..p
        };
        let suffix = if q_chunk == tq {
            String::new()
        } else {
            format!("[{q_row0}..{}]", q_row0 + q_rows)
        };
        let buffers = match kernel {
            // q, k and v as vec4s only.
            AttentionKernel::Lanes => vec![
                (4, y),
                (5, part_ml),
                (6, part_acc),
                (7, k.value),
                (8, v.value),
                (9, q.value),
            ],
            _ => vec![
                (1, q.value),
                (2, k.value),
                (3, v.value),
                (4, y),
                (5, part_ml),
                (6, part_acc),
                (7, k.value),
                (8, v.value),
            ],
        };
        let workgroups = [
            u("query groups", q_rows.div_ceil(group_queries))?,
            p.heads,
            u("batch × splits", b * splits)?,
        ];
        let label = if final_pass {
            format!("{name}{suffix}")
        } else {
            format!("{name}.partial{suffix}")
        };
        g.dispatch(Dispatch {
            label,
            kernel: key.clone(),
            params: params(&p),
            buffers,
            workgroups,
        })?;
        if !final_pass {
            g.dispatch(Dispatch {
                label: format!("{name}.combine{suffix}"),
                kernel: KernelKey::new("attention", "combine", g.dtype).with("FINAL", 0),
                params: params(&p),
                buffers: vec![(4, y), (5, part_ml), (6, part_acc)],
                workgroups: grid_1d(name, (b * q_rows * width).div_ceil(WG))?,
            })?;
        }
    }
    Ok(y)
}

/// CPU reference for selected query rows `(batch, query)`: returns each row's (heads · head_dim)
/// output. q (B, Tq, H·D), k and v (B, Tk, H·D) dense; f64 math.
#[allow(clippy::too_many_arguments)]
pub fn reference_rows(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [tq, tk]: [usize; 2],
    heads: usize,
    d: usize,
    scale: f32,
    causal: bool,
    rows: &[(usize, usize)],
) -> Vec<f32> {
    let w = heads * d;
    let mut out = Vec::with_capacity(rows.len() * w);
    for &(b, i) in rows {
        for h in 0..heads {
            let qrow = &q[(b * tq + i) * w + h * d..][..d];
            let keys = if causal { (i + 1).min(tk) } else { tk };
            let scores: Vec<f64> = (0..keys)
                .map(|j| {
                    let krow = &k[(b * tk + j) * w + h * d..][..d];
                    qrow.iter()
                        .zip(krow)
                        .map(|(&a, &c)| a as f64 * c as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for dd in 0..d {
                let acc: f64 = e
                    .iter()
                    .enumerate()
                    .map(|(j, p)| p * v[(b * tk + j) * w + h * d + dd] as f64)
                    .sum();
                out.push((acc / sum) as f32);
            }
        }
    }
    out
}
