//! Softmax kernel vs the CPU reference: rows of 1 to 4096+ values, scales, large logits.
//! Tolerances (absolute; outputs lie in [0, 1]): f32 1e-6 + 1e-4 relative, f16 1e-3 + 4e-3 relative.

mod common;

use common::*;
use stipple::ops::softmax;
use stipple::DType;

fn check(gpu: &stipple::Gpu, rows: usize, c: usize, scale: f32, magnitude: f32, dtype: DType) {
    let mut rng = Rng::new((rows * 1000 + c) as u64);
    let x = quantize(&rng.vec(rows * c, magnitude), dtype);
    let want = softmax::reference(&x, c, scale);
    let got = run_graph(gpu, dtype, &[("x", &[rows, c], &x)], |g, ids| {
        softmax::softmax(g, "softmax", ids[0], scale)
    });
    let (atol, rtol) = if dtype == DType::F32 {
        (1e-6, 1e-4)
    } else {
        (1e-3, 4e-3)
    };
    assert_close(
        &format!(
            "softmax {rows}×{c} scale {scale} ±{magnitude} {}",
            dtype.name()
        ),
        &got,
        &want,
        atol,
        rtol,
    );
}

#[test]
fn softmax_shapes() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(&gpu, 1, 1, 1.0, 1.0, dtype);
        check(&gpu, 5, 3, 1.0, 4.0, dtype);
        check(&gpu, 7, 77, 0.125, 10.0, dtype);
        check(&gpu, 3, 4099, 1.0, 5.0, dtype);
        check(&gpu, 2, 1000, 1.0, 80.0, dtype); // exp would overflow without the max shift
    }
}
