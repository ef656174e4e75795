//! The `stipple` command line: clap arguments → library calls.

mod cli;

use clap::{Parser, Subcommand};
use stipple::bench::model::BenchModel;

#[derive(Parser)]
#[command(
    name = "stipple",
    version,
    about = "Text-to-image diffusion on any GPU wgpu reaches"
)]
struct Cli {
    /// GPU backend: vulkan, metal, dx12 or gl (default: the best adapter found).
    #[arg(long, global = true, env = "STIPPLE_BACKEND")]
    backend: Option<String>,
    /// Adapter index (as listed by `stipple info`) or a substring of its name.
    #[arg(long, global = true, env = "STIPPLE_ADAPTER")]
    adapter: Option<String>,
    /// Compile kernels from edited WGSL files in DIR (named like shaders/*.wgsl) instead of the
    /// embedded copies; each is validated when loaded.
    #[arg(long, global = true, env = "STIPPLE_SHADERS", value_name = "DIR")]
    shaders: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List adapters; show the chosen one's features and limits.
    Info,
    /// Generate images from a prompt.
    Generate(Box<cli::generate::GenerateArgs>),
    /// Write a full-size random checkpoint of a family (benchmarks, slow tests).
    InitRandom(cli::init_random::InitRandomArgs),
    /// Convert a diffusers folder to an LDM single file (A1111 layout), or back.
    Convert(cli::convert::ConvertArgs),
    /// Serve AUTOMATIC1111- and OpenAI-compatible HTTP APIs (127.0.0.1:7860 by default).
    Serve(Box<cli::serve::ServeArgs>),
    /// Benchmarks.
    Bench {
        /// Run every kernel in its default configuration: measure nothing, read and write no
        /// autotune cache.
        #[arg(long, global = true)]
        no_autotune: bool,
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Kernels at Stable Diffusion 1.5 shapes, against the adapter's measured peak.
    Kernels(cli::bench::KernelBenchArgs),
    /// GPU memory of the SD1.5 or SDXL plans (placeholder weights; nothing runs).
    Memory(cli::bench::MemoryBenchArgs),
    /// Many generations in one process: memory stays flat, equal seeds give equal images.
    Soak(cli::bench::SoakArgs),
    /// One UNet step (random weights of a family, or a model): ms, FLOPs, GFLOP/s against the
    /// measured peak, memory; `--profile` tables by kernel and module, `--trace FILE`.
    Unet(cli::bench::ModelArgs),
    /// The VAE decoder at a size (untiled), as `bench unet`.
    Vae(cli::bench::ModelArgs),
    /// The text encoder(s) on 77 tokens, as `bench unet`.
    Clip(cli::bench::ModelArgs),
    /// `bench clip|unet|vae --profile` by component name (text-encoder, unet, vae-decoder).
    Profile(cli::bench::ProfileArgs),
    /// Load a model folder: time, GPU weight bytes, peak host memory, text encoder time.
    Load(cli::bench::LoadArgs),
    /// Load test of `stipple serve`: concurrent clients, requests/s, latency, errors, RSS.
    Serve(cli::bench_serve::ServeBenchArgs),
    /// Measure the kernel configurations for a family's shapes again on this adapter, print
    /// the table and rewrite the autotune cache.
    Autotune(cli::bench::AutotuneArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let options = stipple::GpuOptions {
        backend: cli.backend,
        adapter: cli.adapter,
        shaders: cli.shaders,
        ..Default::default()
    };
    // `--no-autotune`: default kernel configurations, no measurement, no cache file.
    let autotune = |off: bool| stipple::GpuOptions {
        autotune: stipple::gpu::AutotuneOptions {
            enabled: !off,
            ..Default::default()
        },
        ..options.clone()
    };
    let result = match cli.command {
        Command::Info => cli::info::run(&options),
        Command::Generate(args) => cli::generate::run(&autotune(args.no_autotune), &args),
        Command::InitRandom(args) => cli::init_random::run(&args),
        Command::Convert(args) => cli::convert::run(&args),
        Command::Serve(args) => cli::serve::run(&autotune(args.no_autotune), &args),
        Command::Bench { no_autotune, what } => {
            let options = autotune(no_autotune);
            match what {
                BenchCommand::Kernels(args) => cli::bench::run_kernels(&options, &args),
                BenchCommand::Memory(args) => cli::bench::run_memory(&options, &args),
                BenchCommand::Soak(args) => cli::bench::run_soak(&options, &args),
                BenchCommand::Unet(args) => {
                    cli::bench::run_model(&options, BenchModel::Unet, &args)
                }
                BenchCommand::Vae(args) => cli::bench::run_model(&options, BenchModel::Vae, &args),
                BenchCommand::Clip(args) => {
                    cli::bench::run_model(&options, BenchModel::Clip, &args)
                }
                BenchCommand::Profile(args) => cli::bench::run_profile(&options, &args),
                BenchCommand::Load(args) => cli::bench::run_load(&options, &args),
                BenchCommand::Serve(args) => cli::bench_serve::run(&options, &args),
                BenchCommand::Autotune(args) => {
                    cli::bench::run_autotune(&options, no_autotune, &args)
                }
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, without causes whose text the message before already shows
            // (stipple's errors embed their source, e.g. "path: No such file or directory").
            let mut message = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
            }
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
