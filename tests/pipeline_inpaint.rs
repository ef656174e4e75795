//! Inpainting vs diffusers' StableDiffusionInpaintPipeline (tools/golden/inpaint_golden.py):
//! a tiny 9-channel inpainting UNet (tiny-pipe with unet/ from tests/fixtures/models/
//! tiny-inpaint) and the latent-blend fallback on tiny-pipe's 4-channel UNet, from the same
//! seed (the pipeline draws the start noise, both VAE samples and euler-a's noise from one
//! torch-compatible generator), plus the mask preprocessing and the errors.
//! Tolerance on the [0, 1] image: f32 max abs error 1e-4, as tests/pipeline.rs.

mod common;

use std::path::PathBuf;

use base64::Engine;
use common::server::{decode_png_base64, Client, ServerProcess};
use serde_json::{json, Value};

use common::golden::{fixture, Golden};
use common::scratch::Scratch;
use common::*;
use stipple::pipeline::{GenerateOptions, InitImage, Mask, Pipeline, Progress, SingleFileOptions};
use stipple::weights::single_file::configs::Configs;
use stipple::weights::single_file::convert::folder_to_single_file;
use stipple::weights::single_file::{inpainting, Family, LdmCheckpoint};
use stipple::DType;

const PROMPT: &str = "a red apple on a wooden table";
const NEGATIVE: &str = "blurry";
const SEED: u64 = 1234;
const TOLERANCE: f32 = 1e-4;

fn golden() -> Golden {
    Golden::open(fixture("tiny-inpaint").join("golden_inpaint.safetensors"))
}

/// A u8 tensor of the golden file: (shape, bytes).
fn u8_tensor(name: &str) -> (Vec<usize>, Vec<u8>) {
    let path = fixture("tiny-inpaint").join("golden_inpaint.safetensors");
    let bytes = std::fs::read(&path).expect("read golden");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse golden");
    let t = st.tensor(name).expect(name);
    (t.shape().to_vec(), t.data().to_vec())
}

fn init_image(strength: f32) -> InitImage {
    let (shape, rgb) = u8_tensor("init_image");
    InitImage {
        width: shape[1],
        height: shape[0],
        pixels: rgb.iter().map(|&u| u as f32 / 255.0 * 2.0 - 1.0).collect(),
        strength,
    }
}

fn mask(name: &str) -> Mask {
    let (shape, rgb) = u8_tensor(name);
    Mask::from_rgb8(shape[1], shape[0], &rgb).expect("mask")
}

/// tiny-pipe with its UNet replaced by the 9-channel inpainting one.
fn inpainting_folder(scratch: &Scratch) -> PathBuf {
    let dir = scratch.copy_of(&fixture("tiny-pipe"), "tiny-inpaint-pipe");
    std::fs::remove_dir_all(dir.join("unet")).expect("remove unet");
    scratch::copy_dir(&fixture("tiny-inpaint").join("unet"), &dir.join("unet"));
    dir
}

fn options(scheduler: &str, strength: f32, mask_name: &str, batch: usize) -> GenerateOptions {
    GenerateOptions {
        prompt: PROMPT.into(),
        negative_prompt: NEGATIVE.into(),
        steps: 6,
        guidance_scale: 7.5,
        seed: SEED,
        width: 24,
        height: 16,
        batch,
        scheduler: Some(scheduler.into()),
        init_image: Some(init_image(strength)),
        mask: Some(mask(mask_name)),
        ..Default::default()
    }
}

/// Runs (golden name, scheduler, strength, mask, batch) on `pipe`; returns the failures.
fn run_all(pipe: &mut Pipeline, runs: &[(&str, &str, f32, &str, usize)]) -> Vec<String> {
    let golden = golden();
    let mut failures = Vec::new();
    for &(name, scheduler, strength, mask_name, batch) in runs {
        let out = pipe
            .generate(&options(scheduler, strength, mask_name, batch), |_, _| {
                Progress::Continue
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, want) = golden.f32(&format!("image.{name}"));
        let err = max_abs_diff(&out.images, &want);
        eprintln!("{name:>18}: max abs error {err:.2e} on the [0, 1] image");
        if err.is_nan() || err > TOLERANCE {
            failures.push(format!("{name}: {err:.3e}"));
        }
    }
    failures
}

#[test]
fn inpainting_unet_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let scratch = Scratch::new("inpaint9");
    let dir = inpainting_folder(&scratch);
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    assert_eq!(pipe.unet.config.in_channels, 9);
    let failures = run_all(
        &mut pipe,
        &[
            ("unet9_ddim", "ddim", 1.0, "mask", 1),
            ("unet9_ddim_s06", "ddim", 0.6, "mask", 1),
            ("unet9_euler_a", "euler-a", 1.0, "mask", 1),
            ("unet9_small_mask", "ddim", 1.0, "mask_small", 1),
            ("unet9_batch2", "ddim", 0.6, "mask", 2),
        ],
    );
    assert!(failures.is_empty(), "off diffusers: {failures:?}");
}

#[test]
fn latent_blend_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let mut pipe = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
    let failures = run_all(
        &mut pipe,
        &[
            ("unet4_ddim_s06", "ddim", 0.6, "mask", 1),
            ("unet4_euler_a", "euler-a", 1.0, "mask", 1),
        ],
    );
    assert!(failures.is_empty(), "off diffusers: {failures:?}");
}

#[test]
fn mask_preprocessing_matches_diffusers() {
    let golden = golden();
    for (run, name) in [("unet9_ddim", "mask"), ("unet9_small_mask", "mask_small")] {
        let (shape, want) = golden.f32(&format!("mask_condition.{run}"));
        assert_eq!(shape, [1, 1, 16, 24]);
        let got = mask(name).condition(24, 16);
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ, 0,
            "{name}: {differ} pixels differ from diffusers' mask"
        );
    }
}

#[test]
fn inpainting_errors_name_what_is_wrong() {
    let Some(gpu) = gpu() else { return };
    let scratch = Scratch::new("inpaint-errors");
    let dir = inpainting_folder(&scratch);
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    let message = |pipe: &mut Pipeline, o: &GenerateOptions| {
        pipe.generate(o, |_, _| Progress::Continue)
            .expect_err("must fail")
            .to_string()
    };
    // A mask without an init image.
    let o = GenerateOptions {
        init_image: None,
        ..options("ddim", 1.0, "mask", 1)
    };
    let m = message(&mut pipe, &o);
    assert!(m.contains("mask") && m.contains("--init-image"), "{m}");
    // An inpainting model without a mask.
    let o = GenerateOptions {
        mask: None,
        ..options("ddim", 1.0, "mask", 1)
    };
    let m = message(&mut pipe, &o);
    assert!(
        m.contains("inpainting model") && m.contains("--mask"),
        "{m}"
    );
    // A mask whose values do not fill its size.
    let mut o = options("ddim", 1.0, "mask", 1);
    o.mask.as_mut().unwrap().values.pop();
    let m = message(&mut pipe, &o);
    assert!(m.contains("mask") && m.contains("16"), "{m}");
}

#[test]
fn cli_inpaints_and_refuses_bad_masks() {
    if gpu().is_none() {
        return;
    }
    let scratch = Scratch::new("inpaint-cli");
    let dir = inpainting_folder(&scratch);
    let (shape, rgb) = u8_tensor("init_image");
    let init = scratch.path().join("init.png");
    image::save_buffer(
        &init,
        &rgb,
        shape[1] as u32,
        shape[0] as u32,
        image::ExtendedColorType::Rgb8,
    )
    .expect("write init");
    let (shape, rgb) = u8_tensor("mask_small");
    let mask_png = scratch.path().join("mask.png");
    image::save_buffer(
        &mask_png,
        &rgb,
        shape[1] as u32,
        shape[0] as u32,
        image::ExtendedColorType::Rgb8,
    )
    .expect("write mask");
    let out = scratch.path().join("out.png");
    let s = |p: &PathBuf| p.display().to_string();
    let base = [
        "generate",
        PROMPT,
        "-m",
        &s(&dir),
        "-W",
        "24",
        "-H",
        "16",
        "--steps",
        "2",
        "--dtype",
        "f32",
        "-o",
        &s(&out),
        "--init-image",
        &s(&init),
    ];
    let (ok, err) = stipple(&[&base[..], &["--mask", &s(&mask_png), "--strength", "1"]].concat());
    assert!(ok, "{err}");
    assert!(out.is_file());
    std::fs::remove_file(&out).expect("remove out");

    // --mask without --init-image: clap names the missing flag.
    let (ok, err) = stipple(&[&base[..14], &["--mask", &s(&mask_png)]].concat());
    assert!(!ok && err.contains("--init-image"), "{err}");
    // A mask file that is not an image: the error names it, and nothing is written.
    let not_png = scratch.path().join("mask.txt");
    std::fs::write(&not_png, "not an image").expect("write");
    let (ok, err) = stipple(&[&base[..], &["--mask", &s(&not_png)]].concat());
    assert!(!ok && err.contains("mask.txt"), "{err}");
    // The inpainting model without --mask.
    let (ok, err) = stipple(&base);
    assert!(!ok && err.contains("--mask"), "{err}");
    assert!(!out.exists(), "no output after a failure");
}

/// A u8 image of the golden file as a base64 PNG.
fn png_base64(name: &str) -> String {
    let (shape, rgb) = u8_tensor(name);
    let mut png = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut png),
        &rgb,
        shape[1] as u32,
        shape[0] as u32,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .expect("encode png");
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[test]
fn a1111_img2img_inpaints_over_http() {
    let Some(server) = ServerProcess::start(&[]) else {
        return;
    };
    let client = Client::new(&server.url);
    let request = |extra: Value| {
        let mut body = json!({
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": 6, "cfg_scale": 7.5,
            "seed": SEED, "sampler_name": "DDIM", "denoising_strength": 0.6,
            "init_images": [png_base64("init_image")], "mask": png_base64("mask"),
            "mask_blur": 0, "inpainting_fill": 1,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        client.post("/sdapi/v1/img2img", &body)
    };
    // tiny-pipe has a 4-channel UNet: the latent blend, as diffusers' unet4_ddim_s06 run.
    let reply = request(json!({}));
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(
        body["parameters"]["mask"],
        Value::Null,
        "the echo drops the mask"
    );
    let png = decode_png_base64(body["images"][0].as_str().unwrap());
    assert_eq!((png.width, png.height), (24, 16));
    let (_, want) = golden().f32("image.unet4_ddim_s06");
    let off = png
        .rgb
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f32 - w * 255.0).abs())
        .fold(0.0f32, f32::max);
    assert!(off <= 0.5 + 1e-2, "PNG off diffusers by {off} levels");

    // Inverted, the other part is repainted: a different image.
    let inverted = request(json!({"inpainting_mask_invert": 1}));
    assert_eq!(inverted.status, 200, "{}", inverted.text);
    let other = decode_png_base64(inverted.json()["images"][0].as_str().unwrap());
    assert_ne!(other.rgb, png.rgb);

    // Bad fields are 422s naming them.
    for (extra, field) in [
        (json!({"mask": "@@@"}), "mask"),
        (json!({"mask_blur": -2}), "mask_blur"),
        (
            json!({"inpainting_mask_invert": "yes"}),
            "inpainting_mask_invert",
        ),
    ] {
        let reply = request(extra);
        assert_eq!(reply.status, 422, "{}", reply.text);
        assert_eq!(reply.json()["field"], field, "{}", reply.text);
    }
}

#[test]
fn inpainting_single_file_loads_and_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let scratch = Scratch::new("inpaint-single");
    let folder = inpainting_folder(&scratch);
    let file = scratch.path().join("inpaint.safetensors");
    folder_to_single_file(&folder, &file, None).expect("write single file");
    // The SD1.x preset (SD1.5's configs, in_channels from the file): tiny shapes need the
    // folder's configs, as `--config DIR` gives them.
    let single = SingleFileOptions {
        config: Some(folder.clone()),
        ..Default::default()
    };
    let configs = Configs::resolve(Family::Sd1, None).expect("preset");
    assert_eq!(configs.unet.in_channels, 4);
    let ckpt = LdmCheckpoint::open(&file).expect("open");
    let mut adapted = configs.clone();
    inpainting::adapt(&mut adapted, &ckpt).expect("adapt");
    assert_eq!(adapted.unet.in_channels, 9);
    assert!(adapted.texts[0].contains("\"in_channels\": 9"));
    let options = stipple::pipeline::LoadOptions {
        dtype: Some(DType::F32),
        config: single.config,
        ..Default::default()
    };
    let (mut pipe, _) = Pipeline::load_with(&gpu, &file, &options).expect("load single file");
    assert_eq!(pipe.unet.config.in_channels, 9);
    let failures = run_all(&mut pipe, &[("unet9_ddim", "ddim", 1.0, "mask", 1)]);
    assert!(failures.is_empty(), "off diffusers: {failures:?}");
}
