//! AutoencoderKL vs diffusers on the tiny SD1-like (2 levels) and SD2-like (3 levels, 2 layers
//! per block, f16 weights) VAEs: decode (post_quant_conv + decoder) and encode (encoder +
//! quant_conv → moments), probes at every block. Non-square latents (4×6). Tolerance (max abs
//! error ÷ max(1, max |golden|)): f32 1e-4; f16 storage 1e-2.

mod common;

use common::golden::{compare_outputs, fixture, Golden};
use common::*;
use stipple::models::autoencoder_kl::AutoencoderKL;
use stipple::models::Ctx;
use stipple::{DType, Graph, Plan};

fn golden_pairs(g: &Graph, golden: &Golden, prefix: &str) -> Vec<(String, String)> {
    g.output_names()
        .filter(|n| n.starts_with(prefix) && golden.names().iter().any(|m| m == n))
        .map(|n| (n.to_string(), n.to_string()))
        .collect()
}

fn check(model: &str, dtype: DType) {
    let Some(gpu) = gpu() else { return };
    let dir = fixture(model);
    let vae = AutoencoderKL::from_dir(Ctx::new(&gpu, dtype), &dir.join("vae")).expect("load vae");
    let golden = Golden::open(dir.join("golden_vae.safetensors"));
    let tol = if dtype == DType::F32 { 1e-4 } else { 1e-2 };

    // Decode.
    let (zs, z) = golden.nhwc("z");
    let g = vae
        .decode_graph(dtype, zs[0], [zs[1], zs[2]], true)
        .expect("decode graph");
    let mut pairs = golden_pairs(&g, &golden, "probe.");
    pairs.retain(|(n, _)| !n.starts_with("probe.encoder"));
    assert!(pairs.len() >= 4, "{pairs:?}");
    pairs.push(("image".into(), "decoded".into()));
    let plan = Plan::new(&gpu, g).expect("plan");
    plan.write_input("z", &z).expect("z");
    plan.run().expect("run");
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    compare_outputs(
        &format!("{model} vae decode {}", dtype.name()),
        &plan,
        &golden,
        &pairs,
        tol,
    );

    // Encode.
    let (is, image) = golden.nhwc("image");
    let g = vae
        .encode_graph(dtype, is[0], [is[1], is[2]], true)
        .expect("encode graph");
    let mut pairs = golden_pairs(&g, &golden, "probe.encoder");
    assert!(pairs.len() >= 3, "{pairs:?}");
    pairs.push(("moments".into(), "moments".into()));
    let plan = Plan::new(&gpu, g).expect("plan");
    plan.write_input("image", &image).expect("image");
    plan.run().expect("run");
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    compare_outputs(
        &format!("{model} vae encode {}", dtype.name()),
        &plan,
        &golden,
        &pairs,
        tol,
    );
}

#[test]
fn tiny_sd1_vae() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check("tiny-sd1", dtype);
    }
}

#[test]
fn tiny_sd2_vae() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check("tiny-sd2", dtype);
    }
}
