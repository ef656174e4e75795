//! Elementwise kernels vs the CPU references: SiLU, GELU (erf and tanh), quick-GELU, ReLU, tanh, scale,
//! add/mul with broadcasting, GEGLU; odd sizes, sizes off the workgroup, an SD-sized tensor.
//! Tolerances: f32 atol 2e-6 + rtol 1e-5 (GELU's erf approximation is within 1.5e-7);
//! f16 atol 2e-3 + rtol 2e-3 (output rounding).

mod common;

use common::*;
use stipple::ops::elementwise::{self, reference, Activation, BinaryOp};
use stipple::DType;

fn tol(dtype: DType) -> (f32, f32) {
    if dtype == DType::F32 {
        (2e-6, 1e-5)
    } else {
        (2e-3, 2e-3)
    }
}

#[test]
fn activations() {
    let Some(gpu) = gpu() else { return };
    let acts = [
        Activation::Identity,
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::QuickGelu,
        Activation::Relu,
        Activation::Tanh,
    ];
    for dtype in dtypes(&gpu) {
        for (n, magnitude) in [(1usize, 1.0f32), (257, 4.0), (3 * 77 * 5, 12.0)] {
            let x = quantize(&Rng::new(n as u64).vec(n, magnitude), dtype);
            for act in acts {
                let (alpha, beta) = (0.75, -0.25);
                let want = reference::unary(&x, act, alpha, beta);
                let got = run_graph(&gpu, dtype, &[("x", &[n], &x)], |g, ids| {
                    elementwise::unary(g, "act", ids[0], act, alpha, beta)
                });
                let (atol, rtol) = tol(dtype);
                assert_close(
                    &format!("{act:?} n={n} {}", dtype.name()),
                    &got,
                    &want,
                    atol * magnitude,
                    rtol,
                );
            }
        }
    }
}

#[test]
fn extreme_inputs_stay_finite() {
    let Some(gpu) = gpu() else { return };
    let x = vec![-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4];
    for act in [
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::QuickGelu,
        Activation::Relu,
        Activation::Tanh,
    ] {
        let got = run_graph(&gpu, DType::F32, &[("x", &[x.len()], &x)], |g, ids| {
            elementwise::activation(g, "act", ids[0], act)
        });
        assert!(got.iter().all(|v| v.is_finite()), "{act:?} gave {got:?}");
        assert_close(
            &format!("{act:?} extremes"),
            &got,
            &reference::unary(&x, act, 1.0, 0.0),
            1e-3,
            1e-5,
        );
    }
}

#[test]
fn add_and_mul_with_broadcast() {
    let Some(gpu) = gpu() else { return };
    // (a shape, b shape, inner, rep)
    let cases: [(&[usize], &[usize], usize, usize); 5] = [
        (&[5, 7], &[5, 7], 35, 1),
        (&[2, 3, 5, 8], &[2, 1, 1, 8], 8, 15), // time embedding over (B, H, W, C)
        (&[2, 77, 12], &[12], 12, 154),        // bias over rows
        (&[3, 4, 9], &[3, 4, 1], 1, 9),        // per-row scalar
        (&[2, 64, 64, 320], &[2, 1, 1, 320], 320, 4096),
    ];
    for dtype in dtypes(&gpu) {
        for (i, (sa, sb, inner, rep)) in cases.iter().enumerate() {
            let mut rng = Rng::new(i as u64);
            let a = quantize(&rng.vec(sa.iter().product(), 2.0), dtype);
            let b = quantize(&rng.vec(sb.iter().product(), 2.0), dtype);
            for op in [BinaryOp::Add, BinaryOp::Mul] {
                let want = reference::binary(&a, &b, *inner, *rep, op == BinaryOp::Mul);
                let got = run_graph(&gpu, dtype, &[("a", sa, &a), ("b", sb, &b)], |g, ids| {
                    elementwise::binary(g, "op", ids[0], ids[1], op)
                });
                let (atol, rtol) = tol(dtype);
                assert_close(
                    &format!("{op:?} {sa:?} ⊕ {sb:?} {}", dtype.name()),
                    &got,
                    &want,
                    atol * 4.0,
                    rtol,
                );
            }
        }
    }
}

#[test]
fn geglu() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        for (rows, f) in [(1usize, 1usize), (7, 13), (2 * 256, 1280)] {
            let x = quantize(&Rng::new(f as u64).vec(rows * 2 * f, 3.0), dtype);
            let want = reference::geglu(&x, f);
            let got = run_graph(&gpu, dtype, &[("x", &[rows, 2 * f], &x)], |g, ids| {
                elementwise::geglu(g, "ff.net.0", ids[0])
            });
            let (atol, rtol) = tol(dtype);
            assert_close(
                &format!("geglu {rows}×{f} {}", dtype.name()),
                &got,
                &want,
                atol * 9.0,
                rtol,
            );
        }
    }
}

#[test]
fn bad_broadcast_names_the_node() {
    let mut g = stipple::Graph::new(DType::F32);
    let a = g.input("a", &[2, 3, 4]).expect("a");
    let b = g.input("b", &[3, 1, 4]).expect("b");
    let err = elementwise::add(&mut g, "up_blocks.1.add", a, b).unwrap_err();
    assert!(err.to_string().contains("up_blocks.1.add"), "{err}");
}
