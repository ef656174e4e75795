//! diffusers / PEFT LoRA keys: `<component>.<module>.<suffix>` with diffusers' dotted module
//! names, e.g. `unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`
//! (`lora_A` = down, `lora_B` = up; no alpha → scale 1), and the forms older diffusers wrote:
//! `….attn1.processor.to_q_lora.down.weight` (attention processors),
//! `….to_q.lora.down.weight` (LoRACompatibleLinear),
//! `text_encoder.….q_proj.lora_linear_layer.down.weight` (patched CLIP projections).

use super::{Component, KeyParts, ModuleKey, Role};

/// Key prefix → component; keys without one belong to the UNet (as diffusers reads them).
pub const PREFIXES: [(&str, Component); 3] = [
    ("unet.", Component::Unet),
    ("text_encoder.", Component::TextEncoder),
    ("text_encoder_2.", Component::TextEncoder2),
];

/// Tensor suffix → role, most specific first. The bare `.down.weight` / `.up.weight` forms are
/// only accepted after an attention-processor name (`to_q_lora`, see [`PROCESSOR_NAMES`]).
pub const SUFFIXES: [(&str, Role); 11] = [
    (".lora_A.weight", Role::Down),
    (".lora_B.weight", Role::Up),
    (".lora_A.default.weight", Role::Down),
    (".lora_B.default.weight", Role::Up),
    (".lora_linear_layer.down.weight", Role::Down),
    (".lora_linear_layer.up.weight", Role::Up),
    (".lora.down.weight", Role::Down),
    (".lora.up.weight", Role::Up),
    (".down.weight", Role::Down),
    (".up.weight", Role::Up),
    (".alpha", Role::Alpha),
];

/// Old attention-processor LoRA names → the projection they adapt: (processor name, UNet
/// module, CLIP module).
pub const PROCESSOR_NAMES: [(&str, &str, &str); 4] = [
    ("to_q_lora", "to_q", "q_proj"),
    ("to_k_lora", "to_k", "k_proj"),
    ("to_v_lora", "to_v", "v_proj"),
    ("to_out_lora", "to_out.0", "out_proj"),
];

/// The `__metadata__` entry where diffusers' `save_lora_weights` stores each component's PEFT
/// `LoraConfig` as JSON, keys prefixed with the component (`unet.lora_alpha`, `unet.r`, …).
pub const METADATA_KEY: &str = "lora_adapter_metadata";

/// The parts of a PEFT `LoraConfig` that set a module's scale.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdapterConfig {
    pub lora_alpha: Option<f32>,
    /// Module-name suffix → alpha.
    pub alpha_pattern: Vec<(String, f32)>,
    /// scale = alpha / √rank instead of alpha / rank.
    pub use_rslora: bool,
}

impl AdapterConfig {
    /// The alpha giving this module PEFT's scale with `scale = alpha / rank`, if the config
    /// sets one: a matching `alpha_pattern` key (the module name or a dotted suffix of it, as
    /// peft matches), else `lora_alpha`; rsLoRA's `alpha / √rank` folded in.
    pub fn alpha(&self, module: &str, rank: usize) -> Option<f32> {
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(k, _)| module == k || module.ends_with(&format!(".{k}")))
            .map(|(_, a)| *a)
            .or(self.lora_alpha)?;
        Some(if self.use_rslora {
            alpha * (rank as f32).sqrt()
        } else {
            alpha
        })
    }
}

/// Parses the [`METADATA_KEY`] JSON into one config per component present.
pub fn adapter_configs(json: &str) -> Result<Vec<(Component, AdapterConfig)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("{METADATA_KEY} is not JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{METADATA_KEY} is not a JSON object"))?;
    let mut out = Vec::new();
    for (prefix, component) in PREFIXES {
        let get = |k: &str| obj.get(&format!("{prefix}{k}"));
        let mut cfg = AdapterConfig {
            lora_alpha: get("lora_alpha").and_then(|v| v.as_f64()).map(|a| a as f32),
            use_rslora: get("use_rslora").and_then(|v| v.as_bool()).unwrap_or(false),
            ..AdapterConfig::default()
        };
        if let Some(pattern) = get("alpha_pattern").and_then(|v| v.as_object()) {
            for (k, v) in pattern {
                let a = v
                    .as_f64()
                    .ok_or_else(|| format!("{prefix}alpha_pattern[{k:?}] is not a number"))?;
                cfg.alpha_pattern.push((k.clone(), a as f32));
            }
        }
        if cfg != AdapterConfig::default() {
            out.push((component, cfg));
        }
    }
    Ok(out)
}

/// Splits a diffusers/PEFT key; `None` when no suffix rule matches.
pub fn split_key(key: &str) -> Option<Result<KeyParts, String>> {
    let (component, rest) = PREFIXES
        .iter()
        .find_map(|(p, c)| key.strip_prefix(p).map(|rest| (*c, rest)))
        .unwrap_or((Component::Unet, key));
    let (suffix, stem, role) = SUFFIXES
        .iter()
        .find_map(|(suffix, role)| rest.strip_suffix(suffix).map(|s| (*suffix, s, *role)))?;
    let bare = matches!(suffix, ".down.weight" | ".up.weight");
    let module = match stem.rsplit_once('.') {
        // `x.processor.to_q_lora` / `x.to_q_lora` → `x.to_q` (or `x.q_proj` in CLIP).
        Some((parent, last)) if last.ends_with("_lora") => {
            let Some((_, unet, clip)) = PROCESSOR_NAMES.iter().find(|(p, _, _)| *p == last) else {
                return Some(Err(format!(
                    "unknown attention-processor LoRA {last:?} (expected to_q_lora, to_k_lora, \
                     to_v_lora or to_out_lora)"
                )));
            };
            let parent = parent.strip_suffix(".processor").unwrap_or(parent);
            let name = if component == Component::Unet {
                unet
            } else {
                clip
            };
            format!("{parent}.{name}")
        }
        // `.down.weight` without a processor name is some other model's tensor.
        _ if bare => return None,
        _ => stem.to_string(),
    };
    if module.is_empty() {
        return None;
    }
    Some(Ok(KeyParts {
        component,
        module: ModuleKey::Dotted(module),
        role,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(key: &str) -> (Component, String, Role) {
        let p = split_key(key).expect("diffusers key").expect("usable");
        match p.module {
            ModuleKey::Dotted(m) => (p.component, m, p.role),
            other => panic!("{other:?}"),
        }
    }

    const ATTN: &str = "down_blocks.0.attentions.0.transformer_blocks.0.attn1";

    #[test]
    fn peft_lora_a_b() {
        assert_eq!(
            ok(&format!("unet.{ATTN}.to_q.lora_A.weight")),
            (Component::Unet, format!("{ATTN}.to_q"), Role::Down)
        );
        assert_eq!(
            ok(&format!("unet.{ATTN}.to_out.0.lora_B.weight")),
            (Component::Unet, format!("{ATTN}.to_out.0"), Role::Up)
        );
        assert_eq!(
            ok(&format!("{ATTN}.to_k.lora_A.default.weight")),
            (Component::Unet, format!("{ATTN}.to_k"), Role::Down)
        );
    }

    #[test]
    fn text_encoder_prefixes() {
        let m = "text_model.encoder.layers.0.self_attn.q_proj";
        assert_eq!(
            ok(&format!("text_encoder.{m}.lora_A.weight")),
            (Component::TextEncoder, m.to_string(), Role::Down)
        );
        assert_eq!(
            ok(&format!("text_encoder_2.{m}.lora_B.weight")),
            (Component::TextEncoder2, m.to_string(), Role::Up)
        );
    }

    #[test]
    fn old_attention_processor_form() {
        assert_eq!(
            ok(&format!("unet.{ATTN}.processor.to_q_lora.down.weight")),
            (Component::Unet, format!("{ATTN}.to_q"), Role::Down)
        );
        assert_eq!(
            ok(&format!("{ATTN}.processor.to_out_lora.up.weight")),
            (Component::Unet, format!("{ATTN}.to_out.0"), Role::Up)
        );
        assert_eq!(
            ok("text_encoder.text_model.encoder.layers.1.self_attn.to_v_lora.up.weight"),
            (
                Component::TextEncoder,
                "text_model.encoder.layers.1.self_attn.v_proj".to_string(),
                Role::Up
            )
        );
        assert!(
            split_key(&format!("unet.{ATTN}.processor.add_k_proj_lora.up.weight"))
                .expect("processor key")
                .is_err()
        );
    }

    #[test]
    fn lora_compatible_and_linear_layer_forms() {
        assert_eq!(
            ok(&format!("unet.{ATTN}.to_v.lora.up.weight")),
            (Component::Unet, format!("{ATTN}.to_v"), Role::Up)
        );
        assert_eq!(
            ok("text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight"),
            (
                Component::TextEncoder,
                "text_model.encoder.layers.0.mlp.fc1".to_string(),
                Role::Down
            )
        );
    }

    #[test]
    fn adapter_metadata_sets_alphas() {
        let json = r#"{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern":
            {"attn1.to_v": 2.0}, "text_encoder.lora_alpha": 3, "text_encoder.use_rslora": true}"#;
        let configs = adapter_configs(json).expect("parses");
        assert_eq!(configs.len(), 2);
        let (c, unet) = &configs[0];
        assert_eq!(*c, Component::Unet);
        assert_eq!(unet.alpha(&format!("{ATTN}.to_q"), 4), Some(8.0));
        assert_eq!(unet.alpha(&format!("{ATTN}.to_v"), 4), Some(2.0));
        // A pattern matches whole dotted segments only.
        assert_eq!(unet.alpha("x.xattn1.to_v", 4), Some(8.0));
        let (c, te) = &configs[1];
        assert_eq!(*c, Component::TextEncoder);
        assert_eq!(te.alpha("q_proj", 4), Some(6.0)); // 3·√4: scale 3/√4 = 6/4
        assert!(adapter_configs("[1]").is_err());
        assert!(adapter_configs(r#"{"unet.alpha_pattern": {"a": "x"}}"#).is_err());
        assert_eq!(adapter_configs(r#"{"unet.r": 4}"#), Ok(Vec::new()));
    }

    #[test]
    fn alpha_and_non_lora_keys() {
        assert_eq!(
            ok(&format!("unet.{ATTN}.to_q.alpha")),
            (Component::Unet, format!("{ATTN}.to_q"), Role::Alpha)
        );
        // A plain model weight is not a LoRA key.
        assert!(split_key("unet.conv_in.weight").is_none());
        assert!(split_key("model.diffusion_model.input_blocks.0.0.weight").is_none());
        // `.down.weight` outside an attention processor (e.g. a VAE tensor) is not LoRA.
        assert!(split_key("encoder.down.weight").is_none());
    }
}
