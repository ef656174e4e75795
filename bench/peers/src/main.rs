//! stipple's kernels side by side with burn's wgpu backend, in one process, on the same adapter,
//! at the shapes of `stipple bench kernels` (SD1.5, batch 2 for classifier-free guidance).
//!
//! Each case is built once per library from the same random inputs (each in its own layout:
//! NHWC for stipple, NCHW / (B, H, T, D) for burn), checked against stipple's CPU reference at a
//! small size, then timed in alternating rounds: wall clock from submission to completion for
//! both (stipple: `Plan::run` + wait; burn: the op + `Device::sync`), median of the timed runs
//! after a warm-up call (burn compiles and autotunes on its first call of a shape; that time is
//! reported separately). Ratios > 1 mean stipple is faster.

mod burn_cases;
mod timing;

use clap::Parser;
use stipple::bench::cases::{self, CaseKind};
use stipple::bench::kernels::measure_peak;
use stipple::{DType, Gpu, GpuOptions};

#[derive(Parser, Debug)]
#[command(about = "stipple vs burn-wgpu, kernel by kernel, on the same adapter")]
struct Args {
    /// Latent side (64 = 512×512 images; 16–32 keep a software adapter's run in minutes).
    #[arg(long, default_value_t = 64)]
    latent: usize,
    /// CFG batch.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Timed runs per case and round (after the warm-up).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Alternating rounds (stipple, burn, stipple, burn, …).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Only the cases whose label contains this.
    #[arg(long)]
    only: Option<String>,
    /// Latent side of the correctness check against stipple's CPU reference (0 = skip).
    #[arg(long, default_value_t = 8)]
    check_latent: usize,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let gpu = Gpu::new(&GpuOptions::from_env()).map_err(|e| e.to_string())?;
    let device = burn::prelude::Device::wgpu(Default::default());
    let peak = measure_peak(&gpu, 3).map_err(|e| e.to_string())?;
    println!(
        "adapter: {} ({:?}), stipple {} kernels, f32; FMA peak {:.1} GFLOP/s (stipple's probe)",
        gpu.info.name,
        gpu.info.backend,
        gpu.target.variant.name(),
        peak.fma_gflops
    );
    println!(
        "batch {}, latent {}, {} timed runs × {} rounds, wall clock to completion\n",
        args.batch, args.latent, args.iters, args.rounds
    );
    let mut kinds = CaseKind::table(false);
    if let Some(only) = &args.only {
        kinds.retain(|k| k.label().contains(only.as_str()));
    }
    println!(
        "{:<24} {:>10} {:>10} {:>8} {:>11} {:>11} {:>11} {:>10}",
        "kernel", "stipple ms", "burn ms", "ratio", "stipple", "burn", "burn first", "check"
    );
    for kind in kinds {
        let label = kind.label();
        let check = if args.check_latent > 0 {
            burn_cases::check(&gpu, &device, kind, args.batch, args.check_latent)?
        } else {
            "skipped".to_string()
        };
        let case = cases::build(&gpu, kind, DType::F32, args.batch, args.latent)
            .map_err(|e| format!("{label}: {e}"))?;
        let peer = burn_cases::build(&device, kind, args.batch, args.latent);
        let mut stipple_times = Vec::new();
        let mut burn_times = Vec::new();
        let plan = timing::stipple_plan(&gpu, &case).map_err(|e| format!("{label}: {e}"))?;
        let burn_first = timing::burn_once(&device, &peer);
        timing::stipple_once(&gpu, &plan).map_err(|e| format!("{label}: {e}"))?;
        for _ in 0..args.rounds.max(1) {
            for _ in 0..args.iters.max(1) {
                stipple_times
                    .push(timing::stipple_once(&gpu, &plan).map_err(|e| format!("{label}: {e}"))?);
            }
            for _ in 0..args.iters.max(1) {
                burn_times.push(timing::burn_once(&device, &peer));
            }
        }
        let (s, b) = (timing::median(stipple_times), timing::median(burn_times));
        let unit = if case.compute_bound {
            "GFLOP/s"
        } else {
            "GB/s"
        };
        println!(
            "{:<24} {:>10.2} {:>10.2} {:>7.2}× {:>11} {:>11} {:>10.1}s {:>10}",
            label,
            s * 1e3,
            b * 1e3,
            b / s,
            format!("{:.2} {unit}", case.work / s / 1e9),
            format!("{:.2} {unit}", case.work / b / 1e9),
            burn_first,
            check
        );
    }
    println!("\nratio = burn time / stipple time (> 1: stipple faster); rates from stipple's FLOP/byte counts");
    Ok(())
}
