//! LDM text-encoder names ↔ diffusers `text_encoder.*` (transformers CLIPTextModel) names.
//!
//! - SD1.x, OpenAI CLIP ViT-L/14 in transformers' layout: `cond_stage_model.transformer.` →
//!   `text_encoder.` (the rest, `text_model.embeddings.…`, is already transformers' name).
//! - SD2.x, OpenCLIP ViT-H/14 (`cond_stage_model.model.`):
//!
//! | OpenCLIP                                   | transformers                                   |
//! |--------------------------------------------|------------------------------------------------|
//! | `token_embedding.weight`                   | `text_model.embeddings.token_embedding.weight` |
//! | `positional_embedding`                     | `text_model.embeddings.position_embedding.weight` |
//! | `transformer.resblocks.i.ln_1` / `ln_2`    | `text_model.encoder.layers.i.layer_norm1` / `layer_norm2` |
//! | `transformer.resblocks.i.attn.in_proj_weight` (3D, D) | rows `[0,D)`, `[D,2D)`, `[2D,3D)` → `self_attn.{q,k,v}_proj.weight` |
//! | `transformer.resblocks.i.attn.in_proj_bias` (3D)      | `self_attn.{q,k,v}_proj.bias` likewise |
//! | `transformer.resblocks.i.attn.out_proj`    | `…layers.i.self_attn.out_proj`                 |
//! | `transformer.resblocks.i.mlp.c_fc` / `c_proj` | `…layers.i.mlp.fc1` / `fc2`                 |
//! | `ln_final`                                 | `text_model.final_layer_norm`                  |
//!
//! SD2 uses the output of OpenCLIP's penultimate block: diffusers' SD2 text encoder has 23 of
//! the 24 layers, so `resblocks.i` for `i ≥ num_hidden_layers`, `text_projection` and
//! `logit_scale` are ignored.
//!
//! - SDXL (`conditioner.embedders.*`): `embedders.0.transformer.` is CLIP ViT-L/14 in
//!   transformers' layout → `text_encoder.` (a prefix swap, as SD1's);
//!   `embedders.1.model.` is OpenCLIP ViT-bigG/14 → `text_encoder_2.` with the table above
//!   for all of its layers (SDXL reads `hidden_states[-2]` itself), and its `text_projection`
//!   `(D, P)`, applied as `x @ P`, read transposed as the Linear weight
//!   `text_encoder_2.text_projection.weight` `(P, D)` (`CLIPTextModelWithProjection`).

use super::table::Table;
use crate::models::config::ClipTextConfig;

pub const SD1_LDM: &str = "cond_stage_model.transformer.";
pub const OPEN_CLIP_LDM: &str = "cond_stage_model.model.";
pub const DIFFUSERS: &str = "text_encoder.";
pub const SDXL_CLIP_L_LDM: &str = "conditioner.embedders.0.transformer.";
pub const SDXL_OPEN_CLIP_LDM: &str = "conditioner.embedders.1.model.";
pub const DIFFUSERS_2: &str = "text_encoder_2.";

/// How many OpenCLIP blocks past the config's layers are listed as ignored (ViT-bigG has 32).
const MAX_EXTRA_LAYERS: usize = 64;

/// SD1.x: a prefix swap.
pub fn sd1_table() -> Table {
    let mut t = Table::default();
    t.rename(SD1_LDM, DIFFUSERS);
    t
}

/// SD2.x: OpenCLIP → CLIPTextModel with `config.num_hidden_layers` layers.
pub fn open_clip_table(config: &ClipTextConfig) -> Table {
    open_clip_at(config, OPEN_CLIP_LDM, DIFFUSERS, false)
}

/// SDXL: CLIP-L → `text_encoder`, OpenCLIP bigG → `text_encoder_2` (`config_2`) with its
/// projection.
pub fn sdxl_table(config_2: &ClipTextConfig) -> Table {
    let mut t = Table::default();
    t.rename(SDXL_CLIP_L_LDM, DIFFUSERS);
    t.extend(open_clip_at(
        config_2,
        SDXL_OPEN_CLIP_LDM,
        DIFFUSERS_2,
        true,
    ));
    t
}

/// OpenCLIP under `ldm` → CLIPTextModel(WithProjection) under `diffusers`.
fn open_clip_at(config: &ClipTextConfig, ldm: &str, diffusers: &str, projection: bool) -> Table {
    let mut t = Table::default();
    let (l, d) = (ldm, format!("{diffusers}text_model."));
    t.rename(
        format!("{l}token_embedding.weight"),
        format!("{d}embeddings.token_embedding.weight"),
    );
    t.rename(
        format!("{l}positional_embedding"),
        format!("{d}embeddings.position_embedding.weight"),
    );
    t.rename(format!("{l}ln_final."), format!("{d}final_layer_norm."));
    for i in 0..config.num_hidden_layers {
        let (lb, db) = (
            format!("{l}transformer.resblocks.{i}."),
            format!("{d}encoder.layers.{i}."),
        );
        for (from, to) in [
            ("ln_1.", "layer_norm1."),
            ("ln_2.", "layer_norm2."),
            ("attn.out_proj.", "self_attn.out_proj."),
            ("mlp.c_fc.", "mlp.fc1."),
            ("mlp.c_proj.", "mlp.fc2."),
        ] {
            t.rename(format!("{lb}{from}"), format!("{db}{to}"));
        }
        for (fused, kind) in [("in_proj_weight", "weight"), ("in_proj_bias", "bias")] {
            let parts = ["q_proj", "k_proj", "v_proj"]
                .map(|p| format!("{db}self_attn.{p}.{kind}"))
                .to_vec();
            t.rows(format!("{lb}attn.{fused}"), parts);
        }
    }
    let first_unused = config.num_hidden_layers;
    for i in first_unused..first_unused + MAX_EXTRA_LAYERS {
        t.ignore.push(format!("{l}transformer.resblocks.{i}."));
    }
    if projection {
        t.transpose(
            format!("{l}text_projection"),
            format!("{diffusers}text_projection.weight"),
        );
    }
    for name in ["text_projection", "logit_scale", "attn_mask"] {
        t.ignore.push(format!("{l}{name}"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::super::table::{Mapped, Part};
    use super::*;

    #[test]
    fn sd1_prefix_swap() {
        let t = sd1_table();
        assert_eq!(
            t.to_diffusers(
                "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight"
            ),
            Mapped::Rename("text_encoder.text_model.encoder.layers.3.mlp.fc1.weight".into())
        );
        assert_eq!(
            t.to_ldm("text_encoder.text_model.final_layer_norm.bias")
                .unwrap()
                .ldm,
            "cond_stage_model.transformer.text_model.final_layer_norm.bias"
        );
    }

    fn sd2() -> Table {
        open_clip_table(&ClipTextConfig {
            num_hidden_layers: 23,
            ..ClipTextConfig::default()
        })
    }

    #[test]
    fn open_clip_embeddings_and_final_norm() {
        let t = sd2();
        let m = |s: &str| t.to_diffusers(&format!("cond_stage_model.model.{s}"));
        assert_eq!(
            m("token_embedding.weight"),
            Mapped::Rename("text_encoder.text_model.embeddings.token_embedding.weight".into())
        );
        assert_eq!(
            m("positional_embedding"),
            Mapped::Rename("text_encoder.text_model.embeddings.position_embedding.weight".into())
        );
        assert_eq!(
            m("ln_final.weight"),
            Mapped::Rename("text_encoder.text_model.final_layer_norm.weight".into())
        );
    }

    #[test]
    fn open_clip_layers() {
        let t = sd2();
        let m =
            |s: &str| t.to_diffusers(&format!("cond_stage_model.model.transformer.resblocks.{s}"));
        let d = |s: &str| format!("text_encoder.text_model.encoder.layers.{s}");
        assert_eq!(m("0.ln_1.bias"), Mapped::Rename(d("0.layer_norm1.bias")));
        assert_eq!(
            m("4.ln_2.weight"),
            Mapped::Rename(d("4.layer_norm2.weight"))
        );
        assert_eq!(
            m("22.attn.out_proj.weight"),
            Mapped::Rename(d("22.self_attn.out_proj.weight"))
        );
        assert_eq!(m("7.mlp.c_fc.bias"), Mapped::Rename(d("7.mlp.fc1.bias")));
        assert_eq!(
            m("7.mlp.c_proj.weight"),
            Mapped::Rename(d("7.mlp.fc2.weight"))
        );
        assert_eq!(
            m("1.attn.in_proj_weight"),
            Mapped::Rows(vec![
                d("1.self_attn.q_proj.weight"),
                d("1.self_attn.k_proj.weight"),
                d("1.self_attn.v_proj.weight")
            ])
        );
        assert_eq!(
            m("1.attn.in_proj_bias"),
            Mapped::Rows(vec![
                d("1.self_attn.q_proj.bias"),
                d("1.self_attn.k_proj.bias"),
                d("1.self_attn.v_proj.bias")
            ])
        );
        let back = t.to_ldm(&d("1.self_attn.v_proj.bias")).unwrap();
        assert_eq!(
            back.ldm,
            "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias"
        );
        assert_eq!(back.part, Part::Rows { index: 2, count: 3 });
    }

    #[test]
    fn sdxl_encoders() {
        let t = sdxl_table(&ClipTextConfig {
            num_hidden_layers: 32,
            ..ClipTextConfig::default()
        });
        assert_eq!(
            t.to_diffusers(
                "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.bias"
            ),
            Mapped::Rename("text_encoder.text_model.encoder.layers.11.mlp.fc2.bias".into())
        );
        let g = |s: &str| t.to_diffusers(&format!("conditioner.embedders.1.model.{s}"));
        assert_eq!(
            g("transformer.resblocks.31.ln_1.weight"),
            Mapped::Rename("text_encoder_2.text_model.encoder.layers.31.layer_norm1.weight".into())
        );
        assert_eq!(
            g("transformer.resblocks.0.attn.in_proj_weight"),
            Mapped::Rows(
                ["q_proj", "k_proj", "v_proj"]
                    .map(|p| format!(
                        "text_encoder_2.text_model.encoder.layers.0.self_attn.{p}.weight"
                    ))
                    .to_vec()
            )
        );
        assert_eq!(
            g("ln_final.bias"),
            Mapped::Rename("text_encoder_2.text_model.final_layer_norm.bias".into())
        );
        assert_eq!(
            g("text_projection"),
            Mapped::Transpose("text_encoder_2.text_projection.weight".into())
        );
        assert_eq!(g("logit_scale"), Mapped::Ignored);
        assert_eq!(
            t.to_ldm("text_encoder_2.text_projection.weight")
                .unwrap()
                .part,
            Part::Transposed
        );
    }

    #[test]
    fn open_clip_unused_parts_are_ignored() {
        let t = sd2();
        let m = |s: &str| t.to_diffusers(&format!("cond_stage_model.model.{s}"));
        assert_eq!(m("transformer.resblocks.23.ln_1.weight"), Mapped::Ignored);
        assert_eq!(
            m("transformer.resblocks.23.attn.in_proj_weight"),
            Mapped::Ignored
        );
        assert_eq!(m("text_projection"), Mapped::Ignored);
        assert_eq!(m("logit_scale"), Mapped::Ignored);
        assert_eq!(m("something_else"), Mapped::Unknown);
    }
}
