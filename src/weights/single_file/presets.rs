//! Built-in component configs for single files, which carry none: the published diffusers
//! configs of `stable-diffusion-v1-5/stable-diffusion-v1-5`, `stabilityai/stable-diffusion-2-1-base`
//! and `stabilityai/stable-diffusion-2-1`, from [`crate::weights::published_configs`] (the one
//! copy `init-random` writes too). Kept as JSON text so `stipple convert` writes them into a
//! folder as they are.
//!
//! Scheduler: PNDM with the SD training schedule (scaled_linear 0.00085–0.012, 1000 steps,
//! `steps_offset` 1, `set_alpha_to_one` false, `skip_prk_steps` true) for every family, with
//! the family's prediction type (SD2.1-768 publishes DDIM with the same schedule; `--scheduler`
//! picks another one).

use super::detect::Family;
use crate::weights::published_configs::Family as Published;

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
        let (name, published, prediction) = match family {
            Family::Sd1 => ("stable-diffusion-v1-5", Published::Sd15, "epsilon"),
            Family::Sd2Base => ("stable-diffusion-2-1-base", Published::Sd21Base, "epsilon"),
            Family::Sd2V => ("stable-diffusion-2-1", Published::Sd21_768, "v_prediction"),
        };
        let configs = published.configs();
        let text = |v: &serde_json::Value| {
            serde_json::to_string_pretty(v).expect("a JSON value always serialises")
        };
        Preset {
            name,
            unet: text(&configs.unet),
            vae: text(&configs.vae),
            text_encoder: text(&configs.text_encoder),
            scheduler: SCHEDULER.replace("{PREDICTION}", prediction),
            pad_token: if family.is_sd2() {
                "!"
            } else {
                crate::tokenizer::EOS_TOKEN
            },
        }
    }
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
