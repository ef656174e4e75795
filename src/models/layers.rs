//! Loading the basic layers (Linear, Conv2d, GroupNorm, LayerNorm) from weights into the layouts
//! the kernels read.

use super::Ctx;
use crate::error::Result;
use crate::gpu::Tensor;
use crate::graph::{Graph, ValueId};
use crate::ops::conv2d::Conv2dWeight;
use crate::ops::group_norm::GroupNorm;
use crate::ops::layer_norm;
use crate::ops::matmul::LinearWeight;
use crate::weights::WeightsView;

/// `nn.Linear(in_features, out_features, bias)` at `w` (`weight` (out, in), `bias` (out)).
pub fn linear(
    ctx: Ctx,
    w: &WeightsView,
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<LinearWeight> {
    let weight = w.get("weight", &[out_features, in_features])?;
    let b = if bias {
        Some(w.get("bias", &[out_features])?)
    } else {
        None
    };
    LinearWeight::upload(
        ctx.gpu,
        w.prefix(),
        &weight,
        b.as_deref(),
        out_features,
        in_features,
        ctx.dtype,
    )
}

/// A 1×1 convolution or a Linear (Transformer2DModel's proj_in/proj_out are either): on NHWC
/// activations both are the same matrix product.
pub fn linear_or_conv1x1(
    ctx: Ctx,
    w: &WeightsView,
    in_features: usize,
    out_features: usize,
) -> Result<LinearWeight> {
    let shape = w.shape("weight")?;
    let weight = if shape.len() == 4 {
        w.get("weight", &[out_features, in_features, 1, 1])?
    } else {
        w.get("weight", &[out_features, in_features])?
    };
    let bias = w.get("bias", &[out_features])?;
    LinearWeight::upload(
        ctx.gpu,
        w.prefix(),
        &weight,
        Some(&bias),
        out_features,
        in_features,
        ctx.dtype,
    )
}

/// Several Linears with the same input fused into one (their outputs side by side), e.g.
/// `to_q`, `to_k`, `to_v` of a self-attention: one dispatch instead of three.
pub fn fused_linear(
    ctx: Ctx,
    w: &WeightsView,
    parts: &[&str],
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<LinearWeight> {
    let mut weight = Vec::with_capacity(parts.len() * out_features * in_features);
    let mut biases = Vec::with_capacity(parts.len() * out_features);
    for part in parts {
        let p = w.pp(part);
        weight.extend(p.get("weight", &[out_features, in_features])?);
        if bias {
            biases.extend(p.get("bias", &[out_features])?);
        }
    }
    let name = format!("{}.{}", w.prefix(), parts.join("+"));
    let b = bias.then_some(&biases[..]);
    LinearWeight::upload(
        ctx.gpu,
        &name,
        &weight,
        b,
        parts.len() * out_features,
        in_features,
        ctx.dtype,
    )
}

/// `nn.Conv2d(cin, cout, kernel)` with bias.
pub fn conv2d(
    ctx: Ctx,
    w: &WeightsView,
    cin: usize,
    cout: usize,
    kernel: usize,
) -> Result<Conv2dWeight> {
    let weight = w.get("weight", &[cout, cin, kernel, kernel])?;
    let bias = w.get("bias", &[cout])?;
    Conv2dWeight::upload(
        ctx.gpu,
        w.prefix(),
        &weight,
        Some(&bias),
        [cout, cin, kernel, kernel],
        ctx.dtype,
    )
}

fn affine(ctx: Ctx, w: &WeightsView, channels: usize) -> Result<(Tensor, Tensor)> {
    let gamma = w.get("weight", &[channels])?;
    let beta = w.get("bias", &[channels])?;
    Ok((
        Tensor::from_f32(
            ctx.gpu,
            &w.full_name("weight"),
            &[channels],
            ctx.dtype,
            &gamma,
        )?,
        Tensor::from_f32(ctx.gpu, &w.full_name("bias"), &[channels], ctx.dtype, &beta)?,
    ))
}

/// `nn.GroupNorm(groups, channels, eps)`.
pub fn group_norm(
    ctx: Ctx,
    w: &WeightsView,
    groups: usize,
    channels: usize,
    eps: f32,
) -> Result<GroupNorm> {
    let (weight, bias) = affine(ctx, w, channels)?;
    Ok(GroupNorm {
        groups,
        eps,
        weight,
        bias,
    })
}

/// `nn.LayerNorm(channels, eps)`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub name: String,
    pub eps: f32,
    pub weight: Tensor,
    pub bias: Tensor,
}

impl LayerNorm {
    pub fn load(ctx: Ctx, w: &WeightsView, channels: usize, eps: f32) -> Result<Self> {
        let (weight, bias) = affine(ctx, w, channels)?;
        Ok(LayerNorm {
            name: w.prefix().to_string(),
            eps,
            weight,
            bias,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: ValueId) -> Result<ValueId> {
        layer_norm::layer_norm(g, &self.name, x, self.eps, &self.weight, &self.bias)
    }
}
