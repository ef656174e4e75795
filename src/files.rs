//! Where the loaders read model files: the file system, or in-memory folders mounted at a path.
//!
//! On the web there is no file system: a page fetches a model folder's files over HTTP and
//! mounts them ([`MemoryFolder::mount`]) at a path such as `/models/tiny`; then
//! `Pipeline::load("/models/tiny", …)` reads them through the very code that reads a folder on
//! disk (folder layout, `config.json`, tokenizer files, safetensors headers and tensors). Every
//! loader asks this module ([`read`], [`read_to_string`], [`is_dir`], [`is_file`],
//! [`file_names`]) instead of `std::fs`; a path under a mount is answered from memory, any
//! other from the file system. Mounted bytes are shared, not copied: tensors are read from
//! them as from a memory map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// The contents of one model folder: relative path (`unet/config.json`) → bytes.
#[derive(Clone, Debug, Default)]
pub struct MemoryFolder {
    files: BTreeMap<PathBuf, Arc<[u8]>>,
}

impl MemoryFolder {
    pub fn new() -> MemoryFolder {
        MemoryFolder::default()
    }

    /// Adds (or replaces) the file at `relative` (`/`-separated, inside the folder).
    pub fn insert(&mut self, relative: impl AsRef<Path>, bytes: impl Into<Arc<[u8]>>) {
        self.files
            .insert(normalize(relative.as_ref()), bytes.into());
    }

    /// Removes the file at `relative`, returning its bytes.
    pub fn remove(&mut self, relative: impl AsRef<Path>) -> Option<Arc<[u8]>> {
        self.files.remove(&normalize(relative.as_ref()))
    }

    /// Every file of the folder at `dir` on disk (recursively), for tests and tools.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &Path) -> Result<MemoryFolder> {
        fn walk(root: &Path, dir: &Path, out: &mut MemoryFolder) -> Result<()> {
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                let path = entry.map_err(|e| Error::io(dir, e))?.path();
                if path.is_dir() {
                    walk(root, &path, out)?;
                } else {
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    let relative = path.strip_prefix(root).unwrap_or(&path);
                    out.insert(relative, bytes);
                }
            }
            Ok(())
        }
        let mut out = MemoryFolder::new();
        walk(dir, dir, &mut out)?;
        Ok(out)
    }

    /// Total bytes held.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|b| b.len() as u64).sum()
    }

    /// Makes the files readable under `root` until the returned [`Mount`] is dropped. A later
    /// mount at the same root hides an earlier one.
    pub fn mount(self, root: impl Into<PathBuf>) -> Mount {
        let root = normalize(&root.into());
        let mut mounts = MOUNTS.write().unwrap_or_else(|e| e.into_inner());
        mounts.push((root.clone(), Arc::new(self)));
        Mount { root }
    }
}

/// An in-memory folder readable at [`Mount::root`]; unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    root: PathBuf,
}

impl Mount {
    /// The path to load from (`Pipeline::load(mount.root(), …)`).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let mut mounts = MOUNTS.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = mounts.iter().rposition(|(r, _)| *r == self.root) {
            mounts.remove(i);
        }
    }
}

static MOUNTS: RwLock<Vec<(PathBuf, Arc<MemoryFolder>)>> = RwLock::new(Vec::new());

/// `a/./b` → `a/b` (joined paths compare by components; `.` would not).
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// The mounted folder holding `path`, and `path` relative to its root (latest mount first).
fn mounted(path: &Path) -> Option<(Arc<MemoryFolder>, PathBuf)> {
    let path = normalize(path);
    let mounts = MOUNTS.read().unwrap_or_else(|e| e.into_inner());
    mounts.iter().rev().find_map(|(root, folder)| {
        let relative = path.strip_prefix(root).ok()?;
        Some((folder.clone(), relative.to_path_buf()))
    })
}

fn not_found(path: &Path) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file in the mounted in-memory folder",
        ),
    )
}

/// Whether `path` lies under a mounted in-memory folder.
pub fn is_mounted(path: &Path) -> bool {
    mounted(path).is_some()
}

/// The whole file at `path`.
pub fn read(path: &Path) -> Result<Arc<[u8]>> {
    match mounted(path) {
        Some((folder, relative)) => folder
            .files
            .get(&relative)
            .cloned()
            .ok_or_else(|| not_found(path)),
        None => Ok(std::fs::read(path).map_err(|e| Error::io(path, e))?.into()),
    }
}

/// The file at `path` as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String> {
    match mounted(path) {
        Some(_) => {
            let bytes = read(path)?;
            String::from_utf8(bytes.to_vec()).map_err(|e| {
                Error::io(
                    path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
                )
            })
        }
        None => std::fs::read_to_string(path).map_err(|e| Error::io(path, e)),
    }
}

/// Whether `path` is a file (a mounted file, or a file on disk).
pub fn is_file(path: &Path) -> bool {
    match mounted(path) {
        Some((folder, relative)) => folder.files.contains_key(&relative),
        None => path.is_file(),
    }
}

/// Whether `path` is a folder (a mount root or a folder inside one, or a folder on disk).
pub fn is_dir(path: &Path) -> bool {
    match mounted(path) {
        Some((folder, relative)) => {
            relative.as_os_str().is_empty()
                || folder
                    .files
                    .keys()
                    .any(|k| k.starts_with(&relative) && *k != relative)
        }
        None => path.is_dir(),
    }
}

/// Whether anything exists at `path`.
pub fn exists(path: &Path) -> bool {
    is_file(path) || is_dir(path) || (mounted(path).is_none() && path.exists())
}

/// Sorted names of the files (and links to files) directly in `dir`.
pub fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    match mounted(dir) {
        Some((folder, relative)) => {
            if !is_dir(dir) {
                return Err(not_found(dir));
            }
            for key in folder.files.keys() {
                if key.parent() == Some(relative.as_path()) {
                    if let Some(name) = key.file_name().and_then(|n| n.to_str()) {
                        names.push(name.to_string());
                    }
                }
            }
        }
        None => {
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                let is_file = entry
                    .file_type()
                    .map(|t| t.is_file() || t.is_symlink())
                    .unwrap_or(false);
                if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_folder_answers_like_a_folder() {
        let mut folder = MemoryFolder::new();
        folder.insert("model_index.json", b"{}".to_vec());
        folder.insert("unet/config.json", b"{\"a\": 1}".to_vec());
        folder.insert("unet/diffusion_pytorch_model.safetensors", vec![1u8, 2, 3]);
        let mount = folder.mount("/memory/files-test");
        let root = mount.root().to_path_buf();
        assert!(is_dir(&root) && is_dir(&root.join("unet")) && is_dir(&root.join("./unet")));
        assert!(!is_dir(&root.join("vae")) && !is_dir(&root.join("model_index.json")));
        assert!(is_file(&root.join("unet/config.json")) && !is_file(&root.join("unet")));
        assert_eq!(
            read_to_string(&root.join("unet").join("config.json")).unwrap(),
            "{\"a\": 1}"
        );
        assert_eq!(
            file_names(&root.join("unet")).unwrap(),
            ["config.json", "diffusion_pytorch_model.safetensors"]
        );
        assert_eq!(file_names(&root).unwrap(), ["model_index.json"]);
        let err = read(&root.join("vae/config.json")).unwrap_err().to_string();
        assert!(err.contains("vae/config.json"), "{err}");
        drop(mount);
        assert!(!is_dir(&root));
    }
}
