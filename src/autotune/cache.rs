//! The decision cache: one JSON file, `autotune.json` in stipple's cache directory
//! (`STIPPLE_CACHE_DIR`, else the user's cache dir + `stipple`, e.g. `~/.cache/stipple` on
//! Linux), holding one entry per (adapter name, backend, driver, driver info, stipple version):
//!
//! ```json
//! {"format": 1, "entries": [{"adapter": "…", "backend": "Vulkan", "driver": "…",
//!   "driver_info": "…", "stipple": "0.1.0",
//!   "decisions": {"linear_tiled/f16/4096x640": "64x64k16", …}}]}
//! ```
//!
//! Writes replace the file atomically ([`crate::output_file`]: temporary file, fsync, rename)
//! after re-reading it and merging: concurrent processes never leave a torn file, and at worst
//! one loses the other's newest decisions (tuned again at their next use). A file that cannot be
//! read, does not parse or has another `format` is ignored with one warning line per process and
//! path; never an error: the kernels' defaults run instead. A corrupt file is replaced at the
//! next write; a file of another format (another stipple) is left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::TuneKey;

/// The cache file's name in the cache directory.
pub const FILE_NAME: &str = "autotune.json";
/// The file layout this stipple reads and writes.
pub const FORMAT: u32 = 1;

/// What a set of decisions is valid for: a change of adapter, driver or stipple version
/// means measuring again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterKey {
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    pub stipple: String,
}

impl AdapterKey {
    /// The key of an adapter for this build of stipple.
    pub fn of(info: &wgpu::AdapterInfo) -> AdapterKey {
        AdapterKey {
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            stipple: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    key: AdapterKey,
    /// Tuning key (`op/dtype/class`) → configuration name.
    decisions: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    entries: Vec<Entry>,
}

/// stipple's cache directory: `dir` if given, else `STIPPLE_CACHE_DIR`, else the user's cache
/// directory + `stipple` (`None` where the platform has none, e.g. on the web).
pub fn cache_dir(dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = dir {
        return Some(d.to_path_buf());
    }
    match std::env::var_os("STIPPLE_CACHE_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => user_cache_dir(),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn user_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("stipple"))
}

#[cfg(target_arch = "wasm32")]
fn user_cache_dir() -> Option<PathBuf> {
    None
}

/// The cache file in `dir`.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Why a file is not used.
enum Unusable {
    /// Unreadable or not JSON of this layout: replaced by the next write.
    Corrupt(String),
    /// Another format: left alone.
    Foreign(u32),
}

/// The file's content: `Ok(None)` when it does not exist.
fn read(path: &Path) -> std::result::Result<Option<CacheFile>, Unusable> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Unusable::Corrupt(format!("cannot be read ({e})"))),
    };
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    match serde_json::from_str::<Format>(&text) {
        Ok(f) if f.format != FORMAT => return Err(Unusable::Foreign(f.format)),
        Ok(_) => {}
        Err(e) => return Err(Unusable::Corrupt(format!("is not a stipple cache ({e})"))),
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Unusable::Corrupt(format!("does not parse ({e})")))
}

/// Prints `warning: … {path} …` once per process and path.
fn warn_once(path: &Path, message: &str) {
    static WARNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.iter().any(|p| p == path) {
        warned.push(path.to_path_buf());
        eprintln!("warning: autotune cache {}: {message}", path.display());
    }
}

fn warn_unusable(path: &Path, why: &Unusable) {
    match why {
        Unusable::Corrupt(m) => warn_once(path, &format!("{m}; ignoring it")),
        Unusable::Foreign(f) => warn_once(
            path,
            &format!("format {f} (this stipple reads {FORMAT}); ignoring it"),
        ),
    }
}

/// Decisions of `key` in the file at `path` (empty when the file is missing or unusable, which
/// warns once). Entries whose tuning key does not parse are skipped.
pub fn load(path: &Path, key: &AdapterKey) -> BTreeMap<TuneKey, String> {
    match read(path) {
        Ok(file) => file
            .and_then(|f| f.entries.into_iter().find(|e| e.key == *key))
            .map(|e| {
                e.decisions
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                    .collect()
            })
            .unwrap_or_default(),
        Err(why) => {
            warn_unusable(path, &why);
            BTreeMap::new()
        }
    }
}

/// How many decisions the file holds for `key`, and how many entries it has (any adapter,
/// driver or version); `None` when the file does not exist or is unusable.
pub fn summary(path: &Path, key: &AdapterKey) -> Option<(usize, usize)> {
    let file = read(path).ok()??;
    let mine = file
        .entries
        .iter()
        .find(|e| e.key == *key)
        .map_or(0, |e| e.decisions.len());
    Some((mine, file.entries.len()))
}

/// Write `decisions` as `key`'s entry of the file at `path`, merged over what the file holds
/// now (decisions of keys in `dropped` are removed); other entries are kept. The directory is
/// created when missing. A file of another format is left alone (warned once, `Ok`).
pub fn save(
    path: &Path,
    key: &AdapterKey,
    decisions: &BTreeMap<TuneKey, String>,
    dropped: &[TuneKey],
) -> Result<()> {
    let mut file = match read(path) {
        Ok(Some(f)) => f,
        Ok(None) | Err(Unusable::Corrupt(_)) => CacheFile {
            format: FORMAT,
            entries: Vec::new(),
        },
        Err(foreign) => {
            warn_unusable(path, &foreign);
            return Ok(());
        }
    };
    let at = match file.entries.iter().position(|e| e.key == *key) {
        Some(i) => i,
        None => {
            file.entries.push(Entry {
                key: key.clone(),
                decisions: BTreeMap::new(),
            });
            file.entries.len() - 1
        }
    };
    let entry = &mut file.entries[at].decisions;
    for k in dropped {
        entry.remove(&k.to_string());
    }
    for (k, v) in decisions {
        entry.insert(k.to_string(), v.clone());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut bytes = serde_json::to_vec_pretty(&file)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    bytes.push(b'\n');
    crate::output_file::write_output_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stipple-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn info(name: &str, driver_info: &str) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: name.into(),
            vendor: 0x10de,
            device: 0,
            device_type: wgpu::DeviceType::DiscreteGpu,
            device_pci_bus_id: String::new(),
            driver: "NVIDIA".into(),
            driver_info: driver_info.into(),
            backend: wgpu::Backend::Vulkan,
            subgroup_min_size: 32,
            subgroup_max_size: 32,
            transient_saves_memory: None,
            limit_bucket: None,
        }
    }

    fn decisions(pairs: &[(&str, &str)]) -> BTreeMap<TuneKey, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trip_merge_and_drop() {
        let dir = scratch("round");
        let path = file_in(&dir.join("nested"));
        let a = AdapterKey::of(&info("RTX", "550.1"));
        assert!(load(&path, &a).is_empty());
        assert_eq!(summary(&path, &a), None);
        let first = decisions(&[("linear_tiled/f16/1024x320", "64x64k16")]);
        save(&path, &a, &first, &[]).unwrap();
        assert_eq!(load(&path, &a), first);
        // A second save merges; another adapter gets its own entry.
        let second = decisions(&[("partial_tiled/f16/64", "wg128-kv32")]);
        save(&path, &a, &second, &[]).unwrap();
        let b = AdapterKey::of(&info("Arc", "1"));
        save(&path, &b, &first, &[]).unwrap();
        let mut both = first.clone();
        both.extend(second.clone());
        assert_eq!(load(&path, &a), both);
        assert_eq!(summary(&path, &a), Some((2, 2)));
        // Dropped keys go.
        let gone: Vec<TuneKey> = first.keys().cloned().collect();
        save(&path, &a, &BTreeMap::new(), &gone).unwrap();
        assert_eq!(load(&path, &a), second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_changes_with_adapter_driver_and_version() {
        let base = AdapterKey::of(&info("RTX", "550.1"));
        assert_eq!(base.stipple, env!("CARGO_PKG_VERSION"));
        assert_ne!(base, AdapterKey::of(&info("RTX 2", "550.1")));
        assert_ne!(base, AdapterKey::of(&info("RTX", "551.0")));
        let mut other_backend = info("RTX", "550.1");
        other_backend.backend = wgpu::Backend::Dx12;
        assert_ne!(base, AdapterKey::of(&other_backend));
        let mut other_driver = info("RTX", "550.1");
        other_driver.driver = "nouveau".into();
        assert_ne!(base, AdapterKey::of(&other_driver));
        let older = AdapterKey {
            stipple: "0.0.1".into(),
            ..base.clone()
        };
        let dir = scratch("version");
        let path = file_in(&dir);
        save(
            &path,
            &older,
            &decisions(&[("linear_tiled/f32/1x2x3", "64x32k8")]),
            &[],
        )
        .unwrap();
        assert!(
            load(&path, &base).is_empty(),
            "another version's decisions are not used"
        );
        assert_eq!(load(&path, &older).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_and_foreign_files_are_ignored() {
        let dir = scratch("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let path = file_in(&dir);
        let a = AdapterKey::of(&info("RTX", "550.1"));
        let one = decisions(&[("conv2d_tiled/f32/4096x640", "128x64k8")]);
        for corrupt in ["", "{", "[1, 2]", "{\"format\": 1}", "\u{0}\u{1}garbage"] {
            std::fs::write(&path, corrupt).unwrap();
            assert!(load(&path, &a).is_empty(), "{corrupt:?}");
            assert_eq!(summary(&path, &a), None);
            // The next save replaces a corrupt file.
            save(&path, &a, &one, &[]).unwrap();
            assert_eq!(load(&path, &a), one);
        }
        // Unknown tuning keys in a valid file are skipped, the rest is used.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"decisions\": {", "\"decisions\": {\"bad key\": \"x\",");
        std::fs::write(&path, text).unwrap();
        assert_eq!(load(&path, &a), one);
        // Another format: ignored and left alone.
        let foreign = "{\"format\": 99, \"entries\": \"whatever\"}";
        std::fs::write(&path, foreign).unwrap();
        assert!(load(&path, &a).is_empty());
        save(&path, &a, &one, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), foreign);
        // A directory in the file's place: unreadable, and the save is an error naming it.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        assert!(load(&path, &a).is_empty());
        let err = save(&path, &a, &one, &[]).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Writers racing on one file (threads here; processes get temporary files named by pid
    /// too) never leave it torn: every read in between and the end result parse.
    #[test]
    fn concurrent_writers_never_corrupt_the_file() {
        let dir = scratch("race");
        let path = file_in(&dir);
        let a = AdapterKey::of(&info("RTX", "550.1"));
        std::thread::scope(|s| {
            for t in 0..6 {
                let (path, a) = (&path, &a);
                s.spawn(move || {
                    for i in 0..15 {
                        let k = format!("linear_tiled/f32/{t}x{i}x1");
                        save(path, a, &decisions(&[(&k, "64x32k8")]), &[]).unwrap();
                        assert!(read(path).is_ok(), "torn file");
                    }
                });
            }
        });
        assert!(read(&path).is_ok_and(|f| f.is_some()));
        assert!(!load(&path, &a).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cache_dir_follows_the_option_then_the_environment() {
        let given = Path::new("/some/where");
        assert_eq!(cache_dir(Some(given)).as_deref(), Some(given));
        let key = TuneKey::new("linear_tiled", DType::F32, vec![1]);
        assert_eq!(key.to_string(), "linear_tiled/f32/1");
    }
}
