//! `stipple generate PROMPT`: text (or image) to PNG through the library pipeline.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use stipple::image_io;
use stipple::output_file::{self, NamedPath};
use stipple::pipeline::{
    GenerateOptions, GenerateOutput, InitImage, LoadOptions, Mask, Progress, SizeConditioning,
    Timings,
};
use stipple::schedulers::{PredictionType, SchedulerConfig, SchedulerOverrides, TimestepSpacing};
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
    /// For a single-file --model: a built-in preset instead of the detected family's default:
    /// sdxl-turbo (SDXL-Turbo: 512 px, Euler ancestral, trailing; the file cannot say it is
    /// Turbo), sd-turbo (SD-Turbo, an SD2.x file: 512 px, Euler, trailing), sdxl, sd15, sd21
    /// (2.1-base, epsilon), sd21-768. Turbo models want --steps 1 --cfg 0.
    #[arg(long, conflicts_with = "config")]
    pub preset: Option<String>,
    /// Storage dtype of the text encoder(s): f32 or f16 (default: --dtype).
    #[arg(long)]
    pub text_dtype: Option<String>,
    /// Storage dtype of the VAE: f32 or f16 (default: --dtype; SDXL: f32 when --dtype is f16
    /// and the VAE's config says force_upcast).
    #[arg(long)]
    pub vae_dtype: Option<String>,
    /// What to avoid (classifier-free guidance's unconditional prompt).
    #[arg(short, long, default_value = "")]
    pub negative: String,
    /// Denoising steps (default: 20, or 4 with --scheduler lcm).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale; ≤ 1 turns classifier-free guidance off.
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub cfg: f32,
    /// Seed; -1 or absent: a random one (printed, and recorded in the PNG either way).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seed)]
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
    /// What the model predicts, over its scheduler config's: epsilon or v_prediction.
    #[arg(long, value_parser = parse_prediction_type)]
    pub prediction_type: Option<PredictionType>,
    /// How the steps are spread over the 1000 training timesteps: leading, linspace or trailing
    /// (SD-Turbo: trailing). Default: the model's scheduler config (or the scheduler's own).
    #[arg(long, value_parser = parse_timestep_spacing)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Karras sigmas (euler, dpmpp-2m).
    #[arg(long)]
    pub karras: bool,
    /// Weights variant in each component folder, e.g. fp16 for *.fp16.safetensors (a folder
    /// holding only one variant uses it without this flag).
    #[arg(long)]
    pub variant: Option<String>,
    /// Images to generate.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// auto (f16 on GPUs with shader-f16, f32 on CPU adapters), f32 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Output PNG (numbered out-1.png, out-2.png, … when --batch > 1); `-` writes it to stdout.
    /// Devices and FIFOs are written in place, a symlink's target is replaced (the link stays).
    #[arg(short, long, default_value = "out.png")]
    pub output: PathBuf,
    /// Start from this image (img2img); it must have the output's size.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// img2img: how much of the init image to re-noise, in [0, 1].
    #[arg(long, default_value_t = 0.75, allow_negative_numbers = true)]
    pub strength: f32,
    /// Inpainting: repaint where this image is white, keep the rest of --init-image (resized
    /// to the init image's size when it differs). 9-channel inpainting models use it as
    /// conditioning; other models blend the kept area back after each step.
    #[arg(long, requires = "init_image")]
    pub mask: Option<PathBuf>,
    /// Initial latents: safetensors with tensor `latents`, f32 NCHW (batch, channels, h, w).
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// Also save the image tensor `image`, f32 (batch, H, W, 3) in [0, 1], to this safetensors
    /// file (`-`: stdout).
    #[arg(long)]
    pub save_tensor: Option<PathBuf>,
    /// A VAE folder (config.json + weights) to decode with instead of the model's, e.g. an
    /// fp16-fix SDXL VAE (force_upcast false: decodes in f16 too).
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// Skip this many final text-encoder layers for the prompt (diffusers' clip_skip: SD takes
    /// the final-layer-normed hidden_states[-(N+1)], SDXL hidden_states[-(N+2)]).
    #[arg(long)]
    pub clip_skip: Option<usize>,
    /// diffusers' prompt length: truncate at 75 tokens (with a warning) instead of encoding
    /// longer prompts as 75-token chunks (A1111's way, the default).
    #[arg(long)]
    pub no_chunking: bool,
    /// Take parentheses, brackets and BREAK literally (diffusers) instead of A1111's emphasis
    /// syntax `(word:1.3)`, `(word)`, `[word]`, `\(`, `BREAK` (the default).
    #[arg(long)]
    pub no_emphasis: bool,
    /// Run the CFG combine and scheduler step on the CPU, reading the UNet output back every
    /// step (the reference for the default GPU loop; docs/gpu-loop.md).
    #[arg(long)]
    pub cpu_loop: bool,
    /// SDXL micro-conditioning: the size the model is told the source image had, HEIGHT,WIDTH
    /// (default: the output size).
    #[arg(long, value_parser = parse_pair, value_name = "HEIGHT,WIDTH")]
    pub original_size: Option<[usize; 2]>,
    /// SDXL micro-conditioning: crop offset TOP,LEFT (default 0,0).
    #[arg(long, value_parser = parse_pair, value_name = "TOP,LEFT")]
    pub crops_coords_top_left: Option<[usize; 2]>,
    /// SDXL micro-conditioning: the target size HEIGHT,WIDTH (default: the output size).
    #[arg(long, value_parser = parse_pair, value_name = "HEIGHT,WIDTH")]
    pub target_size: Option<[usize; 2]>,
    /// A LoRA to merge, with its scale (default 1): kohya/A1111 or diffusers/PEFT
    /// .safetensors. Repeatable.
    #[arg(long, value_name = "PATH[:SCALE]")]
    pub lora: Vec<String>,
    /// Warn about LoRA keys that match no module of the model instead of failing.
    #[arg(long)]
    pub lora_lenient: bool,
    #[command(flatten)]
    pub previews: super::preview::PreviewArgs,
    /// Print the GPU time of every model run (UNet steps, text encoder, VAE) by kernel and by
    /// module to stderr at the end (a timestamp after every dispatch).
    #[arg(long)]
    pub profile: bool,
    /// Write a Chrome trace (Perfetto, chrome://tracing) of every profiled dispatch to FILE
    /// (implies --profile).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Module depth of the --profile table (1: down_blocks.1; 2: down_blocks.1.attentions.0).
    #[arg(long, default_value_t = 2)]
    pub profile_depth: usize,
    /// Run every kernel in its default configuration: measure nothing, read and write no
    /// autotune cache (`stipple bench autotune` refreshes the cache instead).
    #[arg(long)]
    pub no_autotune: bool,
}

/// "A,B" → [A, B] (SDXL's (height, width) / (top, left) pairs, in diffusers' order).
fn parse_pair(s: &str) -> Result<[usize; 2], String> {
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|e| format!("{v:?} in {s:?}: {e}"))
    };
    match s.split_once(',') {
        Some((a, b)) => Ok([parse(a)?, parse(b)?]),
        None => Err(format!("{s:?} is not two numbers A,B")),
    }
}

/// `--seed`: a u64, or -1 for a random seed (A1111's convention).
fn parse_seed(text: &str) -> Result<u64, String> {
    if text.trim() == "-1" {
        return Ok(stipple::rng::random_seed());
    }
    text.trim().parse::<u64>().map_err(|_| {
        format!(
            "{text:?} is not a seed: use 0 to {}, or -1 for a random one",
            u64::MAX
        )
    })
}

/// Before any GPU work: every output can be written (see `stipple::output_file`), none is an
/// input or another output, and standard output is asked for at most once.
fn check_outputs(args: &GenerateArgs, jobs: &[Job]) -> anyhow::Result<()> {
    let batch = args.batch.max(1);
    anyhow::ensure!(
        !(output_file::is_stdout(&args.output) && batch > 1),
        "-o - writes one image to stdout, but --batch {batch} makes {batch}: name a file \
         (numbered NAME-1.png, NAME-2.png, …)"
    );
    let mut outputs = Vec::new();
    for job in jobs {
        for (i, path) in job.outputs.iter().enumerate() {
            let what = match (args.prompts_file.is_some(), batch) {
                (false, 1) => "-o".to_string(),
                (false, _) => format!("-o (image {} of --batch {batch})", i + 1),
                (true, _) => format!("--out-dir image {}", path.display()),
            };
            outputs.push(NamedPath::new(what, path));
        }
    }
    if let Some(t) = &args.save_tensor {
        outputs.push(NamedPath::new("--save-tensor", t));
    }
    if let Some(p) = &args.previews.preview {
        outputs.push(NamedPath::new("--preview", p));
    }
    if let Some(t) = &args.trace {
        outputs.push(NamedPath::new("--trace", t));
    }
    let inputs: Vec<NamedPath> = [
        ("--init-image", &args.init_image),
        ("--mask", &args.mask),
        ("--latents", &args.latents),
        ("--prompts-file", &args.prompts_file),
    ]
    .into_iter()
    .filter_map(|(what, path)| path.as_deref().map(|p| NamedPath::new(what, p)))
    .collect();
    output_file::check_outputs(&outputs, &inputs)?;
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
        anyhow::ensure!(
            !output_file::is_stdout(dir),
            "--out-dir - is not possible: --prompts-file writes one image per prompt, name a folder"
        );
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
    anyhow::ensure!(
        args.preset.is_none() || model.is_file(),
        "--preset is for a single-file --model; {} is a folder",
        model.display()
    );
    let text_dtype = args
        .text_dtype
        .as_deref()
        .map(str::parse::<DType>)
        .transpose()?;
    let vae_dtype = args
        .vae_dtype
        .as_deref()
        .map(str::parse::<DType>)
        .transpose()?;
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
        scheduler_overrides: SchedulerOverrides {
            prediction_type: args.prediction_type,
            timestep_spacing: args.timestep_spacing,
            karras: args.karras,
        },
        latents: None,
        init_image,
        size_conditioning: SizeConditioning {
            original_size: args.original_size,
            crops_coords_top_left: args.crops_coords_top_left.unwrap_or_default(),
            target_size: args.target_size,
        },
        clip_skip: args.clip_skip,
        mask: args.mask.as_deref().map(Mask::read).transpose()?,
        no_chunking: args.no_chunking,
        no_emphasis: args.no_emphasis,
        cpu_loop: args.cpu_loop,
        keep_latents: false,
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
    if let Some(name) = &args.scheduler {
        // The name and --karras checked before any GPU work (applied to the model's config later).
        SchedulerConfig::stable_diffusion()
            .with_name(name)?
            .with_overrides(&options.scheduler_overrides)?;
    }
    args.previews.check()?;
    let jobs = jobs(args, seed)?;
    check_outputs(args, &jobs)?;
    // With `-` the image bytes own stdout: every human-readable line goes to stderr.
    let to_stdout = output_file::is_stdout(&args.output)
        || args
            .save_tensor
            .as_deref()
            .is_some_and(output_file::is_stdout);
    let loras: Vec<(PathBuf, f32)> = args
        .lora
        .iter()
        .map(|spec| stipple::lora::parse_spec(spec))
        .collect();
    for (path, _) in &loras {
        anyhow::ensure!(path.is_file(), "LoRA file {} not found", path.display());
    }

    let t0 = Instant::now();
    let gpu = Gpu::new(gpu_options)?;
    let load_options = LoadOptions {
        dtype,
        variant: args.variant.clone(),
        config: args.config.clone(),
        preset: args.preset.clone(),
        text_dtype,
        vae_dtype,
    };
    let (mut pipeline, notes) = super::load_progress::load_pipeline(&gpu, &model, &load_options)
        .with_context(|| format!("loading {}", model.display()))?;
    for note in notes {
        eprintln!("info: {note}");
    }
    let prediction_type = pipeline.scheduler_config_for(&options)?.prediction_type;
    if let Some(vae) = &args.vae {
        pipeline
            .set_vae(vae)
            .with_context(|| format!("loading the VAE {}", vae.display()))?;
    }
    if let Some(taesd) = &args.previews.taesd {
        pipeline
            .set_taesd(taesd)
            .with_context(|| format!("loading the TAESD {}", taesd.display()))?;
    }
    if !loras.is_empty() {
        let t = Instant::now();
        let reports = pipeline.set_loras_with(&loras, args.lora_lenient)?;
        eprintln!("lora: merged in {:.2}s", t.elapsed().as_secs_f64());
        for report in reports {
            eprintln!("lora {}", report.summary());
            for key in &report.unmatched {
                eprintln!("warning: lora {}: skipped {key}", report.path.display());
            }
        }
    }
    if options.latents.is_some() && args.width.is_none() && args.height.is_none() {
        let f = pipeline.vae_scale_factor();
        options.height *= f;
        options.width *= f;
    }
    let load = t0.elapsed().as_secs_f64();
    eprintln!(
        "seed {seed}; {} on {} ({:?}), {}, prediction type {prediction_type}",
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
    let profile = args.profile || args.trace.is_some();
    if profile {
        anyhow::ensure!(
            gpu.supports_profiling(),
            "--profile needs timestamp queries inside passes, which {} lacks",
            gpu.info.name
        );
        gpu.profiler.enable(true);
    }
    let mut total = Timings::default();
    for (k, job) in jobs.iter().enumerate() {
        options.prompt = job.prompt.clone();
        options.seed = job.seed;
        if jobs.len() > 1 {
            bar.set_message(format!("prompt {}/{}", k + 1, jobs.len()));
        }
        let previews = args.previews.options();
        let out = pipeline.generate_with_previews(&options, previews.as_ref(), |info| {
            let (step, len) = (info.step, info.total);
            bar.set_length((len * jobs.len()) as u64);
            bar.set_position((k * len + step) as u64);
            if let (Some(path), Some(image)) = (&args.previews.preview, &info.preview) {
                if let Err(e) = super::preview::write_preview(path, image) {
                    bar.suspend(|| eprintln!("warning: preview not written: {e}"));
                }
            }
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
                    "warning: prompt {:?} was truncated: {} tokens past the 75-token window were dropped (--no-chunking)",
                    job.prompt, out.truncated_tokens
                )
            });
        }
        write_images(&options, &out, job, &model_name, to_stdout)?;
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
    if profile {
        gpu.profiler.enable(false);
        print_profile(&gpu, args)?;
    }
    Ok(())
}

/// `--profile` / `--trace`: the collected runs, summed per model, on stderr.
fn print_profile(gpu: &Gpu, args: &GenerateArgs) -> anyhow::Result<()> {
    use stipple::bench::tables;
    let runs = gpu.profiler.take(gpu)?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in &runs {
        match counts.iter_mut().find(|(m, _)| m == r.model) {
            Some(c) => c.1 += 1,
            None => counts.push((r.model.to_string(), 1)),
        }
    }
    let dispatches = tables::from_runs(&runs);
    eprintln!(
        "\nprofile (GPU timestamps after every dispatch, {}):{}",
        gpu.info.name,
        tables::format_model_summary(&dispatches, &counts, args.profile_depth.max(1))
    );
    if let Some(path) = &args.trace {
        stipple::bench::trace::write_trace(path, &dispatches, args.profile_depth.max(1))?;
        eprintln!(
            "trace: {} ({} dispatches)",
            path.display(),
            dispatches.len()
        );
    }
    Ok(())
}

/// PNGs of one prompt's images, each with its A1111 `parameters` chunk; prints each path (on
/// stderr when stdout carries image bytes).
fn write_images(
    options: &GenerateOptions,
    out: &GenerateOutput,
    job: &Job,
    model_name: &str,
    to_stdout: bool,
) -> anyhow::Result<()> {
    let (w, h) = (out.width, out.height);
    for (i, path) in job.outputs.iter().enumerate() {
        // options.prompt and options.seed are this job's (set before generating).
        let rgb = out
            .rgb8(i)
            .ok_or_else(|| anyhow::anyhow!("image {i} is past the batch of {}", options.batch))?;
        let params = out.parameters(options, model_name);
        image_io::write_png(path, w as u32, h as u32, &rgb, Some(&params))?;
        if to_stdout {
            eprintln!("{}", path.display());
        } else {
            println!("{}", path.display());
        }
    }
    Ok(())
}

/// PNG parameters for the scheduler choices beyond the sampler's name.
fn parse_prediction_type(s: &str) -> Result<PredictionType, String> {
    match s.parse() {
        Ok(PredictionType::Sample) => Err("only epsilon or v_prediction".into()),
        other => other.map_err(|e: stipple::Error| e.to_string()),
    }
}

fn parse_timestep_spacing(s: &str) -> Result<TimestepSpacing, String> {
    s.parse().map_err(|e: stipple::Error| e.to_string())
}
