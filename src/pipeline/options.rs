//! What a generation is asked to do ([`GenerateOptions`]), its checks, and what it returns.

use super::family::SizeConditioning;
use crate::error::{Error, Result};
use crate::gpu::DType;
use crate::schedulers::{PredictionType, SchedulerOverrides};

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// None = f16 on GPUs with SHADER_F16, f32 on CPU adapters.
    pub dtype: Option<DType>,
    /// Weights variant to prefer in each component folder (`fp16` reads
    /// `*.fp16.safetensors`); components without it use their standard files. None = the
    /// standard files, or the only variant a folder holds.
    pub variant: Option<String>,
    /// For a single-file checkpoint: a diffusers folder whose component configs (and tokenizer)
    /// replace the family's built-in ones (diffusers' `from_single_file(config=…)`).
    pub config: Option<std::path::PathBuf>,
}

/// Image-to-image input: the start image and how much of it to re-noise.
#[derive(Clone, Debug)]
pub struct InitImage {
    pub width: usize,
    pub height: usize,
    /// (H, W, 3) in [-1, 1].
    pub pixels: Vec<f32>,
    /// 0 keeps the image, 1 ignores it (diffusers' `strength`).
    pub strength: f32,
}

/// One `generate` call. `Default` gives diffusers' StableDiffusionPipeline defaults except the
/// size, which defaults to the model's own (`sample_size` × VAE factor) when 0.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 turns guidance off (one UNet batch instead of two).
    pub guidance_scale: f32,
    pub seed: u64,
    /// Pixels; 0 = the model's native size.
    pub width: usize,
    pub height: usize,
    /// Images per prompt.
    pub batch: usize,
    /// A scheduler short name (`ddim`, `pndm`, `euler`, `euler-a`, `dpmpp-2m`,
    /// `dpmpp-2m-karras`, `lcm`); None = the model's `scheduler_config.json`.
    pub scheduler: Option<String>,
    /// Prediction type, timestep spacing and Karras sigmas over the scheduler config's.
    pub scheduler_overrides: SchedulerOverrides,
    /// Initial latents NCHW (batch, channels, h, w) as diffusers takes them (before
    /// `init_noise_sigma`), instead of drawing them from the seed.
    pub latents: Option<Vec<f32>>,
    pub init_image: Option<InitImage>,
    /// SDXL micro-conditioning (time ids); ignored by families without them.
    pub size_conditioning: SizeConditioning,
    /// diffusers' `clip_skip`: take the prompt embedding this many layers before the text
    /// encoder's usual one (the negative prompt keeps the usual one, as in diffusers).
    pub clip_skip: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 50,
            guidance_scale: 7.5,
            seed: 0,
            width: 0,
            height: 0,
            batch: 1,
            scheduler: None,
            scheduler_overrides: SchedulerOverrides::default(),
            latents: None,
            init_image: None,
            size_conditioning: SizeConditioning::default(),
            clip_skip: None,
        }
    }
}

/// Most denoising steps accepted (diffusers' schedules have 1000 training steps).
pub const MAX_STEPS: usize = 1000;

impl GenerateOptions {
    /// Checks that need no model: counts, finite numbers, ranges.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::invalid(
                "steps",
                format!(
                    "{} is outside 1..={MAX_STEPS}: use --steps {}",
                    self.steps,
                    if self.steps == 0 {
                        "≥ 1".to_string()
                    } else {
                        format!("≤ {MAX_STEPS}")
                    }
                ),
            ));
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return Err(Error::invalid(
                "guidance scale",
                format!("{} must be a finite number ≥ 0", self.guidance_scale),
            ));
        }
        if self.batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        if let Some(init) = &self.init_image {
            if init.pixels.len() != init.width * init.height * 3 {
                return Err(Error::invalid(
                    "init image",
                    format!(
                        "{} values for {}×{} RGB (expected {})",
                        init.pixels.len(),
                        init.width,
                        init.height,
                        init.width * init.height * 3
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&init.strength) {
                return Err(Error::invalid(
                    "strength",
                    format!("{} is outside [0, 1]", init.strength),
                ));
            }
        }
        Ok(())
    }

    /// Whether classifier-free guidance runs (diffusers: `guidance_scale > 1`).
    pub fn do_cfg(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// Seconds spent in each phase of a generation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub text_encode: f64,
    pub denoise: f64,
    pub decode: f64,
}

/// The generated images and what produced them.
#[derive(Clone, Debug)]
pub struct GenerateOutput {
    pub width: usize,
    pub height: usize,
    /// (batch, H, W, 3) in [0, 1] (diffusers' `output_type="np"`).
    pub images: Vec<f32>,
    pub seed: u64,
    /// The scheduler's short name or class.
    pub scheduler: String,
    /// What the UNet was taken to predict (the scheduler config's, or the override).
    pub prediction_type: PredictionType,
    pub steps: usize,
    /// Prompt tokens dropped because the prompt exceeded the tokenizer's 75-token window.
    pub truncated_tokens: usize,
    pub timings: Timings,
}

/// Progress reported after each denoising step; return [`Progress::Cancel`] to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Continue,
    Cancel,
}

impl GenerateOutput {
    /// Image `index` of the batch as 8-bit RGB `(H, W, 3)`, rounded half to even as diffusers'
    /// `numpy_to_pil` (what `stipple generate` writes). `None` past the batch.
    pub fn rgb8(&self, index: usize) -> Option<Vec<u8>> {
        let per_image = self.width * self.height * 3;
        let image = self
            .images
            .get(index * per_image..(index + 1) * per_image)?;
        Some(
            image
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
                .collect(),
        )
    }

    /// Image `index` as the PNG `stipple generate` writes for `options`: 8-bit RGB with the
    /// AUTOMATIC1111 `parameters` text (prompt, negative prompt, steps, sampler, CFG scale,
    /// seed, size, `model_name`, scheduler settings). For callers without a file system (the
    /// web page's download button).
    pub fn png(
        &self,
        index: usize,
        options: &GenerateOptions,
        model_name: &str,
    ) -> crate::Result<Vec<u8>> {
        use crate::image_io::encode_png;
        let rgb = self.rgb8(index).ok_or_else(|| {
            crate::Error::invalid(
                "image index",
                format!("{index} is past the batch of {}", options.batch),
            )
        })?;
        let params = self.parameters(options, model_name);
        encode_png(self.width as u32, self.height as u32, &rgb, Some(&params))
    }
}
