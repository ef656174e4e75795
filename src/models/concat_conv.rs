//! A convolution over the channel concatenation of two NHWC tensors, without materialising it:
//! ResnetBlock2D's `conv_shortcut` in the UNet's up blocks, whose input is diffusers'
//! `torch.cat([hidden_states, res_hidden_states], dim=1)`.
//!
//! ```text
//! W (COUT, CA + CB, kh, kw) = [W_a | W_b]          split on input channels at load
//! y = W ⊛ [a ‖ b] + bias = W_b ⊛ b + (W_a ⊛ a + bias)
//! ```
//!
//! Two convolutions (GEMMs for the 1×1 shortcut) over the input ranges, the second adding the
//! first as its fused residual: no concatenated tensor, no extra dispatch, no conv-shader change.
//! Each part is an ordinary [`Conv2d`] (split into output ranges past the binding limit) and
//! its own LoRA target, merged over its input range (`lora::targets::Packing::Conv::inputs`).
//! The sum is taken in two parts instead of one: f32 results differ from the single GEMM by
//! rounding; in f16 the first part is stored in f16 before the second adds it.

use super::layers;
use super::split::{self, Conv2d};
use super::Ctx;
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::conv2d::Conv2dOptions;
use crate::weights::WeightsView;

/// `nn.Conv2d(ca + cb, cout, kernel)` over `[a ‖ b]`, as two convolutions over `a` and `b`.
#[derive(Clone, Debug)]
pub struct ConcatConv2d {
    /// Input channels [0, CA), with the bias.
    pub a: Conv2d,
    /// Input channels [CA, CA + CB), no bias.
    pub b: Conv2d,
}

impl ConcatConv2d {
    /// The layer at `w` (`weight` (COUT, CA + CB, kernel, kernel), `bias` (COUT)) for inputs of
    /// `[ca, cb]` channels.
    pub fn load(
        ctx: Ctx,
        w: &WeightsView,
        [ca, cb]: [usize; 2],
        cout: usize,
        kernel: usize,
    ) -> Result<Self> {
        let ranges = [(0, ca), (ca, ca + cb)];
        let parts = layers::conv2d_input_ranges(ctx, w, ca + cb, cout, kernel, true, &ranges)?;
        let [a, b]: [Conv2d; 2] = parts
            .try_into()
            .map_err(|_| Error::invalid(w.prefix(), "expected two input ranges"))?;
        Ok(ConcatConv2d { a, b })
    }

    /// `W ⊛ [a ‖ b] + bias (+ opts.residual)` for a (B, H, W, CA), b (B, H, W, CB) →
    /// (B, HO, WO, COUT). Dispatches are named after the weight columns they use.
    pub fn forward(
        &self,
        g: &mut Graph,
        name: &str,
        a: ValueId,
        b: ValueId,
        opts: Conv2dOptions,
    ) -> Result<ValueId> {
        let ca = self.in_channels_a();
        let c = ca + self.b.parts.first().map_or(0, |p| p.in_channels);
        let ya = split::conv2d(g, &format!("{name}[:, 0:{ca}]"), a, &self.a, opts)?; // (B, HO, WO, COUT)
        let second = Conv2dOptions {
            residual: Some(ya),
            ..opts
        };
        split::conv2d(g, &format!("{name}[:, {ca}:{c}]"), b, &self.b, second) // (B, HO, WO, COUT)
    }

    /// CA: the input channels of `a`.
    pub fn in_channels_a(&self) -> usize {
        self.a.parts.first().map_or(0, |p| p.in_channels)
    }
}
