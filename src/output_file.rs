//! Every file stipple writes (PNGs, `--save-tensor`, batch and `--out-dir` images, converted
//! checkpoints) goes through [`write_output`], which never destroys what the path names:
//!
//! | the output path is …                          | what happens                                   |
//! |-----------------------------------------------|------------------------------------------------|
//! | `-`                                           | bytes to standard output (refused on a terminal) |
//! | new, or an existing regular file              | atomic replace: temporary file in the same directory (`.{name}.{pid}.{n}.tmp`), `fsync`, rename; the old file's permission bits are kept |
//! | a symlink (chain) to a file or to a new path  | the same atomic replace at the link's final target; the link stays |
//! | a character device or a FIFO                  | written through in place (opened, written, closed; no rename): `/dev/null` discards, a FIFO's reader gets the bytes, `/dev/full` fails with "No space left on device" and stays a device |
//! | a path through `/proc` or `/dev/fd` (`/dev/stdout`, `/proc/self/fd/1`) | written through in place: the bytes reach whatever that descriptor is (pipe, file) |
//! | a terminal (`/dev/tty`, `-` or `/dev/stdout` on a terminal) | refused: binary data would garble it |
//! | a directory or a socket                       | refused ([`Error::Io`] naming the path and why) |
//! | a block device                                | refused: writing an image over a disk destroys its data, which nobody asks of an image generator |
//! | a regular file with no write permission bit   | refused (the read-only bit is how users protect a file; root's rename would otherwise ignore it) |
//!
//! Atomic means readers see the old file or the complete new one, never a truncated image,
//! even if the process is killed mid-write; a file memory-mapped elsewhere (e.g. by
//! [`crate::weights::Weights`]) keeps its old content, since the rename replaces the directory
//! entry, not the data. On any error the temporary file is removed (also when the writer
//! panics) and the error names the path. Hard links to a replaced file keep the old content.
//!
//! [`check_outputs`] runs the same classification before any work starts (so a bad `-o` fails
//! in milliseconds, not after a generation) and refuses outputs that would overwrite an input
//! or each other.

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata, OpenOptions};
use std::io::ErrorKind::{InvalidInput, IsADirectory, PermissionDenied, Unsupported};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The output path that means standard output.
pub const STDOUT: &str = "-";

/// How deep a symlink chain may go before it is called a loop (Linux's own limit is 40).
const MAX_LINKS: usize = 40;

/// Distinguishes temporary files of concurrent writes from one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether `path` is `-` (standard output).
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == STDOUT
}

/// How a path is written (see the module table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// `-`: standard output.
    Stdout,
    /// A temporary file beside `target`, renamed over it. `target` is the path itself or the
    /// final target of its symlinks.
    Atomic { target: PathBuf },
    /// Opened and written in place: a character device, a FIFO, or a path through `/proc`.
    WriteThrough,
}

/// Classifies `path` (following symlinks), refusing the kinds nothing sensible can be written
/// to. Nothing is created or opened.
pub fn output_kind(path: &Path) -> Result<OutputKind> {
    if is_stdout(path) {
        return Ok(OutputKind::Stdout);
    }
    if path.file_name().is_none() {
        return Err(Error::invalid(
            "output path",
            format!("{} has no file name", path.display()),
        ));
    }
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        if through_proc(&current) {
            // /dev/stdout → /proc/self/fd/1 → "pipe:[1234]": no path to rename over; the
            // descriptor is the destination.
            if let Ok(meta) = fs::metadata(path) {
                if meta.is_dir() {
                    return Err(refusal(path, &current, IsADirectory, "is a directory"));
                }
                return Ok(OutputKind::WriteThrough);
            }
        }
        let meta = match fs::symlink_metadata(&current) {
            Ok(m) => m,
            // A new name (its directory's absence or kind is [`check_output`]'s to report).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(OutputKind::Atomic { target: current })
            }
            Err(e) => return Err(Error::io(&current, e)),
        };
        if meta.file_type().is_symlink() {
            let link = fs::read_link(&current).map_err(|e| Error::io(&current, e))?;
            // Relative targets are relative to the link's directory; the path is not
            // normalised, so `dir/../x` resolves as the kernel would (through symlinked dirs).
            current = match current.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            };
            continue;
        }
        return classify(path, current, &meta);
    }
    Err(refusal(
        path,
        path,
        InvalidInput,
        &format!("has more than {MAX_LINKS} symlinks in a row (a loop?)"),
    ))
}

/// Paths whose entries are file descriptors: written through, never renamed over (when they
/// exist: a new name under /proc is an ordinary path the kernel refuses to create).
fn through_proc(path: &Path) -> bool {
    path.starts_with("/proc") || path.starts_with("/dev/fd")
}

/// The kind of an existing non-symlink `target` (which `path` names, maybe through links).
fn classify(path: &Path, target: PathBuf, meta: &Metadata) -> Result<OutputKind> {
    let kind = meta.file_type();
    if kind.is_file() {
        if meta.permissions().readonly() {
            return Err(refusal(
                path,
                &target,
                PermissionDenied,
                "is read-only (no write permission bit): choose another output or `chmod u+w` it",
            ));
        }
        return Ok(OutputKind::Atomic { target });
    }
    if kind.is_dir() {
        return Err(refusal(
            path,
            &target,
            IsADirectory,
            "is a directory: name a file inside it (e.g. DIR/out.png)",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() || kind.is_fifo() {
            return Ok(OutputKind::WriteThrough);
        }
        if kind.is_block_device() {
            return Err(refusal(
                path,
                &target,
                Unsupported,
                "is a block device: writing an image there would overwrite the disk's data; \
                 choose a file",
            ));
        }
        if kind.is_socket() {
            return Err(refusal(
                path,
                &target,
                Unsupported,
                "is a socket: stipple writes to files, FIFOs, character devices or `-` (stdout)",
            ));
        }
    }
    Err(refusal(
        path,
        &target,
        Unsupported,
        "is not a file stipple can write",
    ))
}

/// A refused output: [`Error::Io`] naming `path`, saying why (and the link's target when `path`
/// reaches it through symlinks): "out.png: is a directory: …".
fn refusal(path: &Path, target: &Path, kind: io::ErrorKind, why: &str) -> Error {
    let message = if path == target {
        why.to_string()
    } else {
        format!("links to {}, which {why}", target.display())
    };
    Error::io(path, io::Error::new(kind, message))
}

/// Writes `path` with the content produced by `write`, by the rules of the module table.
///
/// `write` receives a buffered writer; errors it returns are passed through unchanged (I/O
/// errors should be [`Error::Io`] naming `path`), and a failed write leaves no temporary file
/// and the old content in place. Refusals (see the module table) and file system failures
/// (missing or read-only directory, no space) are [`Error::Io`] naming the path; a path with no
/// file name or binary data for a terminal [`Error::InvalidArgument`].
pub fn write_output<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    match output_kind(path)? {
        OutputKind::Stdout => write_stdout(write),
        OutputKind::Atomic { target } => write_atomic(path, &target, write),
        OutputKind::WriteThrough => write_through(path, write),
    }
}

/// Writes `bytes` to `path` (see [`write_output`]).
pub fn write_output_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_output(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// The name standard output goes by in errors.
fn stdout_name() -> PathBuf {
    PathBuf::from("standard output")
}

fn stdout_terminal_error() -> Error {
    Error::invalid(
        "output",
        "`-` writes binary data to standard output, which is a terminal: redirect or pipe it \
         (e.g. `-o - > out.png` or `-o - | display`)",
    )
}

fn write_stdout<F>(write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let stdout = io::stdout();
    if stdout.is_terminal() {
        return Err(stdout_terminal_error());
    }
    let mut writer = BufWriter::new(stdout.lock());
    write(&mut writer)?;
    writer.flush().map_err(|e| Error::io(stdout_name(), e))
}

/// Opens the existing device, FIFO or descriptor path and writes into it: no temporary file,
/// no rename, no `fsync` (devices and pipes reject it). Blocks on a FIFO until it has a reader.
fn write_through<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let io_err = |e| Error::io(path, e);
    // Truncate only what is a regular file behind /dev/stdout-style paths (no effect elsewhere,
    // but explicit): the bytes replace its content as a shell's `>` would.
    let regular = fs::metadata(path).is_ok_and(|m| m.is_file());
    let file = OpenOptions::new()
        .write(true)
        .truncate(regular)
        .open(path)
        .map_err(io_err)?;
    if file.is_terminal() {
        return Err(Error::invalid(
            "output",
            format!(
                "{} is a terminal: binary image data would garble it; redirect or pipe it",
                path.display()
            ),
        ));
    }
    let mut writer = BufWriter::new(file);
    write(&mut writer)?;
    writer.flush().map_err(io_err)
}

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
    Ok(directory(target).join(tmp_name))
}

/// The directory a file at `path` lives in (`.` for a bare name).
fn directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Temporary file beside `target`, `fsync`, rename over `target`. Errors name `path` (what the
/// user typed); `target` is where the bytes land.
fn write_atomic<F>(path: &Path, target: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let io_err = |e| Error::io(path, e);
    let old_permissions = fs::metadata(target).ok().map(|m| m.permissions());
    let tmp = temp_path(target)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err)?;
    let mut guard = TempGuard {
        path: tmp,
        armed: true,
    };
    if let Some(permissions) = old_permissions {
        file.set_permissions(permissions).map_err(io_err)?;
    }
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

/// Makes the rename durable by syncing the directory (best effort: some file systems and
/// platforms cannot open or sync a directory, which loses durability, not atomicity).
fn sync_dir(target: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(directory(target)) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = target;
}

/// Checks, before any work, that `path` can be written: the kind is not refused, standard
/// output is not a terminal, and for an atomic write the target's directory exists and takes
/// a new file (probed by creating and removing an empty one). Devices and FIFOs are not opened
/// (a FIFO would block until its reader comes).
pub fn check_output(path: &Path) -> Result<()> {
    check_output_once(path, &mut HashSet::new())
}

/// [`check_output`], probing each directory once (`probed` holds those done).
fn check_output_once(path: &Path, probed: &mut HashSet<PathBuf>) -> Result<()> {
    let target = match output_kind(path)? {
        OutputKind::Stdout if io::stdout().is_terminal() => return Err(stdout_terminal_error()),
        OutputKind::Stdout | OutputKind::WriteThrough => return Ok(()),
        OutputKind::Atomic { target } => target,
    };
    let dir = directory(&target);
    if probed.contains(&dir) {
        return Ok(());
    }
    let missing = |why: &str| {
        Error::io(
            path,
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("output directory {} {why}", dir.display()),
            ),
        )
    };
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(missing("is not a directory")),
        Err(_) => return Err(missing("does not exist")),
    }
    let probe = temp_path(&target)?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| {
            let why = format!("output directory {} is not writable ({e})", dir.display());
            Error::io(path, io::Error::new(e.kind(), why))
        })?;
    let _ = fs::remove_file(&probe);
    probed.insert(dir);
    Ok(())
}

/// A file one option reads or writes, for [`check_outputs`]: `what` names it in the user's
/// terms (`"-o"`, `"--init-image"`, `"image 2 of --batch 3"`).
#[derive(Debug, Clone)]
pub struct NamedPath<'a> {
    pub what: String,
    pub path: &'a Path,
}

impl<'a> NamedPath<'a> {
    pub fn new(what: impl Into<String>, path: &'a Path) -> Self {
        NamedPath {
            what: what.into(),
            path,
        }
    }
}

/// What makes two paths the same file: the inode for existing files, else the canonical
/// directory plus the name; `-` is standard output. Write-through outputs (devices, FIFOs)
/// never collide: two writes to `/dev/null` destroy nothing.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Identity {
    Stdout,
    #[cfg(unix)]
    Inode(u64, u64),
    Path(PathBuf),
}

fn identity(path: &Path) -> Option<Identity> {
    if is_stdout(path) {
        return Some(Identity::Stdout);
    }
    if let Ok(meta) = fs::metadata(path) {
        if !meta.is_file() {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            return Some(Identity::Inode(meta.dev(), meta.ino()));
        }
    }
    let target = match output_kind(path).ok()? {
        OutputKind::Atomic { target } => target,
        _ => return None,
    };
    let dir = fs::canonicalize(directory(&target)).ok()?;
    Some(Identity::Path(dir.join(target.file_name()?)))
}

/// Before any work: every output passes [`check_output`], no two outputs are the same file
/// (or both standard output), and no output is one of the `inputs` (writing it would destroy
/// the input, e.g. `-o out.png --batch 2` when `out-1.png` is the `--init-image`).
pub fn check_outputs(outputs: &[NamedPath], inputs: &[NamedPath]) -> Result<()> {
    let inputs: Vec<(Identity, &NamedPath)> = inputs
        .iter()
        .filter_map(|input| identity(input.path).map(|id| (id, input)))
        .collect();
    let mut probed = HashSet::new();
    let mut seen: HashMap<Identity, &NamedPath> = HashMap::new();
    for out in outputs {
        check_output_once(out.path, &mut probed)?;
        let Some(id) = identity(out.path) else {
            continue;
        };
        if let Some((_, input)) = inputs.iter().find(|(input_id, _)| *input_id == id) {
            return Err(Error::invalid(
                "output",
                format!(
                    "{} ({}) is the {} file: writing it would destroy the input; choose \
                     another output name",
                    out.what,
                    out.path.display(),
                    input.what
                ),
            ));
        }
        if let Some(first) = seen.get(&id) {
            return Err(Error::invalid(
                "output",
                format!(
                    "{} ({}) and {} ({}) are the same file: the second would overwrite the first",
                    first.what,
                    first.path.display(),
                    out.what,
                    out.path.display()
                ),
            ));
        }
        seen.insert(id, out);
    }
    Ok(())
}
