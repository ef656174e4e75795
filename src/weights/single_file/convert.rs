//! `stipple convert`: a diffusers folder ↔ an LDM single file, through the same rename tables
//! the loader uses (in reverse for folder → file). Tensors are copied byte for byte unless a
//! dtype is asked for, so folder → file → folder gives bit-identical tensors.
//!
//! Folder → file: a folder with `text_encoder_2/` is SDXL (`conditioner.embedders.0/1`, bigG's
//! q/k/v fused back, `text_projection` transposed back); otherwise the folder's text encoder
//! picks the layout: `hidden_act` `gelu` → SD2.x (OpenCLIP names, q/k/v fused back into
//! `in_proj_*`), else SD1.x. An SD2.x folder whose
//! scheduler predicts ε gets a `global_step` tensor of 875000, the value by which diffusers and
//! stipple recognise an ε-prediction SD2 file (v-prediction is the default otherwise).
//!
//! File → folder: the configs are the family's built-in ones or `--config DIR`'s; the folder
//! gets `model_index.json`, each component's config and weights, the tokenizer and the
//! scheduler config. It is written next to `OUT` and renamed into place at the end, so a
//! failure leaves no partial folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::configs::{Configs, CONFIG_FILES, TEXT_ENCODER_2_FILE};
use super::detect::{Family, SD2_BASE_GLOBAL_STEP};
use super::table::Part;
use super::write::{transpose_bytes, write_safetensors, OutTensor};
use super::{full_table, LdmCheckpoint};
use crate::error::{Error, Result};
use crate::models::config::{read_config, ClipTextConfig};
use crate::schedulers::{PredictionType, SchedulerConfig};
use crate::weights::{FileDtype, Weights};

/// The components of a single file: (diffusers folder, name prefix in the renamed weights,
/// weights file name).
pub const COMPONENTS: [(&str, &str, &str); 3] = [
    ("unet", "unet.", "diffusion_pytorch_model.safetensors"),
    ("vae", "vae.", "diffusion_pytorch_model.safetensors"),
    ("text_encoder", "text_encoder.", "model.safetensors"),
];

/// SDXL's second text encoder, besides [`COMPONENTS`].
pub const TEXT_ENCODER_2: (&str, &str, &str) =
    ("text_encoder_2", "text_encoder_2.", "model.safetensors");

/// The components of a family's single file.
pub fn components(family: Family) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut c = COMPONENTS.to_vec();
    if family.is_sdxl() {
        c.push(TEXT_ENCODER_2);
    }
    c
}

/// A text encoder tensor's name with transformers' `text_model.` prefix (transformers 5
/// writes it without; the projection sits beside the text model).
fn with_text_model(name: &str) -> String {
    if name.starts_with("text_model.") || name.starts_with("text_projection.") {
        name.to_string()
    } else {
        format!("text_model.{name}")
    }
}

/// A tensor fused from row blocks (q, k, v → `in_proj_*`), filled as the blocks are found.
struct Fused<'a> {
    parts: Vec<Option<&'a [u8]>>,
    dtype: FileDtype,
    /// Shape of one block.
    shape: Vec<usize>,
}

/// The family whose LDM layout a diffusers folder is written in (see the module docs).
pub fn folder_family(configs: &Configs) -> Family {
    if configs.text_encoder_2.is_some() {
        return Family::Sdxl;
    }
    sd_folder_family(&configs.text_encoder, &configs.scheduler)
}

/// SD1.x / SD2.x by the text encoder's activation and the scheduler's prediction type.
fn sd_folder_family(text_encoder: &ClipTextConfig, scheduler: &SchedulerConfig) -> Family {
    match (text_encoder.hidden_act.as_str(), scheduler.prediction_type) {
        ("gelu", PredictionType::Epsilon) => Family::Sd2Base,
        ("gelu", _) => Family::Sd2V,
        _ => Family::Sd1,
    }
}

/// Writes the diffusers folder `folder` as an LDM single file `out`.
pub fn folder_to_single_file(folder: &Path, out: &Path, to: Option<FileDtype>) -> Result<()> {
    let configs = Configs::from_dir(folder, Family::Sd1)?;
    let family = folder_family(&configs);
    let table = full_table(family, &configs);
    let components = components(family);
    let weights: Vec<Weights> = components
        .iter()
        .map(|(dir, _, _)| Weights::open(folder.join(dir)))
        .collect::<Result<_>>()?;
    let full_name = |prefix: &str, name: &str| {
        if prefix.starts_with("text_encoder") {
            format!("{prefix}{}", with_text_model(name))
        } else {
            format!("{prefix}{name}")
        }
    };
    // Tensors stored transposed in the LDM layout (text_projection): their bytes, transposed.
    let mut transposed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for ((_, prefix, _), w) in components.iter().zip(&weights) {
        for name in w.names() {
            let full = full_name(prefix, &name);
            if table
                .to_ldm(&full)
                .is_some_and(|s| s.part == Part::Transposed)
            {
                let (dtype, shape, bytes) = w.raw(&name).expect("a listed name exists");
                let [rows, cols] = shape else {
                    return Err(Error::Weight {
                        file: w.path().to_path_buf(),
                        tensor: name.clone(),
                        message: format!("shape {shape:?}: expected a 2-D projection"),
                    });
                };
                let element = dtype.byte_size(1).unwrap_or(1);
                transposed.insert(full, transpose_bytes(bytes, *rows, *cols, element));
            }
        }
    }

    let mut out_tensors: Vec<OutTensor> = Vec::new();
    let mut fused: BTreeMap<String, Fused> = BTreeMap::new();
    for ((_, prefix, _), w) in components.iter().zip(&weights) {
        for name in w.names() {
            let (dtype, shape, bytes) = w.raw(&name).expect("a listed name exists");
            let full = full_name(prefix, &name);
            let open_clip = family.is_sd2() || *prefix == "text_encoder_2.";
            if open_clip && name.ends_with("position_ids") {
                continue; // a buffer OpenCLIP does not have
            }
            let Some(source) = table.to_ldm(&full) else {
                return Err(Error::Weight {
                    file: w.path().to_path_buf(),
                    tensor: name.clone(),
                    message: format!("has no name in the {} single-file layout", family.name()),
                });
            };
            match source.part {
                Part::Whole => out_tensors.push(OutTensor {
                    name: source.ldm,
                    dtype,
                    shape: shape.to_vec(),
                    parts: vec![bytes],
                }),
                Part::Transposed => out_tensors.push(OutTensor {
                    name: source.ldm,
                    dtype,
                    shape: shape.iter().rev().copied().collect(),
                    parts: vec![&transposed[&full]],
                }),
                Part::Squeezed => {
                    let shape = [shape, &[1, 1]].concat();
                    out_tensors.push(OutTensor {
                        name: source.ldm,
                        dtype,
                        shape,
                        parts: vec![bytes],
                    });
                }
                Part::Rows { index, count } => {
                    let entry = fused.entry(source.ldm).or_insert_with(|| Fused {
                        parts: vec![None; count],
                        dtype,
                        shape: shape.to_vec(),
                    });
                    if entry.dtype != dtype || entry.shape != shape {
                        return Err(Error::Weight {
                            file: w.path().to_path_buf(),
                            tensor: name.clone(),
                            message: format!(
                                "{dtype} {shape:?} differs from the other q/k/v parts ({} {:?})",
                                entry.dtype, entry.shape
                            ),
                        });
                    }
                    entry.parts[index] = Some(bytes);
                }
            }
        }
    }
    for (
        ldm,
        Fused {
            parts,
            dtype,
            mut shape,
        },
    ) in fused
    {
        let count = parts.len();
        let parts: Vec<&[u8]> = parts.into_iter().flatten().collect();
        if parts.len() != count {
            return Err(Error::Weight {
                file: folder.join("text_encoder"),
                tensor: ldm,
                message: "some of the q/k/v projections it fuses are missing".into(),
            });
        }
        shape[0] *= count;
        out_tensors.push(OutTensor {
            name: ldm,
            dtype,
            shape,
            parts,
        });
    }
    let step_bytes = SD2_BASE_GLOBAL_STEP.to_le_bytes();
    if family == Family::Sd2Base {
        out_tensors.push(OutTensor {
            name: "global_step".into(),
            dtype: FileDtype::I64,
            shape: vec![],
            parts: vec![&step_bytes],
        });
    }
    write_safetensors(out, &mut out_tensors, to)
}

/// Writes the LDM single file `file` as a diffusers folder `out` (which must not exist).
pub fn single_file_to_folder(
    file: &Path,
    out: &Path,
    config_dir: Option<&Path>,
    to: Option<FileDtype>,
) -> Result<()> {
    if out.exists() {
        return Err(Error::invalid(
            "output",
            format!("{} already exists: choose a new folder", out.display()),
        ));
    }
    let ckpt = LdmCheckpoint::open(file)?;
    let family = ckpt.family;
    let mut configs = Configs::resolve(family, config_dir)?;
    super::inpainting::adapt(&mut configs, &ckpt)?;
    let table = ckpt.table(&configs);
    let weights = ckpt.into_weights(table)?;
    let names = weights.names();
    let components = components(family);
    if let Some(unknown) = names
        .iter()
        .find(|n| !components.iter().any(|(_, p, _)| n.starts_with(p)))
    {
        return Err(Error::Weight {
            file: file.to_path_buf(),
            tensor: unknown.clone(),
            message:
                "no rule maps this tensor to a diffusers component (do the configs match the file?)"
                    .into(),
        });
    }

    let tmp = temp_sibling(out)?;
    let result = write_folder(&weights, &names, &configs, &components, &tmp, to);
    match result.and_then(|()| std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn temp_sibling(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid("output", format!("{} has no folder name", out.display())))?;
    let tmp = out.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(tmp)
}

fn write_folder(
    weights: &Weights,
    names: &[String],
    configs: &Configs,
    components: &[(&str, &str, &str)],
    out: &Path,
    to: Option<FileDtype>,
) -> Result<()> {
    // Tensors read transposed (text_projection): written in the order they are read.
    let transposed: BTreeMap<&String, Vec<u8>> = names
        .iter()
        .filter(|n| weights.is_transposed(n))
        .map(|n| {
            let (dtype, shape, bytes) = weights.raw(n).expect("a listed name exists");
            let element = dtype.byte_size(1).unwrap_or(1);
            // The file holds (shape[1], shape[0]).
            (n, transpose_bytes(bytes, shape[1], shape[0], element))
        })
        .collect();
    for &(dir, prefix, file) in components {
        let folder = out.join(dir);
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        let mut tensors: Vec<OutTensor> = names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix).map(|short| (n, short)))
            .map(|(n, short)| {
                let (dtype, shape, bytes) = weights.raw(n).expect("a listed name exists");
                OutTensor {
                    name: short.to_string(),
                    dtype,
                    shape: shape.to_vec(),
                    parts: vec![transposed.get(n).map_or(bytes, |b| b.as_slice())],
                }
            })
            .collect();
        write_safetensors(&folder.join(file), &mut tensors, to)?;
    }
    let text_2 = configs.text_2.as_ref().map(|t| (TEXT_ENCODER_2_FILE, t));
    let texts = CONFIG_FILES.iter().map(|(_, f)| *f).zip(&configs.texts);
    for (file, text) in texts.chain(text_2) {
        let path = out.join(file);
        std::fs::create_dir_all(path.parent().expect("a component folder"))
            .map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    write_tokenizer(
        &configs.tokenizer_dir,
        configs.pad_token,
        &out.join("tokenizer"),
    )?;
    if let Some((dir, pad)) = &configs.tokenizer_2 {
        write_tokenizer(dir, *pad, &out.join("tokenizer_2"))?;
    }
    let scheduler: serde_json::Value = read_config(&out.join(CONFIG_FILES[3].1))?;
    let class = scheduler
        .get("_class_name")
        .and_then(|c| c.as_str())
        .unwrap_or("PNDMScheduler");
    let index = if configs.text_encoder_2.is_some() {
        serde_json::json!({
            "_class_name": "StableDiffusionXLPipeline",
            "force_zeros_for_empty_prompt": true,
            "scheduler": ["diffusers", class],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "feature_extractor": [null, null],
            "image_encoder": [null, null]
        })
    } else {
        serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            "scheduler": ["diffusers", class],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "requires_safety_checker": false,
            "safety_checker": [null, null],
            "feature_extractor": [null, null]
        })
    };
    let path = out.join("model_index.json");
    let text = serde_json::to_string_pretty(&index).expect("JSON value") + "\n";
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// Copies the tokenizer files; with the built-in vocabulary, writes the family's pad token.
fn write_tokenizer(dir: &Path, pad_token: Option<&str>, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for name in [
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "LICENSE",
    ] {
        let src = dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, out.join(name)).map_err(|e| Error::io(&src, e))?;
        }
    }
    if let Some(pad) = pad_token {
        let path = out.join("special_tokens_map.json");
        let mut map: serde_json::Value = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Config {
                file: path.clone(),
                message: e.to_string(),
            })?,
            Err(_) => serde_json::json!({}),
        };
        map["pad_token"] = serde_json::Value::String(pad.into());
        let text = serde_json::to_string_pretty(&map).expect("JSON value") + "\n";
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
