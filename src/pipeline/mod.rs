//! The text-to-image pipeline (diffusers `StableDiffusionPipeline` and its img2img variant):
//! tokenizer → text encoder → UNet under a scheduler with classifier-free guidance → VAE decoder.
//!
//! Plans are built once per (batch, size) and replayed for every step and every later call with
//! the same shapes. Per step the UNet output (a few hundred KB) is read back and the scheduler
//! step runs on the CPU in f64; noise comes from a torch-compatible generator, so a seed gives
//! the same latents and ancestral noise as diffusers on CPU.

pub mod layout;
pub mod options;
pub mod single_file;
pub mod tiled_decode;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use options::{GenerateOptions, GenerateOutput, InitImage, Progress, Timings};
pub use single_file::{SingleFileInfo, SingleFileOptions};

use crate::error::{Error, Result};
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::graph::Plan;
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::rng::TorchRng;
use crate::schedulers::{Scheduler, SchedulerConfig};
use crate::tokenizer::ClipTokenizer;

/// Plans built so far, by batch and latent size.
#[derive(Default)]
struct PlanCache {
    text: HashMap<usize, Plan>,
    unet: HashMap<(usize, usize, usize), Plan>,
    decode: HashMap<(usize, usize, usize), Plan>,
    encode: HashMap<(usize, usize, usize), Plan>,
    /// Decode tile side chosen per (batch, h, w) and binding limit (building the graphs that
    /// decide it is not repeated on every call).
    decode_tile: HashMap<(usize, usize, usize, u64), usize>,
}

/// A loaded Stable Diffusion model folder (diffusers layout).
pub struct Pipeline {
    pub gpu: Gpu,
    pub dtype: DType,
    pub path: PathBuf,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    /// Largest tensor one storage binding may hold: the adapter's limit; lower it to decode in
    /// tiles sooner (tests, or to bound memory).
    pub binding_limit: u64,
    plans: PlanCache,
}

/// Read the scheduler config and build it once, so a bad value is reported at load time with
/// the file's name rather than at the first generation.
fn load_scheduler_config(path: &Path) -> Result<SchedulerConfig> {
    let config = SchedulerConfig::from_file(path)?;
    config.build(10).map_err(|e| Error::Config {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(config)
}

/// The component folders a StableDiffusionPipeline needs.
const COMPONENTS: [&str; 5] = ["tokenizer", "text_encoder", "unet", "vae", "scheduler"];

impl Pipeline {
    /// Load a diffusers pipeline folder (`model_index.json`, tokenizer/, text_encoder/, unet/,
    /// vae/, scheduler/), or a single-file LDM `.safetensors` checkpoint with its family's
    /// built-in configs ([`Pipeline::load_single_file`]). `dtype` None = f16 on GPUs with
    /// SHADER_F16, f32 on CPU adapters.
    pub fn load(gpu: &Gpu, path: &Path, dtype: Option<DType>) -> Result<Pipeline> {
        Self::load_with_progress(gpu, path, dtype, &|_, _| {})
    }

    /// [`Pipeline::load`], telling `progress(done, total)` the weight bytes on the GPU so far
    /// and in all (file bytes of the text encoder, UNet and VAE tensors; folders only).
    pub fn load_with_progress(
        gpu: &Gpu,
        path: &Path,
        dtype: Option<DType>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Pipeline> {
        crate::weights::single_file::refuse_pickle(path)?;
        if path.is_file() {
            let options = SingleFileOptions::default();
            return Self::load_single_file(gpu, path, dtype, &options).map(|(p, _)| p);
        }
        let index = path.join("model_index.json");
        if !path.is_dir() {
            return Err(Error::Config {
                file: path.to_path_buf(),
                message: "no such model folder".into(),
            });
        }
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            file: index.clone(),
            message: e.to_string(),
        })?;
        for c in COMPONENTS {
            if json.get(c).is_none() || !path.join(c).is_dir() {
                return Err(Error::Config {
                    file: index.clone(),
                    message: format!("component {c:?} is missing (model_index.json entry and {c}/ folder needed)"),
                });
            }
        }
        let dtype = dtype.unwrap_or_else(|| auto_dtype(gpu));
        // Errors here are reported by the component's own load below, in its order.
        let total = ["text_encoder", "unet", "vae"]
            .into_iter()
            .filter_map(|c| crate::weights::Weights::open(path.join(c)).ok())
            .map(|w| w.data_bytes())
            .sum::<u64>();
        let done = std::sync::atomic::AtomicU64::new(0);
        let report = |bytes: u64| {
            let sum = done.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes;
            progress(sum, total);
        };
        let ctx = Ctx {
            progress: Some(&report),
            ..Ctx::new(gpu, dtype)
        };
        let tokenizer = ClipTokenizer::from_dir(path.join("tokenizer"))?;
        let text_encoder = ClipTextModel::from_dir(ctx, &path.join("text_encoder"))?;
        let positions = text_encoder.config.max_position_embeddings;
        if tokenizer.max_length() != positions {
            return Err(Error::Tokenizer {
                file: path.join("tokenizer"),
                message: format!(
                    "model_max_length {} does not match the text encoder's \
                     max_position_embeddings {positions} (text_encoder/config.json)",
                    tokenizer.max_length()
                ),
            });
        }
        Ok(Pipeline {
            gpu: gpu.clone(),
            dtype,
            path: path.to_path_buf(),
            tokenizer,
            text_encoder,
            unet: UNet2DConditionModel::from_dir(ctx, &path.join("unet"))?,
            vae: AutoencoderKL::from_dir(ctx, &path.join("vae"))?,
            scheduler_config: load_scheduler_config(
                &path.join("scheduler").join("scheduler_config.json"),
            )?,
            binding_limit: gpu
                .limits
                .max_storage_buffer_binding_size
                .min(gpu.limits.max_buffer_size),
            plans: PlanCache::default(),
        })
    }

    /// Load a single-file LDM `.safetensors` checkpoint (SD1.x / SD2.x); also says which family
    /// was detected and where the configs came from.
    pub fn load_single_file(
        gpu: &Gpu,
        path: &Path,
        dtype: Option<DType>,
        options: &SingleFileOptions,
    ) -> Result<(Pipeline, SingleFileInfo)> {
        single_file::load(gpu, path, dtype, options)
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

    fn scheduler(&self, options: &GenerateOptions) -> Result<(Box<dyn Scheduler>, String)> {
        let config = match &options.scheduler {
            Some(name) => self.scheduler_config.with_name(name)?,
            None => self.scheduler_config.clone(),
        };
        let scheduler = config.build(options.steps)?;
        let name = options
            .scheduler
            .clone()
            .unwrap_or_else(|| scheduler.class_name().to_string());
        Ok((scheduler, name))
    }

    /// Text embeddings (rows, 77, D): [negative × batch, prompt × batch] with CFG, else prompt.
    fn encode_text(&mut self, options: &GenerateOptions) -> Result<(Vec<f32>, usize)> {
        let positive = self.tokenizer.encode(&options.prompt)?;
        let mut ids = Vec::new();
        if options.do_cfg() {
            let negative = self.tokenizer.encode(&options.negative_prompt)?;
            for _ in 0..options.batch {
                ids.extend_from_slice(&negative.ids);
            }
        }
        for _ in 0..options.batch {
            ids.extend_from_slice(&positive.ids);
        }
        let rows = ids.len() / self.tokenizer.max_length();
        let embeds = self.text_encoder.embed_tokens(&ids)?;
        if !self.plans.text.contains_key(&rows) {
            let g = self.text_encoder.graph(self.dtype, rows, false)?;
            self.plans.text.insert(rows, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.text[&rows];
        plan.write_input("inputs_embeds", &embeds)?;
        plan.run()?;
        Ok((plan.read_output("last_hidden_state")?, positive.truncated))
    }

    /// Run the pipeline. `progress(step, total)` is called after each denoising step.
    pub fn generate(
        &mut self,
        options: &GenerateOptions,
        mut progress: impl FnMut(usize, usize) -> Progress,
    ) -> Result<GenerateOutput> {
        options.validate()?;
        let (width, height) = self.resolve_size(options.width, options.height)?;
        let f = self.vae_scale_factor();
        let (lh, lw) = (height / f, width / f);
        let c = self.unet.config.in_channels;
        let b = options.batch;
        let nchw = [b, c, lh, lw];
        let numel = b * c * lh * lw;
        let (mut scheduler, scheduler_name) = self.scheduler(options)?;
        let mut rng = TorchRng::new(options.seed);

        // 1. text
        let t0 = Instant::now();
        let (context, truncated_tokens) = self.encode_text(options)?;
        let text_encode = t0.elapsed().as_secs_f64();

        // 2. initial latents (NHWC), and the steps to run
        let timesteps: Vec<f64> = scheduler.timesteps().to_vec();
        let (mut latents, first_step) = match &options.init_image {
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
            Some(init) => self.img2img_latents(
                init,
                options,
                scheduler.as_ref(),
                &mut rng,
                [lh, lw],
                width,
                height,
            )?,
        };

        // 3. denoise
        let t1 = Instant::now();
        let cfg = options.do_cfg();
        let rows = if cfg { 2 * b } else { b };
        let key = (rows, lh, lw);
        if !self.plans.unet.contains_key(&key) {
            let g = self.unet.graph(
                self.dtype,
                rows,
                [lh, lw],
                self.tokenizer.max_length(),
                false,
            )?;
            self.plans.unet.insert(key, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.unet[&key];
        plan.write_input("encoder_hidden_states", &context)?;
        let total = timesteps.len() - first_step;
        for (done, i) in (first_step..timesteps.len()).enumerate() {
            let input = scheduler.scale_model_input(&latents, i)?;
            let batch_input = if cfg {
                [input.clone(), input].concat()
            } else {
                input
            };
            plan.write_input("sample", &batch_input)?;
            plan.write_input("timestep", &vec![timesteps[i] as f32; rows])?;
            plan.run()?;
            let out = plan.read_output("out")?;
            let noise_pred = if cfg {
                let (uncond, text) = out.split_at(out.len() / 2);
                let g = options.guidance_scale;
                uncond
                    .iter()
                    .zip(text)
                    .map(|(&u, &t)| u + g * (t - u))
                    .collect()
            } else {
                out
            };
            let step_noise = if scheduler.needs_noise(i) {
                Some(layout::nchw_to_nhwc(&rng.randn(numel), nchw))
            } else {
                None
            };
            latents = scheduler.step(&noise_pred, i, &latents, step_noise.as_deref())?;
            if progress(done + 1, total) == Progress::Cancel {
                return Err(Error::Cancelled);
            }
        }
        let denoise = t1.elapsed().as_secs_f64();

        // 4. decode
        let t2 = Instant::now();
        let images = self.decode(&latents, [b, lh, lw])?;
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
            steps: options.steps,
            truncated_tokens,
            timings: Timings {
                text_encode,
                denoise,
                decode,
            },
        })
    }

    /// latents (B, h, w, C) → image (B, H, W, 3) in about [-1, 1]. When the whole decode would
    /// need a tensor over the adapter's binding limit, decodes each image in overlapping tiles.
    pub fn decode(&mut self, latents: &[f32], [b, lh, lw]: [usize; 3]) -> Result<Vec<f32>> {
        let scaling = self.vae.config.scaling_factor as f64;
        let shift = self.vae.config.shift_factor.unwrap_or(0.0) as f64;
        let z: Vec<f32> = latents
            .iter()
            .map(|&x| (x as f64 / scaling + shift) as f32)
            .collect();
        let key = (b, lh, lw, self.binding_limit);
        let tile = match self.plans.decode_tile.get(&key) {
            Some(&tile) => tile,
            None => {
                let tile = self.decode_tile_size(b, lh, lw)?;
                self.plans.decode_tile.insert(key, tile);
                tile
            }
        };
        if tile >= lh.max(lw) {
            return self.decode_plan(&z, [b, lh, lw]);
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
                |t, [th, tw]| self.decode_plan(t, [1, th, tw]),
            )?;
            images.extend(decoded);
        }
        Ok(images)
    }

    /// Latent tile side for decoding: the whole latent when its decode fits the adapter's
    /// binding limit (batch `b`), else the largest shrink that fits one image.
    fn decode_tile_size(&self, b: usize, lh: usize, lw: usize) -> Result<usize> {
        let limit = self.binding_limit;
        let fits = |batch: usize, th: usize, tw: usize| -> Result<bool> {
            let g = self.vae.decode_graph(self.dtype, batch, [th, tw], false)?;
            Ok(g.largest_value().is_none_or(|(_, bytes)| bytes <= limit))
        };
        if fits(b, lh, lw)? {
            return Ok(lh.max(lw));
        }
        tiled_decode::shrink_tile(lh, lw, |th, tw| fits(1, th, tw))?.ok_or_else(|| Error::Limit {
            what: format!("VAE decode of a {lh}×{lw} latent"),
            needed: 0,
            limit: "max_storage_buffer_binding_size",
            max: limit,
            hint: " even in 8×8 tiles".into(),
        })
    }

    fn decode_plan(&mut self, z: &[f32], [b, lh, lw]: [usize; 3]) -> Result<Vec<f32>> {
        let key = (b, lh, lw);
        if !self.plans.decode.contains_key(&key) {
            let g = self.vae.decode_graph(self.dtype, b, [lh, lw], false)?;
            self.plans.decode.insert(key, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.decode[&key];
        plan.write_input("z", z)?;
        plan.run()?;
        plan.read_output("image")
    }

    /// img2img (diffusers StableDiffusionImg2ImgPipeline): encode the image, sample its latent
    /// distribution, noise it to the first kept timestep. Returns NHWC latents and the first step.
    #[allow(clippy::too_many_arguments)]
    fn img2img_latents(
        &mut self,
        init: &InitImage,
        options: &GenerateOptions,
        scheduler: &dyn Scheduler,
        rng: &mut TorchRng,
        [lh, lw]: [usize; 2],
        width: usize,
        height: usize,
    ) -> Result<(Vec<f32>, usize)> {
        if (init.width, init.height) != (width, height) {
            return Err(Error::invalid(
                "init image",
                format!(
                    "is {}×{}, the output is {width}×{height}: resize it or pass that size",
                    init.width, init.height
                ),
            ));
        }
        let steps = scheduler.timesteps().len();
        let init_steps = ((steps as f64 * init.strength as f64) as usize).min(steps);
        let first_step = steps - init_steps;
        if first_step >= steps {
            return Err(Error::invalid(
                "strength",
                format!("{} leaves no denoising step of {steps}", init.strength),
            ));
        }
        let b = options.batch;
        let l = self.vae.config.latent_channels;
        let key = (b, height, width);
        if !self.plans.encode.contains_key(&key) {
            let g = self
                .vae
                .encode_graph(self.dtype, b, [height, width], false)?;
            self.plans.encode.insert(key, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.encode[&key];
        let pixels: Vec<f32> = (0..b).flat_map(|_| init.pixels.iter().copied()).collect();
        plan.write_input("image", &pixels)?;
        plan.run()?;
        let moments = plan.read_output("moments")?; // (B, h, w, 2L) NHWC
        let nchw = [b, l, lh, lw];
        // latent_dist.sample(generator): mean + exp(0.5·clamp(logvar, -30, 20))·ε, ε drawn NCHW.
        let eps = layout::nchw_to_nhwc(&rng.randn(b * l * lh * lw), nchw);
        let scaling = self.vae.config.scaling_factor;
        let latents: Vec<f32> = (0..b * lh * lw * l)
            .map(|i| {
                let (pixel, ch) = (i / l, i % l);
                let mean = moments[pixel * 2 * l + ch];
                let logvar = moments[pixel * 2 * l + l + ch].clamp(-30.0, 20.0);
                (mean + (0.5 * logvar).exp() * eps[i]) * scaling
            })
            .collect();
        let noise = layout::nchw_to_nhwc(&rng.randn(b * l * lh * lw), nchw);
        Ok((
            scheduler.add_noise(&latents, &noise, first_step)?,
            first_step,
        ))
    }
}
