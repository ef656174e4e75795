//! Atomic file writes: the content goes to a temporary file in the target's directory
//! (`.{name}.{pid}.{n}.tmp`), which is flushed, `fsync`ed and renamed over the target. Readers
//! see either the old file or the complete new one, never a truncated image or tensor, even if
//! the process is killed mid-write; a file that is memory-mapped elsewhere (e.g. by
//! [`crate::weights::Weights`]) keeps its old content, since the rename replaces the directory
//! entry, not the data.
//!
//! On any error the temporary file is removed (also when the writer panics) and the error names
//! the target path.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Distinguishes temporary files of concurrent writes from one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file on drop unless the write was committed.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The temporary path used for `target`: same directory, hidden, unique per process and call.
fn temp_path(target: &Path) -> Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        Error::invalid(
            "output path",
            format!("{} has no file name", target.display()),
        )
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(".{}.{}.{n}.tmp", name.to_string_lossy(), std::process::id());
    Ok(match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp_name),
        _ => PathBuf::from(tmp_name),
    })
}

/// Writes `target` atomically with the content produced by `write`.
///
/// `write` receives a buffered writer on the temporary file; I/O errors it returns should be
/// [`Error::Io`] (any error is passed through unchanged). Fails with an error naming `target`
/// when the directory does not exist or is not writable, or when `target` is a directory.
pub fn write_atomic<F>(target: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let tmp = temp_path(target)?;
    let io_err = |e| Error::io(target, e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err)?;
    let mut guard = TempGuard {
        path: tmp,
        armed: true,
    };
    let mut writer = BufWriter::new(file);
    write(&mut writer)?;
    let file = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&guard.path, target).map_err(io_err)?;
    guard.armed = false;
    sync_dir(target);
    Ok(())
}

/// Writes `bytes` to `target` atomically (see [`write_atomic`]).
pub fn write_atomic_bytes(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(target, |w| {
        w.write_all(bytes).map_err(|e| Error::io(target, e))
    })
}

/// Makes the rename durable by syncing the directory (best effort: some file systems and
/// platforms cannot open or sync a directory, which loses durability, not atomicity).
fn sync_dir(target: &Path) {
    #[cfg(unix)]
    {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = target;
}
