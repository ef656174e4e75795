//! `stipple bench autotune`: the tuning keys a family's pipeline uses on this adapter (its text
//! encoder(s) at batch 2, the UNet at batch 2 and the VAE decoder at the native size, built
//! from the published configs with placeholder weights: nothing is loaded or run), measured
//! again whatever the cache holds ([`crate::autotune::retune`]), within a budget of its own.
//! The decisions replace the cached ones; keys the budget did not reach are dropped from the
//! cache (measured at their next first use).

use std::time::Duration;

use serde::Serialize;

use super::model::RandomModels;
use crate::autotune::candidates::{find, TUNABLES};
use crate::autotune::choose::Outcome;
use crate::autotune::{retune, Retuned};
use crate::error::Result;
use crate::gpu::{auto_dtype, DType, Gpu, TuneKey};
use crate::graph::Graph;
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::weights::published_configs::Family;
use crate::weights::Weights;

#[derive(Clone, Debug)]
pub struct AutotuneBenchOptions {
    pub family: Family,
    /// None = `auto` (f16 on GPUs with SHADER_F16, f32 on CPU adapters).
    pub dtype: Option<DType>,
    /// Wall-clock time all measurements may take.
    pub budget: Duration,
}

/// One candidate of one key.
#[derive(Clone, Debug, Serialize)]
pub struct AutotuneRow {
    /// The cache's key: `op/dtype/class`.
    pub key: String,
    /// The class in words, e.g. `M=1024 N=320 K=576`.
    pub class: String,
    /// What was timed (the class's representative problem, scaled to the adapter).
    pub problem: Option<String>,
    pub candidate: String,
    /// Median ms per run (timed, or timed but over the per-candidate cap).
    pub ms: Option<f64>,
    /// `timed`, `over cap`, `failed: …` or `skipped (budget)`.
    pub outcome: String,
    pub chosen: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct AutotuneBenchReport {
    pub adapter: String,
    pub family: &'static str,
    /// Kernel variant of the adapter's target (`cpu` or `gpu`).
    pub variant: &'static str,
    pub dtype: &'static str,
    /// `timestamps` or `wall clock`.
    pub timing: &'static str,
    pub keys: usize,
    pub decided: usize,
    pub budget_seconds: f64,
    /// Wall-clock seconds the measurements took.
    pub seconds: f64,
    /// The cache file rewritten (`None`: no cache directory, or tuning off).
    pub cache: Option<String>,
    pub rows: Vec<AutotuneRow>,
}

/// Tuning keys of every graph a generation with `family` builds at its native size, in order
/// of first use.
pub fn family_keys(gpu: &Gpu, family: Family, dtype: DType) -> Result<Vec<TuneKey>> {
    let r = RandomModels::of(family)?;
    let empty = Weights::empty("(placeholder weights)");
    let w = empty.root();
    let ctx = Ctx::placeholders(gpu, dtype);
    let mut graphs: Vec<Graph> = Vec::new();
    for (_, config, projection) in &r.text {
        let m = ClipTextModel::load_with_projection(ctx, &w, config.clone(), *projection)?;
        graphs.push(m.graph(dtype, 2, false)?);
    }
    let latent = r.unet.sample_size.unwrap_or(64);
    let unet = UNet2DConditionModel::load(ctx, &w, r.unet.clone())?;
    graphs.push(unet.graph(dtype, 2, [latent, latent], 77, false)?);
    // SDXL's VAE overflows in f16: the pipeline decodes it in f32 (force_upcast).
    let vae_dtype = if family.is_sdxl() && r.vae.force_upcast {
        DType::F32
    } else {
        dtype
    };
    let vae = AutoencoderKL::load(Ctx::placeholders(gpu, vae_dtype), &w, r.vae.clone())?;
    graphs.push(vae.decode_graph(vae_dtype, 1, [latent, latent], false)?);
    let mut keys: Vec<TuneKey> = Vec::new();
    for g in &graphs {
        for u in g.tuning_uses() {
            if !keys.contains(&u.key) {
                keys.push(u.key.clone());
            }
        }
    }
    Ok(keys)
}

/// `key`'s class in words (`M=1024 N=320 K=576`).
pub fn class_words(key: &TuneKey) -> String {
    let dims = find(TUNABLES, &key.op).map_or(&[][..], |t| t.dims);
    key.class
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}={s}", dims.get(i).copied().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn rows(r: &Retuned) -> impl Iterator<Item = AutotuneRow> + '_ {
    r.report.rows.iter().map(move |row| {
        let (ms, outcome) = match &row.outcome {
            Outcome::Timed(s) => (Some(s * 1e3), "timed".to_string()),
            Outcome::OverCap(s) => (Some(s * 1e3), "over cap".to_string()),
            Outcome::Failed(e) => (None, format!("failed: {e}")),
            Outcome::Skipped => (None, "skipped (budget)".to_string()),
        };
        AutotuneRow {
            key: r.report.key.to_string(),
            class: class_words(&r.report.key),
            problem: r.problem.clone(),
            candidate: row.config.clone(),
            ms,
            outcome,
            chosen: r.report.chosen.as_deref() == Some(row.config.as_str()),
        }
    })
}

/// Measure the keys of `o.family` again and rewrite the cache (module docs).
pub fn run_autotune_bench(gpu: &Gpu, o: &AutotuneBenchOptions) -> Result<AutotuneBenchReport> {
    let dtype = o.dtype.unwrap_or_else(|| auto_dtype(gpu));
    let keys = family_keys(gpu, o.family, dtype)?;
    let start = crate::time::Instant::now();
    let retuned = retune(gpu, &gpu.target, &keys, o.budget);
    let seconds = start.elapsed().as_secs_f64();
    Ok(AutotuneBenchReport {
        adapter: gpu.info.name.clone(),
        family: o.family.name(),
        variant: gpu.target.variant.name(),
        dtype: dtype.name(),
        timing: if gpu.supports_timestamps() {
            "timestamps"
        } else {
            "wall clock"
        },
        keys: retuned.len(),
        decided: retuned.iter().filter(|r| r.report.chosen.is_some()).count(),
        budget_seconds: o.budget.as_secs_f64(),
        seconds,
        cache: gpu.autotune.cache_path().map(|p| p.display().to_string()),
        rows: retuned.iter().flat_map(rows).collect(),
    })
}
