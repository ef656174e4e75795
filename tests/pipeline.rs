//! The whole pipeline vs diffusers' StableDiffusionPipeline on the tiny-pipe model (full CLIP
//! vocabulary, f16 weights) for every scheduler, from the same starting latents and seed (so the
//! ancestral noise of euler-a and lcm comes from the same torch-compatible generator), plus a
//! batch of 2 and img2img. Goldens: tools/golden/pipeline_golden.py.
//! Tolerance on the [0, 1] image: f32 max abs error 1e-4 (seen on lavapipe: ≤ 4.4e-6 for every
//! scheduler, 2.8e-6 img2img); f16 storage 3e-2.

mod common;

use common::golden::{fixture, Golden};
use common::*;
use stipple::pipeline::{GenerateOptions, InitImage, Pipeline, Progress};
use stipple::DType;

const PROMPT: &str = "a red apple on a wooden table";
const NEGATIVE: &str = "blurry";

fn load(gpu: &stipple::Gpu) -> (Pipeline, Golden) {
    let dir = fixture("tiny-pipe");
    let pipe = Pipeline::load(gpu, &dir, Some(DType::F32)).expect("load pipeline");
    (pipe, Golden::open(dir.join("golden_pipeline.safetensors")))
}

fn options(scheduler: &str, latents: Vec<f32>) -> GenerateOptions {
    let lcm = scheduler == "lcm";
    GenerateOptions {
        prompt: PROMPT.into(),
        negative_prompt: NEGATIVE.into(),
        steps: if lcm { 4 } else { 6 },
        guidance_scale: if lcm { 1.0 } else { 7.5 },
        seed: 1234,
        width: 24,
        height: 16,
        batch: 1,
        scheduler: Some(scheduler.into()),
        scheduler_overrides: Default::default(),
        latents: Some(latents),
        init_image: None,
        ..Default::default()
    }
}

#[test]
fn every_scheduler_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let (mut pipe, golden) = load(&gpu);
    let (_, latents) = golden.f32("latents");
    let mut failures = Vec::new();
    for name in [
        "ddim",
        "pndm",
        "euler",
        "euler-a",
        "dpmpp-2m",
        "dpmpp-2m-karras",
        "lcm",
    ] {
        let out = pipe
            .generate(&options(name, latents.clone()), |_, _| Progress::Continue)
            .expect("generate");
        let (_, want) = golden.f32(&format!("image.{name}"));
        let err = max_abs_diff(&out.images, &want);
        eprintln!("{name:>16}: max abs error {err:.2e} on the [0, 1] image");
        if err.is_nan() || err > 1e-4 {
            failures.push(format!("{name}: {err:.3e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "schedulers off diffusers: {failures:?}"
    );
}

#[test]
fn batch_of_two_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let (mut pipe, golden) = load(&gpu);
    let (_, latents) = golden.f32("latents_batch2");
    let opts = GenerateOptions {
        batch: 2,
        ..options("ddim", latents)
    };
    let out = pipe
        .generate(&opts, |_, _| Progress::Continue)
        .expect("generate");
    let (_, want) = golden.f32("image.ddim_batch2");
    let err = max_abs_diff(&out.images, &want);
    eprintln!("ddim batch 2: max abs error {err:.2e}");
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn img2img_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let (mut pipe, golden) = load(&gpu);
    let bytes =
        std::fs::read(fixture("tiny-pipe").join("golden_pipeline.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let init = st.tensor("init_image").expect("init_image");
    let pixels: Vec<f32> = init
        .data()
        .iter()
        .map(|&u| u as f32 / 255.0 * 2.0 - 1.0)
        .collect();
    let opts = GenerateOptions {
        latents: None,
        init_image: Some(InitImage {
            width: 24,
            height: 16,
            pixels,
            strength: 0.6,
        }),
        ..options("ddim", Vec::new())
    };
    let out = pipe
        .generate(&opts, |_, _| Progress::Continue)
        .expect("generate");
    let (_, want) = golden.f32("image.img2img_ddim");
    let err = max_abs_diff(&out.images, &want);
    eprintln!("img2img ddim: max abs error {err:.2e}");
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn cancel_stops_with_a_distinct_error() {
    let Some(gpu) = gpu() else { return };
    let (mut pipe, golden) = load(&gpu);
    let (_, latents) = golden.f32("latents");
    let mut calls = 0;
    let err = pipe
        .generate(&options("euler", latents), |step, _| {
            calls += 1;
            if step == 2 {
                Progress::Cancel
            } else {
                Progress::Continue
            }
        })
        .unwrap_err();
    assert!(matches!(err, stipple::Error::Cancelled), "{err}");
    assert_eq!(calls, 2);
}

#[test]
fn bad_options_are_rejected_before_any_work() {
    let Some(gpu) = gpu() else { return };
    let (mut pipe, _) = load(&gpu);
    let base = GenerateOptions {
        prompt: PROMPT.into(),
        steps: 2,
        width: 24,
        height: 16,
        ..Default::default()
    };
    let cases: Vec<(GenerateOptions, &str)> = vec![
        (
            GenerateOptions {
                steps: 0,
                ..base.clone()
            },
            "steps",
        ),
        (
            GenerateOptions {
                guidance_scale: f32::NAN,
                ..base.clone()
            },
            "guidance",
        ),
        (
            GenerateOptions {
                guidance_scale: -1.0,
                ..base.clone()
            },
            "guidance",
        ),
        (
            GenerateOptions {
                batch: 0,
                ..base.clone()
            },
            "batch",
        ),
        (
            GenerateOptions {
                width: 22,
                ..base.clone()
            },
            "width",
        ),
        (
            GenerateOptions {
                height: 6,
                ..base.clone()
            },
            "height",
        ),
        (
            GenerateOptions {
                latents: Some(vec![0.0; 5]),
                ..base.clone()
            },
            "latents",
        ),
        (
            GenerateOptions {
                scheduler: Some("plms".into()),
                ..base.clone()
            },
            "plms",
        ),
        (
            GenerateOptions {
                init_image: Some(InitImage {
                    width: 24,
                    height: 16,
                    pixels: vec![0.0; 24 * 16 * 3],
                    strength: 1.5,
                }),
                ..base.clone()
            },
            "strength",
        ),
    ];
    for (opts, word) in cases {
        let err = pipe
            .generate(&opts, |_, _| Progress::Continue)
            .expect_err(word)
            .to_string();
        assert!(err.contains(word), "error for {word}: {err}");
    }
}

#[test]
fn f16_storage_stays_close() {
    let Some(gpu) = gpu() else { return };
    if !gpu.supports_f16() {
        return;
    }
    let dir = fixture("tiny-pipe");
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F16)).expect("load pipeline");
    let golden = Golden::open(dir.join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    let out = pipe
        .generate(&options("ddim", latents), |_, _| Progress::Continue)
        .expect("generate");
    let (_, want) = golden.f32("image.ddim");
    let err = max_abs_diff(&out.images, &want);
    eprintln!("ddim f16: max abs error {err:.2e}");
    assert!(err <= 3e-2, "{err}");
}

#[test]
fn decode_falls_back_to_tiles_over_the_binding_limit() {
    // Lower the pipeline's binding limit so the 8×12 latent no longer decodes in one piece but an
    // 8×8 tile does: the image must still come out whole, finite and close to the untiled one
    // (GroupNorm sees each tile separately, so not identical; diffusers' tiled decode is the same).
    let Some(gpu) = gpu() else { return };
    let (mut pipe, golden) = load(&gpu);
    let largest = |pipe: &Pipeline, th, tw| {
        let g = pipe
            .vae
            .decode_graph(DType::F32, 1, [th, tw], false)
            .expect("graph");
        g.largest_value().expect("values").1
    };
    let (full, tile) = (largest(&pipe, 8, 12), largest(&pipe, 8, 8));
    assert!(tile < full, "tile {tile} vs full {full}");
    let (_, latents) = golden.f32("final_latents.ddim");
    let latents = stipple::pipeline::layout::nchw_to_nhwc(&latents, [1, 4, 8, 12]);
    let scaled: Vec<f32> = latents.iter().map(|v| v * 0.18215).collect(); // decode divides by it
    let whole = pipe.decode(&scaled, [1, 8, 12]).expect("decode");
    pipe.binding_limit = tile;
    let tiled = pipe.decode(&scaled, [1, 8, 12]).expect("tiled decode");
    assert_eq!(tiled.len(), whole.len());
    assert!(tiled.iter().all(|v| v.is_finite()));
    let mean_err = tiled
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / whole.len() as f32;
    eprintln!("tiled vs whole decode: mean abs difference {mean_err:.3e}");
    assert!(mean_err < 0.5, "{mean_err}");
    pipe.binding_limit = 16;
    let err = pipe.decode(&scaled, [1, 8, 12]).unwrap_err().to_string();
    assert!(err.contains("max_storage_buffer_binding_size"), "{err}");
}
