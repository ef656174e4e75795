//! UNet2DConditionModel vs diffusers on the tiny SD1-like (conv projections, 2 levels) and
//! SD2-like (linear projections, per-block heads, f16 weights on disk, 3 levels, 2 layers per
//! block) models written by tools/golden/models_golden.py, with probes at every block boundary.
//! Tolerance (max abs error ÷ max(1, max |golden|), per probe): f32 1e-4; f16 storage 1e-2 (seen: f32 ≤ 4e-6, f16 ≤ 3e-3).

mod common;

use common::golden::{compare_outputs, fixture, Golden};
use common::*;
use stipple::models::unet_2d_condition::UNet2DConditionModel;
use stipple::models::Ctx;
use stipple::{DType, Plan};

fn check(model: &str, dtype: DType) {
    let Some(gpu) = gpu() else { return };
    let dir = fixture(model);
    let unet = UNet2DConditionModel::from_dir(Ctx::new(&gpu, dtype), &dir.join("unet"))
        .expect("load unet");
    let golden = Golden::open(dir.join("golden_unet.safetensors"));
    let (shape, sample) = golden.nhwc("sample");
    let (_, timestep) = golden.f32("timestep");
    let (ctx_shape, context) = golden.f32("encoder_hidden_states");
    let g = unet
        .graph(dtype, shape[0], [shape[1], shape[2]], ctx_shape[1], true)
        .expect("graph");
    let mut pairs: Vec<(String, String)> = g
        .output_names()
        .filter(|n| n.starts_with("probe."))
        .map(|n| (n.to_string(), n.to_string()))
        .filter(|(_, golden_name)| golden.names().contains(golden_name))
        .collect();
    assert!(pairs.len() >= 7, "probes {pairs:?}");
    pairs.push(("out".into(), "out".into()));
    let plan = Plan::new(&gpu, g).expect("plan");
    plan.write_input("sample", &sample).expect("sample");
    plan.write_input("timestep", &timestep).expect("timestep");
    plan.write_input("encoder_hidden_states", &context)
        .expect("context");
    plan.run().expect("run");
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let tol = if dtype == DType::F32 { 1e-4 } else { 1e-2 };
    let report = compare_outputs(
        &format!("{model} unet {}", dtype.name()),
        &plan,
        &golden,
        &pairs,
        tol,
    );
    eprintln!(
        "{model} unet {}: out relative error {:.3e}",
        dtype.name(),
        report.last().map_or(0.0, |r| r.1)
    );
}

#[test]
fn tiny_sd1_unet_f32() {
    check("tiny-sd1", DType::F32);
}

#[test]
fn tiny_sd2_unet_f32() {
    check("tiny-sd2", DType::F32);
}

#[test]
fn tiny_sd1_unet_f16() {
    if gpu().is_some_and(|g| g.supports_f16()) {
        check("tiny-sd1", DType::F16);
    }
}

#[test]
fn tiny_sd2_unet_f16() {
    if gpu().is_some_and(|g| g.supports_f16()) {
        check("tiny-sd2", DType::F16);
    }
}
