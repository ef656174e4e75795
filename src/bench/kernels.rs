//! `stipple bench kernels`: one plan per kernel at SD1.5 shapes (512×512, batch 2 for CFG),
//! timed with GPU timestamp queries where the adapter has them (else wall-clock to completion),
//! reported as GFLOP/s (compute-bound kernels) or GB/s (memory-bound ones) and as a fraction of
//! the adapter's measured FMA / copy peak.

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::graph::{Graph, Plan, ValueId};
use crate::ops::attention::{self, AttentionOptions};
use crate::ops::conv2d::{self, Conv2dOptions, Conv2dWeight};
use crate::ops::group_norm::{self, GroupNorm};
use crate::ops::matmul::{self, LinearOptions, LinearWeight};
use crate::ops::probe;

#[derive(Clone, Debug)]
pub struct KernelBenchOptions {
    pub dtype: DType,
    /// CFG batch (2 in SD pipelines).
    pub batch: usize,
    /// Latent side (64 for 512×512 images); the kernels' token counts follow from it.
    pub latent: usize,
    /// Timed runs per kernel (after one warm-up run); the median is reported.
    pub iters: usize,
}

impl Default for KernelBenchOptions {
    fn default() -> Self {
        KernelBenchOptions {
            dtype: DType::F32,
            batch: 2,
            latent: 64,
            iters: 3,
        }
    }
}

/// The adapter's measured peak.
#[derive(Clone, Debug, Serialize)]
pub struct Peak {
    pub fma_gflops: f64,
    pub copy_gbps: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    pub kernel: String,
    pub shape: String,
    pub median_ms: f64,
    /// "GFLOP/s" or "GB/s".
    pub unit: &'static str,
    pub rate: f64,
    /// `rate` over the matching peak (FMA for GFLOP/s, copy for GB/s).
    pub fraction_of_peak: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelBenchReport {
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub dtype: &'static str,
    pub timing: &'static str,
    pub peak: Peak,
    pub kernels: Vec<KernelResult>,
}

/// Median seconds of `iters` runs after one warm-up.
fn time_plan(plan: &Plan, iters: usize) -> Result<f64> {
    plan.run_timed()?;
    let mut times = (0..iters.max(1))
        .map(|_| plan.run_timed())
        .collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Deterministic pseudo-random values in [-scale, scale) (weights and inputs for timing only).
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
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

/// Build a plan with random inputs from `inputs` and the ops `build` adds, then time it.
fn bench_graph(
    gpu: &Gpu,
    dtype: DType,
    iters: usize,
    inputs: &[(&str, Vec<usize>)],
    build: impl FnOnce(&mut Graph, &[ValueId]) -> Result<ValueId>,
) -> Result<f64> {
    let mut g = Graph::new(dtype);
    let ids = inputs
        .iter()
        .map(|(n, s)| g.input(n, s))
        .collect::<Result<Vec<_>>>()?;
    let out = build(&mut g, &ids)?;
    g.output("out", out)?;
    let plan = Plan::new(gpu, g)?;
    for (i, (name, shape)) in inputs.iter().enumerate() {
        plan.write_input(name, &noise(shape.iter().product(), i as u64 + 1, 1.0))?;
    }
    time_plan(&plan, iters)
}

fn measure_peak(gpu: &Gpu, iters: usize) -> Result<Peak> {
    // FMA: 256 Ki invocations × 2048 rounds × 64 flops (loops stay under lavapipe's limit).
    let mut g = Graph::new(DType::F32);
    let (y, flops) = probe::fma_throughput(&mut g, 256 * 1024, 2048)?;
    g.output("out", y)?;
    let fma = flops / time_plan(&Plan::new(gpu, g)?, iters)? / 1e9;
    // Copy: 64 MiB.
    let n = 16 * 1024 * 1024;
    let mut bytes = 0.0;
    let secs = bench_graph(gpu, DType::F32, iters, &[("x", vec![n])], |g, ids| {
        let (y, b) = probe::copy_bandwidth(g, ids[0])?;
        bytes = b;
        Ok(y)
    })?;
    Ok(Peak {
        fma_gflops: fma,
        copy_gbps: bytes / secs / 1e9,
    })
}

/// Run every kernel case and the peak probes.
pub fn run_kernel_bench(
    gpu: &Gpu,
    o: &KernelBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<KernelBenchReport> {
    let (dtype, b, s, iters) = (o.dtype, o.batch, o.latent, o.iters);
    progress("peak probes");
    let peak = measure_peak(gpu, iters)?;
    let mut kernels = Vec::new();
    let mut record = |kernel: &str, shape: String, secs: f64, work: f64, compute_bound: bool| {
        let (unit, rate, fraction) = if compute_bound {
            (
                "GFLOP/s",
                work / secs / 1e9,
                work / secs / 1e9 / peak.fma_gflops,
            )
        } else {
            (
                "GB/s",
                work / secs / 1e9,
                work / secs / 1e9 / peak.copy_gbps,
            )
        };
        kernels.push(KernelResult {
            kernel: kernel.into(),
            shape,
            median_ms: secs * 1e3,
            unit,
            rate,
            fraction_of_peak: fraction,
        });
    };
    let bytes_per = dtype.size() as f64;

    // Linear: attention projection at the first level, (B·HW, 320) → 320.
    progress("matmul");
    let (m, k, n) = (b * s * s, 320, 320);
    let w = LinearWeight::upload(
        gpu,
        "bench.linear",
        &noise(n * k, 7, 0.05),
        Some(&noise(n, 8, 0.1)),
        n,
        k,
        dtype,
    )?;
    let secs = bench_graph(gpu, dtype, iters, &[("x", vec![m, k])], |g, ids| {
        matmul::linear(g, "linear", ids[0], &w, LinearOptions::default())
    })?;
    record(
        "matmul (linear + bias)",
        format!("({m}, {k}) · ({k}, {n})"),
        secs,
        2.0 * (m * n * k) as f64,
        true,
    );

    // Conv 3×3 and 1×1 at the first level: 320 → 320 channels.
    for (ksize, pad) in [(3usize, 1usize), (1, 0)] {
        progress(&format!("conv2d {ksize}x{ksize}"));
        let c = 320;
        let wt = Conv2dWeight::upload(
            gpu,
            "bench.conv",
            &noise(c * c * ksize * ksize, 9, 0.02),
            Some(&noise(c, 10, 0.1)),
            [c, c, ksize, ksize],
            dtype,
        )?;
        let opts = Conv2dOptions::padded(pad);
        let secs = bench_graph(gpu, dtype, iters, &[("x", vec![b, s, s, c])], |g, ids| {
            conv2d::conv2d(g, "conv", ids[0], &wt, opts)
        })?;
        let flops = 2.0 * (b * s * s * c * c * ksize * ksize) as f64;
        record(
            &format!("conv2d {ksize}x{ksize}"),
            format!("({b}, {s}, {s}, {c}) → {c}"),
            secs,
            flops,
            true,
        );
    }

    // Self-attention at the first level and cross-attention to 77 text tokens: 8 heads × 40.
    let (t, heads, d) = (s * s, 8, 40);
    for (label, tk) in [("attention self", t), ("attention cross", 77)] {
        progress(label);
        let opts = AttentionOptions {
            heads,
            head_dim: d,
            scale: None,
            causal: false,
        };
        let inputs = [("q", vec![b, t, heads * d]), ("kv", vec![b, tk, heads * d])];
        let secs = bench_graph(gpu, dtype, iters, &inputs, |g, ids| {
            attention::attention(g, "attn", ids[0].into(), ids[1].into(), ids[1].into(), opts)
        })?;
        let flops = 4.0 * (b * heads * t * tk * d) as f64;
        record(
            label,
            format!("B{b} H{heads} D{d}: {t} queries × {tk} keys"),
            secs,
            flops,
            true,
        );
    }

    // Group norm + SiLU at the first level (memory-bound: two reads and one write).
    progress("group norm");
    let c = 320;
    let norm = GroupNorm {
        groups: 32,
        eps: 1e-5,
        weight: Tensor::from_f32(gpu, "bench.gn.weight", &[c], dtype, &noise(c, 11, 1.0))?,
        bias: Tensor::from_f32(gpu, "bench.gn.bias", &[c], dtype, &noise(c, 12, 1.0))?,
    };
    let secs = bench_graph(gpu, dtype, iters, &[("x", vec![b, s * s, c])], |g, ids| {
        group_norm::group_norm(g, "norm", ids[0], &norm, true)
    })?;
    let bytes = 3.0 * (b * s * s * c) as f64 * bytes_per;
    record(
        "group norm + SiLU",
        format!("({b}, {}, {c}), 32 groups", s * s),
        secs,
        bytes,
        false,
    );

    Ok(KernelBenchReport {
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        device_type: format!("{:?}", gpu.info.device_type),
        dtype: dtype.name(),
        timing: if gpu.supports_timestamps() {
            "timestamp queries"
        } else {
            "wall clock"
        },
        peak,
        kernels,
    })
}
