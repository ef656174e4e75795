//! Which model family a single-file (LDM / A1111) checkpoint holds, from its tensor names and
//! shapes alone.
//!
//! The rule, checked in this order (names after stripping a top-level `state_dict.`):
//!
//! 1. any `conditioner.embedders.*` → SDXL ([`detect_sdxl`]): **SDXL base / Turbo** when
//!    `conditioner.embedders.0.transformer.*` (CLIP ViT-L/14) and
//!    `conditioner.embedders.1.model.*` (OpenCLIP ViT-bigG/14) are there with a 4-channel UNet
//!    `conv_in` and a VAE; the refiner (`conditioner.embedders.0.model.*`: bigG only, 2560-wide
//!    `label_emb`) is refused; so is SDXL inpainting (9 input channels);
//! 2. no `model.diffusion_model.input_blocks.0.0.weight` (the UNet's `conv_in`) → unknown;
//! 3. that weight's input channels other than 4, or 9 (inpainting: latents + mask + masked
//!    image, see `inpainting.rs`; an SD2.x one is SD2-base) → refused;
//! 4. no `first_stage_model.*` → no VAE: unknown;
//! 5. `cond_stage_model.transformer.*` → **SD1.x** (OpenAI CLIP ViT-L/14, context 768);
//! 6. `cond_stage_model.model.*` → **SD2.x** (OpenCLIP ViT-H/14, context 1024);
//! 7. anything else → unknown (the message lists what was looked for).
//!
//! SD2.x 512 (base, ε-prediction) and 768 (v-prediction) files have identical names and
//! shapes. Like diffusers (`single_file_utils.py`: `infer_diffusers_model_type`,
//! `create_scheduler_from_ldm`), an SD2.x file is taken as SD2.1-768 with v-prediction, unless
//! its `global_step` tensor says 875000 (the released SD2-base checkpoint), which gives
//! SD2.1-base with ε-prediction.

use std::path::Path;

use crate::error::{Error, Result};
use crate::schedulers::PredictionType;

pub const CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";
/// `global_step` of the SD2-base checkpoint, the one ε-prediction SD2 release (diffusers' rule).
pub const SD2_BASE_GLOBAL_STEP: i64 = 875_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x (CLIP ViT-L/14 text encoder).
    Sd1,
    /// Stable Diffusion 2.x at 512 px, ε-prediction.
    Sd2Base,
    /// Stable Diffusion 2.x at 768 px, v-prediction.
    Sd2V,
    /// SDXL base 1.0 architecture (also SDXL-Turbo: same tensors; see `presets`).
    Sdxl,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd1 => "SD1.x",
            Family::Sd2Base => "SD2.x (512, epsilon)",
            Family::Sd2V => "SD2.x (768, v_prediction)",
            Family::Sdxl => "SDXL",
        }
    }

    pub fn prediction_type(self) -> PredictionType {
        match self {
            Family::Sd2V => PredictionType::VPrediction,
            Family::Sd1 | Family::Sd2Base | Family::Sdxl => PredictionType::Epsilon,
        }
    }

    pub fn is_sd2(self) -> bool {
        matches!(self, Family::Sd2Base | Family::Sd2V)
    }

    pub fn is_sdxl(self) -> bool {
        self == Family::Sdxl
    }
}

fn refuse(file: &Path, message: impl Into<String>) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// Detects the family of a checkpoint whose tensors are `(name, shape)` (see the module docs).
pub fn detect<'a>(
    file: &Path,
    tensors: impl Iterator<Item = (&'a str, &'a [usize])> + Clone,
    global_step: Option<i64>,
) -> Result<Family> {
    let any = |prefix: &str| tensors.clone().any(|(n, _)| n.starts_with(prefix));
    let looked_for = "looked for model.diffusion_model.* (UNet), first_stage_model.* (VAE) and \
                      cond_stage_model.transformer.* (SD1.x) or cond_stage_model.model.* (SD2.x)";
    if any("conditioner.embedders.") {
        return detect_sdxl(file, tensors);
    }
    let Some((_, conv_in)) = tensors.clone().find(|(n, _)| *n == CONV_IN) else {
        let sample: Vec<&str> = tensors.clone().take(5).map(|(n, _)| n).collect();
        return Err(refuse(
            file,
            format!(
                "not a Stable Diffusion checkpoint in the LDM single-file layout: no tensor \
                 {CONV_IN}; {looked_for}; its tensors include {}",
                if sample.is_empty() {
                    "nothing".to_string()
                } else {
                    sample.join(", ")
                }
            ),
        ));
    };
    match conv_in.get(1) {
        Some(4 | 9) => {}
        _ => {
            return Err(refuse(
                file,
                format!(
                "{CONV_IN} has shape {conv_in:?}: expected (C, 4, 3, 3), a 4-channel latent input, or (C, 9, 3, 3) for inpainting"
            ),
            ))
        }
    }
    if !any("first_stage_model.") {
        return Err(refuse(
            file,
            format!("no VAE in this file (no first_stage_model.* tensor); {looked_for}"),
        ));
    }
    if any("cond_stage_model.transformer.") {
        return Ok(Family::Sd1);
    }
    if any("cond_stage_model.model.") {
        let inpainting = conv_in.get(1) == Some(&9);
        return Ok(if global_step == Some(SD2_BASE_GLOBAL_STEP) || inpainting {
            Family::Sd2Base
        } else {
            Family::Sd2V
        });
    }
    Err(refuse(
        file,
        format!("no text encoder found (no cond_stage_model.* tensor); {looked_for}"),
    ))
}

/// The SDXL part of the rule (step 1 of the module docs).
fn detect_sdxl<'a>(
    file: &Path,
    tensors: impl Iterator<Item = (&'a str, &'a [usize])> + Clone,
) -> Result<Family> {
    let any = |prefix: &str| tensors.clone().any(|(n, _)| n.starts_with(prefix));
    if any("conditioner.embedders.0.model.") {
        return Err(refuse(
            file,
            "SDXL refiner checkpoints are not supported: conditioner.embedders.0 is OpenCLIP \
             ViT-bigG alone (no CLIP ViT-L) and its UNet takes 2560-wide label_emb inputs; \
             stipple loads SDXL base and SDXL-Turbo single files",
        ));
    }
    let clip_l = "conditioner.embedders.0.transformer.";
    let big_g = "conditioner.embedders.1.model.";
    for (prefix, what) in [(clip_l, "CLIP ViT-L/14"), (big_g, "OpenCLIP ViT-bigG/14")] {
        if !any(prefix) {
            return Err(refuse(
                file,
                format!(
                    "an SDXL checkpoint (conditioner.embedders.*) without {prefix}* ({what}): \
                     SDXL base and Turbo files hold {clip_l}* and {big_g}*"
                ),
            ));
        }
    }
    match tensors.clone().find(|(n, _)| *n == CONV_IN).map(|(_, s)| s) {
        Some([_, 4, ..]) => {}
        Some(shape) => {
            return Err(refuse(
                file,
                format!(
                    "SDXL {CONV_IN} has shape {shape:?}: only text-to-image SDXL (4 input \
                     channels) is supported; 9 channels is an inpainting checkpoint"
                ),
            ))
        }
        None => {
            return Err(refuse(
                file,
                format!("an SDXL checkpoint without its UNet (no {CONV_IN})"),
            ))
        }
    }
    if !any("first_stage_model.") {
        return Err(refuse(
            file,
            "an SDXL checkpoint without its VAE (no first_stage_model.* tensor)",
        ));
    }
    Ok(Family::Sdxl)
}

/// Top-level names of a checkpoint, normalised: `state_dict.` stripped; `None` for the EMA copy
/// (`model_ema.*`: the non-EMA weights are used).
pub fn normalise(name: &str) -> Option<&str> {
    let name = name.strip_prefix("state_dict.").unwrap_or(name);
    (!name.starts_with("model_ema.")).then_some(name)
}

/// Top-level buffers of LDM's DDPM wrapper (the training noise schedule): never loaded, the
/// scheduler config gives the schedule.
pub const DDPM_BUFFERS: [&str; 12] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
];

/// Whether a top-level tensor is one deliberately not loaded (besides a table's ignores).
pub fn is_ignored_extra(name: &str) -> bool {
    DDPM_BUFFERS.contains(&name)
        || matches!(
            name,
            "global_step" | "epoch" | "logvar" | "model_ema.decay" | "model_ema.num_updates"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tensors: &[(&str, Vec<usize>)], step: Option<i64>) -> Result<Family> {
        detect(
            Path::new("m.safetensors"),
            tensors.iter().map(|(n, s)| (*n, s.as_slice())),
            step,
        )
    }

    fn base(text: &str) -> Vec<(&str, Vec<usize>)> {
        vec![
            (CONV_IN, vec![320, 4, 3, 3]),
            (
                "first_stage_model.decoder.conv_in.weight",
                vec![512, 4, 3, 3],
            ),
            (text, vec![1]),
        ]
    }

    fn message(r: Result<Family>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn sd1() {
        let t = base("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight");
        assert_eq!(run(&t, None).unwrap(), Family::Sd1);
    }

    #[test]
    fn sd2_defaults_to_v_prediction_unless_global_step_875000() {
        let t = base("cond_stage_model.model.token_embedding.weight");
        assert_eq!(run(&t, None).unwrap(), Family::Sd2V);
        assert_eq!(run(&t, Some(110_000)).unwrap(), Family::Sd2V);
        assert_eq!(run(&t, Some(875_000)).unwrap(), Family::Sd2Base);
        assert_eq!(Family::Sd2V.prediction_type(), PredictionType::VPrediction);
        assert_eq!(Family::Sd2Base.prediction_type(), PredictionType::Epsilon);
    }

    fn sdxl_base() -> Vec<(&'static str, Vec<usize>)> {
        let mut t = base("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight");
        t.push(("conditioner.embedders.1.model.ln_final.weight", vec![1280]));
        t
    }

    #[test]
    fn sdxl_base_and_refusals() {
        assert_eq!(run(&sdxl_base(), None).unwrap(), Family::Sdxl);
        assert_eq!(Family::Sdxl.prediction_type(), PredictionType::Epsilon);
        assert!(!Family::Sdxl.is_sd2());
        // Refiner: bigG alone at embedders.0.
        let mut t = base("conditioner.embedders.0.model.ln_final.weight");
        t[2].1 = vec![1280];
        let m = message(run(&t, None));
        assert!(
            m.contains("SDXL refiner checkpoints are not supported"),
            "{m}"
        );
        // One encoder missing.
        let t: Vec<_> = sdxl_base()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("conditioner.embedders.1"))
            .collect();
        let m = message(run(&t, None));
        assert!(m.contains("without conditioner.embedders.1.model.*"), "{m}");
        // Inpainting, no UNet, no VAE.
        let mut t = sdxl_base();
        t[0].1 = vec![320, 9, 3, 3];
        assert!(message(run(&t, None)).contains("9 channels is an inpainting"));
        let t: Vec<_> = sdxl_base().into_iter().skip(1).collect();
        assert!(message(run(&t, None)).contains("without its UNet"));
        let t: Vec<_> = sdxl_base()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("first_stage_model."))
            .collect();
        assert!(message(run(&t, None)).contains("without its VAE"));
    }

    #[test]
    fn inpainting_detected() {
        let mut t = base("cond_stage_model.transformer.text_model.x");
        t[0].1 = vec![320, 9, 3, 3];
        assert_eq!(run(&t, None).unwrap(), Family::Sd1);
        // SD2 inpainting is the 512 ε-prediction model, whatever its global_step.
        let mut t = base("cond_stage_model.model.token_embedding.weight");
        t[0].1 = vec![320, 9, 3, 3];
        assert_eq!(run(&t, None).unwrap(), Family::Sd2Base);
        t[0].1 = vec![320, 5, 3, 3];
        assert!(message(run(&t, None)).contains("(C, 9, 3, 3) for inpainting"));
    }

    #[test]
    fn unknown_lists_what_was_looked_for() {
        let t = vec![("encoder.layers.0.weight", vec![2])];
        let m = message(run(&t, None));
        assert!(m.contains("looked for model.diffusion_model.*"), "{m}");
        assert!(m.contains("encoder.layers.0.weight"), "{m}");
        let t = base("something.else");
        assert!(message(run(&t, None)).contains("no text encoder found"));
        let t = vec![
            (CONV_IN, vec![320, 4, 3, 3]),
            ("cond_stage_model.model.x", vec![1]),
        ];
        assert!(message(run(&t, None)).contains("no VAE"));
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(
            normalise("state_dict.model.diffusion_model.out.0.bias"),
            Some("model.diffusion_model.out.0.bias")
        );
        assert_eq!(normalise("model_ema.diffusion_modelout0bias"), None);
        assert_eq!(normalise("state_dict.model_ema.decay"), None);
        assert_eq!(normalise("betas"), Some("betas"));
        assert!(is_ignored_extra("alphas_cumprod"));
        assert!(!is_ignored_extra("model.diffusion_model.out.0.bias"));
    }
}
