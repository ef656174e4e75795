//! `CLIPTextModel` (transformers `models/clip/modeling_clip.py`): the text encoder of SD1.x/SD2.x,
//! and `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`) when the weights have
//! `text_projection.weight`.
//!
//! The token-embedding gather runs on the CPU: the table (49408 × 768 f32 = 145 MiB for SD1.x,
//! 49408 × 1024 = 193 MiB for SD2.x) exceeds the 128 MiB storage-binding limit of many
//! adapters, and gathering 77 rows costs nothing. The table is kept in the file's dtype (half
//! the memory for F16 checkpoints) and rows are converted when gathered. The graph starts at
//! `inputs_embeds` (B, T, D) and adds the position embeddings.
//!
//! The pooled output (`text_embeds` of the projection model) is the final-layer-normed state at
//! the EOS token, projected. The graph projects every token (T × D × P multiply-adds: nothing next
//! to the encoder) and the CPU picks the EOS row, a data-dependent gather like the token lookup.

use std::path::Path;

use super::config::{read_config, ClipTextConfig};
use super::layers::{self, LayerNorm};
use super::split::{self, Linear};
use super::Ctx;
use crate::error::{Error, Result};
use crate::gpu::{DType, Tensor};
use crate::graph::{Graph, ValueId};
use crate::ops::attention::{self as attn_op, AttentionOptions, HeadsOf};
use crate::ops::elementwise::{self, Activation};
use crate::ops::layer_norm;
use crate::ops::matmul::LinearOptions;
use crate::weights::{to_f32, FileDtype, Weights, WeightsView};

/// One pre-norm encoder layer: causal self-attention and an MLP, each with a residual.
struct ClipEncoderLayer {
    name: String,
    heads: usize,
    layer_norm1: LayerNorm,
    qkv: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl ClipEncoderLayer {
    fn load(ctx: Ctx, w: &WeightsView, c: &ClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        let attn = w.pp("self_attn");
        Ok(ClipEncoderLayer {
            name: w.prefix().to_string(),
            heads: c.num_attention_heads,
            layer_norm1: LayerNorm::load(ctx, &w.pp("layer_norm1"), d, c.layer_norm_eps)?,
            qkv: layers::fused_linear(ctx, &attn, &["q_proj", "k_proj", "v_proj"], d, d, true)?,
            out_proj: layers::linear(ctx, &attn.pp("out_proj"), d, d, true)?,
            layer_norm2: LayerNorm::load(ctx, &w.pp("layer_norm2"), d, c.layer_norm_eps)?,
            fc1: layers::linear(ctx, &w.pp("mlp.fc1"), d, c.intermediate_size, true)?,
            fc2: layers::linear(ctx, &w.pp("mlp.fc2"), c.intermediate_size, d, true)?,
            activation: Activation::from_name(&c.hidden_act)?,
        })
    }

    /// x (B, T, D) → (B, T, D).
    fn forward(&self, g: &mut Graph, x: ValueId) -> Result<ValueId> {
        let n = &self.name;
        let d = g.shape(x)?[2];
        let none = LinearOptions::default();
        let h = self.layer_norm1.forward(g, x)?;
        let qkv = split::linear(g, &format!("{n}.self_attn.qkv_proj"), h, &self.qkv, none)?; // (B, T, 3D)
        let at = |offset| HeadsOf { value: qkv, offset };
        let opts = AttentionOptions {
            heads: self.heads,
            head_dim: d / self.heads,
            scale: None,
            causal: true,
        };
        let a = attn_op::attention(g, &format!("{n}.self_attn"), at(0), at(d), at(2 * d), opts)?;
        let residual = LinearOptions {
            residual: Some(x),
            ..none
        };
        let x = split::linear(
            g,
            &format!("{n}.self_attn.out_proj"),
            a,
            &self.out_proj,
            residual,
        )?;
        let h = self.layer_norm2.forward(g, x)?;
        let fused = LinearOptions {
            activation: self.activation,
            residual: None,
        };
        let h = split::linear(g, &format!("{n}.mlp.fc1"), h, &self.fc1, fused)?; // (B, T, I)
        split::linear(
            g,
            &format!("{n}.mlp.fc2"),
            h,
            &self.fc2,
            LinearOptions {
                residual: Some(x),
                ..none
            },
        )
    }
}

/// Outputs of [`ClipTextModel::forward`].
pub struct ClipTextOutput {
    /// After the final layer norm (B, T, D).
    pub last_hidden_state: ValueId,
    /// The embeddings and each layer's output, before the final layer norm (transformers'
    /// `hidden_states`; SD2-style "clip skip" uses `hidden_states[L − k]`).
    pub hidden_states: Vec<ValueId>,
    /// `text_projection(last_hidden_state)` at every token (B, T, P), for models with a
    /// projection; [`ClipTextModel::pool`] picks the EOS rows (`text_embeds`).
    pub projected: Option<ValueId>,
}

/// Which state a pipeline takes as its prompt embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptEmbeds {
    /// After the final layer norm (StableDiffusionPipeline).
    LastHiddenState,
    /// `hidden_states[i]`, before any final layer norm (SDXL: i = L − 1, i.e. `hidden_states[-2]`).
    HiddenState(usize),
    /// `final_layer_norm(hidden_states[i])` (StableDiffusionPipeline with `clip_skip`).
    NormedHiddenState(usize),
}

/// A (rows, D) table kept on the host as the file stored it (F32, F16 or BF16 bytes).
struct HostTable {
    dtype: FileDtype,
    bytes: Vec<u8>,
}

impl Default for HostTable {
    /// Empty (placeholder models).
    fn default() -> Self {
        HostTable {
            dtype: FileDtype::F32,
            bytes: Vec::new(),
        }
    }
}

impl HostTable {
    /// Row `i` of width `d` as f32, or `None` past the end.
    fn row(&self, i: usize, d: usize) -> Option<Vec<f32>> {
        let size = self.dtype.bits() / 8;
        let bytes = self.bytes.get(i * d * size..(i + 1) * d * size)?;
        to_f32(self.dtype, bytes).ok()
    }
}

pub struct ClipTextModel {
    pub config: ClipTextConfig,
    /// What its graphs are built for (from the load context).
    pub target: crate::gpu::Target,
    /// (vocab, D) on the CPU, in the file's dtype.
    token_embedding: HostTable,
    /// (max_positions, D).
    position_embedding: Tensor,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    /// `text_projection` (D → projection_dim, no bias) of `CLIPTextModelWithProjection`.
    text_projection: Option<Linear>,
}

impl ClipTextModel {
    /// Load `dir/config.json` and the weights in `dir`; every tensor must be used.
    pub fn from_dir(ctx: Ctx, dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: ClipTextConfig = read_config(&config_path)?;
        config.validate(&config_path)?;
        let weights = Weights::open(dir)?;
        let model = Self::load(ctx, &weights.root(), config)?;
        weights.finish()?;
        Ok(model)
    }

    /// Weights with or without the `text_model.` prefix (hub SD1.x files have it; transformers 5
    /// writes without).
    pub fn load(ctx: Ctx, root: &WeightsView, config: ClipTextConfig) -> Result<Self> {
        let with_projection = root.contains("text_projection.weight");
        Self::load_with_projection(ctx, root, config, with_projection)
    }

    /// [`Self::load`], saying whether `text_projection` is there (`CLIPTextModelWithProjection`):
    /// for placeholder weights, where nothing can be detected.
    pub fn load_with_projection(
        ctx: Ctx,
        root: &WeightsView,
        config: ClipTextConfig,
        with_projection: bool,
    ) -> Result<Self> {
        let w = if root.contains("text_model.embeddings.token_embedding.weight") {
            root.pp("text_model")
        } else {
            root.clone()
        };
        let d = config.hidden_size;
        let emb = w.pp("embeddings");
        emb.skip("position_ids"); // a buffer some checkpoints carry
        let token_embedding = if ctx.placeholders {
            HostTable::default()
        } else {
            let data = emb
                .pp("token_embedding")
                .data("weight", &[config.vocab_size, d])?;
            ctx.loaded(&data);
            HostTable {
                dtype: data.dtype,
                bytes: data.bytes().to_vec(),
            }
        };
        let position_embedding = ctx.tensor(
            &emb.pp("position_embedding"),
            "weight",
            &[config.max_position_embeddings, d],
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(ctx, &w.pp("encoder.layers").pp(i), &config))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm =
            LayerNorm::load(ctx, &w.pp("final_layer_norm"), d, config.layer_norm_eps)?;
        let text_projection = with_projection
            .then(|| {
                layers::linear(
                    ctx,
                    &root.pp("text_projection"),
                    d,
                    config.projection_dim,
                    false,
                )
            })
            .transpose()?;
        Ok(ClipTextModel {
            target: ctx.target.clone(),
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection,
            config,
        })
    }

    /// Whether this is a `CLIPTextModelWithProjection` (pooled `text_embeds` available).
    pub fn has_projection(&self) -> bool {
        self.text_projection.is_some()
    }

    /// Token position of the pooled output in each row of `ids` (rows of T): transformers'
    /// rule — the largest id when `eos_token_id` is the legacy 2 (the real EOS 49407 is the
    /// largest id), else the first `eos_token_id` (position 0 when a row has none, as argmax).
    pub fn eos_positions(&self, ids: &[u32]) -> Vec<usize> {
        let t = self.config.max_position_embeddings;
        ids.chunks(t)
            .map(|row| {
                if self.config.eos_token_id == 2 {
                    // argmax: the first position of the largest value
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&i| i == max).unwrap_or(0)
                } else {
                    row.iter()
                        .position(|&i| i == self.config.eos_token_id)
                        .unwrap_or(0)
                }
            })
            .collect()
    }

    /// `text_embeds` (B, P): the rows of `projected` (B, T, P) at each row's EOS position.
    pub fn pool(&self, ids: &[u32], projected: &[f32]) -> Vec<f32> {
        let t = self.config.max_position_embeddings;
        let p = self.config.projection_dim;
        self.eos_positions(ids)
            .iter()
            .enumerate()
            .flat_map(|(b, &pos)| {
                let start = (b * t + pos) * p;
                projected[start..start + p].iter().copied()
            })
            .collect()
    }

    /// Gather token embeddings on the CPU: ids (B·T) → (B·T·D).
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.config.hidden_size;
        let mut out = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let row = self.token_embedding.row(id as usize, d).ok_or_else(|| {
                Error::invalid(
                    "token id",
                    format!(
                        "{id} is outside the vocabulary of {}",
                        self.config.vocab_size
                    ),
                )
            })?;
            out.extend_from_slice(&row);
        }
        Ok(out)
    }

    /// inputs_embeds (B, T, D) → outputs; T ≤ max_position_embeddings.
    pub fn forward(&self, g: &mut Graph, inputs_embeds: ValueId) -> Result<ClipTextOutput> {
        let shape = g.shape(inputs_embeds)?;
        let (t, d) = (shape[1], shape[2]);
        if d != self.config.hidden_size {
            return Err(Error::shape(
                "text_model.embeddings",
                format!("inputs {shape:?} are not {} wide", self.config.hidden_size),
            ));
        }
        if t != self.config.max_position_embeddings {
            return Err(Error::shape(
                "text_model.embeddings",
                format!(
                    "sequence length {t} must be {} (prompts are padded)",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let positions = g.constant(&self.position_embedding); // (T, D), broadcast over the batch
        let mut x = elementwise::add(g, "text_model.embeddings", inputs_embeds, positions)?; // (B, T, D)
        let mut hidden_states = vec![x];
        for layer in &self.layers {
            x = layer.forward(g, x)?;
            hidden_states.push(x);
        }
        let last_hidden_state = self.final_layer_norm.forward(g, x)?;
        let projected = self
            .text_projection
            .as_ref()
            .map(|proj| {
                split::linear(
                    g,
                    "text_projection",
                    last_hidden_state,
                    proj,
                    LinearOptions::default(),
                ) // (B, T, P)
            })
            .transpose()?;
        Ok(ClipTextOutput {
            last_hidden_state,
            hidden_states,
            projected,
        })
    }

    /// A graph with input `inputs_embeds` (B, T, D) and the encoder in it, outputs not yet set.
    fn forward_graph(&self, dtype: DType, batch: usize) -> Result<(Graph, ClipTextOutput)> {
        let mut g = Graph::for_target(dtype, &self.target);
        let x = g.input(
            "inputs_embeds",
            &[
                batch,
                self.config.max_position_embeddings,
                self.config.hidden_size,
            ],
        )?;
        let out = self.forward(&mut g, x)?;
        Ok((g, out))
    }

    /// A pipeline's graph: input `inputs_embeds` (B, T, D), outputs `prompt_embeds.{k}`
    /// (B, T, D) for each state in `states` and, for a projection model, `projected` (B, T, P)
    /// (see [`Self::pool`]).
    pub fn prompt_graph(
        &self,
        dtype: DType,
        batch: usize,
        states: &[PromptEmbeds],
    ) -> Result<Graph> {
        let (mut g, out) = self.forward_graph(dtype, batch)?;
        let hidden = |i: usize| {
            out.hidden_states.get(i).copied().ok_or_else(|| {
                Error::shape(
                    "text_model",
                    format!(
                        "hidden_states[{i}] does not exist ({} layers)",
                        self.layers.len()
                    ),
                )
            })
        };
        for (k, which) in states.iter().enumerate() {
            let embeds = match *which {
                PromptEmbeds::LastHiddenState => out.last_hidden_state,
                PromptEmbeds::HiddenState(i) => hidden(i)?,
                PromptEmbeds::NormedHiddenState(i) => {
                    let ln = &self.final_layer_norm;
                    layer_norm::layer_norm(
                        &mut g,
                        &format!("{}.hidden_states.{i}", ln.name),
                        hidden(i)?,
                        ln.eps,
                        &ln.weight,
                        &ln.bias,
                    )? // (B, T, D)
                }
            };
            g.output(&format!("prompt_embeds.{k}"), embeds)?;
        }
        if let Some(p) = out.projected {
            g.output("projected", p)?;
        }
        Ok(g)
    }

    /// Graph with input `inputs_embeds` (B, T, D) and outputs `last_hidden_state` and, with
    /// `all_hidden_states`, `hidden_states.{i}`.
    pub fn graph(&self, dtype: DType, batch: usize, all_hidden_states: bool) -> Result<Graph> {
        let (mut g, out) = self.forward_graph(dtype, batch)?;
        g.output("last_hidden_state", out.last_hidden_state)?;
        if all_hidden_states {
            for (i, &h) in out.hidden_states.iter().enumerate() {
                g.output(&format!("hidden_states.{i}"), h)?;
            }
        }
        if let Some(p) = out.projected {
            g.output("projected", p)?;
        }
        Ok(g)
    }
}
