//! The component configs of the Stable Diffusion families as published with their diffusers
//! folders on the Hugging Face Hub (runwayml/stable-diffusion-v1-5,
//! stabilityai/stable-diffusion-2-1-base, stabilityai/stable-diffusion-2-1, stabilityai/sd-turbo),
//! limited to the fields diffusers reads for these models. Used to write full-size random
//! checkpoints (`stipple init-random`) with the real architecture.
//!
//! The families differ in: text encoder (CLIP ViT-L/14, 12 layers, quick_gelu, 768 wide, for
//! SD1.x; OpenCLIP ViT-H/14's text tower as diffusers keeps it, 23 layers, gelu, 1024 wide, for
//! SD2.x), UNet heads and projections (8 heads and 1×1-conv projections for SD1.x; 64-wide heads,
//! linear projections and cross-attention width 1024 for SD2.x; attention upcast in SD2.1-768),
//! native size (`sample_size` 64 latents = 512 px, 96 = 768 px), and scheduler (PNDM epsilon;
//! DDIM v-prediction for SD2.1-768; Euler with trailing spacing for SD-Turbo).
//!
//! SDXL (stabilityai/stable-diffusion-xl-base-1.0) and SDXL-Turbo (stabilityai/sdxl-turbo) share
//! one architecture: CLIP ViT-L/14 (`text_encoder`) + OpenCLIP ViT-bigG/14 with projection
//! (`text_encoder_2`: 32 layers, gelu, 1280 wide, projection 1280), a 3-level UNet (320, 640,
//! 1280; no attention at level 0, `transformer_layers_per_block` [1, 2, 10], mid 10;
//! `attention_head_dim` [5, 10, 20] = heads of 64 channels; cross-attention 2048;
//! `addition_embed_type` `text_time` with `addition_time_embed_dim` 256 and
//! `projection_class_embeddings_input_dim` 2816 = 1280 pooled + 6 × 256 time ids), the SD VAE
//! shape with scaling 0.13025 and `force_upcast`. They differ in native size (base 1024 px,
//! `sample_size` 128; Turbo 512 px, 64) and scheduler (Euler, leading spacing; Turbo: Euler
//! ancestral, trailing). Written from the published config files; the tensor names and shapes
//! they give are checked against diffusers/transformers (tests/fixtures/full_size/sdxl.json). The
//! SDXL UNet block was compared field by field with a public copy of the base model's
//! `unet/config.json` (identical, `upcast_attention: null` included); the scheduler blocks with
//! diffusers' SDXL defaults (scaled_linear 0.00085–0.012, `steps_offset` 1).
//!
//! Checked against published copies (2026-12-04, through the project's search index; field by
//! field for the fields written here, values only — nothing copied):
//! - schedulers: `stabilityai/sd-turbo` `scheduler/scheduler_config.json` (revision b335f733:
//!   EulerDiscreteScheduler, epsilon, `timestep_spacing` trailing, `steps_offset` 1,
//!   `interpolation_type` linear, no Karras sigmas); `stabilityai/sdxl-turbo` (refs/pr/4:
//!   EulerAncestralDiscreteScheduler, trailing); `stabilityai/stable-diffusion-xl-base-1.0`
//!   (refs/pr/94: EulerDiscreteScheduler, leading, `use_karras_sigmas` false); SD1.5 (copies of
//!   runwayml/stable-diffusion-v1-5, e.g. jcplus/stable-diffusion-v1-5: PNDM, no
//!   `prediction_type`, i.e. epsilon); SD2.1-base (a "Duplicate from
//!   stabilityai/stable-diffusion-2-1-base": PNDM, epsilon); SD2.1 (copies such as
//!   echarlaix/stable-diffusion-2-1-openvino: DDIM, v_prediction). All: scaled_linear
//!   0.00085–0.012, 1000 steps, `set_alpha_to_one` false, `skip_prk_steps` true. No difference
//!   found.
//! - UNet `sample_size`: SD-Turbo 64 with `upcast_attention` null and linear projections (a
//!   dump of the sd-turbo snapshot b261bac6's `unet` config), SDXL-Turbo 64 (a copy of the
//!   sdxl-turbo snapshot 8fce7b55's `unet/config.json`), SDXL base 128 (only in copies of
//!   SDXL fine-tunes' UNet configs; the base snapshot's copy found was cut before the field),
//!   SD2.x 768-px models 96
//!   (patrickvonplaten's "Correct `sample_size` of Stable Diffusion 2's unet" commits), SD1.x
//!   and SD2-base 64 (stabilityai/stable-diffusion-2-base commit 5a4e220: 32 → 64). SD-Turbo's
//!   `upcast_attention` was written `false` and is now `null` as published (same meaning).
//!   Not re-checked here: SD2.1-768's `upcast_attention` true, and the VAE `sample_size`s.

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A model family `init-random` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.5 (512 px, CLIP ViT-L/14).
    Sd15,
    /// Stable Diffusion 2.1-base (512 px, epsilon prediction).
    Sd21Base,
    /// Stable Diffusion 2.1 (768 px, v-prediction).
    Sd21_768,
    /// SD-Turbo (SD2.1 architecture, 512 px, 1–4 steps with Euler, trailing spacing).
    SdTurbo,
    /// SDXL base 1.0 (1024 px, two text encoders, `text_time`).
    SdxlBase,
    /// SDXL-Turbo (SDXL architecture, 512 px, 1–4 steps with Euler ancestral, trailing).
    SdxlTurbo,
}

/// Every family, with its command-line name.
pub const FAMILIES: [(&str, Family); 6] = [
    ("sd15", Family::Sd15),
    ("sd21", Family::Sd21Base),
    ("sd21-768", Family::Sd21_768),
    ("sd-turbo", Family::SdTurbo),
    ("sdxl", Family::SdxlBase),
    ("sdxl-turbo", Family::SdxlTurbo),
];

/// The configs of one family's diffusers folder.
pub struct FamilyConfigs {
    pub model_index: Value,
    pub scheduler: Value,
    pub text_encoder: Value,
    /// SDXL's `CLIPTextModelWithProjection` (None for SD1.x/SD2.x).
    pub text_encoder_2: Option<Value>,
    pub unet: Value,
    pub vae: Value,
}

const DOWN: [&str; 4] = [
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D",
];
const UP: [&str; 4] = [
    "UpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
];

const ENCODER_BLOCKS: [&str; 4] = ["DownEncoderBlock2D"; 4];
const DECODER_BLOCKS: [&str; 4] = ["UpDecoderBlock2D"; 4];

impl Family {
    /// The family named `name` (`sd15`, `sd21`, `sd21-768`, `sd-turbo`).
    pub fn parse(name: &str) -> Result<Family> {
        FAMILIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, f)| f)
            .ok_or_else(|| {
                let known: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
                Error::invalid("family", format!("{name:?} (known: {})", known.join(", ")))
            })
    }

    pub fn name(self) -> &'static str {
        FAMILIES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// SD2.x text encoder and UNet.
    pub fn is_sd2(self) -> bool {
        matches!(self, Family::Sd21Base | Family::Sd21_768 | Family::SdTurbo)
    }

    /// The SDXL architecture (two text encoders).
    pub fn is_sdxl(self) -> bool {
        matches!(self, Family::SdxlBase | Family::SdxlTurbo)
    }

    pub fn configs(self) -> FamilyConfigs {
        if self.is_sdxl() {
            return sdxl_configs(self == Family::SdxlTurbo);
        }
        let sd2 = self.is_sd2();
        // SD-Turbo publishes `upcast_attention: null` (diffusers' default, false).
        let (sample_size, upcast) = match self {
            Family::Sd21_768 => (96, json!(true)),
            Family::SdTurbo => (64, Value::Null),
            _ => (64, json!(false)),
        };
        let scheduler_common = json!({
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": false,
            "skip_prk_steps": true,
            "steps_offset": 1,
            "trained_betas": null,
            "clip_sample": false,
        });
        let scheduler = match self {
            Family::Sd15 => with(scheduler_common, json!({"_class_name": "PNDMScheduler"})),
            Family::Sd21Base => with(
                scheduler_common,
                json!({"_class_name": "PNDMScheduler", "prediction_type": "epsilon"}),
            ),
            Family::Sd21_768 => with(
                scheduler_common,
                json!({"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}),
            ),
            // (SDXL families returned above.)
            Family::SdTurbo | Family::SdxlBase | Family::SdxlTurbo => with(
                scheduler_common,
                json!({
                    "_class_name": "EulerDiscreteScheduler",
                    "interpolation_type": "linear",
                    "prediction_type": "epsilon",
                    "timestep_spacing": "trailing",
                    "use_karras_sigmas": false,
                }),
            ),
        };
        let text_encoder = if sd2 {
            json!({
                "architectures": ["CLIPTextModel"],
                "hidden_act": "gelu",
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_attention_heads": 16,
                "num_hidden_layers": 23,
                "projection_dim": 512,
            })
        } else {
            json!({
                "architectures": ["CLIPTextModel"],
                "hidden_act": "quick_gelu",
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_attention_heads": 12,
                "num_hidden_layers": 12,
                "projection_dim": 768,
            })
        };
        let text_encoder = with(
            text_encoder,
            json!({
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "dropout": 0.0,
                "eos_token_id": 2,
                "initializer_factor": 1.0,
                "initializer_range": 0.02,
                "layer_norm_eps": 1e-05,
                "max_position_embeddings": 77,
                "model_type": "clip_text_model",
                "pad_token_id": 1,
                "vocab_size": 49408,
            }),
        );
        let unet = json!({
            "_class_name": "UNet2DConditionModel",
            "act_fn": "silu",
            "attention_head_dim": if sd2 { json!([5, 10, 20, 20]) } else { json!(8) },
            "block_out_channels": [320, 640, 1280, 1280],
            "center_input_sample": false,
            "cross_attention_dim": if sd2 { 1024 } else { 768 },
            "down_block_types": DOWN,
            "downsample_padding": 1,
            "dual_cross_attention": false,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": 4,
            "layers_per_block": 2,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-05,
            "norm_num_groups": 32,
            "num_class_embeds": null,
            "only_cross_attention": false,
            "out_channels": 4,
            "sample_size": sample_size,
            "up_block_types": UP,
            "use_linear_projection": sd2,
            "upcast_attention": upcast,
        });
        let vae = json!({
            "_class_name": "AutoencoderKL",
            "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ENCODER_BLOCKS,
            "in_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "out_channels": 3,
            "sample_size": sample_size * 8,
            "scaling_factor": 0.18215,
            "up_block_types": DECODER_BLOCKS,
        });
        let model_index = json!({
            "_class_name": "StableDiffusionPipeline",
            "scheduler": ["diffusers", scheduler["_class_name"]],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        });
        FamilyConfigs {
            model_index,
            scheduler,
            text_encoder,
            text_encoder_2: None,
            unet,
            vae,
        }
    }
}

/// The fields every published CLIP text config has (both SDXL encoders, SD1.x, SD2.x).
fn clip_common() -> Value {
    json!({
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "pad_token_id": 1,
        "vocab_size": 49408,
    })
}

/// SDXL base 1.0 or SDXL-Turbo (see the module docs).
fn sdxl_configs(turbo: bool) -> FamilyConfigs {
    let sample_size = if turbo { 64 } else { 128 };
    let common = json!({
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "sample_max_value": 1.0,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
        "use_karras_sigmas": false,
    });
    let scheduler = if turbo {
        with(
            common,
            json!({"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"}),
        )
    } else {
        with(
            common,
            json!({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading"}),
        )
    };
    let text_encoder = with(
        json!({
            "architectures": ["CLIPTextModel"],
            "hidden_act": "quick_gelu",
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "projection_dim": 768,
        }),
        clip_common(),
    );
    let text_encoder_2 = with(
        json!({
            "architectures": ["CLIPTextModelWithProjection"],
            "hidden_act": "gelu",
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_attention_heads": 20,
            "num_hidden_layers": 32,
            "projection_dim": 1280,
        }),
        clip_common(),
    );
    let unet = json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280],
        "center_input_sample": false,
        "class_embed_type": null,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": false,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": null,
        "num_class_embeds": null,
        "only_cross_attention": false,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": 2816,
        "resnet_time_scale_shift": "default",
        "sample_size": sample_size,
        "time_embedding_type": "positional",
        "transformer_layers_per_block": [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": null,
        "use_linear_projection": true,
    });
    let vae = json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ENCODER_BLOCKS,
        "force_upcast": true,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": sample_size * 8,
        "scaling_factor": 0.13025,
        "up_block_types": DECODER_BLOCKS,
    });
    let model_index = json!({
        "_class_name": "StableDiffusionXLPipeline",
        "force_zeros_for_empty_prompt": true,
        "scheduler": ["diffusers", scheduler["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    FamilyConfigs {
        model_index,
        scheduler,
        text_encoder,
        text_encoder_2: Some(text_encoder_2),
        unet,
        vae,
    }
}

/// `base` with the fields of `extra` added (both objects).
fn with(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}
