//! LoRA (low-rank adapters) on top of a loaded model: parse a LoRA file, resolve its keys to the
//! model's diffusers module names, merge `W + scale·up·down` into the packed GPU weights, and
//! restore the base weights from the memory map when the set of LoRAs changes.
//!
//! Formats (one file = one format, detected from its keys):
//! - kohya / A1111 ([`kohya`]): `lora_unet_…`, `lora_te_…` (SDXL: `lora_te1_…`, `lora_te2_…`)
//!   with `.lora_down.weight`, `.lora_up.weight` and `.alpha`; scale = alpha / rank ×
//!   multiplier. Module names are underscore-joined, in diffusers naming or (SDXL) the original
//!   LDM naming (`input_blocks_4_1_…`); both are resolved against the model's actual modules
//!   ([`names`]). LoCon conv layers (1×1 and 3×3) are supported.
//! - diffusers / PEFT ([`peft`]): `unet.<module>.lora_A.weight` / `lora_B.weight`, prefixes
//!   `text_encoder.` / `text_encoder_2.`; alpha from `.alpha` tensors or the
//!   `lora_adapter_metadata` diffusers writes (PEFT `lora_alpha`, `alpha_pattern`, rsLoRA),
//!   none = scale 1 × multiplier; and the older
//!   `…attn1.processor.to_q_lora.down.weight` / `…q_proj.lora_linear_layer.down.weight` forms.
//!
//! Applying ([`apply`]): every Linear/Conv2d weight a model uploads is recorded ([`targets`]: when
//! the loading [`Ctx`](crate::models::Ctx) carries [`Targets`]) with the weight names it was
//! packed from, so a LoRA change re-packs and rewrites only the GPU buffers it touches (base
//! read back from the memory-mapped weights, plus the deltas), in place: the plans built so far
//! stay valid.

pub mod apply;
pub mod kohya;
pub mod names;
pub mod peft;
pub mod prompt_tags;
pub mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use apply::{LoraReport, LoraState};
pub use targets::Targets;

use crate::error::{Error, Result};
use crate::weights::Weights;

/// The model a LoRA module belongs to (diffusers component folder names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Unet,
    TextEncoder,
    TextEncoder2,
}

impl Component {
    pub const ALL: [Component; 3] = [
        Component::Unet,
        Component::TextEncoder,
        Component::TextEncoder2,
    ];

    /// The diffusers folder (and PEFT key prefix) of the component.
    pub fn folder(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
        }
    }
}

/// A module name as a file spells it, before resolution against the model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModuleKey {
    /// diffusers' dotted module name (`down_blocks.0.attentions.0.proj_in`).
    Dotted(String),
    /// kohya's underscore-joined name (`down_blocks_0_attentions_0_proj_in`), ambiguous by
    /// itself: resolved against the model's module names.
    Joined(String),
}

/// What one tensor of a LoRA file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `lora_down` / `lora_A`: (rank, in) or (rank, cin, kh, kw).
    Down,
    /// `lora_up` / `lora_B`: (out, rank) or (out, rank, 1, 1).
    Up,
    /// `alpha`: a scalar; scale = alpha / rank.
    Alpha,
}

/// One key of a LoRA file, split by a format's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyParts {
    pub component: Component,
    pub module: ModuleKey,
    pub role: Role,
}

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// kohya-ss / A1111 (`lora_unet_…`).
    Kohya,
    /// diffusers / PEFT (`unet.….lora_A.weight`, or the older attention-processor form).
    Diffusers,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Kohya => "kohya",
            Format::Diffusers => "diffusers/PEFT",
        }
    }

    /// Splits `key` by this format's rules: `None` for a key that is not of this format,
    /// `Some(Err(why))` for one that is but cannot be used (e.g. LoHa tensors).
    pub fn split(self, key: &str) -> Option<std::result::Result<KeyParts, String>> {
        match self {
            Format::Kohya => kohya::split_key(key),
            Format::Diffusers => peft::split_key(key),
        }
    }
}

/// One low-rank module: `ΔW = scale · up · down` with `scale = multiplier · alpha / rank`
/// (alpha absent: `multiplier`).
#[derive(Clone, Debug)]
pub struct LoraModule {
    /// The file's key stem (for messages).
    pub key: String,
    pub component: Component,
    pub module: ModuleKey,
    pub down_shape: Vec<usize>,
    pub down: Vec<f32>,
    pub up_shape: Vec<usize>,
    pub up: Vec<f32>,
    pub alpha: Option<f32>,
}

impl LoraModule {
    pub fn rank(&self) -> usize {
        self.down_shape.first().copied().unwrap_or(0)
    }

    /// `multiplier · alpha / rank`, or `multiplier` without alpha (PEFT's rsLoRA
    /// `alpha / √rank` is stored here as the alpha giving that scale).
    pub fn scale(&self, multiplier: f32) -> f32 {
        match self.alpha {
            Some(alpha) => multiplier * alpha / self.rank() as f32,
            None => multiplier,
        }
    }
}

/// A parsed LoRA file.
#[derive(Clone, Debug)]
pub struct LoraFile {
    pub path: PathBuf,
    pub format: Format,
    pub modules: Vec<LoraModule>,
}

/// Partial module while reading: (down, up, alpha) and the key stem.
#[derive(Default)]
struct Pending {
    stem: String,
    down: Option<(Vec<usize>, Vec<f32>)>,
    up: Option<(Vec<usize>, Vec<f32>)>,
    alpha: Option<f32>,
}

impl LoraFile {
    /// Reads a LoRA `.safetensors` file. Errors name the file and the offending key: an
    /// unknown format, a key the format cannot use (LoHa, LoKr, Tucker `lora_mid`), a module
    /// with `down` but no `up` (or the reverse), ranks that disagree, a non-scalar alpha.
    pub fn open(path: impl AsRef<Path>) -> Result<LoraFile> {
        let path = path.as_ref();
        let weights = Weights::open(path)?;
        let names = weights.names();
        let err = |tensor: &str, message: String| Error::Weight {
            file: path.to_path_buf(),
            tensor: tensor.to_string(),
            message,
        };
        let format = detect(&names).ok_or_else(|| {
            err(
                names.first().map_or("(none)", String::as_str),
                "not a LoRA file this version reads: expected kohya keys (lora_unet_…, \
                 lora_te_…) or diffusers/PEFT keys (unet.….lora_A.weight, \
                 ….processor.to_q_lora.down.weight)"
                    .into(),
            )
        })?;
        let root = weights.root();
        let mut pending: BTreeMap<(Component, ModuleKey), Pending> = BTreeMap::new();
        for name in &names {
            let parts = match format.split(name) {
                Some(Ok(p)) => p,
                Some(Err(why)) => return Err(err(name, why)),
                None => {
                    return Err(err(
                        name,
                        format!(
                            "not a {} LoRA key (the file's other keys are)",
                            format.name()
                        ),
                    ))
                }
            };
            let (shape, data) = root.get_any(name)?;
            let entry = pending
                .entry((parts.component, parts.module.clone()))
                .or_default();
            if entry.stem.is_empty() {
                entry.stem = stem_of(name);
            }
            match parts.role {
                Role::Down => entry.down = Some((shape, data)),
                Role::Up => entry.up = Some((shape, data)),
                Role::Alpha => {
                    if data.len() != 1 {
                        return Err(err(
                            name,
                            format!("alpha must be a scalar, found {shape:?}"),
                        ));
                    }
                    entry.alpha = Some(data[0]);
                }
            }
        }
        let mut modules = Vec::with_capacity(pending.len());
        for ((component, module), p) in pending {
            let (Some((down_shape, down)), Some((up_shape, up))) = (p.down, p.up) else {
                return Err(err(
                    &p.stem,
                    "needs both a down (lora_down / lora_A) and an up (lora_up / lora_B) tensor"
                        .into(),
                ));
            };
            let rank = down_shape.first().copied().unwrap_or(0);
            if rank == 0 || up_shape.len() < 2 || up_shape[1] != rank {
                return Err(err(
                    &p.stem,
                    format!("down {down_shape:?} and up {up_shape:?} do not share a rank"),
                ));
            }
            if up_shape[2..].iter().any(|&d| d != 1) {
                return Err(err(
                    &p.stem,
                    format!("up {up_shape:?}: only 1×1 up projections are supported"),
                ));
            }
            modules.push(LoraModule {
                key: p.stem,
                component,
                module,
                down_shape,
                down,
                up_shape,
                up,
                alpha: p.alpha,
            });
        }
        if let Some(json) = weights.metadata().get(peft::METADATA_KEY) {
            let configs = peft::adapter_configs(json).map_err(|why| Error::Safetensors {
                file: path.to_path_buf(),
                message: why,
            })?;
            for m in modules.iter_mut().filter(|m| m.alpha.is_none()) {
                let (Some((_, cfg)), ModuleKey::Dotted(name)) =
                    (configs.iter().find(|(c, _)| *c == m.component), &m.module)
                else {
                    continue;
                };
                m.alpha = cfg.alpha(name, m.rank());
            }
        }
        Ok(LoraFile {
            path: path.to_path_buf(),
            format,
            modules,
        })
    }
}

/// The format whose rules accept the first key (files do not mix formats).
pub fn detect(names: &[String]) -> Option<Format> {
    let first = names.first()?;
    [Format::Kohya, Format::Diffusers]
        .into_iter()
        .find(|f| f.split(first).is_some())
}

/// `a.b.lora_down.weight` → `a.b` (for messages): the key up to its role suffix.
fn stem_of(key: &str) -> String {
    for suffix in [
        kohya::SUFFIXES.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        peft::SUFFIXES.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
    ]
    .concat()
    {
        if let Some(stem) = key.strip_suffix(suffix) {
            return stem.to_string();
        }
    }
    key.to_string()
}

/// Parses a CLI `PATH[:SCALE]` (scale 1 when absent or when the part after the last `:` is not
/// a number, so paths holding a colon still work).
pub fn parse_spec(spec: &str) -> (PathBuf, f32) {
    if let Some((path, scale)) = spec.rsplit_once(':') {
        if let Ok(s) = scale.parse::<f32>() {
            if s.is_finite() && !path.is_empty() {
                return (PathBuf::from(path), s);
            }
        }
    }
    (PathBuf::from(spec), 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_spec("a.safetensors"), ("a.safetensors".into(), 1.0));
        assert_eq!(
            parse_spec("a.safetensors:0.5"),
            ("a.safetensors".into(), 0.5)
        );
        assert_eq!(
            parse_spec("dir:x/a.safetensors"),
            ("dir:x/a.safetensors".into(), 1.0)
        );
        assert_eq!(parse_spec("a:-1"), ("a".into(), -1.0));
        assert_eq!(parse_spec(":0.5"), (":0.5".into(), 1.0));
    }

    #[test]
    fn detects_formats() {
        let k = vec!["lora_unet_down_blocks_0_x.alpha".to_string()];
        assert_eq!(detect(&k), Some(Format::Kohya));
        let p = vec!["unet.down_blocks.0.x.lora_A.weight".to_string()];
        assert_eq!(detect(&p), Some(Format::Diffusers));
        assert_eq!(detect(&["model.diffusion_model.x".to_string()]), None);
        assert_eq!(detect(&[]), None);
    }

    #[test]
    fn scale_is_alpha_over_rank() {
        let m = LoraModule {
            key: "k".into(),
            component: Component::Unet,
            module: ModuleKey::Dotted("a".into()),
            down_shape: vec![4, 8],
            down: vec![0.0; 32],
            up_shape: vec![8, 4],
            up: vec![0.0; 32],
            alpha: Some(2.0),
        };
        assert_eq!(m.scale(0.8), 0.4);
        assert_eq!(LoraModule { alpha: None, ..m }.scale(0.8), 0.8);
    }
}
