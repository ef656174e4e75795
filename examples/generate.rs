// Default model (weights/) → image with progress → PNG: `cargo run --release --example generate`
use std::path::Path;
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};

/// `prompt` with the model folder `model` in `steps` steps, written to `out` as a PNG.
pub fn generate(model: &Path, prompt: &str, steps: usize, out: &Path) -> stipple::Result<()> {
    let gpu = stipple::Gpu::new(&stipple::GpuOptions::from_env())?;
    let mut pipeline = Pipeline::load(&gpu, model, None)?;
    let mut options = GenerateOptions::default();
    (options.prompt, options.steps) = (prompt.into(), steps);
    let output = pipeline.generate(&options, |step, total| {
        eprint!("\rstep {step}/{total}");
        Progress::Continue
    })?;
    eprintln!();
    output.save_png(0, out)
}

fn main() -> stipple::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &'static str| args.get(i).map_or(default, |s| s).to_string();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/stipple-emoji-64");
    let (prompt, out) = (arg(0, "an emoji of a red apple"), arg(1, "apple.png"));
    generate(model.as_ref(), &prompt, 20, out.as_ref())
}
