//! Resolving a LoRA file's module names against the model's actual modules.
//!
//! kohya joins a module's name with `_` (`down_blocks_0_attentions_0_proj_in`), which cannot be
//! split back by itself (`to_out_0`, `transformer_blocks`, `proj_in` all hold underscores).
//! Instead every module the model loaded is joined the same way and looked up; for the UNet the
//! original LDM name of each module is joined too, since SDXL kohya files use it
//! (`input_blocks_4_1_transformer_blocks_0_attn1_to_q` = diffusers
//! `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`). Two modules that join to the
//! same string make that string ambiguous (an error if a file uses it).
//!
//! Text encoders are matched with or without the `text_model.` prefix (hub SD1.x CLIP files
//! have it, transformers 5 writes without; LoRA files use it).

use std::collections::{BTreeSet, HashMap};

use super::{Component, ModuleKey};

/// Why a name did not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    NotFound,
    /// Joins to the same string as these modules.
    Ambiguous(Vec<String>),
}

/// The model's modules (diffusers names) under every spelling a LoRA file may use.
#[derive(Debug, Default)]
pub struct ModuleTable {
    /// Spelling → module names (one when unambiguous).
    by_name: HashMap<String, Vec<String>>,
}

impl ModuleTable {
    /// `modules`: the diffusers module names of one component (e.g.
    /// `down_blocks.0.resnets.0.conv1`).
    pub fn new<'m>(component: Component, modules: impl IntoIterator<Item = &'m str>) -> Self {
        let modules: Vec<&str> = modules.into_iter().collect();
        let layout = (component == Component::Unet).then(|| UnetLayout::infer(&modules));
        let mut table = ModuleTable::default();
        for m in &modules {
            let mut spellings = vec![m.to_string()];
            if component != Component::Unet {
                match m.strip_prefix("text_model.") {
                    Some(bare) => spellings.push(bare.to_string()),
                    None => spellings.push(format!("text_model.{m}")),
                }
            }
            if let Some(ldm) = layout.as_ref().and_then(|l| l.ldm_name(m)) {
                spellings.push(ldm);
            }
            let joined: Vec<String> = spellings.iter().map(|s| s.replace('.', "_")).collect();
            for s in spellings.into_iter().chain(joined).collect::<BTreeSet<_>>() {
                let entry = table.by_name.entry(s).or_default();
                if !entry.iter().any(|e| e == m) {
                    entry.push(m.to_string());
                }
            }
        }
        table
    }

    /// The diffusers module `key` names.
    pub fn resolve(&self, key: &ModuleKey) -> Result<&str, Unresolved> {
        let name = match key {
            ModuleKey::Dotted(s) | ModuleKey::Joined(s) => s,
        };
        match self.by_name.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some(many) if !many.is_empty() => Err(Unresolved::Ambiguous(many.to_vec())),
            _ => Err(Unresolved::NotFound),
        }
    }
}

/// What the LDM numbering of a UNet depends on: resnets per down block, and which up blocks
/// have attentions (their upsampler is `output_blocks.N.2` instead of `.1`).
#[derive(Debug)]
struct UnetLayout {
    layers_per_block: usize,
    up_blocks_with_attention: BTreeSet<usize>,
}

/// `a.<n>.rest` with `a` = `head`: (n, rest).
fn indexed<'s>(name: &'s str, head: &str) -> Option<(usize, &'s str)> {
    let rest = name.strip_prefix(head)?.strip_prefix('.')?;
    let (n, rest) = rest.split_once('.').unwrap_or((rest, ""));
    Some((n.parse().ok()?, rest))
}

/// diffusers ResnetBlock2D parts → LDM ResBlock parts.
const RESNET_PARTS: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];

/// Top-level diffusers modules → LDM names.
const TOP_LEVEL: [(&str, &str); 7] = [
    ("conv_in", "input_blocks.0.0"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
];

fn resnet_part(rest: &str) -> Option<String> {
    let (part, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let (_, ldm) = RESNET_PARTS.iter().find(|(d, _)| *d == part)?;
    Some(if tail.is_empty() {
        ldm.to_string()
    } else {
        format!("{ldm}.{tail}")
    })
}

fn join(head: String, rest: &str) -> String {
    if rest.is_empty() {
        head
    } else {
        format!("{head}.{rest}")
    }
}

impl UnetLayout {
    fn infer(modules: &[&str]) -> Self {
        let mut layers_per_block = 0;
        let mut up_blocks_with_attention = BTreeSet::new();
        for m in modules {
            if let Some((0, rest)) = indexed(m, "down_blocks") {
                if let Some((l, _)) = indexed(rest, "resnets") {
                    layers_per_block = layers_per_block.max(l + 1);
                }
            }
            if let Some((b, rest)) = indexed(m, "up_blocks") {
                if rest.starts_with("attentions.") {
                    up_blocks_with_attention.insert(b);
                }
            }
        }
        UnetLayout {
            layers_per_block,
            up_blocks_with_attention,
        }
    }

    /// The LDM (`model.diffusion_model.` without that prefix) name of a diffusers UNet module.
    fn ldm_name(&self, m: &str) -> Option<String> {
        let per = self.layers_per_block + 1;
        if let Some((_, ldm)) = TOP_LEVEL.iter().find(|(d, _)| *d == m) {
            return Some(ldm.to_string());
        }
        if let Some((b, rest)) = indexed(m, "down_blocks") {
            if let Some((l, inner)) = indexed(rest, "resnets") {
                let head = format!("input_blocks.{}.0", 1 + b * per + l);
                return Some(join(head, &resnet_part(inner)?));
            }
            if let Some((l, inner)) = indexed(rest, "attentions") {
                return Some(join(format!("input_blocks.{}.1", 1 + b * per + l), inner));
            }
            if rest == "downsamplers.0.conv" {
                return Some(format!("input_blocks.{}.0.op", (b + 1) * per));
            }
            return None;
        }
        if let Some(rest) = m.strip_prefix("mid_block.") {
            if let Some((l, inner)) = indexed(rest, "resnets") {
                return Some(join(
                    format!("middle_block.{}", 2 * l),
                    &resnet_part(inner)?,
                ));
            }
            if let Some((0, inner)) = indexed(rest, "attentions") {
                return Some(join("middle_block.1".to_string(), inner));
            }
            return None;
        }
        if let Some((b, rest)) = indexed(m, "up_blocks") {
            if let Some((l, inner)) = indexed(rest, "resnets") {
                let head = format!("output_blocks.{}.0", b * per + l);
                return Some(join(head, &resnet_part(inner)?));
            }
            if let Some((l, inner)) = indexed(rest, "attentions") {
                return Some(join(format!("output_blocks.{}.1", b * per + l), inner));
            }
            if rest == "upsamplers.0.conv" {
                let slot = if self.up_blocks_with_attention.contains(&b) {
                    2
                } else {
                    1
                };
                return Some(format!(
                    "output_blocks.{}.{slot}.conv",
                    b * per + self.layers_per_block
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Module names of an SDXL-like UNet: 3 down blocks of 2 resnets (attention in blocks 1
    /// and 2), mid block, 3 up blocks of 3 resnets (attention in up blocks 0 and 1).
    fn sdxl_modules() -> Vec<String> {
        let mut m = vec![
            "conv_in".to_string(),
            "time_embedding.linear_1".into(),
            "add_embedding.linear_2".into(),
            "conv_out".into(),
        ];
        for b in 0..3 {
            for l in 0..2 {
                m.push(format!("down_blocks.{b}.resnets.{l}.conv1"));
                m.push(format!("down_blocks.{b}.resnets.{l}.time_emb_proj"));
                if b > 0 {
                    m.push(format!(
                        "down_blocks.{b}.attentions.{l}.transformer_blocks.0.attn1.to_q"
                    ));
                    m.push(format!("down_blocks.{b}.attentions.{l}.proj_in"));
                }
            }
            if b < 2 {
                m.push(format!("down_blocks.{b}.downsamplers.0.conv"));
            }
        }
        m.push("mid_block.resnets.1.conv2".into());
        m.push("mid_block.attentions.0.transformer_blocks.9.attn2.to_out.0".into());
        for b in 0..3 {
            for l in 0..3 {
                m.push(format!("up_blocks.{b}.resnets.{l}.conv_shortcut"));
                if b < 2 {
                    m.push(format!(
                        "up_blocks.{b}.attentions.{l}.transformer_blocks.1.ff.net.0.proj"
                    ));
                }
            }
            if b < 2 {
                m.push(format!("up_blocks.{b}.upsamplers.0.conv"));
            }
        }
        m
    }

    fn table() -> ModuleTable {
        let modules = sdxl_modules();
        ModuleTable::new(Component::Unet, modules.iter().map(String::as_str))
    }

    fn joined(s: &str) -> Result<&'static str, Unresolved> {
        let t = Box::leak(Box::new(table()));
        t.resolve(&ModuleKey::Joined(s.into()))
    }

    #[test]
    fn diffusers_names_joined() {
        assert_eq!(
            joined("down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"),
            Ok("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
        );
        assert_eq!(
            joined("mid_block_attentions_0_transformer_blocks_9_attn2_to_out_0"),
            Ok("mid_block.attentions.0.transformer_blocks.9.attn2.to_out.0")
        );
        assert_eq!(
            joined("down_blocks_9_resnets_0_conv1"),
            Err(Unresolved::NotFound)
        );
    }

    #[test]
    fn ldm_input_blocks() {
        // SDXL: input_blocks.1-2 = down 0 resnets, .3 = its downsampler, .4-5 = down 1, …
        let cases = [
            ("input_blocks_0_0", "conv_in"),
            (
                "input_blocks_1_0_in_layers_2",
                "down_blocks.0.resnets.0.conv1",
            ),
            (
                "input_blocks_2_0_emb_layers_1",
                "down_blocks.0.resnets.1.time_emb_proj",
            ),
            ("input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"),
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            ),
            (
                "input_blocks_5_1_proj_in",
                "down_blocks.1.attentions.1.proj_in",
            ),
            ("input_blocks_6_0_op", "down_blocks.1.downsamplers.0.conv"),
            (
                "input_blocks_8_1_transformer_blocks_0_attn1_to_q",
                "down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q",
            ),
        ];
        for (key, want) in cases {
            assert_eq!(joined(key), Ok(want), "{key}");
        }
    }

    #[test]
    fn ldm_middle_output_and_top_level() {
        let cases = [
            ("middle_block_2_out_layers_3", "mid_block.resnets.1.conv2"),
            (
                "middle_block_1_transformer_blocks_9_attn2_to_out_0",
                "mid_block.attentions.0.transformer_blocks.9.attn2.to_out.0",
            ),
            (
                "output_blocks_0_0_skip_connection",
                "up_blocks.0.resnets.0.conv_shortcut",
            ),
            (
                "output_blocks_4_1_transformer_blocks_1_ff_net_0_proj",
                "up_blocks.1.attentions.1.transformer_blocks.1.ff.net.0.proj",
            ),
            // Up blocks with attention put the upsampler third.
            ("output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"),
            ("output_blocks_5_2_conv", "up_blocks.1.upsamplers.0.conv"),
            (
                "output_blocks_8_0_skip_connection",
                "up_blocks.2.resnets.2.conv_shortcut",
            ),
            ("time_embed_0", "time_embedding.linear_1"),
            ("label_emb_0_2", "add_embedding.linear_2"),
            ("out_2", "conv_out"),
        ];
        for (key, want) in cases {
            assert_eq!(joined(key), Ok(want), "{key}");
        }
    }

    #[test]
    fn sd1_upsampler_without_attention() {
        // SD1: 1 resnet per block here; up block 0 has no attention → upsampler at slot 1.
        let modules = [
            "down_blocks.0.resnets.0.conv1",
            "up_blocks.0.resnets.1.conv1",
            "up_blocks.0.upsamplers.0.conv",
            "up_blocks.1.attentions.0.proj_in",
            "up_blocks.1.upsamplers.0.conv",
        ];
        let t = ModuleTable::new(Component::Unet, modules);
        let r = |s: &str| t.resolve(&ModuleKey::Joined(s.into()));
        assert_eq!(
            r("output_blocks_1_1_conv"),
            Ok("up_blocks.0.upsamplers.0.conv")
        );
        assert_eq!(
            r("output_blocks_3_2_conv"),
            Ok("up_blocks.1.upsamplers.0.conv")
        );
        assert_eq!(
            r("output_blocks_2_1_proj_in"),
            Ok("up_blocks.1.attentions.0.proj_in")
        );
    }

    #[test]
    fn text_encoder_with_or_without_prefix() {
        let with = ModuleTable::new(
            Component::TextEncoder,
            ["text_model.encoder.layers.0.self_attn.q_proj"],
        );
        let without = ModuleTable::new(
            Component::TextEncoder2,
            ["encoder.layers.0.self_attn.q_proj"],
        );
        for (t, want) in [
            (&with, "text_model.encoder.layers.0.self_attn.q_proj"),
            (&without, "encoder.layers.0.self_attn.q_proj"),
        ] {
            for key in [
                ModuleKey::Joined("text_model_encoder_layers_0_self_attn_q_proj".into()),
                ModuleKey::Dotted("text_model.encoder.layers.0.self_attn.q_proj".into()),
            ] {
                assert_eq!(t.resolve(&key), Ok(want));
            }
        }
    }

    #[test]
    fn dotted_names_are_not_joined_lookups() {
        let t = table();
        assert_eq!(
            t.resolve(&ModuleKey::Dotted("down_blocks.0.resnets.0.conv1".into())),
            Ok("down_blocks.0.resnets.0.conv1")
        );
    }

    #[test]
    fn collisions_are_ambiguous() {
        let t = ModuleTable::new(Component::Unet, ["a.b_c", "a_b.c"]);
        match t.resolve(&ModuleKey::Joined("a_b_c".into())) {
            Err(Unresolved::Ambiguous(m)) => assert_eq!(m.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.resolve(&ModuleKey::Dotted("a.b_c".into())), Ok("a.b_c"));
    }
}
