//! LDM `first_stage_model.*` ↔ diffusers `vae.*` (AutoencoderKL) names.
//!
//! | LDM                                        | diffusers                                    |
//! |--------------------------------------------|----------------------------------------------|
//! | `encoder.down.i.block.j`                   | `encoder.down_blocks.i.resnets.j`            |
//! | `encoder.down.i.downsample.conv`           | `encoder.down_blocks.i.downsamplers.0.conv`  |
//! | `decoder.up.{n−1−i}.block.j`               | `decoder.up_blocks.i.resnets.j` (LDM counts levels from the top) |
//! | `decoder.up.{n−1−i}.upsample.conv`         | `decoder.up_blocks.i.upsamplers.0.conv`      |
//! | `{en,de}coder.mid.block_1` / `block_2`     | `…mid_block.resnets.0` / `resnets.1`         |
//! | `{en,de}coder.mid.attn_1.{norm,q,k,v,proj_out}` | `…mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}` |
//! | `{en,de}coder.norm_out`                    | `…conv_norm_out`                             |
//! | `conv_in`, `conv_out`, `quant_conv`, `post_quant_conv` | same                             |
//!
//! Inside a resnet only `nin_shortcut` → `conv_shortcut` changes. The attention's q/k/v/proj_out
//! weights are 1×1 convolutions `(C, C, 1, 1)` in LDM and linear `(C, C)` in diffusers.

use super::table::Table;
use crate::models::config::AutoencoderKLConfig;

pub const LDM: &str = "first_stage_model.";
pub const DIFFUSERS: &str = "vae.";

/// LDM VAE ResnetBlock part → diffusers ResnetBlock2D part.
const RESNET: [(&str, &str); 5] = [
    ("norm1.", "norm1."),
    ("conv1.", "conv1."),
    ("norm2.", "norm2."),
    ("conv2.", "conv2."),
    ("nin_shortcut.", "conv_shortcut."),
];

/// LDM AttnBlock part → diffusers Attention part; `true` for the 1×1 convs squeezed to linear.
const ATTENTION: [(&str, &str, bool); 5] = [
    ("norm", "group_norm", false),
    ("q", "to_q", true),
    ("k", "to_k", true),
    ("v", "to_v", true),
    ("proj_out", "to_out.0", true),
];

fn resnet(t: &mut Table, ldm: &str, diffusers: &str) {
    for (l, d) in RESNET {
        t.rename(
            format!("{LDM}{ldm}.{l}"),
            format!("{DIFFUSERS}{diffusers}.{d}"),
        );
    }
}

fn mid_block(t: &mut Table, coder: &str, attention: bool) {
    resnet(
        t,
        &format!("{coder}.mid.block_1"),
        &format!("{coder}.mid_block.resnets.0"),
    );
    resnet(
        t,
        &format!("{coder}.mid.block_2"),
        &format!("{coder}.mid_block.resnets.1"),
    );
    if !attention {
        return;
    }
    for (l, d, squeeze) in ATTENTION {
        let (l, d) = (
            format!("{LDM}{coder}.mid.attn_1.{l}"),
            format!("{DIFFUSERS}{coder}.mid_block.attentions.0.{d}"),
        );
        if squeeze {
            t.squeeze(format!("{l}.weight"), format!("{d}.weight"));
            t.rename(format!("{l}.bias"), format!("{d}.bias"));
        } else {
            t.rename(format!("{l}."), format!("{d}."));
        }
    }
}

/// The table for a VAE of this config.
pub fn table(config: &AutoencoderKLConfig) -> Table {
    let mut t = Table::default();
    let n = config.block_out_channels.len();
    let l = config.layers_per_block;
    let r = |t: &mut Table, ldm: &str, d: &str| {
        t.rename(format!("{LDM}{ldm}."), format!("{DIFFUSERS}{d}."))
    };
    for part in [
        "encoder.conv_in",
        "encoder.conv_out",
        "decoder.conv_in",
        "decoder.conv_out",
        "quant_conv",
        "post_quant_conv",
    ] {
        r(&mut t, part, part);
    }
    r(&mut t, "encoder.norm_out", "encoder.conv_norm_out");
    r(&mut t, "decoder.norm_out", "decoder.conv_norm_out");
    for i in 0..n {
        for j in 0..l {
            resnet(
                &mut t,
                &format!("encoder.down.{i}.block.{j}"),
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
            );
        }
        if i + 1 < n {
            r(
                &mut t,
                &format!("encoder.down.{i}.downsample.conv"),
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
            );
        }
        let up = n - 1 - i;
        for j in 0..=l {
            resnet(
                &mut t,
                &format!("decoder.up.{up}.block.{j}"),
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
            );
        }
        if i + 1 < n {
            r(
                &mut t,
                &format!("decoder.up.{up}.upsample.conv"),
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
            );
        }
    }
    for coder in ["encoder", "decoder"] {
        mid_block(&mut t, coder, config.mid_block_add_attention);
    }
    // Training-only LPIPS/discriminator weights some checkpoints carry.
    t.ignore.push(format!("{LDM}loss."));
    t
}

#[cfg(test)]
mod tests {
    use super::super::table::{Mapped, Part};
    use super::*;

    /// Each LDM name (without `first_stage_model.`) and what it must become (without `vae.`).
    fn check(cases: &[(&str, Mapped)]) {
        let t = table(&AutoencoderKLConfig::stable_diffusion());
        let strip = |d: &String| d.strip_prefix(DIFFUSERS).unwrap().to_string();
        for (ldm, want) in cases {
            let got = match t.to_diffusers(&format!("{LDM}{ldm}")) {
                Mapped::Rename(d) => Mapped::Rename(strip(&d)),
                Mapped::Squeeze(d) => Mapped::Squeeze(strip(&d)),
                other => other,
            };
            assert_eq!(&got, want, "{ldm}");
        }
    }

    fn rn(s: &str) -> Mapped {
        Mapped::Rename(s.into())
    }

    #[test]
    fn encoder() {
        check(&[
            ("encoder.conv_in.weight", rn("encoder.conv_in.weight")),
            (
                "encoder.down.0.block.1.norm1.bias",
                rn("encoder.down_blocks.0.resnets.1.norm1.bias"),
            ),
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                rn("encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
            ),
            (
                "encoder.down.2.downsample.conv.weight",
                rn("encoder.down_blocks.2.downsamplers.0.conv.weight"),
            ),
            ("encoder.down.3.downsample.conv.weight", Mapped::Unknown),
            (
                "encoder.norm_out.weight",
                rn("encoder.conv_norm_out.weight"),
            ),
            ("quant_conv.bias", rn("quant_conv.bias")),
        ]);
    }

    #[test]
    fn decoder_levels_are_reversed() {
        check(&[
            (
                "decoder.up.3.block.0.conv1.weight",
                rn("decoder.up_blocks.0.resnets.0.conv1.weight"),
            ),
            (
                "decoder.up.0.block.2.conv2.bias",
                rn("decoder.up_blocks.3.resnets.2.conv2.bias"),
            ),
            (
                "decoder.up.3.upsample.conv.weight",
                rn("decoder.up_blocks.0.upsamplers.0.conv.weight"),
            ),
            ("decoder.up.0.upsample.conv.weight", Mapped::Unknown),
            ("post_quant_conv.weight", rn("post_quant_conv.weight")),
        ]);
    }

    #[test]
    fn mid_block_attention_is_squeezed() {
        check(&[
            (
                "decoder.mid.block_1.conv1.weight",
                rn("decoder.mid_block.resnets.0.conv1.weight"),
            ),
            (
                "encoder.mid.block_2.norm2.bias",
                rn("encoder.mid_block.resnets.1.norm2.bias"),
            ),
            (
                "decoder.mid.attn_1.norm.weight",
                rn("decoder.mid_block.attentions.0.group_norm.weight"),
            ),
            (
                "decoder.mid.attn_1.q.weight",
                Mapped::Squeeze("decoder.mid_block.attentions.0.to_q.weight".into()),
            ),
            (
                "encoder.mid.attn_1.v.bias",
                rn("encoder.mid_block.attentions.0.to_v.bias"),
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                Mapped::Squeeze("encoder.mid_block.attentions.0.to_out.0.weight".into()),
            ),
            ("loss.discriminator.main.0.weight", Mapped::Ignored),
        ]);
        let t = table(&AutoencoderKLConfig::stable_diffusion());
        let back = t
            .to_ldm("vae.encoder.mid_block.attentions.0.to_k.weight")
            .unwrap();
        assert_eq!(back.ldm, "first_stage_model.encoder.mid.attn_1.k.weight");
        assert_eq!(back.part, Part::Squeezed);
    }
}
