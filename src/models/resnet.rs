//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (diffusers `models/resnet.py`,
//! `models/downsampling.py`, `models/upsampling.py`).

use super::split::{self, Conv2d, Linear};
use super::{layers, Ctx};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::ops::conv2d::Conv2dOptions;
use crate::ops::elementwise;
use crate::ops::group_norm::{self, GroupNorm};
use crate::ops::matmul::LinearOptions;
use crate::weights::WeightsView;

/// norm1 → SiLU → conv1 (+ time_emb_proj(SiLU(temb))) → norm2 → SiLU → conv2, plus the input
/// (through conv_shortcut when the channel count changes). output_scale_factor 1.
pub struct ResnetBlock2D {
    pub name: String,
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
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
        Ok(ResnetBlock2D {
            name: w.prefix().to_string(),
            norm1: layers::group_norm(ctx, &w.pp("norm1"), groups, in_channels, eps)?,
            conv1: layers::conv2d(ctx, &w.pp("conv1"), in_channels, out_channels, 3)?,
            time_emb_proj: temb_channels
                .map(|t| layers::linear(ctx, &w.pp("time_emb_proj"), t, out_channels, true))
                .transpose()?,
            norm2: layers::group_norm(ctx, &w.pp("norm2"), groups, out_channels, eps)?,
            conv2: layers::conv2d(ctx, &w.pp("conv2"), out_channels, out_channels, 3)?,
            conv_shortcut: (in_channels != out_channels)
                .then(|| layers::conv2d(ctx, &w.pp("conv_shortcut"), in_channels, out_channels, 1))
                .transpose()?,
        })
    }

    /// x (B, H, W, Cin) → (B, H, W, Cout). `temb_act` is SiLU(temb) (B, T), shared by all blocks.
    pub fn forward(&self, g: &mut Graph, x: ValueId, temb_act: Option<ValueId>) -> Result<ValueId> {
        let n = &self.name;
        let h = group_norm::group_norm(g, &format!("{n}.norm1"), x, &self.norm1, true)?;
        let mut h = split::conv2d(
            g,
            &format!("{n}.conv1"),
            h,
            &self.conv1,
            Conv2dOptions::padded(1),
        )?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb_act) {
            let t = split::linear(
                g,
                &format!("{n}.time_emb_proj"),
                temb,
                proj,
                LinearOptions::default(),
            )?; // (B, Cout)
            let [b, c] = [g.shape(t)?[0], g.shape(t)?[1]];
            let t = g.reshape(t, &[b, 1, 1, c])?;
            h = elementwise::add(g, &format!("{n}.conv1+temb"), h, t)?;
        }
        let h = group_norm::group_norm(g, &format!("{n}.norm2"), h, &self.norm2, true)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => split::conv2d(
                g,
                &format!("{n}.conv_shortcut"),
                x,
                c,
                Conv2dOptions::default(),
            )?,
            None => x,
        };
        let opts = Conv2dOptions {
            residual: Some(shortcut),
            ..Conv2dOptions::padded(1)
        };
        split::conv2d(g, &format!("{n}.conv2"), h, &self.conv2, opts)
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
