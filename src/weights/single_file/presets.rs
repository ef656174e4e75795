//! Built-in component configs for single files, which carry none: the published diffusers
//! configs of `stable-diffusion-v1-5/stable-diffusion-v1-5`, `stabilityai/stable-diffusion-2-1-base`
//! and `stabilityai/stable-diffusion-2-1` (the fields stipple reads; the rest take the same
//! defaults). Kept as JSON so `stipple convert` writes them into a folder as they are.
//!
//! Scheduler: PNDM with the SD training schedule (scaled_linear 0.00085–0.012, 1000 steps,
//! `steps_offset` 1, `set_alpha_to_one` false, `skip_prk_steps` true) for every family, with
//! the family's prediction type (SD2.1-768 publishes DDIM with the same schedule; `--scheduler`
//! picks another one).

use super::detect::Family;

const SD1_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}
"#;

/// SD2.1: `attention_head_dim` per block, OpenCLIP-H context, linear projections; `{SIZE}` and
/// `{UPCAST}` differ between 2.1-base (64, false) and 2.1-768 (96, true).
const SD2_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": [5, 10, 20, 20],
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
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
  "resnet_time_scale_shift": "default",
  "sample_size": {SIZE},
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": {UPCAST},
  "use_linear_projection": true
}
"#;

/// `{SIZE}`: 512 for SD1.5 and 2.1-base, 768 for 2.1-768.
const VAE: &str = r#"{
  "_class_name": "AutoencoderKL",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": {SIZE},
  "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}
"#;

/// OpenAI CLIP ViT-L/14's text model.
const SD1_TEXT_ENCODER: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "vocab_size": 49408
}
"#;

/// OpenCLIP ViT-H/14's text model, cut to the 23 layers SD2 uses.
const SD2_TEXT_ENCODER: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "gelu",
  "hidden_size": 1024,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 4096,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 16,
  "num_hidden_layers": 23,
  "pad_token_id": 1,
  "projection_dim": 512,
  "vocab_size": 49408
}
"#;

/// `{PREDICTION}`: `epsilon` or `v_prediction`.
const SCHEDULER: &str = r#"{
  "_class_name": "PNDMScheduler",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "prediction_type": "{PREDICTION}",
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "timestep_spacing": "leading",
  "trained_betas": null
}
"#;

/// The config files of one family, as JSON text (diffusers folder layout).
#[derive(Clone, Debug)]
pub struct Preset {
    /// The published model these configs are taken from.
    pub name: &'static str,
    pub unet: String,
    pub vae: String,
    pub text_encoder: String,
    pub scheduler: String,
    /// The tokenizer's pad token: `<|endoftext|>` (SD1.x) or `!` (SD2.x, OpenCLIP).
    pub pad_token: &'static str,
}

impl Preset {
    pub fn for_family(family: Family) -> Preset {
        let (name, unet, size, prediction) = match family {
            Family::Sd1 => (
                "stable-diffusion-v1-5",
                SD1_UNET.to_string(),
                512,
                "epsilon",
            ),
            Family::Sd2Base => (
                "stable-diffusion-2-1-base",
                sd2_unet(64, false),
                512,
                "epsilon",
            ),
            Family::Sd2V => (
                "stable-diffusion-2-1",
                sd2_unet(96, true),
                768,
                "v_prediction",
            ),
        };
        Preset {
            name,
            unet,
            vae: VAE.replace("{SIZE}", &size.to_string()),
            text_encoder: if family.is_sd2() {
                SD2_TEXT_ENCODER
            } else {
                SD1_TEXT_ENCODER
            }
            .to_string(),
            scheduler: SCHEDULER.replace("{PREDICTION}", prediction),
            pad_token: if family.is_sd2() {
                "!"
            } else {
                crate::tokenizer::EOS_TOKEN
            },
        }
    }
}

fn sd2_unet(sample_size: usize, upcast: bool) -> String {
    SD2_UNET
        .replace("{SIZE}", &sample_size.to_string())
        .replace("{UPCAST}", &upcast.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::config::{
        AutoencoderKLConfig, ClipTextConfig, PerBlock, UNet2DConditionConfig,
    };
    use crate::schedulers::{PredictionType, SchedulerConfig};

    fn parse<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn sd1_preset_is_sd15() {
        let p = Preset::for_family(Family::Sd1);
        let unet: UNet2DConditionConfig = parse(&p.unet);
        assert_eq!(unet.cross_attention_dim, 768);
        assert_eq!(unet.attention_head_dim, PerBlock::One(8));
        assert!(!unet.use_linear_projection);
        assert_eq!(unet.sample_size, Some(64));
        let text: ClipTextConfig = parse(&p.text_encoder);
        assert_eq!(
            (
                text.hidden_size,
                text.num_hidden_layers,
                text.hidden_act.as_str()
            ),
            (768, 12, "quick_gelu")
        );
        let vae: AutoencoderKLConfig = parse(&p.vae);
        assert_eq!((vae.scaling_factor, vae.sample_size), (0.18215, Some(512)));
        let s: SchedulerConfig = parse(&p.scheduler);
        assert_eq!(s.prediction_type, PredictionType::Epsilon);
        assert_eq!(
            s,
            SchedulerConfig {
                prediction_type: PredictionType::Epsilon,
                timestep_spacing: s.timestep_spacing,
                trained_betas: None,
                ..SchedulerConfig::stable_diffusion()
            }
        );
    }

    #[test]
    fn sd2_presets() {
        for (family, size, upcast, prediction) in [
            (Family::Sd2Base, 64, false, PredictionType::Epsilon),
            (Family::Sd2V, 96, true, PredictionType::VPrediction),
        ] {
            let p = Preset::for_family(family);
            let unet: UNet2DConditionConfig = parse(&p.unet);
            assert_eq!(unet.cross_attention_dim, 1024);
            assert_eq!(unet.attention_head_dim, PerBlock::Each(vec![5, 10, 20, 20]));
            assert!(unet.use_linear_projection);
            assert_eq!(
                (unet.sample_size, unet.upcast_attention),
                (Some(size), upcast)
            );
            let text: ClipTextConfig = parse(&p.text_encoder);
            assert_eq!(
                (
                    text.hidden_size,
                    text.num_hidden_layers,
                    text.hidden_act.as_str()
                ),
                (1024, 23, "gelu")
            );
            let vae: AutoencoderKLConfig = parse(&p.vae);
            assert_eq!(vae.sample_size, Some(size * 8));
            let s: SchedulerConfig = parse(&p.scheduler);
            assert_eq!(s.prediction_type, prediction);
            assert_eq!(p.pad_token, "!");
        }
    }
}
