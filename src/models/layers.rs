//! Loading the basic layers (Linear, Conv2d, GroupNorm, LayerNorm) from weights into the layouts
//! the kernels read.
//!
//! Weights stream from the memory map to the GPU: each packed element is read from the file
//! (converting F16/BF16 on the fly) while a chunk is produced, so no f32 copy of a tensor is
//! made on the host (see `Tensor::from_fill`), and each tensor's file pages are released
//! once it is uploaded (see `TensorData`). F16 files loaded as F16 skip the conversion: their
//! bits are packed as they are (`raw_f16`).

use super::split::{self, Conv2d, Linear};
use super::Ctx;
use crate::error::{Error, Result};
use crate::gpu::tensor::UPLOAD_CHUNK;
use crate::gpu::{DType, Tensor};
use crate::graph::{Graph, ValueId};
use crate::lora::targets::Part;
use crate::ops::conv2d::{self, Conv2dWeight};
use crate::ops::group_norm::GroupNorm;
use crate::ops::layer_norm;
use crate::ops::matmul::{self, LinearWeight};
use crate::ops::{pad8, WeightLayout};
use crate::weights::{TensorData, WeightsView};

/// `nn.Linear(in_features, out_features, bias)` at `w` (`weight` (out, in), `bias` (out)).
pub fn linear(
    ctx: Ctx,
    w: &WeightsView,
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<Linear> {
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

/// A Linear from torch-layout (out, in) parts stacked along `out` (one part for a plain
/// Linear), streamed from the memory map into the packed (in, pad8(total out)) layout the
/// matmul kernel reads; biases from `w.{part}.bias`. Placeholders when `ctx.placeholders`.
/// A packed weight past the adapter's binding limit is split into output ranges
/// (`split::ranges`), each its own packed tensor, LoRA target and bias.
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
) -> Result<Linear> {
    let total = part_names.len() * out_features;
    if ctx.placeholders {
        let one = placeholder_linear(ctx, name, in_features, total, bias)?;
        return Ok(Linear { parts: vec![one] });
    }
    let row_bytes = (in_features * ctx.dtype.size()) as u64;
    let ranges = split::ranges(
        &format!("{name}.weight"),
        total,
        row_bytes,
        max_binding(ctx),
    )?;
    let biases = if bias {
        part_names
            .iter()
            .map(|p| w.pp(p).data("bias", &[out_features]))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    // LoRAs rewrite each packed tensor from the parts it was built from.
    let recorded: Vec<Part> = part_names
        .iter()
        .map(|p| {
            let view = if p.is_empty() { w.clone() } else { w.pp(p) };
            part(&view, "weight", part_shape)
        })
        .collect();
    let whole = ranges.len() == 1;
    let layout = WeightLayout::for_target(ctx.target, in_features);
    let mut pieces = Vec::with_capacity(ranges.len());
    for (i, &(r0, r1)) in ranges.iter().enumerate() {
        let label = if whole {
            name.to_string()
        } else {
            format!("{name}#{i}")
        };
        let n = r1 - r0;
        let weight = Tensor::from_writes(
            ctx.gpu,
            &format!("{label}.weight"),
            &[in_features, pad8(n)],
            ctx.dtype,
            |writer| {
                // Row r of the stacked (total, in) weight is row r % out of part r / out.
                let at = |r: usize, col: usize| {
                    let r = r0 + r;
                    (r / out_features, (r % out_features) * in_features + col)
                };
                if raw_f16(ctx, parts) {
                    let read = |r, col, out: &mut [u16]| {
                        let (p, start) = at(r, col);
                        parts[p].read_f16_bits(start, out)
                    };
                    let emit = |offset, bits: &[u16]| writer.write_f16_bits(offset, bits);
                    matmul::pack_weight_segments_laid_out(
                        read,
                        n,
                        in_features,
                        layout,
                        UPLOAD_CHUNK,
                        emit,
                    )
                } else {
                    let read = |r, col, out: &mut [f32]| {
                        let (p, start) = at(r, col);
                        parts[p].read(start, out)
                    };
                    let emit = |offset, values: &[f32]| writer.write(offset, values);
                    matmul::pack_weight_segments_laid_out(
                        read,
                        n,
                        in_features,
                        layout,
                        UPLOAD_CHUNK,
                        emit,
                    )
                }
            },
        )?;
        let rows = (!whole).then_some((r0, r1));
        ctx.record_linear(recorded.clone(), in_features, rows, layout, &weight);
        let bias = if bias {
            Some(Tensor::from_fill(
                ctx.gpu,
                &format!("{label}.bias"),
                &[n],
                ctx.dtype,
                |start, out| {
                    for (i, o) in (r0 + start..).zip(out.iter_mut()) {
                        *o = biases[i / out_features].get(i % out_features);
                    }
                },
            )?)
        } else {
            None
        };
        pieces.push(LinearWeight {
            weight,
            bias,
            in_features,
            out_features: n,
            layout,
        });
    }
    parts.iter().for_each(|p| ctx.loaded(p));
    biases.iter().for_each(|b| ctx.loaded(b));
    Ok(Linear { parts: pieces })
}

/// True when every part is an F16 file tensor and the GPU tensor is F16: the packed weight is
/// then built from the file's f16 bits directly (a permutation, bit-identical to converting
/// to f32 and back, and skipping both conversions: the loader's main CPU cost).
fn raw_f16(ctx: Ctx, parts: &[TensorData]) -> bool {
    ctx.dtype == DType::F16 && parts.iter().all(TensorData::is_plain_f16)
}

/// The most bytes one weight tensor may have on this adapter (one storage binding, one buffer).
fn max_binding(ctx: Ctx) -> u64 {
    let l = &ctx.gpu.limits;
    l.max_storage_buffer_binding_size.min(l.max_buffer_size)
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
        layout: WeightLayout::for_target(ctx.target, in_features),
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
) -> Result<Linear> {
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
) -> Result<Linear> {
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
pub fn conv2d(ctx: Ctx, w: &WeightsView, cin: usize, cout: usize, kernel: usize) -> Result<Conv2d> {
    conv2d_bias(ctx, w, cin, cout, kernel, true)
}

/// [`conv2d`] with or without `bias` (`nn.Conv2d(…, bias=False)` has no `bias` tensor). A
/// packed weight past the adapter's binding limit is split into output-channel ranges.
pub fn conv2d_bias(
    ctx: Ctx,
    w: &WeightsView,
    cin: usize,
    cout: usize,
    kernel: usize,
    bias: bool,
) -> Result<Conv2d> {
    let mut parts = conv2d_input_ranges(ctx, w, cin, cout, kernel, bias, &[(0, cin)])?;
    parts
        .pop()
        .ok_or_else(|| Error::invalid(w.prefix(), "a Conv2d with no input range"))
}

/// `nn.Conv2d(cin, cout, kernel)` loaded as one [`Conv2d`] per range `[start, end)` of input
/// channels (consecutive ranges covering `0..cin`), the bias in the first only, for a
/// convolution over a channel concatenation that is never materialised
/// (`W·[x₀ ‖ x₁] + b = W₁·x₁ + (W₀·x₀ + b)`, `models::concat_conv`). Each range is packed as a
/// whole Conv2d of its input channels would be, split into output-channel ranges past the
/// binding limit, and recorded for LoRA with its input range. One range `(0, cin)` is the
/// plain layer.
pub fn conv2d_input_ranges(
    ctx: Ctx,
    w: &WeightsView,
    cin: usize,
    cout: usize,
    kernel: usize,
    bias: bool,
    inputs: &[(usize, usize)],
) -> Result<Vec<Conv2d>> {
    let name = w.prefix();
    let contiguous = inputs.first().is_some_and(|r| r.0 == 0)
        && inputs.last().is_some_and(|r| r.1 == cin)
        && inputs.windows(2).all(|p| p[0].1 == p[1].0)
        && inputs.iter().all(|r| r.0 < r.1);
    if !contiguous {
        return Err(Error::invalid(
            name,
            format!("input ranges {inputs:?} do not cover the {cin} input channels in order"),
        ));
    }
    let whole_input = inputs.len() == 1;
    // `name.weight` of input channels [i0, i1) (torch's W[:, i0:i1]).
    let weight_label = |label: &str, (i0, i1): (usize, usize)| {
        if whole_input {
            format!("{label}.weight")
        } else {
            format!("{label}.weight[:, {i0}:{i1}]")
        }
    };
    if ctx.placeholders {
        return inputs
            .iter()
            .enumerate()
            .map(|(r, &(i0, i1))| {
                let one = Conv2dWeight {
                    weight: Tensor::placeholder(
                        ctx.gpu,
                        &weight_label(name, (i0, i1)),
                        &[kernel * kernel * (i1 - i0), pad8(cout)],
                        ctx.dtype,
                    )?,
                    bias: (bias && r == 0)
                        .then(|| {
                            Tensor::placeholder(
                                ctx.gpu,
                                &format!("{name}.bias"),
                                &[cout],
                                ctx.dtype,
                            )
                        })
                        .transpose()?,
                    in_channels: i1 - i0,
                    out_channels: cout,
                    kernel: [kernel, kernel],
                    layout: WeightLayout::for_target(ctx.target, i1 - i0),
                };
                Ok(Conv2d { parts: vec![one] })
            })
            .collect();
    }
    let shape = [cout, cin, kernel, kernel];
    let taps = kernel * kernel;
    let data = w.data("weight", &shape)?;
    let bias_data = bias.then(|| w.data("bias", &[cout])).transpose()?;
    let mut layers = Vec::with_capacity(inputs.len());
    for (r, &(i0, i1)) in inputs.iter().enumerate() {
        // One output channel is a column of the packed (taps·width, pad8(cout)) weight.
        let width = i1 - i0;
        let row_bytes = (width * taps * ctx.dtype.size()) as u64;
        let ranges = split::ranges(
            &weight_label(name, (i0, i1)),
            cout,
            row_bytes,
            max_binding(ctx),
        )?;
        let whole = ranges.len() == 1;
        // Each input range is packed as a Conv2d of its own channels would be.
        let layout = WeightLayout::for_target(ctx.target, width);
        let mut pieces = Vec::with_capacity(ranges.len());
        for (i, &(c0, c1)) in ranges.iter().enumerate() {
            let label = if whole {
                name.to_string()
            } else {
                format!("{name}#{i}")
            };
            let n = c1 - c0;
            let piece_shape = [n, width, kernel, kernel];
            // Element `start` of the piece's torch layout (n, width, kh, kw) in the file's
            // (cout, cin, kh, kw): runs never cross an output channel.
            let at = |start: usize| {
                let (co, rest) = (start / (width * taps), start % (width * taps));
                ((c0 + co) * cin + i0) * taps + rest
            };
            let weight = Tensor::from_writes(
                ctx.gpu,
                &weight_label(&label, (i0, i1)),
                &[taps * width, pad8(n)],
                ctx.dtype,
                |writer| {
                    if raw_f16(ctx, std::slice::from_ref(&data)) {
                        let read = |start, out: &mut [u16]| data.read_f16_bits(at(start), out);
                        let emit = |offset, bits: &[u16]| writer.write_f16_bits(offset, bits);
                        conv2d::pack_weight_segments_laid_out(
                            read,
                            piece_shape,
                            layout,
                            UPLOAD_CHUNK,
                            emit,
                        )
                    } else {
                        let read = |start, out: &mut [f32]| data.read(at(start), out);
                        let emit = |offset, values: &[f32]| writer.write(offset, values);
                        conv2d::pack_weight_segments_laid_out(
                            read,
                            piece_shape,
                            layout,
                            UPLOAD_CHUNK,
                            emit,
                        )
                    }
                },
            )?;
            let rows = (!whole).then_some((c0, c1));
            let cols = (!whole_input).then_some((i0, i1));
            ctx.record_conv_inputs(w.full_name("weight"), shape, rows, cols, layout, &weight);
            let bias = match bias_data.as_ref().filter(|_| r == 0) {
                Some(b) => Some(Tensor::from_fill(
                    ctx.gpu,
                    &format!("{label}.bias"),
                    &[n],
                    ctx.dtype,
                    |start, out| b.read(c0 + start, out),
                )?),
                None => None,
            };
            pieces.push(Conv2dWeight {
                weight,
                bias,
                in_channels: width,
                out_channels: n,
                kernel: [kernel, kernel],
                layout,
            });
        }
        layers.push(Conv2d { parts: pieces });
    }
    ctx.loaded(&data);
    drop(data);
    if let Some(b) = &bias_data {
        ctx.loaded(b);
    }
    Ok(layers)
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
