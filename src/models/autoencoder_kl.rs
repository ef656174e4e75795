//! `AutoencoderKL` (diffusers `models/autoencoders/autoencoder_kl.py`): the VAE that maps images
//! to latents (encoder + quant_conv → mean and log-variance) and latents back to images
//! (post_quant_conv + decoder). `scaling_factor` / `shift_factor` from the config are applied by
//! the pipeline, as in diffusers.

use std::path::Path;

use super::config::{read_config, AutoencoderKLConfig};
use super::split::{self, Conv2d};
use super::vae::{Decoder, Encoder};
use super::{layers, Ctx};
use crate::error::{Error, Result};
use crate::gpu::DType;
use crate::graph::{Graph, ValueId};
use crate::ops::conv2d::Conv2dOptions;
use crate::weights::{Weights, WeightsView};

pub struct AutoencoderKL {
    pub config: AutoencoderKLConfig,
    /// What its graphs are built for (from the load context).
    pub target: crate::gpu::Target,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKL {
    /// Load `dir/config.json` and the weights in `dir`; every tensor must be used.
    pub fn from_dir(ctx: Ctx, dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: AutoencoderKLConfig = read_config(&config_path)?;
        config.validate(&config_path)?;
        let weights = Weights::open(dir)?;
        let model = Self::load(ctx, &weights.root(), config)?;
        weights.finish()?;
        Ok(model)
    }

    pub fn load(ctx: Ctx, w: &WeightsView, config: AutoencoderKLConfig) -> Result<Self> {
        let l2 = 2 * config.latent_channels;
        let l = config.latent_channels;
        Ok(AutoencoderKL {
            target: ctx.target.clone(),
            encoder: Encoder::load(ctx, &w.pp("encoder"), &config)?,
            decoder: Decoder::load(ctx, &w.pp("decoder"), &config)?,
            quant_conv: config
                .use_quant_conv
                .then(|| layers::conv2d(ctx, &w.pp("quant_conv"), l2, l2, 1))
                .transpose()?,
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| layers::conv2d(ctx, &w.pp("post_quant_conv"), l, l, 1))
                .transpose()?,
            config,
        })
    }

    /// image (B, H, W, 3) in [-1, 1] → moments (B, H/f, W/f, 2·latent_channels): the mean in the
    /// first half of the channels, the log-variance in the second.
    pub fn encode(&self, g: &mut Graph, image: ValueId) -> Result<ValueId> {
        let h = self.encoder.forward(g, image)?;
        match &self.quant_conv {
            Some(q) => split::conv2d(g, "quant_conv", h, q, Conv2dOptions::default()),
            None => Ok(h),
        }
    }

    /// z (B, h, w, latent_channels), already divided by scaling_factor → image (B, H, W, 3) in
    /// about [-1, 1].
    pub fn decode(&self, g: &mut Graph, z: ValueId) -> Result<ValueId> {
        let z = match &self.post_quant_conv {
            Some(p) => {
                let z = split::conv2d(g, "post_quant_conv", z, p, Conv2dOptions::default())?;
                g.probe("post_quant_conv", z)?;
                z
            }
            None => z,
        };
        self.decoder.forward(g, z)
    }

    /// Graph with input `z` (B, h, w, latent_channels) and output `image`.
    pub fn decode_graph(
        &self,
        dtype: DType,
        batch: usize,
        latent: [usize; 2],
        probes: bool,
    ) -> Result<Graph> {
        let z = [batch, latent[0], latent[1], self.config.latent_channels];
        super::latent_decoder_graph(dtype, &self.target, probes, z, |g, z| self.decode(g, z))
    }

    /// Graph with input `image` (B, H, W, in_channels) and output `moments`.
    pub fn encode_graph(
        &self,
        dtype: DType,
        batch: usize,
        size: [usize; 2],
        probes: bool,
    ) -> Result<Graph> {
        let f = self.config.downscale_factor();
        if !size[0].is_multiple_of(f) || !size[1].is_multiple_of(f) {
            return Err(Error::shape(
                "vae.encoder",
                format!("image size {size:?} must be a multiple of {f}"),
            ));
        }
        let mut g = Graph::for_target(dtype, &self.target);
        if probes {
            g = g.with_probes();
        }
        let image = g.input("image", &[batch, size[0], size[1], self.config.in_channels])?;
        let moments = self.encode(&mut g, image)?;
        g.output("moments", moments)?;
        Ok(g)
    }
}
