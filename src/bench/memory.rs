//! `stipple bench memory`: the GPU memory the Stable Diffusion 1.5 plans would take at a given
//! size, computed from graphs built with placeholder weights (nothing is read or run): weights,
//! the activation peak after liveness-based reuse (and what it would be without reuse), and the
//! largest single tensor against the adapter's storage-binding limit.

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
        without_reuse_bytes: m.unshared + m.io,
        largest_tensor: name,
        largest_tensor_bytes: bytes,
        binding_limit_bytes: limit,
    }
}

/// Plan SD1.5's text encoder (batch 2), UNet (batch 2 for CFG) and VAE decoder (batch 1) at
/// `height`×`width` pixels in both dtypes.
pub fn plan_sd15_memory(gpu: &Gpu, height: usize, width: usize) -> Result<Vec<PlanMemoryRow>> {
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let empty = Weights::empty("(placeholder weights)");
    let w = empty.root();
    let latent = [height / 8, width / 8];
    let mut rows = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let ctx = Ctx::placeholders(gpu, dtype);
        let clip = ClipTextModel::load(ctx, &w, ClipTextConfig::clip_vit_large_patch14())?;
        rows.push(row(
            "text encoder (CLIP ViT-L/14), batch 2",
            dtype,
            &clip.graph(dtype, 2, false)?,
            limit,
        ));
        let unet =
            UNet2DConditionModel::load(ctx, &w, UNet2DConditionConfig::stable_diffusion_v1())?;
        let g = unet.graph(dtype, 2, latent, 77, false)?;
        rows.push(row(
            &format!("UNet, batch 2 (CFG), {height}×{width}"),
            dtype,
            &g,
            limit,
        ));
        let vae = AutoencoderKL::load(ctx, &w, AutoencoderKLConfig::stable_diffusion())?;
        let g = vae.decode_graph(dtype, 1, latent, false)?;
        let over = g.largest_value().is_some_and(|(_, b)| b > limit);
        rows.push(row(
            &format!("VAE decoder, batch 1, {height}×{width}"),
            dtype,
            &g,
            limit,
        ));
        if over {
            // What the pipeline does then: decode in overlapping tiles (pipeline::tiled_decode).
            let tile = shrink_tile(latent[0], latent[1], |th, tw| {
                let g = vae.decode_graph(dtype, 1, [th, tw], false)?;
                Ok(g.largest_value().is_none_or(|(_, b)| b <= limit))
            })?;
            if let Some(t) = tile {
                let g = vae.decode_graph(dtype, 1, [t.min(latent[0]), t.min(latent[1])], false)?;
                rows.push(row(
                    &format!("  -> tiled: {t}x{t} latent tiles"),
                    dtype,
                    &g,
                    limit,
                ));
            }
        }
    }
    Ok(rows)
}
