//! Group norm kernel (split reduction) vs the CPU reference: 32 groups and others, odd pixel
//! counts, batch > 1, fused SiLU, an SD-sized case, and data with a large mean (the variance must
//! not cancel). Tolerances (absolute, × max(1, output scale)): f32 1e-4, f16 4e-3 (outputs are
//! O(1) after normalisation).

mod common;

use common::*;
use stipple::ops::group_norm::{self, GroupNorm};
use stipple::{DType, Tensor};

fn check(
    gpu: &stipple::Gpu,
    (b, hw, c, groups): (usize, usize, usize, usize),
    silu: bool,
    offset: f32,
    dtype: DType,
) {
    let mut rng = Rng::new((b * 31 + hw * 7 + c) as u64);
    let x: Vec<f32> = rng
        .vec(b * hw * c, 2.0)
        .iter()
        .map(|v| v + offset)
        .collect();
    let x = quantize(&x, dtype);
    let gamma = quantize(&rng.vec(c, 1.0), dtype);
    let beta = quantize(&rng.vec(c, 0.5), dtype);
    let gt = Tensor::from_f32(gpu, "norm.weight", &[c], dtype, &gamma).expect("gamma");
    let bt = Tensor::from_f32(gpu, "norm.bias", &[c], dtype, &beta).expect("beta");
    let want = group_norm::reference(&x, [b, hw, c], groups, 1e-5, &gamma, &beta, silu);
    let norm = GroupNorm {
        groups,
        eps: 1e-5,
        weight: gt,
        bias: bt,
    };
    let shape = [b, hw, 1, c];
    let got = run_graph(gpu, dtype, &[("x", &shape, &x)], |g, ids| {
        group_norm::group_norm(g, "norm", ids[0], &norm, silu)
    });
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * max_abs(&want).max(1.0);
    assert_close(
        &format!(
            "group_norm B{b} HW{hw} C{c} G{groups} silu={silu} +{offset} {}",
            dtype.name()
        ),
        &got,
        &want,
        atol,
        0.0,
    );
}

#[test]
fn group_norm_shapes() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(&gpu, (1, 1, 32, 32), false, 0.0, dtype);
        check(&gpu, (2, 15, 64, 32), true, 0.0, dtype);
        check(&gpu, (1, 35, 12, 3), false, 0.0, dtype);
        check(&gpu, (3, 9, 8, 1), true, 0.0, dtype);
        check(&gpu, (2, 1000, 96, 32), true, 0.0, dtype); // several chunks per group
    }
}

#[test]
fn group_norm_large_mean_is_stable() {
    let Some(gpu) = gpu() else { return };
    check(&gpu, (2, 777, 64, 32), false, 300.0, DType::F32);
}

#[test]
fn group_norm_sd_sized() {
    // SD1.5 first down block: (2, 64·64, 320), 32 groups, SiLU.
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(&gpu, (2, 64 * 64, 320, 32), true, 0.0, dtype);
    }
}

#[test]
fn group_norm_rejects_indivisible_channels() {
    let Some(gpu) = gpu() else { return };
    let t = Tensor::from_f32(&gpu, "n.weight", &[10], DType::F32, &[1.0; 10]).expect("t");
    let mut g = stipple::Graph::new(DType::F32);
    let x = g.input("x", &[1, 4, 4, 10]).expect("input");
    let norm = GroupNorm {
        groups: 32,
        eps: 1e-5,
        weight: t.clone(),
        bias: t,
    };
    let err = group_norm::group_norm(&mut g, "conv_norm_out", x, &norm, false).unwrap_err();
    assert!(err.to_string().contains("conv_norm_out"), "{err}");
}
