//! CLIP's byte-level BPE tokenizer, from HuggingFace `vocab.json` + `merges.txt`.
//!
//! Ports the pipeline of transformers' `models/clip/tokenization_clip.py` (`CLIPTokenizer`,
//! which itself follows OpenAI CLIP's `simple_tokenizer.py`) onto the `tokenizers` crate:
//! NFC → `\s+` to one space → lowercase; split on CLIP's regex; byte-level alphabet; BPE
//! with a `</w>` end-of-word suffix. Ids match transformers on the goldens in
//! `tests/fixtures/tokenizer/clip_ids.json`.
//!
//! Prompts longer than the text encoder's context (77 = BOS + 75 tokens + EOS):
//! - [`ClipTokenizer::encode`] truncates like diffusers/transformers (`truncation=True`) and
//!   reports how many tokens it dropped so the caller can warn;
//! - [`ClipTokenizer::encode_chunks`] splits the tokens into chunks of 75, each wrapped in
//!   BOS/EOS and padded, as AUTOMATIC1111 and stable-diffusion.cpp do; the caller encodes
//!   every chunk and concatenates the contexts along the sequence axis.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// Start of text, prepended to every sequence.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// End of text, appended to every sequence; also the unknown token (and SD1.x's padding).
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// Context length of every CLIP text encoder used by Stable Diffusion.
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// CLIP's pre-tokenizer regex (`simple_tokenizer.py`): special tokens, English contractions,
/// letter runs, single digits, runs of anything else that is not whitespace.
const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// transformers writes `int(1e30)` as `model_max_length` when a tokenizer has no limit;
/// anything this large means "not set".
const UNSET_MAX_LENGTH: f64 = 1e9;

/// One padded id sequence of length [`ClipTokenizer::max_length`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds {
    /// BOS, the prompt's tokens, EOS, then the pad id up to `max_length`.
    pub ids: Vec<u32>,
    /// Prompt tokens that did not fit and were dropped (0 when nothing was truncated).
    pub truncated: usize,
}

/// CLIP BPE tokenizer for Stable Diffusion text encoders.
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder: `vocab.json` and `merges.txt`, plus the optional
    /// `special_tokens_map.json` / `tokenizer_config.json` for the pad token (`<|endoftext|>`
    /// in SD1.x, `!` in SD2.x) and `model_max_length` (default 77).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut tokenizer = Self::from_files(dir.join("vocab.json"), dir.join("merges.txt"))?;

        // transformers applies special_tokens_map.json over tokenizer_config.json.
        let mut pad_token = None;
        let mut max_length = None;
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if !crate::files::exists(&path) {
                continue;
            }
            let config = read_config(&path)?;
            pad_token = config.pad_token.or(pad_token);
            max_length = config.model_max_length.or(max_length);
        }
        if let Some((file, token)) = pad_token {
            tokenizer.pad_id = tokenizer
                .token_to_id(&token)
                .ok_or_else(|| Error::Tokenizer {
                    file,
                    message: format!("pad_token {token:?} is not in vocab.json"),
                })?;
        }
        if let Some((_, n)) = max_length {
            tokenizer.max_length = n;
        }
        Ok(tokenizer)
    }

    /// This tokenizer padding with `token` (e.g. `!` for SD2.x's OpenCLIP text encoder).
    pub fn with_pad_token(mut self, token: &str) -> Result<Self> {
        self.pad_id = self.tokenizer.token_to_id(token).ok_or_else(|| {
            Error::invalid("pad token", format!("{token:?} is not in the vocabulary"))
        })?;
        Ok(self)
    }

    /// Loads `vocab.json` + `merges.txt` with SD1.x defaults (pad `<|endoftext|>`, 77 tokens).
    pub fn from_files(vocab_path: impl AsRef<Path>, merges_path: impl AsRef<Path>) -> Result<Self> {
        let (vocab_path, merges_path) = (vocab_path.as_ref(), merges_path.as_ref());
        let vocab = read_vocab(vocab_path)?;
        let merges = read_merges(merges_path, &vocab)?;
        let special_id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| Error::Tokenizer {
                file: vocab_path.to_path_buf(),
                message: format!("special token {token:?} is missing"),
            })
        };
        let (bos_id, eos_id) = (special_id(BOS_TOKEN)?, special_id(EOS_TOKEN)?);

        let bpe_error = |e: tokenizers::Error| Error::Tokenizer {
            file: merges_path.to_path_buf(),
            message: format!("cannot build the BPE model: {e}"),
        };
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
            .end_of_word_suffix("</w>".into())
            .unk_token(EOS_TOKEN.into())
            .build()
            .map_err(bpe_error)?;

        let regex_error = |e: tokenizers::Error| Error::Tokenizer {
            file: vocab_path.to_path_buf(),
            message: format!("cannot build the CLIP pipeline: {e}"),
        };
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(regex_error)?
            .into(),
            Lowercase.into(),
        ])));
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            // Keep the matches, drop what lies between them (whitespace).
            Split::new(
                SplitPattern::Regex(CLIP_SPLIT_REGEX.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(regex_error)?
            .into(),
            // Only the byte → unicode alphabet: CLIP's regex already split the words.
            ByteLevel::new(false, false, false).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        // BOS/EOS written in a prompt map to their ids, as in transformers and CLIP.
        tokenizer.add_special_tokens(&[
            AddedToken::from(BOS_TOKEN, true),
            AddedToken::from(EOS_TOKEN, true),
        ]);

        Ok(Self {
            tokenizer,
            bos_id,
            eos_id,
            pad_id: eos_id,
            max_length: DEFAULT_MAX_LENGTH,
        })
    }

    /// The prompt's token ids, without BOS/EOS and without any length limit.
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(prompt, false).map_err(|e| {
            Error::invalid("prompt", format!("tokenizer failed on {prompt:?}: {e}"))
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// `[BOS, tokens…, EOS, pad…]` of length `max_length`; tokens beyond `max_length - 2` are
    /// dropped (counted in [`TokenIds::truncated`]), as transformers does with `truncation=True`.
    pub fn encode(&self, prompt: &str) -> Result<TokenIds> {
        let tokens = self.tokenize(prompt)?;
        let room = self.max_length - 2;
        let kept = tokens.len().min(room);
        Ok(TokenIds {
            ids: self.wrap(&tokens[..kept]),
            truncated: tokens.len() - kept,
        })
    }

    /// Every token of the prompt, as chunks of `max_length - 2` (75) tokens each wrapped as
    /// `[BOS, chunk…, EOS, pad…]`. An empty prompt gives one chunk `[BOS, EOS, pad…]`.
    pub fn encode_chunks(&self, prompt: &str) -> Result<Vec<Vec<u32>>> {
        let tokens = self.tokenize(prompt)?;
        if tokens.is_empty() {
            return Ok(vec![self.wrap(&[])]);
        }
        Ok(tokens
            .chunks(self.max_length - 2)
            .map(|chunk| self.wrap(chunk))
            .collect())
    }

    /// Text of `ids`, skipping BOS/EOS/padding; `</w>` becomes the space it stands for.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let content: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id != self.bos_id && id != self.eos_id && id != self.pad_id)
            .collect();
        let text = self
            .tokenizer
            .decode(&content, false)
            .map_err(|e| Error::invalid("token ids", format!("cannot decode: {e}")))?;
        Ok(text.replace("</w>", " ").trim().to_string())
    }

    /// Id of a vocabulary token (`"cat</w>"`, `"<|endoftext|>"`), if present.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Sequence length of every encoded prompt or chunk (77 for SD text encoders).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// `[BOS, tokens…, EOS, pad…]`; `tokens` holds at most `max_length - 2` ids.
    fn wrap(&self, tokens: &[u32]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(tokens);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        ids
    }
}

fn read_text(path: &Path) -> Result<String> {
    crate::files::read_to_string(path)
}

fn read_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let vocab: HashMap<String, u32> =
        serde_json::from_str(&read_text(path)?).map_err(|e| Error::Tokenizer {
            file: path.to_path_buf(),
            message: format!("expected a JSON object of token → id: {e}"),
        })?;
    if vocab.is_empty() {
        return Err(Error::Tokenizer {
            file: path.to_path_buf(),
            message: "the vocabulary is empty".into(),
        });
    }
    Ok(vocab)
}

/// Merges in rank order; the `#version` header and blank lines are skipped. Each merge and its
/// result must be in the vocabulary, so a mismatched vocab/merges pair fails here, by line.
fn read_merges(path: &Path, vocab: &HashMap<String, u32>) -> Result<Vec<(String, String)>> {
    let text = read_text(path)?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || (i == 0 && line.starts_with("#version")) {
            continue;
        }
        let malformed = |message: String| Error::Tokenizer {
            file: path.to_path_buf(),
            message,
        };
        let mut parts = line.split(' ');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed(format!(
                "line {}: expected two tokens separated by one space, got {line:?}",
                i + 1
            )));
        };
        if a.is_empty() || b.is_empty() {
            return Err(malformed(format!(
                "line {}: expected two tokens separated by one space, got {line:?}",
                i + 1
            )));
        }
        for token in [a.to_string(), b.to_string(), format!("{a}{b}")] {
            if !vocab.contains_key(&token) {
                return Err(malformed(format!(
                    "line {}: token {token:?} is not in vocab.json",
                    i + 1
                )));
            }
        }
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}

/// What stipple reads from `tokenizer_config.json` / `special_tokens_map.json`, with the file
/// each value came from (for error messages).
struct TokenizerConfig {
    pad_token: Option<(PathBuf, String)>,
    model_max_length: Option<(PathBuf, usize)>,
}

fn read_config(path: &Path) -> Result<TokenizerConfig> {
    let bad = |message: String| Error::Tokenizer {
        file: path.to_path_buf(),
        message,
    };
    let json: serde_json::Value =
        serde_json::from_str(&read_text(path)?).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let object = json
        .as_object()
        .ok_or_else(|| bad("expected a JSON object".into()))?;

    // A special token is either a string or an AddedToken object `{"content": …}`.
    let pad_token = match object.get("pad_token") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(v) => match v.get("content").and_then(|c| c.as_str()) {
            Some(s) => Some(s.to_string()),
            None => {
                return Err(bad(format!(
                    "pad_token: expected a string or {{\"content\": …}}, got {v}"
                )))
            }
        },
    };

    let model_max_length = match object.get("model_max_length") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(n) if n >= UNSET_MAX_LENGTH => None,
            Some(n) if n >= 3.0 && n.fract() == 0.0 => Some(n as usize),
            _ => {
                return Err(bad(format!(
                    "model_max_length: expected an integer ≥ 3 (BOS, a token, EOS), got {v}"
                )))
            }
        },
    };

    Ok(TokenizerConfig {
        pad_token: pad_token.map(|t| (path.to_path_buf(), t)),
        model_max_length: model_max_length.map(|n| (path.to_path_buf(), n)),
    })
}
