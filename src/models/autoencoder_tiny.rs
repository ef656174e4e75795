//! `AutoencoderTiny` (TAESD, Ollin Boer Bohan's "Tiny AutoEncoder for Stable Diffusion";
//! diffusers `models/autoencoders/autoencoder_tiny.py`, its `DecoderTiny` in
//! `autoencoders/vae.py` and `AutoencoderTinyBlock` in `unets/unet_2d_blocks.py`): a distilled
//! VAE decoder of plain 3×3 convolutions and ReLUs (141 GFLOP at 512×512 against 2.5 TFLOP for
//! the SD `AutoencoderKL` decoder), used here for live previews. Only the decoder is loaded; the encoder's weights are ignored.
//!
//! Decoder (weights under `decoder.layers.{i}`, `i` counting every `nn.Sequential` entry,
//! weightless ones included):
//!
//! ```text
//! z (B, h, w, latent_channels) ── 3·tanh(z/3) ── conv 3×3 → C0 ── ReLU
//! for each stage k (num_decoder_blocks[k] blocks of C_k channels):
//!     AutoencoderTinyBlock × n: ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x)
//!     not last: nearest upsample ×2, conv 3×3 (no bias) → C_k
//!     last:     conv 3×3 (bias) → out_channels
//! image = 2·x − 1   (the decoder works in [0, 1]; diffusers returns [-1, 1])
//! ```
//!
//! TAESD decodes the UNet's latents as they are: its `scaling_factor` is 1.0 (applied, with
//! `shift_factor`, by the caller as for `AutoencoderKL`).

use std::path::Path;

use serde::Deserialize;

use super::config::read_config;
use super::split::{self, Conv2d};
use super::{layers, Ctx};
use crate::error::{Error, Result};
use crate::gpu::{DType, Target};
use crate::graph::{Graph, ValueId};
use crate::ops::conv2d::Conv2dOptions;
use crate::ops::elementwise::{self, Activation};
use crate::ops::upsample;
use crate::weights::{Weights, WeightsView};

/// diffusers' `AutoencoderTiny` config (the decoder's fields; others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct AutoencoderTinyConfig {
    pub out_channels: usize,
    pub latent_channels: usize,
    pub decoder_block_out_channels: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub upsampling_scaling_factor: usize,
    pub act_fn: String,
    pub upsample_fn: String,
    pub scaling_factor: f32,
    pub shift_factor: Option<f32>,
}

impl Default for AutoencoderTinyConfig {
    /// diffusers' defaults (those of madebyollin/taesd).
    fn default() -> Self {
        AutoencoderTinyConfig {
            out_channels: 3,
            latent_channels: 4,
            decoder_block_out_channels: vec![64; 4],
            num_decoder_blocks: vec![3, 3, 3, 1],
            upsampling_scaling_factor: 2,
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            scaling_factor: 1.0,
            shift_factor: None,
        }
    }
}

impl AutoencoderTinyConfig {
    /// Pixels per latent along each axis: 2^(stages − 1).
    pub fn upscale_factor(&self) -> usize {
        1 << self.decoder_block_out_channels.len().saturating_sub(1)
    }

    pub fn validate(&self, file: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                file: file.to_path_buf(),
                message,
            })
        };
        let n = self.decoder_block_out_channels.len();
        if n == 0 || self.num_decoder_blocks.len() != n {
            return bad(format!(
                "decoder_block_out_channels ({n}) and num_decoder_blocks ({}) must have the same \
                 non-zero length",
                self.num_decoder_blocks.len()
            ));
        }
        if self
            .decoder_block_out_channels
            .windows(2)
            .any(|p| p[0] != p[1])
        {
            // DecoderTiny's stage convolutions keep each stage's width: unequal widths
            // cannot run in diffusers either.
            return bad(format!(
                "decoder_block_out_channels {:?} must all be equal",
                self.decoder_block_out_channels
            ));
        }
        if n > 8 {
            return bad(format!("{n} decoder stages: at most 8 are supported"));
        }
        if self.decoder_block_out_channels.contains(&0)
            || self.latent_channels == 0
            || self.out_channels == 0
        {
            return bad("channel counts must be at least 1".into());
        }
        if self.upsampling_scaling_factor != 2 || self.upsample_fn != "nearest" {
            return bad(format!(
                "upsampling_scaling_factor = {}, upsample_fn = {:?}: only 2 and \"nearest\" \
                 are supported",
                self.upsampling_scaling_factor, self.upsample_fn
            ));
        }
        if let Err(e) = Activation::from_name(&self.act_fn) {
            return bad(format!("act_fn: {e}"));
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor == 0.0 {
            return bad(format!(
                "scaling_factor = {} must be a finite non-zero number",
                self.scaling_factor
            ));
        }
        Ok(())
    }
}

/// `AutoencoderTinyBlock(channels, channels)`: ReLU(conv.4(act(conv.2(act(conv.0(x))))) + x).
/// (Its `skip` 1×1 convolution exists only when in ≠ out channels, never in the decoder.)
struct AutoencoderTinyBlock {
    name: String,
    convs: [Conv2d; 3],
}

impl AutoencoderTinyBlock {
    fn load(ctx: Ctx, w: &WeightsView, channels: usize) -> Result<Self> {
        let conv = |i: usize| layers::conv2d(ctx, &w.pp("conv").pp(i), channels, channels, 3);
        Ok(AutoencoderTinyBlock {
            name: w.prefix().to_string(),
            convs: [conv(0)?, conv(2)?, conv(4)?],
        })
    }

    fn forward(&self, g: &mut Graph, x: ValueId, act: Activation) -> Result<ValueId> {
        let n = &self.name;
        let same = Conv2dOptions::padded(1);
        let h = split::conv2d(g, &format!("{n}.conv.0"), x, &self.convs[0], same)?; // (B, H, W, C)
        let h = elementwise::activation(g, &format!("{n}.conv.1"), h, act)?;
        let h = split::conv2d(g, &format!("{n}.conv.2"), h, &self.convs[1], same)?;
        let h = elementwise::activation(g, &format!("{n}.conv.3"), h, act)?;
        let residual = Conv2dOptions {
            residual: Some(x),
            ..same
        };
        let h = split::conv2d(g, &format!("{n}.conv.4"), h, &self.convs[2], residual)?; // conv + x
        elementwise::activation(g, &format!("{n}.fuse"), h, Activation::Relu)
    }
}

/// One entry of `DecoderTiny.layers` that holds work.
enum Layer {
    Conv(String, Conv2d),
    Activation(String),
    Block(Box<AutoencoderTinyBlock>),
    Upsample(String),
}

/// diffusers `DecoderTiny`.
struct DecoderTiny {
    layers: Vec<Layer>,
    act: Activation,
}

impl DecoderTiny {
    fn load(ctx: Ctx, w: &WeightsView, config: &AutoencoderTinyConfig) -> Result<Self> {
        let act = Activation::from_name(&config.act_fn)?;
        let w = w.pp("layers");
        let channels = &config.decoder_block_out_channels;
        let mut layers = Vec::new();
        let name = |i: usize| w.pp(i).prefix().to_string();
        layers.push(Layer::Conv(
            name(0),
            layers::conv2d(ctx, &w.pp(0), config.latent_channels, channels[0], 3)?,
        ));
        layers.push(Layer::Activation(name(1)));
        let stages = channels.len();
        for (k, (&c, &blocks)) in channels.iter().zip(&config.num_decoder_blocks).enumerate() {
            for _ in 0..blocks {
                let i = layers.len();
                layers.push(Layer::Block(Box::new(AutoencoderTinyBlock::load(
                    ctx,
                    &w.pp(i),
                    c,
                )?)));
            }
            let last = k + 1 == stages;
            if !last {
                layers.push(Layer::Upsample(name(layers.len())));
            }
            let i = layers.len();
            let (out, bias) = if last {
                (config.out_channels, true)
            } else {
                (c, false)
            };
            let conv = layers::conv2d_bias(ctx, &w.pp(i), c, out, 3, bias)?;
            layers.push(Layer::Conv(name(i), conv));
        }
        Ok(DecoderTiny { layers, act })
    }

    /// z (B, h, w, latent_channels) → image (B, f·h, f·w, out_channels) in about [-1, 1].
    fn forward(&self, g: &mut Graph, z: ValueId) -> Result<ValueId> {
        // 1. clamp: 3·tanh(z/3)
        let x = elementwise::scale(g, "decoder.clamp.div", z, 1.0 / 3.0)?;
        let mut x = elementwise::unary(g, "decoder.clamp.tanh", x, Activation::Tanh, 3.0, 0.0)?;
        // 2. layers
        for layer in &self.layers {
            x = match layer {
                Layer::Conv(name, w) => {
                    split::conv2d(g, name, x, w, Conv2dOptions::padded(1))? // (B, H, W, C)
                }
                Layer::Activation(name) => elementwise::activation(g, name, x, self.act)?,
                Layer::Block(block) => block.forward(g, x, self.act)?,
                Layer::Upsample(name) => upsample::upsample_nearest2x(g, name, x)?, // (B, 2H, 2W, C)
            };
            g.probe(layer_name(layer), x)?;
        }
        // 3. [0, 1] → [-1, 1]
        elementwise::unary(g, "decoder.out", x, Activation::Identity, 2.0, -1.0)
    }
}

fn layer_name(layer: &Layer) -> &str {
    match layer {
        Layer::Conv(name, _) | Layer::Activation(name) | Layer::Upsample(name) => name,
        Layer::Block(block) => &block.name,
    }
}

/// A TAESD: the decoder of a diffusers `AutoencoderTiny` folder.
pub struct AutoencoderTiny {
    pub config: AutoencoderTinyConfig,
    /// The storage dtype its weights were uploaded in.
    pub dtype: DType,
    target: Target,
    decoder: DecoderTiny,
}

impl AutoencoderTiny {
    /// Load `dir/config.json` and the weights in `dir` (`diffusion_pytorch_model.safetensors`);
    /// every decoder tensor must be used, the encoder's are ignored.
    pub fn from_dir(ctx: Ctx, dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::Config {
                file: config_path,
                message: "not found: a TAESD is a diffusers AutoencoderTiny folder \
                          (config.json + diffusion_pytorch_model.safetensors)"
                    .into(),
            });
        }
        let config: AutoencoderTinyConfig = read_config(&config_path)?;
        config.validate(&config_path)?;
        let weights = Weights::open(dir)?;
        let root = weights.root();
        root.pp("encoder").skip_all();
        let decoder = DecoderTiny::load(ctx, &root.pp("decoder"), &config)?;
        weights.finish()?;
        Ok(AutoencoderTiny {
            config,
            dtype: ctx.dtype,
            target: ctx.target.clone(),
            decoder,
        })
    }

    /// z (B, h, w, latent_channels), already divided by scaling_factor → image (B, H, W, 3) in
    /// about [-1, 1].
    pub fn decode(&self, g: &mut Graph, z: ValueId) -> Result<ValueId> {
        self.decoder.forward(g, z)
    }

    /// Graph with input `z` (B, h, w, latent_channels) and output `image`.
    pub fn decode_graph(&self, batch: usize, latent: [usize; 2], probes: bool) -> Result<Graph> {
        let z = [batch, latent[0], latent[1], self.config.latent_channels];
        let (dtype, target) = (self.dtype, &self.target);
        super::latent_decoder_graph(dtype, target, probes, z, |g, z| self.decode(g, z))
    }
}
