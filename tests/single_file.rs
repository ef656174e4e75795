//! Single-file (LDM / A1111 layout) checkpoints, made at test time from the tiny fixtures with
//! `stipple::weights::single_file::convert` (the table the loader uses, run in reverse).
//!
//! - folder → file → folder gives bit-identical tensors (tiny-sd1, tiny-sd2, tiny-pipe), and
//!   the file holds the LDM names and shapes (OpenCLIP's fused q/k/v, 1×1-conv VAE attention);
//! - through `Pipeline`, the single file gives the same image as its folder (bit-identical:
//!   the same bytes reach the same kernels), for an SD1-layout and an SD2-layout (OpenCLIP)
//!   tiny pipe, and so does the round-tripped folder;
//! - refusals with their messages and no output file: pickles, half an SDXL, unknown,
//!   truncated, a missing block (named by its LDM key).
//!
//! tiny-sd1/tiny-sd2 have 1000-token text encoders (the CLIP tokenizer's EOS is 49407), so
//! images are made with tiny-pipe (full vocabulary); the SD2 variant is tiny-pipe with its text
//! encoder's `hidden_act` set to `gelu` and v-prediction, which selects the OpenCLIP layout.

mod common;

use std::path::{Path, PathBuf};

use common::golden::fixture;
use common::*;
use stipple::pipeline::{GenerateOptions, Pipeline, SingleFileOptions};
use stipple::weights::single_file::convert::{folder_to_single_file, single_file_to_folder};
use stipple::weights::single_file::write::{write_safetensors, OutTensor};
use stipple::weights::single_file::{Family, LdmCheckpoint};
use stipple::weights::Weights;
use stipple::DType;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Sets `key` in a JSON file.
fn edit_json(path: &Path, key: &str, value: serde_json::Value) {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json[key] = value;
    std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// tiny-pipe with an OpenCLIP-style (SD2) text encoder and v-prediction.
fn tiny_pipe_sd2(dir: &Path) -> PathBuf {
    let folder = dir.join("tiny-pipe-sd2");
    copy_dir(&fixture("tiny-pipe"), &folder);
    edit_json(
        &folder.join("text_encoder/config.json"),
        "hidden_act",
        "gelu".into(),
    );
    edit_json(
        &folder.join("scheduler/scheduler_config.json"),
        "prediction_type",
        "v_prediction".into(),
    );
    folder
}

#[test]
fn folder_to_file_to_folder_is_bit_identical() {
    let dir = scratch("single-roundtrip");
    let sd2_pipe = tiny_pipe_sd2(&dir);
    for (name, folder, family) in [
        ("tiny-sd1", fixture("tiny-sd1"), Family::Sd1),
        ("tiny-sd2", fixture("tiny-sd2"), Family::Sd2V),
        ("tiny-pipe", fixture("tiny-pipe"), Family::Sd1),
        ("tiny-pipe-sd2", sd2_pipe.clone(), Family::Sd2V),
    ] {
        let file = dir.join(format!("{name}.safetensors"));
        folder_to_single_file(&folder, &file, None).unwrap();
        let ckpt = LdmCheckpoint::open(&file).unwrap();
        assert_eq!(ckpt.family, family, "{name}");
        let back = dir.join(format!("{name}-back"));
        single_file_to_folder(&file, &back, Some(&folder), None).unwrap();
        let (a, b) = (folder_tensors(&folder), folder_tensors(&back));
        let names = |v: &[(String, String, Vec<usize>, Vec<u8>)]| {
            v.iter()
                .map(|t| t.0.clone())
                .filter(|n| !(family != Family::Sd1 && n.ends_with("position_ids")))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b), "{name}: tensor names");
        for t in &b {
            let orig = a.iter().find(|o| o.0 == t.0).unwrap();
            assert!(orig == t, "{name}: {} differs after the round trip", t.0);
        }
    }
}

#[test]
fn the_file_holds_ldm_names_and_shapes() {
    let dir = scratch("single-names");
    let file = dir.join("sd2.safetensors");
    folder_to_single_file(&fixture("tiny-sd2"), &file, None).unwrap();
    let w = Weights::open(&file).unwrap();
    let shape = |n: &str| w.root().shape(n).unwrap_or_else(|e| panic!("{e}"));
    // hidden 24: q, k, v fused by rows.
    assert_eq!(
        shape("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"),
        vec![72, 24]
    );
    assert_eq!(
        shape("cond_stage_model.model.transformer.resblocks.2.attn.in_proj_bias"),
        vec![72]
    );
    assert_eq!(
        shape("cond_stage_model.model.positional_embedding"),
        vec![77, 24]
    );
    assert_eq!(
        shape("first_stage_model.decoder.mid.attn_1.q.weight"),
        vec![16, 16, 1, 1]
    );
    assert!(w.contains("model.diffusion_model.input_blocks.0.0.weight"));
    assert!(w.contains("model.diffusion_model.middle_block.1.proj_in.weight"));
    assert!(w.contains("model.diffusion_model.out.2.bias"));
    assert!(w.contains("first_stage_model.decoder.up.0.block.2.conv1.weight"));
    // q rows of the fused tensor are the folder's q_proj.
    let folder = Weights::open(fixture("tiny-sd2").join("text_encoder")).unwrap();
    let q = folder
        .raw("encoder.layers.1.self_attn.q_proj.weight")
        .unwrap()
        .2;
    let fused = w
        .raw("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight")
        .unwrap()
        .2;
    assert_eq!(&fused[..q.len()], q);
}

fn generate(pipe: &mut Pipeline) -> Vec<f32> {
    let options = GenerateOptions {
        prompt: "a red apple on a wooden table".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        guidance_scale: 7.5,
        seed: 42,
        width: 24,
        height: 16,
        batch: 1,
        scheduler: None,
        latents: None,
        init_image: None,
        ..Default::default()
    };
    pipe.generate(&options, |_, _| stipple::pipeline::Progress::Continue)
        .unwrap()
        .images
}

#[test]
fn single_file_gives_the_same_image_as_its_folder() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("single-image");
    let sd2_pipe = tiny_pipe_sd2(&dir);
    for (name, folder) in [("sd1", fixture("tiny-pipe")), ("sd2", sd2_pipe)] {
        let file = dir.join(format!("{name}.safetensors"));
        folder_to_single_file(&folder, &file, None).unwrap();
        let back = dir.join(format!("{name}-back"));
        single_file_to_folder(&file, &back, Some(&folder), None).unwrap();

        let mut from_folder = Pipeline::load(&gpu, &folder, Some(DType::F32)).unwrap();
        let options = SingleFileOptions {
            config: Some(folder.clone()),
            ..Default::default()
        };
        let (mut from_file, info) =
            Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options).unwrap();
        assert_eq!(info.family.is_sd2(), name == "sd2");
        assert_eq!(
            from_file.scheduler_config.prediction_type,
            from_folder.scheduler_config.prediction_type
        );
        let mut from_back = Pipeline::load(&gpu, &back, Some(DType::F32)).unwrap();
        let want = generate(&mut from_folder);
        let got = generate(&mut from_file);
        assert!(
            want.iter().any(|&v| v > 0.0 && v < 1.0),
            "{name}: a flat image"
        );
        let what = format!("{name}: single file vs folder");
        assert_close(&what, &got, &want, 1e-6, 0.0);
        let back_image = generate(&mut from_back);
        let what = format!("{name}: round-tripped folder vs folder");
        assert_close(&what, &back_image, &want, 1e-6, 0.0);
    }
}

/// The tiny-pipe single file with its tensors edited: `drop` removes names starting with any
/// of the prefixes, `add` appends tensors (name, F32 shape).
fn edited_file(dir: &Path, out: &str, drop: &[&str], add: &[(&str, Vec<usize>)]) -> PathBuf {
    let file = dir.join("base.safetensors");
    if !file.exists() {
        folder_to_single_file(&fixture("tiny-pipe"), &file, None).unwrap();
    }
    let w = Weights::open(&file).unwrap();
    let zeros: Vec<Vec<u8>> = add
        .iter()
        .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
        .collect();
    let mut tensors: Vec<OutTensor> = w
        .names()
        .into_iter()
        .filter(|n| !drop.iter().any(|d| n.starts_with(d)))
        .map(|name| {
            let (dtype, shape, bytes) = w.raw(&name).unwrap();
            OutTensor {
                name,
                dtype,
                shape: shape.to_vec(),
                parts: vec![bytes],
            }
        })
        .collect();
    for ((name, shape), bytes) in add.iter().zip(&zeros) {
        tensors.push(OutTensor {
            name: name.to_string(),
            dtype: stipple::weights::FileDtype::F32,
            shape: shape.clone(),
            parts: vec![bytes],
        });
    }
    let path = dir.join(out);
    write_safetensors(&path, &mut tensors, None).unwrap();
    path
}

fn open_error(path: &Path) -> String {
    match LdmCheckpoint::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_files_are_refused_by_name() {
    let dir = scratch("single-refuse");
    let conv_in = "model.diffusion_model.input_blocks.0.0.weight";
    let inpaint = edited_file(
        &dir,
        "inpaint.safetensors",
        &[conv_in],
        &[(conv_in, vec![16, 9, 3, 3])],
    );
    // Inpainting files (9-channel conv_in) open: tests/pipeline_inpaint.rs generates with one.
    let ckpt = LdmCheckpoint::open(&inpaint).unwrap();
    assert_eq!(ckpt.family, Family::Sd1);
    assert_eq!(
        stipple::weights::single_file::inpainting::unet_in_channels(&ckpt),
        Some(9)
    );

    let sdxl = edited_file(
        &dir,
        "sdxl.safetensors",
        &[],
        &[(
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
            vec![4],
        )],
    );
    // SDXL needs both encoders (tests/sdxl_single_file.rs loads real SDXL files).
    let m = open_error(&sdxl);
    assert!(m.contains("without conditioner.embedders.1.model.*"), "{m}");

    let unknown = edited_file(
        &dir,
        "unknown.safetensors",
        &["model.", "first_stage_model.", "cond_stage_model."],
        &[("encoder.weight", vec![2])],
    );
    let m = open_error(&unknown);
    assert!(m.contains("not a Stable Diffusion checkpoint"), "{m}");
    assert!(m.contains("looked for model.diffusion_model.*"), "{m}");

    let base = dir.join("base.safetensors");
    let bytes = std::fs::read(&base).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let m = open_error(&truncated);
    assert!(m.contains("truncated"), "{m}");

    let json = dir.join("model_index.json");
    std::fs::write(&json, b"{}").unwrap();
    assert!(open_error(&json).contains("not a folder"));

    let ckpt = dir.join("model.ckpt");
    std::fs::write(&ckpt, b"not read").unwrap();
    let m = open_error(&ckpt);
    assert!(
        m.contains("arbitrary code") && m.contains("safetensors"),
        "{m}"
    );
}

#[test]
fn state_dict_prefix_and_ema_copies_load() {
    let dir = scratch("single-prefix");
    let file = dir.join("base.safetensors");
    folder_to_single_file(&fixture("tiny-pipe"), &file, None).unwrap();
    let w = Weights::open(&file).unwrap();
    let names = w.names();
    // Every tensor under `state_dict.`, plus an EMA copy of one UNet tensor with another shape.
    let ema = vec![0u8; 4 * 3];
    let mut tensors: Vec<OutTensor> = names
        .iter()
        .map(|name| {
            let (dtype, shape, bytes) = w.raw(name).unwrap();
            OutTensor {
                name: format!("state_dict.{name}"),
                dtype,
                shape: shape.to_vec(),
                parts: vec![bytes],
            }
        })
        .collect();
    tensors.push(OutTensor {
        name: "model_ema.diffusion_modelout2bias".into(),
        dtype: stipple::weights::FileDtype::F32,
        shape: vec![3],
        parts: vec![&ema],
    });
    let prefixed = dir.join("prefixed.safetensors");
    write_safetensors(&prefixed, &mut tensors, None).unwrap();
    let ckpt = LdmCheckpoint::open(&prefixed).unwrap();
    let mut seen: Vec<&str> = ckpt.tensors().map(|(n, _)| n).collect();
    seen.sort();
    assert_eq!(seen, names.iter().map(String::as_str).collect::<Vec<_>>());

    if let Some(gpu) = gpu() {
        let options = SingleFileOptions {
            config: Some(fixture("tiny-pipe")),
            ..Default::default()
        };
        Pipeline::load_single_file(&gpu, &prefixed, Some(DType::F32), &options).unwrap();
    }
}

#[test]
fn a_missing_block_is_named_by_its_ldm_key() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("single-missing");
    let file = edited_file(
        &dir,
        "missing.safetensors",
        &["model.diffusion_model.middle_block.1."],
        &[],
    );
    let options = SingleFileOptions {
        config: Some(fixture("tiny-pipe")),
        ..Default::default()
    };
    let m = match Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options) {
        Ok(_) => panic!("loaded without its middle block attention"),
        Err(e) => e.to_string(),
    };
    assert!(m.contains("model.diffusion_model.middle_block.1."), "{m}");
    assert!(m.contains("not found"), "{m}");
}

#[test]
fn an_unknown_tensor_is_reported_by_its_ldm_name() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("single-unknown");
    let extra = "model.diffusion_model.label_emb.0.0.weight";
    let file = edited_file(&dir, "extra.safetensors", &[], &[(extra, vec![4, 4])]);
    let options = SingleFileOptions {
        config: Some(fixture("tiny-pipe")),
        ..Default::default()
    };
    let m = match Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options) {
        Ok(_) => panic!("loaded with an unknown tensor"),
        Err(e) => e.to_string(),
    };
    assert!(m.contains(extra) && m.contains("never used"), "{m}");
}

#[test]
fn presets_check_shapes_against_the_family() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("single-preset");
    let file = dir.join("tiny.safetensors");
    folder_to_single_file(&fixture("tiny-pipe"), &file, None).unwrap();
    // Without --config the SD1.5 preset is used: tiny shapes are reported, not loaded.
    let m = match Pipeline::load(&gpu, &file, Some(DType::F32)) {
        Ok(_) => panic!("a tiny file loaded with the SD1.5 config"),
        Err(e) => e.to_string(),
    };
    assert!(m.contains("expected shape"), "{m}");
    assert!(
        m.contains("text_model.embeddings.token_embedding.weight"),
        "{m}"
    );
    assert!(m.contains("pass --config DIR"), "{m}");
}

#[test]
fn cli_refusals_leave_no_output_file() {
    let dir = scratch("single-cli");
    let ckpt = dir.join("model.ckpt");
    std::fs::write(&ckpt, b"pickle").unwrap();
    let mut cases = vec![(ckpt, "arbitrary code")];
    if gpu().is_some() {
        let conv_in = "model.diffusion_model.input_blocks.0.0.weight";
        let inpaint = edited_file(
            &dir,
            "inpaint.safetensors",
            &[conv_in],
            &[(conv_in, vec![16, 9, 3, 3])],
        );
        // Loads with SD1.5's configs, in_channels 9 from the file; the tiny shapes do not fit them.
        cases.push((inpaint, "UNet in_channels 9 from the file"));
    }
    let out = dir.join("out.png");
    for (model, expected) in cases {
        let (ok, err) = stipple(&[
            "generate",
            "x",
            "-m",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(!ok && err.contains(expected), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn cli_convert_and_generate_from_a_single_file() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("single-cli-convert");
    let file = dir.join("tiny.safetensors");
    let folder = fixture("tiny-pipe");
    let (ok, err) = stipple(&[
        "convert",
        folder.to_str().unwrap(),
        file.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(ok, "{err}");
    let back = dir.join("back");
    let (ok, err) = stipple(&[
        "convert",
        file.to_str().unwrap(),
        back.to_str().unwrap(),
        "--config",
        folder.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(back.join("model_index.json").is_file());
    let out = dir.join("out.png");
    let (ok, err) = stipple(&[
        "generate",
        "an apple",
        "-m",
        file.to_str().unwrap(),
        "--config",
        folder.to_str().unwrap(),
        "--steps",
        "2",
        "-W",
        "24",
        "-H",
        "16",
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("single file: SD1.x"), "{err}");
    assert!(out.is_file());
}

/// tiny-turbo (an SD-Turbo-style folder: SD2 layout, Euler with trailing spacing) with the
/// shared tokenizer files.
fn turbo_folder(dir: &Path) -> PathBuf {
    let out = dir.join("tiny-turbo");
    common::scratch::copy_dir(&fixture("tiny-turbo"), &out);
    let vocab = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_tokenizer");
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(vocab.join(name), out.join("tokenizer").join(name)).unwrap();
    }
    out
}

/// `--preset sd-turbo` on an SD2.x file: the preset's configs are full size, so on the tiny
/// file its scheduler is checked in place of the folder's (with the folder's tiny model
/// configs), and the preset itself is shown to be applied (full-size shapes expected).
#[test]
fn sd_turbo_preset_scheduler_gives_the_turbo_folders_image() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("single-sd-turbo");
    let folder = turbo_folder(&dir);
    let file = dir.join("tiny-turbo.safetensors");
    folder_to_single_file(&folder, &file, None).unwrap();

    let preset = stipple::weights::single_file::presets::Preset::named(
        "sd-turbo",
        LdmCheckpoint::open(&file).unwrap().family,
    )
    .expect("an SD2.x file takes the sd-turbo preset");
    let config = dir.join("preset-scheduler");
    common::scratch::copy_dir(&folder, &config);
    std::fs::write(
        config.join("scheduler/scheduler_config.json"),
        &preset.scheduler,
    )
    .unwrap();

    let turbo = |pipe: &mut Pipeline| {
        let options = GenerateOptions {
            prompt: "a lighthouse at dusk".into(),
            steps: 1,
            guidance_scale: 0.0,
            seed: 9,
            width: 24,
            height: 16,
            ..Default::default()
        };
        pipe.generate(&options, |_, _| stipple::pipeline::Progress::Continue)
            .unwrap()
            .images
    };
    let mut from_folder = Pipeline::load(&gpu, &folder, Some(DType::F32)).unwrap();
    let options = SingleFileOptions {
        config: Some(config),
        ..Default::default()
    };
    let (mut from_file, _) =
        Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options).unwrap();
    for steps in [1, 2, 4] {
        assert_eq!(
            from_file.scheduler_config.build(steps).unwrap().timesteps(),
            from_folder
                .scheduler_config
                .build(steps)
                .unwrap()
                .timesteps(),
            "{steps} steps"
        );
    }
    let want = turbo(&mut from_folder);
    assert!(want.iter().any(|&v| v > 0.0 && v < 1.0), "a flat image");
    assert_close(
        "sd-turbo preset scheduler vs turbo folder",
        &turbo(&mut from_file),
        &want,
        1e-6,
        0.0,
    );

    // The named preset is accepted for this file and applied: its 1024-wide SD2.1 text encoder
    // does not fit the tiny tensors.
    let options = SingleFileOptions {
        preset: Some("sd-turbo".into()),
        ..Default::default()
    };
    let m = match Pipeline::load_single_file(&gpu, &file, Some(DType::F32), &options) {
        Ok(_) => panic!("a tiny file loaded with SD-Turbo's full-size configs"),
        Err(e) => e.to_string(),
    };
    assert!(
        m.contains("expected shape") && m.contains("sd-turbo"),
        "{m}"
    );
}
