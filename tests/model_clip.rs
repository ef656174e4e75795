//! CLIPTextModel vs transformers on the tiny SD1-like (quick_gelu, weights with the
//! `text_model.` prefix) and SD2-like (gelu, 3 layers, f16 weights, no prefix) text encoders;
//! every layer's hidden state is a probe. Tolerance (max abs error ÷ max(1, max |golden|)):
//! f32 1e-4; f16 storage 1e-2.

mod common;

use common::golden::{compare_outputs, fixture, Golden};
use common::*;
use stipple::models::clip::ClipTextModel;
use stipple::models::Ctx;
use stipple::{DType, Plan};

fn check(model: &str, dtype: DType) {
    let Some(gpu) = gpu() else { return };
    let dir = fixture(model);
    let clip = ClipTextModel::from_dir(Ctx::new(&gpu, dtype), &dir.join("text_encoder"))
        .expect("load text encoder");
    let golden = Golden::open(dir.join("golden_text_encoder.safetensors"));
    let (shape, ids) = golden.i64("input_ids");
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let embeds = clip.embed_tokens(&ids).expect("embed");
    let g = clip.graph(dtype, shape[0], true).expect("graph");
    let plan = Plan::new(&gpu, g).expect("plan");
    plan.write_input("inputs_embeds", &embeds).expect("write");
    plan.run().expect("run");
    let layers = clip.config.num_hidden_layers;
    let names: Vec<String> = (0..=layers)
        .map(|i| format!("hidden_states.{i}"))
        .chain(["last_hidden_state".to_string()])
        .collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), n.as_str())).collect();
    let tol = if dtype == DType::F32 { 1e-4 } else { 1e-2 };
    compare_outputs(
        &format!("{model} text encoder {}", dtype.name()),
        &plan,
        &golden,
        &pairs,
        tol,
    );
}

#[test]
fn tiny_sd1_text_encoder() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check("tiny-sd1", dtype);
    }
}

#[test]
fn tiny_sd2_text_encoder() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check("tiny-sd2", dtype);
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_errors() {
    let Some(gpu) = gpu() else { return };
    let ctx = Ctx::new(&gpu, DType::F32);
    let clip =
        ClipTextModel::from_dir(ctx, &fixture("tiny-sd1").join("text_encoder")).expect("load");
    let err = clip.embed_tokens(&[1, 2, 49407]).unwrap_err().to_string();
    assert!(err.contains("49407") && err.contains("1000"), "{err}");
}
