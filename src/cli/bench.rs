//! `stipple bench kernels`: prints the kernel table (or JSON).

use stipple::bench::{run_kernel_bench, run_kernel_compare, CompareReport, KernelBenchOptions};
use stipple::gpu::kernels::ShaderDir;
use stipple::{DType, Gpu, GpuOptions};

#[derive(clap::Args)]
pub struct KernelBenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Storage dtype: f32, f16 or auto (f16 where the adapter has SHADER_F16 and is not a CPU).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Timed runs per kernel after a warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Batch (2 = classifier-free guidance).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Latent side: 64 for 512×512 images.
    #[arg(long, default_value_t = 64)]
    pub latent: usize,
    /// Also time every attention kernel variant (one query per invocation; workgroup-memory
    /// tiles; subgroup lanes) and both group-norm reductions (workgroup memory; subgroups, where
    /// the device has SUBGROUP), side by side.
    #[arg(long)]
    pub variants: bool,
    /// Time the embedded shaders against edited copies in DIR (`<shader>.wgsl`), alternating
    /// runs on the same inputs, after checking both against the CPU reference.
    #[arg(long, value_name = "DIR")]
    pub compare: Option<std::path::PathBuf>,
    /// Only the kernels whose name contains this (e.g. `attention`).
    #[arg(long)]
    pub only: Option<String>,
    /// Also time attention at the other head dims of the SD family: D64 (SD2.x, SDXL), D80 and
    /// D160 (SD1.x's deeper levels), the VAE's single head of 512, CLIP's causal 77 tokens.
    #[arg(long)]
    pub attention_shapes: bool,
    /// Also time the lanes attention kernel (lavapipe's) with these queries per lane, e.g.
    /// `8,16`, beside each attention case.
    #[arg(long, value_delimiter = ',', value_name = "NQ,...")]
    pub lanes_queries: Vec<usize>,
}

pub fn run_kernels(options: &GpuOptions, args: &KernelBenchArgs) -> anyhow::Result<()> {
    let gpu = Gpu::new(options)?;
    let dtype = match args.dtype.as_str() {
        "auto" => stipple::gpu::auto_dtype(&gpu),
        other => other.parse::<DType>()?,
    };
    if args.batch == 0 || args.latent == 0 || args.iters == 0 {
        anyhow::bail!("--batch, --latent and --iters must be at least 1");
    }
    let opts = KernelBenchOptions {
        dtype,
        batch: args.batch,
        latent: args.latent,
        iters: args.iters,
        variants: args.variants,
        only: args.only.clone(),
        attention_shapes: args.attention_shapes,
        lanes_queries: args.lanes_queries.clone(),
    };
    if let Some(dir) = &args.compare {
        let edited = gpu.with_shader_dir(Some(ShaderDir::load(dir)?));
        let embedded = gpu.with_shader_dir(None);
        let report = run_kernel_compare(&embedded, &edited, &opts, |stage| {
            if !args.json {
                eprintln!("  {stage} …");
            }
        })?;
        return print_compare(&report, args.json);
    }
    let report = run_kernel_bench(&gpu, &opts, |stage| {
        if !args.json {
            eprintln!("  running {stage} …");
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "adapter: {} ({}, {}); {} kernels; dtype {}; timing: {}",
        report.adapter,
        report.backend,
        report.device_type,
        report.variant,
        report.dtype,
        report.timing
    );
    println!(
        "measured peak: FMA {:.1} GFLOP/s, copy {:.2} GB/s",
        report.peak.fma_gflops, report.peak.copy_gbps
    );
    println!();
    println!(
        "{:<24} {:<42} {:>10} {:>16} {:>8}",
        "kernel", "shape", "median ms", "rate", "of peak"
    );
    for k in &report.kernels {
        println!(
            "{:<24} {:<42} {:>10.2} {:>8.2} {:<7} {:>7.1}%",
            k.kernel,
            k.shape,
            k.median_ms,
            k.rate,
            k.unit,
            100.0 * k.fraction_of_peak
        );
    }
    Ok(())
}

/// The `--compare` table; fails when an edited shader misses the CPU reference.
fn print_compare(report: &CompareReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "adapter: {}; dtype {}; timing: {}; measured peak FMA {:.1} GFLOP/s, copy {:.2} GB/s",
            report.adapter,
            report.dtype,
            report.timing,
            report.peak.fma_gflops,
            report.peak.copy_gbps
        );
        println!(
            "embedded shaders vs {} ({})\n",
            report.shader_dir,
            report.edited_shaders.join(", ")
        );
        println!(
            "{:<30} {:>12} {:>12} {:>8} {:>13} {:>13}",
            "kernel", "embedded ms", "edited ms", "speedup", "embedded err", "edited err"
        );
        for r in &report.rows {
            println!(
                "{:<30} {:>12.2} {:>12.2} {:>7.2}× {:>13.2e} {:>13.2e}{}",
                r.kernel,
                r.embedded.median_ms,
                r.edited.median_ms,
                r.speedup,
                r.embedded_error,
                r.edited_error,
                if r.edited_ok { "" } else { "  WRONG" }
            );
        }
        if let Some(r) = report.rows.first() {
            println!(
                "\nerrors: max |GPU − CPU reference| / max(1, max |reference|) at latent {}, \
                 tolerance {:.0e}; speedup = embedded ms / edited ms",
                r.check_latent, r.tolerance
            );
        }
    }
    let wrong: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| !r.edited_ok)
        .map(|r| r.kernel.as_str())
        .collect();
    anyhow::ensure!(
        wrong.is_empty(),
        "the edited shaders disagree with the CPU reference in: {}",
        wrong.join(", ")
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct MemoryBenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Image width in pixels (multiple of 64).
    #[arg(short = 'W', long, default_value_t = 512)]
    pub width: usize,
    /// Image height in pixels (multiple of 64).
    #[arg(short = 'H', long, default_value_t = 512)]
    pub height: usize,
    /// sd15 or sdxl (both text encoders, the SDXL UNet, the VAE decoding in f32).
    #[arg(long, default_value = "sd15")]
    pub family: String,
    /// Images per prompt (the UNet runs twice this batch with CFG).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

pub fn run_memory(options: &GpuOptions, args: &MemoryBenchArgs) -> anyhow::Result<()> {
    if args.width == 0
        || args.height == 0
        || !args.width.is_multiple_of(64)
        || !args.height.is_multiple_of(64)
    {
        anyhow::bail!("--width and --height must be positive multiples of 64 (SD1.5: 8× VAE, 3 UNet downsamplings)");
    }
    let family = stipple::bench::memory::PlanFamily::parse(&args.family)?;
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let gpu = Gpu::new(options)?;
    let rows =
        stipple::bench::memory::plan_memory(&gpu, family, args.height, args.width, args.batch)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} plans (placeholder weights, nothing run); adapter {}",
        family.name(),
        gpu.info.name
    );
    println!(
        "{:<40} {:>5} {:>10} {:>11} {:>11} {:>14} {:>9}  largest tensor (limit {:.0} MiB)",
        "model",
        "dtype",
        "weights",
        "act. peak",
        "bound",
        "without reuse",
        "dispatches",
        mib(rows[0].binding_limit_bytes)
    );
    for r in &rows {
        let over = if r.largest_tensor_bytes > r.binding_limit_bytes {
            "  OVER THE LIMIT"
        } else {
            ""
        };
        println!(
            "{:<40} {:>5} {:>6.0} MiB {:>7.0} MiB {:>7.0} MiB {:>10.0} MiB {:>9}  {} {:.0} MiB{over}",
            r.model,
            r.dtype,
            mib(r.weights_bytes),
            mib(r.activation_peak_bytes),
            mib(r.activation_bound_bytes),
            mib(r.without_reuse_bytes),
            r.dispatches,
            r.largest_tensor,
            mib(r.largest_tensor_bytes)
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SoakArgs {
    /// A diffusers model folder (the tiny test model keeps a soak short).
    #[arg(short, long, default_value = "tests/fixtures/models/tiny-pipe")]
    pub model: std::path::PathBuf,
    /// Generations to run.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Denoising steps per generation.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Sizes to cycle through, as WxH (multiples of the model's size multiple).
    #[arg(long, value_delimiter = ',', default_value = "24x16,16x16,32x24")]
    pub sizes: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run_soak(options: &GpuOptions, args: &SoakArgs) -> anyhow::Result<()> {
    let sizes = args
        .sizes
        .iter()
        .map(|s| {
            let (w, h) = s
                .split_once('x')
                .ok_or_else(|| anyhow::anyhow!("size {s:?} is not WxH"))?;
            Ok((w.parse::<usize>()?, h.parse::<usize>()?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gpu = Gpu::new(options)?;
    let mut pipe = stipple::pipeline::Pipeline::load(&gpu, &args.model, None)?;
    let report = stipple::bench::soak::soak(&mut pipe, args.runs, args.steps, &sizes, |run| {
        if !args.json && run % 25 == 0 {
            eprintln!("  {run}/{} runs", args.runs);
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} runs in {:.1}s ({:.2} runs/s) on {}",
        report.runs,
        report.seconds,
        report.runs as f64 / report.seconds,
        gpu.info.name
    );
    println!(
        "process RSS after the first round {:.1} MiB, at the end {:.1} MiB; plan memory {:.2} → {:.2} MiB (first and last complete round)",
        mib(report.rss_after_first_round_bytes),
        mib(report.rss_end_bytes),
        mib(report.plan_bytes_after_first_round),
        mib(report.plan_bytes_end)
    );
    println!(
        "repeated settings: {} runs, {} with identical images",
        report.repeated_runs, report.identical_repeats
    );
    anyhow::ensure!(
        report.identical_repeats == report.repeated_runs,
        "equal settings gave different images"
    );
    Ok(())
}

#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// sd15, sd21, sd21-768, sd-turbo, sdxl, sdxl-turbo (published configs, random weights made
    /// in memory: nothing is downloaded or written), or a model folder or single file.
    #[arg(long, default_value = "sd15")]
    pub family: String,
    /// A model folder or single file (the same as `--family PATH`).
    #[arg(short, long)]
    pub model: Option<std::path::PathBuf>,
    /// Image side in pixels, or WxH (default: the model's native size).
    #[arg(long)]
    pub size: Option<String>,
    /// Batch (default 2 = classifier-free guidance for unet and clip, 1 for vae).
    #[arg(long)]
    pub batch: Option<usize>,
    /// auto, f32 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Timed runs after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Also profile one run dispatch by dispatch: tables by kernel and by module.
    #[arg(long)]
    pub profile: bool,
    /// Module depth of the per-module table (1: down_blocks.1, mid_block; 2:
    /// up_blocks.2.attentions.0).
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    /// Write a Chrome trace (Perfetto, chrome://tracing) of the profiled run (implies --profile).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,
    /// Use this FMA peak (GFLOP/s) instead of measuring it.
    #[arg(long)]
    pub peak_gflops: Option<f64>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// text-encoder, unet or vae-decoder (the same as `bench clip|unet|vae --profile`).
    #[arg(long, default_value = "unet")]
    pub component: String,
    #[command(flatten)]
    pub common: ModelArgs,
}

/// `WxH` or one side, in pixels → [height, width].
fn parse_size(s: &str) -> anyhow::Result<[usize; 2]> {
    let side = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| anyhow::anyhow!("--size {s:?}: expected a side in pixels or WxH"))
    };
    Ok(match s.split_once(['x', 'X']) {
        Some((w, h)) => [side(h)?, side(w)?],
        None => [side(s)?; 2],
    })
}

pub fn run_model(
    options: &GpuOptions,
    model: stipple::bench::model::BenchModel,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    use stipple::bench::model::{bench_model, BenchModel, ModelBenchOptions, Source};
    let source = match &args.model {
        Some(path) => Source::Path(path.clone()),
        None => Source::parse(&args.family),
    };
    if let Source::Path(p) = &source {
        anyhow::ensure!(
            p.exists(),
            "--family {}: not a family (sd15, sd21, sd21-768, sd-turbo, sdxl, sdxl-turbo) nor an existing path",
            p.display()
        );
    }
    let dtype = match args.dtype.as_str() {
        "auto" => None,
        other => Some(other.parse::<DType>()?),
    };
    let batch = args
        .batch
        .unwrap_or(if model == BenchModel::Vae { 1 } else { 2 });
    let o = ModelBenchOptions {
        model,
        source,
        size: args.size.as_deref().map(parse_size).transpose()?,
        batch,
        dtype,
        iters: args.iters,
        profile: args.profile || args.trace.is_some(),
        depth: args.depth,
        peak_gflops: args.peak_gflops,
    };
    if let Some(trace) = &args.trace {
        stipple::output_file::check_output(trace)?;
    }
    let gpu = Gpu::new(options)?;
    let r = bench_model(&gpu, &o, |stage| {
        if !args.json {
            eprintln!("  {stage} …");
        }
    })?;
    if let (Some(path), Some(p)) = (&args.trace, &r.profile) {
        stipple::bench::trace::write_trace(path, &p.dispatches, p.depth)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let what = match (r.size, r.latent) {
        (Some([h, w]), Some([lh, lw])) => format!("{w}x{h} px (latent {lw}x{lh})"),
        _ => format!("{} tokens", r.tokens),
    };
    println!(
        "{} of {} on {}: batch {}, {what}, {}, {} dispatches ({})",
        r.model.name(),
        r.source,
        r.adapter,
        r.batch,
        r.dtype,
        r.dispatches,
        r.plans.join(" + ")
    );
    println!(
        "one run: {:.1} ms (median of {}); {} GFLOP ({} in matmul/conv/attention); \
         {:.2} GFLOP/s = {:.1}% of the {} FMA peak {:.1} GFLOP/s",
        r.step_seconds * 1e3,
        r.run_seconds.len(),
        gflop(r.flops),
        gflop(r.tensor_flops),
        r.gflops,
        100.0 * r.fraction_of_peak,
        r.peak_source,
        r.peak_gflops
    );
    println!(
        "GPU memory: weights {:.1} MiB, activation peak {:.1} MiB",
        mib(r.weights_bytes),
        mib(r.activation_peak_bytes)
    );
    if let Some(p) = &r.profile {
        use stipple::bench::tables::format_table;
        println!(
            "\nprofiled run (timestamp after every dispatch): {:.1} ms in dispatches\n",
            p.dispatch_seconds * 1e3
        );
        print!("{}", format_table("kernel", &p.by_kernel));
        println!();
        print!(
            "{}",
            format_table(&format!("module (depth {})", p.depth), &p.by_module)
        );
    }
    if let Some(path) = &args.trace {
        eprintln!("trace: {}", path.display());
    }
    Ok(())
}

pub fn run_profile(options: &GpuOptions, args: &ProfileArgs) -> anyhow::Result<()> {
    use stipple::bench::model::BenchModel;
    let model = match args.component.as_str() {
        "text-encoder" => BenchModel::Clip,
        "unet" => BenchModel::Unet,
        "vae-decoder" => BenchModel::Vae,
        other => anyhow::bail!("--component {other:?}: expected text-encoder, unet or vae-decoder"),
    };
    let mut common = args.common.clone();
    common.profile = true;
    run_model(options, model, &common)
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// A diffusers model folder or a single-file checkpoint.
    #[arg(short, long)]
    pub model: std::path::PathBuf,
    /// f32, f16 or auto.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Also time the text encoder (batch 2), twice.
    #[arg(long)]
    pub text_encoder: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run_load(options: &GpuOptions, args: &LoadArgs) -> anyhow::Result<()> {
    let dtype = match args.dtype.as_str() {
        "auto" => None,
        other => Some(other.parse::<DType>()?),
    };
    let gpu = Gpu::new(options)?;
    let r = stipple::bench::load::bench_load(&gpu, &args.model, dtype, args.text_encoder)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} on {} ({}): load {:.2} s, {:.1} MiB of tensors in the files, {:.1} MiB of GPU weights, peak RSS {}",
        r.model,
        r.adapter,
        r.dtype,
        r.load_seconds,
        mib(r.file_bytes),
        mib(r.gpu_weight_bytes),
        r.peak_rss_bytes
            .map_or("unknown".into(), |b| format!("{:.1} MiB", mib(b)))
    );
    if let Some([first, second]) = r.text_encoder_seconds {
        println!("text encoder, batch 2: {first:.2} s (first run, with plan build), {second:.2} s (second)");
    }
    Ok(())
}

/// FLOPs as GFLOP with 4 significant digits.
fn gflop(flops: u64) -> String {
    let g = flops as f64 / 1e9;
    let decimals = (3 - g.abs().max(1e-9).log10().floor() as i32).clamp(0, 6) as usize;
    format!("{g:.decimals$}")
}

/// Bytes as MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

#[derive(clap::Args)]
pub struct AutotuneArgs {
    /// Whose shapes to measure: sd15, sd21, sd21-768, sd-turbo, sdxl or sdxl-turbo (the text
    /// encoders, UNet and VAE decoder of a generation at the native size; published configs,
    /// nothing is loaded).
    #[arg(long, default_value = "sd15")]
    pub family: String,
    /// auto (f16 on GPUs with shader-f16, f32 on CPU adapters), f32 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Seconds all measurements may take; keys not reached are measured at their next use.
    #[arg(long, default_value_t = 10.0)]
    pub budget: f64,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_autotune(
    options: &GpuOptions,
    no_autotune: bool,
    args: &AutotuneArgs,
) -> anyhow::Result<()> {
    use stipple::bench::autotune::{run_autotune_bench, AutotuneBenchOptions};
    anyhow::ensure!(
        !no_autotune,
        "`bench autotune` measures and caches: drop --no-autotune"
    );
    anyhow::ensure!(
        options.shaders.is_none(),
        "`bench autotune` measures the embedded shaders: drop --shaders"
    );
    anyhow::ensure!(
        args.budget.is_finite() && args.budget > 0.0,
        "--budget must be a positive number of seconds"
    );
    let family = stipple::weights::published_configs::Family::parse(&args.family)?;
    let dtype = match args.dtype.as_str() {
        "auto" => None,
        other => Some(other.parse::<DType>()?),
    };
    let gpu = Gpu::new(options)?;
    let opts = AutotuneBenchOptions {
        family,
        dtype,
        budget: std::time::Duration::from_secs_f64(args.budget),
    };
    let report = run_autotune_bench(&gpu, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "adapter: {}; {} kernels; family {}; dtype {}; timing: {}; budget {:.1} s",
        report.adapter,
        report.variant,
        report.family,
        report.dtype,
        report.timing,
        report.budget_seconds
    );
    if report.keys == 0 {
        println!(
            "nothing to tune: no kernel of the {} variant has candidate configurations",
            report.variant
        );
        return Ok(());
    }
    println!("\n{:<14} {:>10}  chosen", "candidate", "ms");
    let mut key = "";
    for r in &report.rows {
        if r.key != key {
            key = &r.key;
            let op = key.split('/').take(2).collect::<Vec<_>>().join(" ");
            let timed = r
                .problem
                .as_ref()
                .map(|p| format!(" (timed: {p})"))
                .unwrap_or_default();
            println!("{op} {}{timed}", r.class);
        }
        let ms = r.ms.map_or("-".to_string(), |m| format!("{m:.3}"));
        let note = match r.outcome.as_str() {
            "timed" => String::new(),
            other => format!("  {other}"),
        };
        let chosen = if r.chosen { "  *" } else { "" };
        println!("  {:<12} {:>10}{chosen}{note}", r.candidate, ms);
    }
    println!(
        "\n{} of {} keys decided in {:.2} s; {}",
        report.decided,
        report.keys,
        report.seconds,
        match &report.cache {
            Some(p) => format!("cache rewritten: {p}"),
            None => "no cache directory: decisions kept for this process only".into(),
        }
    );
    Ok(())
}
