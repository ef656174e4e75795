//! Model weights: memory-mapped safetensors files, a prefix view that spells out diffusers key
//! names (`w.pp("down_blocks").pp(0).get("conv.weight", …)` reads `down_blocks.0.conv.weight`),
//! and bookkeeping of which tensors the model consumed.
//!
//! - [`Weights::open`] accepts a `.safetensors` file, a sharded `*.safetensors.index.json`, or
//!   a diffusers module folder (see its docs). Headers are fully validated at open: after that
//!   no data-dependent read can go out of bounds.
//! - [`WeightsView::get`] converts one tensor to `f32` (from F32, F16 or BF16), checks its shape
//!   and marks it used. Errors name the full tensor name and the file, and suggest the closest
//!   existing name for a near miss.
//! - [`Weights::finish`] fails when a tensor was never fetched: a model config that does not
//!   match its weights is caught at load instead of producing a wrong image.
//!
//! Memory mapping: files are mapped with `memmap2`, so only the pages actually fetched are read.
//! **A weights file must not be modified or truncated while a [`Weights`] that opened it is
//! alive** (the same contract as every mmap-based loader): truncation would crash the process
//! with `SIGBUS` on the next read.

mod dtype;
pub mod module_tensors;
pub mod published_configs;
pub mod random_init;
mod resolve;
mod safetensors_file;
pub mod single_file;
mod tensor_data;
pub mod writer;

pub use dtype::{to_f32, FileDtype};
pub use resolve::{resolve_dir, ResolvedWeights};
pub use tensor_data::TensorData;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::error::{Error, Result};
use safetensors_file::SafetensorsFile;

/// How many unused tensor names [`Weights::finish`] lists.
const UNUSED_LISTED: usize = 10;

struct Entry {
    file: usize,
    dtype: FileDtype,
    shape: Vec<usize>,
    range: Range<usize>,
    used: AtomicBool,
}

/// The tensors of one model (one file, or the shards of one index), memory-mapped.
///
/// `Send + Sync`: the used-set is a flag per tensor, so views can be used from several threads.
pub struct Weights {
    /// The `.safetensors` or `.safetensors.index.json` file actually opened.
    path: PathBuf,
    files: Vec<SafetensorsFile>,
    tensors: BTreeMap<String, Entry>,
    /// For renamed checkpoints (single files): a tensor's name in the file, for messages.
    source_names: Option<SourceNames>,
    /// `__metadata__` of a single file (empty for an index).
    metadata: HashMap<String, String>,
}

/// Maps a tensor name stipple reads to the name of the tensor it comes from in the file.
pub type SourceNames = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("files", &self.files.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Weights {
    /// Opens model weights from `path`, which is one of:
    ///
    /// - a `.safetensors` file;
    /// - a sharded `*.safetensors.index.json` (any `*.json`): its `weight_map` maps tensor
    ///   names to shard files, relative to the index's directory; every shard named is opened;
    /// - a directory holding `model.safetensors`, `diffusion_pytorch_model.safetensors` or one
    ///   `*.safetensors.index.json`, chosen by [`resolve_dir`] with no variant asked. **When a
    ///   directory holds both a single file and an index, the single (non-sharded) file is
    ///   used.** Two single files, or several indexes and no single file, are an error
    ///   (ambiguous); a directory holding only one variant (`*.fp16.safetensors`) opens it; one
    ///   with none of these is an error listing the `.safetensors` files it does hold (pickles
    ///   are refused with the reason and a conversion command).
    ///
    /// Every header is validated here ([`Error::Safetensors`] naming the file); a tensor
    /// present in two shards is an error naming both files.
    pub fn open(path: impl AsRef<Path>) -> Result<Weights> {
        let path = path.as_ref();
        let is_dir = if crate::files::is_mounted(path) {
            crate::files::is_dir(path)
        } else {
            std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .is_dir()
        };
        let resolved = if is_dir {
            resolve_dir(path, None)?.path
        } else {
            path.to_path_buf()
        };
        let is_index = resolved
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".json"));
        if is_index {
            open_index(resolved)
        } else {
            let (file, header) = SafetensorsFile::open(&resolved)?;
            let mut weights = Weights {
                path: resolved,
                files: Vec::new(),
                tensors: BTreeMap::new(),
                source_names: None,
                metadata: header.metadata,
            };
            weights.add_file(file, header.tensors)?;
            Ok(weights)
        }
    }

    /// The file opened: the `.safetensors` file or the `.safetensors.index.json` (for a
    /// directory, the file chosen inside it).
    /// A source with no tensors, for building graphs with placeholder weights (memory planning):
    /// views of it only name things.
    pub fn empty(label: impl Into<PathBuf>) -> Weights {
        Weights {
            path: label.into(),
            files: Vec::new(),
            tensors: BTreeMap::new(),
            source_names: None,
            metadata: HashMap::new(),
        }
    }

    /// One file whose tensors were renamed (`tensors` hold the new names and shapes, and byte
    /// ranges inside `file`, possibly sub-ranges or shared). Messages about missing or unused
    /// tensors give the file's own names through `source_names`.
    pub(crate) fn renamed(
        path: PathBuf,
        file: SafetensorsFile,
        tensors: Vec<safetensors_file::TensorInfo>,
        source_names: SourceNames,
    ) -> Result<Weights> {
        let mut weights = Weights {
            path,
            files: Vec::new(),
            tensors: BTreeMap::new(),
            source_names: Some(source_names),
            metadata: HashMap::new(),
        };
        weights.add_file(file, tensors)?;
        Ok(weights)
    }

    /// The on-disk dtype, shape and bytes of a tensor (for copying it unchanged).
    pub fn raw(&self, full_name: &str) -> Option<(FileDtype, &[usize], &[u8])> {
        let e = self.tensors.get(full_name)?;
        Some((e.dtype, &e.shape, self.files[e.file].bytes(e.range.clone())))
    }

    /// The name `full_name` has in the file (differs for renamed checkpoints).
    fn source_name(&self, full_name: &str) -> String {
        self.source_names
            .as_ref()
            .and_then(|f| f(full_name))
            .unwrap_or_else(|| full_name.to_string())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every mapped file (one, or each shard), in the order opened.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path()).collect()
    }

    /// Bytes of all tensor data (headers excluded).
    pub fn data_bytes(&self) -> u64 {
        self.tensors.values().map(|e| e.range.len() as u64).sum()
    }

    /// A view with an empty prefix.
    pub fn root(&self) -> WeightsView<'_> {
        WeightsView {
            weights: self,
            prefix: String::new(),
        }
    }

    /// `root().pp(prefix)`.
    pub fn pp(&self, prefix: impl fmt::Display) -> WeightsView<'_> {
        self.root().pp(prefix)
    }

    /// The `__metadata__` strings of a single `.safetensors` file (empty for a sharded index).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Whether a tensor of this full name exists.
    pub fn contains(&self, full_name: &str) -> bool {
        self.tensors.contains_key(full_name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Sorted names of the tensors never fetched with `get`/`get_any` (nor skipped).
    pub fn unused(&self) -> Vec<String> {
        self.tensors
            .iter()
            .filter(|(_, e)| !e.used.load(Ordering::Relaxed))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `Ok` when every tensor was used; otherwise an [`Error::Weight`] naming the file, the
    /// first unused tensor and up to 10 of them (plus how many more): the model config
    /// probably does not match these weights. Tensors a model deliberately ignores can be
    /// marked with [`WeightsView::skip`] / [`WeightsView::skip_all`].
    pub fn finish(&self) -> Result<()> {
        let mut unused: Vec<String> = Vec::new();
        for name in self.unused() {
            let source = self.source_name(&name);
            if !unused.contains(&source) {
                unused.push(source);
            }
        }
        let Some(first) = unused.first() else {
            return Ok(());
        };
        let listed = unused
            .iter()
            .take(UNUSED_LISTED)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let more = match unused.len().saturating_sub(UNUSED_LISTED) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        Err(Error::Weight {
            file: self.path.clone(),
            tensor: first.clone(),
            message: format!(
                "{} of {} tensors never used by the model: {listed}{more} (does the model \
                 config match these weights?)",
                unused.len(),
                self.tensors.len()
            ),
        })
    }

    fn add_file(
        &mut self,
        file: SafetensorsFile,
        tensors: Vec<safetensors_file::TensorInfo>,
    ) -> Result<()> {
        let index = self.files.len();
        for t in tensors {
            if let Some(existing) = self.tensors.get(&t.name) {
                return Err(Error::Safetensors {
                    file: file.path().to_path_buf(),
                    message: format!(
                        "tensor {} is also in {}: duplicate tensor name across shards",
                        t.name,
                        self.files[existing.file].path().display()
                    ),
                });
            }
            self.tensors.insert(
                t.name,
                Entry {
                    file: index,
                    dtype: t.dtype,
                    shape: t.shape,
                    range: t.range,
                    used: AtomicBool::new(false),
                },
            );
        }
        self.files.push(file);
        Ok(())
    }

    /// The entry of `full` or a "not found" error (with a suggestion). `prefix` is the view's.
    fn entry(&self, full: &str, prefix: &str) -> Result<&Entry> {
        self.tensors
            .get(full)
            .ok_or_else(|| self.missing(full, prefix))
    }

    fn file_of(&self, entry: &Entry) -> PathBuf {
        self.files[entry.file].path().to_path_buf()
    }

    fn missing(&self, full: &str, prefix: &str) -> Error {
        let source = self.source_name(full);
        if source != full {
            return Error::Weight {
                file: self.path.clone(),
                tensor: source,
                message: format!("not found (needed as {full}): the file lacks this block"),
            };
        }
        let mut message = String::from("not found");
        if let Some(near) = closest_name(full, self.tensors.keys()) {
            message += &format!("; did you mean {near}?");
        } else if !prefix.is_empty() {
            let dotted = format!("{prefix}.");
            let under: Vec<&str> = self
                .tensors
                .keys()
                .filter(|n| n.starts_with(&dotted))
                .map(String::as_str)
                .collect();
            if under.is_empty() {
                message += &format!("; no tensor name starts with {dotted:?}");
            } else {
                let shown: Vec<&str> = under.iter().take(5).copied().collect();
                message += &format!(
                    "; the {} tensors under {dotted:?} include {}",
                    under.len(),
                    shown.join(", ")
                );
            }
        }
        Error::Weight {
            file: self.path.clone(),
            tensor: full.to_string(),
            message,
        }
    }

    fn read(&self, full: &str, entry: &Entry) -> Result<Vec<f32>> {
        let file = &self.files[entry.file];
        let data =
            to_f32(entry.dtype, file.bytes(entry.range.clone())).map_err(|message| Error::Weight {
                file: self.file_of(entry),
                tensor: full.to_string(),
                message,
            });
        file.release(entry.range.clone());
        data
    }

    /// `entry` as a [`TensorData`] borrowed from the map (F32, F16 and BF16 only).
    fn data(&self, full: &str, entry: &Entry) -> Result<TensorData<'_>> {
        let file = &self.files[entry.file];
        TensorData::new(file, entry.range.clone(), entry.dtype, entry.shape.clone()).ok_or_else(
            || Error::Weight {
                file: self.file_of(entry),
                tensor: full.to_string(),
                message: format!(
                    "dtype {} cannot be converted to f32 (supported: F32, F16, BF16)",
                    entry.dtype
                ),
            },
        )
    }
}

/// A prefix into a [`Weights`]: names passed to its methods are relative to the prefix.
#[derive(Clone)]
pub struct WeightsView<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl fmt::Debug for WeightsView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightsView")
            .field("path", &self.weights.path)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<'a> WeightsView<'a> {
    /// A sub-view: `pp("down_blocks")` then `pp(0)` gives prefix `down_blocks.0`. An empty
    /// part leaves the prefix as is.
    pub fn pp(&self, part: impl fmt::Display) -> WeightsView<'a> {
        WeightsView {
            weights: self.weights,
            prefix: self.full_name(&part.to_string()),
        }
    }

    /// The prefix, without a trailing dot (empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The weights this view reads.
    pub fn weights(&self) -> &'a Weights {
        self.weights
    }

    /// `prefix.name` (or `name` for the root view).
    pub fn full_name(&self, name: &str) -> String {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{name}", self.prefix),
        }
    }

    /// Whether `prefix.name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.full_name(name))
    }

    /// The shape of `prefix.name`; missing → [`Error::Weight`] naming the full name and file.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let full = self.full_name(name);
        Ok(self.weights.entry(&full, &self.prefix)?.shape.clone())
    }

    /// The on-disk dtype of `prefix.name`; does not mark it used.
    pub fn dtype(&self, name: &str) -> Result<FileDtype> {
        let full = self.full_name(name);
        Ok(self.weights.entry(&full, &self.prefix)?.dtype)
    }

    /// Fetches `prefix.name` as `f32`, checking its shape, and marks it used.
    ///
    /// Errors ([`Error::Weight`], naming the full tensor name and the file it is, or should
    /// be, in): missing (with "did you mean …" when an existing name is a small edit away),
    /// a shape other than `shape` (expected and found), a dtype other than F32/F16/BF16.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = self.full_name(name);
        let entry = self.checked_entry(&full, shape)?;
        let data = self.weights.read(&full, entry)?;
        entry.used.store(true, Ordering::Relaxed);
        Ok(data)
    }

    /// Like [`WeightsView::get`], but borrows the tensor from the memory map instead of
    /// converting it: for streaming it to the GPU chunk by chunk. Its pages are released when
    /// the returned value is dropped.
    pub fn data(&self, name: &str, shape: &[usize]) -> Result<TensorData<'a>> {
        let full = self.full_name(name);
        let entry = self.checked_entry(&full, shape)?;
        let data = self.weights.data(&full, entry)?;
        entry.used.store(true, Ordering::Relaxed);
        Ok(data)
    }

    /// The entry of `full`, or an error naming it when missing or of another shape.
    fn checked_entry(&self, full: &str, shape: &[usize]) -> Result<&'a Entry> {
        let entry = self.weights.entry(full, &self.prefix)?;
        if entry.shape != shape {
            let numel = |s: &[usize]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let hint = if numel(shape) == numel(&entry.shape) {
                " (same number of elements: a reshape may be intended)"
            } else {
                ""
            };
            let source = self.weights.source_name(full);
            let read_as = if source == full {
                String::new()
            } else {
                format!(" (read as {full})")
            };
            return Err(Error::Weight {
                file: self.weights.file_of(entry),
                tensor: source,
                message: format!(
                    "expected shape {shape:?}{read_as}, found {:?} in the file{hint}",
                    entry.shape
                ),
            });
        }
        Ok(entry)
    }

    /// Fetches `prefix.name` as `f32` whatever its shape, and marks it used.
    pub fn get_any(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let full = self.full_name(name);
        let entry = self.weights.entry(&full, &self.prefix)?;
        let data = self.weights.read(&full, entry)?;
        entry.used.store(true, Ordering::Relaxed);
        Ok((entry.shape.clone(), data))
    }

    /// Marks `prefix.name` as deliberately unused (for [`Weights::finish`]) without reading it,
    /// e.g. CLIP's `position_ids` buffer. Returns whether it exists.
    pub fn skip(&self, name: &str) -> bool {
        match self.weights.tensors.get(&self.full_name(name)) {
            Some(entry) => {
                entry.used.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Marks every tensor under this view's prefix (all of them for the root) as deliberately
    /// unused; returns how many there were.
    pub fn skip_all(&self) -> usize {
        let dotted = format!("{}.", self.prefix);
        let mut n = 0;
        for (name, entry) in &self.weights.tensors {
            if self.prefix.is_empty() || name.starts_with(&dotted) || *name == self.prefix {
                entry.used.store(true, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Safetensors {
        file: path.to_path_buf(),
        message: message.into(),
    }
}

/// Opens a sharded checkpoint from its `*.safetensors.index.json`.
fn open_index(index: PathBuf) -> Result<Weights> {
    let text = crate::files::read_to_string(&index)?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| bad(&index, format!("index is not valid JSON: {e}")))?;
    let Some(map) = json.get("weight_map") else {
        return Err(bad(&index, "index has no \"weight_map\" object"));
    };
    let Value::Object(map) = map else {
        return Err(bad(
            &index,
            format!(
                "\"weight_map\" must be an object mapping tensor names to shard files, found {}",
                json_kind(map)
            ),
        ));
    };

    // Shard file → tensor names listed for it, shards in first-mention order.
    let mut shards: Vec<(String, Vec<String>)> = Vec::new();
    for (tensor, shard) in map {
        let Value::String(shard) = shard else {
            return Err(bad(
                &index,
                format!(
                    "weight_map entry for tensor {tensor} must be a shard file name, found {}",
                    json_kind(shard)
                ),
            ));
        };
        let relative = Path::new(shard);
        if shard.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(bad(
                &index,
                format!(
                    "weight_map entry for tensor {tensor}: shard {shard:?} must be a file name \
                     relative to the index's directory"
                ),
            ));
        }
        match shards.iter_mut().find(|(s, _)| s == shard) {
            Some((_, tensors)) => tensors.push(tensor.clone()),
            None => shards.push((shard.clone(), vec![tensor.clone()])),
        }
    }

    let dir = index.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut weights = Weights {
        path: index.clone(),
        files: Vec::new(),
        tensors: BTreeMap::new(),
        source_names: None,
        metadata: HashMap::new(),
    };
    for (shard, listed) in &shards {
        let shard_path = dir.join(shard);
        let (file, header) = SafetensorsFile::open(&shard_path).map_err(|e| match e {
            Error::Io { path, source } => bad(
                &index,
                format!(
                    "shard {} (named in weight_map for {} tensors, e.g. {}) cannot be read: \
                     {source}",
                    path.display(),
                    listed.len(),
                    listed[0]
                ),
            ),
            other => other,
        })?;
        if let Some(absent) = listed
            .iter()
            .find(|t| !header.tensors.iter().any(|h| &h.name == *t))
        {
            return Err(Error::Weight {
                file: shard_path,
                tensor: absent.clone(),
                message: format!(
                    "listed in {}'s weight_map for this shard, but the shard does not hold it",
                    index.display()
                ),
            });
        }
        weights.add_file(file, header.tensors)?;
    }
    Ok(weights)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The existing name closest to `wanted` by edit distance, if it is a small edit away
/// (at most 2, or 1/8 of the length for long names, capped at 6).
fn closest_name<'n>(wanted: &str, names: impl Iterator<Item = &'n String>) -> Option<&'n str> {
    let limit = (wanted.len() / 8).clamp(2, 6);
    let mut best: Option<(usize, &str)> = None;
    for name in names {
        if name.len().abs_diff(wanted.len()) > limit {
            continue;
        }
        let bound = best.map_or(limit, |(d, _)| d.saturating_sub(1));
        if let Some(d) = edit_distance(wanted.as_bytes(), name.as_bytes(), bound) {
            best = Some((d, name));
            if d <= 1 {
                break;
            }
        }
    }
    best.map(|(_, n)| n)
}

/// Levenshtein distance between `a` and `b` with adjacent transpositions counted as one edit
/// (optimal string alignment), or `None` if it exceeds `bound`.
fn edit_distance(a: &[u8], b: &[u8], bound: usize) -> Option<usize> {
    let n = b.len();
    let mut prev2: Vec<usize> = vec![0; n + 1];
    let mut prev: Vec<usize> = (0..=n).collect();
    let mut cur: Vec<usize> = vec![0; n + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=n {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
            row_min = row_min.min(d);
        }
        if row_min > bound {
            return None;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    let d = prev[n];
    (d <= bound).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance(b"weight", b"weight", 3), Some(0));
        assert_eq!(edit_distance(b"wieght", b"weight", 3), Some(1));
        assert_eq!(edit_distance(b"conv1", b"conv_1", 3), Some(1));
        assert_eq!(edit_distance(b"abc", b"xyz", 2), None);
        assert_eq!(edit_distance(b"", b"ab", 2), Some(2));
    }

    #[test]
    fn closest() {
        let names = ["a.conv.weight".to_string(), "a.conv.bias".to_string()];
        assert_eq!(
            closest_name("a.conv.wieght", names.iter()),
            Some("a.conv.weight")
        );
        assert_eq!(closest_name("b.norm.scale", names.iter()), None);
    }

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Weights>();
        check::<WeightsView<'static>>();
    }
}
