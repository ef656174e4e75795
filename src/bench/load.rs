//! `stipple bench load`: loading a model folder or single file, measured: wall time, file bytes read, the GPU
//! bytes its weights take (summed from the graphs that use them: text encoder, UNet, VAE encoder
//! and decoder), the host bytes kept (CLIP's token table), this process's peak resident memory
//! (Linux `VmHWM`), and optionally the text encoder's time for a batch of 2 (CFG).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::graph::Plan;
use crate::pipeline::Pipeline;
use crate::weights::Weights;

#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub model: String,
    pub adapter: String,
    pub dtype: &'static str,
    pub load_seconds: f64,
    /// Tensor bytes in the text encoder, UNet and VAE files.
    pub file_bytes: u64,
    /// Weight buffers on the GPU.
    pub gpu_weight_bytes: u64,
    /// Peak resident memory of this process so far (None off Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Text encoder, batch 2: first run (plan build and shader compilation included), then a
    /// second run of the same plan.
    pub text_encoder_seconds: Option<[f64; 2]>,
}

/// Loads `model` and measures it (see the module docs).
pub fn bench_load(
    gpu: &Gpu,
    model: &Path,
    dtype: Option<DType>,
    text_encoder: bool,
) -> Result<LoadReport> {
    // A single-file checkpoint counts all its tensors (EMA copies included); a folder, the
    // components the pipeline loads.
    let file_bytes = if model.is_file() {
        Weights::open(model)?.data_bytes()
    } else {
        ["text_encoder", "text_encoder_2", "unet", "vae"]
            .into_iter()
            .filter(|c| *c != "text_encoder_2" || model.join(c).is_dir())
            .map(|c| Weights::open(model.join(c)).map(|w| w.data_bytes()))
            .sum::<Result<u64>>()?
    };
    let t0 = Instant::now();
    let pipe = Pipeline::load(gpu, model, dtype)?;
    gpu.wait("loading")?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let dtype = dtype.unwrap_or_else(|| auto_dtype(gpu));
    let latent = [8, 8];
    let text_encoder_2_bytes = match &pipe.text_encoder_2 {
        Some(te) => te.graph(dtype, 1, false)?.memory().weights,
        None => 0,
    };
    let gpu_weight_bytes = pipe.text_encoder.graph(dtype, 1, false)?.memory().weights
        + text_encoder_2_bytes
        + pipe
            .unet
            .graph(dtype, 1, latent, 77, false)?
            .memory()
            .weights
        + pipe
            .vae
            .decode_graph(dtype, 1, latent, false)?
            .memory()
            .weights
        + pipe
            .vae
            .encode_graph(dtype, 1, [64, 64], false)?
            .memory()
            .weights;
    let text_encoder_seconds = if text_encoder {
        let ids = pipe
            .tokenizer
            .encode("a photograph of an astronaut riding a horse")?;
        let ids: Vec<u32> = [ids.ids.clone(), ids.ids].concat();
        let mut times = [0.0; 2];
        let mut t = Instant::now();
        let plan = Plan::new(gpu, pipe.text_encoder.graph(dtype, 2, false)?)?;
        for time in &mut times {
            plan.write_input("inputs_embeds", &pipe.text_encoder.embed_tokens(&ids)?)?;
            plan.run()?;
            plan.read_output("last_hidden_state")?;
            *time = t.elapsed().as_secs_f64();
            t = Instant::now();
        }
        Some(times)
    } else {
        None
    };
    Ok(LoadReport {
        model: model.display().to_string(),
        adapter: gpu.info.name.clone(),
        dtype: dtype.name(),
        load_seconds,
        file_bytes,
        gpu_weight_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        text_encoder_seconds,
    })
}

/// `VmHWM` of /proc/self/status in bytes (Linux), else None.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
