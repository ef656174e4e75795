//! Loading the basic layers (Linear, Conv2d, GroupNorm, LayerNorm) from weights into the layouts
//! the kernels read.
//!
//! Weights stream from the memory map to the GPU: each packed element is read from the file
//! (converting F16/BF16 on the fly) while a chunk is produced, so no f32 copy of a tensor is
//! made on the host (see `Tensor::from_fill`), and each tensor's file pages are released
//! once it is uploaded (see `TensorData`).

use super::Ctx;
use crate::error::Result;
use crate::gpu::tensor::UPLOAD_CHUNK;
use crate::gpu::Tensor;
use crate::graph::{Graph, ValueId};
use crate::lora::targets::Part;
use crate::ops::conv2d::{self, Conv2dWeight};
use crate::ops::group_norm::GroupNorm;
use crate::ops::layer_norm;
use crate::ops::matmul::{self, LinearWeight};
use crate::ops::pad8;
use crate::weights::{TensorData, WeightsView};

/// `nn.Linear(in_features, out_features, bias)` at `w` (`weight` (out, in), `bias` (out)).
pub fn linear(
    ctx: Ctx,
    w: &WeightsView,
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<LinearWeight> {
    let parts = if ctx.placeholders {
        Vec::new()
    } else {
        vec![w.data("weight", &[out_features, in_features])?]
    };
    stream_linear(
        ctx,
        w,
        w.prefix(),
        &parts,
        &[""],
        &[out_features, in_features],
        in_features,
        out_features,
        bias,
    )
}

/// A LinearWeight from torch-layout (out, in) parts stacked along `out` (one part for a plain
/// Linear), streamed from the memory map into the packed (in, pad8(total out)) layout the
/// matmul kernel reads; biases from `w.{part}.bias`. Placeholders when `ctx.placeholders`.
#[allow(clippy::too_many_arguments)]
fn stream_linear(
    ctx: Ctx,
    w: &WeightsView,
    name: &str,
    parts: &[TensorData],
    part_names: &[&str],
    part_shape: &[usize],
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<LinearWeight> {
    let total = part_names.len() * out_features;
    if ctx.placeholders {
        return placeholder_linear(ctx, name, in_features, total, bias);
    }
    let weight = Tensor::from_writes(
        ctx.gpu,
        &format!("{name}.weight"),
        &[in_features, pad8(total)],
        ctx.dtype,
        |writer| {
            // Row r of the stacked (total, in) weight is row r % out of part r / out.
            let read = |r: usize, col: usize, out: &mut [f32]| {
                let row_start = (r % out_features) * in_features + col;
                parts[r / out_features].read(row_start, out)
            };
            let emit = |offset, values: &[f32]| writer.write(offset, values);
            matmul::pack_weight_segments(read, total, in_features, UPLOAD_CHUNK, emit)
        },
    )?;
    parts.iter().for_each(|p| ctx.loaded(p));
    // LoRAs rewrite this packed tensor from the parts it was built from.
    let recorded = part_names
        .iter()
        .map(|p| {
            let view = if p.is_empty() { w.clone() } else { w.pp(p) };
            part(&view, "weight", part_shape)
        })
        .collect();
    ctx.record_linear(recorded, in_features, &weight);
    let bias = if bias {
        let biases = part_names
            .iter()
            .map(|p| w.pp(p).data("bias", &[out_features]))
            .collect::<Result<Vec<_>>>()?;
        let tensor = Tensor::from_fill(
            ctx.gpu,
            &format!("{name}.bias"),
            &[total],
            ctx.dtype,
            |start, out| {
                for (i, o) in (start..).zip(out.iter_mut()) {
                    *o = biases[i / out_features].get(i % out_features);
                }
            },
        )?;
        biases.iter().for_each(|b| ctx.loaded(b));
        Some(tensor)
    } else {
        None
    };
    Ok(LinearWeight {
        weight,
        bias,
        in_features,
        out_features: total,
    })
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
    let shape = if conv1x1 {
        // (out, in, 1, 1) has the (out, in) element order.
        vec![out_features, in_features, 1, 1]
    } else {
        vec![out_features, in_features]
    };
    let parts = if ctx.placeholders {
        Vec::new()
    } else {
        vec![w.data("weight", &shape)?]
    };
    stream_linear(
        ctx,
        w,
        w.prefix(),
        &parts,
        &[""],
        &shape,
        in_features,
        out_features,
        true,
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
    let name = format!("{}.{}", w.prefix(), parts.join("+"));
    let data = if ctx.placeholders {
        Vec::new()
    } else {
        parts
            .iter()
            .map(|p| w.pp(p).data("weight", &[out_features, in_features]))
            .collect::<Result<Vec<_>>>()?
    };
    let fused = stream_linear(
        ctx,
        w,
        &name,
        &data,
        parts,
        &[out_features, in_features],
        in_features,
        out_features,
        bias,
    )?;
    Ok(fused)
}

/// `nn.Conv2d(cin, cout, kernel)` with bias.
pub fn conv2d(
    ctx: Ctx,
    w: &WeightsView,
    cin: usize,
    cout: usize,
    kernel: usize,
) -> Result<Conv2dWeight> {
    conv2d_bias(ctx, w, cin, cout, kernel, true)
}

/// [`conv2d`] with or without `bias` (`nn.Conv2d(…, bias=False)` has no `bias` tensor).
pub fn conv2d_bias(
    ctx: Ctx,
    w: &WeightsView,
    cin: usize,
    cout: usize,
    kernel: usize,
    bias: bool,
) -> Result<Conv2dWeight> {
    let name = w.prefix();
    if ctx.placeholders {
        return Ok(Conv2dWeight {
            weight: Tensor::placeholder(
                ctx.gpu,
                &format!("{name}.weight"),
                &[kernel * kernel * cin, pad8(cout)],
                ctx.dtype,
            )?,
            bias: bias
                .then(|| Tensor::placeholder(ctx.gpu, &format!("{name}.bias"), &[cout], ctx.dtype))
                .transpose()?,
            in_channels: cin,
            out_channels: cout,
            kernel: [kernel, kernel],
        });
    }
    let shape = [cout, cin, kernel, kernel];
    let data = w.data("weight", &shape)?;
    let weight = Tensor::from_writes(
        ctx.gpu,
        &format!("{name}.weight"),
        &[kernel * kernel * cin, pad8(cout)],
        ctx.dtype,
        |writer| {
            let read = |start, out: &mut [f32]| data.read(start, out);
            let emit = |offset, values: &[f32]| writer.write(offset, values);
            conv2d::pack_weight_segments(read, shape, UPLOAD_CHUNK, emit)
        },
    )?;
    ctx.loaded(&data);
    drop(data);
    ctx.record_conv(w.full_name("weight"), shape, &weight);
    Ok(Conv2dWeight {
        weight,
        bias: bias.then(|| ctx.tensor(w, "bias", &[cout])).transpose()?,
        in_channels: cin,
        out_channels: cout,
        kernel: [kernel, kernel],
    })
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
