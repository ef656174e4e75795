//! Shared test helpers: adapter acquisition, deterministic data, f16 rounding, comparison with
//! max abs/rel error reports, and one-op graph runs.
#![allow(dead_code)]

pub mod cli;
pub mod golden;
pub mod scratch;

use std::process::Command;
pub mod server;

use stipple::ops::WeightLayout;
use stipple::{DType, Gpu, GpuOptions, Graph, Plan, ValueId};

/// Options of the test adapter: the environment's, with autotuning off (every kernel in its
/// default configuration, no cache read or written; `tests/autotune.rs` tunes on devices of its
/// own, with scratch cache directories).
pub fn gpu_options() -> GpuOptions {
    GpuOptions {
        autotune: stipple::gpu::AutotuneOptions::off(),
        ..GpuOptions::from_env()
    }
}

/// The adapter for GPU tests. Without one, tests skip locally but fail in CI (`CI=true`),
/// where the tests must really execute kernels.
pub fn gpu() -> Option<Gpu> {
    static GPU: std::sync::OnceLock<Result<Gpu, String>> = std::sync::OnceLock::new();
    match GPU.get_or_init(|| Gpu::new(&gpu_options()).map_err(|e| e.to_string())) {
        Ok(g) => Some(g.clone()),
        Err(e) if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") => {
            panic!("CI needs a GPU adapter (lavapipe is installed by .ci/run): {e}")
        }
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// `gpu`'s target with the CPU variant when the adapter can run the subgroup GEMM kernels
/// (subgroups of at least 8 lanes: lavapipe), else `None` (those tests then have nothing to
/// check, and say so).
pub fn subgroup_target(gpu: &Gpu) -> Option<stipple::gpu::Target> {
    let t = gpu.target.clone().with_variant(stipple::gpu::Variant::Cpu);
    if t.subgroups && t.subgroup_min_size >= 8 {
        Some(t)
    } else {
        eprintln!(
            "no subgroups of 8 on {}: subgroup kernels not tested",
            t.adapter
        );
        None
    }
}

/// The subgroup GEMM kernels read both weight layouts.
pub const BOTH: &[WeightLayout] = &[WeightLayout::Packed, WeightLayout::Blocked];

/// `check(case, (dtype, layout), seed)` for every case (seeds from `seed`), in every dtype the
/// adapter has and each of `layouts`.
pub fn for_each_variant<C>(
    gpu: &Gpu,
    cases: &[C],
    layouts: &[WeightLayout],
    seed: u64,
    mut check: impl FnMut(&C, (DType, WeightLayout), u64),
) {
    for dtype in dtypes(gpu) {
        for &layout in layouts {
            for (i, c) in cases.iter().enumerate() {
                check(c, (dtype, layout), seed + i as u64);
            }
        }
    }
}

/// A fresh empty folder under the system temp dir: `stipple-{name}-{pid}`.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stipple-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Storage dtypes to test on this adapter: f32 always, f16 where SHADER_F16 exists.
pub fn dtypes(gpu: &Gpu) -> Vec<DType> {
    if gpu.supports_f16() {
        vec![DType::F32, DType::F16]
    } else {
        vec![DType::F32]
    }
}

/// SplitMix64: deterministic test data on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// Values as the GPU stores them in `dtype` (so references see the same inputs).
pub fn quantize(data: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => data.to_vec(),
        DType::F16 => data
            .iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect(),
    }
}

/// Assert |got − want| ≤ atol + rtol·|want| elementwise; print max errors and the first
/// mismatches on failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut max_abs = 0.0f32;
    let mut max_rel = 0.0f32;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        if !err.is_nan() {
            max_abs = max_abs.max(err);
            max_rel = max_rel.max(err / w.abs().max(1e-6));
        }
        if err.is_nan() || err > atol + rtol * w.abs() {
            bad.push((i, g, w));
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(8)
            .map(|(i, g, w)| format!("[{i}] got {g} want {w}"))
            .collect();
        panic!(
            "{what}: {} of {} values outside atol {atol} + rtol {rtol}; max abs {max_abs:.3e}, max rel {max_rel:.3e}; first: {}",
            bad.len(),
            got.len(),
            first.join(", ")
        );
    }
}

/// Runs the `stipple` binary (without STIPPLE_MODEL from the environment); asserts it did not panic and was not killed. Returns (success, stderr).
pub fn stipple(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stipple"))
        .args(args)
        .env_remove("STIPPLE_MODEL")
        .output()
        .expect("run stipple");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("panicked"),
        "stipple {args:?} panicked: {stderr}"
    );
    assert!(
        out.status.code().is_some(),
        "stipple {args:?} was killed by a signal: {stderr}"
    );
    (out.status.success(), stderr)
}

/// Largest |a − b| (NaN when any difference is NaN).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

/// Largest |x|, for tolerances relative to an output's scale.
pub fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Build a graph with the given inputs, let `build` add ops, run it once and read the output.
pub fn run_graph(
    gpu: &Gpu,
    dtype: DType,
    inputs: &[(&str, &[usize], &[f32])],
    build: impl FnOnce(&mut Graph, &[ValueId]) -> stipple::Result<ValueId>,
) -> Vec<f32> {
    run_graph_for(gpu, &stipple::gpu::Target::default(), dtype, inputs, build)
}

/// [`run_graph`] with the graph built for `target` (its ops pick their kernels, variants and
/// configurations for it).
pub fn run_graph_for(
    gpu: &Gpu,
    target: &stipple::gpu::Target,
    dtype: DType,
    inputs: &[(&str, &[usize], &[f32])],
    build: impl FnOnce(&mut Graph, &[ValueId]) -> stipple::Result<ValueId>,
) -> Vec<f32> {
    let mut g = Graph::for_target(dtype, target);
    let ids: Vec<ValueId> = inputs
        .iter()
        .map(|(n, s, _)| g.input(n, s).expect("input"))
        .collect();
    let out = build(&mut g, &ids).expect("build graph");
    g.output("out", out).expect("mark output");
    let plan = Plan::new(gpu, g).expect("plan");
    for (n, _, d) in inputs {
        plan.write_input(n, d).expect("write input");
    }
    plan.run().expect("run");
    plan.read_output("out").expect("read output")
}

/// Every tensor of a model folder's unet/, vae/, text_encoder/ and (when present)
/// text_encoder_2/, sorted: (component/name without `text_model.`, dtype, shape, bytes).
pub fn folder_tensors(folder: &std::path::Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let mut all = Vec::new();
    for component in ["unet", "vae", "text_encoder", "text_encoder_2"] {
        if component == "text_encoder_2" && !folder.join(component).exists() {
            continue;
        }
        let w = stipple::weights::Weights::open(folder.join(component)).unwrap();
        for name in w.names() {
            let (dtype, shape, bytes) = w.raw(&name).unwrap();
            let short = name.strip_prefix("text_model.").unwrap_or(&name);
            all.push((
                format!("{component}/{short}"),
                dtype.name().to_string(),
                shape.to_vec(),
                bytes.to_vec(),
            ));
        }
    }
    all.sort();
    all
}
