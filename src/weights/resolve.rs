//! Which weights file to open inside a component folder, as diffusers and transformers name
//! them on the Hub:
//!
//! | what                  | standard                                   | variant `V` (e.g. `fp16`)                      |
//! |-----------------------|--------------------------------------------|------------------------------------------------|
//! | one file              | `diffusion_pytorch_model.safetensors`, `model.safetensors` | `diffusion_pytorch_model.V.safetensors`, `model.V.safetensors` |
//! | sharded               | `NAME.safetensors.index.json`              | `NAME.safetensors.index.V.json` (what diffusers and transformers write), also `NAME.V.safetensors.index.json` |
//!
//! Rules, in order: the requested variant (standard files when none is asked); a single file
//! before an index; with a variant asked but absent, the standard files, with a note; with none
//! asked and no standard file, the one variant present, with a note (several variants are
//! ambiguous). PyTorch pickles (`.bin`, `.ckpt`, `.pt`, `.pth`) are refused with the reason and
//! a one-line conversion command.

use std::path::{Path, PathBuf};

use super::bad;
use crate::error::{Error, Result};

/// Single-file base names, in the order looked for (transformers writes the first, diffusers
/// the second).
const SINGLE_BASES: [&str; 2] = ["model", "diffusion_pytorch_model"];
const PICKLE_EXTENSIONS: [&str; 4] = [".bin", ".ckpt", ".pt", ".pth"];

/// The weights file chosen in a folder, and an info line when the choice was not the obvious one
/// (a variant picked automatically, or a requested variant missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWeights {
    pub path: PathBuf,
    pub note: Option<String>,
}

/// One weights file name, split as `base[.variant].safetensors` or an index.
#[derive(Debug, PartialEq, Eq)]
struct WeightsName<'a> {
    name: &'a str,
    base: &'a str,
    variant: Option<&'a str>,
    index: bool,
}

fn split_variant(stem: &str) -> (&str, Option<&str>) {
    match stem.rsplit_once('.') {
        Some((base, v)) if !base.is_empty() && !v.is_empty() => (base, Some(v)),
        _ => (stem, None),
    }
}

impl<'a> WeightsName<'a> {
    fn parse(name: &'a str) -> Option<Self> {
        let (stem, index, variant) = if let Some(stem) = name.strip_suffix(".safetensors") {
            let (base, variant) = split_variant(stem);
            (base, false, variant)
        } else if let Some(stem) = name.strip_suffix(".safetensors.index.json") {
            let (base, variant) = split_variant(stem);
            (base, true, variant)
        } else {
            // NAME.safetensors.index.V.json
            let rest = name.strip_suffix(".json")?;
            let (stem, v) = rest.rsplit_once('.')?;
            let base = stem.strip_suffix(".safetensors.index")?;
            (base, true, Some(v))
        };
        let accepted = index || SINGLE_BASES.contains(&stem);
        accepted.then_some(WeightsName {
            name,
            base: stem,
            variant,
            index,
        })
    }
}

/// Picks the weights file inside `dir` for `variant` (see the module docs).
pub fn resolve_dir(dir: &Path, variant: Option<&str>) -> Result<ResolvedWeights> {
    let names = file_names(dir)?;
    let parsed: Vec<WeightsName> = names.iter().filter_map(|n| WeightsName::parse(n)).collect();
    let pick = |v: Option<&str>| -> Result<Option<PathBuf>> {
        let of_variant: Vec<&WeightsName> = parsed.iter().filter(|w| w.variant == v).collect();
        pick_one(dir, &of_variant)
    };
    if let Some(path) = pick(variant)? {
        return Ok(ResolvedWeights { path, note: None });
    }
    let noted = |path: PathBuf, note: String| ResolvedWeights {
        path,
        note: Some(format!("{} {note}", dir.display())),
    };
    let file_name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    if let Some(v) = variant {
        if let Some(path) = pick(None)? {
            let note = format!("has no {v} variant; using {}", file_name(&path));
            return Ok(noted(path, note));
        }
    } else {
        let mut variants: Vec<&str> = parsed.iter().filter_map(|w| w.variant).collect();
        variants.sort_unstable();
        variants.dedup();
        match variants.as_slice() {
            [only] => {
                if let Some(path) = pick(Some(only))? {
                    let note = format!(
                        "holds only the {only} variant; using {} (--variant {only})",
                        file_name(&path)
                    );
                    return Ok(noted(path, note));
                }
            }
            [] => {}
            many => {
                return Err(bad(
                    dir,
                    format!(
                        "no standard weights file, but variants {}: choose one with --variant",
                        many.join(", ")
                    ),
                ))
            }
        }
    }
    Err(nothing_usable(dir, &names, variant))
}

/// Among candidates of one variant: a single file before an index; two of a kind are ambiguous.
fn pick_one(dir: &Path, candidates: &[&WeightsName]) -> Result<Option<PathBuf>> {
    let (indexes, singles): (Vec<&WeightsName>, Vec<&WeightsName>) =
        candidates.iter().partition(|w| w.index);
    let chosen = match (singles.as_slice(), indexes.as_slice()) {
        ([single], _) => single,
        ([], [index]) => index,
        ([], []) => return Ok(None),
        _ => {
            let (kind, many) = if singles.len() > 1 {
                ("weights files", &singles)
            } else {
                ("indexes", &indexes)
            };
            let listed: Vec<&str> = many.iter().map(|w| w.name).collect();
            return Err(bad(
                dir,
                format!(
                    "directory holds several {kind} ({}): ambiguous, open one of the files directly",
                    listed.join(", ")
                ),
            ));
        }
    };
    Ok(Some(dir.join(chosen.name)))
}

use crate::files::file_names;

/// The error for a folder with no usable file: pickles are refused with why and how to convert.
fn nothing_usable(dir: &Path, names: &[String], variant: Option<&str>) -> Error {
    let pickles: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| PICKLE_EXTENSIONS.iter().any(|e| n.ends_with(e)))
        .collect();
    if !pickles.is_empty() {
        return bad(dir, pickle_refusal(dir, &pickles));
    }
    let others: Vec<&str> = names
        .iter()
        .filter(|n| n.contains(".safetensors"))
        .map(String::as_str)
        .collect();
    let found = if others.is_empty() {
        "it holds no .safetensors file".to_string()
    } else {
        format!("it holds {}", others.join(", "))
    };
    let wanted = match variant {
        Some(v) => format!(" (variant {v} or standard)"),
        None => String::new(),
    };
    bad(
        dir,
        format!(
            "no model.safetensors, diffusion_pytorch_model.safetensors or *.safetensors.index.json{wanted} \
             in this directory; {found}"
        ),
    )
}

/// Why pickles are refused, and one command that converts them.
fn pickle_refusal(dir: &Path, pickles: &[&str]) -> String {
    let listed = pickles.join(", ");
    let how = match pickles {
        [one] => {
            let stem = one.rsplit_once('.').map_or(*one, |(s, _)| s);
            // transformers' pytorch_model.bin becomes model.safetensors.
            let target = match stem.strip_prefix("pytorch_") {
                Some(rest) => format!("{rest}.safetensors"),
                None => format!("{stem}.safetensors"),
            };
            let (src, dst) = (dir.join(one), dir.join(target));
            format!(
                "python3 -c \"import torch, safetensors.torch as st; st.save_file({{k: v.contiguous() \
                 for k, v in torch.load('{}', map_location='cpu', weights_only=True).items()}}, '{}')\"",
                src.display(),
                dst.display()
            )
        }
        _ => {
            let model = dir.parent().unwrap_or(dir);
            format!(
                "python3 -c \"from diffusers import DiffusionPipeline; \
                 DiffusionPipeline.from_pretrained('{}').save_pretrained('{}-safetensors')\"",
                model.display(),
                model.display()
            )
        }
    };
    format!(
        "holds only PyTorch pickle weights ({listed}), which stipple does not load: unpickling \
         can run arbitrary code. Convert them to safetensors once, e.g.: {how}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = |n| WeightsName::parse(n).map(|w| (w.base, w.variant, w.index));
        assert_eq!(p("model.safetensors"), Some(("model", None, false)));
        assert_eq!(
            p("diffusion_pytorch_model.fp16.safetensors"),
            Some(("diffusion_pytorch_model", Some("fp16"), false))
        );
        assert_eq!(
            p("diffusion_pytorch_model.safetensors.index.json"),
            Some(("diffusion_pytorch_model", None, true))
        );
        assert_eq!(
            p("diffusion_pytorch_model.safetensors.index.fp16.json"),
            Some(("diffusion_pytorch_model", Some("fp16"), true))
        );
        assert_eq!(
            p("model.fp16.safetensors.index.json"),
            Some(("model", Some("fp16"), true))
        );
        // Shards and other files are not candidates.
        assert_eq!(
            p("diffusion_pytorch_model-00001-of-00002.safetensors"),
            None
        );
        assert_eq!(p("unet.safetensors"), None);
        assert_eq!(p("config.json"), None);
    }
}
