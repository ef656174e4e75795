// The denoising loop on the GPU vs the CPU loop, side by side in one process:
// `cargo run --release --example gpu_loop -- [MODEL_DIR] [STEPS] [ROUNDS]`
// (default: weights/stipple-emoji-64, 20 steps, 3 rounds). Alternates the two loops on the
// same loaded pipeline and prints the denoising ms per step of each and their ratio.
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};

fn main() -> stipple::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default_model = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/stipple-emoji-64");
    let model = args.first().map_or(default_model, String::as_str);
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let gpu = stipple::Gpu::new(&stipple::GpuOptions::from_env())?;
    eprintln!("adapter: {}", gpu.info.name);
    let mut pipeline = Pipeline::load(&gpu, model.as_ref(), None)?;
    let mut run = |cpu_loop: bool| -> stipple::Result<f64> {
        let options = GenerateOptions {
            prompt: "an emoji of a red apple".into(),
            steps,
            scheduler: Some("dpmpp-2m".into()),
            cpu_loop,
            ..Default::default()
        };
        let out = pipeline.generate(&options, |_, _| Progress::Continue)?;
        Ok(out.timings.denoise * 1e3 / steps as f64)
    };
    run(false)?; // builds the plans and compiles the kernels
    let (mut gpu_ms, mut cpu_ms) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        gpu_ms.push(run(false)?);
        cpu_ms.push(run(true)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (g, c) = (median(&mut gpu_ms), median(&mut cpu_ms));
    println!("{model}: {steps} steps, median of {rounds}");
    println!(
        "GPU loop {g:.2} ms/step, CPU loop {c:.2} ms/step, CPU/GPU {:.3}",
        c / g
    );
    Ok(())
}
