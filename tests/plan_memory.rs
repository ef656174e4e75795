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
