//! Prompt → UNet conditioning, as the model's [`Family`] describes it (diffusers'
//! `encode_prompt` of StableDiffusionPipeline and StableDiffusionXLPipeline).
//!
//! Each distinct text (prompt, and the negative prompt with CFG) is split into weighted
//! 77-token chunks ([`super::prompt_weights`], A1111's long prompts and emphasis; both texts
//! padded to the same chunk count), encoded once per text encoder with the chunks
//! concatenated on the sequence axis, then repeated for the batch: rows are [negative × batch, prompt × batch] with CFG,
//! else prompt × batch. SDXL concatenates both encoders' `hidden_states[-2]` along channels,
//! takes text_encoder_2's pooled projection as `text_embeds`, and with
//! `force_zeros_for_empty_prompt` an empty negative prompt becomes zero embeddings (diffusers:
//! `negative_prompt=None`).

use super::family::Family;
use super::prompt_weights::{
    apply_emphasis, pad_to_common_length, weighted_prompt, WeightedChunk, WeightedPrompt,
};
use super::{GenerateOptions, Pipeline};
use crate::error::{Error, Result};
use crate::graph::Plan;
use crate::tokenizer::ClipTokenizer;

/// What the UNet gets besides `sample` and `timestep`, one row per UNet batch row.
pub struct Conditioning {
    /// `encoder_hidden_states` (rows, context_len, cross_attention_dim).
    pub context: Vec<f32>,
    /// Tokens per row: 77 × the number of prompt chunks.
    pub context_len: usize,
    /// SDXL `text_embeds` (rows, P).
    pub text_embeds: Option<Vec<f32>>,
    /// SDXL `time_ids` (rows, 6), f32.
    pub time_ids: Option<Vec<f32>>,
    /// Prompt tokens dropped with chunking off (the most over the tokenizers).
    pub truncated_tokens: usize,
}

/// One text encoder's output for `n` texts of `c` chunks each.
struct Encoded {
    /// (n, c·T, D): each text's chunks concatenated on the sequence axis.
    embeds: Vec<f32>,
    width: usize,
    /// Pooled projection of each text's first chunk (n, P), for encoders with a projection.
    pooled: Option<Vec<f32>>,
}

impl Pipeline {
    /// Encode `texts` (each as the same number of chunks) with text encoder `which` (0:
    /// `text_encoder`, 1: `text_encoder_2`); `clip_skip` applies to the last text (the prompt)
    /// only, as in diffusers. Emphasis is applied to each chunk's hidden states.
    async fn run_text_encoder(
        &mut self,
        which: usize,
        texts: &[WeightedPrompt],
        clip_skip: Option<usize>,
    ) -> Result<Encoded> {
        let family = self.family;
        let encoder = match which {
            0 => &self.text_encoder,
            _ => self
                .text_encoder_2
                .as_ref()
                .ok_or_else(|| Error::invalid("text_encoder_2", "this model has none"))?,
        };
        let chunks: Vec<&WeightedChunk> = texts.iter().flat_map(|t| &t.chunks).collect();
        let ids: Vec<u32> = chunks.iter().flat_map(|c| c.ids.iter().copied()).collect();
        let rows = chunks.len();
        let per_text = rows / texts.len();
        let embeds_in = encoder.embed_tokens(&ids)?; // (rows, T, D)
        let layers = encoder.config.num_hidden_layers;
        let mut states = vec![family.prompt_embeds(layers, None)?];
        if clip_skip.is_some() {
            states.push(family.prompt_embeds(layers, clip_skip)?);
        }
        let key = (which, rows, clip_skip);
        if !self.plans.text.contains_key(&key) {
            let g = crate::autotune::tuned_graph(&self.gpu, || {
                encoder.prompt_graph(self.text_dtype, rows, &states)
            })?;
            self.plans.text.insert(key, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.text[&key];
        plan.write_input("inputs_embeds", &embeds_in)?;
        plan.run()?;
        let mut embeds = plan.read_output_async("prompt_embeds.0").await?; // (rows, T, D)
        let row = embeds.len() / rows;
        if clip_skip.is_some() {
            // The prompt's rows (the last text's chunks) from the clip-skipped state.
            let skipped = plan.read_output_async("prompt_embeds.1").await?;
            let from = (rows - per_text) * row;
            embeds[from..].copy_from_slice(&skipped[from..]);
        }
        for (z, chunk) in embeds.chunks_mut(row).zip(&chunks) {
            apply_emphasis(z, &chunk.weights); // (T, D)
        }
        let pooled = if encoder.has_projection() {
            // A1111: the pooled output of each text's first chunk.
            let projected = plan.read_output_async("projected").await?;
            let all = encoder.pool(&ids, &projected); // (rows, P)
            let p = all.len() / rows;
            Some(
                (0..texts.len())
                    .flat_map(|k| {
                        all[k * per_text * p..(k * per_text + 1) * p]
                            .iter()
                            .copied()
                    })
                    .collect(),
            )
        } else {
            None
        };
        Ok(Encoded {
            embeds,
            width: encoder.config.hidden_size,
            pooled,
        })
    }

    /// The UNet conditioning for `options` at an image of `height` × `width`.
    pub(super) async fn encode_prompt(
        &mut self,
        options: &GenerateOptions,
        height: usize,
        width: usize,
    ) -> Result<Conditioning> {
        let cfg = options.do_cfg();
        let xl = self.family == Family::StableDiffusionXL;
        let zero_negative =
            cfg && xl && self.force_zeros_for_empty_prompt && options.negative_prompt.is_empty();
        // Distinct texts to encode: [negative (unless zeroed), prompt].
        let mut texts: Vec<&str> = Vec::new();
        if cfg && !zero_negative {
            texts.push(&options.negative_prompt);
        }
        texts.push(&options.prompt);
        let mode = options.prompt_mode();
        let tokenizers: Vec<&ClipTokenizer> = if xl {
            let second = self
                .tokenizer_2
                .as_ref()
                .ok_or_else(|| Error::invalid("tokenizer_2", "this SDXL model has none"))?;
            vec![&self.tokenizer, second]
        } else {
            vec![&self.tokenizer]
        };
        let chunk_len = self.tokenizer.max_length();
        let mut prompts = Vec::with_capacity(tokenizers.len());
        for tokenizer in &tokenizers {
            if tokenizer.max_length() != chunk_len {
                return Err(Error::invalid(
                    "tokenizer_2",
                    format!(
                        "model_max_length {} differs from the first tokenizer's {chunk_len}",
                        tokenizer.max_length()
                    ),
                ));
            }
            let encoded = texts
                .iter()
                .map(|text| weighted_prompt(tokenizer, text, mode))
                .collect::<Result<Vec<_>>>()?;
            prompts.push(encoded);
        }
        // Negative and prompt (and both encoders) share one chunk count.
        let chunks = prompts
            .iter()
            .flatten()
            .map(|p| p.chunks.len())
            .max()
            .unwrap_or(1);
        for (tokenizer, encoded) in tokenizers.iter().zip(&mut prompts) {
            pad_to_common_length(tokenizer, encoded, chunks);
        }
        let truncated_tokens = prompts
            .iter()
            .filter_map(|p| p.last().map(|prompt| prompt.truncated))
            .max()
            .unwrap_or(0);
        let mut outputs = Vec::with_capacity(prompts.len());
        for (which, encoded) in prompts.iter().enumerate() {
            outputs.push(
                self.run_text_encoder(which, encoded, options.clip_skip)
                    .await?,
            );
        }
        let tokens = chunks * chunk_len;
        let total_width: usize = outputs.iter().map(|o| o.width).sum();

        // Per distinct text: its context (tokens, ΣD), encoders side by side on the channel axis.
        let per_text: Vec<Vec<f32>> = (0..texts.len())
            .map(|k| {
                let mut ctx = Vec::with_capacity(tokens * total_width);
                for t in 0..tokens {
                    for o in &outputs {
                        let start = (k * tokens + t) * o.width;
                        ctx.extend_from_slice(&o.embeds[start..start + o.width]);
                    }
                }
                ctx
            })
            .collect();
        let pooled = outputs.iter().rev().find_map(|o| o.pooled.as_ref());
        let pooled_width = pooled.map_or(0, |p| p.len() / texts.len());
        let pooled_of = |k: usize| -> Vec<f32> {
            pooled.map_or_else(Vec::new, |p| {
                p[k * pooled_width..(k + 1) * pooled_width].to_vec()
            })
        };

        // Rows: [negative × batch, prompt × batch] with CFG, else prompt × batch.
        let b = options.batch;
        let positive = texts.len() - 1;
        let mut context = Vec::with_capacity((if cfg { 2 } else { 1 }) * b * per_text[0].len());
        let mut text_embeds = Vec::new();
        if cfg {
            for _ in 0..b {
                if zero_negative {
                    context.extend(std::iter::repeat_n(0.0, tokens * total_width));
                    text_embeds.extend(std::iter::repeat_n(0.0, pooled_width));
                } else {
                    context.extend_from_slice(&per_text[0]);
                    text_embeds.extend(pooled_of(0));
                }
            }
        }
        for _ in 0..b {
            context.extend_from_slice(&per_text[positive]);
            text_embeds.extend(pooled_of(positive));
        }
        let rows = if cfg { 2 * b } else { b };
        let (text_embeds, time_ids) = if self.family.has_time_ids() {
            if pooled.is_none() {
                return Err(Error::invalid(
                    "text_encoder_2",
                    "has no text_projection: SDXL needs its pooled text_embeds",
                ));
            }
            // diffusers uses the same ids for the negative rows unless negative_* sizes are given.
            let ids = options.size_conditioning.time_ids(height, width);
            (Some(text_embeds), Some(ids.repeat(rows)))
        } else {
            (None, None)
        };
        Ok(Conditioning {
            context,
            text_embeds,
            time_ids,
            context_len: tokens,
            truncated_tokens,
        })
    }
}
