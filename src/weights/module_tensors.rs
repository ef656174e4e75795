//! The tensors (diffusers / transformers names and torch shapes) that a module with a given
//! config holds: what `save_pretrained` writes for `UNet2DConditionModel`, `AutoencoderKL` and
//! `CLIPTextModel`. Used to write random checkpoints of real size (`stipple init-random`); the
//! lists are checked against names and shapes taken from diffusers itself
//! (tests/init_random.rs, fixtures from tools/golden/full_size_names_golden.py).

use crate::models::config::{AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};

/// `(name, shape)` in a module's state-dict order.
pub type TensorList = Vec<(String, Vec<usize>)>;

struct Builder {
    tensors: TensorList,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize]) {
        self.tensors.push((name, shape.to_vec()));
    }

    /// `nn.Linear(cin, cout)`: weight (cout, cin) and optionally bias (cout).
    fn linear(&mut self, p: &str, cin: usize, cout: usize, bias: bool) {
        self.add(format!("{p}.weight"), &[cout, cin]);
        if bias {
            self.add(format!("{p}.bias"), &[cout]);
        }
    }

    /// `nn.Conv2d(cin, cout, k)` with bias.
    fn conv(&mut self, p: &str, cin: usize, cout: usize, k: usize) {
        self.add(format!("{p}.weight"), &[cout, cin, k, k]);
        self.add(format!("{p}.bias"), &[cout]);
    }

    /// GroupNorm / LayerNorm affine parameters.
    fn norm(&mut self, p: &str, c: usize) {
        self.add(format!("{p}.weight"), &[c]);
        self.add(format!("{p}.bias"), &[c]);
    }

    /// `ResnetBlock2D(cin, cout, temb_channels)`; `temb` None for the VAE's blocks.
    fn resnet(&mut self, p: &str, cin: usize, cout: usize, temb: Option<usize>) {
        self.norm(&format!("{p}.norm1"), cin);
        self.conv(&format!("{p}.conv1"), cin, cout, 3);
        if let Some(t) = temb {
            self.linear(&format!("{p}.time_emb_proj"), t, cout, true);
        }
        self.norm(&format!("{p}.norm2"), cout);
        self.conv(&format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            self.conv(&format!("{p}.conv_shortcut"), cin, cout, 1);
        }
    }

    /// `Transformer2DModel` over `c` channels (inner dim = c) with `layers` BasicTransformerBlocks.
    fn transformer(&mut self, p: &str, c: usize, layers: usize, cross: usize, linear_proj: bool) {
        self.norm(&format!("{p}.norm"), c);
        let proj = |b: &mut Builder, name: &str| {
            if linear_proj {
                b.linear(&format!("{p}.{name}"), c, c, true);
            } else {
                b.conv(&format!("{p}.{name}"), c, c, 1);
            }
        };
        proj(self, "proj_in");
        for t in 0..layers {
            let b = format!("{p}.transformer_blocks.{t}");
            self.norm(&format!("{b}.norm1"), c);
            self.attention(&format!("{b}.attn1"), c, c, false);
            self.norm(&format!("{b}.norm2"), c);
            self.attention(&format!("{b}.attn2"), c, cross, false);
            self.norm(&format!("{b}.norm3"), c);
            // GEGLU: one projection to 2 × 4c, then 4c → c.
            self.linear(&format!("{b}.ff.net.0.proj"), c, 8 * c, true);
            self.linear(&format!("{b}.ff.net.2"), 4 * c, c, true);
        }
        proj(self, "proj_out");
    }

    /// `Attention(query_dim = c, cross_attention_dim = kv)`: q/k/v with bias only in the VAE.
    fn attention(&mut self, p: &str, c: usize, kv: usize, qkv_bias: bool) {
        self.linear(&format!("{p}.to_q"), c, c, qkv_bias);
        self.linear(&format!("{p}.to_k"), kv, c, qkv_bias);
        self.linear(&format!("{p}.to_v"), kv, c, qkv_bias);
        self.linear(&format!("{p}.to_out.0"), c, c, true);
    }
}

/// `UNet2DConditionModel` (CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn,
/// UpBlock2D / CrossAttnUpBlock2D: the blocks stipple implements).
pub fn unet(c: &UNet2DConditionConfig) -> TensorList {
    let mut b = Builder {
        tensors: Vec::new(),
    };
    let ch = &c.block_out_channels;
    let n = ch.len();
    let temb = 4 * ch[0];
    let layers = |i: usize| c.transformer_layers_per_block.get(i).unwrap_or(1);
    let cross = c.cross_attention_dim;
    let lin = c.use_linear_projection;

    b.conv("conv_in", c.in_channels, ch[0], c.conv_in_kernel);
    b.linear("time_embedding.linear_1", ch[0], temb, true);
    b.linear("time_embedding.linear_2", temb, temb, true);
    if c.addition_embed_type.as_deref() == Some("text_time") {
        // SDXL: pooled text embedding ‖ sinusoidal time ids → the time embedding's width.
        let input = c.projection_class_embeddings_input_dim.unwrap_or(0);
        b.linear("add_embedding.linear_1", input, temb, true);
        b.linear("add_embedding.linear_2", temb, temb, true);
    }

    let mut out = ch[0];
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let (cin, cout) = (out, ch[i]);
        out = cout;
        for j in 0..c.layers_per_block {
            let p = format!("down_blocks.{i}");
            b.resnet(
                &format!("{p}.resnets.{j}"),
                if j == 0 { cin } else { cout },
                cout,
                Some(temb),
            );
            if kind == "CrossAttnDownBlock2D" {
                b.transformer(&format!("{p}.attentions.{j}"), cout, layers(i), cross, lin);
            }
        }
        if i + 1 < n {
            b.conv(
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
    }

    let last = ch[n - 1];
    b.resnet("mid_block.resnets.0", last, last, Some(temb));
    b.transformer("mid_block.attentions.0", last, layers(n - 1), cross, lin);
    b.resnet("mid_block.resnets.1", last, last, Some(temb));

    let reversed: Vec<usize> = ch.iter().rev().copied().collect();
    let mut prev = reversed[0];
    for (i, kind) in c.up_block_types.iter().enumerate() {
        let cout = reversed[i];
        let cin = reversed[(i + 1).min(n - 1)];
        let num_layers = c.layers_per_block + 1;
        for j in 0..num_layers {
            let skip = if j + 1 == num_layers { cin } else { cout };
            let res_in = if j == 0 { prev } else { cout };
            let p = format!("up_blocks.{i}");
            b.resnet(&format!("{p}.resnets.{j}"), res_in + skip, cout, Some(temb));
            if kind == "CrossAttnUpBlock2D" {
                b.transformer(
                    &format!("{p}.attentions.{j}"),
                    cout,
                    layers(n - 1 - i),
                    cross,
                    lin,
                );
            }
        }
        if i + 1 < n {
            b.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), cout, cout, 3);
        }
        prev = cout;
    }

    b.norm("conv_norm_out", ch[0]);
    b.conv("conv_out", ch[0], c.out_channels, c.conv_out_kernel);
    b.tensors
}

/// `AutoencoderKL` (DownEncoderBlock2D / UpDecoderBlock2D, mid-block attention).
pub fn autoencoder_kl(c: &AutoencoderKLConfig) -> TensorList {
    let mut b = Builder {
        tensors: Vec::new(),
    };
    let ch = &c.block_out_channels;
    let n = ch.len();
    let last = ch[n - 1];
    let latent = c.latent_channels;
    let mid = |b: &mut Builder, p: &str| {
        b.resnet(&format!("{p}.resnets.0"), last, last, None);
        if c.mid_block_add_attention {
            let a = format!("{p}.attentions.0");
            b.norm(&format!("{a}.group_norm"), last);
            b.attention(&a, last, last, true);
        }
        b.resnet(&format!("{p}.resnets.1"), last, last, None);
    };

    b.conv("encoder.conv_in", c.in_channels, ch[0], 3);
    let mut out = ch[0];
    for (i, &cout) in ch.iter().enumerate().take(n) {
        let cin = out;
        out = cout;
        for j in 0..c.layers_per_block {
            let res_in = if j == 0 { cin } else { cout };
            b.resnet(
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                res_in,
                cout,
                None,
            );
        }
        if i + 1 < n {
            b.conv(
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
    }
    mid(&mut b, "encoder.mid_block");
    b.norm("encoder.conv_norm_out", last);
    b.conv("encoder.conv_out", last, 2 * latent, 3);
    if c.use_quant_conv {
        b.conv("quant_conv", 2 * latent, 2 * latent, 1);
    }
    if c.use_post_quant_conv {
        b.conv("post_quant_conv", latent, latent, 1);
    }

    b.conv("decoder.conv_in", latent, last, 3);
    mid(&mut b, "decoder.mid_block");
    let mut prev = last;
    for i in 0..n {
        let cout = ch[n - 1 - i];
        for j in 0..=c.layers_per_block {
            let res_in = if j == 0 { prev } else { cout };
            b.resnet(
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                res_in,
                cout,
                None,
            );
        }
        if i + 1 < n {
            b.conv(
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
        prev = cout;
    }
    b.norm("decoder.conv_norm_out", ch[0]);
    b.conv("decoder.conv_out", ch[0], c.out_channels, 3);
    b.tensors
}

/// `CLIPTextModel`, names under `text_model.` as the Hub's SD checkpoints have them.
pub fn clip_text_model(c: &ClipTextConfig) -> TensorList {
    let mut b = Builder {
        tensors: Vec::new(),
    };
    let d = c.hidden_size;
    b.add(
        "text_model.embeddings.token_embedding.weight".into(),
        &[c.vocab_size, d],
    );
    b.add(
        "text_model.embeddings.position_embedding.weight".into(),
        &[c.max_position_embeddings, d],
    );
    for l in 0..c.num_hidden_layers {
        let p = format!("text_model.encoder.layers.{l}");
        for proj in ["k_proj", "v_proj", "q_proj", "out_proj"] {
            b.linear(&format!("{p}.self_attn.{proj}"), d, d, true);
        }
        b.norm(&format!("{p}.layer_norm1"), d);
        b.linear(&format!("{p}.mlp.fc1"), d, c.intermediate_size, true);
        b.linear(&format!("{p}.mlp.fc2"), c.intermediate_size, d, true);
        b.norm(&format!("{p}.layer_norm2"), d);
    }
    b.norm("text_model.final_layer_norm", d);
    b.tensors
}

/// `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`): the text model and
/// `text_projection` (no bias).
pub fn clip_text_model_with_projection(c: &ClipTextConfig) -> TensorList {
    let mut list = clip_text_model(c);
    list.push((
        "text_projection.weight".into(),
        vec![c.projection_dim, c.hidden_size],
    ));
    list
}
