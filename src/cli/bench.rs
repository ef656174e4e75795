//! `stipple bench kernels`: prints the kernel table (or JSON).

use stipple::bench::{run_kernel_bench, KernelBenchOptions};
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
    };
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
        "adapter: {} ({}, {}); dtype {}; timing: {}",
        report.adapter, report.backend, report.device_type, report.dtype, report.timing
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
