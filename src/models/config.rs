//! Model configs read from each component's `config.json`, with diffusers' / transformers' field
//! names and defaults. Unknown fields are ignored; fields stipple does not implement are rejected
//! when set to anything but their default, naming the field and file.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::python_json;
use crate::error::{Error, Result};

/// Read and parse a config file. A value of the wrong type or range is reported with its field
/// name (serde_json alone gives only the line and column).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::files::read_to_string(path)?;
    parse_config(&text, path)
}

/// Parse config text read from `file` (named in errors). Python json's `NaN`, `Infinity` and
/// `-Infinity` are accepted wherever a value stands (see [`super::python_json`]): numeric
/// fields get that float, other fields a type error naming the field.
pub fn parse_config<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T> {
    let error = |e: serde_json::Error, value: Option<serde_json::Value>| Error::Config {
        file: file.to_path_buf(),
        message: match value.and_then(|v| offending_field::<T>(v, &e)) {
            Some(field) => format!("field {field}: {e}"),
            None => e.to_string(),
        },
    };
    match python_json::mark_literals(text) {
        None => serde_json::from_str(text).map_err(|e| error(e, serde_json::from_str(text).ok())),
        Some(marked) => {
            let value: serde_json::Value =
                serde_json::from_str(&marked).map_err(|e| error(e, None))?;
            python_json::from_value(value.clone()).map_err(|e| error(e, Some(value)))
        }
    }
}

/// The top-level field whose value fails to deserialise on its own. Config structs take
/// defaults for absent fields, so a one-field object isolates the culprit.
fn offending_field<T: DeserializeOwned>(
    value: serde_json::Value,
    e: &serde_json::Error,
) -> Option<String> {
    if e.classify() != serde_json::error::Category::Data {
        return None;
    }
    let serde_json::Value::Object(map) = value else {
        return None;
    };
    map.into_iter().find_map(|(k, v)| {
        let one = serde_json::Value::Object([(k.clone(), v)].into_iter().collect());
        python_json::from_value::<T>(one).is_err().then_some(k)
    })
}

/// A boolean that configs may write as `null` (SDXL's `upcast_attention: null`): diffusers
/// passes None on, which acts as false.
fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Option::<bool>::deserialize(d).map(Option::unwrap_or_default)
}

/// A field given either once for every block or as a per-block list (diffusers accepts both).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    pub fn get(&self, block: usize) -> Option<usize> {
        match self {
            PerBlock::One(v) => Some(*v),
            PerBlock::Each(list) => list.get(block).copied(),
        }
    }
}

fn default_one() -> PerBlock {
    PerBlock::One(1)
}

/// Micro-conditioning time ids of SDXL's `text_time` embedding: original size (h, w), crop top
/// left (top, left), target size (h, w) — `StableDiffusionXLPipeline._get_add_time_ids`.
pub const NUM_TIME_IDS: usize = 6;

/// Shapes of the `text_time` additional embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextTime {
    /// Sinusoidal channels per time id (`add_time_proj`).
    pub addition_time_embed_dim: usize,
    /// Width of `text_embeds` (the pooled, projected output of the last text encoder).
    pub text_embeds_dim: usize,
    /// text_embeds_dim + NUM_TIME_IDS × addition_time_embed_dim (`add_embedding`'s input).
    pub input_dim: usize,
}

/// `UNet2DConditionModel` config (diffusers `unet/config.json`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    /// Legacy diffusers naming: the number of heads when `num_attention_heads` is null.
    pub attention_head_dim: PerBlock,
    pub num_attention_heads: Option<PerBlock>,
    pub cross_attention_dim: usize,
    #[serde(default = "default_one")]
    pub transformer_layers_per_block: PerBlock,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    #[serde(deserialize_with = "null_is_false")]
    pub use_linear_projection: bool,
    #[serde(deserialize_with = "null_is_false")]
    pub upcast_attention: bool,
    #[serde(deserialize_with = "null_is_false")]
    pub only_cross_attention: bool,
    #[serde(deserialize_with = "null_is_false")]
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub downsample_padding: usize,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub act_fn: String,
    pub time_embedding_type: String,
    pub class_embed_type: Option<String>,
    /// `"text_time"` (SDXL): pooled text embeddings and micro-conditioning time ids are added to
    /// the time embedding (see [`UNet2DConditionConfig::text_time`]).
    pub addition_embed_type: Option<String>,
    /// Sinusoidal channels per time id for `text_time` (SDXL: 256).
    pub addition_time_embed_dim: Option<usize>,
    /// Width of `add_embedding`'s input: text_embeds ++ every time id's embedding (SDXL: 2816).
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Per up block transformer depths (asymmetric UNets); not supported.
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    pub time_cond_proj_dim: Option<usize>,
    pub resnet_time_scale_shift: String,
    #[serde(deserialize_with = "null_is_false")]
    pub dual_cross_attention: bool,
    pub sample_size: Option<usize>,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        UNet2DConditionConfig {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            cross_attention_dim: 1280,
            transformer_layers_per_block: PerBlock::One(1),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            upcast_attention: false,
            only_cross_attention: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            act_fn: "silu".into(),
            time_embedding_type: "positional".into(),
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
            reverse_transformer_layers_per_block: None,
            time_cond_proj_dim: None,
            resnet_time_scale_shift: "default".into(),
            dual_cross_attention: false,
            sample_size: None,
        }
    }
}

impl UNet2DConditionConfig {
    /// Stable Diffusion 1.x's UNet (diffusers' defaults with cross_attention_dim 768).
    pub fn stable_diffusion_v1() -> Self {
        UNet2DConditionConfig {
            cross_attention_dim: 768,
            sample_size: Some(64),
            ..Default::default()
        }
    }

    /// SDXL base's UNet (stabilityai/stable-diffusion-xl-base-1.0 `unet/config.json`; SDXL-Turbo's
    /// differs only in `sample_size` 64): for checkpoints without a config, and planning.
    pub fn stable_diffusion_xl() -> Self {
        UNet2DConditionConfig {
            block_out_channels: vec![320, 640, 1280],
            down_block_types: [
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
                .map(String::from)
                .to_vec(),
            attention_head_dim: PerBlock::Each(vec![5, 10, 20]),
            transformer_layers_per_block: PerBlock::Each(vec![1, 2, 10]),
            cross_attention_dim: 2048,
            use_linear_projection: true,
            addition_embed_type: Some("text_time".into()),
            addition_time_embed_dim: Some(256),
            projection_class_embeddings_input_dim: Some(2816),
            sample_size: Some(128),
            ..Default::default()
        }
    }

    /// Heads of the transformers in block `i` (down order), diffusers' legacy rule included.
    pub fn heads(&self, block: usize) -> Option<usize> {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(block)
    }

    /// The `text_time` additional embedding (SDXL), when configured: (sinusoidal channels per
    /// time id, width of the pooled text embedding that precedes the time ids).
    pub fn text_time(&self) -> Option<TextTime> {
        if self.addition_embed_type.as_deref() != Some("text_time") {
            return None;
        }
        let per_id = self.addition_time_embed_dim?;
        let input = self.projection_class_embeddings_input_dim?;
        let text_embeds_dim = input.checked_sub(NUM_TIME_IDS * per_id)?;
        Some(TextTime {
            addition_time_embed_dim: per_id,
            text_embeds_dim,
            input_dim: input,
        })
    }

    /// Reject configs that need features stipple does not implement (naming the field).
    pub fn validate(&self, file: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                file: file.to_path_buf(),
                message,
            })
        };
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "block_out_channels ({n}), down_block_types ({}) and up_block_types ({}) must have the same non-zero length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        for (field, value, default) in [
            ("act_fn", self.act_fn.as_str(), "silu"),
            (
                "time_embedding_type",
                self.time_embedding_type.as_str(),
                "positional",
            ),
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift.as_str(),
                "default",
            ),
        ] {
            if value != default {
                return bad(format!(
                    "{field} = {value:?} is not supported (only {default:?})"
                ));
            }
        }
        match self.addition_embed_type.as_deref() {
            None => {}
            Some("text_time") if self.text_time().is_some_and(|t| t.text_embeds_dim > 0) => {}
            Some("text_time") => {
                return bad(format!(
                    "addition_embed_type \"text_time\" needs addition_time_embed_dim and \
                     projection_class_embeddings_input_dim > {NUM_TIME_IDS} × addition_time_embed_dim \
                     (got {:?} and {:?})",
                    self.addition_time_embed_dim, self.projection_class_embeddings_input_dim
                ))
            }
            Some(t) => {
                return bad(format!(
                    "addition_embed_type = {t:?} is not supported (only \"text_time\")"
                ))
            }
        }
        for (field, set) in [
            ("class_embed_type", self.class_embed_type.is_some()),
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("only_cross_attention", self.only_cross_attention),
            ("dual_cross_attention", self.dual_cross_attention),
        ] {
            if set {
                return bad(format!("{field} is set; stipple does not implement it yet"));
            }
        }
        if let Some(t) = self
            .mid_block_type
            .as_deref()
            .filter(|t| *t != "UNetMidBlock2DCrossAttn")
        {
            return bad(format!("mid_block_type {t:?} is not supported"));
        }
        for (i, c) in self.block_out_channels.iter().enumerate() {
            if self.norm_num_groups == 0 || c % self.norm_num_groups != 0 {
                return bad(format!(
                    "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {}",
                    self.norm_num_groups
                ));
            }
            match self.heads(i) {
                Some(h) if h > 0 && c % h == 0 => {}
                h => {
                    return bad(format!(
                        "block {i}: {c} channels do not split into {h:?} attention heads"
                    ))
                }
            }
            if self.transformer_layers_per_block.get(i).is_none() {
                return bad(format!(
                    "transformer_layers_per_block has no entry for block {i}"
                ));
            }
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return bad(format!("down_block_types[{i}] = {t:?} is not supported"));
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return bad(format!("up_block_types[{i}] = {t:?} is not supported"));
            }
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return bad("conv_in_kernel and conv_out_kernel must be odd".into());
        }
        Ok(())
    }
}

/// `AutoencoderKL` config (diffusers `vae/config.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub norm_num_groups: usize,
    pub act_fn: String,
    pub scaling_factor: f32,
    pub shift_factor: Option<f32>,
    #[serde(deserialize_with = "null_is_false")]
    pub use_quant_conv: bool,
    #[serde(deserialize_with = "null_is_false")]
    pub use_post_quant_conv: bool,
    #[serde(deserialize_with = "null_is_false")]
    pub mid_block_add_attention: bool,
    pub sample_size: Option<usize>,
    /// Decode in f32 when the model runs in f16 (SDXL pipelines honour it; diffusers' default
    /// true). An "fp16-fix" VAE sets it false.
    #[serde(deserialize_with = "null_is_false")]
    pub force_upcast: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![64],
            layers_per_block: 1,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            norm_num_groups: 32,
            act_fn: "silu".into(),
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            sample_size: None,
            force_upcast: true,
        }
    }
}

impl AutoencoderKLConfig {
    /// The VAE of Stable Diffusion 1.x/2.x (for checkpoints without a config, and planning).
    pub fn stable_diffusion() -> Self {
        let n = 4;
        AutoencoderKLConfig {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            down_block_types: vec!["DownEncoderBlock2D".into(); n],
            up_block_types: vec!["UpDecoderBlock2D".into(); n],
            sample_size: Some(512),
            ..Default::default()
        }
    }

    /// Pixels per latent along each axis: 2^(levels − 1).
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    pub fn validate(&self, file: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                file: file.to_path_buf(),
                message,
            })
        };
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad("block_out_channels, down_block_types and up_block_types must have the same non-zero length".into());
        }
        if self.act_fn != "silu" {
            return bad(format!(
                "act_fn = {:?} is not supported (only \"silu\")",
                self.act_fn
            ));
        }
        if let Some((i, t)) = self
            .down_block_types
            .iter()
            .enumerate()
            .find(|(_, t)| *t != "DownEncoderBlock2D")
        {
            return bad(format!("down_block_types[{i}] = {t:?} is not supported"));
        }
        if let Some((i, t)) = self
            .up_block_types
            .iter()
            .enumerate()
            .find(|(_, t)| *t != "UpDecoderBlock2D")
        {
            return bad(format!("up_block_types[{i}] = {t:?} is not supported"));
        }
        if let Some((i, c)) = self
            .block_out_channels
            .iter()
            .enumerate()
            .find(|(_, c)| self.norm_num_groups == 0 || *c % self.norm_num_groups != 0)
        {
            return bad(format!(
                "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {}",
                self.norm_num_groups
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return bad(format!(
                "scaling_factor = {} must be positive",
                self.scaling_factor
            ));
        }
        Ok(())
    }
}

/// `CLIPTextModel` config (transformers `text_encoder/config.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f32,
    /// Width of `text_projection` (`CLIPTextModelWithProjection`, SDXL's text_encoder_2).
    pub projection_dim: usize,
    /// Where the pooled output is read: the first `eos_token_id`, or the largest id when this
    /// is the legacy 2 (transformers' `CLIPTextTransformer.forward`).
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        // transformers' CLIPTextConfig defaults.
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 512,
            eos_token_id: 49407,
        }
    }
}

impl ClipTextConfig {
    /// OpenAI CLIP ViT-L/14's text encoder, used by Stable Diffusion 1.x.
    pub fn clip_vit_large_patch14() -> Self {
        ClipTextConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            ..Default::default()
        }
    }

    /// OpenCLIP ViT-bigG/14's text encoder with its projection: SDXL's `text_encoder_2`.
    pub fn clip_vit_bigg14() -> Self {
        ClipTextConfig {
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            hidden_act: "gelu".into(),
            projection_dim: 1280,
            eos_token_id: 2,
            ..Default::default()
        }
    }

    pub fn validate(&self, file: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                file: file.to_path_buf(),
                message,
            })
        };
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size = {} does not split into num_attention_heads = {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.num_hidden_layers == 0
        {
            return bad(
                "vocab_size, max_position_embeddings and num_hidden_layers must be positive".into(),
            );
        }
        crate::ops::elementwise::Activation::from_name(&self.hidden_act).map_err(|_| {
            Error::Config {
                file: file.to_path_buf(),
                message: format!("hidden_act = {:?} is not supported", self.hidden_act),
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the fields that matter).
    const SDXL_UNET: &str = r#"{
        "_class_name": "UNet2DConditionModel", "act_fn": "silu",
        "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280], "class_embed_type": null,
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0,
        "in_channels": 4, "layers_per_block": 2, "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05, "norm_num_groups": 32, "num_attention_heads": null,
        "only_cross_attention": false, "out_channels": 4,
        "projection_class_embeddings_input_dim": 2816, "resnet_time_scale_shift": "default",
        "sample_size": 128, "time_cond_proj_dim": null, "time_embedding_type": "positional",
        "transformer_layers_per_block": [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": null, "use_linear_projection": true
    }"#;

    #[test]
    fn sdxl_unet_config_reads_as_diffusers_does() {
        let c: UNet2DConditionConfig = serde_json::from_str(SDXL_UNET).expect("parse");
        c.validate(Path::new("config.json")).expect("valid");
        assert!(!c.upcast_attention);
        assert_eq!(
            c.text_time(),
            Some(TextTime {
                addition_time_embed_dim: 256,
                text_embeds_dim: 1280,
                input_dim: 2816
            })
        );
        // attention_head_dim is the number of heads (num_attention_heads is null): head dim 64.
        assert_eq!(
            (0..3).map(|i| c.heads(i)).collect::<Vec<_>>(),
            [Some(5), Some(10), Some(20)]
        );
        assert_eq!(c.transformer_layers_per_block.get(2), Some(10));
        assert_eq!(c, UNet2DConditionConfig::stable_diffusion_xl());
    }

    #[test]
    fn text_time_without_its_dims_is_rejected() {
        let c: UNet2DConditionConfig = serde_json::from_str(
            r#"{"addition_embed_type": "text_time", "cross_attention_dim": 2048}"#,
        )
        .expect("parse");
        let err = c
            .validate(Path::new("unet/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("projection_class_embeddings_input_dim"),
            "{err}"
        );
        let c: UNet2DConditionConfig =
            serde_json::from_str(r#"{"addition_embed_type": "text"}"#).expect("parse");
        let err = c
            .validate(Path::new("unet/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("addition_embed_type"), "{err}");
    }
}
