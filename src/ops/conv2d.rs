//! 2-D convolution (`shaders/conv2d.wgsl`): NHWC implicit GEMM with fused bias and residual.
//!
//! CPU targets use `conv2d_subgroup::conv2d_subgroup` (lanes own output pixels, weights shared
//! by subgroup broadcasts, geometry in [`super::matmul_subgroup`]) where the adapter has
//! subgroups of 8 and CIN is a multiple of 4, else `conv2d::conv2d` (register blocking); GPU
//! targets `conv2d_tiled::conv2d_tiled` (workgroup-memory tiles, 128 pixels × 64 channels by
//! default; geometry and its per-adapter choice in [`super::matmul_tiled`]) while the reduction
//! fits the loop budget. All read the
//! same packed weight.

use bytemuck::{Pod, Zeroable};

use super::matmul::PACK_ROWS;
use super::{
    gemm_grid, matmul_subgroup, matmul_tiled, pad8, params, to_u32, WeightLayout, LOOP_BUDGET,
};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, KernelKey, Tensor};
use crate::graph::{Dispatch, Graph, ValueId};

/// A convolution weight repacked for the kernels: torch's (COUT, CIN, KH, KW) becomes
/// (KH·KW·CIN, NP) with NP = COUT rounded up to 8 (zero columns), laid out as `layout` says,
/// plus the optional bias.
#[derive(Clone, Debug)]
pub struct Conv2dWeight {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub layout: WeightLayout,
}

/// Repack torch (COUT, CIN, KH, KW) into ((ky·KW + kx)·CIN + ci, co) with NP columns.
pub fn pack_weight(w: &[f32], cout: usize, cin: usize, kh: usize, kw: usize) -> Vec<f32> {
    let mut out = vec![0.0; kh * kw * cin * pad8(cout)];
    pack_weight_range(|i| w[i], [cout, cin, kh, kw], 0, &mut out);
    out
}

/// Elements `start..start + out.len()` of [`pack_weight`]'s result, reading the torch-layout
/// weight through `w(index)`: for streaming a weight to the GPU in chunks.
pub fn pack_weight_range(
    w: impl Fn(usize) -> f32,
    [cout, cin, kh, kw]: [usize; 4],
    start: usize,
    out: &mut [f32],
) {
    let np = pad8(cout);
    let taps = kh * kw;
    // out[p] with p = (tap · CIN + ci) · NP + co, tap = ky · KW + kx; the source index of
    // (tap, ci, co) is (co · CIN + ci) · taps + tap. Counters instead of divisions per element.
    let (row, mut co) = (start / np, start % np);
    let (mut tap, mut ci) = (row / cin, row % cin);
    for o in out.iter_mut() {
        *o = if co < cout {
            w((co * cin + ci) * taps + tap)
        } else {
            0.0
        };
        co += 1;
        if co == np {
            co = 0;
            ci += 1;
            if ci == cin {
                ci = 0;
                tap += 1;
            }
        }
    }
}

/// [`pack_weight`]'s result produced in segments of at most about `max_chunk` elements,
/// reading the torch-layout weight only in contiguous runs through `read(start, out)` (fast
/// for a memory-mapped F16 file, unlike the strided reads of [`pack_weight_range`]).
/// `emit(offset, values)` receives each segment: packed elements `offset..offset + len`.
///
/// Each step takes a block of input channels `[c0, c1)` for every output channel (one
/// contiguous run of the source per `co`) and emits one segment per tap: packed rows
/// `tap · CIN + c0 .. tap · CIN + c1`. Offsets are multiples of NP (a multiple of 8).
/// Generic over the element: `f32` values, or raw f16 bits (`u16`, zero is `T::default()`).
pub fn pack_weight_segments<T: Copy + Default>(
    mut read: impl FnMut(usize, &mut [T]),
    [cout, cin, kh, kw]: [usize; 4],
    max_chunk: usize,
    mut emit: impl FnMut(usize, &[T]),
) {
    let np = pad8(cout);
    let taps = kh * kw;
    let block = (max_chunk / (taps * np)).clamp(1, cin.max(1));
    // PACK_ROWS output channels are read, then transposed together: contiguous runs of
    // PACK_ROWS values per packed row instead of one scattered store per element.
    let mut runs = vec![T::default(); PACK_ROWS * block * taps];
    // Columns co >= cout are never written, so they keep the zeros they start with.
    let mut packed = vec![T::default(); taps * block * np];
    for c0 in (0..cin).step_by(block) {
        let c1 = (c0 + block).min(cin);
        let width = c1 - c0;
        let run_len = width * taps;
        let packed = &mut packed[..taps * width * np]; // (taps, width, NP)
        for co0 in (0..cout).step_by(PACK_ROWS) {
            let cos = (co0 + PACK_ROWS).min(cout) - co0;
            for c in 0..cos {
                // (ci - c0, tap) of output channel co0 + c
                read(
                    ((co0 + c) * cin + c0) * taps,
                    &mut runs[c * run_len..(c + 1) * run_len],
                );
            }
            for ci in 0..width {
                for tap in 0..taps {
                    let at = (tap * width + ci) * np + co0;
                    for (c, d) in packed[at..at + cos].iter_mut().enumerate() {
                        *d = runs[c * run_len + ci * taps + tap];
                    }
                }
            }
        }
        for tap in 0..taps {
            let segment = &packed[tap * width * np..(tap + 1) * width * np];
            emit((tap * cin + c0) * np, segment);
        }
    }
}

/// [`pack_weight`] per block of output channels of `layout` ([`WeightLayout::blocks`]), the
/// blocks one after another (Packed: exactly [`pack_weight`]).
pub fn pack_weight_laid_out(
    w: &[f32],
    [cout, cin, kh, kw]: [usize; 4],
    layout: WeightLayout,
) -> Vec<f32> {
    let per_co = cin * kh * kw;
    let mut out = Vec::with_capacity(per_co * pad8(cout));
    for (c0, c1) in layout.blocks(cout) {
        out.extend(pack_weight(
            &w[c0 * per_co..c1 * per_co],
            c1 - c0,
            cin,
            kh,
            kw,
        ));
    }
    out
}

/// [`pack_weight_segments`] for a weight laid out as `layout`: each block of output channels
/// is packed on its own and emitted at its offset (`c0 · KH·KW·CIN` for the block from `c0`).
pub fn pack_weight_segments_laid_out<T: Copy + Default>(
    mut read: impl FnMut(usize, &mut [T]),
    [cout, cin, kh, kw]: [usize; 4],
    layout: WeightLayout,
    max_chunk: usize,
    mut emit: impl FnMut(usize, &[T]),
) {
    let per_co = cin * kh * kw;
    for (c0, c1) in layout.blocks(cout) {
        pack_weight_segments(
            |start, out: &mut [T]| read(c0 * per_co + start, out),
            [c1 - c0, cin, kh, kw],
            max_chunk,
            |offset, values: &[T]| emit(c0 * per_co + offset, values),
        );
    }
}

impl Conv2dWeight {
    /// Upload a torch-layout (COUT, CIN, KH, KW) weight and optional bias (COUT), Packed (every
    /// kernel reads it).
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        weight: &[f32],
        bias: Option<&[f32]>,
        shape: [usize; 4],
        dtype: DType,
    ) -> Result<Self> {
        Self::upload_laid_out(gpu, name, weight, bias, shape, dtype, WeightLayout::Packed)
    }

    /// [`Self::upload`] laid out as `layout` (`WeightLayout::for_target(&target, cin)` is what
    /// a model loaded for `target` gets).
    pub fn upload_laid_out(
        gpu: &Gpu,
        name: &str,
        weight: &[f32],
        bias: Option<&[f32]>,
        shape: [usize; 4],
        dtype: DType,
        layout: WeightLayout,
    ) -> Result<Self> {
        let [cout, cin, kh, kw] = shape;
        if weight.len() != cout * cin * kh * kw {
            return Err(Error::shape(
                name,
                format!("weight has {} values, expected {shape:?}", weight.len()),
            ));
        }
        if let Some(b) = bias.filter(|b| b.len() != cout) {
            return Err(Error::shape(
                name,
                format!("bias has {} values, expected {cout}", b.len()),
            ));
        }
        let packed = pack_weight_laid_out(weight, shape, layout);
        let weight = Tensor::from_f32(
            gpu,
            &format!("{name}.weight"),
            &[kh * kw * cin, pad8(cout)],
            dtype,
            &packed,
        )?;
        let bias = bias
            .map(|b| Tensor::from_f32(gpu, &format!("{name}.bias"), &[cout], dtype, b))
            .transpose()?;
        Ok(Conv2dWeight {
            weight,
            bias,
            in_channels: cin,
            out_channels: cout,
            kernel: [kh, kw],
            layout,
        })
    }
}

/// Stride, zero padding and an optional residual (same shape as the output) added last.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dOptions {
    pub stride: usize,
    /// Zero rows/columns on every side.
    pub padding: usize,
    /// Further zero rows at the bottom and columns at the right: diffusers' `Downsample2D`
    /// with `padding=0` (the VAE encoder) pads (0, 1, 0, 1) before a stride-2 convolution.
    pub extra_padding_end: usize,
    /// Convolve the nearest 2× upsampling of the input (B, 2H, 2W, C) without materialising
    /// it: each tap reads input pixel (iy / 2, ix / 2). diffusers' `Upsample2D` (interpolate,
    /// then conv) in one dispatch, and no 4×-sized intermediate.
    pub upsample_input: bool,
    pub residual: Option<ValueId>,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: 1,
            padding: 0,
            extra_padding_end: 0,
            upsample_input: false,
            residual: None,
        }
    }
}

impl Conv2dOptions {
    /// Stride 1 with `padding` on every side (3×3 "same" convolutions use 1).
    pub fn padded(padding: usize) -> Self {
        Conv2dOptions {
            padding,
            ..Default::default()
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    h: u32,
    w: u32,
    cin: u32,
    ho: u32,
    wo: u32,
    cout: u32,
    np4: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    has_bias: u32,
    has_residual: u32,
    /// 1 when the input is read nearest-upsampled 2× (`h`, `w` are then the upsampled size).
    up_shift: u32,
    /// 1: `w` is [`WeightLayout::Blocked`] (read by `conv2d_subgroup` only).
    blocked: u32,
}

/// Output spatial size of a convolution over `padded` values (input plus all padding).
pub fn output_size(padded: usize, kernel: usize, stride: usize) -> Option<usize> {
    padded.checked_sub(kernel).map(|s| s / stride + 1)
}

/// Convolution of x (B, H, W, CIN) → (B, HO, WO, COUT).
pub fn conv2d(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    w: &Conv2dWeight,
    opts: Conv2dOptions,
) -> Result<ValueId> {
    let shape = g.shape(x)?;
    let &[b, h, wd, cin] = shape.as_slice() else {
        return Err(Error::shape(
            name,
            format!("conv2d input must be (B, H, W, C), got {shape:?}"),
        ));
    };
    // The size the kernel convolves: the input's, or its nearest 2× upsampling's.
    let up = 1 + usize::from(opts.upsample_input);
    let (h, wd) = (h * up, wd * up);
    if cin != w.in_channels {
        return Err(Error::shape(
            name,
            format!("input has {cin} channels, the conv takes {}", w.in_channels),
        ));
    }
    if opts.stride == 0 {
        return Err(Error::shape(name, "stride 0"));
    }
    let [kh, kw] = w.kernel;
    let (Some(ho), Some(wo)) = (
        output_size(
            h + 2 * opts.padding + opts.extra_padding_end,
            kh,
            opts.stride,
        ),
        output_size(
            wd + 2 * opts.padding + opts.extra_padding_end,
            kw,
            opts.stride,
        ),
    ) else {
        return Err(Error::shape(
            name,
            format!("{h}×{wd} input is smaller than the {kh}×{kw} kernel"),
        ));
    };
    let rows = b * ho * wo;
    // A Blocked weight (loaded for a CPU target with subgroups) is read by the subgroup kernel
    // alone.
    let blocked = w.layout == WeightLayout::Blocked;
    let tile = if blocked {
        None
    } else {
        matmul_tiled::tile_for(g, "conv2d_tiled", rows, w.out_channels, kh * kw * cin)
    };
    let tiled = tile.is_some();
    let subgroup = !tiled
        && matmul_subgroup::use_subgroup(
            &g.target,
            rows,
            cin % 4 == 0,
            matmul_subgroup::conv_iterations(rows, [kh, kw], cin),
            w.layout,
        );
    if blocked && !subgroup {
        return Err(Error::shape(
            name,
            format!(
                "the weight is laid out for the subgroup kernel, which this graph's target \
                 ({}) cannot run for {rows} pixels × {kh}×{kw}×{cin} taps (loop budget {})",
                g.target.variant.name(),
                g.target.loop_budget()
            ),
        ));
    }
    if !tiled && !subgroup && kh * kw * (cin + 1) > LOOP_BUDGET {
        return Err(Error::shape(
            name,
            format!("{kh}×{kw}×{cin} taps exceed the kernel's reduction limit {LOOP_BUDGET}"),
        ));
    }
    let out_shape = [b, ho, wo, w.out_channels];
    if let Some(r) = opts.residual {
        let rs = g.shape(r)?;
        if rs != out_shape {
            return Err(Error::shape(
                name,
                format!("residual {rs:?} does not match output {out_shape:?}"),
            ));
        }
    }
    let wv = g.constant(&w.weight);
    let bv = w.bias.as_ref().map(|t| g.constant(t));
    let y = g.intermediate(name, &out_shape, g.dtype)?;
    let np = pad8(w.out_channels);
    let u = |what: &str, v: usize| to_u32(name, what, v);
    let p = Params {
        batch: u("batch", b)?,
        h: u("height", h)?,
        w: u("width", wd)?,
        cin: u("in_channels", cin)?,
        ho: u("out height", ho)?,
        wo: u("out width", wo)?,
        cout: u("out_channels", w.out_channels)?,
        np4: u("np4", np / 4)?,
        kh: u("kernel height", kh)?,
        kw: u("kernel width", kw)?,
        stride: u("stride", opts.stride)?,
        pad: u("padding", opts.padding)?,
        has_bias: bv.is_some() as u32,
        has_residual: opts.residual.is_some() as u32,
        up_shift: opts.upsample_input as u32,
        blocked: blocked as u32,
    };
    u("elements", b * ho * wo * w.out_channels)?;
    let buffers = vec![
        (1, x),
        (2, wv),
        (3, bv.unwrap_or(x)),
        (4, opts.residual.unwrap_or(x)),
        (5, y),
    ];
    let (workgroups, kernel) = match tile {
        Some(t) => (
            t.grid(name, rows, np)?,
            t.apply(KernelKey::new("conv2d_tiled", "conv2d_tiled", g.dtype)),
        ),
        None if subgroup => (
            matmul_subgroup::grid(name, rows, np)?,
            KernelKey::new("conv2d_subgroup", "conv2d_subgroup", g.dtype)
                .with("ROWS", matmul_subgroup::rows_per_lane(rows) as u32),
        ),
        None => (
            gemm_grid(name, rows, np)?,
            KernelKey::new("conv2d", "conv2d", g.dtype),
        ),
    };
    g.dispatch(Dispatch {
        label: name.to_string(),
        kernel,
        params: params(&p),
        buffers,
        workgroups,
    })?;
    Ok(y)
}

/// CPU reference: NHWC x (B, H, W, CIN), torch-layout weight (COUT, CIN, KH, KW); f64 sums.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    x: &[f32],
    [b, h, wd, cin]: [usize; 4],
    w: &[f32],
    bias: Option<&[f32]>,
    [cout, _, kh, kw]: [usize; 4],
    stride: usize,
    (pad, extra_end): (usize, usize),
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let ho = (h + 2 * pad + extra_end - kh) / stride + 1;
    let wo = (wd + 2 * pad + extra_end - kw) / stride + 1;
    let mut y = vec![0.0; b * ho * wo * cout];
    for n in 0..b {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..cout {
                    let mut s = bias.map_or(0.0, |bb| bb[co] as f64);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            let base = ((n * h + iy as usize) * wd + ix as usize) * cin;
                            for ci in 0..cin {
                                s += x[base + ci] as f64
                                    * w[((co * cin + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    let o = ((n * ho + oy) * wo + ox) * cout + co;
                    y[o] = s as f32 + residual.map_or(0.0, |r| r[o]);
                }
            }
        }
    }
    y
}
