//! The component configs a single file is loaded with: the family's built-in [`Preset`], or
//! those of a diffusers folder given with `--config DIR` (as diffusers'
//! `from_single_file(path, config=DIR)` does: `unet/config.json`, `vae/config.json`,
//! `text_encoder/config.json`, `scheduler/scheduler_config.json`, and `tokenizer/` when present).
//!
//! A single file carries no tokenizer: without one from `--config`, the CLIP vocabulary in
//! `weights/clip_tokenizer` is used, padded with `!` for SD2.x (OpenCLIP) and `<|endoftext|>`
//! for SD1.x, as the published tokenizers are.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::detect::Family;
use super::presets::Preset;
use crate::error::{Error, Result};
use crate::models::config::{
    read_config, AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig,
};
use crate::schedulers::SchedulerConfig;

/// The CLIP BPE vocabulary shipped in the repository (`weights/clip_tokenizer`).
pub const CLIP_TOKENIZER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/clip_tokenizer");

/// Config files of a diffusers folder, relative to it: (component, file).
pub const CONFIG_FILES: [(&str, &str); 4] = [
    ("unet", "unet/config.json"),
    ("vae", "vae/config.json"),
    ("text_encoder", "text_encoder/config.json"),
    ("scheduler", "scheduler/scheduler_config.json"),
];

/// Everything a single file needs besides its tensors.
#[derive(Clone, Debug)]
pub struct Configs {
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub text_encoder: ClipTextConfig,
    pub scheduler: SchedulerConfig,
    /// The JSON text of each of [`CONFIG_FILES`], in that order (written by `stipple convert`).
    pub texts: [String; 4],
    /// `vocab.json` + `merges.txt` (+ optional special-token files).
    pub tokenizer_dir: PathBuf,
    /// Pad token to set when the tokenizer folder does not say (the built-in vocabulary).
    pub pad_token: Option<&'static str>,
    /// Where the configs come from, for messages: a preset name or the folder.
    pub origin: String,
}

fn parse<T: DeserializeOwned>(text: &str, label: &Path) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Config {
        file: label.to_path_buf(),
        message: e.to_string(),
    })
}

impl Configs {
    /// The family's built-in preset, or the configs of the diffusers folder `config_dir`.
    pub fn resolve(family: Family, config_dir: Option<&Path>) -> Result<Configs> {
        match config_dir {
            None => Self::preset(family),
            Some(dir) => Self::from_dir(dir, family),
        }
    }

    pub fn preset(family: Family) -> Result<Configs> {
        let p = Preset::for_family(family);
        let label = PathBuf::from(format!("<built-in {} config>", p.name));
        Self::from_texts(
            [p.unet, p.vae, p.text_encoder, p.scheduler],
            &[label.clone(), label.clone(), label.clone(), label],
            PathBuf::from(CLIP_TOKENIZER_DIR),
            Some(p.pad_token),
            format!("built-in {} configs", p.name),
        )
    }

    /// `family` only decides the pad token when `dir` has no `tokenizer/`.
    pub fn from_dir(dir: &Path, family: Family) -> Result<Configs> {
        let paths = CONFIG_FILES.map(|(_, f)| dir.join(f));
        let mut texts: [String; 4] = Default::default();
        for (text, path) in texts.iter_mut().zip(&paths) {
            // read_config names the offending field; this read only keeps the text.
            read_config::<serde_json::Value>(path)?;
            *text = crate::files::read_to_string(path)?;
        }
        let tokenizer = dir.join("tokenizer");
        let (tokenizer_dir, pad) = if crate::files::is_dir(&tokenizer) {
            (tokenizer, None)
        } else {
            let pad = Preset::for_family(family).pad_token;
            (PathBuf::from(CLIP_TOKENIZER_DIR), Some(pad))
        };
        let configs = Self::from_texts(
            texts,
            &paths,
            tokenizer_dir,
            pad,
            format!("configs of {}", dir.display()),
        )?;
        configs.unet.validate(&paths[0])?;
        configs.vae.validate(&paths[1])?;
        configs.text_encoder.validate(&paths[2])?;
        Ok(configs)
    }

    fn from_texts(
        texts: [String; 4],
        labels: &[PathBuf; 4],
        tokenizer_dir: PathBuf,
        pad_token: Option<&'static str>,
        origin: String,
    ) -> Result<Configs> {
        let scheduler: SchedulerConfig = parse(&texts[3], &labels[3])?;
        scheduler.build(10).map_err(|e| Error::Config {
            file: labels[3].clone(),
            message: e.to_string(),
        })?;
        Ok(Configs {
            unet: parse(&texts[0], &labels[0])?,
            vae: parse(&texts[1], &labels[1])?,
            text_encoder: parse(&texts[2], &labels[2])?,
            scheduler,
            texts,
            tokenizer_dir,
            pad_token,
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_use_the_shipped_vocabulary() {
        for family in [Family::Sd1, Family::Sd2Base, Family::Sd2V] {
            let c = Configs::resolve(family, None).unwrap();
            assert_eq!(c.tokenizer_dir, Path::new(CLIP_TOKENIZER_DIR));
            assert!(c.tokenizer_dir.join("vocab.json").is_file());
            assert_eq!(
                c.pad_token,
                Some(if family.is_sd2() {
                    "!"
                } else {
                    "<|endoftext|>"
                })
            );
        }
    }

    #[test]
    fn config_dir_missing_file_is_named() {
        let m = Configs::from_dir(Path::new("/nonexistent-stipple"), Family::Sd1)
            .unwrap_err()
            .to_string();
        assert!(m.contains("unet/config.json"), "{m}");
    }
}
