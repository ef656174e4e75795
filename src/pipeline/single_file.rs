//! Loading a [`Pipeline`] from one LDM-layout `.safetensors` file (the checkpoints
//! AUTOMATIC1111 and ComfyUI load): detect the family, take its built-in configs (or those of
//! a diffusers folder, `SingleFileOptions::config`, or a named preset such as `sdxl-turbo`),
//! rename the tensors to diffusers names once, and load each model exactly as from a folder.
//! See `weights::single_file`.
//!
//! LoRAs work as on folders: each model records its LoRA-able weights under its prefix in the
//! renamed file (`unet.…`, `text_encoder.…`), and a LoRA change re-opens the file with the same
//! rename table to read the base weights back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::family::{self, Family as PipelineFamily};
use super::{Pipeline, PlanCache};
use crate::error::{Error, Result};
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::lora::{Component, LoraState};
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::tokenizer::ClipTokenizer;
use crate::weights::single_file::configs::Configs;
use crate::weights::single_file::presets::Preset;
use crate::weights::single_file::{Family, LdmCheckpoint};

/// How to load a single file.
#[derive(Clone, Debug, Default)]
pub struct SingleFileOptions {
    /// A diffusers folder whose component configs (and tokenizer, if it has one) are used
    /// instead of the family's built-in ones (diffusers' `from_single_file(config=…)`).
    pub config: Option<PathBuf>,
    /// A built-in preset by name instead of the detected family's default (`sdxl-turbo`:
    /// same tensors as SDXL base, 512 px and Euler ancestral with trailing spacing; `sd21`
    /// for an SD2.x-base file without `global_step`). See `presets::NAMED`.
    pub preset: Option<String>,
}

/// What was detected and used, for messages.
#[derive(Clone, Debug)]
pub struct SingleFileInfo {
    pub family: Family,
    /// Where the configs come from (a built-in preset or a folder).
    pub configs: String,
}

/// The storage dtypes of the components: `dtype` for the UNet, and overrides.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dtypes {
    pub unet: Option<DType>,
    pub text: Option<DType>,
    pub vae: Option<DType>,
}

fn tokenizer(dir: &Path, pad: Option<&str>, positions: usize) -> Result<ClipTokenizer> {
    let mut tokenizer = ClipTokenizer::from_dir(dir)?;
    if let Some(pad) = pad {
        tokenizer = tokenizer.with_pad_token(pad)?;
    }
    if tokenizer.max_length() != positions {
        return Err(Error::Tokenizer {
            file: dir.to_path_buf(),
            message: format!(
                "model_max_length {} does not match the text encoder's max_position_embeddings {positions}",
                tokenizer.max_length()
            ),
        });
    }
    Ok(tokenizer)
}

pub(super) fn load(
    gpu: &Gpu,
    path: &Path,
    dtypes: Dtypes,
    options: &SingleFileOptions,
) -> Result<(Pipeline, SingleFileInfo)> {
    let ckpt = LdmCheckpoint::open(path)?;
    let family = ckpt.family;
    let mut configs = match (&options.preset, &options.config) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "preset",
                "give either a preset or a config folder, not both",
            ))
        }
        (Some(name), None) => Configs::from_preset(Preset::named(name, family)?)?,
        (None, config) => Configs::resolve(family, config.as_deref())?,
    };
    crate::weights::single_file::inpainting::adapt(&mut configs, &ckpt)?;
    let table = ckpt.table(&configs);
    // LoRA changes re-read base weights through the same table.
    let reopen_table = Arc::new(table.clone());
    let weights = ckpt.into_weights(table)?;

    let positions = configs.text_encoder.max_position_embeddings;
    let tokenizer_1 = tokenizer(&configs.tokenizer_dir, configs.pad_token, positions)?;

    let dtype = dtypes.unet.unwrap_or_else(|| auto_dtype(gpu));
    let ctx = Ctx::new(gpu, dtype);
    let text_ctx = Ctx::new(gpu, dtypes.text.unwrap_or(dtype));
    // With built-in configs, a mismatch means the file is not the family's published size.
    let hint = |e: Error| match (e, &options.config) {
        (
            Error::Weight {
                file,
                tensor,
                message,
            },
            None,
        ) => Error::Weight {
            file,
            tensor,
            message: format!(
                "{message}; the file does not match the {}: pass --config DIR, a diffusers \
                 folder with this model's configs",
                configs.origin
            ),
        },
        (e, _) => e,
    };
    let mut lora = LoraState::default();
    let text_encoder = ClipTextModel::load(
        text_ctx.with_lora_targets(lora.targets(Component::TextEncoder)),
        &weights.pp("text_encoder"),
        configs.text_encoder.clone(),
    )
    .map_err(hint)?;
    let (tokenizer_2, text_encoder_2) = match (&configs.text_encoder_2, &configs.tokenizer_2) {
        (Some(config), Some((dir, pad))) if family.is_sdxl() => {
            let t = tokenizer(dir, *pad, config.max_position_embeddings)?;
            let e = ClipTextModel::load(
                text_ctx.with_lora_targets(lora.targets(Component::TextEncoder2)),
                &weights.pp("text_encoder_2"),
                config.clone(),
            )
            .map_err(hint)?;
            (Some(t), Some(e))
        }
        _ if family.is_sdxl() => {
            return Err(Error::invalid(
                "config",
                format!(
                    "{} have no text_encoder_2, which SDXL needs",
                    configs.origin
                ),
            ))
        }
        _ => (None, None),
    };
    let unet = UNet2DConditionModel::load(
        ctx.with_lora_targets(lora.targets(Component::Unet)),
        &weights.pp("unet"),
        configs.unet.clone(),
    )
    .map_err(hint)?;
    let pipeline_family = if family.is_sdxl() {
        PipelineFamily::StableDiffusionXL
    } else {
        PipelineFamily::StableDiffusion
    };
    family::check_unet(
        pipeline_family,
        path,
        &unet,
        &text_encoder,
        text_encoder_2.as_ref(),
    )?;
    let vae_dtype = dtypes.vae.unwrap_or(
        if pipeline_family.honours_force_upcast() && configs.vae.force_upcast {
            DType::F32
        } else {
            dtype
        },
    );
    let vae = AutoencoderKL::load(
        Ctx::new(gpu, vae_dtype),
        &weights.pp("vae"),
        configs.vae.clone(),
    )
    .map_err(hint)?;
    weights.finish().map_err(hint)?;
    drop(weights);

    let components: &[Component] = if family.is_sdxl() {
        &[
            Component::Unet,
            Component::TextEncoder,
            Component::TextEncoder2,
        ]
    } else {
        &[Component::Unet, Component::TextEncoder]
    };
    for &c in components {
        lora.set_prefix(c, c.folder());
        let (file, table) = (path.to_path_buf(), reopen_table.clone());
        lora.set_base_with(
            c,
            Box::new(move || LdmCheckpoint::open(&file)?.into_weights((*table).clone())),
        );
    }
    let pipeline = Pipeline {
        gpu: gpu.clone(),
        dtype,
        text_dtype: dtypes.text.unwrap_or(dtype),
        vae_dtype,
        family: pipeline_family,
        path: path.to_path_buf(),
        tokenizer: tokenizer_1,
        text_encoder,
        tokenizer_2,
        text_encoder_2,
        force_zeros_for_empty_prompt: family.is_sdxl(),
        unet,
        vae,
        scheduler_config: configs.scheduler.clone(),
        binding_limit: gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size),
        preview: Default::default(),
        plans: PlanCache::default(),
        lora,
    };
    Ok((
        pipeline,
        SingleFileInfo {
            family,
            configs: configs.origin,
        },
    ))
}
