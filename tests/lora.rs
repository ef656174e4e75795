//! LoRA on the tiny-pipe model vs diffusers' `load_lora_weights` + `fuse_lora(lora_scale=…)`
//! (goldens: tools/golden/lora_golden.py): kohya (alpha/rank scales, LoCon 1×1 and 3×3 convs,
//! fused q/k/v parts, text encoder), diffusers/PEFT (with and without diffusers'
//! `lora_adapter_metadata` alphas), the older attention-processor form, SDXL
//! LDM key naming, two LoRAs at once, scale changes and removal through `set_loras` on one
//! loaded pipeline, the unmatched-key error and `--lora` on the CLI. A PEFT LoRA on the
//! conv_shortcuts (up blocks: loaded as two input ranges of `[hidden ‖ skip]`, merged range by
//! range) equals the model with the delta merged into its weights on the CPU.
//! Tolerance on the [0, 1] image, f32: 1e-4 (as tests/pipeline.rs); every LoRA golden differs
//! from the base image by more than 0.3, so a LoRA left out or mis-scaled fails.

mod common;

use std::path::{Path, PathBuf};

use common::golden::{fixture, Golden};
use common::*;
use stipple::lora::Component;
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::DType;

const TOL: f32 = 1e-4;

fn lora_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora")
}

fn lora(name: &str) -> PathBuf {
    lora_dir().join(format!("{name}.safetensors"))
}

fn golden() -> Golden {
    Golden::open(lora_dir().join("golden_lora.safetensors"))
}

fn options(latents: Vec<f32>) -> GenerateOptions {
    GenerateOptions {
        prompt: "a red apple on a wooden table".into(),
        negative_prompt: "blurry".into(),
        steps: 6,
        guidance_scale: 7.5,
        seed: 1234,
        width: 24,
        height: 16,
        batch: 1,
        scheduler: Some("ddim".into()),
        latents: Some(latents),
        init_image: None,
        ..Default::default()
    }
}

struct Run {
    pipe: Pipeline,
    golden: Golden,
    latents: Vec<f32>,
}

impl Run {
    fn new(gpu: &stipple::Gpu) -> Run {
        let pipe = Pipeline::load(gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
        let golden = golden();
        let (_, latents) = golden.f32("latents");
        Run {
            pipe,
            golden,
            latents,
        }
    }

    /// Generates and compares with `image.<name>`; returns the error.
    fn check(&mut self, name: &str) -> f32 {
        let out = self
            .pipe
            .generate(&options(self.latents.clone()), |_, _| Progress::Continue)
            .expect("generate");
        let (_, want) = self.golden.f32(&format!("image.{name}"));
        let err = max_abs_diff(&out.images, &want);
        eprintln!("{name:>20}: max abs error {err:.2e}");
        assert!(err <= TOL, "{name}: image off diffusers by {err}");
        err
    }
}

#[test]
fn goldens_are_far_from_the_base_image() {
    let g = golden();
    let (_, base) = g.f32("image.base");
    for name in [
        "kohya_0.8",
        "kohya_0.3",
        "peft_1.0",
        "old_1.0",
        "peft_meta_0.7",
        "kohya_0.8+peft_0.6",
        "sdxl_names_1.0",
    ] {
        let (_, img) = g.f32(&format!("image.{name}"));
        assert!(max_abs_diff(&img, &base) > 0.3, "{name}");
    }
    // The kohya file's text encoder half changes the image on its own.
    let (_, unet_only) = g.f32("image.kohya_unet_0.8");
    let (_, full) = g.f32("image.kohya_0.8");
    assert!(max_abs_diff(&unet_only, &full) > 0.2);
}

#[test]
fn kohya_matches_diffusers_and_scale_changes_in_place() {
    let Some(gpu) = gpu() else { return };
    let mut run = Run::new(&gpu);
    run.check("base");
    let reports = run
        .pipe
        .set_loras(&[(lora("kohya_sd1"), 0.8)])
        .expect("kohya");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].modules[&Component::Unet], 14);
    assert_eq!(reports[0].modules[&Component::TextEncoder], 2);
    eprintln!("{}", reports[0].summary());
    run.check("kohya_0.8");
    // Another scale on the same loaded pipeline (plans kept, weights rewritten).
    run.pipe
        .set_loras(&[(lora("kohya_sd1"), 0.3)])
        .expect("rescale");
    run.check("kohya_0.3");
    // No LoRA: the base weights come back.
    run.pipe.set_loras::<PathBuf>(&[]).expect("clear");
    run.check("base");
}

#[test]
fn peft_old_diffusers_sdxl_names_and_two_loras_match_diffusers() {
    let Some(gpu) = gpu() else { return };
    let mut run = Run::new(&gpu);
    let r = run
        .pipe
        .set_loras(&[(lora("peft_sd1"), 1.0)])
        .expect("peft");
    assert_eq!(r[0].modules[&Component::Unet], 6);
    assert_eq!(r[0].modules[&Component::TextEncoder], 3);
    run.check("peft_1.0");
    // lora_adapter_metadata: PEFT lora_alpha (≠ rank) and an alpha_pattern entry.
    let r = run
        .pipe
        .set_loras(&[(lora("peft_meta_sd1"), 0.7)])
        .expect("peft with metadata");
    assert_eq!(r[0].touched(), 5);
    run.check("peft_meta_0.7");
    let r = run
        .pipe
        .set_loras(&[(lora("diffusers_old_sd1"), 1.0)])
        .expect("old diffusers form");
    assert_eq!(r[0].touched(), 4);
    run.check("old_1.0");
    run.pipe
        .set_loras(&[(lora("kohya_sd1"), 0.8), (lora("peft_sd1"), 0.6)])
        .expect("two");
    run.check("kohya_0.8+peft_0.6");
    let r = run
        .pipe
        .set_loras(&[(lora("kohya_sdxl_names"), 1.0)])
        .expect("LDM names");
    assert_eq!(r[0].touched(), 5);
    run.check("sdxl_names_1.0");
}

#[test]
fn f16_storage_stays_close() {
    // As tests/pipeline.rs: f16 weights and activations, 3e-2 on the [0, 1] image.
    let Some(gpu) = gpu() else { return };
    if !gpu.supports_f16() {
        return;
    }
    let mut pipe = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F16)).expect("load");
    let g = golden();
    let (_, latents) = g.f32("latents");
    pipe.set_loras(&[(lora("kohya_sd1"), 0.8)]).expect("kohya");
    let out = pipe
        .generate(&options(latents), |_, _| Progress::Continue)
        .expect("generate");
    let (_, want) = g.f32("image.kohya_0.8");
    let err = max_abs_diff(&out.images, &want);
    eprintln!("kohya_0.8 f16: max abs error {err:.2e}");
    assert!(err <= 3e-2, "{err}");
}

#[test]
fn unmatched_key_is_an_error_and_changes_nothing() {
    let Some(gpu) = gpu() else { return };
    let mut run = Run::new(&gpu);
    run.pipe
        .set_loras(&[(lora("kohya_sd1"), 0.8)])
        .expect("kohya");
    let path = lora("kohya_unmatched");
    let err = run
        .pipe
        .set_loras(&[(&path, 1.0)])
        .expect_err("unmatched key")
        .to_string();
    assert!(err.contains("kohya_unmatched.safetensors"), "{err}");
    assert!(
        err.contains("lora_unet_down_blocks_7_attentions_0_proj_in"),
        "{err}"
    );
    assert!(err.contains("matches no"), "{err}");
    // The previous LoRA is still in place.
    run.check("kohya_0.8");
    // Lenient: the key is listed and the rest applied.
    let r = run
        .pipe
        .set_loras_with(&[(&path, 1.0)], true)
        .expect("lenient");
    assert_eq!(r[0].touched(), 1);
    assert_eq!(r[0].unmatched.len(), 1, "{:?}", r[0].unmatched);
    assert!(r[0].unmatched[0].contains("down_blocks_7"));
}

#[test]
fn files_that_are_not_loras_are_errors() {
    let Some(gpu) = gpu() else { return };
    let mut run = Run::new(&gpu);
    let unet = fixture("tiny-pipe").join("unet/diffusion_pytorch_model.safetensors");
    let err = run.pipe.set_loras(&[(&unet, 1.0)]).expect_err("a model");
    assert!(err.to_string().contains("not a LoRA file"), "{err}");
    let missing = lora_dir().join("missing.safetensors");
    let err = run.pipe.set_loras(&[(&missing, 1.0)]).expect_err("missing");
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    let err = run
        .pipe
        .set_loras(&[(lora("peft_sd1"), f32::NAN)])
        .expect_err("NaN scale");
    assert!(err.to_string().contains("scale"), "{err}");
}

#[test]
fn cli_lora_flag_matches_diffusers() {
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stipple-lora-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let g = golden();
    let (shape, latents) = g.f32("latents");
    let latents_file = dir.join("latents.safetensors");
    stipple::image_io::write_tensor_safetensors(&latents_file, "latents", &shape, &latents)
        .expect("latents");
    let tensor = dir.join("image.safetensors");
    let png = dir.join("out.png");
    let kohya = format!("{}:0.8", lora("kohya_sd1").display());
    let model = fixture("tiny-pipe").display().to_string();
    let (latents_arg, tensor_arg, png_arg) = (
        latents_file.to_str().expect("path"),
        tensor.to_str().expect("path"),
        png.to_str().expect("path"),
    );
    let mut args = vec!["generate", "a red apple on a wooden table", "-m", &model];
    args.extend("-n blurry --steps 6 --scheduler ddim --dtype f32".split(' '));
    args.extend([
        "--latents",
        latents_arg,
        "--save-tensor",
        tensor_arg,
        "-o",
        png_arg,
    ]);
    args.extend(["--lora", &kohya]);
    let (ok, stderr) = stipple(&args);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("16 modules (unet 14, text_encoder 2)"),
        "{stderr}"
    );
    let (_, got) = stipple::image_io::read_tensor_safetensors(&tensor, "image").expect("image");
    let (_, want) = g.f32("image.kohya_0.8");
    let err = max_abs_diff(&got, &want);
    assert!(err <= TOL, "CLI --lora image off diffusers by {err}");

    // An unmatched key fails (no image written) unless --lora-lenient.
    std::fs::remove_file(&png).expect("rm");
    let unmatched = lora("kohya_unmatched").display().to_string();
    args.extend(["--lora", &unmatched]);
    let (ok, stderr) = stipple(&args);
    assert!(!ok);
    assert!(
        stderr.contains("down_blocks_7_attentions_0_proj_in"),
        "{stderr}"
    );
    assert!(!png.exists());
    args.push("--lora-lenient");
    let (ok, stderr) = stipple(&args);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("warning: lora"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// PEFT (`unet.….lora_A` (r, cin, 1, 1), `lora_B` (cout, r, 1, 1), no alpha: scale = the
/// multiplier) on three conv_shortcuts: two in the up blocks, whose input is `[hidden ‖ skip]`
/// (32 + 32 and 32 + 16 channels) and whose weight is loaded as two input ranges, merged range
/// by range; one in a down block (one input). The image equals, within 1e-6, the one of a copy
/// of tiny-pipe whose conv_shortcut weights are W + scale·B·A, merged on the CPU in the order
/// stipple merges (f32 file), and differs from the base image by more than 1e-3.
#[test]
fn peft_lora_on_conv_shortcuts_merges_per_input_range() {
    use safetensors::tensor::TensorView;
    let Some(gpu) = gpu() else { return };
    let scratch = common::scratch::Scratch::new("lora-shortcut");
    let merged_dir = scratch.copy_of(&fixture("tiny-pipe"), "tiny-pipe-merged");
    let (scale, rank) = (0.7f32, 2);
    let modules = [
        ("up_blocks.0.resnets.0.conv_shortcut", 32, 64),
        ("up_blocks.0.resnets.1.conv_shortcut", 32, 48),
        ("down_blocks.1.resnets.0.conv_shortcut", 32, 16),
    ];
    let mut rng = Rng::new(5);
    let mut lora_tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    // weight name → (A, B, scale)
    let mut deltas = std::collections::HashMap::new();
    for (module, cout, cin) in modules {
        let (a, b) = (rng.vec(rank * cin, 0.5), rng.vec(cout * rank, 0.5));
        deltas.insert(format!("{module}.weight"), (a.clone(), b.clone(), scale));
        lora_tensors.push((
            format!("unet.{module}.lora_A.weight"),
            vec![rank, cin, 1, 1],
            a,
        ));
        lora_tensors.push((
            format!("unet.{module}.lora_B.weight"),
            vec![cout, rank, 1, 1],
            b,
        ));
    }
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let write = |path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]| {
        let data: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| bytes(v)).collect();
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .zip(&data)
            .map(|((n, s, _), d)| {
                let view = TensorView::new(safetensors::Dtype::F32, s.clone(), d).expect("view");
                (n.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).expect("write safetensors");
    };
    let lora_path = scratch.path().join("peft_conv_shortcut.safetensors");
    write(&lora_path, &lora_tensors);

    // The merged copy: every UNet tensor as f32, the three weights plus their deltas, merged
    // as stipple merges (lora::apply::add_delta: W[o, ·] += (scale · B[o, k]) · A[k, ·] for k in
    // order, on the base's f32 values).
    let unet_file = merged_dir.join("unet/diffusion_pytorch_model.safetensors");
    let raw = std::fs::read(&unet_file).expect("unet");
    let st = safetensors::SafeTensors::deserialize(&raw).expect("safetensors");
    let mut unet: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            other => panic!("{name}: {other:?}"),
        };
        if let Some((a, b, scale)) = deltas.get(&name) {
            let (cout, cin) = (view.shape()[0], view.shape()[1]);
            for (o, row) in values.chunks_exact_mut(cin).enumerate() {
                for k in 0..rank {
                    let u = scale * b[o * rank + k];
                    for (x, &v) in row.iter_mut().zip(&a[k * cin..(k + 1) * cin]) {
                        *x += u * v;
                    }
                }
            }
            assert_eq!(values.len(), cout * cin);
        }
        unet.push((name, view.shape().to_vec(), values));
    }
    assert_eq!(
        unet.iter()
            .filter(|(n, _, _)| deltas.contains_key(n))
            .count(),
        3
    );
    drop(st);
    write(&unet_file, &unet);

    let golden = golden();
    let (_, latents) = golden.f32("latents");
    let image = |pipe: &mut Pipeline| {
        pipe.generate(&options(latents.clone()), |_, _| Progress::Continue)
            .expect("generate")
            .images
    };
    let mut pipe = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
    let base = image(&mut pipe);
    let reports = pipe.set_loras(&[(&lora_path, scale)]).expect("PEFT LoRA");
    assert_eq!(reports[0].modules[&Component::Unet], 3);
    let with_lora = image(&mut pipe);
    let mut merged = Pipeline::load(&gpu, &merged_dir, Some(DType::F32)).expect("merged copy");
    let want = image(&mut merged);
    let changed = max_abs_diff(&want, &base);
    let err = max_abs_diff(&with_lora, &want);
    eprintln!(
        "conv_shortcut LoRA: changes the image by {changed:.2e}, off the merged copy by {err:.2e}"
    );
    assert!(changed > 1e-3, "the LoRA changes the image ({changed})");
    assert!(err <= 1e-6, "LoRA merged per input range is off by {err}");
}
