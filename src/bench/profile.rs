//! `stipple bench unet`: one UNet step of a model folder profiled dispatch by dispatch (GPU
//! timestamps between dispatches), grouped by kernel: where a denoising step's time goes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::graph::Plan;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;

#[derive(Clone, Debug, Serialize)]
pub struct KernelShare {
    pub kernel: String,
    pub dispatches: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct UNetProfile {
    pub dtype: &'static str,
    pub batch: usize,
    pub latent: [usize; 2],
    /// Whole step from one timestamp pair ([`Plan::run_timed`]).
    pub step_seconds: f64,
    pub by_kernel: Vec<KernelShare>,
    /// The slowest dispatches: (node, kernel, seconds).
    pub slowest: Vec<(String, String, f64)>,
}

/// Profile the UNet in `dir` (a model folder's `unet/`) at its native latent size (or `latent`).
pub fn profile_unet(
    gpu: &Gpu,
    dir: &Path,
    dtype: Option<DType>,
    batch: usize,
    latent: Option<[usize; 2]>,
) -> Result<UNetProfile> {
    let dtype = dtype.unwrap_or_else(|| auto_dtype(gpu));
    let unet = UNet2DConditionModel::from_dir(Ctx::new(gpu, dtype), dir)?;
    let side = unet.config.sample_size.unwrap_or(64);
    let latent = latent.unwrap_or([side, side]);
    let g = unet.graph(dtype, batch, latent, 77, false)?;
    let plan = Plan::new(gpu, g)?;
    let c = unet.config.in_channels;
    let noise = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    };
    plan.write_input("sample", &noise(batch * latent[0] * latent[1] * c, 1))?;
    plan.write_input("timestep", &vec![500.0; batch])?;
    plan.write_input(
        "encoder_hidden_states",
        &noise(batch * 77 * unet.config.cross_attention_dim, 2),
    )?;
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
    Ok(UNetProfile {
        dtype: dtype.name(),
        batch,
        latent,
        step_seconds,
        by_kernel,
        slowest,
    })
}
