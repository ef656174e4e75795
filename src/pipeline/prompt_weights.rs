//! Long prompts and emphasis, AUTOMATIC1111's way (`modules/sd_hijack_clip.py`,
//! `tokenize_line`, and the "Original" emphasis of `modules/sd_emphasis.py`); see
//! `docs/prompts.md`.
//!
//! 1. The prompt is parsed into runs of text with a weight ([`parse_prompt_attention`]); each run
//!    is tokenized on its own and every token carries its run's weight.
//! 2. Tokens fill chunks of `max_length − 2` (75); a full chunk starts the next one, and a
//!    `BREAK` starts the next one early. When a chunk is full and its last comma is at most
//!    [`COMMA_BACKTRACK`] tokens from its end, the tokens after the comma move to the next
//!    chunk (A1111's `comma_padding_backtrack`). Each chunk is wrapped as `[BOS, tokens…, EOS, pad…]`
//!    (weights 1 on BOS/EOS/padding), and every chunk is encoded as one row of the text encoder;
//!    the rows' hidden states are concatenated along the sequence axis (77 × chunks).
//! 3. Emphasis scales each token's hidden state by its weight, then rescales the whole chunk so
//!    its mean (over tokens and channels) is the mean before weighting.
//!
//! Differences from A1111: no textual inversion embeddings.
//! With chunking off, tokens past the first 75 are dropped (and counted) as diffusers does, and
//! `BREAK` has no effect.

use crate::error::{Error, Result};
use crate::prompt_syntax::{parse_prompt_attention, Chunk};
use crate::tokenizer::ClipTokenizer;

/// Most chunks one prompt may take (1500 tokens): each chunk lengthens every cross-attention of
/// every UNet step, and a server must not be made to build arbitrarily large plans.
pub const MAX_CHUNKS: usize = 20;

/// A full chunk whose last comma is at most this many tokens from its end moves the tokens
/// after that comma to the next chunk (A1111's `comma_padding_backtrack`, default 20).
pub const COMMA_BACKTRACK: usize = 20;

/// How prompt text becomes encoder rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptMode {
    /// Prompts over 75 tokens become several 77-token chunks (A1111); off: truncated at 75
    /// tokens (diffusers).
    pub chunking: bool,
    /// Parse `(word:1.3)`, `(word)`, `[word]`, `\(`, `BREAK` (A1111); off: the prompt is plain
    /// text (diffusers).
    pub emphasis: bool,
}

impl Default for PromptMode {
    /// A1111's defaults: chunking and emphasis on.
    fn default() -> Self {
        PromptMode {
            chunking: true,
            emphasis: true,
        }
    }
}

/// One text encoder row: `max_length` ids and the weight of each.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedChunk {
    /// `[BOS, tokens…, EOS, pad…]`.
    pub ids: Vec<u32>,
    /// 1 on BOS, EOS and padding; the run's weight on each prompt token.
    pub weights: Vec<f32>,
}

impl WeightedChunk {
    /// Whether any weight differs from 1 (emphasis has something to do).
    pub fn is_weighted(&self) -> bool {
        self.weights.iter().any(|&w| w != 1.0)
    }
}

/// A prompt as encoder rows.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedPrompt {
    /// At least one.
    pub chunks: Vec<WeightedChunk>,
    /// Tokens dropped with chunking off (0 otherwise).
    pub truncated: usize,
}

/// `[BOS, tokens…, EOS, pad…]` of `max_length` with weights (1 outside the tokens).
pub fn wrap_chunk(tokenizer: &ClipTokenizer, tokens: &[u32], weights: &[f32]) -> WeightedChunk {
    let n = tokenizer.max_length();
    let mut ids = Vec::with_capacity(n);
    ids.push(tokenizer.bos_id());
    ids.extend_from_slice(tokens);
    ids.push(tokenizer.eos_id());
    ids.resize(n, tokenizer.pad_id());
    let mut w = Vec::with_capacity(n);
    w.push(1.0);
    w.extend_from_slice(weights);
    w.resize(n, 1.0);
    WeightedChunk { ids, weights: w }
}

/// The chunk of an empty prompt, which pads shorter prompts to a common chunk count (as A1111
/// pads a batch with its `empty_chunk`).
pub fn empty_chunk(tokenizer: &ClipTokenizer) -> WeightedChunk {
    wrap_chunk(tokenizer, &[], &[])
}

/// `prompt` as weighted chunks under `mode`.
pub fn weighted_prompt(
    tokenizer: &ClipTokenizer,
    prompt: &str,
    mode: PromptMode,
) -> Result<WeightedPrompt> {
    let runs = if mode.emphasis {
        parse_prompt_attention(prompt)
    } else {
        vec![Chunk {
            text: prompt.to_string(),
            weight: 1.0,
        }]
    };
    let room = tokenizer.max_length() - 2;
    let comma = tokenizer.token_to_id(",</w>");
    let mut b = Builder {
        tokenizer,
        prompt,
        chunks: Vec::new(),
        tokens: Vec::new(),
        weights: Vec::new(),
        last_comma: None,
    };
    let mut truncated = 0;
    for run in &runs {
        if run.is_break() {
            if mode.chunking {
                b.next_chunk()?;
            }
            continue;
        }
        for id in tokenizer.tokenize(&run.text)? {
            if !mode.chunking && b.tokens.len() == room {
                truncated += 1;
                continue;
            }
            if mode.chunking {
                if Some(id) == comma {
                    b.last_comma = Some(b.tokens.len());
                } else if b.tokens.len() == room {
                    // A1111's comma_padding_backtrack: the words after a comma near the end
                    // move to the next chunk rather than being cut in two.
                    if let Some(at) = b.last_comma.filter(|&at| room - at <= COMMA_BACKTRACK) {
                        let tokens = b.tokens.split_off(at + 1);
                        let weights = b.weights.split_off(at + 1);
                        b.next_chunk()?;
                        (b.tokens, b.weights) = (tokens, weights);
                    }
                }
                if b.tokens.len() == room {
                    b.next_chunk()?;
                }
            }
            b.tokens.push(id);
            b.weights.push(run.weight as f32);
        }
    }
    if !b.tokens.is_empty() || b.chunks.is_empty() {
        b.chunks.push(wrap_chunk(tokenizer, &b.tokens, &b.weights));
    }
    Ok(WeightedPrompt {
        chunks: b.chunks,
        truncated,
    })
}

/// The chunks so far and the one being filled.
struct Builder<'a> {
    tokenizer: &'a ClipTokenizer,
    prompt: &'a str,
    chunks: Vec<WeightedChunk>,
    tokens: Vec<u32>,
    weights: Vec<f32>,
    /// Position of the last comma in `tokens`.
    last_comma: Option<usize>,
}

impl Builder<'_> {
    /// Close the chunk being filled (it will not be the last: the limit counts the next).
    fn next_chunk(&mut self) -> Result<()> {
        if self.chunks.len() + 1 == MAX_CHUNKS {
            return Err(too_long(self.prompt));
        }
        let chunk = wrap_chunk(self.tokenizer, &self.tokens, &self.weights);
        self.chunks.push(chunk);
        self.tokens.clear();
        self.weights.clear();
        self.last_comma = None;
        Ok(())
    }
}

fn too_long(prompt: &str) -> Error {
    let start: String = prompt.chars().take(40).collect();
    Error::invalid(
        "prompt",
        format!(
            "{start:?}… needs more than {MAX_CHUNKS} chunks of 75 tokens (the most encoded): \
             shorten it, or truncate it at 75 tokens with --no-chunking"
        ),
    )
}

/// A1111's "Original" emphasis on one chunk's hidden states `z` (T, D): `z·w` token-wise, then
/// `× mean(z) / mean(z·w)`. Unweighted chunks are left untouched (bit for bit); a zero mean
/// after weighting leaves the weighted states unscaled rather than dividing by zero.
pub fn apply_emphasis(z: &mut [f32], weights: &[f32]) {
    if weights.iter().all(|&w| w == 1.0) || z.is_empty() {
        return;
    }
    let width = z.len() / weights.len();
    let mean = |z: &[f32]| z.iter().map(|&x| x as f64).sum::<f64>() / z.len() as f64;
    let original_mean = mean(z);
    for (row, &w) in z.chunks_mut(width).zip(weights) {
        row.iter_mut().for_each(|x| *x *= w); // (D)
    }
    let new_mean = mean(z);
    if new_mean != 0.0 {
        let scale = (original_mean / new_mean) as f32;
        if scale.is_finite() {
            z.iter_mut().for_each(|x| *x *= scale);
        }
    }
}

/// Every prompt with the same number of chunks: shorter ones get empty chunks appended.
pub fn pad_to_common_length(tokenizer: &ClipTokenizer, prompts: &mut [WeightedPrompt], n: usize) {
    for p in prompts {
        while p.chunks.len() < n {
            p.chunks.push(empty_chunk(tokenizer));
        }
    }
}
