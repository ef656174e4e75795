//! Timestep embeddings (diffusers `models/embeddings.py`): `Timesteps` (sinusoidal projection,
//! no weights) and `TimestepEmbedding` (linear_1 → SiLU → linear_2).

use super::split::{self, Linear};
use super::{layers, Ctx};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::ops::elementwise::Activation;
use crate::ops::matmul::LinearOptions;
use crate::ops::timestep_embedding::{self, TimestepEmbeddingOptions};
use crate::weights::WeightsView;

/// `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)`.
pub struct Timesteps {
    pub name: String,
    pub options: TimestepEmbeddingOptions,
}

impl Timesteps {
    pub fn new(
        name: &str,
        num_channels: usize,
        flip_sin_to_cos: bool,
        downscale_freq_shift: f32,
    ) -> Self {
        let options =
            TimestepEmbeddingOptions::new(num_channels, flip_sin_to_cos, downscale_freq_shift);
        Timesteps {
            name: name.to_string(),
            options,
        }
    }

    /// timesteps (B) f32 → (B, num_channels).
    pub fn forward(&self, g: &mut Graph, timesteps: ValueId) -> Result<ValueId> {
        timestep_embedding::timestep_embedding(g, &self.name, timesteps, self.options)
    }
}

/// `TimestepEmbedding(in_channels, time_embed_dim)` with SiLU.
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
    name: String,
}

impl TimestepEmbedding {
    pub fn load(
        ctx: Ctx,
        w: &WeightsView,
        in_channels: usize,
        time_embed_dim: usize,
    ) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: layers::linear(ctx, &w.pp("linear_1"), in_channels, time_embed_dim, true)?,
            linear_2: layers::linear(ctx, &w.pp("linear_2"), time_embed_dim, time_embed_dim, true)?,
            name: w.prefix().to_string(),
        })
    }

    /// (B, in_channels) → (B, time_embed_dim).
    pub fn forward(&self, g: &mut Graph, x: ValueId) -> Result<ValueId> {
        let silu = LinearOptions {
            activation: Activation::Silu,
            residual: None,
        };
        let h = split::linear(
            g,
            &format!("{}.linear_1", self.name),
            x,
            &self.linear_1,
            silu,
        )?; // (B, T)
        split::linear(
            g,
            &format!("{}.linear_2", self.name),
            h,
            &self.linear_2,
            LinearOptions::default(),
        )
    }
}
