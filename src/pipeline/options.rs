//! What a generation is asked to do ([`GenerateOptions`]), its checks, and what it returns.

use super::family::SizeConditioning;
use super::inpaint::Mask;
use crate::error::{Error, Result};
use crate::gpu::DType;
use crate::schedulers::{PredictionType, SchedulerOverrides};

/// How to load a model.
///
/// ```
/// # fn main() -> stipple::Result<()> {
/// use stipple::pipeline::{LoadOptions, Pipeline};
/// let gpu = stipple::Gpu::new(&stipple::GpuOptions::from_env())?;
/// let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-pipe");
/// let options = LoadOptions { dtype: Some(stipple::DType::F32), ..Default::default() };
/// let (pipeline, notes) = Pipeline::load_with(&gpu, &model, &options)?;
/// assert_eq!(pipeline.dtype, stipple::DType::F32);
/// for note in notes {
///     eprintln!("{note}"); // e.g. a weights variant chosen, folders left unused
/// }
/// # Ok(())
/// # }
/// ```
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
    /// For a single-file checkpoint: a built-in preset by name instead of the detected
    /// family's default (`sdxl-turbo`, `sd21`, …; see `weights::single_file::presets::NAMED`).
    pub preset: Option<String>,
    /// Storage dtype of the text encoder(s); None = `dtype`.
    pub text_dtype: Option<DType>,
    /// Storage dtype of the VAE; None = `dtype`, or f32 when the family honours the VAE's
    /// `force_upcast` and `dtype` is f16 (SDXL).
    pub vae_dtype: Option<DType>,
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
/// size, which defaults to the model's own (`sample_size` × VAE factor) when 0, and the prompt
/// handling, which is A1111's (long prompts in chunks, emphasis; see `docs/prompts.md`).
///
/// ```
/// use stipple::pipeline::GenerateOptions;
/// let options = GenerateOptions {
///     prompt: "a (red:1.3) apple BREAK on a wooden table".into(),
///     negative_prompt: "blurry".into(),
///     steps: 20,
///     seed: 42,
///     scheduler: Some("euler-a".into()),
///     ..Default::default()
/// };
/// assert!(options.validate().is_ok() && options.do_cfg()); // guidance 7.5
/// let bad = GenerateOptions { steps: 0, ..options };
/// assert!(bad.validate().unwrap_err().to_string().contains("steps"));
/// ```
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
    /// Inpainting: repaint where the mask is white, keep the rest of `init_image` (needs
    /// `init_image`; see [`crate::pipeline::inpaint`]).
    pub mask: Option<Mask>,
    /// diffusers' prompt handling: truncate at 75 tokens (reported in
    /// [`GenerateOutput::truncated_tokens`]) instead of encoding 75-token chunks (A1111).
    pub no_chunking: bool,
    /// diffusers' prompt handling: parentheses, brackets and `BREAK` are plain text instead of
    /// A1111's emphasis syntax (`docs/prompts.md`).
    pub no_emphasis: bool,
    /// Run the denoising loop's CFG combine and scheduler step on the CPU, reading the UNet
    /// output back every step (the reference the GPU loop is tested against; `--cpu-loop`).
    /// Inpainting and `clip_sample` configs always use it (`docs/gpu-loop.md`).
    pub cpu_loop: bool,
    /// Return the final latents in [`GenerateOutput::latents`] (one more readback).
    pub keep_latents: bool,
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
            mask: None,
            no_chunking: false,
            no_emphasis: false,
            cpu_loop: false,
            keep_latents: false,
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
        if let Some(mask) = &self.mask {
            if self.init_image.is_none() {
                return Err(Error::invalid(
                    "mask",
                    "inpainting needs an init image to repaint: pass --init-image with --mask",
                ));
            }
            if mask.width == 0 || mask.height == 0 || mask.values.len() != mask.width * mask.height
            {
                return Err(Error::invalid(
                    "mask",
                    format!(
                        "{} values for a {}×{} mask (expected {}, not empty)",
                        mask.values.len(),
                        mask.width,
                        mask.height,
                        mask.width * mask.height
                    ),
                ));
            }
            if let Some(bad) = mask.values.iter().find(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    "mask",
                    format!("holds {bad}: values must be finite (0 = keep, 1 = repaint)"),
                ));
            }
        }
        Ok(())
    }

    /// How the prompts become text encoder rows (chunking, emphasis).
    pub fn prompt_mode(&self) -> super::prompt_weights::PromptMode {
        super::prompt_weights::PromptMode {
            chunking: !self.no_chunking,
            emphasis: !self.no_emphasis,
        }
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
///
/// ```
/// # fn main() -> stipple::Result<()> {
/// use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
/// let gpu = stipple::Gpu::new(&stipple::GpuOptions::from_env())?;
/// let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-pipe");
/// let mut pipeline = Pipeline::load(&gpu, &model, None)?;
/// let options = GenerateOptions { prompt: "a red apple".into(), steps: 2, batch: 2, width: 16, height: 16, ..Default::default() };
/// let output = pipeline.generate(&options, |_, _| Progress::Continue)?;
/// assert_eq!(output.images.len(), 2 * 16 * 16 * 3);
/// assert_eq!(output.rgb8(1).map(|rgb| rgb.len()), Some(16 * 16 * 3));
/// let dir = std::env::temp_dir();
/// for i in 0..options.batch {
///     output.save_png(i, &dir.join(format!("stipple-doc-{i}.png")))?;
/// }
/// eprintln!("{} steps of {}, text encoding {:.3} s", output.steps, output.scheduler, output.timings.text_encode);
/// # Ok(())
/// # }
/// ```
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
    /// Prompt tokens dropped because the prompt exceeded the tokenizer's 75-token window
    /// (only with [`GenerateOptions::no_chunking`]).
    pub truncated_tokens: usize,
    /// The denoised latents (B, h, w, C) NHWC, before the VAE's scaling, when
    /// [`GenerateOptions::keep_latents`] asked for them.
    pub latents: Option<Vec<f32>>,
    pub timings: Timings,
}

impl GenerateOutput {
    /// Image `index` of the batch as 8-bit RGB (H, W, 3), rounded as diffusers' `numpy_to_pil`
    /// (the bytes the CLI writes); None past the batch.
    pub fn rgb8(&self, index: usize) -> Option<Vec<u8>> {
        let n = self.width * self.height * 3;
        let image = self.images.get(index * n..(index + 1) * n)?;
        Some(crate::image_io::unit_to_rgb8(image))
    }

    /// Write image `index` as a PNG (atomically: no partial file on failure).
    pub fn save_png(&self, index: usize, path: &std::path::Path) -> Result<()> {
        let rgb = self.rgb8(index).ok_or_else(|| {
            Error::invalid(
                "image index",
                format!(
                    "{index} is past the batch of {}",
                    self.images.len() / (self.width * self.height * 3).max(1)
                ),
            )
        })?;
        let (w, h) = (self.width as u32, self.height as u32);
        crate::image_io::write_png(path, w, h, &rgb, None)
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

/// Progress reported after each denoising step; return [`Progress::Cancel`] to stop: the
/// generation then ends with [`Error::Cancelled`] and returns no image.
///
/// ```
/// # fn main() -> stipple::Result<()> {
/// use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
/// let gpu = stipple::Gpu::new(&stipple::GpuOptions::from_env())?;
/// let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-pipe");
/// let mut pipeline = Pipeline::load(&gpu, &model, None)?;
/// let scheduler = Some("euler".to_string()); // (tiny-pipe's own PNDM takes one more step)
/// let options = GenerateOptions { prompt: "a red apple".into(), steps: 10, scheduler, ..Default::default() };
/// let mut seen = Vec::new();
/// let result = pipeline.generate(&options, |step, total| {
///     seen.push((step, total));
///     if step == 3 { Progress::Cancel } else { Progress::Continue }
/// });
/// assert!(matches!(result, Err(stipple::Error::Cancelled)));
/// assert_eq!(seen, [(1, 10), (2, 10), (3, 10)]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Continue,
    Cancel,
}
