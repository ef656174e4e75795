//! LDM `model.diffusion_model.*` ↔ diffusers `unet.*` (UNet2DConditionModel) names.
//!
//! LDM numbers the UNet's modules as flat lists; with `L = layers_per_block` and `n` levels:
//!
//! | LDM                                   | diffusers                                  |
//! |---------------------------------------|--------------------------------------------|
//! | `time_embed.0` / `time_embed.2`       | `time_embedding.linear_1` / `linear_2`     |
//! | `input_blocks.0.0`                    | `conv_in`                                  |
//! | `input_blocks.{1+i(L+1)+j}.0` / `.1`  | `down_blocks.i.resnets.j` / `attentions.j` |
//! | `input_blocks.{(i+1)(L+1)}.0.op`      | `down_blocks.i.downsamplers.0.conv`        |
//! | `middle_block.0` / `.1` / `.2`        | `mid_block.resnets.0` / `attentions.0` / `resnets.1` |
//! | `output_blocks.{i(L+1)+j}.0` / `.1`   | `up_blocks.i.resnets.j` / `attentions.j`   |
//! | `output_blocks.{i(L+1)+L}.{1 or 2}.conv` | `up_blocks.i.upsamplers.0.conv` (2 when the block has attention) |
//! | `out.0` / `out.2`                     | `conv_norm_out` / `conv_out`               |
//! | `label_emb.0.0` / `label_emb.0.2` (SDXL, `addition_embed_type` `text_time`) | `add_embedding.linear_1` / `linear_2` |
//!
//! Inside a resnet: `in_layers.0` → `norm1`, `in_layers.2` → `conv1`, `emb_layers.1` →
//! `time_emb_proj`, `out_layers.0` → `norm2`, `out_layers.3` → `conv2`, `skip_connection` →
//! `conv_shortcut`. Inside an attention (SpatialTransformer) the names are already diffusers'
//! (`norm`, `proj_in`, `transformer_blocks.k.attn1.to_q`, …, `proj_out`), so one prefix rule per
//! attention covers any `transformer_layers_per_block` (SDXL: none at level 0, 2 at level 1, 10
//! at level 2 and in the mid block). Levels without attention (SDXL's first) shift the upsampler
//! to `.1`, as the table says.

use super::table::Table;
use crate::models::config::UNet2DConditionConfig;

pub const LDM: &str = "model.diffusion_model.";
pub const DIFFUSERS: &str = "unet.";

/// LDM resnet (ResBlock) part → diffusers ResnetBlock2D part.
pub const RESNET: [(&str, &str); 6] = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

fn resnet(t: &mut Table, ldm: &str, diffusers: &str) {
    for (l, d) in RESNET {
        t.rename(
            format!("{LDM}{ldm}.{l}"),
            format!("{DIFFUSERS}{diffusers}.{d}"),
        );
    }
}

fn has_attention(block_type: Option<&String>) -> bool {
    block_type.is_some_and(|t| t.contains("CrossAttn"))
}

/// The table for a UNet of this config.
pub fn table(config: &UNet2DConditionConfig) -> Table {
    let mut t = Table::default();
    let n = config.block_out_channels.len();
    let l = config.layers_per_block;
    let r = |t: &mut Table, ldm: &str, d: &str| {
        t.rename(format!("{LDM}{ldm}."), format!("{DIFFUSERS}{d}."))
    };

    r(&mut t, "time_embed.0", "time_embedding.linear_1");
    r(&mut t, "time_embed.2", "time_embedding.linear_2");
    r(&mut t, "input_blocks.0.0", "conv_in");
    if config.addition_embed_type.as_deref() == Some("text_time") {
        r(&mut t, "label_emb.0.0", "add_embedding.linear_1");
        r(&mut t, "label_emb.0.2", "add_embedding.linear_2");
    }
    for i in 0..n {
        let attn = has_attention(config.down_block_types.get(i));
        for j in 0..l {
            let k = 1 + i * (l + 1) + j;
            resnet(
                &mut t,
                &format!("input_blocks.{k}.0"),
                &format!("down_blocks.{i}.resnets.{j}"),
            );
            if attn {
                r(
                    &mut t,
                    &format!("input_blocks.{k}.1"),
                    &format!("down_blocks.{i}.attentions.{j}"),
                );
            }
        }
        if i + 1 < n {
            let k = (i + 1) * (l + 1);
            r(
                &mut t,
                &format!("input_blocks.{k}.0.op"),
                &format!("down_blocks.{i}.downsamplers.0.conv"),
            );
        }
    }
    if config.mid_block_type.is_some() {
        resnet(&mut t, "middle_block.0", "mid_block.resnets.0");
        r(&mut t, "middle_block.1", "mid_block.attentions.0");
        resnet(&mut t, "middle_block.2", "mid_block.resnets.1");
    }
    for i in 0..n {
        let attn = has_attention(config.up_block_types.get(i));
        for j in 0..=l {
            let k = i * (l + 1) + j;
            resnet(
                &mut t,
                &format!("output_blocks.{k}.0"),
                &format!("up_blocks.{i}.resnets.{j}"),
            );
            if attn {
                r(
                    &mut t,
                    &format!("output_blocks.{k}.1"),
                    &format!("up_blocks.{i}.attentions.{j}"),
                );
            }
        }
        if i + 1 < n {
            let k = i * (l + 1) + l;
            let m = if attn { 2 } else { 1 };
            r(
                &mut t,
                &format!("output_blocks.{k}.{m}.conv"),
                &format!("up_blocks.{i}.upsamplers.0.conv"),
            );
        }
    }
    r(&mut t, "out.0", "conv_norm_out");
    r(&mut t, "out.2", "conv_out");
    t
}

#[cfg(test)]
mod tests {
    use super::super::table::Mapped;
    use super::*;

    /// Each LDM name (without `model.diffusion_model.`) and the diffusers name it must become
    /// (without `unet.`; `None`: no rule).
    fn check(config: &UNet2DConditionConfig, cases: &[(&str, Option<&str>)]) {
        let t = table(config);
        for (ldm, want) in cases {
            let got = match t.to_diffusers(&format!("{LDM}{ldm}")) {
                Mapped::Rename(d) => Some(d.strip_prefix(DIFFUSERS).unwrap().to_string()),
                Mapped::Unknown => None,
                other => panic!("{ldm}: {other:?}"),
            };
            assert_eq!(got.as_deref(), *want, "{ldm}");
        }
    }

    fn sd15(cases: &[(&str, Option<&str>)]) {
        check(&UNet2DConditionConfig::stable_diffusion_v1(), cases);
    }

    #[test]
    fn time_embedding_conv_in_and_out() {
        sd15(&[
            (
                "time_embed.0.weight",
                Some("time_embedding.linear_1.weight"),
            ),
            ("time_embed.2.bias", Some("time_embedding.linear_2.bias")),
            ("input_blocks.0.0.weight", Some("conv_in.weight")),
            ("out.0.weight", Some("conv_norm_out.weight")),
            ("out.2.bias", Some("conv_out.bias")),
        ]);
    }

    #[test]
    fn input_blocks_resnets_attentions_downsamplers() {
        sd15(&[
            (
                "input_blocks.1.0.in_layers.0.weight",
                Some("down_blocks.0.resnets.0.norm1.weight"),
            ),
            (
                "input_blocks.2.0.in_layers.2.bias",
                Some("down_blocks.0.resnets.1.conv1.bias"),
            ),
            (
                "input_blocks.4.0.emb_layers.1.weight",
                Some("down_blocks.1.resnets.0.time_emb_proj.weight"),
            ),
            (
                "input_blocks.4.0.out_layers.0.bias",
                Some("down_blocks.1.resnets.0.norm2.bias"),
            ),
            (
                "input_blocks.4.0.out_layers.3.weight",
                Some("down_blocks.1.resnets.0.conv2.weight"),
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                Some("down_blocks.1.resnets.0.conv_shortcut.weight"),
            ),
            (
                "input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight",
                Some("down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"),
            ),
            (
                "input_blocks.3.0.op.weight",
                Some("down_blocks.0.downsamplers.0.conv.weight"),
            ),
            (
                "input_blocks.9.0.op.bias",
                Some("down_blocks.2.downsamplers.0.conv.bias"),
            ),
            // The last level (DownBlock2D) has resnets only and no downsampler.
            (
                "input_blocks.11.0.in_layers.0.weight",
                Some("down_blocks.3.resnets.1.norm1.weight"),
            ),
            ("input_blocks.10.1.norm.weight", None),
            ("input_blocks.12.0.op.weight", None),
        ]);
    }

    #[test]
    fn middle_block() {
        sd15(&[
            (
                "middle_block.0.in_layers.0.weight",
                Some("mid_block.resnets.0.norm1.weight"),
            ),
            (
                "middle_block.1.proj_in.weight",
                Some("mid_block.attentions.0.proj_in.weight"),
            ),
            (
                "middle_block.2.out_layers.3.bias",
                Some("mid_block.resnets.1.conv2.bias"),
            ),
        ]);
    }

    #[test]
    fn output_blocks_resnets_attentions_upsamplers() {
        sd15(&[
            // Level 0 (UpBlock2D): no attention, upsampler at index 1.
            (
                "output_blocks.0.0.skip_connection.bias",
                Some("up_blocks.0.resnets.0.conv_shortcut.bias"),
            ),
            (
                "output_blocks.2.1.conv.weight",
                Some("up_blocks.0.upsamplers.0.conv.weight"),
            ),
            // Level 1 (CrossAttnUpBlock2D): attention at .1, upsampler at index 2.
            (
                "output_blocks.3.1.proj_out.weight",
                Some("up_blocks.1.attentions.0.proj_out.weight"),
            ),
            (
                "output_blocks.5.1.transformer_blocks.0.ff.net.0.proj.weight",
                Some("up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj.weight"),
            ),
            (
                "output_blocks.5.2.conv.bias",
                Some("up_blocks.1.upsamplers.0.conv.bias"),
            ),
            // Last level: no upsampler.
            (
                "output_blocks.11.0.in_layers.2.weight",
                Some("up_blocks.3.resnets.2.conv1.weight"),
            ),
            ("output_blocks.11.2.conv.weight", None),
        ]);
    }

    #[test]
    fn other_layers_per_block() {
        let mut c = UNet2DConditionConfig::stable_diffusion_v1();
        c.layers_per_block = 1;
        check(
            &c,
            &[
                (
                    "input_blocks.2.0.op.weight",
                    Some("down_blocks.0.downsamplers.0.conv.weight"),
                ),
                (
                    "input_blocks.3.1.norm.bias",
                    Some("down_blocks.1.attentions.0.norm.bias"),
                ),
                (
                    "output_blocks.1.1.conv.weight",
                    Some("up_blocks.0.upsamplers.0.conv.weight"),
                ),
            ],
        );
    }

    /// SDXL base: 3 levels (no attention at level 0), 2 resnets per level, text_time.
    fn sdxl() -> UNet2DConditionConfig {
        let p = crate::weights::published_configs::Family::SdxlBase.configs();
        serde_json::from_value(p.unet).unwrap()
    }

    #[test]
    fn sdxl_blocks_and_label_emb() {
        check(
            &sdxl(),
            &[
                (
                    "label_emb.0.0.weight",
                    Some("add_embedding.linear_1.weight"),
                ),
                ("label_emb.0.2.bias", Some("add_embedding.linear_2.bias")),
                ("input_blocks.1.1.norm.weight", None),
                (
                    "input_blocks.3.0.op.weight",
                    Some("down_blocks.0.downsamplers.0.conv.weight"),
                ),
                (
                    "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
                    Some("down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"),
                ),
                (
                    "input_blocks.8.1.transformer_blocks.9.ff.net.2.bias",
                    Some("down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2.bias"),
                ),
                ("input_blocks.9.0.op.weight", None),
                (
                    "middle_block.1.transformer_blocks.9.norm3.weight",
                    Some("mid_block.attentions.0.transformer_blocks.9.norm3.weight"),
                ),
                (
                    "output_blocks.2.2.conv.weight",
                    Some("up_blocks.0.upsamplers.0.conv.weight"),
                ),
                (
                    "output_blocks.5.2.conv.bias",
                    Some("up_blocks.1.upsamplers.0.conv.bias"),
                ),
                (
                    "output_blocks.8.0.skip_connection.weight",
                    Some("up_blocks.2.resnets.2.conv_shortcut.weight"),
                ),
                ("output_blocks.8.1.norm.weight", None),
            ],
        );
        let sd15 = table(&UNet2DConditionConfig::stable_diffusion_v1());
        assert_eq!(
            sd15.to_diffusers("model.diffusion_model.label_emb.0.0.weight"),
            Mapped::Unknown
        );
    }

    #[test]
    fn every_rule_inverts() {
        let t = table(&UNet2DConditionConfig::stable_diffusion_v1());
        for rule in &t.rules {
            let probe = format!("{}weight", rule.ldm);
            let Mapped::Rename(d) = t.to_diffusers(&probe) else {
                panic!("{probe}")
            };
            assert_eq!(t.to_ldm(&d).unwrap().ldm, probe);
        }
    }
}
