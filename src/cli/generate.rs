//! `stipple generate PROMPT`: text (or image) to PNG through the library pipeline.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use stipple::image_io::{self, A1111Parameters};
use stipple::pipeline::{GenerateOptions, InitImage, Pipeline, Progress};
use stipple::{DType, Gpu, GpuOptions};

/// The model shipped in weights/ (used when --model is absent).
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/stipple-emoji-64");

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// What to draw.
    pub prompt: String,
    /// A diffusers model folder (model_index.json, unet/, vae/, …). Default: the model in weights/.
    #[arg(short, long, env = "STIPPLE_MODEL")]
    pub model: Option<PathBuf>,
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

pub fn run(gpu_options: &GpuOptions, args: &GenerateArgs) -> anyhow::Result<()> {
    // Everything that can be checked without the GPU, first.
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    anyhow::ensure!(
        model.exists(),
        "model folder {} not found (pass --model PATH)",
        model.display()
    );
    anyhow::ensure!(
        model.is_dir(),
        "model {} is not a folder (pass a diffusers model folder: model_index.json, unet/, vae/, …)",
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
    for i in 0..args.batch.max(1) {
        check_writable(&numbered(&args.output, i, args.batch))?;
    }
    if let Some(t) = &args.save_tensor {
        check_writable(t)?;
    }
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
        prompt: args.prompt.clone(),
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

    let t0 = Instant::now();
    let gpu = Gpu::new(gpu_options)?;
    let mut pipeline = Pipeline::load(&gpu, &model, dtype)
        .with_context(|| format!("loading {}", model.display()))?;
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

    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} denoising {bar:30} {pos}/{len} steps, {per_sec} [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Ctrl-C cancels between steps; nothing is written then.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    let out = pipeline.generate(&options, |step, total| {
        bar.set_length(total as u64);
        bar.set_position(step as u64);
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            Progress::Cancel
        } else {
            Progress::Continue
        }
    });
    bar.finish_and_clear();
    let out = match out {
        Err(stipple::Error::Cancelled) => {
            anyhow::bail!("interrupted (Ctrl-C): cancelled between steps, nothing written")
        }
        other => other?,
    };
    if out.truncated_tokens > 0 {
        eprintln!(
            "warning: the prompt was truncated: {} tokens past the 75-token window were dropped",
            out.truncated_tokens
        );
    }

    let (w, h) = (out.width, out.height);
    let per_image = w * h * 3;
    let model_name = model
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    for i in 0..options.batch {
        let image = &out.images[i * per_image..(i + 1) * per_image];
        // As diffusers' numpy_to_pil: round half to even.
        let rgb: Vec<u8> = image
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
            .collect();
        let params = image_io::a1111_parameters(&A1111Parameters {
            prompt: options.prompt.clone(),
            negative_prompt: options.negative_prompt.clone(),
            steps: steps as u32,
            sampler: out.scheduler.clone(),
            cfg_scale: options.guidance_scale,
            seed,
            width: w as u32,
            height: h as u32,
            model: model_name.clone(),
            denoising_strength: options.init_image.as_ref().map(|i| i.strength),
            extra: Vec::new(),
        });
        let path = numbered(&args.output, i, options.batch);
        image_io::write_png(&path, w as u32, h as u32, &rgb, Some(&params))?;
        println!("{}", path.display());
    }
    if let Some(path) = &args.save_tensor {
        image_io::write_tensor_safetensors(path, "image", &[options.batch, h, w, 3], &out.images)?;
    }
    let t = out.timings;
    eprintln!(
        "load {load:.2}s, text encode {:.2}s, denoise {:.2}s ({:.2} it/s), decode {:.2}s; plan memory {:.1} MiB",
        t.text_encode,
        t.denoise,
        steps as f64 / t.denoise.max(1e-9),
        t.decode,
        pipeline.plan_bytes() as f64 / (1u64 << 20) as f64
    );
    Ok(())
}
