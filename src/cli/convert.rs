//! `stipple convert IN OUT`: a diffusers folder → an LDM single file, or a single file → a
//! diffusers folder (see `stipple::weights::single_file::convert`).

use std::path::PathBuf;

use anyhow::Context;
use stipple::weights::single_file::convert;
use stipple::weights::FileDtype;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// A diffusers model folder, or a single-file LDM .safetensors checkpoint.
    pub input: PathBuf,
    /// The single file (for a folder input) or the new folder (for a file input) to write.
    pub output: PathBuf,
    /// Store floating-point tensors as f16 or f32 (default: as they are, byte for byte).
    #[arg(long)]
    pub dtype: Option<String>,
    /// For a single-file input: a diffusers folder whose configs (and tokenizer) to use
    /// instead of the detected family's built-in ones.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
}

pub fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    let dtype = match args.dtype.as_deref() {
        None => None,
        Some("f16") => Some(FileDtype::F16),
        Some("f32") => Some(FileDtype::F32),
        Some(other) => anyhow::bail!("invalid --dtype {other:?}: expected f16 or f32"),
    };
    let (input, output) = (&args.input, &args.output);
    anyhow::ensure!(input.exists(), "{} not found", input.display());
    if input.is_dir() {
        anyhow::ensure!(
            args.config.is_none(),
            "--config is for a single-file input; {} is a folder",
            input.display()
        );
        convert::folder_to_single_file(input, output, dtype)
    } else {
        convert::single_file_to_folder(input, output, args.config.as_deref(), dtype)
    }
    .with_context(|| format!("converting {} to {}", input.display(), output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}
