//! Linear layers (`shaders/matmul.wgsl`): batched `x·Wᵀ + b` with fused activation and residual.
//!
//! Kernels: on CPU targets `matmul_subgroup::linear_subgroup` (lanes own rows, weights shared by
//! subgroup broadcasts, [`super::matmul_subgroup`]) where the adapter has subgroups of 8 and K
//! is a multiple of 4, else `matmul::linear_rows` (few rows) and `matmul::linear` (register
//! blocking); on GPU targets `matmul_tiled::linear_tiled` (workgroup-memory tiles,
//! [`super::matmul_tiled`]). All read the same packed weight.

use bytemuck::{Pod, Zeroable};

use super::elementwise::Activation;
use super::{
    gemm_grid, matmul_subgroup, matmul_tiled, pad8, params, to_u32, WeightLayout, LOOP_BUDGET,
};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, KernelKey, Tensor, Variant};
use crate::graph::{Dispatch, Graph, ValueId};

/// A linear layer's weight, repacked for the kernels: torch's (N, K) becomes (K, NP) with NP = N
/// rounded up to 8 (zero columns), laid out as `layout` says, plus the optional bias (N).
#[derive(Clone, Debug)]
pub struct LinearWeight {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub in_features: usize,
    pub out_features: usize,
    pub layout: WeightLayout,
}

/// Repack a row-major (N, K) weight into (K, NP).
pub fn pack_weight(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; k * pad8(n)];
    pack_weight_range(|i| w[i], n, k, 0, &mut out);
    out
}

/// Elements `start..start + out.len()` of [`pack_weight`]'s (K, NP) result, reading the
/// row-major (N, K) weight through `w(index)`: for streaming a weight to the GPU in chunks.
pub fn pack_weight_range(
    w: impl Fn(usize) -> f32,
    n: usize,
    k: usize,
    start: usize,
    out: &mut [f32],
) {
    let np = pad8(n);
    // out[p] with p = kk · NP + row; counters instead of a division per element.
    let (mut kk, mut row) = (start / np, start % np);
    for o in out.iter_mut() {
        *o = if row < n { w(row * k + kk) } else { 0.0 };
        row += 1;
        if row == np {
            row = 0;
            kk += 1;
        }
    }
}

/// [`pack_weight`]'s (K, NP) result produced in contiguous segments of about `max_chunk`
/// elements (whole packed rows), reading the (N, K) weight only in contiguous runs through
/// `read(row, col, out)` = `w[row][col..col + out.len()]` (fast for a memory-mapped F16 file,
/// unlike the strided reads of [`pack_weight_range`]). `emit(offset, values)` receives each
/// segment; offsets are multiples of NP. Generic over the element: `f32` values, or raw f16
/// bits (`u16`) when an F16 file is uploaded to an F16 tensor without conversion.
pub fn pack_weight_segments<T: Copy + Default>(
    mut read: impl FnMut(usize, usize, &mut [T]),
    n: usize,
    k: usize,
    max_chunk: usize,
    mut emit: impl FnMut(usize, &[T]),
) {
    let np = pad8(n);
    let block = (max_chunk / np).clamp(1, k.max(1));
    // PACK_ROWS source rows are read, then transposed together, so each packed row gets
    // contiguous runs of PACK_ROWS values instead of one scattered store per element (the
    // transpose was the loader's hottest loop).
    let mut runs = vec![T::default(); PACK_ROWS * block];
    // Columns row >= n are never written, so they keep the zeros they start with.
    let mut packed = vec![T::default(); block * np];
    for k0 in (0..k).step_by(block) {
        let width = (k0 + block).min(k) - k0;
        let packed = &mut packed[..width * np]; // (width, NP): packed[kk - k0][row]
        for r0 in (0..n).step_by(PACK_ROWS) {
            let rows = (r0 + PACK_ROWS).min(n) - r0;
            for r in 0..rows {
                read(r0 + r, k0, &mut runs[r * width..(r + 1) * width]); // (rows, width)
            }
            for kk in 0..width {
                let dst = &mut packed[kk * np + r0..kk * np + r0 + rows];
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = runs[r * width + kk];
                }
            }
        }
        emit(k0 * np, packed);
    }
}

/// [`pack_weight`] per output block of `layout` ([`WeightLayout::blocks`]), the blocks one
/// after another: the (K, NP) data of a [`WeightLayout::Blocked`] weight (Packed: exactly
/// [`pack_weight`]).
pub fn pack_weight_laid_out(w: &[f32], n: usize, k: usize, layout: WeightLayout) -> Vec<f32> {
    let mut out = Vec::with_capacity(k * pad8(n));
    for (r0, r1) in layout.blocks(n) {
        out.extend(pack_weight(&w[r0 * k..r1 * k], r1 - r0, k));
    }
    out
}

/// [`pack_weight_segments`] for a weight laid out as `layout`: each output block is packed on
/// its own and emitted at its offset (`start · K` for the block of outputs `start..`).
pub fn pack_weight_segments_laid_out<T: Copy + Default>(
    mut read: impl FnMut(usize, usize, &mut [T]),
    n: usize,
    k: usize,
    layout: WeightLayout,
    max_chunk: usize,
    mut emit: impl FnMut(usize, &[T]),
) {
    for (r0, r1) in layout.blocks(n) {
        pack_weight_segments(
            |row, col, out: &mut [T]| read(r0 + row, col, out),
            r1 - r0,
            k,
            max_chunk,
            |offset, values: &[T]| emit(r0 * k + offset, values),
        );
    }
}

/// Source rows (linear) or output channels (conv) transposed together when packing: 16 f32 are
/// one 64-byte cache line of the packed output.
pub(crate) const PACK_ROWS: usize = 16;

impl LinearWeight {
    /// Upload a torch-layout (out_features, in_features) weight and optional bias, Packed (every
    /// kernel reads it).
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        weight: &[f32],
        bias: Option<&[f32]>,
        out_features: usize,
        in_features: usize,
        dtype: DType,
    ) -> Result<Self> {
        let shape = [out_features, in_features];
        Self::upload_laid_out(gpu, name, weight, bias, shape, dtype, WeightLayout::Packed)
    }

    /// [`Self::upload`] laid out as `layout` (`WeightLayout::for_target(&target,
    /// in_features)` is what a model loaded for `target` gets).
    pub fn upload_laid_out(
        gpu: &Gpu,
        name: &str,
        weight: &[f32],
        bias: Option<&[f32]>,
        [out_features, in_features]: [usize; 2],
        dtype: DType,
        layout: WeightLayout,
    ) -> Result<Self> {
        if weight.len() != out_features * in_features {
            return Err(Error::shape(
                name,
                format!(
                    "weight has {} values, expected {out_features}×{in_features}",
                    weight.len()
                ),
            ));
        }
        if let Some(b) = bias.filter(|b| b.len() != out_features) {
            return Err(Error::shape(
                name,
                format!("bias has {} values, expected {out_features}", b.len()),
            ));
        }
        let packed = pack_weight_laid_out(weight, out_features, in_features, layout);
        let weight = Tensor::from_f32(
            gpu,
            &format!("{name}.weight"),
            &[in_features, pad8(out_features)],
            dtype,
            &packed,
        )?;
        let bias = bias
            .map(|b| Tensor::from_f32(gpu, &format!("{name}.bias"), &[out_features], dtype, b))
            .transpose()?;
        Ok(LinearWeight {
            weight,
            bias,
            in_features,
            out_features,
            layout,
        })
    }
}

/// Optional fusions of [`linear`].
#[derive(Clone, Copy, Debug)]
pub struct LinearOptions {
    /// Applied to `x·Wᵀ + b`, before the residual.
    pub activation: Activation,
    /// Added last, same shape as the output.
    pub residual: Option<ValueId>,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            activation: Activation::Identity,
            residual: None,
        }
    }
}

/// Groups of 4 rows that one `linear_rows` invocation walks in turn (WGY in the shader).
const ROW_GROUPS: usize = 8;
/// Most rows that `linear_rows` is used for on CPU targets.
const ROWS_MAX: usize = 512;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    np4: u32,
    has_bias: u32,
    has_residual: u32,
    /// 1: `w` is [`WeightLayout::Blocked`] (read by `linear_subgroup` only).
    blocked: u32,
}

/// `act(x·Wᵀ + b) + residual` for x of shape (…, K) → (…, N). Leading axes are flattened into
/// rows (batches share the weight).
pub fn linear(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    w: &LinearWeight,
    opts: LinearOptions,
) -> Result<ValueId> {
    let shape = g.shape(x)?;
    let k = *shape.last().unwrap_or(&0);
    if k != w.in_features {
        return Err(Error::shape(
            name,
            format!(
                "input {shape:?} has {k} features, the layer takes {}",
                w.in_features
            ),
        ));
    }
    let rows: usize = shape[..shape.len() - 1].iter().product();
    // GPU targets: workgroup-memory tiles while the reduction fits the loop budget.
    // CPU targets: the subgroup kernel (1.5–6× the register-blocked ones on lavapipe,
    // docs/kernels.md) where the adapter's subgroups hold the 8-lane workgroup, K is read as
    // vec4 and there are at least 8 rows. Otherwise `linear_rows` (uniform `src` loads; its loop
    // runs 8·K iterations, so only while that fits the loop budget) for few rows, which
    // measured 1.28× at 154×768×3072 but 0.91× at 8192×320×320 and slowed the tiny test UNet's
    // 16–32-wide linears (a workgroup spans 64 columns); other shapes: `linear`.
    // A Blocked weight (loaded for a CPU target with subgroups) is read by the subgroup kernel
    // alone.
    let blocked = w.layout == WeightLayout::Blocked;
    let tile = if blocked {
        None
    } else {
        matmul_tiled::tile_for(g, "linear_tiled", rows, w.out_features, k)
    };
    let tiled = tile.is_some();
    let subgroup = !tiled
        && matmul_subgroup::use_subgroup(
            &g.target,
            rows,
            k % 4 == 0,
            matmul_subgroup::linear_iterations(rows, k),
            w.layout,
        );
    if blocked && !subgroup {
        return Err(Error::shape(
            name,
            format!(
                "the weight is laid out for the subgroup kernel, which this graph's target \
                 ({}) cannot run for {rows} rows × {k} features (loop budget {})",
                g.target.variant.name(),
                g.target.loop_budget()
            ),
        ));
    }
    let (shader, entry) = match g.target.variant {
        _ if tiled => ("matmul_tiled", "linear_tiled"),
        _ if subgroup => ("matmul_subgroup", "linear_subgroup"),
        Variant::Cpu
            if rows <= ROWS_MAX && w.out_features >= 64 && k * ROW_GROUPS <= LOOP_BUDGET =>
        {
            ("matmul", "linear_rows")
        }
        _ => ("matmul", "linear"),
    };
    if !tiled && !subgroup && k > LOOP_BUDGET {
        return Err(Error::shape(
            name,
            format!("{k} input features exceed the kernel's reduction limit {LOOP_BUDGET}"),
        ));
    }
    let mut out_shape = shape.clone();
    *out_shape.last_mut().unwrap_or(&mut 0) = w.out_features;
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
    let bv = w.bias.as_ref().map(|b| g.constant(b));
    let y = g.intermediate(name, &out_shape, g.dtype)?;
    let np = pad8(w.out_features);
    let p = Params {
        m: to_u32(name, "rows", rows)?,
        n: to_u32(name, "out_features", w.out_features)?,
        k: to_u32(name, "in_features", k)?,
        np4: (np / 4) as u32,
        has_bias: bv.is_some() as u32,
        has_residual: opts.residual.is_some() as u32,
        blocked: blocked as u32,
    };
    // Unused bindings alias `x` (read-only, never read).
    let buffers = vec![
        (1, x),
        (2, wv),
        (3, bv.unwrap_or(x)),
        (4, opts.residual.unwrap_or(x)),
        (5, y),
    ];
    if matches!(opts.activation, Activation::Relu | Activation::Tanh) {
        return Err(Error::invalid(
            name,
            format!(
                "{:?} is not fused into matmul: apply it with an elementwise op",
                opts.activation
            ),
        ));
    }
    let mut kernel = KernelKey::new(shader, entry, g.dtype).with("ACT", opts.activation as u32);
    let workgroups = match tile {
        Some(t) => {
            kernel = t.apply(kernel);
            t.grid(name, rows, np)?
        }
        None if subgroup => {
            kernel = kernel.with("ROWS", matmul_subgroup::rows_per_lane(rows) as u32);
            matmul_subgroup::grid(name, rows, np)?
        }
        None => gemm_grid(name, rows, np)?,
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

/// CPU reference: `act(x·Wᵀ + b) + residual` with torch-layout W (N, K), f64 accumulation.
pub fn reference(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Activation,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let rows = x.len() / k;
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for c in 0..n {
            let dot: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                .sum();
            let v = act.apply((dot + bias.map_or(0.0, |b| b[c] as f64)) as f32);
            y[r * n + c] = v + residual.map_or(0.0, |res| res[r * n + c]);
        }
    }
    y
}
