//! UNet2DConditionModel vs diffusers on the tiny SD1-like (conv projections, 2 levels) and
//! SD2-like (linear projections, per-block heads, f16 weights on disk, 3 levels, 2 layers per
//! block) models written by tools/golden/models_golden.py, with probes at every block boundary.
//! Tolerance (max abs error ÷ max(1, max |golden|), per probe): f32 1e-4; f16 storage 1e-2 (seen: f32 ≤ 4e-6, f16 ≤ 3e-3).
//!
//! The up blocks' resnets run over `[hidden ‖ skip]` folded (norm1 reads both tensors, the
//! 1×1 conv_shortcut is two GEMMs over the input ranges, the time embedding is added as norm2
//! loads its input): every such resnet of the tiny SD1, SD2 and SDXL UNets, with their weights,
//! equals the unfused graph (concat op, whole conv_shortcut, add op) within 1e-6 in f32 and
//! 4e-3 in f16 (÷ max(1, max |output|); seen: f32 ≤ 3e-7, f16 ≤ 1.2e-3: the folded graph stores
//! W_a·hidden + b in f16 before the second GEMM adds it, and does not round conv1 + temb to f16
//! before norm2), on both kernel variants.

mod common;

use common::golden::{compare_outputs, fixture, Golden};
use common::*;
use stipple::gpu::Variant;
use stipple::models::resnet::ResnetBlock2D;
use stipple::models::unet_2d_condition::UNet2DConditionModel;
use stipple::models::{layers, split, Ctx};
use stipple::ops::conv2d::Conv2dOptions;
use stipple::ops::group_norm;
use stipple::ops::matmul::LinearOptions;
use stipple::ops::{concat, elementwise};
use stipple::weights::Weights;
use stipple::{DType, Graph, Plan};

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

/// (name, [hidden, skip, out] channels) of every up-block resnet, as diffusers'
/// `UNet2DConditionModel` builds them from `block_out_channels` and `layers_per_block`.
fn up_resnets(block_out_channels: &[usize], layers_per_block: usize) -> Vec<(String, [usize; 3])> {
    let reversed: Vec<usize> = block_out_channels.iter().rev().copied().collect();
    let layers = layers_per_block + 1;
    let mut prev = reversed[0];
    let mut out = Vec::new();
    for (j, &channels) in reversed.iter().enumerate() {
        let input = reversed[(j + 1).min(reversed.len() - 1)];
        for i in 0..layers {
            let skip = if i + 1 == layers { input } else { channels };
            let hidden = if i == 0 { prev } else { channels };
            out.push((
                format!("up_blocks.{j}.resnets.{i}"),
                [hidden, skip, channels],
            ));
        }
        prev = channels;
    }
    out
}

/// One resnet over `[hidden ‖ skip]`, folded (`forward_concat`) or as diffusers writes it
/// (concat, norm1, conv1, + time_emb_proj, norm2, conv_shortcut over the concatenation, conv2);
/// returns the output for the given inputs.
#[allow(clippy::too_many_arguments)]
fn run_resnet(
    gpu: &stipple::Gpu,
    block: &ResnetBlock2D,
    whole_shortcut: &split::Conv2d,
    [hidden, skip]: [&[f32]; 2],
    temb: &[f32],
    shapes: [[usize; 4]; 2],
    dtype: DType,
    fused: bool,
) -> Vec<f32> {
    let mut g = Graph::for_target(dtype, &gpu.target);
    let h = g.input("hidden", &shapes[0]).expect("hidden");
    let s = g.input("skip", &shapes[1]).expect("skip");
    let t = g
        .input("temb", &[shapes[0][0], temb.len() / shapes[0][0]])
        .expect("temb");
    let y = if fused {
        block.forward_concat(&mut g, h, s, Some(t)).expect("fused")
    } else {
        let g = &mut g;
        let n = &block.name;
        let cat = concat::concat_channels(g, "cat", h, s).expect("cat");
        let x = group_norm::group_norm(g, "norm1", cat, &block.norm1, true).expect("norm1");
        let x = split::conv2d(g, "conv1", x, &block.conv1, Conv2dOptions::padded(1)).expect("c1");
        let proj = block.time_emb_proj.as_ref().expect("time_emb_proj");
        let t = split::linear(g, "proj", t, proj, LinearOptions::default()).expect("proj");
        let c = g.shape(t).expect("shape")[1];
        let t = g.reshape(t, &[shapes[0][0], 1, 1, c]).expect("reshape");
        let x = elementwise::add(g, "add", x, t).expect("add");
        let x = group_norm::group_norm(g, "norm2", x, &block.norm2, true).expect("norm2");
        let opts = Conv2dOptions::default();
        let sc = split::conv2d(g, &format!("{n}.sc"), cat, whole_shortcut, opts).expect("sc");
        let opts = Conv2dOptions {
            residual: Some(sc),
            ..Conv2dOptions::padded(1)
        };
        split::conv2d(g, "conv2", x, &block.conv2, opts).expect("conv2")
    };
    g.output("out", y).expect("output");
    let plan = Plan::new(gpu, g).expect("plan");
    plan.write_input("hidden", hidden).expect("hidden");
    plan.write_input("skip", skip).expect("skip");
    plan.write_input("temb", temb).expect("temb");
    plan.run().expect("run");
    plan.read_output("out").expect("out")
}

#[test]
fn folded_skip_concat_equals_the_unfused_resnet() {
    let Some(gpu) = gpu() else { return };
    let mut checked = 0;
    for model in ["tiny-sd1", "tiny-sd2", "tiny-sdxl"] {
        let dir = fixture(model).join("unet");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("cfg"))
                .expect("config json");
        let usizes = |v: &serde_json::Value| -> Vec<usize> {
            match v {
                serde_json::Value::Array(a) => {
                    a.iter().map(|x| x.as_u64().unwrap() as usize).collect()
                }
                x => vec![x.as_u64().expect("number") as usize],
            }
        };
        let boc = usizes(&config["block_out_channels"]);
        let layers_per_block = usizes(&config["layers_per_block"])[0];
        let groups = config["norm_num_groups"].as_u64().expect("groups") as usize;
        let eps = config["norm_eps"].as_f64().expect("eps") as f32;
        let weights = Weights::open(dir.join("diffusion_pytorch_model.safetensors")).expect("open");
        for variant in [Variant::Cpu, Variant::Gpu] {
            let mut gpu = gpu.clone();
            gpu.target = gpu.target.clone().with_variant(variant);
            for dtype in dtypes(&gpu) {
                let ctx = Ctx::new(&gpu, dtype);
                for (i, (name, [hidden, skip, out])) in
                    up_resnets(&boc, layers_per_block).into_iter().enumerate()
                {
                    let w = weights.pp(&name);
                    let temb_channels = w.shape("time_emb_proj.weight").expect("temb")[1];
                    let block = ResnetBlock2D::load_concat(
                        ctx,
                        &w,
                        [hidden, skip],
                        out,
                        Some(temb_channels),
                        groups,
                        eps,
                    )
                    .expect("load folded");
                    let whole = layers::conv2d(ctx, &w.pp("conv_shortcut"), hidden + skip, out, 1)
                        .expect("whole conv_shortcut");
                    let (b, hh, ww) = (2, 3 + i % 3, 5 - i % 2);
                    let mut rng = Rng::new(17 + i as u64);
                    let h = quantize(&rng.vec(b * hh * ww * hidden, 2.0), dtype);
                    let s = quantize(&rng.vec(b * hh * ww * skip, 1.5), dtype);
                    let t = quantize(&rng.vec(b * temb_channels, 1.0), dtype);
                    let shapes = [[b, hh, ww, hidden], [b, hh, ww, skip]];
                    let run = |fused| {
                        run_resnet(&gpu, &block, &whole, [&h, &s], &t, shapes, dtype, fused)
                    };
                    let (folded, unfused) = (run(true), run(false));
                    let scale = max_abs(&unfused).max(1.0);
                    let err = max_abs_diff(&folded, &unfused) / scale;
                    let tol = if dtype == DType::F32 { 1e-6 } else { 4e-3 };
                    eprintln!(
                        "{model} {name} {} {}: folded vs unfused {err:.2e}",
                        variant.name(),
                        dtype.name()
                    );
                    assert!(err <= tol, "{model} {name} {variant:?} {dtype:?}: {err}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 2 * (4 + 9 + 6), "{checked} resnets checked");
}
