//! Loading a diffusers pipeline folder as the Hub serves it: `model_index.json` naming the
//! components, one folder each (tokenizer/, text_encoder/, unet/, vae/, scheduler/).
//!
//! What real folders hold and how it is handled:
//! - components stipple does not use (`safety_checker`, `feature_extractor`, `image_encoder`,
//!   …) listed in `model_index.json`: skipped, named in one info line;
//! - weights as `*.fp16.safetensors` variants and/or sharded `*.safetensors.index.json`: chosen
//!   per component by [`resolve_dir`] (`LoadOptions::variant`, or the only variant present);
//! - PyTorch pickles only: refused with the reason and a conversion command;
//! - configs written by Python's json with `NaN`/`Infinity` literals: read by `read_config`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

use super::family::{self, Family};
use super::{LoadOptions, Pipeline, PlanCache};
use crate::error::{Error, Result};
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::lora::{Component, LoraState};
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::config::{read_config, AutoencoderKLConfig};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::{resolve_dir, Weights, WeightsView};

/// Loads the folder at `path`; returns the pipeline and info lines for the user.
pub(crate) fn load(
    gpu: &Gpu,
    path: &Path,
    options: &LoadOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Pipeline, Vec<String>)> {
    let index = path.join("model_index.json");
    if !crate::files::is_dir(path) {
        return Err(Error::Config {
            file: path.to_path_buf(),
            message: "no such model folder".into(),
        });
    }
    let json: serde_json::Value = read_config(&index)?;
    let family = Family::from_model_index(&json);
    let mut notes = Vec::new();
    for &c in family.components() {
        if json.get(c).is_none() || !crate::files::is_dir(&path.join(c)) {
            return Err(Error::Config {
                file: index.clone(),
                message: format!(
                    "component {c:?} is missing (model_index.json entry and {c}/ folder needed)"
                ),
            });
        }
    }
    notes.extend(unused_components(&json, family.components()));
    let dtype = options.dtype.unwrap_or_else(|| auto_dtype(gpu));
    let variant = options.variant.as_deref();
    // The loading bar's total: errors here are reported by each component's own load below.
    let total = family
        .components()
        .iter()
        .filter(|c| !c.starts_with("tokenizer") && **c != "scheduler")
        .filter_map(|c| resolve_dir(&path.join(c), variant).ok())
        .filter_map(|r| Weights::open(&r.path).ok())
        .map(|w| w.data_bytes())
        .sum::<u64>();
    let done = AtomicU64::new(0);
    let report = |bytes: u64| {
        let sum = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        progress(sum, total);
    };
    let ctx = Ctx {
        progress: Some(&report),
        ..Ctx::new(gpu, dtype)
    };
    // LoRA-able weights are recorded while loading, with where their base comes from.
    let mut lora = LoraState::default();
    let (tokenizer, text_encoder, base) = load_text_encoder(
        ctx.with_lora_targets(lora.targets(Component::TextEncoder)),
        path,
        "",
        variant,
        &mut notes,
    )?;
    let mut bases = vec![(Component::TextEncoder, base)];
    let (tokenizer_2, text_encoder_2) = match family {
        Family::StableDiffusionXL => {
            let (t, e, base) = load_text_encoder(
                ctx.with_lora_targets(lora.targets(Component::TextEncoder2)),
                path,
                "_2",
                variant,
                &mut notes,
            )?;
            bases.push((Component::TextEncoder2, base));
            (Some(t), Some(e))
        }
        Family::StableDiffusion => (None, None),
    };
    let unet_ctx = ctx.with_lora_targets(lora.targets(Component::Unet));
    let (unet, base) = component(
        &path.join("unet"),
        variant,
        &mut notes,
        |c: &crate::models::config::UNet2DConditionConfig, p| c.validate(p),
        |w, c| UNet2DConditionModel::load(unet_ctx, w, c),
    )?;
    bases.push((Component::Unet, base));
    for (c, base) in bases {
        lora.set_base(c, base);
    }
    family::check_unet(
        family,
        &path.join("unet").join("config.json"),
        &unet,
        &text_encoder,
        text_encoder_2.as_ref(),
    )?;
    let force_upcast =
        read_config::<AutoencoderKLConfig>(&path.join("vae").join("config.json"))?.force_upcast;
    let vae_dtype = if family.honours_force_upcast() && force_upcast {
        DType::F32
    } else {
        dtype
    };
    let vae_ctx = Ctx {
        dtype: vae_dtype,
        ..ctx
    };
    let (vae, _) = component(
        &path.join("vae"),
        variant,
        &mut notes,
        |c: &AutoencoderKLConfig, p| c.validate(p),
        |w, c| AutoencoderKL::load(vae_ctx, w, c),
    )?;
    let force_zeros_for_empty_prompt = json
        .get("force_zeros_for_empty_prompt")
        .and_then(|v| v.as_bool())
        .unwrap_or(family == Family::StableDiffusionXL);
    let scheduler_config =
        load_scheduler_config(&path.join("scheduler").join("scheduler_config.json"))?;
    let pipeline = Pipeline {
        gpu: gpu.clone(),
        dtype,
        vae_dtype,
        family,
        path: path.to_path_buf(),
        tokenizer,
        text_encoder,
        tokenizer_2,
        text_encoder_2,
        force_zeros_for_empty_prompt,
        unet,
        vae,
        scheduler_config,
        binding_limit: gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size),
        plans: PlanCache::default(),
        lora,
    };
    Ok((pipeline, notes))
}

/// `tokenizer{suffix}/` and `text_encoder{suffix}/`, checked against each other.
fn load_text_encoder(
    ctx: Ctx,
    path: &Path,
    suffix: &str,
    variant: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<(ClipTokenizer, ClipTextModel, PathBuf)> {
    let tokenizer = ClipTokenizer::from_dir(path.join(format!("tokenizer{suffix}")))?;
    let (text_encoder, base) = component(
        &path.join(format!("text_encoder{suffix}")),
        variant,
        notes,
        |c: &crate::models::config::ClipTextConfig, p| c.validate(p),
        |w, c| ClipTextModel::load(ctx, w, c),
    )?;
    let positions = text_encoder.config.max_position_embeddings;
    if tokenizer.max_length() != positions {
        return Err(Error::Tokenizer {
            file: path.join(format!("tokenizer{suffix}")),
            message: format!(
                "model_max_length {} does not match the text encoder's \
                 max_position_embeddings {positions} (text_encoder{suffix}/config.json)",
                tokenizer.max_length()
            ),
        });
    }
    Ok((tokenizer, text_encoder, base))
}

/// Read the scheduler config and build it once, so a bad value is reported at load time with
/// the file's name rather than at the first generation.
fn load_scheduler_config(path: &Path) -> Result<SchedulerConfig> {
    let config = SchedulerConfig::from_file(path)?;
    config.build(10).map_err(|e| Error::Config {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(config)
}

/// One model component: `dir/config.json`, validated, and the weights file chosen for
/// `variant` (returned: LoRAs re-read base weights from it); every tensor must be used.
fn component<C: DeserializeOwned, M>(
    dir: &Path,
    variant: Option<&str>,
    notes: &mut Vec<String>,
    validate: impl FnOnce(&C, &Path) -> Result<()>,
    load: impl FnOnce(&WeightsView, C) -> Result<M>,
) -> Result<(M, PathBuf)> {
    let config_path = dir.join("config.json");
    let config: C = read_config(&config_path)?;
    validate(&config, &config_path)?;
    let resolved = resolve_dir(dir, variant)?;
    notes.extend(resolved.note);
    let weights = Weights::open(&resolved.path)?;
    let model = load(&weights.root(), config)?;
    weights.finish()?;
    Ok((model, resolved.path))
}

/// One line naming the components of `model_index.json` that a text-to-image pipeline does not
/// use (entries such as `"safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]`;
/// `[null, null]` entries are absent components and not mentioned).
fn unused_components(index: &serde_json::Value, used: &[&str]) -> Option<String> {
    let map = index.as_object()?;
    let unused: Vec<&str> = map
        .iter()
        .filter(|(k, v)| {
            !k.starts_with('_')
                && !used.contains(&k.as_str())
                && v.as_array().is_some_and(|a| a.iter().any(|x| !x.is_null()))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    (!unused.is_empty()).then(|| {
        format!(
            "model_index.json lists components stipple does not use ({}): ignored",
            unused.join(", ")
        )
    })
}
