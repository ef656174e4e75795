//! Conv2d kernel (NHWC implicit GEMM) vs the CPU reference: 3×3 stride 1 and 2 with padding 1,
//! 1×1, odd sizes and channel counts, batch > 1, fused bias and residual, an SD-sized layer;
//! f32 and f16. Tolerances: f32 atol 1e-4·scale; f16 (inputs rounded for the reference, output
//! stored in f16) 4e-3·scale.

mod common;

use common::*;
use stipple::ops::conv2d::{self, Conv2dOptions, Conv2dWeight};
use stipple::DType;

struct Case {
    input: [usize; 4], // (B, H, W, CIN)
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    extra: usize,
    bias: bool,
    residual: bool,
}

fn check(gpu: &stipple::Gpu, case: &Case, dtype: DType, seed: u64) {
    let mut rng = Rng::new(seed);
    let Case {
        input,
        cout,
        k,
        stride,
        pad,
        extra,
        bias,
        residual,
    } = *case;
    let [b, h, w, cin] = input;
    let ho = (h + 2 * pad + extra - k) / stride + 1;
    let wo = (w + 2 * pad + extra - k) / stride + 1;
    let x = quantize(&rng.vec(b * h * w * cin, 1.0), dtype);
    let wt = quantize(
        &rng.vec(cout * cin * k * k, 1.0 / ((cin * k * k) as f32).sqrt()),
        dtype,
    );
    let bs = quantize(&rng.vec(cout, 0.5), dtype);
    let r = quantize(&rng.vec(b * ho * wo * cout, 1.0), dtype);
    let weight = Conv2dWeight::upload(
        gpu,
        "conv",
        &wt,
        bias.then_some(&bs[..]),
        [cout, cin, k, k],
        dtype,
    )
    .expect("upload");
    let want = conv2d::reference(
        &x,
        input,
        &wt,
        bias.then_some(&bs[..]),
        [cout, cin, k, k],
        stride,
        (pad, extra),
        residual.then_some(&r[..]),
    );
    let rs = [b, ho, wo, cout];
    let inputs: Vec<(&str, &[usize], &[f32])> = vec![("x", &input, &x), ("r", &rs, &r)];
    let got = run_graph(gpu, dtype, &inputs, |g, ids| {
        let opts = Conv2dOptions {
            stride,
            padding: pad,
            extra_padding_end: extra,
            residual: residual.then_some(ids[1]),
        };
        conv2d::conv2d(g, "conv", ids[0], &weight, opts)
    });
    let scale = max_abs(&want).max(1.0);
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * scale;
    let label = format!(
        "conv {input:?}→{cout} k{k} s{stride} p{pad}+{extra} bias={bias} res={residual} {}",
        dtype.name()
    );
    assert_close(&label, &got, &want, atol, 0.0);
}

#[test]
fn conv2d_shapes() {
    let Some(gpu) = gpu() else { return };
    let cases = [
        // VAE encoder Downsample2D: pad (0, 1, 0, 1), 3×3, stride 2.
        Case {
            input: [2, 8, 6, 5],
            cout: 7,
            k: 3,
            stride: 2,
            pad: 0,
            extra: 1,
            bias: true,
            residual: false,
        },
        Case {
            input: [1, 5, 7, 3],
            cout: 5,
            k: 3,
            stride: 1,
            pad: 1,
            extra: 0,
            bias: true,
            residual: false,
        },
        Case {
            input: [2, 9, 6, 4],
            cout: 10,
            k: 3,
            stride: 2,
            pad: 1,
            extra: 0,
            bias: true,
            residual: false,
        },
        Case {
            input: [1, 8, 8, 16],
            cout: 8,
            k: 1,
            stride: 1,
            pad: 0,
            extra: 0,
            bias: false,
            residual: false,
        },
        Case {
            input: [2, 7, 7, 13],
            cout: 17,
            k: 3,
            stride: 1,
            pad: 1,
            extra: 0,
            bias: true,
            residual: true,
        },
        Case {
            input: [3, 11, 5, 6],
            cout: 9,
            k: 1,
            stride: 1,
            pad: 0,
            extra: 0,
            bias: true,
            residual: true,
        },
        Case {
            input: [1, 1, 1, 4],
            cout: 3,
            k: 3,
            stride: 1,
            pad: 1,
            extra: 0,
            bias: true,
            residual: false,
        },
        Case {
            input: [2, 16, 10, 32],
            cout: 64,
            k: 3,
            stride: 2,
            pad: 1,
            extra: 0,
            bias: true,
            residual: false,
        },
    ];
    for dtype in dtypes(&gpu) {
        for (i, case) in cases.iter().enumerate() {
            check(&gpu, case, dtype, 10 + i as u64);
        }
    }
}

#[test]
fn conv2d_sd_sized() {
    // An SD1.5 down block conv at reduced resolution: 320 → 320 channels, 3×3, 32×32, batch 2.
    let Some(gpu) = gpu() else { return };
    let case = Case {
        input: [2, 32, 32, 320],
        cout: 320,
        k: 3,
        stride: 1,
        pad: 1,
        extra: 0,
        bias: true,
        residual: true,
    };
    for dtype in dtypes(&gpu) {
        check(&gpu, &case, dtype, 77);
    }
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let Some(gpu) = gpu() else { return };
    let weight = Conv2dWeight::upload(&gpu, "c", &[0.0; 2 * 3 * 9], None, [2, 3, 3, 3], DType::F32)
        .expect("upload");
    let mut g = stipple::Graph::new(DType::F32);
    let x = g.input("x", &[1, 4, 4, 5]).expect("input");
    let err = conv2d::conv2d(
        &mut g,
        "mid_block.resnets.0.conv1",
        x,
        &weight,
        Conv2dOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("mid_block.resnets.0.conv1")
            && err.to_string().contains("5 channels"),
        "{err}"
    );
}
