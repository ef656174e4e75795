//! `stipple bench kernels` (filled in below).

use stipple::GpuOptions;

#[derive(clap::Args)]
pub struct KernelBenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_kernels(_options: &GpuOptions, _args: &KernelBenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
