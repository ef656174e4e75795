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
//!
//! Inside a resnet: `in_layers.0` → `norm1`, `in_layers.2` → `conv1`, `emb_layers.1` →
//! `time_emb_proj`, `out_layers.0` → `norm2`, `out_layers.3` → `conv2`, `skip_connection` →
//! `conv_shortcut`. Inside an attention (SpatialTransformer) the names are already diffusers'
//! (`norm`, `proj_in`, `transformer_blocks.0.attn1.to_q`, …, `proj_out`).

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

    fn sd15() -> Table {
        table(&UNet2DConditionConfig::stable_diffusion_v1())
    }

    fn to_d(t: &Table, ldm: &str) -> String {
        match t.to_diffusers(&format!("{LDM}{ldm}")) {
            Mapped::Rename(d) => d.strip_prefix(DIFFUSERS).unwrap().to_string(),
            other => panic!("{ldm}: {other:?}"),
        }
    }

    #[test]
    fn time_embedding_conv_in_and_out() {
        let t = sd15();
        assert_eq!(
            to_d(&t, "time_embed.0.weight"),
            "time_embedding.linear_1.weight"
        );
        assert_eq!(
            to_d(&t, "time_embed.2.bias"),
            "time_embedding.linear_2.bias"
        );
        assert_eq!(to_d(&t, "input_blocks.0.0.weight"), "conv_in.weight");
        assert_eq!(to_d(&t, "out.0.weight"), "conv_norm_out.weight");
        assert_eq!(to_d(&t, "out.2.bias"), "conv_out.bias");
    }

    #[test]
    fn input_blocks_resnets_attentions_downsamplers() {
        let t = sd15();
        assert_eq!(
            to_d(&t, "input_blocks.1.0.in_layers.0.weight"),
            "down_blocks.0.resnets.0.norm1.weight"
        );
        assert_eq!(
            to_d(&t, "input_blocks.2.0.in_layers.2.bias"),
            "down_blocks.0.resnets.1.conv1.bias"
        );
        assert_eq!(
            to_d(&t, "input_blocks.4.0.emb_layers.1.weight"),
            "down_blocks.1.resnets.0.time_emb_proj.weight"
        );
        assert_eq!(
            to_d(&t, "input_blocks.4.0.out_layers.0.bias"),
            "down_blocks.1.resnets.0.norm2.bias"
        );
        assert_eq!(
            to_d(&t, "input_blocks.4.0.out_layers.3.weight"),
            "down_blocks.1.resnets.0.conv2.weight"
        );
        assert_eq!(
            to_d(&t, "input_blocks.4.0.skip_connection.weight"),
            "down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            to_d(
                &t,
                "input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"
            ),
            "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"
        );
        assert_eq!(
            to_d(&t, "input_blocks.3.0.op.weight"),
            "down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            to_d(&t, "input_blocks.9.0.op.bias"),
            "down_blocks.2.downsamplers.0.conv.bias"
        );
        // The last level (DownBlock2D) has resnets only.
        assert_eq!(
            to_d(&t, "input_blocks.11.0.in_layers.0.weight"),
            "down_blocks.3.resnets.1.norm1.weight"
        );
        assert_eq!(
            t.to_diffusers(&format!("{LDM}input_blocks.10.1.norm.weight")),
            Mapped::Unknown
        );
        assert_eq!(
            t.to_diffusers(&format!("{LDM}input_blocks.12.0.op.weight")),
            Mapped::Unknown
        );
    }

    #[test]
    fn middle_block() {
        let t = sd15();
        assert_eq!(
            to_d(&t, "middle_block.0.in_layers.0.weight"),
            "mid_block.resnets.0.norm1.weight"
        );
        assert_eq!(
            to_d(&t, "middle_block.1.proj_in.weight"),
            "mid_block.attentions.0.proj_in.weight"
        );
        assert_eq!(
            to_d(&t, "middle_block.2.out_layers.3.bias"),
            "mid_block.resnets.1.conv2.bias"
        );
    }

    #[test]
    fn output_blocks_resnets_attentions_upsamplers() {
        let t = sd15();
        // Level 0 (UpBlock2D): no attention, upsampler at index 1.
        assert_eq!(
            to_d(&t, "output_blocks.0.0.skip_connection.bias"),
            "up_blocks.0.resnets.0.conv_shortcut.bias"
        );
        assert_eq!(
            to_d(&t, "output_blocks.2.1.conv.weight"),
            "up_blocks.0.upsamplers.0.conv.weight"
        );
        // Level 1 (CrossAttnUpBlock2D): attention at .1, upsampler at index 2.
        assert_eq!(
            to_d(&t, "output_blocks.3.1.proj_out.weight"),
            "up_blocks.1.attentions.0.proj_out.weight"
        );
        assert_eq!(
            to_d(
                &t,
                "output_blocks.5.1.transformer_blocks.0.ff.net.0.proj.weight"
            ),
            "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj.weight"
        );
        assert_eq!(
            to_d(&t, "output_blocks.5.2.conv.bias"),
            "up_blocks.1.upsamplers.0.conv.bias"
        );
        // Last level: no upsampler.
        assert_eq!(
            to_d(&t, "output_blocks.11.0.in_layers.2.weight"),
            "up_blocks.3.resnets.2.conv1.weight"
        );
        assert_eq!(
            t.to_diffusers(&format!("{LDM}output_blocks.11.2.conv.weight")),
            Mapped::Unknown
        );
    }

    #[test]
    fn other_layers_per_block() {
        let mut c = UNet2DConditionConfig::stable_diffusion_v1();
        c.layers_per_block = 1;
        let t = table(&c);
        assert_eq!(
            to_d(&t, "input_blocks.2.0.op.weight"),
            "down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            to_d(&t, "input_blocks.3.1.norm.bias"),
            "down_blocks.1.attentions.0.norm.bias"
        );
        assert_eq!(
            to_d(&t, "output_blocks.1.1.conv.weight"),
            "up_blocks.0.upsamplers.0.conv.weight"
        );
    }

    #[test]
    fn every_rule_inverts() {
        let t = sd15();
        for rule in &t.rules {
            let probe = format!("{}weight", rule.ldm);
            let Mapped::Rename(d) = t.to_diffusers(&probe) else {
                panic!("{probe}")
            };
            assert_eq!(t.to_ldm(&d).unwrap().ldm, probe);
        }
    }
}
