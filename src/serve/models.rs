//! The models a server offers: the `-m` model plus every diffusers folder (one holding
//! `model_index.json`) directly inside `--models-dir`, each named by its folder name. A1111
//! clients select one by `sd_model_checkpoint` (its name, or A1111's `title` "name \[hash\]").

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One model a client can select.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    pub path: PathBuf,
}

/// All selectable models; the first is the default.
#[derive(Clone, Debug)]
pub struct ModelCatalog {
    pub models: Vec<ModelEntry>,
}

/// A folder's last component as a model name.
fn folder_name(path: &Path) -> String {
    path.file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string()
}

impl ModelCatalog {
    /// The default model first, then `models_dir`'s model folders sorted by name. Two models
    /// with one name are an error naming both folders.
    pub fn scan(default: &Path, models_dir: Option<&Path>) -> Result<ModelCatalog> {
        let mut models = vec![ModelEntry {
            name: folder_name(default),
            path: default.to_path_buf(),
        }];
        if let Some(dir) = models_dir {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            let mut found = Vec::new();
            for entry in entries {
                let path = entry.map_err(|e| Error::io(dir, e))?.path();
                if path.join("model_index.json").is_file() {
                    found.push(path);
                }
            }
            found.sort();
            for path in found {
                let canonical = path.canonicalize().ok();
                let same_folder = |m: &ModelEntry| m.path.canonicalize().ok() == canonical;
                if canonical.is_some() && models.iter().any(same_folder) {
                    continue;
                }
                let name = folder_name(&path);
                if let Some(other) = models.iter().find(|m| m.name == name) {
                    return Err(Error::invalid(
                        "--models-dir",
                        format!(
                            "two models are named {name:?}: {} and {} (rename one folder)",
                            other.path.display(),
                            path.display()
                        ),
                    ));
                }
                models.push(ModelEntry { name, path });
            }
        }
        Ok(ModelCatalog { models })
    }

    pub fn default_model(&self) -> &ModelEntry {
        &self.models[0]
    }

    /// The model a client names: its name, or an A1111 title `"name [hash]"`.
    pub fn find(&self, requested: &str) -> Option<&ModelEntry> {
        let requested = requested.trim();
        let bare = match requested.rsplit_once(" [") {
            Some((name, hash)) if hash.ends_with(']') => name.trim(),
            _ => requested,
        };
        self.models.iter().find(|m| m.name == bare)
    }

    /// Names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_and_find() {
        let dir = std::env::temp_dir().join(format!("stipple-models-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for name in ["b-model", "a-model", "not-a-model"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        std::fs::write(dir.join("a-model/model_index.json"), "{}").unwrap();
        std::fs::write(dir.join("b-model/model_index.json"), "{}").unwrap();
        let catalog = ModelCatalog::scan(Path::new("/somewhere/default"), Some(&dir)).unwrap();
        assert_eq!(catalog.names(), ["default", "a-model", "b-model"]);
        assert_eq!(catalog.find("b-model").unwrap().path, dir.join("b-model"));
        assert_eq!(catalog.find("a-model [0123abcd]").unwrap().name, "a-model");
        assert!(catalog.find("not-a-model").is_none());
        // The default model inside the folder is listed once.
        let catalog = ModelCatalog::scan(&dir.join("b-model"), Some(&dir)).unwrap();
        assert_eq!(catalog.names(), ["b-model", "a-model"]);
        // A second model of the default's name elsewhere is refused.
        let e = ModelCatalog::scan(Path::new("/elsewhere/a-model"), Some(&dir)).unwrap_err();
        assert!(e.to_string().contains("two models are named"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
