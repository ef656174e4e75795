//! The model shipped in weights/ (the default of `stipple generate`): through the CLI with no
//! `--model`, it writes a valid 64×64 PNG whose pixels are finite, not flat and spatially
//! structured (neighbouring pixels correlate, which noise does not); and from fixed latents the
//! image equals diffusers' (tools/golden/default_model_golden.py) within 1e-3 on the [0, 1]
//! image (f32; 8 DPM++ steps with CFG 5 amplify the UNet's f32 rounding).

mod common;

use std::path::Path;
use std::process::Command;

use common::golden::Golden;
use common::*;

fn model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/stipple-emoji-64")
}

/// Correlation of horizontally adjacent values of one channel in an (H, W, 3) image.
fn neighbour_correlation(img: &[f32], h: usize, w: usize) -> f32 {
    let mut pairs = Vec::new();
    for y in 0..h {
        for x in 0..w - 1 {
            for c in 0..3 {
                pairs.push((img[(y * w + x) * 3 + c], img[(y * w + x + 1) * 3 + c]));
            }
        }
    }
    let n = pairs.len() as f32;
    let (ma, mb) = (
        pairs.iter().map(|p| p.0).sum::<f32>() / n,
        pairs.iter().map(|p| p.1).sum::<f32>() / n,
    );
    let cov: f32 = pairs.iter().map(|(a, b)| (a - ma) * (b - mb)).sum::<f32>() / n;
    let (va, vb) = (
        pairs.iter().map(|p| (p.0 - ma).powi(2)).sum::<f32>() / n,
        pairs.iter().map(|p| (p.1 - mb).powi(2)).sum::<f32>() / n,
    );
    cov / (va.sqrt() * vb.sqrt()).max(1e-12)
}

#[test]
fn default_model_generates_a_structured_image() {
    assert!(
        model_dir().join("model_index.json").is_file(),
        "the default model is missing from weights/"
    );
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stipple-default-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let png = dir.join("apple.png");
    let tensor = dir.join("apple.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_stipple"))
        .args([
            "generate",
            "an emoji of a red apple",
            "--steps",
            "8",
            "--seed",
            "3",
            "--dtype",
            "f32",
            "-o",
        ])
        .arg(&png)
        .arg("--save-tensor")
        .arg(&tensor)
        .output()
        .expect("run stipple");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png).expect("png"),
    ));
    let info = decoder.read_info().expect("png header").info().clone();
    assert_eq!((info.width, info.height), (64, 64));
    let (shape, image) =
        stipple::image_io::read_tensor_safetensors(&tensor, "image").expect("tensor");
    assert_eq!(shape, vec![1, 64, 64, 3]);
    assert!(image.iter().all(|v| v.is_finite()));
    let mean = image.iter().sum::<f32>() / image.len() as f32;
    let std = (image.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / image.len() as f32).sqrt();
    let corr = neighbour_correlation(&image, 64, 64);
    eprintln!("default model: image std {std:.3}, neighbour correlation {corr:.3}");
    assert!(std > 0.02, "flat image (std {std})");
    assert!(
        corr > 0.5,
        "no spatial structure (neighbour correlation {corr})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_model_matches_diffusers_from_fixed_latents() {
    if gpu().is_none() {
        return;
    }
    let gpu = gpu().expect("gpu");
    let golden = Golden::open(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/default_model/golden.safetensors"),
    );
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/default_model/golden.json"),
        )
        .expect("golden.json"),
    )
    .expect("json");
    let (_, latents) = golden.f32("latents");
    let (_, want) = golden.f32("image");
    let mut pipe = stipple::pipeline::Pipeline::load(&gpu, &model_dir(), Some(stipple::DType::F32))
        .expect("load");
    let options = stipple::pipeline::GenerateOptions {
        prompt: info["prompt"].as_str().expect("prompt").into(),
        steps: info["steps"].as_u64().expect("steps") as usize,
        guidance_scale: info["guidance_scale"].as_f64().expect("cfg") as f32,
        seed: info["seed"].as_u64().expect("seed"),
        latents: Some(latents),
        ..Default::default()
    };
    let out = pipe
        .generate(&options, |_, _| stipple::pipeline::Progress::Continue)
        .expect("generate");
    let err = out
        .images
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("default model vs diffusers: max abs error {err:.2e}");
    assert!(err <= 1e-3, "{err}");
}
