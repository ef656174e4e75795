//! Layer norm kernel vs the CPU reference: widths below, at and above the workgroup size, odd
//! widths, CLIP/SD-sized rows. Tolerances (absolute, × max(1, output scale)): f32 1e-4, f16 4e-3.

mod common;

use common::*;
use stipple::ops::layer_norm;
use stipple::{DType, Tensor};

fn check(gpu: &stipple::Gpu, shape: &[usize], offset: f32, dtype: DType) {
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
    let got = run_graph(gpu, dtype, &[("x", shape, &x)], |g, ids| {
        layer_norm::layer_norm(g, "ln", ids[0], 1e-5, &gt, &bt)
    });
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * max_abs(&want).max(1.0);
    assert_close(
        &format!("layer_norm {shape:?} +{offset} {}", dtype.name()),
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
        check(&gpu, &[2, 5, 129], 0.0, dtype);
        check(&gpu, &[2, 77, 768], 0.0, dtype); // CLIP ViT-L text encoder
        check(&gpu, &[2, 1024, 640], 0.0, dtype); // SD1.5 transformer block at 32×32
    }
    check(&gpu, &[4, 300], 100.0, DType::F32);
}
