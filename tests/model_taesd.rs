//! AutoencoderTiny (TAESD) decoder vs diffusers on a tiny random model
//! (tools/golden/taesd_golden.py: 2 stages of 8 channels, 2 + 1 blocks, ReLU; latents up to
//! ±10 so the 3·tanh(z/3) clamp matters; non-square 5×7 latents, batch 2). Tolerance (max abs
//! error ÷ max(1, max |golden|)): f32 1e-4; f16 storage 1e-2. Also: bad folders give errors
//! naming the file.

mod common;

use std::path::{Path, PathBuf};

use common::golden::{compare_outputs, Golden};
use common::*;
use stipple::models::autoencoder_tiny::AutoencoderTiny;
use stipple::models::Ctx;
use stipple::{DType, Plan};

fn taesd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/taesd")
}

#[test]
fn tiny_taesd_decoder_matches_diffusers() {
    let Some(gpu) = gpu() else { return };
    let golden = Golden::open(taesd_dir().join("golden_taesd.safetensors"));
    for dtype in dtypes(&gpu) {
        let taesd = AutoencoderTiny::from_dir(Ctx::new(&gpu, dtype), &taesd_dir().join("tiny"))
            .expect("load taesd");
        assert_eq!(taesd.config.upscale_factor(), 2);
        let (zs, z) = golden.nhwc("latents");
        let g = taesd
            .decode_graph(zs[0], [zs[1], zs[2]], true)
            .expect("decode graph");
        let probes = g.output_names().filter(|n| n.starts_with("probe.")).count();
        assert!(probes >= 5, "{probes} probes");
        let plan = Plan::new(&gpu, g).expect("plan");
        plan.write_input("z", &z).expect("z");
        plan.run().expect("run");
        let tol = if dtype == DType::F32 { 1e-4 } else { 1e-2 };
        compare_outputs(
            &format!("taesd decode {}", dtype.name()),
            &plan,
            &golden,
            &[("image", "image")],
            tol,
        );
    }
}

#[test]
fn bad_taesd_folders_are_errors() {
    let Some(gpu) = gpu() else { return };
    let ctx = Ctx::new(&gpu, DType::F32);
    let scratch = common::scratch("taesd-bad");
    // No config.json.
    let err = AutoencoderTiny::from_dir(ctx, &scratch)
        .err()
        .expect("missing config");
    assert!(err.to_string().contains("config.json"), "{err}");
    // A config the weights do not match: 3 decoder stages.
    let src = taesd_dir().join("tiny");
    std::fs::copy(
        src.join("diffusion_pytorch_model.safetensors"),
        scratch.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
    json["decoder_block_out_channels"] = serde_json::json!([8, 8, 8]);
    json["num_decoder_blocks"] = serde_json::json!([2, 1, 1]);
    std::fs::write(scratch.join("config.json"), json.to_string()).unwrap();
    let err = AutoencoderTiny::from_dir(ctx, &scratch)
        .err()
        .expect("mismatched config");
    assert!(err.to_string().contains("decoder.layers"), "{err}");
    // Unsupported upsampling.
    json["upsample_fn"] = serde_json::json!("bilinear");
    std::fs::write(scratch.join("config.json"), json.to_string()).unwrap();
    let err = AutoencoderTiny::from_dir(ctx, &scratch)
        .err()
        .expect("bilinear");
    assert!(err.to_string().contains("upsample_fn"), "{err}");
    let _ = std::fs::remove_dir_all(&scratch);
}
