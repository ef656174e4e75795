//! The SDXL pipeline vs diffusers' StableDiffusionXLPipeline on tiny-sdxl (two text encoders with
//! the full CLIP vocabulary, text_time UNet, f16 weights; tools/golden/sdxl_golden.py), from the
//! same latents and seed: Euler with a negative prompt, with an empty negative prompt
//! (force_zeros_for_empty_prompt: zero negative embeddings), with explicit time ids, and an
//! SDXL-Turbo-style run (Euler a, trailing timesteps, 2 steps, guidance 0: batch-1 UNet), clip
//! skip, img2img, the CLI flags, a swapped-in fp16-fix VAE and the bounded plan cache.
//! Tolerance on the [0, 1] image: f32 max abs error 1e-4; f16 storage 3e-2 (the VAE decodes in
//! f32 there: force_upcast).

mod common;

use common::golden::{fixture, Golden};
use common::*;
use stipple::pipeline::{Family, GenerateOptions, Pipeline, Progress, SizeConditioning};
use stipple::schedulers::TimestepSpacing;
use stipple::DType;

const PROMPT: &str = "a red apple on a wooden table";

/// The options of golden run `name` (see sdxl_golden.py's RUNS).
fn options(name: &str, latents: Vec<f32>) -> GenerateOptions {
    let mut o = GenerateOptions {
        prompt: PROMPT.into(),
        negative_prompt: "blurry".into(),
        steps: 5,
        guidance_scale: 5.0,
        seed: 1234,
        width: 24,
        height: 16,
        scheduler: Some("euler".into()),
        latents: Some(latents),
        ..Default::default()
    };
    match name {
        "euler" => {}
        "euler_empty_negative" => o.negative_prompt.clear(),
        "euler_time_ids" => {
            o.size_conditioning = SizeConditioning {
                original_size: Some([32, 40]),
                crops_coords_top_left: [4, 2],
                target_size: Some([24, 16]),
            }
        }
        "euler_clip_skip" => o.clip_skip = Some(1),
        "turbo" => {
            o.negative_prompt.clear();
            o.steps = 2;
            o.guidance_scale = 0.0;
            o.scheduler = Some("euler-a".into());
        }
        _ => unreachable!("{name}"),
    }
    o
}

fn run(pipe: &mut Pipeline, name: &str, latents: &[f32]) -> Vec<f32> {
    // SDXL-Turbo's scheduler config has trailing timesteps; tiny-sdxl's is SDXL base's (leading).
    pipe.scheduler_config.timestep_spacing = Some(if name == "turbo" {
        TimestepSpacing::Trailing
    } else {
        TimestepSpacing::Leading
    });
    pipe.generate(&options(name, latents.to_vec()), |_, _| Progress::Continue)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .images
}

const RUNS: [&str; 5] = [
    "euler",
    "euler_empty_negative",
    "euler_time_ids",
    "euler_clip_skip",
    "turbo",
];

#[test]
fn sdxl_runs_match_diffusers_f32() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-sdxl");
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    assert_eq!(pipe.family, Family::StableDiffusionXL);
    assert!(pipe.force_zeros_for_empty_prompt);
    assert_eq!(pipe.vae.config.scaling_factor, 0.13025);
    let golden = Golden::open(dir.join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    let mut failures = Vec::new();
    for name in RUNS {
        let got = run(&mut pipe, name, &latents);
        let (_, want) = golden.f32(&format!("{name}.image"));
        let err = max_abs_diff(&got, &want);
        eprintln!("tiny-sdxl {name} f32: image max abs error {err:.3e}");
        if err.is_nan() || err > 1e-4 {
            failures.push(format!("{name}: {err:.3e}"));
        }
    }
    assert!(failures.is_empty(), "mismatches: {failures:?}");
}

#[test]
fn sdxl_f16_decodes_in_f32_and_stays_finite() {
    let Some(gpu) = gpu() else { return };
    if !gpu.supports_f16() {
        return;
    }
    let dir = fixture("tiny-sdxl");
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F16)).expect("load");
    assert_eq!(pipe.dtype, DType::F16);
    assert_eq!(pipe.vae_dtype, DType::F32, "force_upcast");
    let golden = Golden::open(dir.join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    for name in ["euler", "turbo"] {
        let got = run(&mut pipe, name, &latents);
        assert!(got.iter().all(|v| v.is_finite()), "{name}: non-finite");
        let (lo, hi) = got
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo > 0.1, "{name}: constant image [{lo}, {hi}]");
        let (_, want) = golden.f32(&format!("{name}.image"));
        let err = max_abs_diff(&got, &want);
        eprintln!("tiny-sdxl {name} f16: image max abs error {err:.3e}");
        assert!(err <= 3e-2, "{name} f16: {err:.3e}");
    }
}

/// StableDiffusionXLImg2ImgPipeline (time ids without aesthetic score): the VAE encodes the init
/// image (in f32 under force_upcast), samples its latent distribution and noises it to the first
/// kept timestep, from the same generator as diffusers.
#[test]
fn sdxl_img2img_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-sdxl");
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    let bytes = std::fs::read(dir.join("golden_pipeline.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let pixels: Vec<f32> = st
        .tensor("init_image")
        .expect("init_image")
        .data()
        .iter()
        .map(|&u| u as f32 / 255.0 * 2.0 - 1.0)
        .collect();
    let options = GenerateOptions {
        latents: None,
        init_image: Some(stipple::pipeline::InitImage {
            width: 24,
            height: 16,
            pixels,
            strength: 0.6,
        }),
        ..options("euler", Vec::new())
    };
    pipe.scheduler_config.timestep_spacing = Some(TimestepSpacing::Leading);
    let got = pipe
        .generate(&options, |_, _| Progress::Continue)
        .expect("img2img")
        .images;
    let golden = Golden::open(dir.join("golden_pipeline.safetensors"));
    let (_, want) = golden.f32("img2img.image");
    let err = max_abs_diff(&got, &want);
    eprintln!("tiny-sdxl img2img f32: image max abs error {err:.3e}");
    assert!(err <= 1e-4, "{err:.3e}");
}

/// A copy of tiny-sdxl's VAE folder with `edit` applied to its config.
fn vae_copy(name: &str, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stipple-sdxl-vae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let src = fixture("tiny-sdxl").join("vae");
    std::fs::copy(
        src.join("diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .expect("copy weights");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("read"))
            .expect("json");
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    dir
}

#[test]
fn set_vae_swaps_in_an_fp16_fix_vae() {
    let Some(gpu) = gpu() else { return };
    if !gpu.supports_f16() {
        return;
    }
    let mut pipe = Pipeline::load(&gpu, &fixture("tiny-sdxl"), Some(DType::F16)).expect("load");
    assert_eq!(pipe.vae_dtype, DType::F32);
    let fixed = vae_copy("fix", |c| c["force_upcast"] = false.into());
    pipe.set_vae(&fixed).expect("set_vae");
    assert_eq!(pipe.vae_dtype, DType::F16, "fp16-fix VAE decodes in f16");
    let golden = Golden::open(fixture("tiny-sdxl").join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    let got = run(&mut pipe, "euler", &latents);
    let (_, want) = golden.f32("euler.image");
    let err = max_abs_diff(&got, &want);
    eprintln!("tiny-sdxl euler f16, f16 VAE: image max abs error {err:.3e}");
    assert!(err <= 3e-2, "{err:.3e}");

    let bad = vae_copy("bad", |c| c["latent_channels"] = 8.into());
    let err = pipe.set_vae(&bad).unwrap_err().to_string();
    assert!(
        err.contains("latent_channels") && err.contains("config.json"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(fixed);
    let _ = std::fs::remove_dir_all(bad);
}

/// `stipple generate` on tiny-sdxl with the micro-conditioning flags and the default (empty)
/// negative prompt reproduces diffusers' runs through the CLI.
#[test]
fn cli_time_id_flags_and_empty_negative_match_diffusers() {
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stipple-sdxl-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let model = fixture("tiny-sdxl");
    let golden = Golden::open(model.join("golden_pipeline.safetensors"));
    let (shape, latents) = golden.f32("latents");
    let latents_file = dir.join("latents.safetensors");
    stipple::image_io::write_tensor_safetensors(&latents_file, "latents", &shape, &latents)
        .expect("write latents");
    let runs: [(&str, &[&str]); 2] = [
        (
            "euler_time_ids",
            &[
                "-n",
                "blurry",
                "--original-size",
                "32,40",
                "--crops-coords-top-left",
                "4,2",
                "--target-size",
                "24,16",
            ],
        ),
        ("euler_empty_negative", &[]),
    ];
    for (name, extra) in runs {
        let tensor = dir.join(format!("{name}.safetensors"));
        let png = dir.join(format!("{name}.png"));
        let mut args = vec![
            "generate",
            PROMPT,
            "-m",
            model.to_str().expect("path"),
            "--steps",
            "5",
            "--cfg",
            "5",
            "--seed",
            "1234",
            "--scheduler",
            "euler",
            "--dtype",
            "f32",
            "--latents",
            latents_file.to_str().expect("path"),
            "--save-tensor",
            tensor.to_str().expect("path"),
            "-o",
            png.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stipple"))
            .args(&args)
            .output()
            .expect("run stipple");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        let (_, got) =
            stipple::image_io::read_tensor_safetensors(&tensor, "image").expect("read tensor");
        let (_, want) = golden.f32(&format!("{name}.image"));
        let err = max_abs_diff(&got, &want);
        eprintln!("tiny-sdxl {name} CLI: image max abs error {err:.3e}");
        assert!(err <= 1e-4, "{name}: {err:.3e}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stipple"))
        .args(["generate", "x", "--original-size", "32x40"])
        .output()
        .expect("run stipple");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("original-size"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// With at most one plan per kind, alternating sizes evicts and rebuilds plans (bounded count)
/// and the results stay diffusers' numbers.
#[test]
fn plan_cache_is_bounded_and_rebuilds_evicted_plans() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-sdxl");
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    pipe.set_max_plans(1);
    let golden = Golden::open(dir.join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    let (_, want) = golden.f32("euler.image");
    for round in 0..2 {
        let got = run(&mut pipe, "euler", &latents);
        assert!(max_abs_diff(&got, &want) <= 1e-4, "round {round}");
        let other = GenerateOptions {
            prompt: PROMPT.into(),
            steps: 1,
            width: 16,
            height: 16,
            batch: 2,
            ..Default::default()
        };
        pipe.generate(&other, |_, _| Progress::Continue)
            .expect("other size");
        // text encoder 2 (last used), UNet, decode: one each
        assert!(pipe.plan_count() <= 3, "{} plans", pipe.plan_count());
    }
}

/// `clip_skip` on a Stable Diffusion model (tiny-pipe): the prompt takes
/// final_layer_norm(hidden_states[-2]), the negative prompt keeps last_hidden_state (diffusers'
/// StableDiffusionPipeline; golden in tiny-sdxl/golden_sd_clip_skip.safetensors).
#[test]
fn sd_clip_skip_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let mut pipe = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
    assert_eq!(pipe.family, Family::StableDiffusion);
    let golden = Golden::open(fixture("tiny-sdxl").join("golden_sd_clip_skip.safetensors"));
    let (_, latents) = golden.f32("latents");
    for (name, clip_skip) in [("image", Some(1)), ("image_no_skip", None)] {
        let options = GenerateOptions {
            prompt: PROMPT.into(),
            negative_prompt: "blurry".into(),
            steps: 4,
            seed: 1234,
            width: 24,
            height: 16,
            scheduler: Some("euler".into()),
            latents: Some(latents.clone()),
            clip_skip,
            ..Default::default()
        };
        let got = pipe
            .generate(&options, |_, _| Progress::Continue)
            .expect("generate")
            .images;
        let (_, want) = golden.f32(name);
        let err = max_abs_diff(&got, &want);
        eprintln!("tiny-pipe clip skip {clip_skip:?}: image max abs error {err:.3e}");
        assert!(err <= 1e-4, "{name}: {err:.3e}");
    }
    let options = GenerateOptions {
        prompt: PROMPT.into(),
        steps: 1,
        width: 24,
        height: 16,
        clip_skip: Some(3),
        ..Default::default()
    };
    let err = pipe
        .generate(&options, |_, _| Progress::Continue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("clip skip"), "{err}");
}
