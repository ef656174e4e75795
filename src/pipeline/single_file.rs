//! Loading a [`Pipeline`] from one LDM-layout `.safetensors` file (the checkpoints
//! AUTOMATIC1111 and ComfyUI load): detect the family, take its built-in configs (or those of
//! a diffusers folder, `SingleFileOptions::config`), rename the tensors to diffusers names
//! once, and load each model exactly as from a folder. See `weights::single_file`.

use std::path::{Path, PathBuf};

use super::{Pipeline, PlanCache};
use crate::error::{Error, Result};
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::tokenizer::ClipTokenizer;
use crate::weights::single_file::configs::Configs;
use crate::weights::single_file::{Family, LdmCheckpoint};

/// How to load a single file.
#[derive(Clone, Debug, Default)]
pub struct SingleFileOptions {
    /// A diffusers folder whose component configs (and tokenizer, if it has one) are used
    /// instead of the family's built-in ones (diffusers' `from_single_file(config=…)`).
    pub config: Option<PathBuf>,
}

/// What was detected and used, for messages.
#[derive(Clone, Debug)]
pub struct SingleFileInfo {
    pub family: Family,
    /// Where the configs come from (a built-in preset or a folder).
    pub configs: String,
}

pub(super) fn load(
    gpu: &Gpu,
    path: &Path,
    dtype: Option<DType>,
    options: &SingleFileOptions,
) -> Result<(Pipeline, SingleFileInfo)> {
    let ckpt = LdmCheckpoint::open(path)?;
    let family = ckpt.family;
    let mut configs = Configs::resolve(family, options.config.as_deref())?;
    crate::weights::single_file::inpainting::adapt(&mut configs, &ckpt)?;
    let table = ckpt.table(&configs.unet, &configs.vae, &configs.text_encoder);
    let weights = ckpt.into_weights(table)?;

    let mut tokenizer = ClipTokenizer::from_dir(&configs.tokenizer_dir)?;
    if let Some(pad) = configs.pad_token {
        tokenizer = tokenizer.with_pad_token(pad)?;
    }
    let positions = configs.text_encoder.max_position_embeddings;
    if tokenizer.max_length() != positions {
        return Err(Error::Tokenizer {
            file: configs.tokenizer_dir.clone(),
            message: format!(
                "model_max_length {} does not match the text encoder's max_position_embeddings {positions}",
                tokenizer.max_length()
            ),
        });
    }

    let dtype = dtype.unwrap_or_else(|| auto_dtype(gpu));
    let ctx = Ctx::new(gpu, dtype);
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
    let text_encoder = ClipTextModel::load(
        ctx,
        &weights.pp("text_encoder"),
        configs.text_encoder.clone(),
    )
    .map_err(hint)?;
    let unet =
        UNet2DConditionModel::load(ctx, &weights.pp("unet"), configs.unet.clone()).map_err(hint)?;
    let vae = AutoencoderKL::load(ctx, &weights.pp("vae"), configs.vae.clone()).map_err(hint)?;
    weights.finish().map_err(hint)?;
    let pipeline = Pipeline {
        gpu: gpu.clone(),
        dtype,
        vae_dtype: dtype,
        family: super::Family::StableDiffusion,
        path: path.to_path_buf(),
        tokenizer,
        text_encoder,
        tokenizer_2: None,
        text_encoder_2: None,
        force_zeros_for_empty_prompt: false,
        unet,
        vae,
        scheduler_config: configs.scheduler.clone(),
        binding_limit: gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size),
        preview: Default::default(),
        plans: PlanCache::default(),
        // No base recorded: LoRAs need a folder's files to restore from (set_loras says so).
        lora: crate::lora::LoraState::default(),
    };
    Ok((
        pipeline,
        SingleFileInfo {
            family,
            configs: configs.origin,
        },
    ))
}
