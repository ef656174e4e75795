//! The text-to-image pipeline (diffusers `StableDiffusionPipeline`, `StableDiffusionXLPipeline`
//! and their img2img and inpainting ([`inpaint`]) variants): tokenizer(s) → text encoder(s) →
//! UNet under a scheduler with classifier-free guidance → VAE decoder. What differs between
//! families (encoders, the UNet's conditioning, VAE dtype) is described in [`family`] and built
//! in `conditioning.rs`; the denoising loop below is shared.
//!
//! Plans are built once per (batch, size) and replayed for every step and every later call with
//! the same shapes. The denoising loop ([`denoise`]) keeps the latents on the GPU and runs the
//! CFG combine and scheduler step there (`docs/gpu-loop.md`); the CPU loop, reading the UNet
//! output back every step, stays as the reference (`GenerateOptions::cpu_loop`) and for
//! inpainting. Noise comes from a torch-compatible generator, so a seed gives the same
//! latents and ancestral noise as diffusers on CPU.

mod conditioning;
mod denoise;
pub mod family;
mod folder;
mod infotext;
pub mod inpaint;
pub mod layout;
pub mod limits;
pub mod lora;
pub mod options;
pub mod plan_cache;
pub mod preview;
pub mod prompt_weights;
pub mod single_file;
pub mod tiled_decode;

use crate::time::Instant;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use conditioning::Conditioning;
pub use family::{Family, SizeConditioning};
pub use inpaint::Mask;
pub use options::{GenerateOptions, GenerateOutput, InitImage, LoadOptions, Progress, Timings};
pub use preview::{PreviewImage, PreviewMethod, PreviewOptions, StepInfo};
pub use single_file::{SingleFileInfo, SingleFileOptions};

use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu};
use crate::graph::Plan;
use crate::lora::LoraState;
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::config::{read_config, AutoencoderKLConfig};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::ops::scheduler_step::StepKernel;
use crate::rng::TorchRng;
use crate::schedulers::{PredictionType, Scheduler, SchedulerConfig};
use crate::tokenizer::ClipTokenizer;
use denoise::Latents;
use plan_cache::Lru;

/// Plans built so far, by batch and latent size; the least recently used are dropped beyond
/// [`plan_cache::DEFAULT_CAPACITY`] per kind (see [`Pipeline::set_max_plans`]).
#[derive(Default)]
struct PlanCache {
    /// By (text encoder: 0 or 1 for text_encoder_2, rows, clip skip).
    text: Lru<(usize, usize, Option<usize>), Plan>,
    /// By (rows, latent h, latent w, context length: 77 × prompt chunks).
    unet: Lru<(usize, usize, usize, usize), Plan>,
    decode: Lru<(usize, usize, usize), Plan>,
    encode: Lru<(usize, usize, usize), Plan>,
    /// Decode tile side chosen per (batch, h, w) and binding limit (building the graphs that
    /// decide it is not repeated on every call).
    decode_tile: HashMap<(usize, usize, usize, u64), usize>,
}

/// A loaded Stable Diffusion model folder (diffusers layout) or single-file checkpoint, with
/// the plans built so far. `Send`: a worker thread may own it (`examples/embed_thread.rs`).
///
/// ```
/// # fn main() -> stipple::Result<()> {
/// use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
/// let gpu = stipple::Gpu::new(&stipple::GpuOptions::from_env())?;
/// let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-pipe");
/// let mut pipeline = Pipeline::load(&gpu, &model, Some(stipple::DType::F32))?;
/// assert_eq!(pipeline.native_size(), 16); // UNet sample_size 8 × VAE factor 2
/// let options = GenerateOptions { prompt: "a red apple".into(), steps: 2, ..Default::default() };
/// let output = pipeline.generate(&options, |_, _| Progress::Continue)?;
/// assert_eq!((output.width, output.height), (16, 16));
/// # Ok(())
/// # }
/// ```
pub struct Pipeline {
    pub gpu: Gpu,
    pub dtype: DType,
    /// The text encoders' storage dtype (`LoadOptions::text_dtype`, else `dtype`).
    pub text_dtype: DType,
    /// The VAE's storage dtype: `dtype`, or f32 when the family honours the VAE's
    /// `force_upcast` and `dtype` is f16 (the SDXL VAE overflows in f16).
    pub vae_dtype: DType,
    pub family: Family,
    pub path: PathBuf,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    /// SDXL: the second tokenizer (pads with "!") and `CLIPTextModelWithProjection`.
    pub tokenizer_2: Option<ClipTokenizer>,
    pub text_encoder_2: Option<ClipTextModel>,
    /// model_index.json's `force_zeros_for_empty_prompt` (SDXL; diffusers' default true): an
    /// empty negative prompt gives zero negative embeddings.
    pub force_zeros_for_empty_prompt: bool,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    /// Largest tensor one storage binding may hold: the adapter's limit; lower it to decode in
    /// tiles sooner and to refuse larger batches and sizes up front (tests, or to bound memory).
    pub binding_limit: u64,
    plans: PlanCache,
    /// The LoRA-able weights of the text encoder and UNet, and the LoRAs merged into them.
    lora: LoraState,
    /// The TAESD for live previews, if any, and its plans.
    preview: preview::PreviewState,
}

impl Pipeline {
    /// Load a diffusers pipeline folder (`model_index.json`, tokenizer/, text_encoder/, unet/,
    /// vae/, scheduler/), or a single-file LDM `.safetensors` checkpoint with its family's
    /// built-in configs ([`Pipeline::load_single_file`]). `dtype` None = f16 on GPUs with
    /// SHADER_F16, f32 on CPU adapters.
    pub fn load(gpu: &Gpu, path: &Path, dtype: Option<DType>) -> Result<Pipeline> {
        let options = LoadOptions {
            dtype,
            ..LoadOptions::default()
        };
        Ok(Self::load_with(gpu, path, &options)?.0)
    }

    /// [`Pipeline::load`] with every option; also returns info lines worth showing the user
    /// (a weights variant chosen automatically, components of the folder left unused).
    pub fn load_with(
        gpu: &Gpu,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<(Pipeline, Vec<String>)> {
        Self::load_with_progress(gpu, path, options, &|_, _| {})
    }

    /// [`Pipeline::load_with`], telling `progress(done, total)` the weight bytes on the GPU so
    /// far and in all (file bytes of the text encoder(s), UNet and VAE; folders only).
    pub fn load_with_progress(
        gpu: &Gpu,
        path: &Path,
        options: &LoadOptions,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(Pipeline, Vec<String>)> {
        crate::weights::single_file::refuse_pickle(path)?;
        if crate::files::is_file(path) {
            let single = SingleFileOptions {
                config: options.config.clone(),
                preset: options.preset.clone(),
            };
            let dtypes = single_file::Dtypes {
                unet: options.dtype,
                text: options.text_dtype,
                vae: options.vae_dtype,
            };
            let (pipeline, info) = single_file::load(gpu, path, dtypes, &single)?;
            let note = format!(
                "single file: {} ({}), prediction type {}",
                info.family.name(),
                info.configs,
                pipeline.scheduler_config.prediction_type
            );
            return Ok((pipeline, vec![note]));
        }
        if options.preset.is_some() {
            return Err(Error::invalid(
                "preset",
                format!(
                    "is for single-file checkpoints; {} is a folder with its own configs",
                    path.display()
                ),
            ));
        }
        if options.config.is_some() {
            return Err(Error::invalid(
                "config",
                format!(
                    "is for single-file checkpoints; {} is a folder with its own configs",
                    path.display()
                ),
            ));
        }
        folder::load(gpu, path, options, progress)
    }

    /// Load a single-file LDM `.safetensors` checkpoint (SD1.x / SD2.x); also says which family
    /// was detected and where the configs came from.
    pub fn load_single_file(
        gpu: &Gpu,
        path: &Path,
        dtype: Option<DType>,
        options: &SingleFileOptions,
    ) -> Result<(Pipeline, SingleFileInfo)> {
        let dtypes = single_file::Dtypes {
            unet: dtype,
            text: None,
            vae: None,
        };
        single_file::load(gpu, path, dtypes, options)
    }

    /// Swap in the VAE of folder `dir` (`config.json` + weights), e.g. an fp16-fix SDXL VAE
    /// (`force_upcast: false`: it then decodes in the model's dtype). Its latent channels must
    /// be the UNet's.
    pub fn set_vae(&mut self, dir: &Path) -> Result<()> {
        let config_path = dir.join("config.json");
        let config: AutoencoderKLConfig = read_config(&config_path)?;
        if config.latent_channels != self.unet.config.out_channels {
            return Err(Error::Config {
                file: config_path,
                message: format!(
                    "latent_channels = {} but the UNet denoises {} channels",
                    config.latent_channels, self.unet.config.out_channels
                ),
            });
        }
        let vae_dtype = if self.family.honours_force_upcast() && config.force_upcast {
            DType::F32
        } else {
            self.dtype
        };
        self.vae = AutoencoderKL::from_dir(Ctx::new(&self.gpu, vae_dtype), dir)?;
        self.vae_dtype = vae_dtype;
        let p = &mut self.plans;
        p.decode.clear();
        p.encode.clear();
        p.decode_tile.clear();
        Ok(())
    }

    /// Keep at most `n` (≥ 1) built plans of each kind (text encoder, UNet, VAE decode, VAE
    /// encode), dropping the least recently used now and later.
    pub fn set_max_plans(&mut self, n: usize) {
        let p = &mut self.plans;
        p.text.capacity = n;
        p.unet.capacity = n;
        p.decode.capacity = n;
        p.encode.capacity = n;
        p.text.trim();
        p.unet.trim();
        p.decode.trim();
        p.encode.trim();
    }

    /// Number of plans built and kept (all kinds).
    pub fn plan_count(&self) -> usize {
        let p = &self.plans;
        p.text.len() + p.unet.len() + p.decode.len() + p.encode.len()
    }

    /// Pixels per latent (the VAE's downscale factor).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downscale_factor()
    }

    /// Image sizes must be multiples of this (VAE factor × the UNet's downsampling).
    pub fn size_multiple(&self) -> usize {
        self.vae_scale_factor() << self.unet.num_downsamples()
    }

    /// The model's native image size (its UNet `sample_size` × VAE factor), or 512.
    pub fn native_size(&self) -> usize {
        self.unet
            .config
            .sample_size
            .map_or(512, |s| s * self.vae_scale_factor())
    }

    /// GPU bytes held by the plans built so far (activations, inputs and outputs).
    pub fn plan_bytes(&self) -> u64 {
        let p = &self.plans;
        p.text
            .values()
            .chain(p.unet.values())
            .chain(p.decode.values())
            .chain(p.encode.values())
            .map(|plan| plan.memory().activation_peak())
            .sum()
    }

    /// Resolve the size (0 = native) and check it against the model.
    pub fn resolve_size(&self, width: usize, height: usize) -> Result<(usize, usize)> {
        let native = self.native_size();
        let (w, h) = (
            if width == 0 { native } else { width },
            if height == 0 { native } else { height },
        );
        let m = self.size_multiple();
        for (name, v) in [("width", w), ("height", h)] {
            if v % m != 0 {
                return Err(Error::invalid(
                    name,
                    format!("{v} is not a multiple of {m} (VAE factor × UNet downsampling)"),
                ));
            }
        }
        Ok((w, h))
    }

    /// The scheduler config a generation runs with: the model's, switched to the named
    /// scheduler as diffusers' `from_config` does, with the options' overrides.
    pub fn scheduler_config_for(&self, options: &GenerateOptions) -> Result<SchedulerConfig> {
        let config = match &options.scheduler {
            Some(name) => self.scheduler_config.with_name(name)?,
            None => self.scheduler_config.clone(),
        };
        config.with_overrides(&options.scheduler_overrides)
    }

    fn scheduler(
        &self,
        options: &GenerateOptions,
    ) -> Result<(Box<dyn Scheduler>, String, PredictionType)> {
        let config = self.scheduler_config_for(options)?;
        let scheduler = config.build(options.steps)?;
        let name = options
            .scheduler
            .clone()
            .unwrap_or_else(|| scheduler.class_name().to_string());
        Ok((scheduler, name, config.prediction_type))
    }

    /// The UNet conditioning [`Pipeline::generate`] would use for `options` (prompt encoding
    /// only, at the requested or native size): context rows are [negative × batch, prompt ×
    /// batch] with CFG, else prompt × batch. Blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn encode_text(&mut self, options: &GenerateOptions) -> Result<Conditioning> {
        pollster::block_on(self.encode_text_async(options))
    }

    /// [`Pipeline::encode_text`], awaiting the text encoders' outputs.
    pub async fn encode_text_async(&mut self, options: &GenerateOptions) -> Result<Conditioning> {
        options.validate()?;
        let (width, height) = self.resolve_size(options.width, options.height)?;
        self.encode_prompt(options, height, width).await
    }

    /// Run the pipeline, blocking until the image is read back (native only; the web awaits
    /// [`Pipeline::generate_async`]). `progress(step, total)` is called after each denoising step.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate(
        &mut self,
        options: &GenerateOptions,
        progress: impl FnMut(usize, usize) -> Progress,
    ) -> Result<GenerateOutput> {
        pollster::block_on(self.generate_async(options, progress))
    }

    /// Run the pipeline; awaits the GPU at each readback (one per denoising step, the text
    /// encoders' outputs and the image). `progress(step, total)` is called after each step.
    pub async fn generate_async(
        &mut self,
        options: &GenerateOptions,
        mut progress: impl FnMut(usize, usize) -> Progress,
    ) -> Result<GenerateOutput> {
        self.generate_with_previews_async(options, None, |info| progress(info.step, info.total))
            .await
    }

    /// [`Pipeline::generate`] with live previews: `progress` gets a [`StepInfo`] after each
    /// denoising step, carrying a preview of the first image's predicted x̂₀ every
    /// `previews.every` steps (see [`preview`]). Blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_with_previews(
        &mut self,
        options: &GenerateOptions,
        previews: Option<&PreviewOptions>,
        progress: impl FnMut(&StepInfo) -> Progress,
    ) -> Result<GenerateOutput> {
        pollster::block_on(self.generate_with_previews_async(options, previews, progress))
    }

    /// [`Pipeline::generate_with_previews`], awaiting the GPU at each readback: the loop of
    /// every generation.
    pub async fn generate_with_previews_async(
        &mut self,
        options: &GenerateOptions,
        previews: Option<&PreviewOptions>,
        mut progress: impl FnMut(&StepInfo) -> Progress,
    ) -> Result<GenerateOutput> {
        options.validate()?;
        if let Some(p) = previews {
            self.preview.check(p, self.unet.config.out_channels)?;
        }
        let (width, height) = self.resolve_size(options.width, options.height)?;
        let img2img = options.init_image.is_some();
        self.check_fits(options.batch, width, height, options.do_cfg(), img2img)?;
        let f = self.vae_scale_factor();
        let (lh, lw) = (height / f, width / f);
        let c = self.vae.config.latent_channels; // the UNet may take more (inpainting)
        self.check_inpaint(options)?;
        let b = options.batch;
        let nchw = [b, c, lh, lw];
        let numel = b * c * lh * lw;
        let (mut scheduler, scheduler_name, prediction_type) = self.scheduler(options)?;
        let mut rng = TorchRng::new(options.seed);

        // 1. text
        let t0 = Instant::now();
        let cond = self.encode_prompt(options, height, width).await?;
        let truncated_tokens = cond.truncated_tokens;
        let text_encode = t0.elapsed().as_secs_f64();

        // 2. initial latents (NHWC), and the steps to run
        let mut inpaint = None;
        let (latents, first_step) = match &options.init_image {
            None => {
                let noise = match &options.latents {
                    Some(l) if l.len() != numel => {
                        return Err(Error::invalid(
                            "latents",
                            format!(
                                "{} values, expected (batch, channels, h, w) = {nchw:?}",
                                l.len()
                            ),
                        ))
                    }
                    Some(l) => l.clone(),
                    None => rng.randn(numel),
                };
                let sigma = scheduler.init_noise_sigma();
                let scaled: Vec<f32> = noise.iter().map(|&x| (x as f64 * sigma) as f32).collect();
                (layout::nchw_to_nhwc(&scaled, nchw), 0)
            }
            Some(init) if options.mask.is_some() => {
                let mask = options.mask.as_ref().expect("matched is_some");
                let (latents, first, state) = self
                    .inpaint_latents(
                        init,
                        mask,
                        options,
                        scheduler.as_ref(),
                        &mut rng,
                        [lh, lw],
                        [height, width],
                    )
                    .await?;
                inpaint = Some(state);
                (latents, first)
            }
            Some(init) => {
                self.img2img_latents(
                    init,
                    options,
                    scheduler.as_ref(),
                    &mut rng,
                    [lh, lw],
                    width,
                    height,
                )
                .await?
            }
        };

        // 3. denoise
        let t1 = Instant::now();
        let cfg = options.do_cfg();
        let rows = if cfg { 2 * b } else { b };
        let key = (rows, lh, lw, cond.context_len);
        if !self.plans.unet.contains_key(&key) {
            let g = crate::autotune::tuned_graph(&self.gpu, || {
                self.unet
                    .graph(self.dtype, rows, [lh, lw], cond.context_len, false)
            })?;
            self.plans.unet.insert(key, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.unet[&key];
        plan.write_input("encoder_hidden_states", &cond.context)?;
        if let (Some(text_embeds), Some(time_ids)) = (&cond.text_embeds, &cond.time_ids) {
            plan.write_input("text_embeds", text_embeds)?;
            plan.write_input("time_ids", time_ids)?;
        }
        let denoise_args = denoise::Denoise {
            options,
            previews,
            key,
            nchw,
            first_step,
            preview_target: self.preview_target([lh, lw]),
        };
        let latents = self
            .denoise(
                &denoise_args,
                scheduler.as_mut(),
                &mut rng,
                latents,
                inpaint.as_ref(),
                &mut progress,
            )
            .await?;
        let denoise = t1.elapsed().as_secs_f64();

        // 4. decode
        let t2 = Instant::now();
        let kept = match (&latents, options.keep_latents) {
            (_, false) => None,
            (Latents::Host(l), true) => Some(l.clone()),
            (Latents::Gpu(kernel), true) => Some(kernel.read_sample().await?),
        };
        let images = match latents {
            Latents::Host(l) => self.decode_async(&l, [b, lh, lw]).await?,
            Latents::Gpu(kernel) => self.decode_gpu(&kernel, [b, lh, lw]).await?,
        };
        let decode = t2.elapsed().as_secs_f64();
        if let Some(bad) = images.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "image",
                format!("the decoder produced a non-finite value at {bad}"),
            ));
        }
        Ok(GenerateOutput {
            width,
            height,
            images: images
                .iter()
                .map(|&v| (v / 2.0 + 0.5).clamp(0.0, 1.0))
                .collect(),
            seed: options.seed,
            scheduler: scheduler_name,
            prediction_type,
            steps: options.steps,
            truncated_tokens,
            latents: kept,
            timings: Timings {
                text_encode,
                denoise,
                decode,
            },
        })
    }

    /// [`Pipeline::decode_async`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode(&mut self, latents: &[f32], shape: [usize; 3]) -> Result<Vec<f32>> {
        pollster::block_on(self.decode_async(latents, shape))
    }

    /// latents (B, h, w, C) → image (B, H, W, 3) in about [-1, 1]. When the whole decode would
    /// need a tensor over the adapter's binding limit, decodes each image in overlapping tiles.
    pub async fn decode_async(
        &mut self,
        latents: &[f32],
        [b, lh, lw]: [usize; 3],
    ) -> Result<Vec<f32>> {
        let scaling = self.vae.config.scaling_factor as f64;
        let shift = self.vae.config.shift_factor.unwrap_or(0.0) as f64;
        let z: Vec<f32> = latents
            .iter()
            .map(|&x| (x as f64 / scaling + shift) as f32)
            .collect();
        let tile = self.decode_tile(b, lh, lw)?;
        if tile >= lh.max(lw) {
            return self.decode_plan(&z, [b, lh, lw]).await;
        }
        let c = self.vae.config.latent_channels;
        let f = self.vae_scale_factor();
        let mut images = Vec::with_capacity(b * lh * f * lw * f * 3);
        for image in z.chunks(lh * lw * c) {
            let decoded = tiled_decode::decode_tiled(
                image,
                [lh, lw, c],
                tile,
                tile / 4,
                f,
                async |t, [th, tw]| self.decode_plan(t, [1, th, tw]).await,
            )
            .await?;
            images.extend(decoded);
        }
        Ok(images)
    }

    /// [`Pipeline::decode_async`] of the GPU loop's latents: a GPU copy (scaled) into the
    /// decoder's input when the decode runs whole; tiled decodes read the latents back once.
    async fn decode_gpu(
        &mut self,
        kernel: &StepKernel,
        [b, lh, lw]: [usize; 3],
    ) -> Result<Vec<f32>> {
        let tile = self.decode_tile(b, lh, lw)?;
        if tile < lh.max(lw) {
            let latents = kernel.read_sample().await?;
            return self.decode_async(&latents, [b, lh, lw]).await;
        }
        let scaling = self.vae.config.scaling_factor as f64;
        let shift = self.vae.config.shift_factor.unwrap_or(0.0) as f64;
        let plan = self.decode_plan_for([b, lh, lw])?;
        kernel.to_decoder(&plan.input_tensor("z")?, 1.0 / scaling, shift)?;
        plan.run()?;
        plan.read_output_async("image").await
    }

    /// The decode tile side for (b, h, w), cached.
    fn decode_tile(&mut self, b: usize, lh: usize, lw: usize) -> Result<usize> {
        let key = (b, lh, lw, self.binding_limit);
        match self.plans.decode_tile.get(&key) {
            Some(&tile) => Ok(tile),
            None => {
                let tile = self.decode_tile_size(b, lh, lw)?;
                self.plans.decode_tile.insert(key, tile);
                Ok(tile)
            }
        }
    }

    /// The decode plan for (b, h, w), built on first use.
    fn decode_plan_for(&mut self, [b, lh, lw]: [usize; 3]) -> Result<&Plan> {
        let key = (b, lh, lw);
        if !self.plans.decode.contains_key(&key) {
            let g = crate::autotune::tuned_graph(&self.gpu, || {
                self.vae.decode_graph(self.vae_dtype, b, [lh, lw], false)
            })?;
            self.plans.decode.insert(key, Plan::new(&self.gpu, g)?);
        }
        Ok(&self.plans.decode[&key])
    }

    /// Latent tile side for decoding: the whole latent when its decode fits the adapter's
    /// binding limit (batch `b`), else the largest shrink that fits one image.
    fn decode_tile_size(&self, b: usize, lh: usize, lw: usize) -> Result<usize> {
        let limit = self.binding_limit;
        let fits = |batch: usize, th: usize, tw: usize| -> Result<bool> {
            let g = self
                .vae
                .decode_graph(self.vae_dtype, batch, [th, tw], false)?;
            Ok(g.largest_value().is_none_or(|(_, bytes)| bytes <= limit))
        };
        if fits(b, lh, lw)? {
            return Ok(lh.max(lw));
        }
        if let Some(tile) = tiled_decode::shrink_tile(lh, lw, |th, tw| fits(1, th, tw))? {
            return Ok(tile);
        }
        // Not even the smallest tile fits: no batch or size helps, the decoder is too wide.
        let (th, tw) = (lh.min(8), lw.min(8));
        let g = self.vae.decode_graph(self.dtype, 1, [th, tw], false)?;
        Err(Error::Limit {
            what: format!("the VAE decoder, even on a {th}×{tw} latent tile,"),
            needed: g.largest_value().map_or(0, |(_, bytes)| bytes),
            limit: "max_storage_buffer_binding_size",
            max: limit,
            hint: " bytes: this model's decoder cannot run on this adapter".into(),
        })
    }

    async fn decode_plan(&mut self, z: &[f32], [b, lh, lw]: [usize; 3]) -> Result<Vec<f32>> {
        let plan = self.decode_plan_for([b, lh, lw])?;
        plan.write_input("z", z)?;
        plan.run()?;
        plan.read_output_async("image").await
    }

    /// img2img (diffusers StableDiffusionImg2ImgPipeline): encode the image, sample its latent
    /// distribution, noise it to the first kept timestep. Returns NHWC latents and the first step.
    #[allow(clippy::too_many_arguments)]
    async fn img2img_latents(
        &mut self,
        init: &InitImage,
        options: &GenerateOptions,
        scheduler: &dyn Scheduler,
        rng: &mut TorchRng,
        [lh, lw]: [usize; 2],
        width: usize,
        height: usize,
    ) -> Result<(Vec<f32>, usize)> {
        self.check_init_size(init, width, height)?;
        let steps = scheduler.timesteps().len();
        let init_steps = img2img_steps(steps, init.strength).min(steps);
        let first_step = steps - init_steps;
        if first_step >= steps {
            return Err(no_denoising_step(init.strength, steps));
        }
        let b = options.batch;
        let l = self.vae.config.latent_channels;
        let nchw = [b, l, lh, lw];
        let pixels: Vec<f32> = (0..b).flat_map(|_| init.pixels.iter().copied()).collect();
        let latents = self
            .encode_latents(&pixels, b, [height, width], rng)
            .await?;
        let noise = layout::nchw_to_nhwc(&rng.randn(b * l * lh * lw), nchw);
        Ok((
            scheduler.add_noise(&latents, &noise, first_step)?,
            first_step,
        ))
    }

    /// The init image must have the output size (the CLI and server resize or default to it).
    fn check_init_size(&self, init: &InitImage, width: usize, height: usize) -> Result<()> {
        if (init.width, init.height) != (width, height) {
            return Err(Error::invalid(
                "init image",
                format!(
                    "is {}×{}, the output is {width}×{height}: resize it or pass that size",
                    init.width, init.height
                ),
            ));
        }
        Ok(())
    }

    /// VAE-encodes `b` images (B, H, W, 3) in [-1, 1] and samples their latent distribution
    /// with one generator draw (diffusers' `retrieve_latents(vae.encode(x), generator)`):
    /// `scaling_factor · (mean + exp(0.5·clamp(logvar, -30, 20))·ε)`, ε drawn NCHW.
    /// Returns (B, h, w, C) NHWC.
    async fn encode_latents(
        &mut self,
        pixels: &[f32],
        b: usize,
        [height, width]: [usize; 2],
        rng: &mut TorchRng,
    ) -> Result<Vec<f32>> {
        let l = self.vae.config.latent_channels;
        let f = self.vae_scale_factor();
        let (lh, lw) = (height / f, width / f);
        let key = (b, height, width);
        if !self.plans.encode.contains_key(&key) {
            let g = crate::autotune::tuned_graph(&self.gpu, || {
                self.vae
                    .encode_graph(self.vae_dtype, b, [height, width], false)
            })?;
            self.plans.encode.insert(key, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.encode[&key];
        plan.write_input("image", pixels)?;
        plan.run()?;
        let moments = plan.read_output_async("moments").await?; // (B, h, w, 2L) NHWC
        let eps = layout::nchw_to_nhwc(&rng.randn(b * l * lh * lw), [b, l, lh, lw]);
        let scaling = self.vae.config.scaling_factor;
        Ok((0..b * lh * lw * l)
            .map(|i| {
                let (pixel, ch) = (i / l, i % l);
                let mean = moments[pixel * 2 * l + ch];
                let logvar = moments[pixel * 2 * l + l + ch].clamp(-30.0, 20.0);
                (mean + (0.5 * logvar).exp() * eps[i]) * scaling
            })
            .collect())
    }
}

/// diffusers' img2img step count, `int(num_inference_steps * strength)` in Python floats:
/// the strength is taken at its shortest decimal spelling (0.01, not f32's 0.0099999998), so
/// `--strength 0.01 --steps 100` runs one step as it does in diffusers.
fn img2img_steps(steps: usize, strength: f32) -> usize {
    let strength: f64 = strength.to_string().parse().unwrap_or(strength as f64);
    (steps as f64 * strength) as usize
}

/// img2img runs `floor(steps × strength)` steps: the error when that is 0, with the smallest
/// `--strength` at these steps and the fewest `--steps` at this strength that run one.
fn no_denoising_step(strength: f32, steps: usize) -> Error {
    let mut advice = Vec::new();
    let min_strength = (1..=100)
        .map(|c| c as f32 / 100.0)
        .find(|&s| img2img_steps(steps, s) >= 1);
    if let Some(s) = min_strength {
        advice.push(format!("--strength ≥ {s}"));
    }
    if let Some(n) = (steps + 1..=options::MAX_STEPS).find(|&n| img2img_steps(n, strength) >= 1) {
        advice.push(format!("--steps ≥ {n}"));
    }
    Error::invalid(
        "strength",
        format!(
            "--strength {strength} with {steps} steps runs floor({steps} × {strength}) = 0 \
             denoising steps: {}",
            if advice.is_empty() {
                "use a larger --strength".to_string()
            } else {
                format!("use {}", advice.join(" or "))
            }
        ),
    )
}
