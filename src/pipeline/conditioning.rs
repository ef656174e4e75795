//! Prompt → UNet conditioning, as the model's [`Family`] describes it (diffusers'
//! `encode_prompt` of StableDiffusionPipeline and StableDiffusionXLPipeline).
//!
//! Each distinct text (prompt, and the negative prompt with CFG) is encoded once per text
//! encoder, then repeated for the batch: rows are [negative × batch, prompt × batch] with CFG,
//! else prompt × batch. SDXL concatenates both encoders' `hidden_states[-2]` along channels,
//! takes text_encoder_2's pooled projection as `text_embeds`, and with
//! `force_zeros_for_empty_prompt` an empty negative prompt becomes zero embeddings (diffusers:
//! `negative_prompt=None`).

use super::family::Family;
use super::{GenerateOptions, Pipeline};
use crate::error::{Error, Result};
use crate::graph::Plan;

/// What the UNet gets besides `sample` and `timestep`, one row per UNet batch row.
pub(super) struct Conditioning {
    /// `encoder_hidden_states` (rows, T, cross_attention_dim).
    pub context: Vec<f32>,
    /// SDXL `text_embeds` (rows, P).
    pub text_embeds: Option<Vec<f32>>,
    /// SDXL `time_ids` (rows, 6), f32.
    pub time_ids: Option<Vec<f32>>,
    /// Prompt tokens dropped by the tokenizer's window (the most over the tokenizers).
    pub truncated_tokens: usize,
}

/// One text encoder's output for `n` texts.
struct Encoded {
    /// (n, T, D).
    embeds: Vec<f32>,
    width: usize,
    /// Pooled projection (n, P), for encoders with a projection.
    pooled: Option<Vec<f32>>,
}

impl Pipeline {
    /// Encode `texts` with text encoder `which` (0: `text_encoder`, 1: `text_encoder_2`);
    /// `clip_skip` applies to the last text (the prompt) only, as in diffusers.
    async fn run_text_encoder(
        &mut self,
        which: usize,
        texts: &[&str],
        clip_skip: Option<usize>,
    ) -> Result<(Encoded, usize)> {
        let family = self.family;
        let (tokenizer, encoder) = match which {
            0 => (&self.tokenizer, &self.text_encoder),
            _ => match (&self.tokenizer_2, &self.text_encoder_2) {
                (Some(t), Some(e)) => (t, e),
                _ => return Err(Error::invalid("text_encoder_2", "this model has none")),
            },
        };
        let mut ids = Vec::new();
        let mut truncated = 0;
        for text in texts {
            let t = tokenizer.encode(text)?;
            truncated = t.truncated; // the last text is the prompt: its truncation is reported
            ids.extend(t.ids);
        }
        let rows = texts.len();
        let embeds_in = encoder.embed_tokens(&ids)?; // (rows, T, D)
        let layers = encoder.config.num_hidden_layers;
        let mut states = vec![family.prompt_embeds(layers, None)?];
        if clip_skip.is_some() {
            states.push(family.prompt_embeds(layers, clip_skip)?);
        }
        let key = (which, rows, clip_skip);
        if !self.plans.text.contains_key(&key) {
            let g = encoder.prompt_graph(self.dtype, rows, &states)?;
            self.plans.text.insert(key, Plan::new(&self.gpu, g)?);
        }
        let plan = &self.plans.text[&key];
        plan.write_input("inputs_embeds", &embeds_in)?;
        plan.run()?;
        let mut embeds = plan.read_output_async("prompt_embeds.0").await?; // (rows, T, D)
        if clip_skip.is_some() {
            // The prompt's row (the last) from the clip-skipped state.
            let skipped = plan.read_output_async("prompt_embeds.1").await?;
            let row = embeds.len() / rows;
            embeds[(rows - 1) * row..].copy_from_slice(&skipped[(rows - 1) * row..]);
        }
        let pooled = if encoder.has_projection() {
            let projected = plan.read_output_async("projected").await?;
            Some(encoder.pool(&ids, &projected))
        } else {
            None
        };
        let width = encoder.config.hidden_size;
        Ok((
            Encoded {
                embeds,
                width,
                pooled,
            },
            truncated,
        ))
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
        let encoders = if xl { 2 } else { 1 };
        let mut outputs = Vec::with_capacity(encoders);
        let mut truncated_tokens = 0;
        for which in 0..encoders {
            let (out, truncated) = self
                .run_text_encoder(which, &texts, options.clip_skip)
                .await?;
            truncated_tokens = truncated_tokens.max(truncated);
            outputs.push(out);
        }
        let tokens = self.tokenizer.max_length();
        let total_width: usize = outputs.iter().map(|o| o.width).sum();

        // Per distinct text: its context (T, ΣD), encoders side by side on the channel axis.
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
            truncated_tokens,
        })
    }
}
