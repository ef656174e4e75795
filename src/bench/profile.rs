//! `stipple bench unet` / `bench profile`: one run of a pipeline folder's UNet, text encoder or
//! VAE decoder profiled dispatch by dispatch (GPU timestamps between dispatches), grouped by
//! kernel: where a denoising step's (or a prompt's, or a decode's) time goes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::graph::Plan;
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;

#[derive(Clone, Debug, Serialize)]
pub struct KernelShare {
    pub kernel: String,
    pub dispatches: usize,
    pub seconds: f64,
}

/// Which model of a pipeline folder to profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    /// `text_encoder/`: one prompt batch of 77 tokens.
    TextEncoder,
    /// `unet/`: one denoising step.
    Unet,
    /// `vae/`: the decoder on one latent batch.
    VaeDecoder,
}

impl Component {
    pub fn parse(name: &str) -> Result<Component> {
        match name {
            "text-encoder" => Ok(Component::TextEncoder),
            "unet" => Ok(Component::Unet),
            "vae-decoder" => Ok(Component::VaeDecoder),
            other => Err(crate::error::Error::invalid(
                "component",
                format!("{other:?}: expected text-encoder, unet or vae-decoder"),
            )),
        }
    }

    /// The model's sub-folder in a diffusers pipeline folder.
    pub fn folder(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
            Component::Unet => "unet",
            Component::VaeDecoder => "vae",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub component: Component,
    pub dtype: &'static str,
    pub batch: usize,
    /// Latent size (UNet, VAE decoder); the text encoder's is [77, hidden size].
    pub latent: [usize; 2],
    /// Whole run from one timestamp pair ([`Plan::run_timed`]).
    pub step_seconds: f64,
    pub by_kernel: Vec<KernelShare>,
    /// The slowest dispatches: (node, kernel, seconds).
    pub slowest: Vec<(String, String, f64)>,
}

/// Deterministic values in [-1, 1) (the inputs' values do not change the timing).
fn filler(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

/// Profile one model of the pipeline folder `model` at `batch` (and, for the UNet and VAE
/// decoder, at its native latent size or `latent`): a warm-up run, a timed run, then one run
/// with a timestamp between every dispatch, grouped by kernel.
pub fn profile_component(
    gpu: &Gpu,
    model: &Path,
    component: Component,
    dtype: Option<DType>,
    batch: usize,
    latent: Option<[usize; 2]>,
) -> Result<Profile> {
    let dtype = dtype.unwrap_or_else(|| auto_dtype(gpu));
    let ctx = Ctx::new(gpu, dtype);
    let dir = model.join(component.folder());
    let (plan, latent) = match component {
        Component::TextEncoder => {
            let encoder = ClipTextModel::from_dir(ctx, &dir)?;
            let (t, d) = (
                encoder.config.max_position_embeddings,
                encoder.config.hidden_size,
            );
            let plan = Plan::new(gpu, encoder.graph(dtype, batch, false)?)?;
            plan.write_input("inputs_embeds", &filler(batch * t * d, 1))?; // (B, T, D)
            (plan, [t, d])
        }
        Component::Unet => {
            let unet = UNet2DConditionModel::from_dir(ctx, &dir)?;
            let side = unet.config.sample_size.unwrap_or(64);
            let latent = latent.unwrap_or([side, side]);
            let plan = Plan::new(gpu, unet.graph(dtype, batch, latent, 77, false)?)?;
            let c = unet.config.in_channels;
            plan.write_input("sample", &filler(batch * latent[0] * latent[1] * c, 1))?; // (B, h, w, C)
            plan.write_input("timestep", &vec![500.0; batch])?;
            plan.write_input(
                "encoder_hidden_states",
                &filler(batch * 77 * unet.config.cross_attention_dim, 2), // (B, 77, D)
            )?;
            (plan, latent)
        }
        Component::VaeDecoder => {
            let vae = AutoencoderKL::from_dir(ctx, &dir)?;
            let f = vae.config.downscale_factor();
            let side = vae.config.sample_size.map(|s| s / f).unwrap_or(64);
            let latent = latent.unwrap_or([side, side]);
            let c = vae.config.latent_channels;
            let plan = Plan::new(gpu, vae.decode_graph(dtype, batch, latent, false)?)?;
            plan.write_input("z", &filler(batch * latent[0] * latent[1] * c, 1))?; // (B, h, w, C)
            (plan, latent)
        }
    };
    plan.run_timed()?; // warm-up
    let step_seconds = plan.run_timed()?;
    let times = plan.run_profiled()?;
    let mut groups: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for t in &times {
        let e = groups.entry(t.kernel.clone()).or_default();
        e.0 += 1;
        e.1 += t.seconds;
    }
    let mut by_kernel: Vec<KernelShare> = groups
        .into_iter()
        .map(|(kernel, (dispatches, seconds))| KernelShare {
            kernel,
            dispatches,
            seconds,
        })
        .collect();
    by_kernel.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let mut slowest: Vec<(String, String, f64)> = times
        .into_iter()
        .map(|t| (t.label, t.kernel, t.seconds))
        .collect();
    slowest.sort_by(|a, b| b.2.total_cmp(&a.2));
    slowest.truncate(10);
    Ok(Profile {
        component,
        dtype: dtype.name(),
        batch,
        latent,
        step_seconds,
        by_kernel,
        slowest,
    })
}
