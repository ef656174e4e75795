//! `Attention` (diffusers `models/attention_processor.py`), `FeedForward` with GEGLU and
//! `BasicTransformerBlock` (diffusers `models/attention.py`).
//!
//! Self-attention projects q, k and v with one fused Linear and the attention kernel reads the
//! three column ranges in place; cross-attention fuses k and v over the text context.

use super::layers::{self, LayerNorm};
use super::split::{self, Linear};
use super::Ctx;
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::ops::attention::{self as attn_op, AttentionOptions, HeadsOf};
use crate::ops::elementwise;
use crate::ops::group_norm::{self, GroupNorm};
use crate::ops::matmul::LinearOptions;
use crate::weights::WeightsView;

/// How the projections are laid out.
enum Projections {
    /// to_q, to_k, to_v fused: (C → 3·inner).
    SelfAttention { qkv: Linear },
    /// to_q over the hidden states, to_k and to_v fused over the context.
    CrossAttention { q: Linear, kv: Linear },
}

/// Multi-head scaled dot-product attention with output projection `to_out.0`.
pub struct Attention {
    pub name: String,
    pub heads: usize,
    pub dim_head: usize,
    /// The VAE's attention normalises its input first (`group_norm`).
    pub group_norm: Option<GroupNorm>,
    projections: Projections,
    to_out: Linear,
}

/// Construction parameters of [`Attention`] (diffusers' `Attention.__init__` arguments used).
#[derive(Clone, Copy, Debug)]
pub struct AttentionConfig {
    pub query_dim: usize,
    /// Width of the context for cross-attention; None for self-attention.
    pub cross_attention_dim: Option<usize>,
    pub heads: usize,
    pub dim_head: usize,
    /// Bias on to_q/to_k/to_v (the VAE and CLIP have it; the UNet does not).
    pub qkv_bias: bool,
    /// (groups, eps) of an input GroupNorm.
    pub group_norm: Option<(usize, f32)>,
}

impl Attention {
    pub fn load(ctx: Ctx, w: &WeightsView, c: AttentionConfig) -> Result<Self> {
        let inner = c.heads * c.dim_head;
        let projections = match c.cross_attention_dim {
            None => Projections::SelfAttention {
                qkv: layers::fused_linear(
                    ctx,
                    w,
                    &["to_q", "to_k", "to_v"],
                    c.query_dim,
                    inner,
                    c.qkv_bias,
                )?,
            },
            Some(context_dim) => Projections::CrossAttention {
                q: layers::linear(ctx, &w.pp("to_q"), c.query_dim, inner, c.qkv_bias)?,
                kv: layers::fused_linear(
                    ctx,
                    w,
                    &["to_k", "to_v"],
                    context_dim,
                    inner,
                    c.qkv_bias,
                )?,
            },
        };
        Ok(Attention {
            name: w.prefix().to_string(),
            heads: c.heads,
            dim_head: c.dim_head,
            group_norm: c
                .group_norm
                .map(|(groups, eps)| {
                    layers::group_norm(ctx, &w.pp("group_norm"), groups, c.query_dim, eps)
                })
                .transpose()?,
            projections,
            to_out: layers::linear(ctx, &w.pp("to_out").pp(0), inner, c.query_dim, true)?,
        })
    }

    /// x (B, T, C), context (B, S, D) for cross-attention → (B, T, C), plus `residual` if given.
    pub fn forward(
        &self,
        g: &mut Graph,
        x: ValueId,
        context: Option<ValueId>,
        residual: Option<ValueId>,
    ) -> Result<ValueId> {
        let n = &self.name;
        let inner = self.heads * self.dim_head;
        let h = match &self.group_norm {
            Some(norm) => group_norm::group_norm(g, &format!("{n}.group_norm"), x, norm, false)?,
            None => x,
        };
        let none = LinearOptions::default();
        let (q, k, v) = match (&self.projections, context) {
            (Projections::SelfAttention { qkv }, _) => {
                let qkv = split::linear(g, &format!("{n}.to_qkv"), h, qkv, none)?; // (B, T, 3·inner)
                let at = |offset| HeadsOf { value: qkv, offset };
                (at(0), at(inner), at(2 * inner))
            }
            (Projections::CrossAttention { q, kv }, Some(ctx)) => {
                let q = split::linear(g, &format!("{n}.to_q"), h, q, none)?; // (B, T, inner)
                let kv = split::linear(g, &format!("{n}.to_kv"), ctx, kv, none)?; // (B, S, 2·inner)
                (
                    q.into(),
                    HeadsOf {
                        value: kv,
                        offset: 0,
                    },
                    HeadsOf {
                        value: kv,
                        offset: inner,
                    },
                )
            }
            (Projections::CrossAttention { .. }, None) => {
                return Err(crate::Error::shape(n, "cross-attention needs a context"));
            }
        };
        let opts = AttentionOptions {
            heads: self.heads,
            head_dim: self.dim_head,
            scale: None,
            causal: false,
        };
        let a = attn_op::attention(g, &format!("{n}.attention"), q, k, v, opts)?; // (B, T, inner)
        let out = LinearOptions {
            residual,
            ..Default::default()
        };
        split::linear(g, &format!("{n}.to_out.0"), a, &self.to_out, out)
    }
}

/// `FeedForward(dim, activation_fn="geglu")`: net.0 = GEGLU(dim → 4·dim), net.2 = Linear(4·dim → dim).
pub struct FeedForward {
    name: String,
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn load(ctx: Ctx, w: &WeightsView, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            name: w.prefix().to_string(),
            proj: layers::linear(ctx, &w.pp("net.0.proj"), dim, 2 * inner, true)?,
            out: layers::linear(ctx, &w.pp("net.2"), inner, dim, true)?,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: ValueId, residual: ValueId) -> Result<ValueId> {
        let n = &self.name;
        let h = split::linear(
            g,
            &format!("{n}.net.0.proj"),
            x,
            &self.proj,
            LinearOptions::default(),
        )?; // (B, T, 8·dim)
        let h = elementwise::geglu(g, &format!("{n}.net.0"), h)?; // (B, T, 4·dim)
        let opts = LinearOptions {
            residual: Some(residual),
            ..Default::default()
        };
        split::linear(g, &format!("{n}.net.2"), h, &self.out, opts)
    }
}

/// norm1 → self-attention → norm2 → cross-attention → norm3 → feed-forward, each with a residual.
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn load(
        ctx: Ctx,
        w: &WeightsView,
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: usize,
    ) -> Result<Self> {
        let attn = |name: &str, cross| {
            let c = AttentionConfig {
                query_dim: dim,
                cross_attention_dim: cross,
                heads,
                dim_head,
                qkv_bias: false,
                group_norm: None,
            };
            Attention::load(ctx, &w.pp(name), c)
        };
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(ctx, &w.pp("norm1"), dim, 1e-5)?,
            attn1: attn("attn1", None)?,
            norm2: LayerNorm::load(ctx, &w.pp("norm2"), dim, 1e-5)?,
            attn2: attn("attn2", Some(cross_attention_dim))?,
            norm3: LayerNorm::load(ctx, &w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(ctx, &w.pp("ff"), dim)?,
        })
    }

    /// x (B, T, C), context (B, S, D) → (B, T, C).
    pub fn forward(&self, g: &mut Graph, x: ValueId, context: ValueId) -> Result<ValueId> {
        let h = self.norm1.forward(g, x)?;
        let x = self.attn1.forward(g, h, None, Some(x))?;
        let h = self.norm2.forward(g, x)?;
        let x = self.attn2.forward(g, h, Some(context), Some(x))?;
        let h = self.norm3.forward(g, x)?;
        self.ff.forward(g, h, x)
    }
}
