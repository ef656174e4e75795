//! The library API the web build calls (docs/web.md), run natively: loading from an in-memory
//! folder as the page does with files fetched over HTTP (`stipple::files::MemoryFolder` mounted
//! at a path) goes through the same folder, config, tokenizer and safetensors code as on disk
//! and gives the very same image (bit for bit) through the async API the web awaits; the PNG the
//! page downloads is byte for byte the file `stipple generate` writes for the same settings.

mod common;

use common::golden::fixture;
use common::*;
use stipple::files::MemoryFolder;
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::DType;

fn options() -> GenerateOptions {
    GenerateOptions {
        prompt: "a green triangle".into(),
        steps: 3,
        seed: 0,
        width: 24,
        height: 16,
        ..Default::default()
    }
}

#[test]
fn memory_folder_gives_the_folder_image() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-pipe");
    let mut from_disk = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load folder");
    let want = from_disk
        .generate(&options(), |_, _| Progress::Continue)
        .expect("generate from the folder");
    drop(from_disk);

    let folder = MemoryFolder::from_dir(&dir).expect("read the folder into memory");
    let mount = folder.mount("/memory/tiny-pipe");
    let mut from_memory =
        Pipeline::load(&gpu, mount.root(), Some(DType::F32)).expect("load from memory");
    let mut steps = Vec::new();
    let got = pollster::block_on(from_memory.generate_async(&options(), |step, total| {
        steps.push((step, total));
        Progress::Continue
    }))
    .expect("generate from memory");
    // One call per step, counting up to the scheduler's total (PNDM runs one more than asked).
    let total = steps.last().expect("progress was reported").1;
    assert_eq!(steps, (1..=total).map(|s| (s, total)).collect::<Vec<_>>());
    assert_eq!((got.width, got.height), (want.width, want.height));
    let diff = max_abs_diff(&got.images, &want.images);
    eprintln!("memory vs folder: max abs difference {diff:e}");
    assert!(got.images == want.images, "images differ by up to {diff}");
}

#[test]
fn a_file_missing_from_memory_is_named() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-pipe");
    let mut folder = MemoryFolder::from_dir(&dir).expect("read the folder into memory");
    // The same folder without the UNet's weights.
    let removed = folder.remove("unet/diffusion_pytorch_model.safetensors");
    assert!(
        removed.is_some(),
        "tiny-pipe has unet/diffusion_pytorch_model.safetensors"
    );
    let mount = folder.mount("/memory/partial");
    let err = Pipeline::load(&gpu, mount.root(), Some(DType::F32))
        .err()
        .expect("a folder without UNet weights must fail")
        .to_string();
    assert!(
        err.contains("/memory/partial/unet"),
        "error does not name the UNet folder: {err}"
    );
}

#[test]
fn png_bytes_equal_the_cli_file() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-pipe");
    let out_dir = scratch("web-api-png");
    let cli_png = out_dir.join("cli.png");
    let (ok, stderr) = stipple(&[
        "generate",
        "a green triangle",
        "--model",
        dir.to_str().unwrap(),
        "-n",
        "blurry, low quality",
        "--steps",
        "3",
        "--seed",
        "0",
        "--width",
        "24",
        "--height",
        "16",
        "--dtype",
        "f32",
        "-o",
        cli_png.to_str().unwrap(),
    ]);
    assert!(ok, "stipple generate failed: {stderr}");
    let options = GenerateOptions {
        negative_prompt: "blurry, low quality".into(),
        ..options()
    };
    let mut pipe = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    let out = pollster::block_on(pipe.generate_async(&options, |_, _| Progress::Continue))
        .expect("generate");
    let png = out.png(0, &options, "tiny-pipe").expect("png");
    let want = std::fs::read(&cli_png).expect("read the CLI's PNG");
    assert!(
        png == want,
        "the library's PNG differs from the CLI's ({} vs {} bytes)",
        png.len(),
        want.len()
    );
    assert!(
        out.png(1, &options, "tiny-pipe").is_err(),
        "index past the batch"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
