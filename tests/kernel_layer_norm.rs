//! Layer norm kernel vs the CPU reference: widths below, at and above the workgroup size, odd
//! widths, CLIP/SD-sized rows, row counts off the 64-row workgroups; both variants (`layer_norm_rows`
//! for CPU targets, `layer_norm` for GPU targets). Tolerances (absolute, × max(1, output scale)): f32 1e-4, f16 4e-3.

mod common;

use common::*;
use stipple::gpu::Variant;
use stipple::ops::layer_norm;
use stipple::{DType, Tensor};

fn check(gpu: &stipple::Gpu, shape: &[usize], offset: f32, dtype: DType) {
    for variant in [Variant::Cpu, Variant::Gpu] {
        check_variant(gpu, shape, offset, dtype, variant);
    }
}

fn check_variant(gpu: &stipple::Gpu, shape: &[usize], offset: f32, dtype: DType, variant: Variant) {
    let c = *shape.last().expect("shape");
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(n as u64);
    let x = quantize(
        &rng.vec(n, 3.0)
            .iter()
            .map(|v| v + offset)
            .collect::<Vec<_>>(),
        dtype,
    );
    let gamma = quantize(&rng.vec(c, 1.0), dtype);
    let beta = quantize(&rng.vec(c, 0.5), dtype);
    let gt = Tensor::from_f32(gpu, "ln.weight", &[c], dtype, &gamma).expect("gamma");
    let bt = Tensor::from_f32(gpu, "ln.bias", &[c], dtype, &beta).expect("beta");
    let want = layer_norm::reference(&x, c, 1e-5, &gamma, &beta);
    let target = gpu.target.clone().with_variant(variant);
    let mut g = stipple::Graph::for_target(dtype, &target);
    let xi = g.input("x", shape).expect("input");
    let y = layer_norm::layer_norm(&mut g, "ln", xi, 1e-5, &gt, &bt).expect("layer_norm");
    g.output("out", y).expect("output");
    let plan = stipple::Plan::new(gpu, g).expect("plan");
    plan.write_input("x", &x).expect("write");
    plan.run().expect("run");
    let got = plan.read_output("out").expect("read");
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * max_abs(&want).max(1.0);
    assert_close(
        &format!(
            "layer_norm {variant:?} {shape:?} +{offset} {}",
            dtype.name()
        ),
        &got,
        &want,
        atol,
        0.0,
    );
}

#[test]
fn layer_norm_shapes() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(&gpu, &[1, 1], 0.0, dtype);
        check(&gpu, &[3, 7], 0.0, dtype);
        check(&gpu, &[65, 33], 0.0, dtype);
        check(&gpu, &[3, 43, 17], 0.0, dtype);
        check(&gpu, &[2, 5, 129], 0.0, dtype);
        check(&gpu, &[2, 77, 768], 0.0, dtype); // CLIP ViT-L text encoder
        check(&gpu, &[2, 1024, 640], 0.0, dtype); // SD1.5 transformer block at 32×32
    }
    check(&gpu, &[4, 300], 100.0, DType::F32);
}
