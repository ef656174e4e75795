//! The packed GPU weights a LoRA may change, recorded while a model loads: `models::layers`
//! reports each Linear / Conv2d tensor it uploads, with the torch-layout weights it was packed
//! from, to the [`Targets`] the loading [`Ctx`] carries (none: nothing recorded). A fused
//! `to_q+to_k+to_v` is one target of three parts.

use std::sync::Mutex;

use crate::gpu::Tensor;
use crate::models::Ctx;
use crate::ops::WeightLayout;

/// One torch-layout weight a packed tensor was built from.
#[derive(Clone, Debug)]
pub struct Part {
    /// Full tensor name in the model's weights (`….to_q.weight`).
    pub weight: String,
    /// torch shape: (out, in) for a Linear, (out, in, 1, 1) for a 1×1 conv used as one,
    /// (cout, cin, kh, kw) for a Conv2d.
    pub shape: Vec<usize>,
}

/// How the parts become the GPU tensor.
#[derive(Clone, Copy, Debug)]
pub enum Packing {
    /// Parts stacked on the output axis, then `matmul::pack_weight_laid_out` (K, NP) in
    /// `layout`; `rows`: only output rows `[start, end)` of the stack (a Linear split past the
    /// binding limit).
    Linear {
        in_features: usize,
        rows: Option<(usize, usize)>,
        layout: WeightLayout,
    },
    /// One part, `conv2d::pack_weight_laid_out` (KH·KW·CIN, NP) in `layout`; `rows`: only
    /// output channels `[start, end)` (a Conv2d split past the binding limit); `inputs`: only
    /// input channels `[start, end)` (a Conv2d over a concatenation, `models::concat_conv`),
    /// packed as a Conv2d of those input channels.
    Conv {
        shape: [usize; 4],
        rows: Option<(usize, usize)>,
        inputs: Option<(usize, usize)>,
        layout: WeightLayout,
    },
}

/// A packed GPU weight and what it was packed from.
#[derive(Clone, Debug)]
pub struct Target {
    pub parts: Vec<Part>,
    pub packing: Packing,
    pub tensor: Tensor,
}

/// The packed weights of one model that a LoRA may change, recorded while it loads.
#[derive(Debug, Default)]
pub struct Targets {
    entries: Mutex<Vec<Target>>,
}

impl Targets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Target>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, target: Target) {
        self.lock().push(target);
    }

    /// The targets recorded so far.
    pub fn snapshot(&self) -> Vec<Target> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every target (before the model is loaded again).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

impl<'a> Ctx<'a> {
    /// This context, recording the Linear/Conv2d weights it uploads into `targets`.
    pub fn with_lora_targets(mut self, targets: &'a Targets) -> Self {
        self.lora_targets = Some(targets);
        self
    }

    /// Records a packed Linear weight built from `parts` (rows `[start, end)` of their stack
    /// when split; no-op without targets).
    pub fn record_linear(
        &self,
        parts: Vec<Part>,
        in_features: usize,
        rows: Option<(usize, usize)>,
        layout: WeightLayout,
        packed: &Tensor,
    ) {
        if let Some(t) = self.lora_targets {
            t.record(Target {
                parts,
                packing: Packing::Linear {
                    in_features,
                    rows,
                    layout,
                },
                tensor: packed.clone(),
            });
        }
    }

    /// Records a packed Conv2d weight (output channels `[start, end)` when split; no-op
    /// without targets).
    pub fn record_conv(
        &self,
        weight: String,
        shape: [usize; 4],
        rows: Option<(usize, usize)>,
        layout: WeightLayout,
        packed: &Tensor,
    ) {
        self.record_conv_inputs(weight, shape, rows, None, layout, packed);
    }

    /// [`Ctx::record_conv`] of a packed weight holding only input channels `inputs`.
    pub fn record_conv_inputs(
        &self,
        weight: String,
        shape: [usize; 4],
        rows: Option<(usize, usize)>,
        inputs: Option<(usize, usize)>,
        layout: WeightLayout,
        packed: &Tensor,
    ) {
        if let Some(t) = self.lora_targets {
            t.record(Target {
                parts: vec![Part {
                    weight,
                    shape: shape.to_vec(),
                }],
                packing: Packing::Conv {
                    shape,
                    rows,
                    inputs,
                    layout,
                },
                tensor: packed.clone(),
            });
        }
    }
}
