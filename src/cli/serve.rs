//! `stipple serve`: flags → [`stipple::serve::ServeConfig`], then serve until SIGINT/SIGTERM.

use std::io::Write;
use std::path::PathBuf;

use stipple::serve::{Limits, ServeConfig};
use stipple::{DType, GpuOptions};

use super::generate::DEFAULT_MODEL;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0 exposes the server to the network: set --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 = any free port; the address is printed on the first line of stdout).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// The default model, a diffusers folder. Default: the model in weights/.
    #[arg(short, long, env = "STIPPLE_MODEL")]
    pub model: Option<PathBuf>,
    /// A folder of diffusers model folders that clients may switch to (sd_model_checkpoint).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
    /// auto (f16 on GPUs with shader-f16, f32 on CPU adapters), f32 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Jobs that may wait behind the running one; more get 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Require this key: `Authorization: Bearer KEY`, or HTTP Basic with KEY as the password.
    #[arg(long, env = "STIPPLE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow browser pages from this origin (e.g. http://localhost:8080, or * for any).
    #[arg(long)]
    pub cors: Option<String>,
    /// Largest width × height per image.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_pixels: u64,
    /// Largest number of denoising steps.
    #[arg(long, default_value_t = 150)]
    pub max_steps: u32,
    /// Largest number of images per request (batch_size × n_iter, or n).
    #[arg(long, default_value_t = 8)]
    pub max_images: u32,
    /// Largest request body in MiB (base64 init images included).
    #[arg(long, default_value_t = 32)]
    pub max_body_mib: usize,
    /// Live previews: /sdapi/v1/progress carries the image being drawn as current_image
    /// (clients may also switch them with the live_previews_enable option).
    #[arg(long)]
    pub previews: bool,
    /// Steps between live previews (A1111's show_progress_every_n_steps).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub preview_every: usize,
    /// A TAESD folder (diffusers AutoencoderTiny) that decodes the previews; without it they
    /// come from a latent→RGB projection. Its factor must match every served model's VAE.
    #[arg(long, value_name = "DIR")]
    pub taesd: Option<PathBuf>,
    /// A folder of LoRA .safetensors files: listed by /sdapi/v1/loras and applied to a request
    /// whose prompt names one as <lora:NAME:MULTIPLIER> (NAME = the file name without .safetensors).
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// Run every kernel in its default configuration: measure nothing, read and write no
    /// autotune cache.
    #[arg(long)]
    pub no_autotune: bool,
}

pub fn run(gpu: &GpuOptions, args: &ServeArgs) -> anyhow::Result<()> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    anyhow::ensure!(
        model.is_dir(),
        "model folder {} not found (pass --model PATH)",
        model.display()
    );
    super::preview::check_every(args.preview_every)?;
    super::preview::check_taesd(args.taesd.as_deref())?;
    let dtype = match args.dtype.as_str() {
        "auto" => None,
        other => Some(other.parse::<DType>()?),
    };
    let is_loopback = matches!(args.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    if !is_loopback && args.api_key.is_none() {
        eprintln!(
            "warning: listening on {} without --api-key: anyone who reaches this port can use the GPU",
            args.host
        );
    }
    let config = ServeConfig {
        host: args.host.clone(),
        port: args.port,
        model,
        models_dir: args.models_dir.clone(),
        dtype,
        gpu: gpu.clone(),
        queue: args.queue,
        api_key: args.api_key.clone(),
        cors: args.cors.clone(),
        limits: Limits {
            max_pixels: args.max_pixels,
            max_steps: args.max_steps,
            max_images: args.max_images,
            max_body_bytes: args.max_body_mib.saturating_mul(1 << 20),
        },
        live_previews: stipple::serve::status::LivePreviews {
            enabled: args.previews,
            every: args.preview_every,
        },
        taesd: args.taesd.clone(),
        lora_dir: args.lora_dir.clone(),
    };
    stipple::serve::run(&config, |server| {
        // First line of stdout: scripts and tests read the address from it.
        println!("listening on http://{}", server.addr);
        let _ = std::io::stdout().flush();
        eprintln!(
            "models: {}; adapter: {}; queue {}; SIGINT/SIGTERM to stop",
            server.catalog.names().join(", "),
            server.adapter,
            args.queue
        );
    })?;
    eprintln!("stopped");
    Ok(())
}
