//! `Transformer2DModel` (diffusers `models/transformers/transformer_2d.py`), continuous input:
//! GroupNorm → proj_in (1×1 conv or Linear) → BasicTransformerBlocks → proj_out, plus the input.

use super::attention::BasicTransformerBlock;
use super::split::{self, Linear};
use super::{layers, Ctx};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::ops::group_norm::{self, GroupNorm};
use crate::ops::matmul::LinearOptions;
use crate::weights::WeightsView;

pub struct Transformer2DModel {
    name: String,
    norm: GroupNorm,
    proj_in: Linear,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

/// Construction parameters (diffusers' argument names).
#[derive(Clone, Copy, Debug)]
pub struct Transformer2DConfig {
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub num_layers: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub use_linear_projection: bool,
}

impl Transformer2DModel {
    pub fn load(ctx: Ctx, w: &WeightsView, c: Transformer2DConfig) -> Result<Self> {
        let inner = c.num_attention_heads * c.attention_head_dim;
        let transformer_blocks = (0..c.num_layers)
            .map(|i| {
                let wb = w.pp("transformer_blocks").pp(i);
                BasicTransformerBlock::load(
                    ctx,
                    &wb,
                    inner,
                    c.num_attention_heads,
                    c.attention_head_dim,
                    c.cross_attention_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2DModel {
            name: w.prefix().to_string(),
            norm: layers::group_norm(ctx, &w.pp("norm"), c.norm_num_groups, c.in_channels, 1e-6)?,
            // use_linear_projection only changes the weight's shape: both are a matrix product on NHWC.
            proj_in: layers::linear_or_conv1x1(
                ctx,
                &w.pp("proj_in"),
                c.in_channels,
                inner,
                !c.use_linear_projection,
            )?,
            transformer_blocks,
            proj_out: layers::linear_or_conv1x1(
                ctx,
                &w.pp("proj_out"),
                inner,
                c.in_channels,
                !c.use_linear_projection,
            )?,
        })
    }

    /// x (B, H, W, C), context (B, S, D) → (B, H, W, C).
    pub fn forward(&self, g: &mut Graph, x: ValueId, context: ValueId) -> Result<ValueId> {
        let n = &self.name;
        let shape = g.shape(x)?;
        let (b, hw, c) = (shape[0], shape[1] * shape[2], shape[3]);
        let h = group_norm::group_norm(g, &format!("{n}.norm"), x, &self.norm, false)?;
        let h = g.reshape(h, &[b, hw, c])?; // (B, HW, C)
        let mut h = split::linear(
            g,
            &format!("{n}.proj_in"),
            h,
            &self.proj_in,
            LinearOptions::default(),
        )?;
        for block in &self.transformer_blocks {
            h = block.forward(g, h, context)?;
        }
        let residual = g.reshape(x, &[b, hw, c])?;
        let opts = LinearOptions {
            residual: Some(residual),
            ..Default::default()
        };
        let out = split::linear(g, &format!("{n}.proj_out"), h, &self.proj_out, opts)?; // (B, HW, C)
        g.reshape(out, &shape)
    }
}
