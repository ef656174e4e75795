//! `stipple bench kernels`: one plan per kernel at SD1.5 shapes (512×512, batch 2 for CFG),
//! timed with GPU timestamp queries where the adapter has them (else wall-clock to completion),
//! reported as GFLOP/s (compute-bound kernels) or GB/s (memory-bound ones) and as a fraction of
//! the adapter's measured FMA / copy peak.
//!
//! `--compare DIR` times the embedded shaders and the edited ones in DIR side by side (same
//! device, same inputs, alternating runs) and checks both against the CPU reference at a small
//! size first.

use serde::Serialize;

use super::cases::{self, Case, CaseKind};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu};
use crate::graph::{Graph, Plan};
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
    /// Also time every attention kernel and group-norm reduction (side by side in one run).
    pub variants: bool,
    /// Only the cases whose label contains this.
    pub only: Option<String>,
    /// Also time attention at the other head dims of the SD family (D64, D80, D160, the VAE's
    /// D512, CLIP's causal 77 tokens).
    pub attention_shapes: bool,
    /// Also time the lanes attention kernel with these queries per lane, for every attention
    /// case selected.
    pub lanes_queries: Vec<usize>,
}

impl Default for KernelBenchOptions {
    fn default() -> Self {
        KernelBenchOptions {
            dtype: DType::F32,
            batch: 2,
            latent: 64,
            iters: 3,
            variants: false,
            only: None,
            attention_shapes: false,
            lanes_queries: Vec::new(),
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
    /// Kernel variant the adapter's target uses (`cpu` or `gpu`).
    pub variant: &'static str,
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

/// A plan of the case's graph on `gpu` with its inputs written.
fn plan_case(gpu: &Gpu, case: &Case) -> Result<Plan> {
    let plan = Plan::new(gpu, case.graph.clone())?;
    for (name, data) in &case.inputs {
        plan.write_input(name, data)?;
    }
    Ok(plan)
}

/// The adapter's FMA and copy peaks, measured with the probe kernels (median of `iters` runs).
pub fn measure_peak(gpu: &Gpu, iters: usize) -> Result<Peak> {
    // FMA: 256 Ki invocations × 2048 rounds × 64 flops (loops stay under lavapipe's limit).
    let mut g = Graph::new(DType::F32);
    let (y, flops) = probe::fma_throughput(&mut g, 256 * 1024, 512)?;
    g.output("out", y)?;
    let fma = flops / time_plan(&Plan::new(gpu, g)?, iters)? / 1e9;
    // Copy: 64 MiB.
    let n = 16 * 1024 * 1024;
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[n])?;
    let (y, bytes) = probe::copy_bandwidth(&mut g, x)?;
    g.output("out", y)?;
    let plan = Plan::new(gpu, g)?;
    plan.write_input("x", &cases::noise(n, 1, 1.0))?;
    let secs = time_plan(&plan, iters)?;
    Ok(Peak {
        fma_gflops: fma,
        copy_gbps: bytes / secs / 1e9,
    })
}

fn result(case: &Case, label: String, secs: f64, peak: &Peak) -> KernelResult {
    let rate = case.work / secs / 1e9;
    let (unit, of_peak) = if case.compute_bound {
        ("GFLOP/s", peak.fma_gflops)
    } else {
        ("GB/s", peak.copy_gbps)
    };
    KernelResult {
        kernel: label,
        shape: case.shape.clone(),
        median_ms: secs * 1e3,
        unit,
        rate,
        fraction_of_peak: rate / of_peak,
    }
}

/// The cases `o` asks for that can run on `gpu`.
fn selected(o: &KernelBenchOptions, gpu: &Gpu) -> Vec<CaseKind> {
    let mut kinds = CaseKind::table(o.variants);
    if o.attention_shapes {
        kinds.extend(CaseKind::attention_shapes(o.variants));
    }
    kinds.retain(|k| k.runs_on(gpu));
    if let Some(only) = &o.only {
        kinds.retain(|k| k.label().contains(only.as_str()));
    }
    if !o.lanes_queries.is_empty() {
        let mut with = Vec::new();
        for kind in kinds {
            let variants = o
                .lanes_queries
                .iter()
                .filter_map(|&nq| kind.with_lanes_queries(nq));
            let plain = matches!(kind, CaseKind::Attention { kernel: None, .. });
            with.push(kind);
            if plain {
                with.extend(variants);
            }
        }
        kinds = with;
    }
    kinds
}

fn check_options(o: &KernelBenchOptions) -> Result<()> {
    if o.batch == 0 || o.latent == 0 || o.iters == 0 {
        return Err(Error::InvalidArgument {
            name: "kernel benchmark".into(),
            message: "batch, latent and iterations must be at least 1".into(),
        });
    }
    Ok(())
}

/// Run every kernel case and the peak probes.
pub fn run_kernel_bench(
    gpu: &Gpu,
    o: &KernelBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<KernelBenchReport> {
    check_options(o)?;
    progress("peak probes");
    let peak = measure_peak(gpu, o.iters)?;
    let mut kernels = Vec::new();
    for kind in selected(o, gpu) {
        let label = kind.label();
        progress(&label);
        let case = cases::build(gpu, kind, o.dtype, o.batch, o.latent)?;
        let secs = time_plan(&plan_case(gpu, &case)?, o.iters)?;
        kernels.push(result(&case, label, secs, &peak));
    }
    Ok(KernelBenchReport {
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        device_type: format!("{:?}", gpu.info.device_type),
        variant: gpu.target.variant.name(),
        dtype: o.dtype.name(),
        timing: timing(gpu),
        peak,
        kernels,
    })
}

fn timing(gpu: &Gpu) -> &'static str {
    if gpu.supports_timestamps() {
        "timestamp queries"
    } else {
        "wall clock"
    }
}

/// One case timed with the embedded and the edited shaders.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    pub kernel: String,
    pub shape: String,
    pub embedded: KernelResult,
    pub edited: KernelResult,
    /// embedded time / edited time (> 1: the edit is faster).
    pub speedup: f64,
    /// Latent side of the correctness check.
    pub check_latent: usize,
    /// Max |GPU − CPU reference| / max(1, max |reference|) at the check size.
    pub embedded_error: f64,
    pub edited_error: f64,
    /// Both errors within `tolerance`.
    pub tolerance: f64,
    pub edited_ok: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    pub adapter: String,
    pub dtype: &'static str,
    pub timing: &'static str,
    pub shader_dir: String,
    pub edited_shaders: Vec<String>,
    pub peak: Peak,
    pub rows: Vec<CompareRow>,
}

/// Relative error of `got` against `want` (scaled by the output's magnitude).
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(1.0f64, |m, &w| m.max(w.abs() as f64));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let e = (g as f64 - w as f64).abs();
            if e.is_nan() {
                f64::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f64::max)
        / scale
}

/// Error of the case's output on `gpu` against its CPU reference.
fn case_error(gpu: &Gpu, case: &Case, want: &[f32]) -> Result<f64> {
    let plan = plan_case(gpu, case)?;
    plan.run()?;
    Ok(relative_error(&plan.read_output("out")?, want))
}

/// Time and check the cases that use a shader of `edited`'s directory, embedded vs edited.
pub fn run_kernel_compare(
    embedded: &Gpu,
    edited: &Gpu,
    o: &KernelBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<CompareReport> {
    check_options(o)?;
    let dir = edited
        .kernels
        .shader_dir()
        .ok_or_else(|| Error::InvalidArgument {
            name: "--compare".into(),
            message: "no shader directory given".into(),
        })?;
    let names: Vec<String> = dir.names().map(String::from).collect();
    let kinds: Vec<CaseKind> = selected(o, embedded)
        .into_iter()
        .filter(|k| k.shaders().iter().any(|s| names.iter().any(|n| n == s)))
        .collect();
    if kinds.is_empty() {
        return Err(Error::InvalidArgument {
            name: format!("--compare {}", dir.dir.display()),
            message: format!(
                "no benchmark case uses the edited shaders ({}); cases use matmul, conv2d, \
                 their _tiled forms (GPU variant), attention, attention_lanes and group_norm",
                names.join(", ")
            ),
        });
    }
    progress("peak probes");
    let peak = measure_peak(embedded, o.iters)?;
    // Checks at a small size (CPU references are slow at SD shapes).
    let check_latent = o.latent.min(8);
    let tolerance = match o.dtype {
        DType::F32 => 1e-3,
        DType::F16 => 3e-2,
    };
    let mut rows = Vec::new();
    for kind in kinds {
        let label = kind.label();
        progress(&format!("{label}: checking"));
        let small = cases::build(embedded, kind, o.dtype, o.batch, check_latent)?;
        let want = small.reference();
        let embedded_error = case_error(embedded, &small, &want)?;
        let edited_error = case_error(edited, &small, &want)?;
        progress(&format!("{label}: timing"));
        let case = cases::build(embedded, kind, o.dtype, o.batch, o.latent)?;
        let (a, b) = (plan_case(embedded, &case)?, plan_case(edited, &case)?);
        // Alternate runs so drift (other load, clocks) hits both alike.
        a.run_timed()?;
        b.run_timed()?;
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..o.iters.max(1) {
            ta.push(a.run_timed()?);
            tb.push(b.run_timed()?);
        }
        let median = |mut t: Vec<f64>| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let (sa, sb) = (median(ta), median(tb));
        rows.push(CompareRow {
            kernel: label.clone(),
            shape: case.shape.clone(),
            embedded: result(&case, label.clone(), sa, &peak),
            edited: result(&case, label, sb, &peak),
            speedup: sa / sb,
            check_latent,
            embedded_error,
            edited_error,
            tolerance,
            edited_ok: edited_error <= tolerance,
        });
    }
    Ok(CompareReport {
        adapter: embedded.info.name.clone(),
        dtype: o.dtype.name(),
        timing: timing(embedded),
        shader_dir: dir.dir.display().to_string(),
        edited_shaders: names,
        peak,
        rows,
    })
}
