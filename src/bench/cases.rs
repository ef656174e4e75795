//! The kernel benchmark cases: one op at an SD1.5 shape (batch 2 for CFG), its random inputs
//! and weights, the work it does, and its CPU reference (for the correctness checks of
//! `bench kernels --compare`, run at a small latent size).

use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::graph::{Graph, ValueId};
use crate::ops::attention::{self, AttentionKernel, AttentionOptions};
use crate::ops::conv2d::{self, Conv2dOptions, Conv2dWeight};
use crate::ops::elementwise::Activation;
use crate::ops::group_norm::{self, GroupNorm, StatsKernel};
use crate::ops::matmul::{self, LinearOptions, LinearWeight};
use crate::ops::WeightLayout;

/// Which op a case runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CaseKind {
    /// Attention projection at the first level: (B·HW, 320) · (320, 320) + bias.
    Linear,
    /// A text-encoder linear layer: (B·77, K) · (K, N) + bias (few rows, wide weights).
    TextLinear { k: usize, n: usize },
    /// 320 → 320 channels at the first level, kernel 3 (padding 1) or 1.
    Conv(usize),
    /// Attention over the case's own tokens (`cross: false`) or 77 text tokens, at `shape`
    /// (SD1.5's first level by default); `kernel: None` = the one the target picks; `lanes_nq`:
    /// the lanes kernel's queries per lane (None: its default).
    Attention {
        cross: bool,
        kernel: Option<AttentionKernel>,
        shape: AttentionShape,
        lanes_nq: Option<usize>,
    },
    /// GroupNorm(32) + SiLU over (B, HW, 320); `stats: None` = the reduction the target picks.
    GroupNorm { stats: Option<StatsKernel> },
}

/// Attention shapes of the SD family (latent side s, batch b).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionShape {
    /// SD1.5's first level: 8 heads × 40 over s² tokens.
    Sd15,
    /// SD2.x's first level: 5 heads × 64 over s² tokens (SDXL: 10 or 20 heads of 64).
    D64,
    /// SD1.5's second level: 8 heads × 80 over (s/2)² tokens.
    D80,
    /// SD1.5's third level: 8 heads × 160 over (s/4)² tokens.
    D160,
    /// The SD VAE's mid-block: one head of 512 over s² tokens, batch 1.
    Vae,
    /// A CLIP text encoder: 12 heads × 64, 77 tokens, causal.
    Clip,
}

impl AttentionShape {
    /// (heads, head dim, queries, batch) at latent side `s` and batch `b`.
    pub fn dims(self, s: usize, b: usize) -> (usize, usize, usize, usize) {
        match self {
            AttentionShape::Sd15 => (8, 40, s * s, b),
            AttentionShape::D64 => (5, 64, s * s, b),
            AttentionShape::D80 => (8, 80, (s / 2).max(1).pow(2), b),
            AttentionShape::D160 => (8, 160, (s / 4).max(1).pow(2), b),
            AttentionShape::Vae => (1, 512, s * s, 1),
            AttentionShape::Clip => (12, 64, 77, b),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            AttentionShape::Sd15 => "",
            AttentionShape::D64 => " D64",
            AttentionShape::D80 => " D80",
            AttentionShape::D160 => " D160",
            AttentionShape::Vae => " VAE D512",
            AttentionShape::Clip => " CLIP causal",
        }
    }
}

impl CaseKind {
    /// The lanes kernel with `nq` queries per lane at this attention case's shape (None for
    /// other cases).
    pub fn with_lanes_queries(&self, nq: usize) -> Option<CaseKind> {
        match *self {
            CaseKind::Attention { cross, shape, .. } => Some(CaseKind::Attention {
                cross,
                kernel: Some(AttentionKernel::Lanes),
                shape,
                lanes_nq: Some(nq),
            }),
            _ => None,
        }
    }

    /// Attention at the other shapes of the SD family (`bench kernels --attention-shapes`); with
    /// `variants`, every kernel that supports the head dim too.
    pub fn attention_shapes(variants: bool) -> Vec<CaseKind> {
        use AttentionShape::*;
        [
            (false, D64),
            (true, D64),
            (false, D80),
            (false, D160),
            (false, Vae),
            (false, Clip),
        ]
        .into_iter()
        .flat_map(|(cross, shape)| Self::attention(cross, shape, variants))
        .collect()
    }

    /// Attention at `shape` with the kernel the target picks, then (with `variants`) with every
    /// kernel that supports its head dim.
    fn attention(cross: bool, shape: AttentionShape, variants: bool) -> Vec<CaseKind> {
        let d = shape.dims(1, 1).1;
        let kernels = [
            AttentionKernel::OneQuery,
            AttentionKernel::Tiled,
            AttentionKernel::Lanes,
        ];
        let forced = kernels
            .into_iter()
            .filter(|&k| variants && (k != AttentionKernel::Tiled || d <= 160))
            .map(Some);
        std::iter::once(None)
            .chain(forced)
            .map(|kernel| CaseKind::Attention {
                cross,
                kernel,
                shape,
                lanes_nq: None,
            })
            .collect()
    }

    /// The cases of the kernel table; with `variants`, every attention kernel and both group-norm
    /// reductions too (side by side in one run; the subgroup one only where the device has
    /// SUBGROUP, see [`CaseKind::runs_on`]).
    pub fn table(variants: bool) -> Vec<CaseKind> {
        let mut cases = vec![CaseKind::Linear];
        // CLIP-L attention / fc1 / fc2, and SDXL's OpenCLIP-bigG fc1.
        for (k, n) in [(768, 768), (768, 3072), (3072, 768), (1280, 5120)] {
            cases.push(CaseKind::TextLinear { k, n });
        }
        cases.extend([CaseKind::Conv(3), CaseKind::Conv(1)]);
        for cross in [false, true] {
            cases.extend(Self::attention(cross, AttentionShape::Sd15, variants));
        }
        cases.push(CaseKind::GroupNorm { stats: None });
        if variants {
            for stats in [
                StatsKernel::Workgroup,
                StatsKernel::Subgroup,
                StatsKernel::Serial,
            ] {
                cases.push(CaseKind::GroupNorm { stats: Some(stats) });
            }
        }
        cases
    }

    /// Whether the case can run on `gpu` (the subgroup reduction needs SUBGROUP).
    pub fn runs_on(&self, gpu: &Gpu) -> bool {
        match self {
            CaseKind::GroupNorm {
                stats: Some(StatsKernel::Subgroup),
            } => gpu.target.subgroups,
            CaseKind::Attention {
                kernel: Some(kernel),
                shape,
                ..
            } => kernel.runs_on(&gpu.target, shape.dims(1, 1).1),
            _ => true,
        }
    }

    pub fn label(&self) -> String {
        match self {
            CaseKind::Linear => "matmul (linear + bias)".into(),
            CaseKind::TextLinear { k, n } => format!("matmul text {k}→{n}"),
            CaseKind::Conv(k) => format!("conv2d {k}x{k}"),
            CaseKind::Attention {
                cross,
                kernel,
                shape,
                lanes_nq,
            } => {
                let what = if *cross {
                    "attention cross"
                } else {
                    "attention self"
                };
                let what = format!("{what}{}", shape.suffix());
                match kernel {
                    None => what,
                    Some(AttentionKernel::OneQuery) => format!("{what} [1 query]"),
                    Some(AttentionKernel::Tiled) => format!("{what} [tiled]"),
                    Some(AttentionKernel::Lanes) => match lanes_nq {
                        Some(nq) => format!("{what} [lanes nq={nq}]"),
                        None => format!("{what} [lanes]"),
                    },
                }
            }
            CaseKind::GroupNorm { stats } => match stats {
                None => "group norm + SiLU".into(),
                Some(StatsKernel::Workgroup) => "group norm + SiLU [workgroup]".into(),
                Some(StatsKernel::Subgroup) => "group norm + SiLU [subgroup]".into(),
                Some(StatsKernel::Serial) => "group norm + SiLU [serial]".into(),
            },
        }
    }

    /// Shader files the case's dispatches come from.
    /// Shader files a case may dispatch from (the `_tiled` ones under the GPU variant).
    pub fn shaders(&self) -> &'static [&'static str] {
        match self {
            CaseKind::Linear | CaseKind::TextLinear { .. } => {
                &["matmul", "matmul_subgroup", "matmul_tiled"]
            }
            CaseKind::Conv(_) => &["conv2d", "conv2d_subgroup", "conv2d_tiled"],
            CaseKind::Attention { .. } => &["attention", "attention_lanes"],
            CaseKind::GroupNorm { .. } => &["group_norm", "group_norm_subgroup"],
        }
    }
}

/// A built case: the graph (output `out`), its inputs, its work and its CPU reference.
pub struct Case {
    pub graph: Graph,
    pub inputs: Vec<(String, Vec<f32>)>,
    pub shape: String,
    /// FLOPs (compute-bound) or bytes moved (memory-bound).
    pub work: f64,
    pub compute_bound: bool,
    reference: Box<dyn Fn() -> Vec<f32>>,
}

impl Case {
    /// The expected `out` (f64 CPU math on the same inputs; slow at full size).
    pub fn reference(&self) -> Vec<f32> {
        (self.reference)()
    }
}

/// Deterministic pseudo-random values in [-scale, scale) (weights and inputs for timing only).
pub fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Build `kind` at batch `b` and latent side `s` for `gpu`'s target (weights uploaded to it).
pub fn build(gpu: &Gpu, kind: CaseKind, dtype: DType, b: usize, s: usize) -> Result<Case> {
    let mut g = Graph::for_target(dtype, &gpu.target);
    let input = |g: &mut Graph, name: &str, shape: &[usize], seed: u64| -> Result<_> {
        let id = g.input(name, shape)?;
        Ok((id, noise(shape.iter().product(), seed, 1.0)))
    };
    let finish = |g: &mut Graph, out: ValueId| g.output("out", out);
    let case = match kind {
        CaseKind::Linear => linear_case(gpu, g, dtype, b * s * s, 320, 320)?,
        // Independent of the latent size: the text is always 77 tokens.
        CaseKind::TextLinear { k, n } => linear_case(gpu, g, dtype, b * 77, k, n)?,
        CaseKind::Conv(ksize) => {
            let (c, pad) = (320, ksize / 2);
            let shape = [c, c, ksize, ksize];
            let (w, bias) = (noise(c * c * ksize * ksize, 9, 0.02), noise(c, 10, 0.1));
            // Laid out as a model loaded for this adapter lays it out.
            let layout = WeightLayout::for_target(&gpu.target, c);
            let weight = Conv2dWeight::upload_laid_out(
                gpu,
                "bench.conv",
                &w,
                Some(&bias),
                shape,
                dtype,
                layout,
            )?;
            let (x, xd) = input(&mut g, "x", &[b, s, s, c], 1)?;
            let y = conv2d::conv2d(&mut g, "conv", x, &weight, Conv2dOptions::padded(pad))?;
            finish(&mut g, y)?;
            let x2 = xd.clone();
            Case {
                graph: g,
                inputs: vec![("x".into(), xd)],
                shape: format!("({b}, {s}, {s}, {c}) → {c}"),
                work: 2.0 * (b * s * s * c * c * ksize * ksize) as f64,
                compute_bound: true,
                reference: Box::new(move || {
                    conv2d::reference(&x2, [b, s, s, c], &w, Some(&bias), shape, 1, (pad, 0), None)
                }),
            }
        }
        CaseKind::Attention {
            cross,
            kernel,
            shape,
            lanes_nq,
        } => {
            let (heads, d, t, b) = shape.dims(s, b);
            let tk = if cross { 77 } else { t };
            let causal = shape == AttentionShape::Clip;
            let opts = AttentionOptions {
                heads,
                head_dim: d,
                scale: None,
                causal,
            };
            let kernel = kernel.unwrap_or_else(|| AttentionKernel::for_target(&gpu.target, d));
            let (q, qd) = input(&mut g, "q", &[b, t, heads * d], 1)?;
            let (kv, kvd) = input(&mut g, "kv", &[b, tk, heads * d], 2)?;
            let build = |g: &mut Graph| {
                attention::attention_with(
                    g,
                    "attn",
                    q.into(),
                    kv.into(),
                    kv.into(),
                    opts,
                    kernel,
                    32 << 20,
                )
            };
            let y = match lanes_nq {
                Some(nq) => attention::with_lanes_queries(nq, || build(&mut g))?,
                None => build(&mut g)?,
            };
            finish(&mut g, y)?;
            let (q2, kv2) = (qd.clone(), kvd.clone());
            Case {
                graph: g,
                inputs: vec![("q".into(), qd), ("kv".into(), kvd)],
                shape: format!("B{b} H{heads} D{d}: {t} queries × {tk} keys"),
                work: 4.0 * (b * heads * t * tk * d) as f64,
                compute_bound: true,
                reference: Box::new(move || {
                    let rows: Vec<(usize, usize)> =
                        (0..b).flat_map(|bb| (0..t).map(move |i| (bb, i))).collect();
                    let scale = 1.0 / (d as f32).sqrt();
                    attention::reference_rows(
                        &q2,
                        &kv2,
                        &kv2,
                        [t, tk],
                        heads,
                        d,
                        scale,
                        causal,
                        &rows,
                    )
                }),
            }
        }
        CaseKind::GroupNorm { stats } => {
            let c = 320;
            let (gamma, beta) = (noise(c, 11, 1.0), noise(c, 12, 1.0));
            let norm = GroupNorm {
                groups: 32,
                eps: 1e-5,
                weight: Tensor::from_f32(gpu, "bench.gn.weight", &[c], dtype, &gamma)?,
                bias: Tensor::from_f32(gpu, "bench.gn.bias", &[c], dtype, &beta)?,
            };
            let (x, xd) = input(&mut g, "x", &[b, s * s, c], 1)?;
            let stats = stats.unwrap_or_else(|| StatsKernel::for_target(&gpu.target));
            let y = group_norm::group_norm_with(&mut g, "norm", x.into(), &norm, true, stats)?;
            finish(&mut g, y)?;
            let x2 = xd.clone();
            Case {
                graph: g,
                inputs: vec![("x".into(), xd)],
                shape: format!("({b}, {}, {c}), 32 groups", s * s),
                // Two reads and one write.
                work: 3.0 * (b * s * s * c) as f64 * dtype.size() as f64,
                compute_bound: false,
                reference: Box::new(move || {
                    group_norm::reference(&x2, [b, s * s, c], 32, 1e-5, &gamma, &beta, true)
                }),
            }
        }
    };
    Ok(case)
}

/// `(m, k) · (k, n) + bias` with random inputs.
fn linear_case(
    gpu: &Gpu,
    mut g: Graph,
    dtype: DType,
    m: usize,
    k: usize,
    n: usize,
) -> Result<Case> {
    let (w, bias) = (noise(n * k, 7, 0.05), noise(n, 8, 0.1));
    // Laid out as a model loaded for this adapter lays it out.
    let layout = WeightLayout::for_target(&gpu.target, k);
    let weight =
        LinearWeight::upload_laid_out(gpu, "bench.linear", &w, Some(&bias), [n, k], dtype, layout)?;
    let x = g.input("x", &[m, k])?;
    let xd = noise(m * k, 1, 1.0);
    let y = matmul::linear(&mut g, "linear", x, &weight, LinearOptions::default())?;
    g.output("out", y)?;
    let x2 = xd.clone();
    Ok(Case {
        graph: g,
        inputs: vec![("x".into(), xd)],
        shape: format!("({m}, {k}) · ({k}, {n})"),
        work: 2.0 * (m * n * k) as f64,
        compute_bound: true,
        reference: Box::new(move || {
            matmul::reference(&x2, &w, Some(&bias), None, Activation::Identity, n, k)
        }),
    })
}
