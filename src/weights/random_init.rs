//! Full-size random checkpoints: a diffusers folder (model_index.json, scheduler/, tokenizer/,
//! text_encoder/, unet/, vae/) with a family's published configs and every tensor of the real
//! architecture, filled with small random values. For benchmarks and slow tests of real sizes
//! without downloading gigabytes (`stipple init-random`).
//!
//! Values: uniform with standard deviation 0.02 (±0.02·√3), norm scales 1 ± that: small enough
//! that a generation stays finite through the deep networks. Each tensor's values depend only
//! on the seed and its name (a hash), so they do not change when other tensors are added. The
//! weights stream to disk (a few MiB of memory for a 5 GB f32 SD2.1); the folder is written
//! under a temporary name and renamed when complete, so `OUT` never holds a partial checkpoint.
//! [`write_random_single_file`] converts such a folder to one LDM-layout file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::dtype::FileDtype;
use super::module_tensors::{self, TensorList};
use super::published_configs::Family;
use super::writer::{write_safetensors, TensorSpec};
use crate::error::{Error, Result};
use crate::models::config::{AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};

/// Standard deviation of the random values.
pub const STD: f32 = 0.02;

/// The tensors of each weight file of `family`: (component folder, file name, tensors).
pub fn family_tensors(family: Family) -> Result<Vec<(&'static str, &'static str, TensorList)>> {
    let c = family.configs();
    let unet: UNet2DConditionConfig = parse(family, "unet", &c.unet)?;
    let vae: AutoencoderKLConfig = parse(family, "vae", &c.vae)?;
    let text: ClipTextConfig = parse(family, "text_encoder", &c.text_encoder)?;
    let mut files = vec![(
        "text_encoder",
        "model.safetensors",
        module_tensors::clip_text_model(&text),
    )];
    if let Some(config) = &c.text_encoder_2 {
        let text_2: ClipTextConfig = parse(family, "text_encoder_2", config)?;
        files.push((
            "text_encoder_2",
            "model.safetensors",
            module_tensors::clip_text_model_with_projection(&text_2),
        ));
    }
    files.extend([
        (
            "unet",
            "diffusion_pytorch_model.safetensors",
            module_tensors::unet(&unet),
        ),
        (
            "vae",
            "diffusion_pytorch_model.safetensors",
            module_tensors::autoencoder_kl(&vae),
        ),
    ]);
    Ok(files)
}

/// A family's component config as stipple's config type.
fn parse<T: serde::de::DeserializeOwned>(family: Family, what: &str, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::invalid("family config", format!("{} {what}: {e}", family.name())))
}

/// Writes a random `family` checkpoint in diffusers folder layout to `out`, which must not
/// exist yet. `dtype` is F32, F16 or BF16; `tokenizer` is a folder with CLIP's vocab.json and
/// merges.txt (SD2.x families get pad token `!`, as they ship). `progress(done, total)` counts
/// bytes written.
pub fn write_random_folder(
    family: Family,
    dtype: FileDtype,
    out: &Path,
    tokenizer: &Path,
    seed: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<()> {
    refuse_existing(out, "folder")?;
    let tmp = partial_path(out)?;
    let _ = std::fs::remove_dir_all(&tmp);
    let result = write_into(family, dtype, &tmp, tokenizer, seed, progress)
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Writes a random `family` checkpoint as one LDM-layout `.safetensors` file `out` (the
/// layout AUTOMATIC1111 and ComfyUI load): the diffusers folder is written next to it first
/// (as `.NAME.partial`), converted with [`super::single_file::convert::folder_to_single_file`]
/// and removed. Same seed, same values as [`write_random_folder`]. SD-Turbo's and SDXL-Turbo's
/// Euler/trailing scheduler configs do not travel in a single file (they load as SD2.1-base and
/// SDXL base: pass the Turbo preset or scheduler flags when generating). The weights stream
/// through memory maps (folder → file), so host memory stays far below the model's size.
pub fn write_random_single_file(
    family: Family,
    dtype: FileDtype,
    out: &Path,
    tokenizer: &Path,
    seed: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<()> {
    refuse_existing(out, "file")?;
    let folder = partial_path(out)?;
    let _ = std::fs::remove_dir_all(&folder);
    let result = write_into(family, dtype, &folder, tokenizer, seed, progress)
        .and_then(|()| super::single_file::convert::folder_to_single_file(&folder, out, None));
    let _ = std::fs::remove_dir_all(&folder);
    result
}

/// init-random never replaces anything: an existing `out` (a `kind`: folder or file) is an error.
fn refuse_existing(out: &Path, kind: &str) -> Result<()> {
    if out.exists() {
        return Err(Error::invalid(
            format!("output {kind}"),
            format!(
                "{} already exists (init-random writes a new {kind})",
                out.display()
            ),
        ));
    }
    Ok(())
}

/// `DIR/.NAME.partial` next to `out`.
fn partial_path(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid("output folder", format!("{} has no name", out.display())))?;
    let tmp = format!(".{}.partial", name.to_string_lossy());
    Ok(match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp),
        _ => PathBuf::from(tmp),
    })
}

fn write_into(
    family: Family,
    dtype: FileDtype,
    dir: &Path,
    tokenizer: &Path,
    seed: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<()> {
    let configs = family.configs();
    let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| Error::io(p, e));
    let write_json = |p: PathBuf, v: &Value| {
        let text = serde_json::to_string_pretty(v).expect("a JSON value serialises") + "\n";
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    mkdir(dir)?;
    write_json(dir.join("model_index.json"), &configs.model_index)?;
    for (component, config, file) in [
        ("scheduler", &configs.scheduler, "scheduler_config.json"),
        ("text_encoder", &configs.text_encoder, "config.json"),
        ("unet", &configs.unet, "config.json"),
        ("vae", &configs.vae, "config.json"),
    ] {
        mkdir(&dir.join(component))?;
        write_json(dir.join(component).join(file), config)?;
    }
    copy_tokenizer(tokenizer, &dir.join("tokenizer"), family.is_sd2())?;
    if let Some(config) = &configs.text_encoder_2 {
        // SDXL: OpenCLIP bigG's tokenizer pads with `!`.
        mkdir(&dir.join("text_encoder_2"))?;
        write_json(dir.join("text_encoder_2").join("config.json"), config)?;
        copy_tokenizer(tokenizer, &dir.join("tokenizer_2"), true)?;
    }

    let files = family_tensors(family)?;
    let total: u64 = files
        .iter()
        .flat_map(|(_, _, list)| list.iter())
        .map(|(_, shape)| (shape.iter().product::<usize>() * dtype.bits() / 8) as u64)
        .sum();
    let mut done = 0u64;
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    for (component, file, list) in files {
        let specs: Vec<TensorSpec> = list
            .into_iter()
            .map(|(name, shape)| TensorSpec { name, dtype, shape })
            .collect();
        let keys: Vec<(u64, bool)> = specs
            .iter()
            .map(|s| (name_hash(seed, &s.name), is_norm_scale(&s.name, &s.shape)))
            .collect();
        write_safetensors(
            &dir.join(component).join(file),
            &specs,
            &metadata,
            |k, start, out| {
                let (key, norm) = keys[k];
                let offset = if norm { 1.0 } else { 0.0 };
                for (i, o) in (start..).zip(out.iter_mut()) {
                    *o = offset + uniform(key, i as u64) * STD * 3f32.sqrt();
                }
                done += (out.len() * dtype.bits() / 8) as u64;
                progress(done, total);
            },
        )?;
    }
    Ok(())
}

/// Copies vocab.json, merges.txt and the token files; SD2.x pads with `!`.
fn copy_tokenizer(from: &Path, to: &Path, pad_exclamation: bool) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for name in [
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        let src = from.join(name);
        let text = std::fs::read_to_string(&src).map_err(|e| Error::io(&src, e))?;
        let text = if pad_exclamation && name.ends_with(".json") && name != "vocab.json" {
            let mut v: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
                file: src.clone(),
                message: e.to_string(),
            })?;
            if let Some(o) = v.as_object_mut() {
                o.insert("pad_token".into(), Value::String("!".into()));
            }
            serde_json::to_string_pretty(&v).expect("a JSON value serialises") + "\n"
        } else {
            text
        };
        let dst = to.join(name);
        std::fs::write(&dst, text).map_err(|e| Error::io(&dst, e))?;
    }
    Ok(())
}

/// A GroupNorm/LayerNorm scale: a 1-D `…norm….weight`.
pub(crate) fn is_norm_scale(name: &str, shape: &[usize]) -> bool {
    shape.len() == 1
        && name.ends_with(".weight")
        && name
            .rsplit('.')
            .nth(1)
            .is_some_and(|module| module.contains("norm"))
}

/// FNV-1a of the name, mixed with the seed.
pub(crate) fn name_hash(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Uniform in [-1, 1) from (key, index): splitmix64's finaliser.
#[inline]
pub(crate) fn uniform(key: u64, i: u64) -> f32 {
    let mut z = key.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_scales() {
        assert!(is_norm_scale(
            "down_blocks.0.resnets.0.norm1.weight",
            &[320]
        ));
        assert!(is_norm_scale("text_model.final_layer_norm.weight", &[768]));
        assert!(is_norm_scale(
            "encoder.mid_block.attentions.0.group_norm.weight",
            &[512]
        ));
        assert!(!is_norm_scale("down_blocks.0.resnets.0.norm1.bias", &[320]));
        assert!(!is_norm_scale("conv_in.weight", &[320, 4, 3, 3]));
    }

    #[test]
    fn uniform_range_and_spread() {
        let v: Vec<f32> = (0..10_000).map(|i| uniform(name_hash(0, "x"), i)).collect();
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.02, "{var}");
    }
}
