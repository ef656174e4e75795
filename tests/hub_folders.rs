//! diffusers folders as the Hub serves them, built from copies of the tiny fixtures in scratch
//! directories: `*.fp16.safetensors` variants (chosen by `--variant`, or automatically when
//! only the variant exists), sharded `*.safetensors.index.json` (variant indexes too),
//! `model_index.json` listing components stipple does not use, pickle-only components (refused,
//! with a conversion command), Python json's `NaN`/`Infinity` in every config, and SD-Turbo: a
//! tiny SD2.1-architecture folder with SD-Turbo's scheduler config, run without guidance in 1,
//! 2 and 4 steps against diffusers (tools/golden/turbo_golden.py).
//!
//! Tolerance for the turbo images (f32, [0, 1] range): max abs error 1e-4, as tests/pipeline.rs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::golden::{fixture, Golden};
use common::scratch::Scratch;
use common::{gpu, max_abs_diff};
use stipple::pipeline::{GenerateOptions, LoadOptions, Pipeline, Progress};
use stipple::DType;

const UNET_FILE: &str = "diffusion_pytorch_model.safetensors";
const TEXT_FILE: &str = "model.safetensors";

fn load(gpu: &stipple::Gpu, dir: &Path, variant: Option<&str>) -> stipple::Result<Vec<String>> {
    let options = LoadOptions {
        dtype: Some(DType::F32),
        variant: variant.map(String::from),
        ..LoadOptions::default()
    };
    Pipeline::load_with(gpu, dir, &options).map(|(_, notes)| notes)
}

fn rename(dir: &Path, from: &str, to: &str) {
    std::fs::rename(dir.join(from), dir.join(to)).expect("rename");
}

/// Splits `dir/file` into two shards named by `shard(k)` plus an index `index_name`, then
/// removes the single file.
fn shard(dir: &Path, file: &str, index_name: &str, shard: impl Fn(usize) -> String) {
    let bytes = std::fs::read(dir.join(file)).expect("read weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = BTreeMap::new();
    for (k, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).expect("tensor")))
            .collect();
        let shard_name = shard(k + 1);
        let data = safetensors::serialize(views, None).expect("serialize");
        std::fs::write(dir.join(&shard_name), data).expect("write shard");
        for n in part {
            weight_map.insert(n.clone(), shard_name.clone());
        }
    }
    let index =
        serde_json::json!({"metadata": {"total_size": bytes.len()}, "weight_map": weight_map});
    std::fs::write(dir.join(index_name), index.to_string()).expect("write index");
    std::fs::remove_file(dir.join(file)).expect("remove single file");
}

/// The adapter (None: skip), a scratch dir and a copy of tiny-sd1 in it.
fn sd1_copy(label: &str) -> Option<(stipple::Gpu, Scratch, PathBuf)> {
    let gpu = gpu()?;
    let scratch = Scratch::new(label);
    let dir = scratch.copy_of(&fixture("tiny-sd1"), "tiny-sd1");
    Some((gpu, scratch, dir))
}

#[test]
fn variant_only_components_load_with_a_note() {
    let Some((gpu, _scratch, dir)) = sd1_copy("hub-variant-only") else {
        return;
    };
    rename(
        &dir.join("unet"),
        UNET_FILE,
        "diffusion_pytorch_model.fp16.safetensors",
    );
    rename(
        &dir.join("text_encoder"),
        TEXT_FILE,
        "model.fp16.safetensors",
    );
    let notes = load(&gpu, &dir, None).expect("variant-only folder loads");
    assert_eq!(notes.len(), 2, "{notes:?}");
    for (note, component) in notes.iter().zip(["text_encoder", "unet"]) {
        assert!(
            note.contains(component) && note.contains("only the fp16 variant"),
            "{note}"
        );
    }
    // Asked for explicitly: a note only for the component without it (vae).
    let notes = load(&gpu, &dir, Some("fp16")).expect("load");
    assert!(
        notes.len() == 1 && notes[0].contains("vae has no fp16 variant"),
        "{notes:?}"
    );
}

#[test]
fn variant_flag_chooses_between_standard_and_variant_files() {
    let Some((gpu, _scratch, dir)) = sd1_copy("hub-variant-choice") else {
        return;
    };
    let unet = dir.join("unet");
    // The real weights under the variant name, a broken standard file beside them.
    rename(&unet, UNET_FILE, "diffusion_pytorch_model.fp16.safetensors");
    std::fs::write(unet.join(UNET_FILE), b"not safetensors").unwrap();
    let notes = load(&gpu, &dir, Some("fp16")).expect("fp16 chosen");
    assert!(!notes.iter().any(|n| n.contains("unet")), "{notes:?}");
    let msg = load(&gpu, &dir, None).unwrap_err().to_string();
    assert!(
        msg.contains(UNET_FILE),
        "standard file chosen without --variant: {msg}"
    );

    // A variant asked for but absent in a component: its standard file, with a note.
    let scratch = Scratch::new("hub-variant-missing");
    let dir = scratch.copy_of(&fixture("tiny-sd1"), "tiny-sd1");
    let notes = load(&gpu, &dir, Some("fp16")).expect("falls back to standard files");
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes.iter().all(|n| n.contains("no fp16 variant")),
        "{notes:?}"
    );

    // Two variants and no standard file: ambiguous, naming both.
    let unet = dir.join("unet");
    std::fs::copy(
        unet.join(UNET_FILE),
        unet.join("diffusion_pytorch_model.bf16.safetensors"),
    )
    .unwrap();
    rename(&unet, UNET_FILE, "diffusion_pytorch_model.fp16.safetensors");
    let msg = load(&gpu, &dir, None).unwrap_err().to_string();
    assert!(
        msg.contains("bf16, fp16") && msg.contains("--variant"),
        "{msg}"
    );
    load(&gpu, &dir, Some("bf16")).expect("bf16 chosen");
}

#[test]
fn sharded_components_and_variant_indexes_load() {
    let Some((gpu, _scratch, dir)) = sd1_copy("hub-sharded") else {
        return;
    };
    // diffusers' names for a sharded UNet, transformers' for a sharded text encoder as fp16
    // variant (`NAME.safetensors.index.fp16.json`).
    shard(
        &dir.join("unet"),
        UNET_FILE,
        "diffusion_pytorch_model.safetensors.index.json",
        |k| format!("diffusion_pytorch_model-0000{k}-of-00002.safetensors"),
    );
    shard(
        &dir.join("text_encoder"),
        TEXT_FILE,
        "model.safetensors.index.fp16.json",
        |k| format!("model-0000{k}-of-00002.fp16.safetensors"),
    );
    // The other spelling of a variant index, `NAME.fp16.safetensors.index.json`.
    shard(
        &dir.join("vae"),
        UNET_FILE,
        "diffusion_pytorch_model.fp16.safetensors.index.json",
        |k| format!("diffusion_pytorch_model-0000{k}-of-00002.fp16.safetensors"),
    );
    let notes = load(&gpu, &dir, None).expect("sharded folder loads");
    assert_eq!(
        notes.len(),
        2,
        "text_encoder and vae variants noted: {notes:?}"
    );
    assert!(load(&gpu, &dir, Some("fp16")).expect("load").len() == 1); // unet has no fp16
}

#[test]
fn unused_components_are_one_info_line() {
    let Some((gpu, _scratch, dir)) = sd1_copy("hub-index") else {
        return;
    };
    assert!(
        load(&gpu, &dir, None).expect("load").is_empty(),
        "null entries are not noted"
    );
    let index = dir.join("model_index.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    json["safety_checker"] =
        serde_json::json!(["stable_diffusion", "StableDiffusionSafetyChecker"]);
    json["feature_extractor"] = serde_json::json!(["transformers", "CLIPImageProcessor"]);
    json["image_encoder"] = serde_json::json!([null, null]);
    json["requires_safety_checker"] = serde_json::json!(true);
    std::fs::write(&index, json.to_string()).unwrap();
    let notes = load(&gpu, &dir, None).expect("extra components are no error");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("feature_extractor, safety_checker") && notes[0].contains("ignored"),
        "{notes:?}"
    );
}

#[test]
fn pickle_only_component_is_refused_with_a_conversion_command() {
    let Some((gpu, _scratch, dir)) = sd1_copy("hub-pickle") else {
        return;
    };
    let vae = dir.join("vae");
    std::fs::remove_file(vae.join(UNET_FILE)).unwrap();
    std::fs::write(
        vae.join("diffusion_pytorch_model.bin"),
        b"PK\x03\x04 pickle",
    )
    .unwrap();
    let msg = load(&gpu, &dir, None).unwrap_err().to_string();
    for needle in [
        "diffusion_pytorch_model.bin",
        "arbitrary code",
        "python3 -c",
        "weights_only=True",
        &vae.join(UNET_FILE).display().to_string(),
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
    // transformers' pytorch_model.bin converts to model.safetensors.
    let te = dir.join("text_encoder");
    std::fs::remove_file(te.join(TEXT_FILE)).unwrap();
    std::fs::write(te.join("pytorch_model.bin"), b"pickle").unwrap();
    let msg = load(&gpu, &dir, None).unwrap_err().to_string();
    assert!(
        msg.contains(&te.join(TEXT_FILE).display().to_string()),
        "{msg}"
    );
}

#[test]
fn python_float_literals_in_every_config() {
    let Some((gpu, _scratch, dir)) = sd1_copy("hub-pyfloat") else {
        return;
    };
    // Add a field with a Python literal to each config, as json.dumps writes them.
    let edits = [
        ("model_index.json", r#""_stipple_test": NaN,"#),
        (
            "scheduler/scheduler_config.json",
            r#""lambda_min_clipped": -Infinity,"#,
        ),
        ("unet/config.json", r#""dropout": NaN,"#),
        ("vae/config.json", r#""force_upcast": Infinity,"#),
        (
            "text_encoder/config.json",
            r#""initializer_range": -Infinity, "note": "NaN","#,
        ),
    ];
    for (file, field) in edits {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replacen('{', &format!("{{{field}"), 1);
        std::fs::write(&path, text).unwrap();
    }
    load(&gpu, &dir, None).expect("configs with NaN / Infinity load");

    // Where a number matters, the value is checked: NaN scaling is refused, naming file and field.
    let vae_config = dir.join("vae/config.json");
    let text = std::fs::read_to_string(&vae_config).unwrap();
    // Last, so that it overrides the file's own value (the last of duplicate keys wins).
    let end = text.rfind('}').unwrap();
    let text = format!("{}, \"scaling_factor\": NaN}}", &text[..end]);
    std::fs::write(&vae_config, text).unwrap();
    let msg = load(&gpu, &dir, None).unwrap_err().to_string();
    assert!(
        msg.contains("scaling_factor") && msg.contains(&vae_config.display().to_string()),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// SD-Turbo

/// tiny-turbo assembled as a full folder: the fixture plus the shared tokenizer files.
fn turbo_folder(scratch: &Scratch) -> PathBuf {
    let dir = scratch.copy_of(&fixture("tiny-turbo"), "tiny-turbo");
    let vocab = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_tokenizer");
    for name in ["vocab.json", "merges.txt", "LICENSE"] {
        std::fs::copy(vocab.join(name), dir.join("tokenizer").join(name)).expect("tokenizer");
    }
    dir
}

#[test]
fn sd_turbo_style_folder_matches_diffusers_without_guidance() {
    let Some(gpu) = gpu() else { return };
    let scratch = Scratch::new("hub-turbo");
    let dir = turbo_folder(&scratch);
    let golden = Golden::open(fixture("tiny-turbo").join("golden_turbo.safetensors"));
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-turbo").join("golden_turbo.json")).unwrap(),
    )
    .unwrap();
    let (_, latents) = golden.f32("latents");
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load turbo folder");
    for (run, scheduler, steps) in [
        ("euler_a_1", Some("euler-a"), 1),
        ("euler_a_4", Some("euler-a"), 4),
        ("euler_2", None, 2),
    ] {
        let options = GenerateOptions {
            prompt: info["prompt"].as_str().unwrap().into(),
            steps,
            guidance_scale: 0.0,
            seed: info["pipe_seed"].as_u64().unwrap(),
            width: 24,
            height: 16,
            scheduler: scheduler.map(String::from),
            latents: Some(latents.clone()),
            ..Default::default()
        };
        assert!(
            !options.do_cfg(),
            "guidance 0 runs the UNet on the prompt alone"
        );
        let out = pipe
            .generate(&options, |_, _| Progress::Continue)
            .expect("generate");
        let (_, want) = golden.f32(&format!("image.{run}"));
        let err = max_abs_diff(&out.images, &want);
        eprintln!("{run}: max abs error {err:.2e} on the [0, 1] image");
        assert!(err <= 1e-4, "{run}: off diffusers by {err}");
        let timesteps: Vec<f64> = info["runs"][run]["unet_timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        let config = pipe.scheduler_config_for(&options).unwrap();
        assert_eq!(
            config.build(steps).unwrap().timesteps(),
            timesteps.as_slice()
        );
    }
}

#[test]
fn cli_writes_the_prediction_type_and_refuses_karras_where_absent() {
    if gpu().is_none() {
        return;
    }
    let scratch = Scratch::new("hub-cli");
    let dir = turbo_folder(&scratch);
    let png = scratch.path().join("turbo.png");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "a lighthouse",
            "--model",
            dir.to_str().unwrap(),
            "--cfg",
            "0",
            "--steps",
            "1",
            "-W",
            "24",
            "-H",
            "16",
            "--seed",
            "7",
            "-o",
            png.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stipple"))
            .args(&args)
            .output()
            .expect("run stipple");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.success(), stderr)
    };
    let (ok, stderr) = run(&[
        "--scheduler",
        "euler-a",
        "--timestep-spacing",
        "trailing",
        "--prediction-type",
        "v_prediction",
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("prediction type v_prediction"), "{stderr}");
    let params = png_parameters(&png);
    assert!(
        params.contains("Prediction type: v_prediction")
            && params.contains("Timestep spacing: trailing")
            && params.contains("Sampler: euler-a"),
        "{params}"
    );
    // The folder's own (epsilon) when not overridden.
    let (ok, stderr) = run(&[]);
    assert!(ok && stderr.contains("prediction type epsilon"), "{stderr}");
    assert!(png_parameters(&png).contains("Prediction type: epsilon"));

    std::fs::remove_file(&png).unwrap();
    let (ok, stderr) = run(&["--scheduler", "euler-a", "--karras"]);
    assert!(!ok && stderr.contains("Karras"), "{stderr}");
    let (ok, stderr) = run(&["--prediction-type", "sample"]);
    assert!(
        !ok && stderr.contains("epsilon or v_prediction"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["--timestep-spacing", "middle"]);
    assert!(!ok && stderr.contains("trailing"), "{stderr}");
    assert!(!png.exists(), "no output file after a refused option");
}

/// The A1111 `parameters` text of a PNG.
fn png_parameters(path: &Path) -> String {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("png"),
    ));
    let reader = decoder.read_info().expect("png header");
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .chain(
            info.utf8_text
                .iter()
                .map(|t| (t.keyword.clone(), t.get_text().unwrap_or_default())),
        )
        .find(|(k, _)| k == "parameters")
        .map(|(_, t)| t)
        .expect("parameters chunk")
}
