//! `UNet2DConditionModel` (diffusers `models/unets/unet_2d_condition.py`): the conditional
//! denoiser of Stable Diffusion. Everything comes from `config.json`: SD1.x, SD2.x, SDXL and the
//! tiny test models run through the same code.
//!
//! SDXL (`addition_embed_type: "text_time"`) adds a second embedding to the time embedding:
//! `add_embedding(concat(text_embeds, flatten(add_time_proj(time_ids))))`, where `text_embeds`
//! is the pooled projected output of text_encoder_2 and `time_ids` the 6 micro-conditioning
//! numbers (original size, crop top-left, target size), each embedded sinusoidally.

use std::path::Path;

use super::config::{read_config, TextTime, UNet2DConditionConfig, NUM_TIME_IDS};
use super::embeddings::{TimestepEmbedding, Timesteps};
use super::split::{self, Conv2d};
use super::unet_2d_blocks::{
    BlockConfig, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, UpChannels,
};
use super::{layers, Ctx};
use crate::error::{Error, Result};
use crate::gpu::DType;
use crate::graph::{Graph, ValueId};
use crate::ops::concat;
use crate::ops::conv2d::Conv2dOptions;
use crate::ops::elementwise::{self, Activation};
use crate::ops::group_norm::{self, GroupNorm};
use crate::weights::{Weights, WeightsView};

/// SDXL's `added_cond_kwargs`.
#[derive(Clone, Copy, Debug)]
pub struct AddedCond {
    /// (B, P): pooled, projected prompt embedding of the last text encoder.
    pub text_embeds: ValueId,
    /// (B, 6) f32: [orig_h, orig_w, crop_top, crop_left, target_h, target_w].
    pub time_ids: ValueId,
}

pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    /// What its graphs are built for (from the load context).
    pub target: crate::gpu::Target,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// `text_time` only: sinusoidal embedding of each time id, and the MLP over
    /// [text_embeds, time embeddings] whose output is added to the time embedding.
    add_time_proj: Option<Timesteps>,
    add_embedding: Option<TimestepEmbedding>,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock2D>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<UpBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    /// Load `dir/config.json` and the weights in `dir`; every tensor must be used.
    pub fn from_dir(ctx: Ctx, dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: UNet2DConditionConfig = read_config(&config_path)?;
        config.validate(&config_path)?;
        let weights = Weights::open(dir)?;
        let model = Self::load(ctx, &weights.root(), config)?;
        weights.finish()?;
        Ok(model)
    }

    pub fn load(ctx: Ctx, w: &WeightsView, config: UNet2DConditionConfig) -> Result<Self> {
        let c = &config;
        let n = c.block_out_channels.len();
        let ch = &c.block_out_channels;
        let temb = 4 * ch[0];
        let block = |i: usize, num_layers: usize, cross: bool| -> Result<BlockConfig> {
            let heads = c
                .heads(i)
                .ok_or_else(|| Error::shape("unet", format!("no attention heads for block {i}")))?;
            let layers = c.transformer_layers_per_block.get(i).unwrap_or(1);
            Ok(BlockConfig {
                num_layers,
                temb_channels: Some(temb),
                groups: c.norm_num_groups,
                eps: c.norm_eps,
                cross_attention: cross.then_some((heads, layers, c.cross_attention_dim)),
                use_linear_projection: c.use_linear_projection,
            })
        };

        let mut down_blocks = Vec::with_capacity(n);
        let mut output_channel = ch[0];
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = ch[i];
            let is_final = i + 1 == n;
            let bc = block(i, c.layers_per_block, kind == "CrossAttnDownBlock2D")?;
            let pad = (!is_final).then_some(c.downsample_padding);
            down_blocks.push(DownBlock2D::load(
                ctx,
                &w.pp("down_blocks").pp(i),
                input_channel,
                output_channel,
                &bc,
                pad,
            )?);
        }

        let mid_block = UNetMidBlock2DCrossAttn::load(
            ctx,
            &w.pp("mid_block"),
            ch[n - 1],
            &block(n - 1, 1, true)?,
        )?;

        // Up blocks mirror the down path: per-block lists are read reversed.
        let mut up_blocks = Vec::with_capacity(n);
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut output_channel = reversed[0];
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = reversed[i];
            let input_channel = reversed[(i + 1).min(n - 1)];
            let bc = block(
                n - 1 - i,
                c.layers_per_block + 1,
                kind == "CrossAttnUpBlock2D",
            )?;
            let channels = UpChannels {
                in_channels: input_channel,
                out_channels: output_channel,
                prev_output_channel,
                skips: true,
            };
            up_blocks.push(UpBlock2D::load(
                ctx,
                &w.pp("up_blocks").pp(i),
                channels,
                &bc,
                i + 1 < n,
            )?);
        }

        let text_time = c.text_time();
        Ok(UNet2DConditionModel {
            target: ctx.target.clone(),
            time_proj: Timesteps::new("time_proj", ch[0], c.flip_sin_to_cos, c.freq_shift),
            time_embedding: TimestepEmbedding::load(ctx, &w.pp("time_embedding"), ch[0], temb)?,
            add_time_proj: text_time.map(|t| {
                Timesteps::new(
                    "add_time_proj",
                    t.addition_time_embed_dim,
                    c.flip_sin_to_cos,
                    c.freq_shift,
                )
            }),
            add_embedding: text_time
                .map(|t| TimestepEmbedding::load(ctx, &w.pp("add_embedding"), t.input_dim, temb))
                .transpose()?,
            conv_in: layers::conv2d(
                ctx,
                &w.pp("conv_in"),
                c.in_channels,
                ch[0],
                c.conv_in_kernel,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: layers::group_norm(
                ctx,
                &w.pp("conv_norm_out"),
                c.norm_num_groups,
                ch[0],
                c.norm_eps,
            )?,
            conv_out: layers::conv2d(
                ctx,
                &w.pp("conv_out"),
                ch[0],
                c.out_channels,
                c.conv_out_kernel,
            )?,
            config,
        })
    }

    /// How many times the latent is halved: height and width must be multiples of 2^this.
    pub fn num_downsamples(&self) -> usize {
        self.config.block_out_channels.len() - 1
    }

    /// The `text_time` shapes (SDXL), if this UNet has them.
    pub fn text_time(&self) -> Option<TextTime> {
        self.config.text_time()
    }

    /// sample (B, h, w, in_channels), timestep (B) f32, context (B, S, cross_attention_dim)
    /// → (B, h, w, out_channels). Block boundaries are probes (see [`Graph::probe`]).
    pub fn forward(
        &self,
        g: &mut Graph,
        sample: ValueId,
        timestep: ValueId,
        context: ValueId,
    ) -> Result<ValueId> {
        self.forward_with(g, sample, timestep, context, None)
    }

    /// [`Self::forward`] with SDXL's added conditioning: text_embeds (B, P) and time_ids
    /// (B, 6) f32, required when the config has `addition_embed_type: "text_time"`.
    pub fn forward_with(
        &self,
        g: &mut Graph,
        sample: ValueId,
        timestep: ValueId,
        context: ValueId,
        added: Option<AddedCond>,
    ) -> Result<ValueId> {
        let shape = g.shape(sample)?;
        let factor = 1 << self.num_downsamples();
        if shape.len() != 4 || shape[1] % factor != 0 || shape[2] % factor != 0 {
            return Err(Error::shape(
                "unet",
                format!("latent {shape:?} must be (B, h, w, C) with h and w multiples of {factor}"),
            ));
        }
        // 1. time
        let t_emb = self.time_proj.forward(g, timestep)?; // (B, C0)
        g.probe("time_proj", t_emb)?;
        let mut emb = self.time_embedding.forward(g, t_emb)?; // (B, 4·C0)
        g.probe("time_embedding", emb)?;
        if let (Some(proj), Some(mlp)) = (&self.add_time_proj, &self.add_embedding) {
            let Some(added) = added else {
                return Err(Error::shape(
                    "unet",
                    "addition_embed_type \"text_time\" needs text_embeds and time_ids",
                ));
            };
            let b = g.shape(added.text_embeds)?[0];
            let ids = g.reshape(added.time_ids, &[b * NUM_TIME_IDS])?; // (B·6)
            let time_embeds = proj.forward(g, ids)?; // (B·6, A)
            let time_embeds = g.reshape(time_embeds, &[b, NUM_TIME_IDS * proj.options.dim])?; // (B, 6·A)
            let add_embeds =
                concat::concat_channels(g, "add_embeds", added.text_embeds, time_embeds)?; // (B, P + 6·A)
            let aug_emb = mlp.forward(g, add_embeds)?; // (B, 4·C0)
            g.probe("add_embedding", aug_emb)?;
            emb = elementwise::add(g, "time_embedding.add", emb, aug_emb)?; // (B, 4·C0)
        }
        // Every resnet applies SiLU to the embedding before its projection: do it once.
        let emb_act = elementwise::activation(g, "time_embedding.silu", emb, Activation::Silu)?;

        // 2. pre-process
        let pad = self.config.conv_in_kernel / 2;
        let mut x = split::conv2d(
            g,
            "conv_in",
            sample,
            &self.conv_in,
            Conv2dOptions::padded(pad),
        )?; // (B, h, w, C0)
        g.probe("conv_in", x)?;

        // 3. down
        let mut skips = vec![x];
        for (i, block) in self.down_blocks.iter().enumerate() {
            x = block.forward(g, x, Some(emb_act), Some(context), &mut skips)?;
            g.probe(&format!("down_blocks.{i}"), x)?;
        }

        // 4. mid
        x = self.mid_block.forward(g, x, emb_act, context)?;
        g.probe("mid_block", x)?;

        // 5. up
        for (i, block) in self.up_blocks.iter().enumerate() {
            x = block.forward(g, x, Some(emb_act), Some(context), Some(&mut skips))?;
            g.probe(&format!("up_blocks.{i}"), x)?;
        }

        // 6. post-process
        let h = group_norm::group_norm(g, "conv_norm_out", x, &self.conv_norm_out, true)?;
        g.probe("conv_act", h)?;
        let pad = self.config.conv_out_kernel / 2;
        split::conv2d(g, "conv_out", h, &self.conv_out, Conv2dOptions::padded(pad))
    }

    /// A graph with inputs `sample` (B, h, w, C), `timestep` (B) f32,
    /// `encoder_hidden_states` (B, S, D) and, for `text_time` UNets, `text_embeds` (B, P) and
    /// `time_ids` (B, 6) f32; output `out`.
    pub fn graph(
        &self,
        dtype: DType,
        batch: usize,
        latent: [usize; 2],
        context_len: usize,
        probes: bool,
    ) -> Result<Graph> {
        let mut g = Graph::for_target(dtype, &self.target);
        if probes {
            g = g.with_probes();
        }
        let c = &self.config;
        let sample = g.input("sample", &[batch, latent[0], latent[1], c.in_channels])?;
        let timestep = g.input_with_dtype("timestep", &[batch], DType::F32)?;
        let context = g.input(
            "encoder_hidden_states",
            &[batch, context_len, c.cross_attention_dim],
        )?;
        let added = match self.text_time() {
            Some(t) => Some(AddedCond {
                text_embeds: g.input("text_embeds", &[batch, t.text_embeds_dim])?,
                time_ids: g.input_with_dtype("time_ids", &[batch, NUM_TIME_IDS], DType::F32)?,
            }),
            None => None,
        };
        let out = self.forward_with(&mut g, sample, timestep, context, added)?;
        g.output("out", out)?;
        Ok(g)
    }
}
