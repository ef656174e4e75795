//! Built-in component configs for single files, which carry none: the published diffusers
//! configs of `stable-diffusion-v1-5/stable-diffusion-v1-5`, `stabilityai/stable-diffusion-2-1-base`,
//! `stabilityai/stable-diffusion-2-1`, `stabilityai/stable-diffusion-xl-base-1.0` and
//! `stabilityai/sdxl-turbo`, from [`crate::weights::published_configs`] (the one
//! copy `init-random` writes too). Kept as JSON text so `stipple convert` writes them into a
//! folder as they are.
//!
//! Scheduler: PNDM with the SD training schedule (scaled_linear 0.00085–0.012, 1000 steps,
//! `steps_offset` 1, `set_alpha_to_one` false, `skip_prk_steps` true) for every family, with
//! the family's prediction type (SD2.1-768 publishes DDIM with the same schedule; `--scheduler`
//! picks another one). SDXL files get SDXL base's published scheduler (Euler, leading) by
//! default; SDXL-Turbo files hold the same tensors and cannot be told apart, so the Turbo preset
//! (Euler ancestral, trailing spacing, 512 px) is chosen by name ([`Preset::named`],
//! `--preset sdxl-turbo`). Likewise SD-Turbo files hold SD2.1's tensors: `--preset sd-turbo`
//! gives stabilityai/sd-turbo's published configs (SD2.1-base architecture, 512 px, epsilon,
//! Euler with trailing spacing).

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
    /// SDXL's `CLIPTextModelWithProjection`; its tokenizer pads with `!` (OpenCLIP).
    pub text_encoder_2: Option<String>,
    pub scheduler: String,
    /// The tokenizer's pad token: `<|endoftext|>` (SD1.x, SDXL's first) or `!` (SD2.x, OpenCLIP).
    pub pad_token: &'static str,
}

/// Presets that can be asked for by name (`--preset`), with the family they fit.
pub const NAMED: [(&str, Family); 6] = [
    ("sd15", Family::Sd1),
    ("sd21", Family::Sd2Base),
    ("sd21-768", Family::Sd2V),
    ("sd-turbo", Family::Sd2Base),
    ("sdxl", Family::Sdxl),
    ("sdxl-turbo", Family::Sdxl),
];

impl Preset {
    pub fn for_family(family: Family) -> Preset {
        let (name, published, prediction) = match family {
            Family::Sd1 => ("stable-diffusion-v1-5", Published::Sd15, "epsilon"),
            Family::Sd2Base => ("stable-diffusion-2-1-base", Published::Sd21Base, "epsilon"),
            Family::Sd2V => ("stable-diffusion-2-1", Published::Sd21_768, "v_prediction"),
            Family::Sdxl => (
                "stable-diffusion-xl-base-1.0",
                Published::SdxlBase,
                "epsilon",
            ),
        };
        let configs = published.configs();
        // SDXL publishes its own scheduler config; SD files share the PNDM one above.
        let scheduler = match family {
            Family::Sdxl => text(&configs.scheduler),
            _ => SCHEDULER.replace("{PREDICTION}", prediction),
        };
        Preset {
            name,
            unet: text(&configs.unet),
            vae: text(&configs.vae),
            text_encoder: text(&configs.text_encoder),
            text_encoder_2: configs.text_encoder_2.as_ref().map(text),
            scheduler,
            pad_token: if family.is_sd2() {
                "!"
            } else {
                crate::tokenizer::EOS_TOKEN
            },
        }
    }

    /// The preset called `name` (see [`NAMED`]) for a file of `family`: an error when the
    /// preset is for another architecture, or unknown.
    pub fn named(name: &str, family: Family) -> crate::error::Result<Preset> {
        let known: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
        let Some(&(_, fits)) = NAMED.iter().find(|(n, _)| *n == name) else {
            return Err(crate::error::Error::invalid(
                "preset",
                format!("{name:?} (known: {})", known.join(", ")),
            ));
        };
        let same_architecture = fits == family || (fits.is_sd2() && family.is_sd2());
        if !same_architecture {
            return Err(crate::error::Error::invalid(
                "preset",
                format!(
                    "{name} is for {} checkpoints, this file is {}",
                    fits.name(),
                    family.name()
                ),
            ));
        }
        if name == "sd-turbo" {
            // SD2.1 tensors; SD-Turbo's published UNet (512 px) and Euler/trailing scheduler.
            let configs = Published::SdTurbo.configs();
            return Ok(Preset {
                name: "sd-turbo",
                unet: text(&configs.unet),
                vae: text(&configs.vae),
                scheduler: text(&configs.scheduler),
                ..Preset::for_family(Family::Sd2Base)
            });
        }
        if name == "sdxl-turbo" {
            let configs = Published::SdxlTurbo.configs();
            return Ok(Preset {
                name: "sdxl-turbo",
                unet: text(&configs.unet),
                vae: text(&configs.vae),
                scheduler: text(&configs.scheduler),
                ..Preset::for_family(Family::Sdxl)
            });
        }
        Ok(Preset::for_family(fits))
    }
}

fn text(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("a JSON value always serialises")
}

#[cfg(test)]
mod sdxl_tests {
    use super::*;
    use crate::models::config::{AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};
    use crate::schedulers::SchedulerConfig;

    #[test]
    fn sdxl_base_and_turbo_presets() {
        for (preset, size, spacing) in [
            (Preset::for_family(Family::Sdxl), 128, "leading"),
            (
                Preset::named("sdxl-turbo", Family::Sdxl).unwrap(),
                64,
                "trailing",
            ),
        ] {
            let unet: UNet2DConditionConfig = serde_json::from_str(&preset.unet).unwrap();
            assert_eq!(unet.sample_size, Some(size));
            assert_eq!(unet.cross_attention_dim, 2048);
            assert_eq!(unet.projection_class_embeddings_input_dim, Some(2816));
            let vae: AutoencoderKLConfig = serde_json::from_str(&preset.vae).unwrap();
            assert_eq!((vae.scaling_factor, vae.force_upcast), (0.13025, true));
            let two: ClipTextConfig =
                serde_json::from_str(preset.text_encoder_2.as_ref().unwrap()).unwrap();
            assert_eq!((two.hidden_size, two.num_hidden_layers), (1280, 32));
            let s: serde_json::Value = serde_json::from_str(&preset.scheduler).unwrap();
            assert_eq!(s["timestep_spacing"], spacing);
            let parsed: SchedulerConfig = serde_json::from_str(&preset.scheduler).unwrap();
            parsed.build(4).unwrap();
        }
        let m = Preset::named("sdxl-turbo", Family::Sd1)
            .unwrap_err()
            .to_string();
        assert!(m.contains("is for SDXL checkpoints"), "{m}");
        assert!(Preset::named("sd3", Family::Sdxl).is_err());
        assert_eq!(
            Preset::named("sd21", Family::Sd2V).unwrap().name,
            "stable-diffusion-2-1-base"
        );
    }
}

#[cfg(test)]
mod sd_turbo_tests {
    use super::*;
    use crate::models::config::UNet2DConditionConfig;
    use crate::schedulers::{PredictionType, SchedulerConfig};

    #[test]
    fn sd_turbo_preset_is_sd21_base_with_turbo_scheduler() {
        for family in [Family::Sd2Base, Family::Sd2V] {
            let p = Preset::named("sd-turbo", family).unwrap();
            let base = Preset::for_family(Family::Sd2Base);
            assert_eq!(p.name, "sd-turbo");
            assert_eq!(
                (p.text_encoder.as_str(), p.pad_token),
                (base.text_encoder.as_str(), "!")
            );
            let unet: UNet2DConditionConfig = serde_json::from_str(&p.unet).unwrap();
            let base_unet: UNet2DConditionConfig = serde_json::from_str(&base.unet).unwrap();
            assert_eq!(unet.sample_size, Some(64));
            assert_eq!(
                format!("{unet:?}"),
                format!("{base_unet:?}"),
                "same architecture"
            );
            let s: SchedulerConfig = serde_json::from_str(&p.scheduler).unwrap();
            let raw: serde_json::Value = serde_json::from_str(&p.scheduler).unwrap();
            assert_eq!(raw["_class_name"], "EulerDiscreteScheduler");
            assert_eq!(raw["timestep_spacing"], "trailing");
            assert_eq!(s.prediction_type, PredictionType::Epsilon);
            // One trailing step lands on the last training timestep, 999.
            assert_eq!(s.build(1).unwrap().timesteps(), &[999.0]);
        }
        let m = Preset::named("sd-turbo", Family::Sd1)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("sd-turbo is for SD2.x (512, epsilon) checkpoints"),
            "{m}"
        );
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
