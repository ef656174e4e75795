//! Loading a model folder with one tensor missing, renamed or of the wrong shape, or with an
//! extra tensor, fails with an error naming that tensor and the file (folders are copied from
//! the tiny fixtures and edited on the fly).

mod common;

use std::path::{Path, PathBuf};

use common::golden::fixture;
use common::*;
use safetensors::tensor::TensorView;
use stipple::models::unet_2d_condition::UNet2DConditionModel;
use stipple::models::Ctx;
use stipple::DType;

const TARGET: &str = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";

/// Copy tiny-sd1's unet folder to a fresh temp dir, editing its tensors with `edit`.
fn edited_unet(case: &str, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) -> PathBuf {
    let src = fixture("tiny-sd1").join("unet");
    let dir = std::env::temp_dir().join(format!("stipple-weights-{case}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).expect("config");
    let bytes = std::fs::read(src.join("diffusion_pytorch_model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(
        views,
        None,
        &dir.join("diffusion_pytorch_model.safetensors"),
    )
    .expect("write");
    dir
}

fn load_error(dir: &Path) -> String {
    let Some(gpu) = gpu() else {
        return String::from("skipped");
    };
    match UNet2DConditionModel::from_dir(Ctx::new(&gpu, DType::F32), dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = edited_unet("missing", |t| t.retain(|(n, _, _)| n != TARGET));
    let err = load_error(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if err != "skipped" {
        assert!(
            err.contains(TARGET) && err.contains("diffusion_pytorch_model.safetensors"),
            "{err}"
        );
    }
}

#[test]
fn renamed_tensor_is_named() {
    let dir = edited_unet("renamed", |t| {
        for (n, _, _) in t.iter_mut().filter(|(n, _, _)| n == TARGET) {
            *n = TARGET.replace("to_k", "to_key");
        }
    });
    let err = load_error(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if err != "skipped" {
        // The missing name is reported (with the near miss suggested).
        assert!(err.contains(TARGET), "{err}");
    }
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = edited_unet("shape", |t| {
        for (_, s, d) in t.iter_mut().filter(|(n, _, _)| n == TARGET) {
            // (16, 32) → (8, 32): drop half the rows.
            s[0] /= 2;
            d.truncate(d.len() / 2);
        }
    });
    let err = load_error(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if err != "skipped" {
        assert!(
            err.contains(TARGET) && err.contains("16") && err.contains('8'),
            "{err}"
        );
    }
}

#[test]
fn unused_tensor_is_named() {
    let dir = edited_unet("extra", |t| {
        t.push(("mid_block.extra.weight".into(), vec![2], vec![0; 8]))
    });
    let err = load_error(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if err != "skipped" {
        assert!(err.contains("mid_block.extra.weight"), "{err}");
    }
}

#[test]
fn bad_config_is_named() {
    let dir = edited_unet("config", |_| {});
    let text = std::fs::read_to_string(dir.join("config.json")).expect("read");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("json");
    config["norm_num_groups"] = 5.into();
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write");
    let err = load_error(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if err != "skipped" {
        assert!(
            err.contains("config.json") && err.contains("norm_num_groups"),
            "{err}"
        );
    }
}
