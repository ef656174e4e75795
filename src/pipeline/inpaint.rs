//! Inpainting (diffusers `StableDiffusionInpaintPipeline`, pipeline_stable_diffusion_inpaint.py):
//! repaint the white part of a mask over an init image. See docs/inpainting.md.
//!
//! Two ways, chosen by the UNet's `in_channels`, as in diffusers:
//! - **9** (inpainting UNets): every UNet call sees `cat(scaled latents (4), mask (1),
//!   masked-image latents (4))` on the channel axis (NHWC here: per latent pixel, in that order).
//! - **4** (any text-to-image UNet, the "latent blend"): after each scheduler step the kept area
//!   is put back: `latents = (1 − m)·add_noise(image_latents, noise, t_next) + m·latents`
//!   (after the last step: the clean `image_latents`).
//!
//! Mask preprocessing (diffusers' `mask_processor`: `VaeImageProcessor(do_normalize=False,
//! do_binarize=True, do_convert_grayscale=True)`): grey as PIL's `convert("L")`, resized to the
//! output size when it differs (Lanczos), `v < 0.5 → 0, else 1`. The masked image is
//! `image · (mask < 0.5)`; the latent-size mask is `F.interpolate(mask, (h, w))`, mode nearest.
//!
//! Generator draws in diffusers' order: the init image's VAE sample (4-ch UNets always; 9-ch
//! only when strength < 1 and no latents are given), the start noise (unless given), the masked
//! image's VAE sample, then the scheduler's own. Both images are encoded once (batch 1) and
//! repeated over the batch.

use std::path::Path;

use super::{img2img_steps, layout, no_denoising_step, GenerateOptions, InitImage, Pipeline};
use crate::error::{Error, Result};
use crate::rng::TorchRng;
use crate::schedulers::Scheduler;

/// Where to repaint: (H, W) values in [0, 1], white (≥ 0.5 after resizing) = repaint.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    /// (H, W) in [0, 1].
    pub values: Vec<f32>,
}

impl Mask {
    /// From 8-bit RGB (H, W, 3), grey as PIL's `convert("L")`:
    /// `L = (R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16` (ITU-R 601-2 luma), then `L / 255`.
    pub fn from_rgb8(width: usize, height: usize, rgb: &[u8]) -> Result<Mask> {
        if rgb.len() != width * height * 3 || width == 0 || height == 0 {
            return Err(Error::invalid(
                "mask",
                format!(
                    "{} bytes for a {width}×{height} RGB mask (expected {}, not empty)",
                    rgb.len(),
                    width * height * 3
                ),
            ));
        }
        let values = rgb
            .chunks_exact(3)
            .map(|p| {
                let l =
                    (p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16;
                l as f32 / 255.0
            })
            .collect();
        Ok(Mask {
            width,
            height,
            values,
        })
    }

    /// A mask image file (any colour type; colours are turned grey as PIL does). Errors name
    /// the file.
    pub fn read(path: &Path) -> Result<Mask> {
        let (w, h, rgb) = crate::image_io::read_image_rgb8(path)?;
        Mask::from_rgb8(w as usize, h as usize, &rgb)
    }

    /// Repaint what was kept and keep what was repainted (A1111's `inpainting_mask_invert`).
    pub fn invert(&mut self) {
        self.values.iter_mut().for_each(|v| *v = 1.0 - *v);
    }

    /// Gaussian blur with standard deviation `sigma` pixels (A1111's `mask_blur`, applied
    /// before the binarization, so it grows or shrinks the repainted area by under `sigma`).
    pub fn blur(&self, sigma: f32) -> Mask {
        if sigma <= 0.0 {
            return self.clone();
        }
        let blurred = image::imageops::blur(&self.image(), sigma);
        self.with_image(blurred)
    }

    /// The mask at `width`×`height` (Lanczos3 when the size differs, as diffusers resizes with
    /// PIL's Lanczos), binarized: `v < 0.5 → 0`, else 1. (H, W).
    pub fn condition(&self, width: usize, height: usize) -> Vec<f32> {
        let values = if (self.width, self.height) == (width, height) {
            self.values.clone()
        } else {
            let resized = image::imageops::resize(
                &self.image(),
                width as u32,
                height as u32,
                image::imageops::FilterType::Lanczos3,
            );
            self.with_image(resized).values
        };
        values
            .iter()
            .map(|&v| if v < 0.5 { 0.0 } else { 1.0 })
            .collect()
    }

    fn image(&self) -> image::ImageBuffer<image::Luma<f32>, Vec<f32>> {
        image::ImageBuffer::from_raw(self.width as u32, self.height as u32, self.values.clone())
            .expect("Mask: values hold width × height")
    }

    fn with_image(&self, img: image::ImageBuffer<image::Luma<f32>, Vec<f32>>) -> Mask {
        let (w, h) = img.dimensions();
        Mask {
            width: w as usize,
            height: h as usize,
            values: img.into_raw(),
        }
    }
}

/// torch's `F.interpolate(mode="nearest")` of an (H, W) plane to (h, w):
/// source index `min(floor(dst · (in / out)), in − 1)` with the scale in f32.
pub fn nearest_resize(plane: &[f32], [height, width]: [usize; 2], [h, w]: [usize; 2]) -> Vec<f32> {
    let index = |dst: usize, input: usize, output: usize| {
        let scale = input as f32 / output as f32;
        ((dst as f32 * scale).floor() as usize).min(input - 1)
    };
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (y, x)))
        .map(|(y, x)| plane[index(y, height, h) * width + index(x, width, w)])
        .collect()
}

/// What the denoising loop needs for inpainting.
pub(crate) struct Inpaint {
    /// Latent channels (4).
    channels: usize,
    /// The mask at latent size, 0 or 1: (h, w).
    mask: Vec<f32>,
    /// 9-channel UNets: the masked image's latents (h, w, C), the same for every batch row.
    masked_image_latents: Option<Vec<f32>>,
    /// 4-channel UNets: the init image's latents and the start noise, (B, h, w, C).
    blend: Option<(Vec<f32>, Vec<f32>)>,
}

impl Inpaint {
    /// The UNet's sample: `input` (rows, h, w, C) → (rows, h, w, C + 1 + C) for 9-channel UNets
    /// (`cat([latents, mask, masked_image_latents], dim=1)`), unchanged otherwise.
    pub fn unet_input(&self, input: Vec<f32>) -> Vec<f32> {
        let Some(masked) = &self.masked_image_latents else {
            return input;
        };
        let (c, hw) = (self.channels, self.mask.len());
        let mut out = Vec::with_capacity(input.len() / c * (2 * c + 1));
        for (pixel, latent) in input.chunks_exact(c).enumerate() {
            let p = pixel % hw;
            out.extend_from_slice(latent); // (C)
            out.push(self.mask[p]); // (1)
            out.extend_from_slice(&masked[p * c..(p + 1) * c]); // (C)
        }
        out
    }

    /// After the scheduler step at `step` (index into the whole schedule): 4-channel UNets put
    /// the kept area back, noised to the next step's level.
    pub fn after_step(
        &self,
        latents: Vec<f32>,
        scheduler: &dyn Scheduler,
        step: usize,
    ) -> Result<Vec<f32>> {
        let Some((image_latents, noise)) = &self.blend else {
            return Ok(latents);
        };
        let proper = if step + 1 < scheduler.timesteps().len() {
            scheduler.add_noise(image_latents, noise, step + 1)?
        } else {
            image_latents.clone()
        };
        let (c, hw) = (self.channels, self.mask.len());
        Ok(latents
            .iter()
            .zip(&proper)
            .enumerate()
            .map(|(k, (&x, &p))| {
                let m = self.mask[(k / c) % hw];
                (1.0 - m) * p + m * x
            })
            .collect())
    }
}

impl Pipeline {
    /// Refuses a 9-channel (inpainting) UNet without a mask, and a mask with a UNet that
    /// takes neither 4 nor 2·latent + 1 channels.
    pub(super) fn check_inpaint(&self, options: &GenerateOptions) -> Result<()> {
        let unet = self.unet.config.in_channels;
        let latent = self.vae.config.latent_channels;
        if options.mask.is_none() && unet == 2 * latent + 1 {
            return Err(Error::invalid(
                "mask",
                format!(
                    "{} is an inpainting model (UNet in_channels {unet}: latents + mask + masked \
                     image): pass --init-image and --mask",
                    self.path.display()
                ),
            ));
        }
        if options.mask.is_some() && unet != latent && unet != 2 * latent + 1 {
            return Err(Error::invalid(
                "mask",
                format!(
                    "the UNet takes {unet} input channels: inpainting needs {latent} (latent \
                     blend) or {} (an inpainting UNet)",
                    2 * latent + 1
                ),
            ));
        }
        Ok(())
    }

    /// The start latents (B, h, w, C) NHWC, the first step, and the loop's inpainting state.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn inpaint_latents(
        &mut self,
        init: &InitImage,
        mask: &super::Mask,
        options: &GenerateOptions,
        scheduler: &dyn Scheduler,
        rng: &mut TorchRng,
        [lh, lw]: [usize; 2],
        [height, width]: [usize; 2],
    ) -> Result<(Vec<f32>, usize, Inpaint)> {
        self.check_init_size(init, width, height)?;
        let steps = scheduler.timesteps().len();
        let first_step = steps - img2img_steps(steps, init.strength).min(steps);
        if first_step >= steps {
            return Err(no_denoising_step(init.strength, steps));
        }
        let is_strength_max = init.strength == 1.0;
        let blend = self.unet.config.in_channels == self.vae.config.latent_channels;
        let (b, c) = (options.batch, self.vae.config.latent_channels);
        let nchw = [b, c, lh, lw];
        let repeat = |one: Vec<f32>| -> Vec<f32> { one.repeat(b) };

        // prepare_latents
        let image_latents = if blend || (options.latents.is_none() && !is_strength_max) {
            let one = self
                .encode_latents(&init.pixels, 1, [height, width], rng)
                .await?; // (1, h, w, C)
            Some(repeat(one)) // (B, h, w, C)
        } else {
            None
        };
        let given = options.latents.is_some();
        let noise = match &options.latents {
            Some(l) if l.len() != b * c * lh * lw => {
                return Err(Error::invalid(
                    "latents",
                    format!(
                        "{} values, expected (batch, channels, h, w) = {nchw:?}",
                        l.len()
                    ),
                ))
            }
            Some(l) => layout::nchw_to_nhwc(l, nchw),
            None => layout::nchw_to_nhwc(&rng.randn(b * c * lh * lw), nchw),
        }; // (B, h, w, C)
        let latents = match &image_latents {
            Some(image) if !given && !is_strength_max => {
                scheduler.add_noise(image, &noise, first_step)?
            }
            _ => {
                let sigma = scheduler.init_noise_sigma();
                noise.iter().map(|&x| (x as f64 * sigma) as f32).collect()
            }
        };

        // mask and masked image
        let condition = mask.condition(width, height); // (H, W) 0 or 1
        let masked: Vec<f32> = init
            .pixels
            .chunks_exact(3)
            .zip(&condition)
            .flat_map(|(rgb, &m)| {
                let keep = if m < 0.5 { 1.0 } else { 0.0 };
                rgb.iter().map(move |&v| v * keep)
            })
            .collect(); // (H, W, 3)
        let masked_image_latents = self
            .encode_latents(&masked, 1, [height, width], rng)
            .await?; // (1, h, w, C)
        let state = Inpaint {
            channels: c,
            mask: nearest_resize(&condition, [height, width], [lh, lw]), // (h, w)
            masked_image_latents: (!blend).then_some(masked_image_latents),
            blend: image_latents.filter(|_| blend).map(|image| (image, noise)),
        };
        Ok((latents, first_step, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_is_pil_luma() {
        let m = Mask::from_rgb8(
            4,
            1,
            &[255, 200, 0, 0, 0, 255, 128, 128, 128, 127, 127, 127],
        )
        .unwrap();
        let l: Vec<u32> = m
            .values
            .iter()
            .map(|v| (v * 255.0).round() as u32)
            .collect();
        assert_eq!(l, [194, 29, 128, 127]); // PIL: convert("L") of these pixels
        assert_eq!(m.condition(4, 1), [1.0, 0.0, 1.0, 0.0]);
        assert!(Mask::from_rgb8(2, 2, &[0; 5]).is_err());
    }

    #[test]
    fn nearest_matches_torch_indices() {
        // torch: F.interpolate(arange(6).view(1,1,1,6), size=(1,4)) = [0, 1, 3, 4]
        let plane: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(nearest_resize(&plane, [1, 6], [1, 4]), [0.0, 1.0, 3.0, 4.0]);
        // factor 2 down: every other pixel from the first
        let plane: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(
            nearest_resize(&plane, [4, 4], [2, 2]),
            [0.0, 2.0, 8.0, 10.0]
        );
    }

    #[test]
    fn unet_input_concatenates_latents_mask_masked() {
        let state = Inpaint {
            channels: 2,
            mask: vec![1.0, 0.0],
            masked_image_latents: Some(vec![10.0, 11.0, 12.0, 13.0]),
            blend: None,
        };
        // rows 2 (CFG), 2 pixels, 2 channels
        let input = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert_eq!(
            state.unet_input(input),
            [
                1.0, 2.0, 1.0, 10.0, 11.0, 3.0, 4.0, 0.0, 12.0, 13.0, 5.0, 6.0, 1.0, 10.0, 11.0,
                7.0, 8.0, 0.0, 12.0, 13.0
            ]
        );
    }

    #[test]
    fn invert_and_blur() {
        let mut m = Mask {
            width: 3,
            height: 1,
            values: vec![0.0, 1.0, 0.25],
        };
        m.invert();
        assert_eq!(m.values, [1.0, 0.0, 0.75]);
        assert_eq!(m.blur(0.0), m);
        let b = m.blur(1.0);
        assert_eq!((b.width, b.height, b.values.len()), (3, 1, 3));
        assert!(b.values[1] > 0.0 && b.values[1] < 1.0, "{:?}", b.values);
    }
}
