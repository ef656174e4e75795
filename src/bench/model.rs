//! `stipple bench unet|vae|clip`: one model of a family at a size, timed as a whole (median of
//! `iters` runs after a warm-up, one timestamp pair each), its FLOPs counted from the graph
//! ([`crate::graph::flops`]), the effective rate against the adapter's FMA peak measured in the
//! same process, its GPU memory, and, with `profile`, one run timed dispatch by dispatch and
//! grouped by kernel and by diffusers module ([`super::tables`]).
//!
//! Weights: a model folder or single file (`Source::Path`, loaded as `generate` loads it), or
//! a family's published configs with random weights made in memory (`Source::Family`,
//! [`super::random_weights`]). `unet` = one denoising step at `batch` (2 = CFG) with 77 context
//! tokens; `vae` = the decoder at the size (an untiled decode: a size the pipeline would tile
//! is an error that says so); `clip` = the family's text encoder(s) on 77 tokens.
//!
//! Graphs run the adapter's tuned kernel configurations: keys without a decision are measured
//! before the warm-up, as the pipeline does at first use ([`crate::autotune::tuned_graph`]),
//! unless tuning is off (`--no-autotune`).

use std::path::PathBuf;

use serde::Serialize;

use super::tables::{self, ProfiledDispatch, ShareRow};
use crate::autotune::tuned_graph;
use crate::error::{Error, Result};
use crate::gpu::{auto_dtype, DType, Gpu};
use crate::graph::flops::FlopTotals;
use crate::graph::{Graph, Plan, ValueKind};
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::config::{AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::weights::published_configs::Family;
use crate::weights::Weights;

/// Which model `bench` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchModel {
    Unet,
    Vae,
    Clip,
}

impl BenchModel {
    pub fn name(self) -> &'static str {
        match self {
            BenchModel::Unet => "unet",
            BenchModel::Vae => "vae",
            BenchModel::Clip => "clip",
        }
    }
}

/// Where the weights come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Published configs, random weights in memory.
    Family(Family),
    /// A diffusers folder or a single-file checkpoint.
    Path(PathBuf),
}

impl Source {
    /// A family name (`sd15`, `sd21`, `sd21-768`, `sd-turbo`, `sdxl`, `sdxl-turbo`) or a path.
    pub fn parse(s: &str) -> Source {
        match Family::parse(s) {
            Ok(f) => Source::Family(f),
            Err(_) => Source::Path(PathBuf::from(s)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ModelBenchOptions {
    pub model: BenchModel,
    pub source: Source,
    /// Image (height, width) in pixels; None = the model's native size.
    pub size: Option<[usize; 2]>,
    pub batch: usize,
    /// None = `auto` (f16 on GPUs with SHADER_F16, f32 on CPU adapters).
    pub dtype: Option<DType>,
    /// Timed runs after the warm-up (median reported).
    pub iters: usize,
    /// Also profile one run dispatch by dispatch.
    pub profile: bool,
    /// Module depth of the per-module table ([`tables::module_of`]).
    pub depth: usize,
    /// Skip the peak probe and use this FMA peak.
    pub peak_gflops: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelBenchReport {
    pub adapter: String,
    pub model: BenchModel,
    /// `sd15 (random weights)` or the path.
    pub source: String,
    pub dtype: &'static str,
    pub batch: usize,
    /// Image (height, width) in pixels (UNet, VAE).
    pub size: Option<[usize; 2]>,
    /// Latent (height, width) (UNet, VAE).
    pub latent: Option<[usize; 2]>,
    /// Text tokens (CLIP; the UNet's context length).
    pub tokens: usize,
    /// The plans timed together (SDXL's `clip` has two text encoders).
    pub plans: Vec<String>,
    pub dispatches: usize,
    /// Median GPU seconds of one run (all plans), after one warm-up.
    pub step_seconds: f64,
    /// Every timed run.
    pub run_seconds: Vec<f64>,
    /// All counted FLOPs of one run; `flops_by_class.tensor()` is matmul + conv + attention.
    pub flops: u64,
    pub tensor_flops: u64,
    pub flops_by_class: FlopTotals,
    /// `flops / step_seconds`.
    pub gflops: f64,
    pub peak_gflops: f64,
    /// `measured` (FMA probe in this process) or `given` (`--peak-gflops`).
    pub peak_source: &'static str,
    pub fraction_of_peak: f64,
    /// GPU bytes of the weights the plans bind.
    pub weights_bytes: u64,
    /// Pooled intermediates + inputs and outputs, summed over the plans.
    pub activation_peak_bytes: u64,
    /// With `profile`: one run dispatch by dispatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileTables>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileTables {
    /// Sum of the dispatch times of the profiled run.
    pub dispatch_seconds: f64,
    pub depth: usize,
    pub by_kernel: Vec<ShareRow>,
    pub by_module: Vec<ShareRow>,
    #[serde(skip)]
    pub dispatches: Vec<ProfiledDispatch>,
}

/// Graphs of the model with their weights on the GPU, named.
struct Built {
    graphs: Vec<(String, Graph)>,
    dtype: DType,
    size: Option<[usize; 2]>,
    latent: Option<[usize; 2]>,
    tokens: usize,
}

fn parse_config<T: serde::de::DeserializeOwned>(
    family: Family,
    what: &str,
    v: &serde_json::Value,
) -> Result<T> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::invalid("family config", format!("{} {what}: {e}", family.name())))
}

/// A family's configs (random weights are made per graph).
pub(super) struct RandomModels {
    pub family: Family,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    /// (plan name, config, with projection).
    pub text: Vec<(String, ClipTextConfig, bool)>,
}

impl RandomModels {
    /// The published configs of `family`.
    pub fn of(family: Family) -> Result<RandomModels> {
        let c = family.configs();
        let mut text = vec![(
            "text_encoder".to_string(),
            parse_config(family, "text_encoder", &c.text_encoder)?,
            false,
        )];
        if let Some(t2) = &c.text_encoder_2 {
            text.push((
                "text_encoder_2".into(),
                parse_config(family, "text_encoder_2", t2)?,
                true,
            ));
        }
        Ok(RandomModels {
            family,
            unet: parse_config(family, "unet", &c.unet)?,
            vae: parse_config(family, "vae", &c.vae)?,
            text,
        })
    }
}

/// The models of a source, loaded once.
enum Models {
    Random(Box<RandomModels>),
    Loaded(Box<crate::pipeline::Pipeline>),
}

/// Image size → latent, checked against the VAE factor and the UNet's downsamplings.
fn latent_of(size: [usize; 2], vae_factor: usize, unet_multiple: usize) -> Result<[usize; 2]> {
    let multiple = vae_factor * unet_multiple;
    if size.iter().any(|&s| s == 0 || s % multiple != 0) {
        return Err(Error::invalid(
            "size",
            format!(
                "{}x{} px: width and height must be positive multiples of {multiple} \
                 (VAE factor {vae_factor} × UNet downsampling {unet_multiple})",
                size[1], size[0]
            ),
        ));
    }
    Ok([size[0] / vae_factor, size[1] / vae_factor])
}

fn build(gpu: &Gpu, o: &ModelBenchOptions) -> Result<(Built, String)> {
    let dtype = o.dtype.unwrap_or_else(|| auto_dtype(gpu));
    let (models, source) = match &o.source {
        Source::Family(family) => {
            let models = Models::Random(Box::new(RandomModels::of(*family)?));
            (models, format!("{} (random weights)", family_name(*family)))
        }
        Source::Path(path) => {
            let options = crate::pipeline::LoadOptions {
                dtype: Some(dtype),
                ..Default::default()
            };
            let (pipe, _) = crate::pipeline::Pipeline::load_with(gpu, path, &options)?;
            (Models::Loaded(Box::new(pipe)), path.display().to_string())
        }
    };
    let (unet_cfg, vae_cfg) = match &models {
        Models::Random(r) => (r.unet.clone(), r.vae.clone()),
        Models::Loaded(p) => (p.unet.config.clone(), p.vae.config.clone()),
    };
    let vae_factor = vae_cfg.downscale_factor();
    let unet_multiple = 1 << unet_cfg.block_out_channels.len().saturating_sub(1);
    let native = unet_cfg.sample_size.unwrap_or(64) * vae_factor;
    let size = o.size.unwrap_or([native, native]);
    let empty = Weights::empty("(random weights)");
    let w = empty.root();
    let built = match o.model {
        BenchModel::Unet => {
            let latent = latent_of(size, vae_factor, unet_multiple)?;
            let graph = match &models {
                Models::Random(r) => {
                    let m = UNet2DConditionModel::load(
                        Ctx::placeholders(gpu, dtype),
                        &w,
                        r.unet.clone(),
                    )?;
                    let mut g = tuned_graph(gpu, || m.graph(dtype, o.batch, latent, 77, false))?;
                    super::random_weights::realize_placeholders(gpu, &mut g, 0)?;
                    g
                }
                Models::Loaded(p) => {
                    tuned_graph(gpu, || p.unet.graph(p.dtype, o.batch, latent, 77, false))?
                }
            };
            let dtype = graph.dtype;
            Built {
                graphs: vec![("unet".into(), graph)],
                dtype,
                size: Some(size),
                latent: Some(latent),
                tokens: 77,
            }
        }
        BenchModel::Vae => {
            let latent = latent_of(size, vae_factor, 1)?;
            let graph = match &models {
                Models::Random(r) => {
                    // SDXL's VAE overflows in f16: the pipeline decodes it in f32 (force_upcast).
                    let dtype = if r.family.is_sdxl() && r.vae.force_upcast {
                        DType::F32
                    } else {
                        dtype
                    };
                    let m = AutoencoderKL::load(Ctx::placeholders(gpu, dtype), &w, r.vae.clone())?;
                    let g = tuned_graph(gpu, || m.decode_graph(dtype, o.batch, latent, false))?;
                    check_untiled(gpu, &g, size)?;
                    let mut g = g;
                    super::random_weights::realize_placeholders(gpu, &mut g, 0)?;
                    g
                }
                Models::Loaded(p) => {
                    let g = tuned_graph(gpu, || {
                        p.vae.decode_graph(p.vae_dtype, o.batch, latent, false)
                    })?;
                    check_untiled(gpu, &g, size)?;
                    g
                }
            };
            let dtype = graph.dtype;
            Built {
                graphs: vec![("vae decoder".into(), graph)],
                dtype,
                size: Some(size),
                latent: Some(latent),
                tokens: 0,
            }
        }
        BenchModel::Clip => {
            let mut graphs = Vec::new();
            match &models {
                Models::Random(r) => {
                    for (name, config, projection) in &r.text {
                        let m = ClipTextModel::load_with_projection(
                            Ctx::placeholders(gpu, dtype),
                            &w,
                            config.clone(),
                            *projection,
                        )?;
                        let mut g = tuned_graph(gpu, || m.graph(dtype, o.batch, false))?;
                        super::random_weights::realize_placeholders(gpu, &mut g, 0)?;
                        graphs.push((name.clone(), g));
                    }
                }
                Models::Loaded(p) => {
                    graphs.push((
                        "text_encoder".into(),
                        tuned_graph(gpu, || p.text_encoder.graph(p.text_dtype, o.batch, false))?,
                    ));
                    if let Some(t2) = &p.text_encoder_2 {
                        graphs.push((
                            "text_encoder_2".into(),
                            tuned_graph(gpu, || t2.graph(p.text_dtype, o.batch, false))?,
                        ));
                    }
                }
            }
            let dtype = graphs[0].1.dtype;
            Built {
                graphs,
                dtype,
                size: None,
                latent: None,
                tokens: 77,
            }
        }
    };
    Ok((built, source))
}

fn family_name(f: Family) -> &'static str {
    crate::weights::published_configs::FAMILIES
        .iter()
        .find(|(_, x)| *x == f)
        .map_or("?", |(n, _)| n)
}

/// The untimed decoder only: a tensor over the binding limit means the pipeline would tile.
fn check_untiled(gpu: &Gpu, g: &Graph, size: [usize; 2]) -> Result<()> {
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    if let Some((name, bytes)) = g.largest_value().filter(|&(_, b)| b > limit) {
        return Err(Error::invalid(
            "size",
            format!(
                "{}x{} px needs a tiled decode on this adapter ({name}: {:.0} MiB > the {:.0} MiB \
                 binding limit); `bench vae` times untiled decodes: use a smaller --size or --batch",
                size[1],
                size[0],
                bytes as f64 / 1048576.0,
                limit as f64 / 1048576.0
            ),
        ));
    }
    Ok(())
}

/// Deterministic values in [-1, 1) (inputs do not change the timing).
fn filler(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

/// Writes every input of the plan: timesteps 500, everything else [`filler`].
fn fill_inputs(plan: &Plan) -> Result<()> {
    for (i, v) in plan.graph.values.iter().enumerate() {
        if !matches!(v.kind, ValueKind::Input) {
            continue;
        }
        let data = if v.name == "timestep" {
            vec![500.0; v.numel()]
        } else {
            filler(v.numel(), i)
        };
        plan.write_input(&v.name, &data)?;
    }
    Ok(())
}

/// Build, time and (optionally) profile the model `o` asks for. `progress` hears each stage.
pub fn bench_model(
    gpu: &Gpu,
    o: &ModelBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<ModelBenchReport> {
    if o.batch == 0 || o.iters == 0 || o.depth == 0 {
        return Err(Error::invalid(
            "bench",
            "batch, iterations and depth must be at least 1",
        ));
    }
    if let Some(p) = o.peak_gflops.filter(|p| !(p.is_finite() && *p > 0.0)) {
        return Err(Error::invalid(
            "peak-gflops",
            format!("{p} is not a positive rate"),
        ));
    }
    progress("building the model");
    let (built, source) = build(gpu, o)?;
    let mut flops = FlopTotals::default();
    let mut plans = Vec::new();
    for (name, g) in built.graphs {
        let f = g.flops();
        flops.matmul += f.matmul;
        flops.conv += f.conv;
        flops.attention += f.attention;
        flops.norm += f.norm;
        flops.elementwise += f.elementwise;
        let plan = Plan::new(gpu, g)?;
        fill_inputs(&plan)?;
        plans.push((name, plan));
    }
    progress("warm-up run");
    let run_all = || -> Result<f64> {
        let mut s = 0.0;
        for (_, p) in &plans {
            s += p.run_timed()?;
        }
        Ok(s)
    };
    run_all()?;
    let mut run_seconds = Vec::with_capacity(o.iters);
    for i in 0..o.iters {
        progress(&format!("timed run {}/{}", i + 1, o.iters));
        run_seconds.push(run_all()?);
    }
    let mut sorted = run_seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let step_seconds = sorted[sorted.len() / 2];
    let profile = if o.profile {
        progress("profiled run");
        let mut dispatches = Vec::new();
        let mut t = 0.0;
        for (name, p) in &plans {
            for d in p.run_profiled()? {
                dispatches.push(ProfiledDispatch {
                    model: name.clone(),
                    label: d.label,
                    kernel: d.kernel,
                    start_seconds: t + d.start_seconds,
                    seconds: d.seconds,
                    flops: d.flops,
                    shapes: d.shapes,
                });
            }
            t = dispatches.last().map_or(t, |d| d.start_seconds + d.seconds);
        }
        Some(ProfileTables {
            dispatch_seconds: dispatches.iter().map(|d| d.seconds).sum(),
            depth: o.depth,
            by_kernel: tables::by_kernel(&dispatches),
            by_module: tables::by_module(&dispatches, o.depth),
            dispatches,
        })
    } else {
        None
    };
    let (peak_gflops, peak_source) = match o.peak_gflops {
        Some(p) => (p, "given"),
        None => {
            progress("FMA peak probe");
            (
                super::kernels::measure_peak(gpu, o.iters.min(3))?.fma_gflops,
                "measured",
            )
        }
    };
    let total = flops.total();
    let gflops = total as f64 / step_seconds.max(1e-12) / 1e9;
    Ok(ModelBenchReport {
        adapter: gpu.info.name.clone(),
        model: o.model,
        source,
        dtype: built.dtype.name(),
        batch: o.batch,
        size: built.size,
        latent: built.latent,
        tokens: built.tokens,
        plans: plans.iter().map(|(n, _)| n.clone()).collect(),
        dispatches: plans.iter().map(|(_, p)| p.dispatch_count()).sum(),
        step_seconds,
        run_seconds,
        flops: total,
        tensor_flops: flops.tensor(),
        flops_by_class: flops,
        gflops,
        peak_gflops,
        peak_source,
        fraction_of_peak: gflops / peak_gflops,
        weights_bytes: plans.iter().map(|(_, p)| p.memory().weights).sum(),
        activation_peak_bytes: plans
            .iter()
            .map(|(_, p)| p.memory().activation_peak())
            .sum(),
        profile,
    })
}
