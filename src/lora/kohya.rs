//! kohya-ss / A1111 LoRA keys: `<prefix><module_joined>.<suffix>`, e.g.
//! `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight`.
//!
//! The module part is the diffusers (or, for SDXL UNets, the original LDM) module name with
//! every `.` replaced by `_`; [`super::names`] resolves it against the model's modules.

use super::{Component, KeyParts, ModuleKey, Role};

/// Key prefix → component. SDXL files use `lora_te1_` / `lora_te2_`; SD1/SD2 `lora_te_`.
pub const PREFIXES: [(&str, Component); 4] = [
    ("lora_unet_", Component::Unet),
    ("lora_te1_", Component::TextEncoder),
    ("lora_te2_", Component::TextEncoder2),
    ("lora_te_", Component::TextEncoder),
];

/// Tensor suffix → role.
pub const SUFFIXES: [(&str, Role); 3] = [
    (".lora_down.weight", Role::Down),
    (".lora_up.weight", Role::Up),
    (".alpha", Role::Alpha),
];

/// LyCORIS tensors of other adapter kinds (recognised to say what they are).
const UNSUPPORTED: [(&str, &str); 6] = [
    (".lora_mid.", "Tucker-decomposed LoCon (lora_mid)"),
    (".hada_", "LoHa"),
    (".lokr_", "LoKr"),
    (".diff", "a full-weight difference (diff)"),
    (".dora_scale", "DoRA"),
    (".oft_", "OFT"),
];

/// Splits a kohya key; `None` when it has none of the kohya prefixes.
pub fn split_key(key: &str) -> Option<Result<KeyParts, String>> {
    let (component, rest) = PREFIXES
        .iter()
        .find_map(|(p, c)| key.strip_prefix(p).map(|rest| (*c, rest)))?;
    if let Some((_, what)) = UNSUPPORTED.iter().find(|(s, _)| rest.contains(s)) {
        return Some(Err(format!(
            "{what} tensors are not supported (plain LoRA and LoCon are)"
        )));
    }
    let found = SUFFIXES.iter().find_map(|(suffix, role)| {
        rest.strip_suffix(suffix)
            .filter(|m| !m.is_empty() && !m.contains('.'))
            .map(|m| (m, *role))
    });
    Some(match found {
        Some((module, role)) => Ok(KeyParts {
            component,
            module: ModuleKey::Joined(module.to_string()),
            role,
        }),
        None => Err(
            "unknown kohya tensor: expected <module>.lora_down.weight, <module>.lora_up.weight \
             or <module>.alpha"
                .to_string(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(key: &str) -> KeyParts {
        split_key(key).expect("kohya key").expect("usable")
    }

    #[test]
    fn unet_down_up_alpha() {
        let m = "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
        for (suffix, role) in SUFFIXES {
            let p = ok(&format!("lora_unet_{m}{suffix}"));
            assert_eq!(p.component, Component::Unet);
            assert_eq!(p.module, ModuleKey::Joined(m.into()));
            assert_eq!(p.role, role);
        }
    }

    #[test]
    fn text_encoder_prefixes() {
        let m = "text_model_encoder_layers_0_self_attn_q_proj";
        for (prefix, c) in [
            ("lora_te_", Component::TextEncoder),
            ("lora_te1_", Component::TextEncoder),
            ("lora_te2_", Component::TextEncoder2),
        ] {
            let p = ok(&format!("{prefix}{m}.lora_up.weight"));
            assert_eq!((p.component, p.module), (c, ModuleKey::Joined(m.into())));
        }
    }

    #[test]
    fn sdxl_ldm_names_stay_joined() {
        let p = ok("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight");
        assert_eq!(
            p.module,
            ModuleKey::Joined("input_blocks_4_1_transformer_blocks_0_attn1_to_q".into())
        );
    }

    #[test]
    fn other_formats_are_not_kohya() {
        assert!(split_key("unet.down_blocks.0.lora_A.weight").is_none());
        assert!(split_key("lora_unknown_x.lora_down.weight").is_none());
    }

    #[test]
    fn unsupported_kinds_are_named() {
        for (key, what) in [
            ("lora_unet_x.hada_w1_a", "LoHa"),
            ("lora_unet_x.lokr_w1", "LoKr"),
            ("lora_unet_x.lora_mid.weight", "lora_mid"),
            ("lora_unet_x.dora_scale", "DoRA"),
        ] {
            let e = split_key(key)
                .expect("kohya prefix")
                .expect_err("unsupported");
            assert!(e.contains(what), "{key}: {e}");
        }
        assert!(split_key("lora_unet_x.weight").expect("prefix").is_err());
        assert!(split_key("lora_unet_.alpha").expect("prefix").is_err());
    }
}
