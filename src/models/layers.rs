//! Loading the basic layers (Linear, Conv2d, GroupNorm, LayerNorm) from weights into the layouts
//! the kernels read.

use super::Ctx;
use crate::error::Result;
use crate::gpu::Tensor;
use crate::graph::{Graph, ValueId};
use crate::lora::targets::Part;
use crate::ops::conv2d::Conv2dWeight;
use crate::ops::group_norm::GroupNorm;
use crate::ops::layer_norm;
use crate::ops::matmul::LinearWeight;
use crate::ops::pad8;
use crate::weights::WeightsView;

/// `nn.Linear(in_features, out_features, bias)` at `w` (`weight` (out, in), `bias` (out)).
pub fn linear(
    ctx: Ctx,
    w: &WeightsView,
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<LinearWeight> {
    if ctx.placeholders {
        return placeholder_linear(ctx, w.prefix(), in_features, out_features, bias);
    }
    let weight = w.get("weight", &[out_features, in_features])?;
    let b = if bias {
        Some(w.get("bias", &[out_features])?)
    } else {
        None
    };
    let lw = LinearWeight::upload(
        ctx.gpu,
        w.prefix(),
        &weight,
        b.as_deref(),
        out_features,
        in_features,
        ctx.dtype,
    )?;
    ctx.record_linear(
        vec![part(w, "weight", &[out_features, in_features])],
        in_features,
        &lw.weight,
    );
    Ok(lw)
}

/// A weight a packed tensor is built from (for [`Ctx::record_linear`]).
fn part(w: &WeightsView, name: &str, shape: &[usize]) -> Part {
    Part {
        weight: w.full_name(name),
        shape: shape.to_vec(),
    }
}

fn placeholder_linear(
    ctx: Ctx,
    name: &str,
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<LinearWeight> {
    let weight = Tensor::placeholder(
        ctx.gpu,
        &format!("{name}.weight"),
        &[in_features, pad8(out_features)],
        ctx.dtype,
    )?;
    let bias = bias
        .then(|| Tensor::placeholder(ctx.gpu, &format!("{name}.bias"), &[out_features], ctx.dtype))
        .transpose()?;
    Ok(LinearWeight {
        weight,
        bias,
        in_features,
        out_features,
    })
}

/// A 1×1 convolution (`conv1x1`) or a Linear (Transformer2DModel's proj_in/proj_out are one or
/// the other by `use_linear_projection`): on NHWC activations both are the same matrix product.
pub fn linear_or_conv1x1(
    ctx: Ctx,
    w: &WeightsView,
    in_features: usize,
    out_features: usize,
    conv1x1: bool,
) -> Result<LinearWeight> {
    if ctx.placeholders {
        return placeholder_linear(ctx, w.prefix(), in_features, out_features, true);
    }
    let shape = if conv1x1 {
        vec![out_features, in_features, 1, 1]
    } else {
        vec![out_features, in_features]
    };
    let weight = w.get("weight", &shape)?;
    let bias = w.get("bias", &[out_features])?;
    let lw = LinearWeight::upload(
        ctx.gpu,
        w.prefix(),
        &weight,
        Some(&bias),
        out_features,
        in_features,
        ctx.dtype,
    )?;
    ctx.record_linear(vec![part(w, "weight", &shape)], in_features, &lw.weight);
    Ok(lw)
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
    let name = format!("{}.{}", w.prefix(), parts.join("+"));
    let total = parts.len() * out_features;
    if ctx.placeholders {
        return placeholder_linear(ctx, &name, in_features, total, bias);
    }
    let mut weight = Vec::with_capacity(total * in_features);
    let mut biases = Vec::with_capacity(total);
    for part in parts {
        let p = w.pp(part);
        weight.extend(p.get("weight", &[out_features, in_features])?);
        if bias {
            biases.extend(p.get("bias", &[out_features])?);
        }
    }
    let b = bias.then_some(&biases[..]);
    let lw = LinearWeight::upload(ctx.gpu, &name, &weight, b, total, in_features, ctx.dtype)?;
    let parts = parts
        .iter()
        .map(|p| part(&w.pp(p), "weight", &[out_features, in_features]))
        .collect();
    ctx.record_linear(parts, in_features, &lw.weight);
    Ok(lw)
}

/// `nn.Conv2d(cin, cout, kernel)` with bias.
pub fn conv2d(
    ctx: Ctx,
    w: &WeightsView,
    cin: usize,
    cout: usize,
    kernel: usize,
) -> Result<Conv2dWeight> {
    if ctx.placeholders {
        let name = w.prefix();
        return Ok(Conv2dWeight {
            weight: Tensor::placeholder(
                ctx.gpu,
                &format!("{name}.weight"),
                &[kernel * kernel * cin, pad8(cout)],
                ctx.dtype,
            )?,
            bias: Some(Tensor::placeholder(
                ctx.gpu,
                &format!("{name}.bias"),
                &[cout],
                ctx.dtype,
            )?),
            in_channels: cin,
            out_channels: cout,
            kernel: [kernel, kernel],
        });
    }
    let weight = w.get("weight", &[cout, cin, kernel, kernel])?;
    let bias = w.get("bias", &[cout])?;
    let cw = Conv2dWeight::upload(
        ctx.gpu,
        w.prefix(),
        &weight,
        Some(&bias),
        [cout, cin, kernel, kernel],
        ctx.dtype,
    )?;
    ctx.record_conv(
        w.full_name("weight"),
        [cout, cin, kernel, kernel],
        &cw.weight,
    );
    Ok(cw)
}

fn affine(ctx: Ctx, w: &WeightsView, channels: usize) -> Result<(Tensor, Tensor)> {
    Ok((
        ctx.tensor(w, "weight", &[channels])?,
        ctx.tensor(w, "bias", &[channels])?,
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
