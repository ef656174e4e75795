//! One `.safetensors` file: header parsing, validation, and tensor byte access. Files on disk
//! are memory-mapped (feature `mmap`, native default) or read whole; files of a mounted
//! in-memory folder ([`crate::files`], the web) are used in place.
//!
//! Format: a `u64` little-endian header size `N`, then `N` bytes of UTF-8 JSON, then the data
//! section. The JSON is an object mapping tensor names to
//! `{"dtype": "F16", "shape": [320, 4, 3, 3], "data_offsets": [begin, end]}` (offsets relative
//! to the start of the data section), plus an optional `"__metadata__"` object of strings.
//!
//! The header is parsed here with `serde_json` rather than the `safetensors` crate so that
//! every defect gets a message naming the file and the tensor, and so that a file is accepted
//! with gaps between tensors or in any order (the format allows both) while overlaps are not.
//! After [`SafetensorsFile::open`] succeeds, every tensor's byte range lies inside the mapping
//! and holds exactly `numel × dtype size` bytes, so [`SafetensorsFile::bytes`] never reads
//! out of bounds.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "mmap")]
use memmap2::Mmap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::dtype::FileDtype;
use crate::error::{Error, Result};

/// One tensor entry of a validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    pub name: String,
    pub dtype: FileDtype,
    pub shape: Vec<usize>,
    /// Absolute byte range inside the file (header included).
    pub range: Range<usize>,
}

/// A validated header: tensors in header order, and `__metadata__`.
#[derive(Debug, Default)]
pub(crate) struct Header {
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, String>,
}

/// A memory-mapped safetensors file.
///
/// Safety invariant of the mapping: the file must not be truncated or modified by anyone while
/// this value is alive (a truncated mapping raises `SIGBUS` on access; a modified one changes
/// the tensors under our feet). Checkpoints are read-only inputs, so this is the same contract
/// every mmap-based loader (safetensors, candle, PyTorch) relies on.
pub(crate) struct SafetensorsFile {
    path: PathBuf,
    data: Storage,
}

/// The file's bytes.
enum Storage {
    #[cfg(feature = "mmap")]
    Mapped(Mmap),
    /// Read whole, or shared with a mounted in-memory folder.
    Owned(Arc<[u8]>),
}

impl std::ops::Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(feature = "mmap")]
            Storage::Mapped(m) => m,
            Storage::Owned(b) => b,
        }
    }
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("len", &self.data.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Maps `path` and validates its header. I/O failures are [`Error::Io`]; every format
    /// defect is [`Error::Safetensors`] naming the file (and the tensor, where there is one).
    pub fn open(path: &Path) -> Result<(SafetensorsFile, Header)> {
        #[cfg(feature = "mmap")]
        if !crate::files::is_mounted(path) {
            return Self::map(path);
        }
        let bytes = crate::files::read(path)?;
        let header = parse(path, &bytes)?;
        Ok((
            SafetensorsFile {
                path: path.to_path_buf(),
                data: Storage::Owned(bytes),
            },
            header,
        ))
    }

    #[cfg(feature = "mmap")]
    fn map(path: &Path) -> Result<(SafetensorsFile, Header)> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < 8 {
            return Err(bad(
                path,
                format!(
                    "file is {len} bytes, too short for a safetensors file (it starts with an \
                     8-byte header length)"
                ),
            ));
        }
        // SAFETY: see the type's invariant: the file is not modified while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = parse(path, &mmap)?;
        Ok((
            SafetensorsFile {
                path: path.to_path_buf(),
                data: Storage::Mapped(mmap),
            },
            header,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes of a tensor range returned by this file's header.
    ///
    /// Panics only if `range` did not come from this file's validated header (an invariant of
    /// the caller, not a data-dependent failure).
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.data[range]
    }

    /// Hands the pages under `range` back to the kernel (`MADV_DONTNEED`): they stop counting
    /// in this process's resident memory but stay in the page cache. Reading them again faults
    /// them back in with the file's (unchanged) content, so this never changes what is read.
    /// Best effort: a failure only means the pages stay resident.
    pub fn release(&self, range: Range<usize>) {
        #[cfg(all(unix, feature = "mmap"))]
        if let (Storage::Mapped(mmap), false) = (&self.data, range.is_empty()) {
            if range.end > mmap.len() {
                return;
            }
            // SAFETY: the mapping is read-only and file-backed (see the type's invariant), so
            // dropped pages are re-read from the file on the next access; no data is lost and
            // no reference observes a change.
            let _ = unsafe {
                mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.len(),
                )
            };
        }
        #[cfg(not(all(unix, feature = "mmap")))]
        let _ = range;
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Safetensors {
        file: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parses and validates a whole file's bytes (exposed for tests; [`SafetensorsFile::open`]
/// calls it on the mapping). `path` is only used in error messages.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let file_len = bytes.len();
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(bad(
            path,
            format!(
                "file is {file_len} bytes, too short for a safetensors file (it starts with an \
                 8-byte header length)"
            ),
        ));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let room = (file_len - 8) as u64;
    if header_len > room {
        return Err(bad(
            path,
            format!(
                "header length {header_len} bytes exceeds the {room} bytes that follow it \
                 (file is {file_len} bytes): truncated or not a safetensors file"
            ),
        ));
    }
    // header_len <= file_len - 8, so these fit in usize and in bounds.
    let data_start = 8 + header_len as usize;
    let data_len = file_len - data_start;
    let json = std::str::from_utf8(&bytes[8..data_start]).map_err(|e| {
        bad(
            path,
            format!(
                "header is not valid UTF-8 (at byte {})",
                8 + e.valid_up_to()
            ),
        )
    })?;

    let entries = parse_entries(json)
        .map_err(|e| bad(path, format!("header is not a valid JSON object: {e}")))?;

    let mut header = Header::default();
    for (name, value) in entries {
        if name == "__metadata__" {
            header.metadata = parse_metadata(path, value)?;
            continue;
        }
        let info = parse_tensor(path, &name, &value, data_len)?;
        header.tensors.push(TensorInfo {
            range: info.range.start + data_start..info.range.end + data_start,
            ..info
        });
    }
    check_overlaps(path, &header.tensors, data_start)?;
    Ok(header)
}

fn parse_metadata(path: &Path, value: Value) -> Result<HashMap<String, String>> {
    let Value::Object(map) = value else {
        return Err(bad(
            path,
            format!(
                "__metadata__ must be an object of strings, found {}",
                kind(&value)
            ),
        ));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(bad(
                path,
                format!(
                    "__metadata__ must map strings to strings, but key {k:?} holds {}",
                    kind(&other)
                ),
            )),
        })
        .collect()
}

fn parse_tensor(path: &Path, name: &str, value: &Value, data_len: usize) -> Result<TensorInfo> {
    let err = |message: String| bad(path, format!("tensor {name}: {message}"));
    let Value::Object(obj) = value else {
        return Err(err(format!(
            "entry must be an object with dtype, shape and data_offsets, found {}",
            kind(value)
        )));
    };
    let field = |key: &str| {
        obj.get(key).ok_or_else(|| {
            err(format!(
                "entry has no \"{key}\" (needs dtype, shape, data_offsets)"
            ))
        })
    };

    let dtype = match field("dtype")? {
        Value::String(s) => FileDtype::parse(s).ok_or_else(|| {
            let known: Vec<_> = FileDtype::ALL.iter().map(|d| d.name()).collect();
            err(format!("unknown dtype {s:?} (known: {})", known.join(", ")))
        })?,
        other => {
            return Err(err(format!(
                "dtype must be a string, found {}",
                kind(other)
            )))
        }
    };

    let shape = match field("shape")? {
        Value::Array(dims) => dims
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| {
                        err(format!(
                            "shape {value} must be an array of non-negative integers",
                            value = Value::Array(dims.clone())
                        ))
                    })
            })
            .collect::<Result<Vec<usize>>>()?,
        other => {
            return Err(err(format!(
                "shape must be an array, found {}",
                kind(other)
            )))
        }
    };

    let offsets = field("data_offsets")?;
    let (begin, end) = match offsets {
        Value::Array(o) if o.len() == 2 => match (o[0].as_u64(), o[1].as_u64()) {
            (Some(b), Some(e)) => (b, e),
            _ => {
                return Err(err(format!(
                    "data_offsets {offsets} must be two non-negative integers"
                )))
            }
        },
        _ => {
            return Err(err(format!(
                "data_offsets must be an array [begin, end], found {offsets}"
            )))
        }
    };

    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            err(format!(
                "shape {shape:?} has more elements than fit in usize"
            ))
        })?;
    let size = dtype.byte_size(numel).ok_or_else(|| {
        err(format!(
            "shape {shape:?} of dtype {dtype} ({numel} elements) has no valid byte size \
             (overflow or not a whole number of bytes)"
        ))
    })?;

    if begin > end {
        return Err(err(format!(
            "data_offsets [{begin}, {end}]: begin is after end"
        )));
    }
    if end > data_len as u64 {
        return Err(err(format!(
            "data_offsets [{begin}, {end}] run past the end of the data section ({data_len} \
             bytes): truncated file?"
        )));
    }
    // end <= data_len, so both fit in usize.
    let (begin, end) = (begin as usize, end as usize);
    if end - begin != size {
        return Err(err(format!(
            "data_offsets [{begin}, {end}] hold {} bytes but shape {shape:?} of dtype {dtype} \
             needs {numel} × {} bits = {size} bytes",
            end - begin,
            dtype.bits()
        )));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        range: begin..end,
    })
}

/// No two non-empty tensors may share a byte.
fn check_overlaps(path: &Path, tensors: &[TensorInfo], data_start: usize) -> Result<()> {
    let mut sorted: Vec<&TensorInfo> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    sorted.sort_by_key(|t| (t.range.start, t.range.end));
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.range.start < a.range.end {
            return Err(bad(
                path,
                format!(
                    "tensors {} (data_offsets [{}, {}]) and {} (data_offsets [{}, {}]) overlap",
                    a.name,
                    a.range.start - data_start,
                    a.range.end - data_start,
                    b.name,
                    b.range.start - data_start,
                    b.range.end - data_start,
                ),
            ));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The header's top-level entries in file order, rejecting duplicate keys (serde_json's `Map`
/// would silently keep the last one).
fn parse_entries(json: &str) -> std::result::Result<Vec<(String, Value)>, serde_json::Error> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object mapping tensor names to {dtype, shape, data_offsets}")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, Value>()? {
                if !seen.insert(k.clone()) {
                    return Err(de::Error::custom(format!("duplicate tensor name {k:?}")));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let entries = (&mut de).deserialize_map(Entries)?;
    de.end()?;
    Ok(entries)
}
