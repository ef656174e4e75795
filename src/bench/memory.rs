//! `stipple bench memory`: the GPU memory the Stable Diffusion 1.5 or SDXL plans would take at a
//! given size, computed from graphs built with placeholder weights (nothing is read or run):
//! weights, the activation peak after liveness-based reuse (and what it would be without
//! reuse), and the largest single tensor against the adapter's storage-binding limit. A last
//! row sums what one generation keeps on the GPU at once: every weight plus the activation
//! buffers of every plan it builds (the pipeline caches its text-encoder, UNet and decoder
//! plans), with the decoder tiled when the pipeline would tile it.
//!
//! SDXL as the pipeline runs it: both text encoders (CLIP ViT-L/14 and OpenCLIP bigG, batch 2),
//! the UNet at batch 2 (CFG), and the VAE decoder in f32 even for an f16 model (the SDXL VAE's
//! `force_upcast`; a fp16-fix VAE would halve that row).

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{DType, Gpu};
use crate::graph::Graph;
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::clip::ClipTextModel;
use crate::models::config::{AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::Ctx;
use crate::pipeline::tiled_decode::shrink_tile;
use crate::weights::Weights;

#[derive(Clone, Debug, Serialize)]
pub struct PlanMemoryRow {
    pub model: String,
    pub dtype: &'static str,
    pub dispatches: usize,
    pub weights_bytes: u64,
    /// Pooled intermediates + inputs and outputs.
    pub activation_peak_bytes: u64,
    /// The intermediates alive at the fullest dispatch + inputs and outputs: what no buffer
    /// reuse goes below.
    pub activation_bound_bytes: u64,
    /// Sum of all intermediates: the peak without buffer reuse.
    pub without_reuse_bytes: u64,
    pub largest_tensor: String,
    pub largest_tensor_bytes: u64,
    pub binding_limit_bytes: u64,
}

fn row(model: &str, dtype: DType, g: &Graph, limit: u64) -> PlanMemoryRow {
    let m = g.memory();
    let (name, bytes) = g
        .largest_value()
        .map(|(n, b)| (n.to_string(), b))
        .unwrap_or_default();
    PlanMemoryRow {
        model: model.to_string(),
        dtype: dtype.name(),
        dispatches: g.dispatches().len(),
        weights_bytes: m.weights,
        activation_peak_bytes: m.activation_peak(),
        activation_bound_bytes: m.live_bound + m.io,
        without_reuse_bytes: m.unshared + m.io,
        largest_tensor: name,
        largest_tensor_bytes: bytes,
        binding_limit_bytes: limit,
    }
}

/// The models whose plans `bench memory` sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFamily {
    /// Stable Diffusion 1.5.
    Sd15,
    /// SDXL base 1.0 (SDXL-Turbo has the same networks).
    Sdxl,
}

impl PlanFamily {
    pub fn parse(name: &str) -> Result<PlanFamily> {
        match name {
            "sd15" => Ok(PlanFamily::Sd15),
            "sdxl" | "sdxl-turbo" => Ok(PlanFamily::Sdxl),
            other => Err(crate::error::Error::invalid(
                "family",
                format!("{other:?} (known: sd15, sdxl)"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PlanFamily::Sd15 => "Stable Diffusion 1.5",
            PlanFamily::Sdxl => "SDXL",
        }
    }
}

/// Plan SD1.5's text encoder (batch 2), UNet (batch 2 for CFG) and VAE decoder (batch 1) at
/// `height`×`width` pixels in both dtypes.
pub fn plan_sd15_memory(gpu: &Gpu, height: usize, width: usize) -> Result<Vec<PlanMemoryRow>> {
    plan_memory(gpu, PlanFamily::Sd15, height, width, 1)
}

/// Plan a family's text encoder(s) (batch 2), UNet (batch 2·`batch`, CFG) and VAE decoder
/// (batch `batch`) at `height`×`width` pixels in both dtypes, then the total (module docs).
pub fn plan_memory(
    gpu: &Gpu,
    family: PlanFamily,
    height: usize,
    width: usize,
    batch: usize,
) -> Result<Vec<PlanMemoryRow>> {
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let empty = Weights::empty("(placeholder weights)");
    let w = empty.root();
    let latent = [height / 8, width / 8];
    let (encoders, unet_config, vae_config) = match family {
        PlanFamily::Sd15 => (
            vec![("CLIP ViT-L/14", ClipTextConfig::clip_vit_large_patch14())],
            UNet2DConditionConfig::stable_diffusion_v1(),
            AutoencoderKLConfig::stable_diffusion(),
        ),
        PlanFamily::Sdxl => (
            vec![
                ("CLIP ViT-L/14", ClipTextConfig::clip_vit_large_patch14()),
                ("OpenCLIP bigG", ClipTextConfig::clip_vit_bigg14()),
            ],
            UNet2DConditionConfig::stable_diffusion_xl(),
            AutoencoderKLConfig {
                scaling_factor: 0.13025,
                ..AutoencoderKLConfig::stable_diffusion()
            },
        ),
    };
    let mut rows = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let ctx = Ctx::placeholders(gpu, dtype);
        let first = rows.len();
        for (name, config) in &encoders {
            let clip = ClipTextModel::load(ctx, &w, config.clone())?;
            rows.push(row(
                &format!("text encoder ({name}), batch 2"),
                dtype,
                &clip.graph(dtype, 2, false)?,
                limit,
            ));
        }
        let unet = UNet2DConditionModel::load(ctx, &w, unet_config.clone())?;
        let g = unet.graph(dtype, 2 * batch, latent, 77, false)?;
        rows.push(row(
            &format!("UNet, batch {} (CFG), {height}×{width}", 2 * batch),
            dtype,
            &g,
            limit,
        ));
        // SDXL's VAE overflows in f16: the pipeline decodes it in f32 (force_upcast).
        let vae_dtype = if family == PlanFamily::Sdxl {
            DType::F32
        } else {
            dtype
        };
        let vae = AutoencoderKL::load(Ctx::placeholders(gpu, vae_dtype), &w, vae_config.clone())?;
        let g = vae.decode_graph(vae_dtype, batch, latent, false)?;
        let over = g.largest_value().is_some_and(|(_, b)| b > limit);
        rows.push(row(
            &format!(
                "VAE decoder ({}), batch {batch}, {height}×{width}",
                vae_dtype.name()
            ),
            dtype,
            &g,
            limit,
        ));
        if over {
            // What the pipeline does then: decode in overlapping tiles (pipeline::tiled_decode).
            let tile = shrink_tile(latent[0], latent[1], |th, tw| {
                let g = vae.decode_graph(vae_dtype, 1, [th, tw], false)?;
                Ok(g.largest_value().is_none_or(|(_, b)| b <= limit))
            })?;
            if let Some(t) = tile {
                let tile = [t.min(latent[0]), t.min(latent[1])];
                let g = vae.decode_graph(vae_dtype, 1, tile, false)?;
                rows.push(row(
                    &format!("  -> tiled: {t}x{t} latent tiles"),
                    dtype,
                    &g,
                    limit,
                ));
            }
        }
        rows.push(total(&rows[first..], dtype, limit));
    }
    Ok(rows)
}

/// Every weight plus every kept plan's activations; a tiled decoder replaces the untiled one.
fn total(rows: &[PlanMemoryRow], dtype: DType, limit: u64) -> PlanMemoryRow {
    let tiled = rows.iter().any(|r| r.model.contains("tiled"));
    let kept = |r: &&PlanMemoryRow| !(tiled && r.model.starts_with("VAE decoder"));
    let largest = rows
        .iter()
        .filter(kept)
        .max_by_key(|r| r.largest_tensor_bytes)
        .map(|r| (r.largest_tensor.clone(), r.largest_tensor_bytes))
        .unwrap_or_default();
    PlanMemoryRow {
        model: "total: all weights + every plan kept".into(),
        dtype: dtype.name(),
        dispatches: rows.iter().map(|r| r.dispatches).sum(),
        // The tiled decoder is the same weights.
        weights_bytes: rows
            .iter()
            .filter(|r| !r.model.contains("tiled"))
            .map(|r| r.weights_bytes)
            .sum(),
        activation_peak_bytes: rows
            .iter()
            .filter(kept)
            .map(|r| r.activation_peak_bytes)
            .sum(),
        activation_bound_bytes: rows
            .iter()
            .filter(kept)
            .map(|r| r.activation_bound_bytes)
            .sum(),
        without_reuse_bytes: rows
            .iter()
            .filter(kept)
            .map(|r| r.without_reuse_bytes)
            .sum(),
        largest_tensor: largest.0,
        largest_tensor_bytes: largest.1,
        binding_limit_bytes: limit,
    }
}
