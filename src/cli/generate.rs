//! `stipple generate PROMPT`: text (or image) to PNG through the library pipeline.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use stipple::image_io::{self, A1111Parameters};
use stipple::pipeline::{
    GenerateOptions, GenerateOutput, InitImage, Pipeline, Progress, SingleFileOptions, Timings,
};
use stipple::{DType, Gpu, GpuOptions};

use super::prompts_file;

/// The model shipped in weights/ (used when --model is absent).
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/stipple-emoji-64");

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// What to draw (or use --prompts-file).
    #[arg(required_unless_present = "prompts_file")]
    pub prompt: Option<String>,
    /// Many prompts, one per line (blank lines and # comments skipped), in one process: prompt k
    /// is written to OUT_DIR/kkkk.png with seed SEED + k.
    #[arg(long, conflicts_with_all = ["prompt", "output", "latents", "save_tensor"], requires = "out_dir")]
    pub prompts_file: Option<PathBuf>,
    /// Folder for --prompts-file's images (created if missing).
    #[arg(long, requires = "prompts_file")]
    pub out_dir: Option<PathBuf>,
    /// A diffusers model folder (model_index.json, unet/, vae/, …) or a single-file LDM
    /// .safetensors checkpoint (SD1.x/SD2.x). Default: the model in weights/.
    #[arg(short, long, env = "STIPPLE_MODEL")]
    pub model: Option<PathBuf>,
    /// For a single-file --model: take the component configs (and tokenizer) from this
    /// diffusers folder instead of the detected family's built-in ones.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// What to avoid (classifier-free guidance's unconditional prompt).
    #[arg(short, long, default_value = "")]
    pub negative: String,
    /// Denoising steps (default: 20, or 4 with --scheduler lcm).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale; ≤ 1 turns classifier-free guidance off.
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub cfg: f32,
    /// Seed (random when absent; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Width in pixels (default: the model's native size).
    #[arg(short = 'W', long)]
    pub width: Option<usize>,
    /// Height in pixels (default: the model's native size).
    #[arg(short = 'H', long)]
    pub height: Option<usize>,
    /// ddim, pndm, euler, euler-a, dpmpp-2m, dpmpp-2m-karras or lcm (default: the model's).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Images to generate.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// auto (f16 on GPUs with shader-f16, f32 on CPU adapters), f32 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Output PNG (numbered out-1.png, out-2.png, … when --batch > 1).
    #[arg(short, long, default_value = "out.png")]
    pub output: PathBuf,
    /// Start from this image (img2img); it must have the output's size.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// img2img: how much of the init image to re-noise, in [0, 1].
    #[arg(long, default_value_t = 0.75, allow_negative_numbers = true)]
    pub strength: f32,
    /// Initial latents: safetensors with tensor `latents`, f32 NCHW (batch, channels, h, w).
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// Also save the image tensor `image`, f32 (batch, H, W, 3) in [0, 1], to this safetensors file.
    #[arg(long)]
    pub save_tensor: Option<PathBuf>,
}

/// Error unless a file can be created in `path`'s directory (checked before any GPU work).
fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    anyhow::ensure!(
        dir.exists(),
        "output directory {} does not exist",
        dir.display()
    );
    anyhow::ensure!(
        dir.is_dir(),
        "output directory {} is not a directory",
        dir.display()
    );
    let probe = dir.join(format!(".stipple-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    anyhow::ensure!(!path.is_dir(), "output {} is a directory", path.display());
    Ok(())
}

/// out.png → out-3.png for image 3 of a batch.
fn numbered(path: &Path, index: usize, batch: usize) -> PathBuf {
    if batch == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("png");
    path.with_file_name(format!("{stem}-{}.{ext}", index + 1))
}

/// One prompt's images: what to draw, its seed and where its PNGs go.
struct Job {
    prompt: String,
    seed: u64,
    outputs: Vec<PathBuf>,
}

/// The jobs of this invocation: one prompt, or every line of --prompts-file.
fn jobs(args: &GenerateArgs, seed: u64) -> anyhow::Result<Vec<Job>> {
    let batch = args.batch.max(1);
    if let (Some(file), Some(dir)) = (&args.prompts_file, &args.out_dir) {
        let prompts = prompts_file::read_prompts(file)?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        return Ok(prompts
            .into_iter()
            .enumerate()
            .map(|(k, prompt)| Job {
                prompt,
                seed: seed.wrapping_add(k as u64),
                outputs: (0..batch)
                    .map(|i| prompts_file::image_path(dir, k, i, batch))
                    .collect(),
            })
            .collect());
    }
    Ok(vec![Job {
        prompt: args.prompt.clone().unwrap_or_default(),
        seed,
        outputs: (0..batch)
            .map(|i| numbered(&args.output, i, batch))
            .collect(),
    }])
}

pub fn run(gpu_options: &GpuOptions, args: &GenerateArgs) -> anyhow::Result<()> {
    // Everything that can be checked without the GPU, first.
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    stipple::weights::single_file::refuse_pickle(&model)?;
    anyhow::ensure!(
        model.exists(),
        "model {} not found (pass --model PATH)",
        model.display()
    );
    anyhow::ensure!(
        args.config.is_none() || model.is_file(),
        "--config is for a single-file --model; {} is a folder",
        model.display()
    );
    let dtype = match args.dtype.as_str() {
        "auto" => None,
        other => Some(other.parse::<DType>()?),
    };
    for (name, value) in [("width", args.width), ("height", args.height)] {
        anyhow::ensure!(
            value != Some(0),
            "invalid {name}: 0 (leave it out for the model's native size)"
        );
    }
    let steps = args
        .steps
        .unwrap_or(if args.scheduler.as_deref() == Some("lcm") {
            4
        } else {
            20
        });
    let seed = args.seed.unwrap_or_else(stipple::rng::random_seed);
    let latents = match &args.latents {
        Some(path) => {
            let (shape, data) = image_io::read_tensor_safetensors(path, "latents")?;
            anyhow::ensure!(
                shape.len() == 4,
                "{}: tensor latents has shape {shape:?}, expected (batch, channels, h, w)",
                path.display()
            );
            Some((shape, data))
        }
        None => None,
    };
    let init_image = match &args.init_image {
        Some(path) => {
            let (w, h, pixels) = image_io::read_image_rgb(path)?;
            Some(InitImage {
                width: w as usize,
                height: h as usize,
                pixels,
                strength: args.strength,
            })
        }
        None => None,
    };
    let mut options = GenerateOptions {
        prompt: String::new(),
        negative_prompt: args.negative.clone(),
        steps,
        guidance_scale: args.cfg,
        seed,
        width: args.width.unwrap_or(0),
        height: args.height.unwrap_or(0),
        batch: args.batch,
        scheduler: args.scheduler.clone(),
        latents: None,
        init_image,
    };
    if let Some((shape, data)) = latents {
        anyhow::ensure!(
            shape[0] == args.batch,
            "--latents holds a batch of {}, but --batch is {}",
            shape[0],
            args.batch
        );
        if args.width.is_none() && args.height.is_none() {
            // Take the size from the latents (the VAE factor is checked once the model is loaded).
            options.height = shape[2];
            options.width = shape[3];
        }
        options.latents = Some(data);
    }
    options.validate()?;
    let jobs = jobs(args, seed)?;
    for path in jobs.iter().flat_map(|job| &job.outputs) {
        check_writable(path)?;
    }
    if let Some(t) = &args.save_tensor {
        check_writable(t)?;
    }

    let t0 = Instant::now();
    let gpu = Gpu::new(gpu_options)?;
    let mut pipeline = if model.is_file() {
        let options = SingleFileOptions {
            config: args.config.clone(),
        };
        let (pipeline, info) = Pipeline::load_single_file(&gpu, &model, dtype, &options)
            .with_context(|| format!("loading {}", model.display()))?;
        eprintln!(
            "single file: {} ({}), prediction type {:?}",
            info.family.name(),
            info.configs,
            pipeline.scheduler_config.prediction_type
        );
        pipeline
    } else {
        super::load_progress::load_pipeline(&gpu, &model, dtype)
            .with_context(|| format!("loading {}", model.display()))?
    };
    if options.latents.is_some() && args.width.is_none() && args.height.is_none() {
        let f = pipeline.vae_scale_factor();
        options.height *= f;
        options.width *= f;
    }
    let load = t0.elapsed().as_secs_f64();
    eprintln!(
        "seed {seed}; {} on {} ({:?}), {}",
        model.display(),
        gpu.info.name,
        gpu.info.backend,
        pipeline.dtype.name()
    );

    let bar = indicatif::ProgressBar::new((steps * jobs.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} denoising {bar:30} {pos}/{len} steps, {per_sec} [{elapsed_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Ctrl-C cancels between steps; the prompt being drawn is not written, finished ones stay.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    let model_name = model
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let mut total = Timings::default();
    for (k, job) in jobs.iter().enumerate() {
        options.prompt = job.prompt.clone();
        options.seed = job.seed;
        if jobs.len() > 1 {
            bar.set_message(format!("prompt {}/{}", k + 1, jobs.len()));
        }
        let out = pipeline.generate(&options, |step, len| {
            bar.set_length((len * jobs.len()) as u64);
            bar.set_position((k * len + step) as u64);
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                Progress::Cancel
            } else {
                Progress::Continue
            }
        });
        let out = match out {
            Err(stipple::Error::Cancelled) => {
                bar.finish_and_clear();
                if jobs.len() > 1 {
                    anyhow::bail!(
                        "interrupted (Ctrl-C) during prompt {} of {}: the {k} finished prompts' \
                         images are written, prompt {} and later are not",
                        k + 1,
                        jobs.len(),
                        k + 1
                    );
                }
                anyhow::bail!("interrupted (Ctrl-C): cancelled between steps, nothing written")
            }
            other => other.with_context(|| format!("prompt {:?}", job.prompt))?,
        };
        if out.truncated_tokens > 0 {
            bar.suspend(|| {
                eprintln!(
                    "warning: prompt {:?} was truncated: {} tokens past the 75-token window were dropped",
                    job.prompt, out.truncated_tokens
                )
            });
        }
        write_images(&options, &out, job, steps, &model_name)?;
        if let Some(path) = &args.save_tensor {
            let (w, h) = (out.width, out.height);
            image_io::write_tensor_safetensors(
                path,
                "image",
                &[options.batch, h, w, 3],
                &out.images,
            )?;
        }
        total.text_encode += out.timings.text_encode;
        total.denoise += out.timings.denoise;
        total.decode += out.timings.decode;
    }
    bar.finish_and_clear();
    eprintln!(
        "load {load:.2}s, text encode {:.2}s, denoise {:.2}s ({:.2} it/s), decode {:.2}s; plan memory {:.1} MiB",
        total.text_encode,
        total.denoise,
        (steps * jobs.len()) as f64 / total.denoise.max(1e-9),
        total.decode,
        pipeline.plan_bytes() as f64 / (1u64 << 20) as f64
    );
    Ok(())
}

/// PNGs of one prompt's images, each with its A1111 `parameters` chunk; prints each path.
fn write_images(
    options: &GenerateOptions,
    out: &GenerateOutput,
    job: &Job,
    steps: usize,
    model_name: &str,
) -> anyhow::Result<()> {
    let (w, h) = (out.width, out.height);
    let per_image = w * h * 3;
    for (i, path) in job.outputs.iter().enumerate() {
        let image = &out.images[i * per_image..(i + 1) * per_image];
        // As diffusers' numpy_to_pil: round half to even.
        let rgb: Vec<u8> = image
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
            .collect();
        let params = image_io::a1111_parameters(&A1111Parameters {
            prompt: job.prompt.clone(),
            negative_prompt: options.negative_prompt.clone(),
            steps: steps as u32,
            sampler: out.scheduler.clone(),
            cfg_scale: options.guidance_scale,
            seed: job.seed,
            width: w as u32,
            height: h as u32,
            model: model_name.to_string(),
            denoising_strength: options.init_image.as_ref().map(|i| i.strength),
            extra: Vec::new(),
        });
        image_io::write_png(path, w as u32, h as u32, &rgb, Some(&params))?;
        println!("{}", path.display());
    }
    Ok(())
}
