//! SDXL's models vs diffusers/transformers on tiny-sdxl (tools/golden/sdxl_golden.py):
//! the `text_time` UNet (DownBlock2D at the top level, transformer_layers_per_block (1, 1, 2),
//! legacy attention_head_dim = heads, linear projections) with probes at every block boundary and
//! at `add_embedding`; CLIPTextModel (hidden_states) and CLIPTextModelWithProjection (gelu,
//! hidden_states, pooled `text_embeds` at argmax(ids) for eos_token_id 2). Weights are f16 on disk;
//! goldens are computed in f32 from those values.
//! Tolerance (max abs error ÷ max(1, max |golden|)): f32 1e-4; f16 storage 1e-2.

mod common;

use common::golden::{compare_outputs, fixture, Golden};
use common::*;
use stipple::models::clip::ClipTextModel;
use stipple::models::unet_2d_condition::UNet2DConditionModel;
use stipple::models::Ctx;
use stipple::{DType, Plan};

fn golden() -> Golden {
    Golden::open(fixture("tiny-sdxl").join("golden_models.safetensors"))
}

fn tol(dtype: DType) -> f32 {
    if dtype == DType::F32 {
        1e-4
    } else {
        1e-2
    }
}

fn check_unet(dtype: DType) {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-sdxl");
    let unet = UNet2DConditionModel::from_dir(Ctx::new(&gpu, dtype), &dir.join("unet"))
        .expect("load unet");
    let t = unet.text_time().expect("text_time config");
    assert_eq!((t.addition_time_embed_dim, t.text_embeds_dim), (8, 12));
    let golden = golden();
    let (shape, sample) = golden.nhwc("unet.sample");
    let (_, timestep) = golden.f32("unet.timestep");
    let (ctx_shape, context) = golden.f32("unet.encoder_hidden_states");
    let (_, text_embeds) = golden.f32("unet.text_embeds");
    let (_, time_ids) = golden.f32("unet.time_ids");
    let g = unet
        .graph(dtype, shape[0], [shape[1], shape[2]], ctx_shape[1], true)
        .expect("graph");
    let names = golden.names();
    let mut pairs: Vec<(String, String)> = g
        .output_names()
        .filter(|n| n.starts_with("probe."))
        .map(|n| (n.to_string(), format!("unet.{n}")))
        .filter(|(_, golden_name)| names.contains(golden_name))
        .collect();
    assert!(
        pairs.iter().any(|(n, _)| n == "probe.add_embedding") && pairs.len() >= 10,
        "probes {pairs:?}"
    );
    pairs.push(("out".into(), "unet.out".into()));
    let plan = Plan::new(&gpu, g).expect("plan");
    plan.write_input("sample", &sample).expect("sample");
    plan.write_input("timestep", &timestep).expect("timestep");
    plan.write_input("encoder_hidden_states", &context)
        .expect("context");
    plan.write_input("text_embeds", &text_embeds).expect("text");
    plan.write_input("time_ids", &time_ids).expect("time ids");
    plan.run().expect("run");
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let report = compare_outputs(
        &format!("tiny-sdxl unet {}", dtype.name()),
        &plan,
        &golden,
        &pairs,
        tol(dtype),
    );
    eprintln!(
        "tiny-sdxl unet {}: out relative error {:.3e}",
        dtype.name(),
        report.last().map_or(0.0, |r| r.1)
    );
}

fn check_text_encoder(dtype: DType, folder: &str, key: &str) {
    let Some(gpu) = gpu() else { return };
    let clip = ClipTextModel::from_dir(Ctx::new(&gpu, dtype), &fixture("tiny-sdxl").join(folder))
        .expect("load text encoder");
    let golden = golden();
    let (shape, ids) = golden.i64(&format!("{key}.input_ids"));
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let embeds = clip.embed_tokens(&ids).expect("embed");
    let plan = Plan::new(&gpu, clip.graph(dtype, shape[0], true).expect("graph")).expect("plan");
    plan.write_input("inputs_embeds", &embeds).expect("write");
    plan.run().expect("run");
    let layers = clip.config.num_hidden_layers;
    let names: Vec<(String, String)> = (0..=layers)
        .map(|i| format!("hidden_states.{i}"))
        .chain(["last_hidden_state".to_string()])
        .map(|n| (n.clone(), format!("{key}.{n}")))
        .collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let what = format!("tiny-sdxl {folder} {}", dtype.name());
    compare_outputs(&what, &plan, &golden, &pairs, tol(dtype));
    if key == "te2" {
        assert!(clip.has_projection());
        // eos_token_id 2 (legacy): pooled at argmax(ids), the first 49407 ("!" pads with 0).
        let eos = clip.eos_positions(&ids);
        for (row, &p) in eos.iter().enumerate() {
            assert_eq!(ids[row * 77 + p], 49407, "row {row}");
        }
        let pooled = clip.pool(&ids, &plan.read_output("projected").expect("projected"));
        let (_, want) = golden.f32("te2.text_embeds");
        assert_close(
            &format!("{what} text_embeds"),
            &pooled,
            &want,
            tol(dtype),
            tol(dtype),
        );
    } else {
        assert!(!clip.has_projection());
    }
}

#[test]
fn tiny_sdxl_unet_f32() {
    check_unet(DType::F32);
}

#[test]
fn tiny_sdxl_unet_f16() {
    if gpu().is_some_and(|g| g.supports_f16()) {
        check_unet(DType::F16);
    }
}

#[test]
fn tiny_sdxl_text_encoders() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check_text_encoder(dtype, "text_encoder", "te");
        check_text_encoder(dtype, "text_encoder_2", "te2");
    }
}

#[test]
fn a_text_time_unet_without_its_inputs_is_an_error() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-sdxl");
    let unet = UNet2DConditionModel::from_dir(Ctx::new(&gpu, DType::F32), &dir.join("unet"))
        .expect("load unet");
    // The weights are laid out for the device's target: the graph is built for it too.
    let mut g = stipple::Graph::for_target(DType::F32, &gpu.target);
    let sample = g.input("sample", &[1, 8, 12, 4]).expect("input");
    let t = g
        .input_with_dtype("timestep", &[1], DType::F32)
        .expect("input");
    let c = g.input("context", &[1, 77, 20]).expect("input");
    let err = unet.forward(&mut g, sample, t, c).unwrap_err().to_string();
    assert!(err.contains("text_time"), "{err}");
}

/// Full-size SDXL base (diffusers config, placeholder weights: shapes only) builds its UNet and
/// text encoder graphs at 1024×1024, batch 2 (CFG): the per-block heads, transformer depths
/// (1, 2, 10), 2048-wide context and 2816-wide add_embedding all fit together. Prints the planned
/// activation peaks.
#[test]
fn full_size_sdxl_graphs_build() {
    use stipple::models::config::{ClipTextConfig, UNet2DConditionConfig};
    use stipple::weights::Weights;
    let Some(gpu) = gpu() else { return };
    let empty = Weights::empty("(placeholder weights)");
    let w = empty.root();
    let ctx = Ctx::placeholders(&gpu, DType::F16);
    let unet = UNet2DConditionModel::load(ctx, &w, UNet2DConditionConfig::stable_diffusion_xl())
        .expect("unet");
    let g = unet
        .graph(DType::F16, 2, [128, 128], 77, false)
        .expect("graph");
    let out = g.output_names().collect::<Vec<_>>();
    assert_eq!(out, ["out"]);
    let peak = g.memory().activation_peak();
    eprintln!(
        "SDXL UNet f16 1024x1024 batch 2: planned activation peak {} MiB",
        peak >> 20
    );
    let te2 = ClipTextModel::load_with_projection(ctx, &w, ClipTextConfig::clip_vit_bigg14(), true)
        .expect("text_encoder_2");
    let g = te2
        .prompt_graph(
            DType::F16,
            2,
            &[stipple::models::clip::PromptEmbeds::HiddenState(31)],
        )
        .expect("graph");
    assert!(g.output_names().any(|n| n == "projected"));
    eprintln!(
        "SDXL text_encoder_2 f16 batch 2: planned activation peak {} MiB",
        g.memory().activation_peak() >> 20
    );
}
