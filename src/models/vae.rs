//! The VAE's `Encoder` and `Decoder` (diffusers `models/autoencoders/vae.py`).

use super::config::AutoencoderKLConfig;
use super::split::{self, Conv2d};
use super::unet_2d_blocks::{BlockConfig, DownBlock2D, UNetMidBlock2D, UpBlock2D, UpChannels};
use super::{layers, Ctx};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::ops::conv2d::Conv2dOptions;
use crate::ops::group_norm::{self, GroupNorm};
use crate::weights::WeightsView;

/// The VAE's resnets and norms use eps 1e-6.
const EPS: f32 = 1e-6;

fn block_config(c: &AutoencoderKLConfig, num_layers: usize) -> BlockConfig {
    BlockConfig {
        num_layers,
        temb_channels: None,
        groups: c.norm_num_groups,
        eps: EPS,
        cross_attention: None,
        use_linear_projection: false,
    }
}

/// image (B, H, W, in_channels) → moments (B, H/f, W/f, 2·latent_channels) before quant_conv.
pub struct Encoder {
    name: String,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn load(ctx: Ctx, w: &WeightsView, c: &AutoencoderKLConfig) -> Result<Self> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let mut down_blocks = Vec::with_capacity(n);
        let mut output_channel = ch[0];
        for (i, &channels) in ch.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = channels;
            let pad = (i + 1 < n).then_some(0);
            let bc = block_config(c, c.layers_per_block);
            down_blocks.push(DownBlock2D::load(
                ctx,
                &w.pp("down_blocks").pp(i),
                input_channel,
                output_channel,
                &bc,
                pad,
            )?);
        }
        Ok(Encoder {
            name: w.prefix().to_string(),
            conv_in: layers::conv2d(ctx, &w.pp("conv_in"), c.in_channels, ch[0], 3)?,
            down_blocks,
            mid_block: UNetMidBlock2D::load(
                ctx,
                &w.pp("mid_block"),
                ch[n - 1],
                c.norm_num_groups,
                EPS,
                c.mid_block_add_attention,
            )?,
            conv_norm_out: layers::group_norm(
                ctx,
                &w.pp("conv_norm_out"),
                c.norm_num_groups,
                ch[n - 1],
                EPS,
            )?,
            conv_out: layers::conv2d(ctx, &w.pp("conv_out"), ch[n - 1], 2 * c.latent_channels, 3)?,
        })
    }

    pub fn forward(&self, g: &mut Graph, image: ValueId) -> Result<ValueId> {
        let n = &self.name;
        let mut x = split::conv2d(
            g,
            &format!("{n}.conv_in"),
            image,
            &self.conv_in,
            Conv2dOptions::padded(1),
        )?;
        g.probe(&format!("{n}.conv_in"), x)?;
        let mut skips = Vec::new(); // the encoder keeps no skip states; the block API records them
        for (i, block) in self.down_blocks.iter().enumerate() {
            x = block.forward(g, x, None, None, &mut skips)?;
            g.probe(&format!("{n}.down_blocks.{i}"), x)?;
        }
        x = self.mid_block.forward(g, x)?;
        g.probe(&format!("{n}.mid_block"), x)?;
        let h = group_norm::group_norm(
            g,
            &format!("{n}.conv_norm_out"),
            x,
            &self.conv_norm_out,
            true,
        )?;
        g.probe(&format!("{n}.conv_act"), h)?;
        split::conv2d(
            g,
            &format!("{n}.conv_out"),
            h,
            &self.conv_out,
            Conv2dOptions::padded(1),
        )
    }
}

/// z (B, h, w, latent_channels) after post_quant_conv → image (B, h·f, w·f, out_channels).
pub struct Decoder {
    name: String,
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn load(ctx: Ctx, w: &WeightsView, c: &AutoencoderKLConfig) -> Result<Self> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channel = reversed[0];
        for (i, &channels) in reversed.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = channels;
            let channels = UpChannels {
                in_channels: 0,
                out_channels: output_channel,
                prev_output_channel,
                skips: false,
            };
            let bc = block_config(c, c.layers_per_block + 1);
            up_blocks.push(UpBlock2D::load(
                ctx,
                &w.pp("up_blocks").pp(i),
                channels,
                &bc,
                i + 1 < n,
            )?);
        }
        Ok(Decoder {
            name: w.prefix().to_string(),
            conv_in: layers::conv2d(ctx, &w.pp("conv_in"), c.latent_channels, ch[n - 1], 3)?,
            mid_block: UNetMidBlock2D::load(
                ctx,
                &w.pp("mid_block"),
                ch[n - 1],
                c.norm_num_groups,
                EPS,
                c.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: layers::group_norm(
                ctx,
                &w.pp("conv_norm_out"),
                c.norm_num_groups,
                ch[0],
                EPS,
            )?,
            conv_out: layers::conv2d(ctx, &w.pp("conv_out"), ch[0], c.out_channels, 3)?,
        })
    }

    pub fn forward(&self, g: &mut Graph, z: ValueId) -> Result<ValueId> {
        let n = &self.name;
        let mut x = split::conv2d(
            g,
            &format!("{n}.conv_in"),
            z,
            &self.conv_in,
            Conv2dOptions::padded(1),
        )?;
        g.probe(&format!("{n}.conv_in"), x)?;
        x = self.mid_block.forward(g, x)?;
        g.probe(&format!("{n}.mid_block"), x)?;
        for (i, block) in self.up_blocks.iter().enumerate() {
            x = block.forward(g, x, None, None, None)?;
            g.probe(&format!("{n}.up_blocks.{i}"), x)?;
        }
        let h = group_norm::group_norm(
            g,
            &format!("{n}.conv_norm_out"),
            x,
            &self.conv_norm_out,
            true,
        )?;
        g.probe(&format!("{n}.conv_act"), h)?;
        split::conv2d(
            g,
            &format!("{n}.conv_out"),
            h,
            &self.conv_out,
            Conv2dOptions::padded(1),
        )
    }
}
