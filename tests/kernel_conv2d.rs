//! Conv2d kernel (NHWC implicit GEMM) vs the CPU reference: 3×3 stride 1 and 2 with padding 1,
//! 1×1, odd sizes and channel counts, batch > 1, fused bias and residual, an SD-sized layer;
//! f32 and f16; the same shapes and tile-crossing ones through the GPU variant's tiled kernel
//! (`conv2d_tiled`) forced on this adapter; the nearest-2× upsample folded into both kernels'
//! loads (`upsample_input`, diffusers' Upsample2D) vs the CPU reference on the upsampled
//! input and bit-identical to upsample-then-conv; the CPU variant's subgroup kernel
//! (`conv2d_subgroup`) over every padding, stride and upsample case, odd pixel and channel
//! counts, batch > 1, and a reduction at the loop budget. Tolerances: f32 atol 1e-4·scale; f16
//! (inputs rounded for the reference, output stored in f16) 4e-3·scale.

mod common;

use common::*;
use stipple::gpu::{Target, Variant};
use stipple::ops::conv2d::{self, Conv2dOptions, Conv2dWeight};
use stipple::ops::{matmul_subgroup, WeightLayout};
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

/// Random input (B, H, W, CIN), torch-layout weight (COUT, CIN, K, K), bias (COUT) and
/// residual (B, `out_pixels`, COUT), rounded to `dtype`.
fn random_data(
    rng: &mut Rng,
    [b, h, w, cin]: [usize; 4],
    cout: usize,
    k: usize,
    out_pixels: usize,
    dtype: DType,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = quantize(&rng.vec(b * h * w * cin, 1.0), dtype);
    let wt = quantize(
        &rng.vec(cout * cin * k * k, 1.0 / ((cin * k * k) as f32).sqrt()),
        dtype,
    );
    let bs = quantize(&rng.vec(cout, 0.5), dtype);
    let r = quantize(&rng.vec(b * out_pixels * cout, 1.0), dtype);
    (x, wt, bs, r)
}

/// A case: input (B, H, W, CIN), COUT, kernel, stride, padding, extra end padding, bias,
/// residual.
#[allow(clippy::too_many_arguments)]
fn case(
    input: [usize; 4],
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    extra: usize,
    bias: bool,
    residual: bool,
) -> Case {
    Case {
        input,
        cout,
        k,
        stride,
        pad,
        extra,
        bias,
        residual,
    }
}

/// Every case in f32 and f16 (seeds from `seed`) and each of `layouts` through `target`,
/// which must pick `shader`.
fn check_all(
    gpu: &stipple::Gpu,
    target: &Target,
    cases: &[Case],
    seed: u64,
    (shader, layouts): (&str, &[WeightLayout]),
) {
    for_each_variant(gpu, cases, layouts, seed, |c, variant, seed| {
        check_for(gpu, target, c, variant, seed, shader)
    });
}

fn check(gpu: &stipple::Gpu, case: &Case, dtype: DType, seed: u64) {
    let packed = (dtype, WeightLayout::Packed);
    check_for(gpu, &Target::default(), case, packed, seed, "conv2d");
}

/// `case` in a graph built for `target`, which must pick the kernel of `shader`.
fn check_for(
    gpu: &stipple::Gpu,
    target: &Target,
    case: &Case,
    (dtype, layout): (DType, WeightLayout),
    seed: u64,
    shader: &str,
) {
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
    let (x, wt, bs, r) = random_data(&mut rng, input, cout, k, ho * wo, dtype);
    let weight = Conv2dWeight::upload_laid_out(
        gpu,
        "conv",
        &wt,
        bias.then_some(&bs[..]),
        [cout, cin, k, k],
        dtype,
        layout,
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
    let mut config = String::new();
    let got = run_graph_for(gpu, target, dtype, &inputs, |g, ids| {
        let opts = Conv2dOptions {
            stride,
            padding: pad,
            extra_padding_end: extra,
            residual: residual.then_some(ids[1]),
            ..Default::default()
        };
        let y = conv2d::conv2d(g, "conv", ids[0], &weight, opts)?;
        let kernel = &g.dispatches()[0].kernel;
        assert_eq!(kernel.shader, shader, "kernel picked");
        config = config_of(kernel);
        Ok(y)
    });
    let scale = max_abs(&want).max(1.0);
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * scale;
    let label = format!(
        "{shader} {layout:?} {input:?}→{cout} k{k} s{stride} p{pad}+{extra} bias={bias} res={residual} {}{config}",
        dtype.name()
    );
    assert_close(&label, &got, &want, atol, 0.0);
}

/// The tile configuration a tiled conv dispatch runs (its override constants), for labels.
fn config_of(kernel: &stipple::gpu::KernelKey) -> String {
    let o = |name: &str| {
        kernel
            .overrides
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    };
    match (o("BM"), o("BN4"), o("BK")) {
        (Some(bm), Some(bn4), Some(bk)) => format!(" {bm}x{}k{bk}", 4 * bn4),
        _ => String::new(),
    }
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

/// The GPU variant's tiled implicit-GEMM kernel (`conv2d_tiled`), forced on this adapter, in
/// every tile configuration an adapter may choose (`matmul_tiled::TILES`: 128 or 64 pixels ×
/// 64 or 32 channels per workgroup, K = taps·CIN in steps of 16 or 8): 3×3 stride 1 and 2 with
/// padding, the VAE's (0, 1, 0, 1) downsample padding, 1×1, a 1×1 image, odd channel counts,
/// K not a multiple of 8 or 16, pixel counts one past a tile (130, 65), COUT one past a tile
/// (65, 33), batch > 1, bias and residual; f32 and f16 (tolerances as in `check`). Each graph
/// must dispatch the configuration its target decided.
#[test]
fn conv2d_tiled_gpu_variant() {
    use stipple::ops::matmul_tiled::TILES;
    let Some(gpu) = gpu() else { return };
    let cases = [
        case([1, 1, 1, 4], 3, 3, 1, 1, 0, true, false),
        case([2, 8, 6, 5], 7, 3, 2, 0, 1, true, false),
        case([1, 5, 7, 3], 5, 3, 1, 1, 0, false, true),
        case([2, 9, 6, 4], 10, 3, 2, 1, 0, true, false),
        case([1, 13, 10, 17], 65, 3, 1, 1, 0, true, true),
        case([3, 11, 5, 6], 9, 1, 1, 0, 0, true, true),
        case([1, 10, 13, 40], 24, 1, 1, 0, 0, false, false),
        case([2, 12, 12, 16], 72, 3, 2, 1, 0, true, true),
        case([1, 5, 13, 7], 33, 3, 1, 1, 0, true, false),
    ];
    for tile in TILES {
        let target = gpu
            .target
            .clone()
            .with_variant(Variant::Gpu)
            .with_config("conv2d_tiled", tile.name);
        // The dispatched configuration is the decided one.
        let mut g = stipple::Graph::for_target(DType::F32, &target);
        let x = g.input("x", &[1, 4, 4, 8]).expect("input");
        let w = Conv2dWeight::upload(&gpu, "c", &[0.0; 8 * 8], None, [8, 8, 1, 1], DType::F32)
            .expect("upload");
        conv2d::conv2d(&mut g, "c", x, &w, Conv2dOptions::default()).expect("conv");
        let want = format!(" {}", tile.name);
        assert_eq!(config_of(&g.dispatches()[0].kernel), want);
        check_all(
            &gpu,
            &target,
            &cases,
            40,
            ("conv2d_tiled", &[WeightLayout::Packed]),
        );
    }
}

/// `Conv2dOptions::upsample_input` (Upsample2D's interpolate folded into the conv): both kernels,
/// f32 and f16, odd sizes and channel counts, batch 2, 3×3 padding 1 and 1×1, with bias and
/// residual. Checked against the CPU reference on the upsampled input (tolerances as in
/// `check`) and against the unfused graph (upsample op, then the conv), which must agree bit
/// for bit: the fold changes where values are read, not the sums.
#[test]
fn conv2d_folds_nearest_upsample_into_its_loads() {
    use stipple::ops::upsample::upsample_nearest2x;
    let Some(gpu) = gpu() else { return };
    let cpu = Target::default();
    let tiled = gpu.target.clone().with_variant(Variant::Gpu);
    // (input (B, H, W, CIN), COUT, kernel, padding, residual)
    let cases = vec![
        ([1, 1, 1, 3], 5, 3, 1, false),
        ([2, 3, 5, 7], 9, 3, 1, true),
        ([1, 7, 4, 16], 65, 3, 1, false),
        ([2, 5, 3, 6], 11, 1, 0, true),
        ([1, 9, 10, 20], 24, 3, 1, true),
    ];
    // The subgroup kernel reads CIN as vec4 and takes 8 output pixels or more.
    let vec4_cases = vec![
        ([1, 2, 2, 4], 5, 3, 1, false),
        ([2, 3, 5, 8], 9, 3, 1, true),
        ([1, 7, 4, 16], 65, 3, 1, false),
        ([2, 5, 3, 12], 11, 1, 0, true),
        ([1, 9, 10, 20], 24, 3, 1, true),
        ([2, 8, 9, 32], 40, 3, 1, true),
    ];
    let mut kernels = vec![(cpu, "conv2d", &cases), (tiled, "conv2d_tiled", &cases)];
    if let Some(sub) = subgroup_target(&gpu) {
        kernels.push((sub, "conv2d_subgroup", &vec4_cases));
    }
    for dtype in dtypes(&gpu) {
        for (target, shader, cases) in &kernels {
            let (target, shader) = (target, *shader);
            for (i, &(input, cout, k, pad, residual)) in cases.iter().enumerate() {
                let mut rng = Rng::new(90 + i as u64);
                let [b, h, w, cin] = input;
                let (hu, wu) = (2 * h, 2 * w);
                let (ho, wo) = (hu + 2 * pad + 1 - k, wu + 2 * pad + 1 - k);
                let (x, wt, bs, r) = random_data(&mut rng, input, cout, k, ho * wo, dtype);
                // CPU: upsample, then the reference convolution.
                let mut up = vec![0.0; b * hu * wu * cin];
                for n in 0..b {
                    for y in 0..hu {
                        for xx in 0..wu {
                            let src = ((n * h + y / 2) * w + xx / 2) * cin;
                            let dst = ((n * hu + y) * wu + xx) * cin;
                            up[dst..dst + cin].copy_from_slice(&x[src..src + cin]);
                        }
                    }
                }
                let want = conv2d::reference(
                    &up,
                    [b, hu, wu, cin],
                    &wt,
                    Some(&bs),
                    [cout, cin, k, k],
                    1,
                    (pad, 0),
                    residual.then_some(&r[..]),
                );
                // Laid out as a model loaded for the target (Blocked for the subgroup kernel).
                let layout = WeightLayout::for_target(target, cin);
                let shape = [cout, cin, k, k];
                let weight = Conv2dWeight::upload_laid_out(
                    &gpu,
                    "conv",
                    &wt,
                    Some(&bs),
                    shape,
                    dtype,
                    layout,
                )
                .expect("upload");
                let run = |fused: bool| {
                    let mut g = stipple::Graph::for_target(dtype, target);
                    let xi = g.input("x", &input).expect("input");
                    let ri = g.input("r", &[b, ho, wo, cout]).expect("input");
                    let src = if fused {
                        xi
                    } else {
                        upsample_nearest2x(&mut g, "up", xi).expect("upsample") // (B, 2H, 2W, CIN)
                    };
                    let opts = Conv2dOptions {
                        padding: pad,
                        upsample_input: fused,
                        residual: residual.then_some(ri),
                        ..Default::default()
                    };
                    let y = conv2d::conv2d(&mut g, "conv", src, &weight, opts).expect("conv2d");
                    assert_eq!(g.shape(y).unwrap(), vec![b, ho, wo, cout]);
                    let convs: Vec<_> = g.dispatches().iter().map(|d| d.kernel.shader).collect();
                    assert_eq!(convs.last(), Some(&shader), "kernel picked");
                    assert_eq!(convs.len(), if fused { 1 } else { 2 }, "{convs:?}");
                    g.output("out", y).expect("output");
                    let plan = stipple::Plan::new(&gpu, g).expect("plan");
                    plan.write_input("x", &x).expect("write");
                    plan.write_input("r", &r).expect("write");
                    plan.run().expect("run");
                    plan.read_output("out").expect("read")
                };
                let (fused, unfused) = (run(true), run(false));
                let scale = max_abs(&want).max(1.0);
                let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * scale;
                let label = format!(
                    "upsample+conv {input:?}→{cout} k{k} {shader} {}",
                    dtype.name()
                );
                assert_close(&label, &fused, &want, atol, 0.0);
                assert_eq!(
                    fused, unfused,
                    "{label}: fused differs from upsample-then-conv"
                );
            }
        }
    }
}

/// The CPU variant's subgroup kernel (`conv2d_subgroup`: lanes own 4 or 8 output pixels ×
/// 32 channels, CIN read as vec4): 3×3 stride 1 and 2 with padding 1, the VAE's (0, 1, 0, 1)
/// stride-2 downsample, 1×1, output pixel counts from 8 to 640 (partial blocks of 32 and 64
/// pixels, both sides of the 4/8 pixels-per-lane switch), COUT from 3 to 65 (one past a
/// 32-channel block), CIN from 4 to 64, batch 1 to 3, bias and residual; f32 and f16
/// (tolerances as in `check`). The upsample fold is in
/// `conv2d_folds_nearest_upsample_into_its_loads`.
#[test]
fn conv2d_subgroup_cpu_variant() {
    let Some(gpu) = gpu() else { return };
    let Some(target) = subgroup_target(&gpu) else {
        return;
    };
    let cases = [
        case([1, 2, 4, 4], 3, 3, 1, 1, 0, true, false),
        case([2, 8, 6, 8], 7, 3, 2, 0, 1, true, false),
        case([1, 7, 9, 12], 5, 3, 1, 1, 0, false, true),
        case([2, 9, 6, 4], 10, 3, 2, 1, 0, true, true),
        case([1, 13, 10, 20], 65, 3, 1, 1, 0, true, true),
        case([3, 11, 5, 8], 9, 1, 1, 0, 0, true, true),
        case([1, 10, 13, 40], 24, 1, 1, 0, 0, false, false),
        case([2, 16, 8, 16], 33, 3, 1, 1, 0, true, true),
        case([1, 16, 16, 8], 8, 3, 1, 1, 0, true, false),
        case([2, 20, 16, 64], 40, 3, 1, 1, 0, true, true),
        case([1, 33, 31, 12], 16, 3, 2, 0, 1, false, true),
    ];
    check_all(&gpu, &target, &cases, 60, ("conv2d_subgroup", BOTH));
}

/// Which kernel a CPU-variant graph picks: for a Packed weight the subgroup kernel when CIN is a
/// multiple of 4 and there are at least 8 output pixels (on an adapter with subgroups of 8),
/// the register-blocked `conv2d` otherwise (the VAE encoder's 3-channel conv_in, a 2×2 image,
/// no subgroups); for a Blocked weight the subgroup kernel at any size, or an error.
#[test]
fn conv2d_subgroup_selection() {
    let Some(gpu) = gpu() else { return };
    let Some(target) = subgroup_target(&gpu) else {
        return;
    };
    let picked = |target: &Target, input: [usize; 4], layout| {
        let cin = input[3];
        let weight = Conv2dWeight::upload_laid_out(
            &gpu,
            "c",
            &vec![0.0; 8 * cin * 9],
            None,
            [8, cin, 3, 3],
            DType::F32,
            layout,
        )
        .expect("upload");
        let mut g = stipple::Graph::for_target(DType::F32, target);
        let x = g.input("x", &input).expect("input");
        conv2d::conv2d(&mut g, "c", x, &weight, Conv2dOptions::padded(1))?;
        Ok::<_, stipple::Error>(g.dispatches()[0].kernel.shader)
    };
    let (packed, blocked) = (WeightLayout::Packed, WeightLayout::Blocked);
    assert_eq!(
        picked(&target, [1, 4, 2, 4], packed).unwrap(),
        "conv2d_subgroup"
    );
    assert_eq!(picked(&target, [1, 4, 2, 3], packed).unwrap(), "conv2d");
    assert_eq!(picked(&target, [1, 2, 2, 4], packed).unwrap(), "conv2d");
    assert_eq!(
        picked(&target, [1, 2, 2, 4], blocked).unwrap(),
        "conv2d_subgroup"
    );
    let gpu_variant = target.clone().with_variant(Variant::Gpu);
    assert!(picked(&gpu_variant, [1, 4, 2, 4], blocked).is_err());
    let without = Target {
        subgroups: false,
        subgroup_min_size: 0,
        ..target
    };
    assert_eq!(picked(&without, [1, 4, 2, 4], packed).unwrap(), "conv2d");
}

/// A 1×1 convolution whose channel loop brings one invocation exactly to the loop budget is
/// computed in full; 4 channels more are rejected with an error naming the layer, not silently
/// truncated.
#[test]
fn conv2d_subgroup_at_the_loop_budget() {
    let Some(gpu) = gpu() else { return };
    let Some(target) = subgroup_target(&gpu) else {
        return;
    };
    let pixels = 8;
    let fixed = matmul_subgroup::conv_iterations(pixels, [1, 1], 0);
    let cin = 4 * (target.loop_budget() - fixed);
    assert_eq!(
        matmul_subgroup::conv_iterations(pixels, [1, 1], cin),
        target.loop_budget()
    );
    let c = case([1, 2, 4, cin], 8, 1, 1, 0, 0, true, true);
    check_all(&gpu, &target, &[c], 70, ("conv2d_subgroup", BOTH));
    let cin = cin + 4;
    let weight = Conv2dWeight::upload(
        &gpu,
        "c",
        &vec![0.0; 8 * cin],
        None,
        [8, cin, 1, 1],
        DType::F32,
    )
    .expect("upload");
    let mut g = stipple::Graph::for_target(DType::F32, &target);
    let x = g.input("x", &[1, 2, 4, cin]).expect("input");
    let err = conv2d::conv2d(&mut g, "vae.conv_in", x, &weight, Conv2dOptions::default())
        .expect_err("past the loop budget");
    assert!(err.to_string().contains("vae.conv_in"), "{err}");
}
