//! Live previews: every N denoising steps, the scheduler's predicted x̂₀ (diffusers'
//! `pred_original_sample`, see `Scheduler::predicted_original`) of the first image of the batch
//! is turned into a small RGB picture, either
//!
//! - [`PreviewMethod::Taesd`]: decoded by a TAESD (`AutoencoderTiny`, set with
//!   [`Pipeline::set_taesd`]), a distilled decoder much cheaper than the VAE; or
//! - [`PreviewMethod::Linear`]: projected per latent pixel by a published 4×3 latent→RGB
//!   matrix (+ bias), then enlarged (nearest) to the output size. Free, blurry, approximate
//!   colours. The factors are the ones ComfyUI ships in `comfy/latent_formats.py`
//!   (`SD15.latent_rgb_factors`, `SDXL.latent_rgb_factors` and `latent_rgb_factors_bias`),
//!   fitted by least squares from latents to their decoded images; A1111's "Approx cheap"
//!   preview uses the same kind of matrix. They are numbers, not code.
//!
//! See `docs/previews.md`.

use std::path::Path;

use super::plan_cache::Lru;
use super::{Family, Pipeline};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::Plan;
use crate::image_io::float_image_to_rgb8;
use crate::models::autoencoder_tiny::AutoencoderTiny;
use crate::models::Ctx;
use crate::schedulers::Scheduler;

/// How a preview is made from the predicted x̂₀.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewMethod {
    /// The latent→RGB linear projection (no model needed).
    Linear,
    /// The TAESD set with [`Pipeline::set_taesd`].
    Taesd,
}

/// Previews during a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreviewOptions {
    /// A preview after every `every`-th step (≥ 1).
    pub every: usize,
    pub method: PreviewMethod,
}

impl PreviewOptions {
    /// Whether step `step` (1-based, as [`StepInfo::step`]) carries a preview.
    pub fn due(&self, step: usize) -> bool {
        self.every > 0 && step.is_multiple_of(self.every)
    }
}

/// An 8-bit RGB picture, rows top to bottom, `width × height × 3` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// What [`Pipeline::generate_with_previews`] reports after each denoising step.
#[derive(Clone, Debug)]
pub struct StepInfo {
    /// Steps done (1-based) of `total`.
    pub step: usize,
    pub total: usize,
    /// The first image's predicted x̂₀ on steps where [`PreviewOptions::due`].
    pub preview: Option<PreviewImage>,
}

impl StepInfo {
    pub fn new(step: usize, total: usize, preview: Option<PreviewImage>) -> Self {
        StepInfo {
            step,
            total,
            preview,
        }
    }
}

/// When step `step` (1-based) is due for a preview: its method and the predicted x̂₀ of the
/// whole batch (B, h, w, C), from the scheduler at `step_index` (before its step).
pub(crate) fn due_x0(
    previews: Option<&PreviewOptions>,
    step: usize,
    scheduler: &dyn Scheduler,
    noise_pred: &[f32],
    step_index: usize,
    latents: &[f32],
) -> Result<Option<(PreviewMethod, Vec<f32>)>> {
    match previews.filter(|p| p.due(step)) {
        Some(p) => Ok(Some((
            p.method,
            scheduler.predicted_original(noise_pred, step_index, latents)?,
        ))),
        None => Ok(None),
    }
}

/// A latent→RGB projection: rgb = Σ_c latent[c]·factors[c] + bias, in about [-1, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentRgb {
    /// One (R, G, B) row per latent channel.
    pub factors: [[f32; 3]; 4],
    pub bias: [f32; 3],
}

/// SD1.x/SD2.x (same VAE latent space): ComfyUI `latent_formats.SD15.latent_rgb_factors`.
pub const SD_LATENT_RGB: LatentRgb = LatentRgb {
    factors: [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    bias: [0.0; 3],
};

/// SDXL: ComfyUI `latent_formats.SDXL.latent_rgb_factors` and `latent_rgb_factors_bias`.
pub const SDXL_LATENT_RGB: LatentRgb = LatentRgb {
    factors: [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ],
    bias: [0.1084, -0.0175, -0.0011],
};

impl LatentRgb {
    pub fn for_family(family: Family) -> LatentRgb {
        match family {
            Family::StableDiffusion => SD_LATENT_RGB,
            Family::StableDiffusionXL => SDXL_LATENT_RGB,
        }
    }

    /// x̂₀ (h, w, 4) NHWC in the UNet's latent space → (h·f, w·f, 3) in about [-1, 1],
    /// each latent pixel repeated f×f (nearest).
    pub fn project(&self, x0: &[f32], [h, w]: [usize; 2], f: usize) -> Result<Vec<f32>> {
        if x0.len() != h * w * 4 {
            return Err(Error::invalid(
                "preview",
                format!(
                    "the linear preview needs 4 latent channels; got {} values for {h}×{w}: \
                     use a TAESD (--taesd)",
                    x0.len()
                ),
            ));
        }
        let (oh, ow) = (h * f, w * f);
        let mut out = Vec::with_capacity(oh * ow * 3);
        for y in 0..oh {
            for x in 0..ow {
                let pixel = &x0[((y / f) * w + x / f) * 4..][..4];
                for ch in 0..3 {
                    let v: f32 = (0..4).map(|c| pixel[c] * self.factors[c][ch]).sum();
                    out.push(v + self.bias[ch]);
                }
            }
        }
        Ok(out)
    }
}

/// The pipeline's preview decoder: an optional TAESD and its plans by latent size.
#[derive(Default)]
pub struct PreviewState {
    taesd: Option<AutoencoderTiny>,
    plans: Lru<(usize, usize), Plan>,
}

/// What a preview is drawn for.
pub(crate) struct PreviewTarget {
    pub family: Family,
    /// Latent (h, w, channels) of one image.
    pub latent: [usize; 3],
    /// Pixels per latent of the model's VAE.
    pub vae_factor: usize,
    pub binding_limit: u64,
}

impl PreviewState {
    pub fn has_taesd(&self) -> bool {
        self.taesd.is_some()
    }

    /// Checks before a generation that `options` can run.
    pub(crate) fn check(&self, options: &PreviewOptions, latent_channels: usize) -> Result<()> {
        if options.every == 0 {
            return Err(Error::invalid("preview every", "must be at least 1"));
        }
        match options.method {
            PreviewMethod::Taesd if self.taesd.is_none() => Err(Error::invalid(
                "preview",
                "TAESD previews asked for, but no TAESD is loaded (Pipeline::set_taesd / --taesd)",
            )),
            PreviewMethod::Linear if latent_channels != 4 => Err(Error::invalid(
                "preview",
                format!(
                    "the linear preview projects 4 latent channels, this model has \
                     {latent_channels}: use a TAESD (--taesd)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The preview of the first image of `x0` (B, h, w, C) NHWC. A TAESD whose decode would
    /// exceed the binding limit falls back to the linear projection.
    pub(crate) async fn image(
        &mut self,
        gpu: &Gpu,
        method: PreviewMethod,
        x0: &[f32],
        t: &PreviewTarget,
    ) -> Result<PreviewImage> {
        let [h, w, c] = t.latent;
        let x0 = x0.get(..h * w * c).ok_or_else(|| {
            Error::invalid(
                "preview",
                format!("{} values for a {h}×{w}×{c} latent", x0.len()),
            )
        })?; // (h, w, C) of image 0
        if let (PreviewMethod::Taesd, Some(taesd)) = (method, &self.taesd) {
            if !self.plans.contains_key(&(h, w)) {
                let g = taesd.decode_graph(1, [h, w], false)?;
                if g.largest_value().is_some_and(|(_, b)| b > t.binding_limit) {
                    return linear(t, x0);
                }
                let g = match crate::autotune::prepare(gpu, &g) {
                    true => taesd.decode_graph(1, [h, w], false)?,
                    false => g,
                };
                self.plans.insert((h, w), Plan::new(gpu, g)?);
            }
            let scaling = taesd.config.scaling_factor as f64;
            let shift = taesd.config.shift_factor.unwrap_or(0.0) as f64;
            let z: Vec<f32> = x0
                .iter()
                .map(|&x| (x as f64 / scaling + shift) as f32)
                .collect();
            let plan = &self.plans[&(h, w)];
            plan.write_input("z", &z)?;
            plan.run()?;
            let image = plan.read_output_async("image").await?; // (1, H, W, 3) in about [-1, 1]
            let f = taesd.config.upscale_factor();
            return Ok(PreviewImage {
                width: w * f,
                height: h * f,
                rgb: float_image_to_rgb8(&image),
            });
        }
        linear(t, x0)
    }
}

fn linear(t: &PreviewTarget, x0: &[f32]) -> Result<PreviewImage> {
    let [h, w, _] = t.latent;
    let f = t.vae_factor;
    let rgb = LatentRgb::for_family(t.family).project(x0, [h, w], f)?;
    Ok(PreviewImage {
        width: w * f,
        height: h * f,
        rgb: float_image_to_rgb8(&rgb),
    })
}

impl Pipeline {
    /// What previews of a (h, w) latent are drawn for.
    pub(crate) fn preview_target(&self, [h, w]: [usize; 2]) -> PreviewTarget {
        PreviewTarget {
            family: self.family,
            latent: [h, w, self.unet.config.out_channels],
            vae_factor: self.vae_scale_factor(),
            binding_limit: self.binding_limit,
        }
    }

    /// Load the TAESD of folder `dir` (a diffusers `AutoencoderTiny`: `config.json` +
    /// `diffusion_pytorch_model.safetensors`) for [`PreviewMethod::Taesd`] previews. Its latent
    /// channels and upscale factor must be the model's (taesd for SD1.x/2.x, taesdxl for SDXL).
    pub fn set_taesd(&mut self, dir: &Path) -> Result<()> {
        let taesd = AutoencoderTiny::from_dir(Ctx::new(&self.gpu, self.dtype), dir)?;
        let config_path = dir.join("config.json");
        let (c, f) = (self.unet.config.out_channels, self.vae_scale_factor());
        if taesd.config.latent_channels != c || taesd.config.upscale_factor() != f {
            return Err(Error::Config {
                file: config_path,
                message: format!(
                    "a TAESD of {} latent channels upscaling ×{}, but the model denoises {c} \
                     channels and its VAE upscales ×{f}",
                    taesd.config.latent_channels,
                    taesd.config.upscale_factor()
                ),
            });
        }
        self.preview = PreviewState {
            taesd: Some(taesd),
            plans: Lru::default(),
        };
        Ok(())
    }

    /// Whether a TAESD is loaded ([`Pipeline::set_taesd`]).
    pub fn has_taesd(&self) -> bool {
        self.preview.has_taesd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_projection_by_hand() {
        // Two latent pixels (1×2), enlarged ×2 → 2×4 RGB.
        let x0 = [1.0, 0.0, 0.0, 0.0, 0.5, -1.0, 2.0, 0.25];
        let rgb = SDXL_LATENT_RGB.project(&x0, [1, 2], 2).unwrap();
        assert_eq!(rgb.len(), 2 * 4 * 3);
        let f = SDXL_LATENT_RGB.factors;
        let b = SDXL_LATENT_RGB.bias;
        for ch in 0..3 {
            let left = f[0][ch] + b[ch];
            let right = 0.5 * f[0][ch] - f[1][ch] + 2.0 * f[2][ch] + 0.25 * f[3][ch] + b[ch];
            for row in 0..2 {
                for col in 0..4 {
                    let want = if col < 2 { left } else { right };
                    let got = rgb[(row * 4 + col) * 3 + ch];
                    assert!(
                        (got - want).abs() < 1e-6,
                        "({row}, {col}, {ch}): {got} vs {want}"
                    );
                }
            }
        }
        assert!(SD_LATENT_RGB.project(&x0[..7], [1, 2], 1).is_err());
    }

    #[test]
    fn previews_are_due_every_n_steps() {
        let p = PreviewOptions {
            every: 3,
            method: PreviewMethod::Linear,
        };
        let due: Vec<usize> = (1..=10).filter(|&s| p.due(s)).collect();
        assert_eq!(due, [3, 6, 9]);
    }
}
