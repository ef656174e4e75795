//! SDXL single files (LDM layout: `conditioner.embedders.0/1`, `label_emb`), LoRA on single
//! files, and per-component dtypes. The SDXL files are made at test time from tiny-sdxl with
//! `stipple::weights::single_file::convert` (the loader's tables in reverse):
//!
//! - tiny-sdxl → file holds the LDM names and layouts (CLIP-L under `embedders.0.transformer`,
//!   bigG under `embedders.1.model` with fused q/k/v and the transposed `text_projection`,
//!   `label_emb.0.{0,2}`), is detected as SDXL, and file → folder gives back every tensor of
//!   tiny-sdxl bit for bit;
//! - the file gives the same image as the folder (≤ 1e-6; both also match diffusers' golden
//!   within 1e-4), for SDXL base-style and Turbo-style runs;
//! - LoRAs on single files: the tiny LoRA fixtures on tiny-pipe's single file give the folder's
//!   images (and diffusers' goldens), and a PEFT LoRA touching the UNet and both SDXL text
//!   encoders gives the folder's image on the SDXL file; `set_loras(&[])` restores the base;
//! - `--text-dtype f16` with an f32 VAE on tiny-sdxl runs, finite and not constant;
//! - `--preset` refusals by message.
//!
//! Slow (`#[ignore]`, documented in docs/single_file.md): a full-size random SDXL single file
//! (`init-random --family sdxl --layout single-file --dtype f16`, ~5 GB) loads and runs one
//! step at 256×256.

mod common;

use std::path::{Path, PathBuf};

use common::golden::{fixture, Golden};
use common::*;
use stipple::lora::Component;
use stipple::pipeline::{GenerateOptions, LoadOptions, Pipeline, Progress, SingleFileOptions};
use stipple::weights::single_file::convert::{folder_to_single_file, single_file_to_folder};
use stipple::weights::single_file::write::{write_safetensors, OutTensor};
use stipple::weights::single_file::{Family, LdmCheckpoint};
use stipple::weights::{FileDtype, Weights};
use stipple::DType;

/// Options of tiny-sdxl's golden runs "euler" and "turbo" (as tests/pipeline_sdxl.rs).
fn sdxl_options(name: &str, latents: Vec<f32>) -> GenerateOptions {
    let mut o = GenerateOptions {
        prompt: "a red apple on a wooden table".into(),
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
    if name == "turbo" {
        o.negative_prompt.clear();
        o.steps = 2;
        o.guidance_scale = 0.0;
        o.scheduler = Some("euler-a".into());
    }
    o
}

fn run_sdxl(pipe: &mut Pipeline, name: &str, latents: &[f32]) -> Vec<f32> {
    use stipple::schedulers::TimestepSpacing;
    pipe.scheduler_config.timestep_spacing = Some(if name == "turbo" {
        TimestepSpacing::Trailing
    } else {
        TimestepSpacing::Leading
    });
    pipe.generate(&sdxl_options(name, latents.to_vec()), |_, _| {
        Progress::Continue
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"))
    .images
}

/// tiny-sdxl as an LDM single file in `dir`.
fn tiny_sdxl_file(dir: &Path) -> PathBuf {
    let file = dir.join("tiny-sdxl.safetensors");
    folder_to_single_file(&fixture("tiny-sdxl"), &file, None).expect("convert");
    file
}

#[test]
fn tiny_sdxl_file_holds_ldm_layout_and_round_trips_bit_identically() {
    let dir = scratch("sdxl-file-layout");
    let file = tiny_sdxl_file(&dir);
    let ckpt = LdmCheckpoint::open(&file).expect("open");
    assert_eq!(ckpt.family, Family::Sdxl);
    let shape = |n: &str| {
        ckpt.shape(n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .to_vec()
    };
    // bigG (hidden 12): fused q/k/v, projection stored (hidden, projection).
    assert_eq!(
        shape("conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight"),
        vec![36, 12]
    );
    assert_eq!(
        shape("conditioner.embedders.1.model.positional_embedding"),
        vec![77, 12]
    );
    assert_eq!(
        shape("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"),
        vec![8]
    );
    // label_emb: 12 pooled + 6 × 8 time-id channels → 4 × 16.
    assert_eq!(
        shape("model.diffusion_model.label_emb.0.0.weight"),
        vec![64, 60]
    );
    assert_eq!(shape("model.diffusion_model.label_emb.0.2.bias"), vec![64]);
    // The transposed projection: file[(i, j)] = folder[(j, i)].
    let folder = Weights::open(fixture("tiny-sdxl").join("text_encoder_2")).unwrap();
    let (_, want) = folder.root().get_any("text_projection.weight").unwrap();
    let w = Weights::open(&file).unwrap();
    let (s, got) = w
        .root()
        .get_any("conditioner.embedders.1.model.text_projection")
        .unwrap();
    assert_eq!(s, vec![12, 12]);
    for i in 0..12 {
        for j in 0..12 {
            assert_eq!(got[i * 12 + j], want[j * 12 + i], "({i}, {j})");
        }
    }
    assert_ne!(
        got, want,
        "a symmetric projection would not test the transpose"
    );

    let back = dir.join("back");
    single_file_to_folder(&file, &back, Some(&fixture("tiny-sdxl")), None).expect("back");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(back.join("model_index.json")).unwrap())
            .unwrap();
    assert_eq!(index["_class_name"], "StableDiffusionXLPipeline");
    assert!(back.join("tokenizer_2/vocab.json").is_file());
    let (want, got) = (folder_tensors(&fixture("tiny-sdxl")), folder_tensors(&back));
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(
            (&w.0, &w.1, &w.2),
            (&g.0, &g.1, &g.2),
            "name, dtype and shape"
        );
        assert!(w.3 == g.3, "{}: bytes differ", w.0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tiny_sdxl_single_file_gives_the_folders_image() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("sdxl-file-image");
    let file = tiny_sdxl_file(&dir);
    let golden = Golden::open(fixture("tiny-sdxl").join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    let mut folder = Pipeline::load(&gpu, &fixture("tiny-sdxl"), Some(DType::F32)).unwrap();
    let options = SingleFileOptions {
        config: Some(fixture("tiny-sdxl")),
        ..Default::default()
    };
    let (mut single, info) =
        Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options).unwrap();
    assert_eq!(info.family, Family::Sdxl);
    assert_eq!(single.family, stipple::pipeline::Family::StableDiffusionXL);
    assert!(single.force_zeros_for_empty_prompt);
    for name in ["euler", "turbo"] {
        let want = run_sdxl(&mut folder, name, &latents);
        let got = run_sdxl(&mut single, name, &latents);
        assert_close(&format!("{name}: file vs folder"), &got, &want, 1e-6, 0.0);
        let (_, diffusers) = golden.f32(&format!("{name}.image"));
        let err = max_abs_diff(&got, &diffusers);
        eprintln!("tiny-sdxl single file {name}: max abs error vs diffusers {err:.3e}");
        assert!(err <= 1e-4, "{name}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn lora(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lora")
        .join(format!("{name}.safetensors"))
}

/// tests/lora.rs's options for the golden LoRA runs on tiny-pipe.
fn lora_options(latents: Vec<f32>) -> GenerateOptions {
    GenerateOptions {
        prompt: "a red apple on a wooden table".into(),
        negative_prompt: "blurry".into(),
        steps: 6,
        guidance_scale: 7.5,
        seed: 1234,
        width: 24,
        height: 16,
        scheduler: Some("ddim".into()),
        latents: Some(latents),
        ..Default::default()
    }
}

#[test]
fn loras_on_an_sd1_single_file_match_the_folder_and_diffusers() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("lora-single-file");
    let file = dir.join("tiny-pipe.safetensors");
    folder_to_single_file(&fixture("tiny-pipe"), &file, None).unwrap();
    let golden = Golden::open(lora("golden_lora"));
    let (_, latents) = golden.f32("latents");
    let options = SingleFileOptions {
        config: Some(fixture("tiny-pipe")),
        ..Default::default()
    };
    let (mut single, _) =
        Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options).unwrap();
    let mut folder = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).unwrap();
    let image = |p: &mut Pipeline| {
        p.generate(&lora_options(latents.clone()), |_, _| Progress::Continue)
            .unwrap()
            .images
    };
    let base = image(&mut single);
    for (set, key) in [
        (vec![(lora("kohya_sd1"), 0.8)], "kohya_0.8"),
        (
            vec![(lora("kohya_sd1"), 0.8), (lora("peft_sd1"), 0.6)],
            "kohya_0.8+peft_0.6",
        ),
        (vec![(lora("kohya_sdxl_names"), 1.0)], "sdxl_names_1.0"),
    ] {
        let reports = single
            .set_loras(&set)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(reports.iter().all(|r| r.touched() > 0), "{key}");
        folder.set_loras(&set).unwrap();
        let (got, want) = (image(&mut single), image(&mut folder));
        assert_close(&format!("{key}: file vs folder"), &got, &want, 1e-6, 0.0);
        let (_, diffusers) = golden.f32(&format!("image.{key}"));
        let err = max_abs_diff(&got, &diffusers);
        eprintln!("LoRA {key} on a single file: max abs error vs diffusers {err:.3e}");
        assert!(err <= 1e-4, "{key}: {err}");
        assert!(
            max_abs_diff(&got, &base) > 1e-3,
            "{key}: the LoRA changed nothing"
        );
    }
    single.set_loras::<&Path>(&[]).unwrap();
    assert_close("LoRAs removed", &image(&mut single), &base, 0.0, 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A PEFT LoRA (rank 2, deterministic values) on one UNet attention projection and the q
/// projections of both tiny-sdxl text encoders.
fn sdxl_peft_lora(path: &Path) {
    let modules = [
        (
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q",
            32,
            32,
        ),
        (
            "text_encoder.text_model.encoder.layers.1.self_attn.q_proj",
            8,
            8,
        ),
        (
            "text_encoder_2.text_model.encoder.layers.1.self_attn.q_proj",
            12,
            12,
        ),
    ];
    let mut rng = Rng::new(7);
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = modules
        .iter()
        .flat_map(|(m, out, inp)| {
            [
                (format!("{m}.lora_A.weight"), vec![2, *inp]),
                (format!("{m}.lora_B.weight"), vec![*out, 2]),
            ]
        })
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let values = rng.vec(n, 0.5);
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let mut tensors: Vec<OutTensor> = data
        .iter()
        .map(|(name, shape, bytes)| OutTensor {
            name: name.clone(),
            dtype: FileDtype::F32,
            shape: shape.clone(),
            parts: vec![bytes],
        })
        .collect();
    write_safetensors(path, &mut tensors, None).unwrap();
}

#[test]
fn a_lora_on_an_sdxl_single_file_matches_the_folder() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("sdxl-lora-file");
    let file = tiny_sdxl_file(&dir);
    let lora_file = dir.join("peft_sdxl.safetensors");
    sdxl_peft_lora(&lora_file);
    let golden = Golden::open(fixture("tiny-sdxl").join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    let options = SingleFileOptions {
        config: Some(fixture("tiny-sdxl")),
        ..Default::default()
    };
    let (mut single, _) =
        Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options).unwrap();
    let mut folder = Pipeline::load(&gpu, &fixture("tiny-sdxl"), Some(DType::F32)).unwrap();
    let base = run_sdxl(&mut single, "euler", &latents);
    let set = [(lora_file.clone(), 1.5)];
    let reports = single.set_loras(&set).expect("LoRA on the file");
    let per: Vec<usize> = [
        Component::Unet,
        Component::TextEncoder,
        Component::TextEncoder2,
    ]
    .iter()
    .map(|c| reports[0].modules.get(c).copied().unwrap_or(0))
    .collect();
    assert_eq!(per, vec![1, 1, 1], "{}", reports[0].summary());
    folder.set_loras(&set).expect("LoRA on the folder");
    let got = run_sdxl(&mut single, "euler", &latents);
    let want = run_sdxl(&mut folder, "euler", &latents);
    assert_close("SDXL LoRA: file vs folder", &got, &want, 1e-6, 0.0);
    assert!(max_abs_diff(&got, &base) > 1e-3, "the LoRA changed nothing");
    single.set_loras::<&Path>(&[]).unwrap();
    let restored = run_sdxl(&mut single, "euler", &latents);
    assert_close("SDXL LoRA removed", &restored, &base, 0.0, 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f16_text_encoders_with_an_f32_vae_run_on_tiny_sdxl() {
    let Some(gpu) = gpu() else { return };
    if !gpu.supports_f16() {
        eprintln!("skipping: no shader-f16 on this adapter");
        return;
    }
    let golden = Golden::open(fixture("tiny-sdxl").join("golden_pipeline.safetensors"));
    let (_, latents) = golden.f32("latents");
    let options = LoadOptions {
        dtype: Some(DType::F32),
        text_dtype: Some(DType::F16),
        vae_dtype: Some(DType::F32),
        ..Default::default()
    };
    let (mut pipe, _) = Pipeline::load_with(&gpu, &fixture("tiny-sdxl"), &options).unwrap();
    assert_eq!(
        (pipe.dtype, pipe.text_dtype, pipe.vae_dtype),
        (DType::F32, DType::F16, DType::F32)
    );
    let image = run_sdxl(&mut pipe, "euler", &latents);
    assert!(image.iter().all(|v| v.is_finite()), "non-finite pixels");
    let (lo, hi) = image
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(hi - lo > 0.05, "a constant image ({lo}..{hi})");
    let (_, want) = golden.f32("euler.image");
    let err = max_abs_diff(&image, &want);
    eprintln!("tiny-sdxl f16 text encoders, f32 UNet and VAE: max abs error {err:.3e}");
    assert!(err <= 3e-2, "{err}");
}

#[test]
fn presets_are_checked_against_the_file() {
    let dir = scratch("sdxl-presets");
    let file = dir.join("tiny-pipe.safetensors");
    folder_to_single_file(&fixture("tiny-pipe"), &file, None).unwrap();
    let model = file.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["-m", model, "--preset", "sdxl-turbo"],
            "sdxl-turbo is for SDXL checkpoints, this file is SD1.x",
        ),
        (vec!["-m", model, "--preset", "sd9"], "known: sd15"),
        (
            vec![
                "-m",
                fixture("tiny-sdxl").to_str().unwrap(),
                "--preset",
                "sdxl",
            ],
            "--preset is for a single-file --model",
        ),
    ] {
        let out = dir.join("out.png");
        let mut all = vec!["generate", "x", "--steps", "1", "-o"];
        all.push(out.to_str().unwrap());
        all.extend(args);
        let (ok, err) = stipple(&all);
        assert!(!ok && err.contains(needle), "{all:?}: {err}");
        assert!(!out.exists(), "{all:?} wrote an image");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Full size: `init-random --family sdxl --layout single-file --dtype f16` (about 6.9 GB of
/// f16 weights on disk, written through a temporary folder), loaded in f16 with the built-in
/// SDXL base configs, one Euler step at 256×256 without guidance. Minutes and ~14 GB of disk
/// on lavapipe:
/// `cargo test --release --test sdxl_single_file -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_size_random_sdxl_single_file_runs_one_step() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("sdxl-full-size");
    let file = dir.join("sdxl.safetensors");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_tokenizer");
    let t = std::time::Instant::now();
    stipple::weights::random_init::write_random_single_file(
        stipple::weights::published_configs::Family::SdxlBase,
        FileDtype::F16,
        &file,
        &tokenizer,
        0,
        &|_, _| {},
    )
    .expect("init-random");
    eprintln!("wrote the file in {:.1}s", t.elapsed().as_secs_f64());
    let dtype = if gpu.supports_f16() {
        DType::F16
    } else {
        DType::F32
    };
    let t = std::time::Instant::now();
    let mut pipe = Pipeline::load(&gpu, &file, Some(dtype)).expect("load");
    eprintln!("loaded ({dtype:?}) in {:.1}s", t.elapsed().as_secs_f64());
    let options = GenerateOptions {
        prompt: "a lighthouse at dusk".into(),
        steps: 1,
        guidance_scale: 0.0,
        width: 256,
        height: 256,
        seed: 1,
        ..Default::default()
    };
    let out = pipe
        .generate(&options, |_, _| Progress::Continue)
        .expect("generate");
    let tm = out.timings;
    eprintln!(
        "text {:.1}s, 1 UNet step {:.1}s, decode {:.1}s",
        tm.text_encode, tm.denoise, tm.decode
    );
    assert_eq!(out.images.len(), 256 * 256 * 3);
    assert!(
        out.images.iter().all(|v| v.is_finite()),
        "non-finite pixels"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
