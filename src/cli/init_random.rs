//! `stipple init-random`: writes a full-size random checkpoint of a family (real tensor names and
//! shapes, published configs) for benchmarks and slow tests without downloads.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use stipple::weights::published_configs::Family;
use stipple::weights::random_init::{write_random_folder, write_random_single_file};
use stipple::weights::FileDtype;

/// The CLIP tokenizer files shipped in the repository.
const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/clip_tokenizer");

#[derive(Args, Debug)]
pub struct InitRandomArgs {
    /// Model family: sd15, sd21 (2.1-base, 512 px), sd21-768 (2.1, v-prediction), sd-turbo,
    /// sdxl (SDXL base 1.0), sdxl-turbo.
    #[arg(long)]
    pub family: String,
    /// Checkpoint layout: folder (diffusers) or single-file (one LDM-layout .safetensors, as
    /// AUTOMATIC1111 and ComfyUI load).
    #[arg(long, default_value = "folder")]
    pub layout: String,
    /// Weight dtype on disk: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Seed of the random values.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder with CLIP's vocab.json, merges.txt and token files (default: the repository's
    /// weights/clip_tokenizer).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output folder, or file for --layout single-file (must not exist).
    pub out: PathBuf,
}

pub fn run(args: &InitRandomArgs) -> anyhow::Result<()> {
    let family = Family::parse(&args.family)?;
    let dtype = match args.dtype.as_str() {
        "f32" | "F32" => FileDtype::F32,
        "f16" | "F16" => FileDtype::F16,
        "bf16" | "BF16" => FileDtype::BF16,
        other => anyhow::bail!("--dtype {other:?}: expected f32, f16 or bf16"),
    };
    let write = match args.layout.as_str() {
        "folder" => write_random_folder,
        "single-file" => write_random_single_file,
        other => anyhow::bail!("--layout {other:?}: expected folder or single-file"),
    };
    let tokenizer = args.tokenizer.clone().unwrap_or_else(|| TOKENIZER.into());
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} writing {bar:30} {binary_bytes}/{binary_total_bytes} [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let written = write(
        family,
        dtype,
        &args.out,
        &tokenizer,
        args.seed,
        &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    );
    bar.finish_and_clear();
    written.with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote a random {} checkpoint ({}, {}) to {}",
        family.name(),
        dtype,
        args.layout,
        args.out.display()
    );
    Ok(())
}
