//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (diffusers `models/resnet.py`,
//! `models/downsampling.py`, `models/upsampling.py`).

use super::concat_conv::ConcatConv2d;
use super::split::{self, Conv2d, Linear};
use super::{layers, Ctx};
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::concat::concat_channels;
use crate::ops::conv2d::Conv2dOptions;
use crate::ops::group_norm::{self, GroupNorm, GroupNormInput};
use crate::ops::matmul::LinearOptions;
use crate::weights::WeightsView;

/// norm1 → SiLU → conv1 (+ time_emb_proj(SiLU(temb))) → norm2 → SiLU → conv2, plus the input
/// (through conv_shortcut when the channel count changes). output_scale_factor 1.
///
/// Fused: SiLU into each norm's apply pass, the time embedding into norm2's loads (no add
/// dispatch), the shortcut into conv2 as its residual. In the UNet's up blocks the input is
/// `[hidden ‖ skip]` ([`ResnetBlock2D::forward_concat`]): norm1 reads both tensors in place and
/// conv_shortcut is two GEMMs over the input ranges ([`ConcatConv2d`]), so the concatenation
/// is never written.
pub struct ResnetBlock2D {
    pub name: String,
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<ConvShortcut>,
}

/// `conv_shortcut` over the block's input, or over `[hidden ‖ skip]` split on input channels.
pub enum ConvShortcut {
    Conv(Conv2d),
    Concat(ConcatConv2d),
}

impl ResnetBlock2D {
    /// `temb_channels`: None for the VAE's blocks (no time embedding).
    pub fn load(
        ctx: Ctx,
        w: &WeightsView,
        in_channels: usize,
        out_channels: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        Self::load_concat(
            ctx,
            w,
            [in_channels, 0],
            out_channels,
            temb_channels,
            groups,
            eps,
        )
    }

    /// A block whose input is `[hidden ‖ skip]` of `[hidden, skip]` channels (the UNet's up
    /// blocks), run with [`Self::forward_concat`]; `skip` 0 is [`Self::load`]'s one input.
    pub fn load_concat(
        ctx: Ctx,
        w: &WeightsView,
        [hidden, skip]: [usize; 2],
        out_channels: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        let in_channels = hidden + skip;
        let shortcut = w.pp("conv_shortcut");
        let conv_shortcut = match (in_channels != out_channels, skip) {
            (false, _) => None,
            (true, 0) => Some(ConvShortcut::Conv(layers::conv2d(
                ctx,
                &shortcut,
                in_channels,
                out_channels,
                1,
            )?)),
            (true, _) => Some(ConvShortcut::Concat(ConcatConv2d::load(
                ctx,
                &shortcut,
                [hidden, skip],
                out_channels,
                1,
            )?)),
        };
        Ok(ResnetBlock2D {
            name: w.prefix().to_string(),
            norm1: layers::group_norm(ctx, &w.pp("norm1"), groups, in_channels, eps)?,
            conv1: layers::conv2d(ctx, &w.pp("conv1"), in_channels, out_channels, 3)?,
            time_emb_proj: temb_channels
                .map(|t| layers::linear(ctx, &w.pp("time_emb_proj"), t, out_channels, true))
                .transpose()?,
            norm2: layers::group_norm(ctx, &w.pp("norm2"), groups, out_channels, eps)?,
            conv2: layers::conv2d(ctx, &w.pp("conv2"), out_channels, out_channels, 3)?,
            conv_shortcut,
        })
    }

    /// x (B, H, W, Cin) → (B, H, W, Cout). `temb_act` is SiLU(temb) (B, T), shared by all blocks.
    pub fn forward(&self, g: &mut Graph, x: ValueId, temb_act: Option<ValueId>) -> Result<ValueId> {
        self.forward_input(g, x, None, temb_act)
    }

    /// The block over `[hidden ‖ skip]` (diffusers' up blocks: `torch.cat([hidden_states,
    /// res_hidden_states], dim=1)`), never concatenated in memory when the block was loaded with
    /// [`Self::load_concat`]: hidden (B, H, W, Ch), skip (B, H, W, Cs) → (B, H, W, Cout).
    pub fn forward_concat(
        &self,
        g: &mut Graph,
        hidden: ValueId,
        skip: ValueId,
        temb_act: Option<ValueId>,
    ) -> Result<ValueId> {
        self.forward_input(g, hidden, Some(skip), temb_act)
    }

    fn forward_input(
        &self,
        g: &mut Graph,
        x: ValueId,
        skip: Option<ValueId>,
        temb_act: Option<ValueId>,
    ) -> Result<ValueId> {
        let n = &self.name;
        // The shortcut first: the block's input (x and skip) is then dead once norm1 has read
        // it, instead of living beside conv1's and norm2's outputs.
        let shortcut = self.shortcut(g, x, skip)?; // (B, H, W, Cout)
        let input = GroupNormInput {
            x,
            concat: skip,
            channel_add: None,
        };
        let h = group_norm::group_norm(g, &format!("{n}.norm1"), input, &self.norm1, true)?; // (B, H, W, Cin)
        let h = split::conv2d(
            g,
            &format!("{n}.conv1"),
            h,
            &self.conv1,
            Conv2dOptions::padded(1),
        )?; // (B, H, W, Cout)
            // hidden + time_emb_proj(SiLU(temb))[:, :, None, None], added as norm2 loads it.
        let temb = match (&self.time_emb_proj, temb_act) {
            (Some(proj), Some(temb)) => Some(split::linear(
                g,
                &format!("{n}.time_emb_proj"),
                temb,
                proj,
                LinearOptions::default(),
            )?), // (B, Cout)
            _ => None,
        };
        let input = GroupNormInput {
            x: h,
            concat: None,
            channel_add: temb,
        };
        let h = group_norm::group_norm(g, &format!("{n}.norm2"), input, &self.norm2, true)?; // (B, H, W, Cout)
        let opts = Conv2dOptions {
            residual: Some(shortcut),
            ..Conv2dOptions::padded(1)
        };
        split::conv2d(g, &format!("{n}.conv2"), h, &self.conv2, opts) // (B, H, W, Cout)
    }

    /// conv_shortcut([x ‖ skip]), or the input itself when the channel count is kept.
    fn shortcut(&self, g: &mut Graph, x: ValueId, skip: Option<ValueId>) -> Result<ValueId> {
        let n = &self.name;
        let name = format!("{n}.conv_shortcut");
        let opts = Conv2dOptions::default();
        match (&self.conv_shortcut, skip) {
            (Some(ConvShortcut::Concat(c)), Some(s)) => c.forward(g, &name, x, s, opts),
            (Some(ConvShortcut::Conv(c)), None) => split::conv2d(g, &name, x, c, opts),
            (None, None) => Ok(x),
            // The input itself is the residual ([x ‖ skip] kept its width), or the block was
            // loaded for one input: the concatenation has to exist.
            (Some(ConvShortcut::Conv(c)), Some(s)) => {
                let cat = concat_channels(g, &format!("{n}.cat"), x, s)?; // (B, H, W, Cin)
                split::conv2d(g, &name, cat, c, opts)
            }
            (None, Some(s)) => concat_channels(g, &format!("{n}.cat"), x, s),
            (Some(ConvShortcut::Concat(_)), None) => Err(Error::shape(
                &name,
                "loaded for [hidden ‖ skip] inputs: run it with forward_concat",
            )),
        }
    }
}

/// A stride-2 3×3 convolution. `padding` 1 pads every side (UNet); 0 pads (0, 1, 0, 1) as
/// diffusers does before the VAE encoder's convolution.
pub struct Downsample2D {
    pub name: String,
    pub conv: Conv2d,
    pub padding: usize,
}

impl Downsample2D {
    pub fn load(ctx: Ctx, w: &WeightsView, channels: usize, padding: usize) -> Result<Self> {
        let conv = layers::conv2d(ctx, &w.pp("conv"), channels, channels, 3)?;
        Ok(Downsample2D {
            name: w.prefix().to_string(),
            conv,
            padding,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: ValueId) -> Result<ValueId> {
        let opts = Conv2dOptions {
            stride: 2,
            padding: self.padding,
            extra_padding_end: usize::from(self.padding == 0),
            ..Default::default()
        };
        split::conv2d(g, &format!("{}.conv", self.name), x, &self.conv, opts)
    }
}

/// Nearest 2× upsampling, then a 3×3 convolution.
pub struct Upsample2D {
    pub name: String,
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(ctx: Ctx, w: &WeightsView, channels: usize) -> Result<Self> {
        let conv = layers::conv2d(ctx, &w.pp("conv"), channels, channels, 3)?;
        Ok(Upsample2D {
            name: w.prefix().to_string(),
            conv,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: ValueId) -> Result<ValueId> {
        // interpolate(scale_factor=2, mode="nearest") folded into the conv's loads.
        let opts = Conv2dOptions {
            upsample_input: true,
            ..Conv2dOptions::padded(1)
        };
        split::conv2d(g, &format!("{}.conv", self.name), x, &self.conv, opts) // (B, 2H, 2W, C)
    }
}
