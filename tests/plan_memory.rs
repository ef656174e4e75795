//! Full-size SD1.5 plans, built with placeholder weights (nothing read or run): every tensor of
//! the text encoder and the UNet at 512×512, batch 2, fits a 128 MiB storage binding (the common
//! adapter limit) in f32 and f16; the VAE decoder fits in f16 and, in f32, once tiled as the
//! pipeline does; liveness reuse keeps the activation peak far below the sum of intermediates.

mod common;

use common::*;
use stipple::bench::memory::plan_sd15_memory;

#[test]
fn sd15_plans_fit_128_mib_bindings() {
    let Some(gpu) = gpu() else { return };
    let rows = plan_sd15_memory(&gpu, 512, 512).expect("plan");
    const LIMIT: u64 = 128 << 20;
    for r in &rows {
        eprintln!(
            "{:<40} {} weights {:>5} MiB, activation peak {:>4} MiB (without reuse {:>5} MiB), largest {} {} MiB",
            r.model,
            r.dtype,
            r.weights_bytes >> 20,
            r.activation_peak_bytes >> 20,
            r.without_reuse_bytes >> 20,
            r.largest_tensor,
            r.largest_tensor_bytes >> 20
        );
        if r.model.starts_with("UNet") {
            assert!(r.activation_peak_bytes * 5 < r.without_reuse_bytes, "{r:?}");
        }
        let untiled_f32_vae = r.model.starts_with("VAE") && r.dtype == "f32";
        if !untiled_f32_vae {
            assert!(
                r.largest_tensor_bytes <= LIMIT,
                "{} ({}) holds {} bytes in {}",
                r.model,
                r.dtype,
                r.largest_tensor_bytes,
                r.largest_tensor
            );
        }
    }
    assert!(rows
        .iter()
        .any(|r| r.model.contains("tiled") && r.dtype == "f32" && r.largest_tensor_bytes <= LIMIT));
}

/// SDXL at 1024² (f16 UNet and text encoders, f32 VAE decoder as force_upcast makes it, one
/// image: UNet batch 2 with CFG): every kept plan's tensors fit 128 MiB bindings (the decoder
/// tiled), and the total is what a generation keeps on the GPU at once: the weights of all four
/// networks plus the plans. (Two images per prompt put the UNet's 4×4096×10240 GEGLU
/// projection at 160 MiB in f16: over a 128 MiB binding; `stipple bench memory --family sdxl
/// --batch 2` shows it.)
#[test]
fn sdxl_1024_plans_fit_bindings_and_sum_up() {
    use stipple::bench::memory::{plan_memory, PlanFamily};
    let Some(gpu) = gpu() else { return };
    let rows = plan_memory(&gpu, PlanFamily::Sdxl, 1024, 1024, 1).expect("plan");
    let f16: Vec<_> = rows.iter().filter(|r| r.dtype == "f16").collect();
    for r in &f16 {
        eprintln!(
            "{:<40} weights {:>5} MiB, activation peak {:>5} MiB, largest {} {} MiB",
            r.model,
            r.weights_bytes >> 20,
            r.activation_peak_bytes >> 20,
            r.largest_tensor,
            r.largest_tensor_bytes >> 20
        );
    }
    let total = f16.last().expect("total row");
    assert!(total.model.starts_with("total"));
    let weights: u64 = f16[..f16.len() - 1]
        .iter()
        .filter(|r| !r.model.contains("tiled"))
        .map(|r| r.weights_bytes)
        .sum();
    assert_eq!(total.weights_bytes, weights);
    // f16 UNet + both text encoders (~3.3 G parameters) and the f32 VAE (~84 M).
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    assert!((6.0..7.5).contains(&gib(weights)), "{} GiB", gib(weights));
    assert!(f16.iter().any(|r| r.model.contains("tiled")));
    if gpu.limits.max_storage_buffer_binding_size >= 128 << 20 {
        assert!(total.largest_tensor_bytes <= 128 << 20, "{total:?}");
    }
}
