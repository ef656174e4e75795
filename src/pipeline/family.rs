//! Model families as small descriptions: which text encoders a family has, which of their states
//! become the UNet's conditioning (context, pooled `text_embeds`, `time_ids`), and how its VAE and
//! empty negative prompts are treated. The denoising loop, CFG, schedulers and decode are shared
//! (`pipeline/mod.rs`); the family only changes what goes into the UNet and how the VAE runs.
//!
//! | family | encoders | context | extra UNet inputs | VAE |
//! |---|---|---|---|---|
//! | Stable Diffusion 1.x/2.x (`StableDiffusionPipeline`) | text_encoder | last_hidden_state | none | storage dtype |
//! | SDXL / SDXL-Turbo (`StableDiffusionXLPipeline`) | text_encoder, text_encoder_2 (with projection) | both encoders' `hidden_states[-2]` concatenated on channels | `text_embeds` (pooled, projected text_encoder_2), `time_ids` | f32 when f16 and `force_upcast` |
//!
//! Defaults (image size) come from the model itself: UNet `sample_size` × VAE factor (SDXL base
//! 128 × 8 = 1024, SDXL-Turbo 64 × 8 = 512); the VAE scaling factor from `vae/config.json`
//! (SDXL 0.13025).

use std::path::Path;

use crate::error::{Error, Result};
use crate::models::clip::{ClipTextModel, PromptEmbeds};
use crate::models::unet_2d_condition::UNet2DConditionModel;

/// The pipeline family of a model folder (diffusers' `_class_name` in `model_index.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `StableDiffusionPipeline`: SD1.x, SD2.x (one CLIP text encoder).
    StableDiffusion,
    /// `StableDiffusionXLPipeline`: SDXL base and SDXL-Turbo (two text encoders, `text_time`).
    StableDiffusionXL,
}

impl Family {
    /// The family of a `model_index.json`: SDXL when it lists a `text_encoder_2` component
    /// (`StableDiffusionXLPipeline` and its Turbo checkpoints), else Stable Diffusion.
    pub fn from_model_index(json: &serde_json::Value) -> Family {
        let listed = |c: &str| {
            json.get(c)
                .is_some_and(|v| !v.is_null() && v.get(0).is_none_or(|x| !x.is_null()))
        };
        if listed("text_encoder_2") {
            Family::StableDiffusionXL
        } else {
            Family::StableDiffusion
        }
    }

    /// Short name, as `stipple info` and the PNG notes print it.
    pub fn name(self) -> &'static str {
        match self {
            Family::StableDiffusion => "sd",
            Family::StableDiffusionXL => "sdxl",
        }
    }

    /// The component folders the family's pipeline needs.
    pub fn components(self) -> &'static [&'static str] {
        match self {
            Family::StableDiffusion => &["tokenizer", "text_encoder", "unet", "vae", "scheduler"],
            Family::StableDiffusionXL => &[
                "tokenizer",
                "tokenizer_2",
                "text_encoder",
                "text_encoder_2",
                "unet",
                "vae",
                "scheduler",
            ],
        }
    }

    /// Which state of a text encoder with `num_layers` layers is the prompt embedding, with
    /// diffusers' `clip_skip` (the number of final layers skipped; diffusers applies it to the
    /// prompt only, never to the negative prompt).
    pub fn prompt_embeds(
        self,
        num_layers: usize,
        clip_skip: Option<usize>,
    ) -> Result<PromptEmbeds> {
        // hidden_states has num_layers + 1 entries (embeddings, then each layer's output).
        let index = |from_end: usize| {
            (num_layers + 1).checked_sub(from_end).ok_or_else(|| {
                Error::invalid(
                    "clip skip",
                    format!(
                        "{} is more layers than the text encoder's {num_layers} allow",
                        clip_skip.unwrap_or(0)
                    ),
                )
            })
        };
        Ok(match (self, clip_skip) {
            (Family::StableDiffusion, None) => PromptEmbeds::LastHiddenState,
            // final_layer_norm(hidden_states[-(clip_skip + 1)])
            (Family::StableDiffusion, Some(k)) => PromptEmbeds::NormedHiddenState(index(k + 1)?),
            // hidden_states[-2], or hidden_states[-(clip_skip + 2)]
            (Family::StableDiffusionXL, k) => PromptEmbeds::HiddenState(index(k.unwrap_or(0) + 2)?),
        })
    }

    /// Whether the pipeline decodes in f32 when the model is f16 and the VAE's config says
    /// `force_upcast` (diffusers' SDXL pipelines do; StableDiffusionPipeline never does).
    pub fn honours_force_upcast(self) -> bool {
        self == Family::StableDiffusionXL
    }

    /// Whether the UNet takes pooled `text_embeds` and `time_ids`.
    pub fn has_time_ids(self) -> bool {
        self == Family::StableDiffusionXL
    }
}

/// Check that the UNet (config at `file`) fits the family's text encoders: its
/// `cross_attention_dim` is the encoders' widths side by side, and SDXL's `text_time` embedding
/// takes text_encoder_2's projection.
pub fn check_unet(
    family: Family,
    file: &Path,
    unet: &UNet2DConditionModel,
    text_encoder: &ClipTextModel,
    text_encoder_2: Option<&ClipTextModel>,
) -> Result<()> {
    let bad = |message: String| {
        Err(Error::Config {
            file: file.to_path_buf(),
            message,
        })
    };
    let c = &unet.config;
    let widths =
        text_encoder.config.hidden_size + text_encoder_2.map_or(0, |e| e.config.hidden_size);
    if c.cross_attention_dim != widths {
        return bad(format!(
            "cross_attention_dim = {} but the text encoders give {widths} channels",
            c.cross_attention_dim
        ));
    }
    match (family, unet.text_time(), text_encoder_2) {
        (Family::StableDiffusion, None, _) => Ok(()),
        (Family::StableDiffusion, Some(_), _) => bad(
            "addition_embed_type \"text_time\" needs an SDXL pipeline (text_encoder_2 in model_index.json)"
                .into(),
        ),
        (Family::StableDiffusionXL, Some(t), Some(e2)) => {
            if !e2.has_projection() {
                return bad("text_encoder_2 has no text_projection.weight (CLIPTextModelWithProjection needed)".into());
            }
            if t.text_embeds_dim != e2.config.projection_dim {
                return bad(format!(
                    "projection_class_embeddings_input_dim leaves {} channels for text_embeds, \
                     text_encoder_2's projection_dim is {}",
                    t.text_embeds_dim, e2.config.projection_dim
                ));
            }
            if e2.config.max_position_embeddings != text_encoder.config.max_position_embeddings {
                return bad("text_encoder and text_encoder_2 have different max_position_embeddings".into());
            }
            Ok(())
        }
        (Family::StableDiffusionXL, _, _) => bad(
            "an SDXL pipeline needs addition_embed_type \"text_time\" and text_encoder_2".into(),
        ),
    }
}

/// SDXL's size micro-conditioning (diffusers' `original_size`, `crops_coords_top_left`,
/// `target_size`, each (height, width) or (top, left)). None = the output size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeConditioning {
    pub original_size: Option<[usize; 2]>,
    pub crops_coords_top_left: [usize; 2],
    pub target_size: Option<[usize; 2]>,
}

impl SizeConditioning {
    /// `_get_add_time_ids`: [orig_h, orig_w, crop_top, crop_left, target_h, target_w] for an
    /// image of `height` × `width`.
    pub fn time_ids(&self, height: usize, width: usize) -> [f32; 6] {
        let [oh, ow] = self.original_size.unwrap_or([height, width]);
        let [ct, cl] = self.crops_coords_top_left;
        let [th, tw] = self.target_size.unwrap_or([height, width]);
        [oh, ow, ct, cl, th, tw].map(|v| v as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ids_default_to_the_output_size() {
        let s = SizeConditioning::default();
        assert_eq!(s.time_ids(16, 24), [16.0, 24.0, 0.0, 0.0, 16.0, 24.0]);
        let s = SizeConditioning {
            original_size: Some([32, 40]),
            crops_coords_top_left: [4, 2],
            target_size: Some([24, 16]),
        };
        assert_eq!(s.time_ids(16, 24), [32.0, 40.0, 4.0, 2.0, 24.0, 16.0]);
    }

    #[test]
    fn family_from_model_index() {
        let xl = serde_json::json!({"_class_name": "StableDiffusionXLPipeline",
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]});
        let sd = serde_json::json!({"_class_name": "StableDiffusionPipeline",
            "text_encoder": ["transformers", "CLIPTextModel"]});
        let none = serde_json::json!({"text_encoder_2": [null, null]});
        assert_eq!(Family::from_model_index(&xl), Family::StableDiffusionXL);
        assert_eq!(Family::from_model_index(&sd), Family::StableDiffusion);
        assert_eq!(Family::from_model_index(&none), Family::StableDiffusion);
        let xl = Family::StableDiffusionXL;
        let sd = Family::StableDiffusion;
        assert_eq!(
            xl.prompt_embeds(32, None).unwrap(),
            PromptEmbeds::HiddenState(31)
        );
        assert_eq!(
            xl.prompt_embeds(32, Some(1)).unwrap(),
            PromptEmbeds::HiddenState(30)
        );
        assert_eq!(
            sd.prompt_embeds(12, None).unwrap(),
            PromptEmbeds::LastHiddenState
        );
        assert_eq!(
            sd.prompt_embeds(12, Some(1)).unwrap(),
            PromptEmbeds::NormedHiddenState(11)
        );
        assert_eq!(
            sd.prompt_embeds(12, Some(12)).unwrap(),
            PromptEmbeds::NormedHiddenState(0)
        );
        let err = sd.prompt_embeds(12, Some(13)).unwrap_err().to_string();
        assert!(err.contains("clip skip") && err.contains("13"), "{err}");
        assert!(xl.prompt_embeds(2, Some(2)).is_err());
    }
}
