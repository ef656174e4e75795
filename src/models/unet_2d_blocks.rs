//! The UNet's and the VAE's blocks (diffusers `models/unets/unet_2d_blocks.py`):
//! `CrossAttnDownBlock2D` / `DownBlock2D` / `DownEncoderBlock2D` share [`DownBlock2D`],
//! `CrossAttnUpBlock2D` / `UpBlock2D` / `UpDecoderBlock2D` share [`UpBlock2D`], plus
//! `UNetMidBlock2DCrossAttn` and the VAE's `UNetMidBlock2D`.

use super::attention::{Attention, AttentionConfig};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use super::transformer_2d::{Transformer2DConfig, Transformer2DModel};
use super::Ctx;
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::weights::WeightsView;

/// What a block's resnets and transformers are built with.
#[derive(Clone, Copy, Debug)]
pub struct BlockConfig {
    pub num_layers: usize,
    /// None for the VAE (no time embedding).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f32,
    /// Some for cross-attention blocks: (heads, transformer layers, cross_attention_dim).
    pub cross_attention: Option<(usize, usize, usize)>,
    /// Transformer proj_in/proj_out are Linears (SD2) rather than 1×1 convolutions (SD1).
    pub use_linear_projection: bool,
}

fn transformer(
    ctx: Ctx,
    w: &WeightsView,
    channels: usize,
    c: &BlockConfig,
) -> Result<Option<Transformer2DModel>> {
    let Some((heads, layers, cross_attention_dim)) = c.cross_attention else {
        return Ok(None);
    };
    let config = Transformer2DConfig {
        num_attention_heads: heads,
        attention_head_dim: channels / heads,
        in_channels: channels,
        num_layers: layers,
        cross_attention_dim,
        norm_num_groups: c.groups,
        use_linear_projection: c.use_linear_projection,
    };
    Transformer2DModel::load(ctx, w, config).map(Some)
}

/// Resnets (each followed by a transformer in cross-attention blocks), then an optional
/// downsampler. Returns the output and every intermediate state the up path concatenates.
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock2D {
    /// `downsample_padding`: Some(1) in the UNet, Some(0) in the VAE encoder, None for the last block.
    pub fn load(
        ctx: Ctx,
        w: &WeightsView,
        in_channels: usize,
        out_channels: usize,
        c: &BlockConfig,
        downsample_padding: Option<usize>,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..c.num_layers {
            let cin = if i == 0 { in_channels } else { out_channels };
            resnets.push(ResnetBlock2D::load(
                ctx,
                &w.pp("resnets").pp(i),
                cin,
                out_channels,
                c.temb_channels,
                c.groups,
                c.eps,
            )?);
            attentions.extend(transformer(
                ctx,
                &w.pp("attentions").pp(i),
                out_channels,
                c,
            )?);
        }
        let downsampler = downsample_padding
            .map(|pad| Downsample2D::load(ctx, &w.pp("downsamplers").pp(0), out_channels, pad))
            .transpose()?;
        Ok(DownBlock2D {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// x (B, H, W, Cin) → (B, H', W', Cout); pushes the skip states onto `skips`.
    pub fn forward(
        &self,
        g: &mut Graph,
        mut x: ValueId,
        temb_act: Option<ValueId>,
        context: Option<ValueId>,
        skips: &mut Vec<ValueId>,
    ) -> Result<ValueId> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(g, x, temb_act)?;
            if let (Some(t), Some(ctx)) = (self.attentions.get(i), context) {
                x = t.forward(g, x, ctx)?;
            }
            skips.push(x);
        }
        if let Some(d) = &self.downsampler {
            x = d.forward(g, x)?;
            skips.push(x);
        }
        Ok(x)
    }
}

/// Resnets over [hidden, skip] concatenations (UNet) or plain (VAE decoder), each followed by a
/// transformer in cross-attention blocks, then an optional upsampler.
pub struct UpBlock2D {
    name: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

/// Channel bookkeeping of an up block (diffusers' constructor arguments).
#[derive(Clone, Copy, Debug)]
pub struct UpChannels {
    /// Channels of the skip connection that the last resnet concatenates (UNet only).
    pub in_channels: usize,
    pub out_channels: usize,
    pub prev_output_channel: usize,
    /// Whether the resnets concatenate skip states (UNet) or not (VAE decoder).
    pub skips: bool,
}

impl UpBlock2D {
    pub fn load(
        ctx: Ctx,
        w: &WeightsView,
        ch: UpChannels,
        c: &BlockConfig,
        add_upsample: bool,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..c.num_layers {
            let resnet_in = if i == 0 {
                ch.prev_output_channel
            } else {
                ch.out_channels
            };
            let skip = match (ch.skips, i + 1 == c.num_layers) {
                (false, _) => 0,
                (true, true) => ch.in_channels,
                (true, false) => ch.out_channels,
            };
            let wr = w.pp("resnets").pp(i);
            let (out, temb, groups, eps) = (ch.out_channels, c.temb_channels, c.groups, c.eps);
            resnets.push(if skip > 0 {
                // UNet: the input is [hidden ‖ skip], never concatenated in memory.
                let channels = [resnet_in, skip];
                ResnetBlock2D::load_concat(ctx, &wr, channels, out, temb, groups, eps)?
            } else {
                ResnetBlock2D::load(ctx, &wr, resnet_in, out, temb, groups, eps)?
            });
            attentions.extend(transformer(
                ctx,
                &w.pp("attentions").pp(i),
                ch.out_channels,
                c,
            )?);
        }
        let upsampler = add_upsample
            .then(|| Upsample2D::load(ctx, &w.pp("upsamplers").pp(0), ch.out_channels))
            .transpose()?;
        Ok(UpBlock2D {
            name: w.prefix().to_string(),
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Number of skip states this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// x (B, H, W, C) → (B, 2H, 2W, Cout) (or same size for the last block). Pops its skip
    /// states from the end of `skips` when given.
    pub fn forward(
        &self,
        g: &mut Graph,
        mut x: ValueId,
        temb_act: Option<ValueId>,
        context: Option<ValueId>,
        mut skips: Option<&mut Vec<ValueId>>,
    ) -> Result<ValueId> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = match skips.as_deref_mut() {
                Some(skips) => {
                    let skip = skips.pop().ok_or_else(|| {
                        Error::shape(&self.name, "no skip state left to concatenate")
                    })?;
                    resnet.forward_concat(g, x, skip, temb_act)? // [x ‖ skip] → (B, H, W, Cout)
                }
                None => resnet.forward(g, x, temb_act)?,
            };
            if let (Some(t), Some(ctx)) = (self.attentions.get(i), context) {
                x = t.forward(g, x, ctx)?;
            }
        }
        match &self.upsampler {
            Some(u) => u.forward(g, x),
            None => Ok(x),
        }
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) per layer.
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    pub fn load(ctx: Ctx, w: &WeightsView, channels: usize, c: &BlockConfig) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                ctx,
                &w.pp("resnets").pp(i),
                channels,
                channels,
                c.temb_channels,
                c.groups,
                c.eps,
            )
        };
        let mut resnets = vec![resnet(0)?];
        let mut attentions = Vec::new();
        for i in 0..c.num_layers {
            attentions.extend(transformer(ctx, &w.pp("attentions").pp(i), channels, c)?);
            resnets.push(resnet(i + 1)?);
        }
        Ok(UNetMidBlock2DCrossAttn {
            resnets,
            attentions,
        })
    }

    pub fn forward(
        &self,
        g: &mut Graph,
        x: ValueId,
        temb_act: ValueId,
        context: ValueId,
    ) -> Result<ValueId> {
        let mut x = self.resnets[0].forward(g, x, Some(temb_act))?;
        for (t, r) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = t.forward(g, x, context)?;
            x = r.forward(g, x, Some(temb_act))?;
        }
        Ok(x)
    }
}

/// The VAE's `UNetMidBlock2D`: resnet, (single-head attention with GroupNorm, resnet).
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<Attention>,
}

impl UNetMidBlock2D {
    pub fn load(
        ctx: Ctx,
        w: &WeightsView,
        channels: usize,
        groups: usize,
        eps: f32,
        add_attention: bool,
    ) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                ctx,
                &w.pp("resnets").pp(i),
                channels,
                channels,
                None,
                groups,
                eps,
            )
        };
        let attention = add_attention
            .then(|| {
                let c = AttentionConfig {
                    query_dim: channels,
                    cross_attention_dim: None,
                    heads: 1,
                    dim_head: channels,
                    qkv_bias: true,
                    group_norm: Some((groups, eps)),
                };
                Attention::load(ctx, &w.pp("attentions").pp(0), c)
            })
            .transpose()?;
        Ok(UNetMidBlock2D {
            resnets: vec![resnet(0)?, resnet(1)?],
            attention,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: ValueId) -> Result<ValueId> {
        let mut x = self.resnets[0].forward(g, x, None)?;
        if let Some(a) = &self.attention {
            let shape = g.shape(x)?;
            let tokens = g.reshape(x, &[shape[0], shape[1] * shape[2], shape[3]])?; // (B, HW, C)
            let out = a.forward(g, tokens, None, Some(tokens))?;
            x = g.reshape(out, &shape)?;
        }
        self.resnets[1].forward(g, x, None)
    }
}
