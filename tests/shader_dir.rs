//! Edited shaders from a directory (`--shaders DIR`) replace the embedded ones on the same
//! device, and `bench kernels --compare` checks both against the CPU reference.

mod common;

use common::*;
use stipple::bench::{run_kernel_compare, KernelBenchOptions};
use stipple::gpu::kernels::{shader_source, ShaderDir};
use stipple::ops::attention::{self, AttentionOptions};
use stipple::DType;

/// A directory holding `attention.wgsl` (CPU and GPU variants) with its query scale multiplied
/// by `factor`.
fn edited_attention(name: &str, factor: f32) -> ShaderDir {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let src = shader_source("attention", DType::F32).expect("attention");
    assert_eq!(src.matches("* p.scale;").count(), 2);
    let edited = src.replace("* p.scale;", &format!("* (p.scale * {factor:.1});"));
    std::fs::write(dir.join("attention.wgsl"), edited).expect("write");
    ShaderDir::load(&dir).expect("load")
}

#[test]
fn edited_shader_replaces_the_embedded_one() {
    let Some(gpu) = gpu() else { return };
    let edited = gpu.with_shader_dir(Some(edited_attention("shader_dir_scale", 2.0)));
    let (t, h, d) = (20, 2, 16);
    let mut rng = Rng::new(3);
    let q = rng.vec(t * h * d, 1.0);
    let shape = [1, t, h * d];
    let opts = AttentionOptions {
        heads: h,
        head_dim: d,
        scale: None,
        causal: false,
    };
    let run = |g: &stipple::Gpu| {
        run_graph(g, DType::F32, &[("q", &shape, &q)], |g, ids| {
            attention::attention(g, "attn", ids[0].into(), ids[0].into(), ids[0].into(), opts)
        })
    };
    let rows: Vec<(usize, usize)> = (0..t).map(|i| (0, i)).collect();
    let scale = 1.0 / (d as f32).sqrt();
    let want = |s: f32| attention::reference_rows(&q, &q, &q, [t, t], h, d, s, false, &rows);
    assert_close("embedded", &run(&gpu), &want(scale), 1e-4, 0.0);
    assert_close(
        "edited (scale × 2)",
        &run(&edited),
        &want(2.0 * scale),
        1e-4,
        0.0,
    );
    // The original handle still compiles the embedded copy.
    assert_close("embedded again", &run(&gpu), &want(scale), 1e-4, 0.0);
}

#[test]
fn compare_checks_both_against_the_reference() {
    let Some(mut gpu) = gpu() else { return };
    // The one-query kernel (attention.wgsl), as on a CPU adapter without subgroups: an edited
    // copy of lavapipe's lanes kernel would be compiled with runtime checks, which takes minutes
    // (docs/kernels.md).
    gpu.target.subgroups = false;
    gpu.target.subgroup_min_size = 0;
    let opts = KernelBenchOptions {
        dtype: DType::F32,
        batch: 1,
        latent: 4,
        iters: 1,
        ..KernelBenchOptions::default()
    };
    for (factor, ok) in [(1.0, true), (2.0, false)] {
        let dir = edited_attention(&format!("shader_dir_compare_{ok}"), factor);
        let edited = gpu.with_shader_dir(Some(dir));
        let report = run_kernel_compare(&gpu, &edited, &opts, |_| {}).expect("compare");
        let kernels: Vec<&str> = report.rows.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(kernels, ["attention self", "attention cross"]);
        for r in &report.rows {
            assert!(r.embedded_error <= r.tolerance, "{r:?}");
            assert_eq!(r.edited_ok, ok, "{r:?}");
            assert!(r.speedup > 0.0 && r.speedup.is_finite(), "{r:?}");
        }
    }
}
