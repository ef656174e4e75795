//! Layout kernels vs the CPU references: nearest 2× upsample (NHWC), channel concat, and the
//! sinusoidal timestep embedding. Upsample and concat copy values: exact. Timestep embedding
//! (reference in f64): f32 atol 3e-4, since the angle t·freq itself is an f32 product of up to
//! 1000 rad (ulp 6e-5; torch's f32 computation carries the same rounding); f16 atol 2e-3.

mod common;

use common::*;
use stipple::ops::timestep_embedding::{self, TimestepEmbeddingOptions};
use stipple::ops::{concat, upsample};
use stipple::DType;

#[test]
fn upsample_nearest_2x() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        for shape in [[1usize, 1, 1, 1], [2, 3, 5, 7], [1, 8, 8, 320]] {
            let x = quantize(&Rng::new(3).vec(shape.iter().product(), 1.0), dtype);
            let want = upsample::reference(&x, shape);
            let got = run_graph(&gpu, dtype, &[("x", &shape, &x)], |g, ids| {
                upsample::upsample_nearest2x(g, "up", ids[0])
            });
            assert_close(
                &format!("upsample {shape:?} {}", dtype.name()),
                &got,
                &want,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn concat_channels() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        for (rows, ca, cb) in [
            (1usize, 1usize, 1usize),
            (2 * 7 * 5, 3, 13),
            (2 * 16 * 16, 1280, 640),
        ] {
            let mut rng = Rng::new(rows as u64);
            let a = quantize(&rng.vec(rows * ca, 1.0), dtype);
            let b = quantize(&rng.vec(rows * cb, 1.0), dtype);
            let want = concat::reference(&a, ca, &b, cb);
            let got = run_graph(
                &gpu,
                dtype,
                &[("a", &[rows, ca], &a), ("b", &[rows, cb], &b)],
                |g, ids| concat::concat_channels(g, "cat", ids[0], ids[1]),
            );
            assert_close(
                &format!("concat {rows}×({ca}+{cb}) {}", dtype.name()),
                &got,
                &want,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn timestep_embedding_matches_diffusers_formula() {
    let Some(gpu) = gpu() else { return };
    let t = vec![0.0, 1.0, 250.0, 999.0, 981.0];
    for dtype in dtypes(&gpu) {
        for (dim, flip, shift) in [
            (320usize, true, 0.0f32),
            (32, false, 1.0),
            (7, true, 1.0),
            (1280, true, 0.0),
        ] {
            let o = TimestepEmbeddingOptions::new(dim, flip, shift);
            let want = timestep_embedding::reference(&t, o);
            let mut g = stipple::Graph::new(dtype);
            let ts = g.input_with_dtype("t", &[t.len()], DType::F32).expect("t");
            let y =
                timestep_embedding::timestep_embedding(&mut g, "time_proj", ts, o).expect("build");
            g.output("out", y).expect("out");
            let plan = stipple::Plan::new(&gpu, g).expect("plan");
            plan.write_input("t", &t).expect("write");
            plan.run().expect("run");
            let got = plan.read_output("out").expect("read");
            let atol = if dtype == DType::F32 { 3e-4 } else { 2e-3 };
            assert_close(
                &format!(
                    "timestep embedding dim {dim} flip {flip} shift {shift} {}",
                    dtype.name()
                ),
                &got,
                &want,
                atol,
                0.0,
            );
        }
    }
}
