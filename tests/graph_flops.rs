//! FLOPs counted from graphs (`stipple::graph::flops`) against counts worked out by hand for a
//! linear, a convolution and attention (one dispatch, and split into query chunks), and the
//! full-size SD1.5 UNet (placeholder weights: nothing runs) against PyTorch's flop counter:
//! `torch.utils.flop_counter.FlopCounterMode` on diffusers' UNet2DConditionModel, 256×256
//! (latent 32×32), batch 2, 77 tokens, reports 0.360 TFLOP (mm/addmm + convolution + SDPA).

mod common;

use common::gpu;
use stipple::gpu::Target;
use stipple::graph::flops::OpClass;
use stipple::models::config::UNet2DConditionConfig;
use stipple::models::unet_2d_condition::UNet2DConditionModel;
use stipple::models::Ctx;
use stipple::ops::attention::{self, AttentionKernel, AttentionOptions, HeadsOf};
use stipple::ops::conv2d::{self, Conv2dOptions, Conv2dWeight};
use stipple::ops::matmul::{self, LinearOptions, LinearWeight};
use stipple::weights::Weights;
use stipple::{DType, Graph};

#[test]
fn linear_conv_and_attention_by_hand() {
    let Some(gpu) = gpu() else { return };
    let mut g = Graph::new(DType::F32);
    // Linear (3, 5, 7) → 11 with bias: 2·M·N·K, M = 15 rows.
    let x = g.input("x", &[3, 5, 7]).unwrap();
    let w =
        LinearWeight::upload(&gpu, "fc", &[0.0; 77], Some(&[0.0; 11]), 11, 7, DType::F32).unwrap();
    matmul::linear(&mut g, "fc", x, &w, LinearOptions::default()).unwrap();
    // 3×3 conv, stride 2, padding 1, (2, 9, 7, 5) → (2, 5, 4, 6): 2·B·Ho·Wo·Cout·(9·Cin).
    let img = g.input("img", &[2, 9, 7, 5]).unwrap();
    let cw =
        Conv2dWeight::upload(&gpu, "conv", &[0.0; 270], None, [6, 5, 3, 3], DType::F32).unwrap();
    let opts = Conv2dOptions {
        stride: 2,
        padding: 1,
        ..Conv2dOptions::default()
    };
    conv2d::conv2d(&mut g, "conv", img, &cw, opts).unwrap();
    // Self-attention over a fused QKV (2, 13, 3·8): 2 heads of 4, Tq = Tk = 13:
    // 4·B·H·Tq·Tk·D.
    let qkv = g.input("qkv", &[2, 13, 24]).unwrap();
    let heads = |offset| HeadsOf { value: qkv, offset };
    let a = AttentionOptions {
        heads: 2,
        head_dim: 4,
        scale: None,
        causal: false,
    };
    attention::attention(&mut g, "attn", heads(0), heads(8), heads(16), a).unwrap();
    let per: Vec<_> = g.dispatch_flops();
    let by = |class| -> u64 {
        per.iter()
            .filter(|f| f.class == class)
            .map(|f| f.flops)
            .sum()
    };
    assert_eq!(by(OpClass::Matmul), 2 * 15 * 11 * 7);
    assert_eq!(by(OpClass::Conv), 2 * 2 * 5 * 4 * 6 * (9 * 5));
    assert_eq!(by(OpClass::Attention), 4 * 2 * 2 * 13 * 13 * 4);
    let t = g.flops();
    assert_eq!(
        t.tensor(),
        2 * 15 * 11 * 7 + 2 * 2 * 5 * 4 * 6 * 45 + 4 * 2 * 2 * 13 * 13 * 4
    );
}

/// Every kernel of a linear layer and of a convolution counts the same FLOPs: the
/// register-blocked kernels (`Target::default()`), the subgroup kernels (CPU variant with
/// subgroups of 8) and the workgroup-memory tiles (GPU variant).
#[test]
fn every_gemm_kernel_counts_its_flops() {
    use stipple::gpu::Variant;
    let Some(gpu) = gpu() else { return };
    let w = LinearWeight::upload(&gpu, "fc", &[0.0; 88], None, 11, 8, DType::F32).unwrap();
    let cw =
        Conv2dWeight::upload(&gpu, "conv", &[0.0; 216], None, [6, 4, 3, 3], DType::F32).unwrap();
    let subgroups = Target {
        subgroups: true,
        subgroup_min_size: 8,
        ..Target::default()
    };
    let targets = [
        (Target::default(), ["matmul", "conv2d"]),
        (subgroups, ["matmul_subgroup", "conv2d_subgroup"]),
        (
            Target::default().with_variant(Variant::Gpu),
            ["matmul_tiled", "conv2d_tiled"],
        ),
    ];
    for (target, shaders) in targets {
        let mut g = Graph::for_target(DType::F32, &target);
        // Linear (3, 5, 8) → 11: 2·M·N·K, M = 15 rows.
        let x = g.input("x", &[3, 5, 8]).unwrap();
        matmul::linear(&mut g, "fc", x, &w, LinearOptions::default()).unwrap();
        // 3×3 conv, padding 1, (2, 4, 3, 4) → (2, 4, 3, 6): 2·B·Ho·Wo·Cout·(9·Cin).
        let img = g.input("img", &[2, 4, 3, 4]).unwrap();
        conv2d::conv2d(&mut g, "conv", img, &cw, Conv2dOptions::padded(1)).unwrap();
        let picked: Vec<_> = g.dispatches().iter().map(|d| d.kernel.shader).collect();
        assert_eq!(picked, shaders);
        let per = g.dispatch_flops();
        assert_eq!(per[0].class, OpClass::Matmul);
        assert_eq!(per[0].flops, 2 * 15 * 11 * 8, "{shaders:?}");
        assert_eq!(per[1].class, OpClass::Conv);
        assert_eq!(per[1].flops, 2 * 2 * 4 * 3 * 6 * (9 * 4), "{shaders:?}");
    }
}

#[test]
fn chunked_cross_attention_sums_to_the_whole() {
    let Some(_gpu) = gpu() else { return };
    // 300 queries, 150 keys, 3 heads of 8: a small loop budget splits the keys (64 per split
    // for the one-query kernel, 8 for the lanes kernel) and a small bound on the partial results
    // chunks the queries (64 per dispatch); the chunks' FLOPs must add up to the whole.
    let (b, tq, tk, h, d) = (2u64, 300u64, 150u64, 3u64, 8u64);
    let target = Target {
        loop_budget: Some(500),
        ..Target::default()
    };
    // The one-query kernel and the subgroup-lanes kernel (`attention_lanes::partial`).
    for kernel in [AttentionKernel::OneQuery, AttentionKernel::Lanes] {
        let mut g = Graph::for_target(DType::F32, &target);
        let q = g.input("q", &[2, 300, 24]).unwrap();
        let kv = g.input("kv", &[2, 150, 48]).unwrap();
        let a = AttentionOptions {
            heads: 3,
            head_dim: 8,
            scale: None,
            causal: false,
        };
        let kv_at = |offset| HeadsOf { value: kv, offset };
        attention::attention_with(
            &mut g,
            "attn",
            q.into(),
            kv_at(0),
            kv_at(24),
            a,
            kernel,
            4096,
        )
        .unwrap();
        let attention_dispatches = g
            .dispatches()
            .iter()
            .filter(|d| d.kernel.entry == "partial")
            .count();
        assert_eq!(
            attention_dispatches, 5,
            "{kernel:?}: 300 queries in chunks of 64"
        );
        assert_eq!(g.flops().attention, 4 * b * h * tq * tk * d, "{kernel:?}");
    }
}

#[test]
fn sd15_unet_step_matches_pytorch_flop_counter() {
    let Some(gpu) = gpu() else { return };
    let empty = Weights::empty("(placeholders)");
    let unet = UNet2DConditionModel::load(
        Ctx::placeholders(&gpu, DType::F32),
        &empty.root(),
        UNet2DConditionConfig::stable_diffusion_v1(),
    )
    .unwrap();
    let g = unet.graph(DType::F32, 2, [32, 32], 77, false).unwrap();
    let t = g.flops();
    let torch = 0.360e12;
    let rel = (t.tensor() as f64 - torch).abs() / torch;
    eprintln!(
        "SD1.5 UNet 256², batch 2: {:.4} TFLOP in matmul/conv/attention, {:.4} in all",
        t.tensor() as f64 / 1e12,
        t.total() as f64 / 1e12
    );
    assert!(
        rel < 0.005,
        "SD1.5 UNet 256², batch 2: {} tensor FLOPs (matmul {}, conv {}, attention {}) vs PyTorch's 0.360 T",
        t.tensor(),
        t.matmul,
        t.conv,
        t.attention
    );
    // Norms and elementwise ops are a small remainder.
    assert!(t.total() > t.tensor() && (t.total() - t.tensor()) * 50 < t.tensor());
}
