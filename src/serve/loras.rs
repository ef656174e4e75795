//! LoRA files the server offers (`--lora-dir`): listed by `GET /sdapi/v1/loras` as A1111 lists
//! them, and applied per request from `<lora:NAME:MULTIPLIER>` tags in the prompt (the way A1111
//! clients ask for them). A name is a file's stem (`style.safetensors` → `style`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::AppState;
use crate::error::{Error, Result};
use crate::lora::prompt_tags::LoraTag;

/// One LoRA file a request may name.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraEntry {
    pub name: String,
    pub path: PathBuf,
}

/// The `.safetensors` files directly in `--lora-dir`, sorted by name (empty without the flag).
#[derive(Clone, Debug, Default)]
pub struct LoraCatalog {
    entries: Vec<LoraEntry>,
}

impl LoraCatalog {
    pub fn scan(dir: Option<&Path>) -> Result<LoraCatalog> {
        let Some(dir) = dir else {
            return Ok(LoraCatalog::default());
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let is_lora = path.extension().is_some_and(|e| e == "safetensors") && path.is_file();
            if let (true, Some(stem)) = (is_lora, path.file_stem().and_then(|s| s.to_str())) {
                entries.push(LoraEntry {
                    name: stem.to_string(),
                    path,
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(LoraCatalog { entries })
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The files and multipliers for a prompt's tags, or a 422 naming `field` and the
    /// available names.
    pub fn resolve(&self, tags: &[LoraTag], field: &str) -> Result<Vec<(PathBuf, f32)>, ApiError> {
        tags.iter()
            .map(|tag| {
                let entry = self.entries.iter().find(|e| e.name == tag.name);
                entry
                    .map(|e| (e.path.clone(), tag.multiplier))
                    .ok_or_else(|| {
                        ApiError::field(
                            field,
                            format!(
                                "unknown LoRA {:?} in <lora:…>; available (--lora-dir): {:?}",
                                tag.name,
                                self.names()
                            ),
                        )
                    })
            })
            .collect()
    }
}

/// `GET /sdapi/v1/loras`: A1111's list (name, alias, path, metadata).
pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = state
        .loras
        .entries
        .iter()
        .map(|e| json!({"name": e.name, "alias": e.name, "path": e.path, "metadata": {}}))
        .collect();
    Json(Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_lists_safetensors_by_stem_and_resolves_tags() {
        let dir = std::env::temp_dir().join(format!("stipple-loras-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("folder.safetensors")).unwrap();
        for f in ["b.safetensors", "a.safetensors", "notes.txt"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let catalog = LoraCatalog::scan(Some(&dir)).unwrap();
        assert_eq!(catalog.names(), vec!["a", "b"]);
        let tag = |name: &str| LoraTag {
            name: name.into(),
            multiplier: 0.5,
        };
        let found = catalog.resolve(&[tag("b")], "prompt").unwrap();
        assert_eq!(found, vec![(dir.join("b.safetensors"), 0.5)]);
        assert!(catalog.resolve(&[tag("c")], "prompt").is_err());
        assert!(LoraCatalog::scan(None).unwrap().names().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
