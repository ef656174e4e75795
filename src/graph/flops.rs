//! FLOPs of a graph, counted per dispatch from its kernel (`shader::entry`) and the shapes of
//! the values it binds: nothing is measured and no op builder has to declare anything.
//!
//! Convention (docs/profiling.md), one multiply-add = 2 FLOPs:
//!
//! | kernel | class | FLOPs |
//! |---|---|---|
//! | `matmul*::*` (linear: `matmul`, `matmul_subgroup`, `matmul_tiled`) | matmul | 2·M·N·K: 2 · numel(output) · K (K = last axis of the input) |
//! | `conv2d*::*` (`conv2d`, `conv2d_subgroup`, `conv2d_tiled`) | conv | 2·B·Ho·Wo·Cout·(kh·kw·Cin): 2 · numel(output) · rows of the packed weight |
//! | `attention::partial*`, `attention_lanes::partial` | attention | 4·B·Tq·Tk·(H·D): QKᵀ and PV, the dispatch's queries only |
//! | `group_norm`, `layer_norm`, `softmax` | norm | 7 per element (stats 3, normalise 4); softmax 5 |
//! | `elementwise`, `attention::combine`, `timestep_embedding` | elementwise | 1 per element (combine: 3 per partial) |
//! | `concat`, `upsample`, unknown kernels | movement | 0 |
//!
//! matmul + conv + attention ("tensor FLOPs") is what PyTorch's `FlopCounterMode` counts for
//! diffusers' UNet (mm/addmm, convolution, scaled_dot_product_attention; bias adds and
//! softmax not counted): fused epilogues (bias, residual, activation) are not counted here
//! either, and causal attention counts all Tq·Tk pairs, as torch does. Transcendentals
//! (exp, erf, sin) count as one FLOP.

use serde::Serialize;

use super::{Dispatch, Graph, Value};

/// What kind of work a dispatch does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpClass {
    Matmul,
    Conv,
    Attention,
    Norm,
    Elementwise,
    /// Copies and layout changes (no arithmetic).
    Movement,
}

impl OpClass {
    /// matmul, conv and attention: the FLOPs PyTorch's flop counter reports.
    pub fn is_tensor(self) -> bool {
        matches!(self, OpClass::Matmul | OpClass::Conv | OpClass::Attention)
    }
}

/// FLOPs of one dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchFlops {
    pub class: OpClass,
    pub flops: u64,
}

/// A graph's FLOPs, summed by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlopTotals {
    pub matmul: u64,
    pub conv: u64,
    pub attention: u64,
    pub norm: u64,
    pub elementwise: u64,
}

impl FlopTotals {
    /// matmul + conv + attention (see the module docs).
    pub fn tensor(&self) -> u64 {
        self.matmul + self.conv + self.attention
    }

    /// Every counted FLOP.
    pub fn total(&self) -> u64 {
        self.tensor() + self.norm + self.elementwise
    }

    fn add(&mut self, f: DispatchFlops) {
        let slot = match f.class {
            OpClass::Matmul => &mut self.matmul,
            OpClass::Conv => &mut self.conv,
            OpClass::Attention => &mut self.attention,
            OpClass::Norm => &mut self.norm,
            OpClass::Elementwise => &mut self.elementwise,
            OpClass::Movement => return,
        };
        *slot += f.flops;
    }
}

impl Graph {
    /// FLOPs of every dispatch, in order (see the module docs for the convention).
    pub fn dispatch_flops(&self) -> Vec<DispatchFlops> {
        self.dispatches
            .iter()
            .map(|d| dispatch_flops(&self.values, d))
            .collect()
    }

    /// The graph's FLOPs by class.
    pub fn flops(&self) -> FlopTotals {
        let mut t = FlopTotals::default();
        for f in self.dispatch_flops() {
            t.add(f);
        }
        t
    }
}

/// FLOPs of dispatch `d` whose value ids index `values`.
pub fn dispatch_flops(values: &[Value], d: &Dispatch) -> DispatchFlops {
    let bound = |binding: u32| {
        d.buffers
            .iter()
            .find(|(b, _)| *b == binding)
            .and_then(|(_, v)| values.get(v.0))
    };
    // Elements of the largest activation bound (weights excluded): the output or the input.
    let elements = d
        .buffers
        .iter()
        .filter_map(|(_, v)| values.get(v.0))
        .filter(|v| !matches!(v.kind, super::ValueKind::Constant(_)))
        .map(Value::numel)
        .max()
        .unwrap_or(0) as u64;
    let last = |v: Option<&Value>| v.and_then(|v| v.shape.last().copied()).unwrap_or(0) as u64;
    let out = |binding| bound(binding).map_or(0, Value::numel) as u64;
    let k = &d.kernel;
    let (class, flops) = match (k.shader, k.entry) {
        // (1) x (…, K), (5) y (…, N).
        ("matmul" | "matmul_subgroup" | "matmul_tiled", _) => {
            (OpClass::Matmul, 2 * out(5) * last(bound(1)))
        }
        // (2) packed weight (kh·kw·Cin, pad8(Cout)), (5) y (B, Ho, Wo, Cout).
        ("conv2d" | "conv2d_subgroup" | "conv2d_tiled", _) => {
            let taps = bound(2).and_then(|w| w.shape.first().copied()).unwrap_or(0) as u64;
            (OpClass::Conv, 2 * out(5) * taps)
        }
        ("attention", "combine") => (OpClass::Elementwise, 3 * out(6)),
        // (2) k (B, Tk, ·) (`attention_lanes`: (7), k as vec4s), (4) y (B, Tq, H·D); a dispatch
        // of a query chunk is labelled `…[q0..q1]`.
        ("attention" | "attention_lanes", _) => {
            let (Some(k), Some(y)) = (bound(2).or_else(|| bound(7)), bound(4)) else {
                return DispatchFlops {
                    class: OpClass::Attention,
                    flops: 0,
                };
            };
            let (b, tq, width) = match y.shape[..] {
                [b, tq, width] => (b as u64, tq as u64, width as u64),
                _ => (0, 0, 0),
            };
            let tq = query_chunk(&d.label).unwrap_or(tq);
            let tk = k.shape.get(1).copied().unwrap_or(0) as u64;
            (OpClass::Attention, 4 * b * tq * tk * width)
        }
        // The statistics entries of every reduction (workgroup, subgroup, serial) alike.
        ("group_norm" | "group_norm_subgroup", "partial_stats" | "partial_stats_serial") => {
            (OpClass::Norm, 3 * elements)
        }
        ("group_norm", "apply") => (OpClass::Norm, 4 * elements),
        ("group_norm" | "group_norm_subgroup", _) => (OpClass::Norm, 0),
        ("layer_norm", _) => (OpClass::Norm, 7 * elements),
        ("softmax", _) => (OpClass::Norm, 5 * elements),
        ("elementwise" | "timestep_embedding", _) => (OpClass::Elementwise, elements),
        _ => (OpClass::Movement, 0),
    };
    DispatchFlops { class, flops }
}

/// Queries of a chunked attention dispatch from its label suffix `[q0..q1]`.
fn query_chunk(label: &str) -> Option<u64> {
    let inner = label.strip_suffix(']')?;
    let (_, range) = inner.rsplit_once('[')?;
    let (a, b) = range.split_once("..")?;
    Some(b.parse::<u64>().ok()?.saturating_sub(a.parse().ok()?))
}

/// The bound values' shapes, `binding:[d0,d1,…]`, each value once (unused bindings alias the
/// first input): for traces.
pub fn bound_shapes(values: &[Value], d: &Dispatch) -> String {
    let mut seen = Vec::new();
    let mut parts = Vec::new();
    for &(binding, id) in &d.buffers {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        if let Some(v) = values.get(id.0) {
            let dims: Vec<String> = v.shape.iter().map(usize::to_string).collect();
            parts.push(format!("{binding}:[{}]", dims.join(",")));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::query_chunk;

    #[test]
    fn query_chunks_from_labels() {
        assert_eq!(query_chunk("mid_block.attn.partial[64..192]"), Some(128));
        assert_eq!(query_chunk("mid_block.attn"), None);
        assert_eq!(query_chunk("x[a..b]"), None);
    }
}
