//! Outputs never destroy what is there (`stipple::output_file`): every kind of output path —
//! new or regular file, symlink, character device, FIFO, `/proc` descriptor path, `-`,
//! directory, socket, block device, read-only file or directory, full file system — through the
//! library (no GPU) and through `stipple generate` on the tiny-pipe model. Each case asserts the
//! result or the message, that nothing else on disk changed and that no temporary file is left.
//! Cases that need root (mknod, mount) say why they are skipped when they cannot run.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cli::{run_stipple, Scratch};
use common::golden::fixture;
use common::gpu;
use stipple::output_file::{check_outputs, output_kind, write_output_bytes, NamedPath, OutputKind};
use stipple::Error;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A tmpfs mounted on a directory, unmounted on drop (declare it after its [`Scratch`]).
struct Mount(PathBuf);

impl Mount {
    /// `mount -t tmpfs -o OPTIONS`; None (with the reason printed) where mounting is not allowed.
    fn tmpfs(dir: &Path, options: &str) -> Option<Mount> {
        fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs here ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount: {e}");
                None
            }
        }
    }

    fn remount_read_only(&self) -> bool {
        Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `mknod PATH TYPE MAJOR MINOR`; false (with the reason printed) where not allowed.
fn mknod(path: &Path, kind: &str, major: u32, minor: u32) -> bool {
    if !is_root() {
        eprintln!("skipping: mknod needs root");
        return false;
    }
    let ok = Command::new("mknod")
        .arg(path)
        .args([kind, &major.to_string(), &minor.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: mknod {} failed", path.display());
    }
    ok
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {}", path.display());
}

/// Everything under `dir` (not following links): relative name → kind, size, content or link
/// target. Two equal snapshots mean nothing was added, removed, replaced or rewritten.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let t = meta.file_type();
            let what = if t.is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(&path).expect("readlink").display()
                )
            } else if t.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if t.is_file() {
                let bytes = fs::read(&path).expect("read");
                format!(
                    "file {} bytes, ino {}, {:?}",
                    bytes.len(),
                    meta.ino(),
                    hash(&bytes)
                )
            } else if t.is_char_device() {
                format!("char device {}", meta.rdev())
            } else if t.is_block_device() {
                format!("block device {}", meta.rdev())
            } else if t.is_fifo() {
                "fifo".to_string()
            } else {
                "socket".to_string()
            };
            let name = path
                .strip_prefix(dir)
                .expect("prefix")
                .display()
                .to_string();
            out.insert(name, what);
        }
    }
    out
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Temporary files (`.NAME.PID.N.tmp`) anywhere in a snapshot.
fn temporaries(snap: &BTreeMap<String, String>) -> Vec<&String> {
    snap.keys().filter(|k| k.ends_with(".tmp")).collect()
}

/// What changed between two snapshots: (name, before, after).
fn changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| (n.clone(), before.get(n).cloned(), after.get(n).cloned()))
        .collect()
}

/// The reading end of a FIFO, opened before the writer runs (non-blocking, so opening does not
/// wait for a writer, and the FIFO is held even if a bug replaced its directory entry), drained
/// by a thread until [`FifoReader::finish`] is called after the writer is gone.
struct FifoReader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl FifoReader {
    fn open(path: &Path) -> FifoReader {
        const O_NONBLOCK: i32 = 0o4000; // Linux
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(path)
            .expect("open fifo for reading");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut buf = [0u8; 65536];
            // Bounded: ten minutes at most, whatever the writer does.
            for _ in 0..60_000 {
                // Read the flag before reading: "no writer and stopped" then means all is read.
                let stopped = done.load(std::sync::atomic::Ordering::SeqCst);
                match file.read(&mut buf) {
                    Ok(0) if stopped => break,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("reading the fifo: {e}"),
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            bytes
        });
        FifoReader { stop, thread }
    }

    /// Everything read, once the writer has finished.
    fn finish(self) -> Vec<u8> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("fifo reader")
    }
}

/// The message of a refused output: an [`Error::Io`] naming the path.
fn refusal_message(err: &Error, path: &Path) -> String {
    assert!(
        matches!(err, Error::Io { path: p, .. } if p == path),
        "{err:?}"
    );
    err.to_string()
}

/// The message of an argument error (outputs colliding with inputs or each other).
fn invalid_message(err: &Error) -> String {
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    err.to_string()
}

// ---- library: stipple::output_file ----------------------------------------------------------

#[test]
fn regular_files_are_replaced_atomically_keeping_their_permissions() {
    let dir = Scratch::new("outputs-regular");
    let path = dir.join("out.bin");
    write_output_bytes(&path, b"first").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"first");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let old_ino = fs::metadata(&path).unwrap().ino();
    write_output_bytes(&path, b"second").unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second");
    assert_ne!(
        meta.ino(),
        old_ino,
        "replaced by rename, not rewritten in place"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let snap = snapshot(&dir.0);
    assert_eq!(snap.len(), 1, "{snap:?}");
}

#[test]
fn a_symlinked_output_lands_at_its_target_and_the_link_stays() {
    let dir = Scratch::new("outputs-symlink");
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::create_dir_all(dir.join("shots")).unwrap();
    let target = dir.join("shots/0042.png");
    fs::write(&target, b"old image").unwrap();
    let link = dir.join("a/latest.png");
    std::os::unix::fs::symlink("../shots/0042.png", &link).unwrap();
    // A chain: b -> a/latest.png -> shots/0042.png.
    let chain = dir.join("b.png");
    std::os::unix::fs::symlink(&link, &chain).unwrap();
    assert_eq!(
        output_kind(&chain).unwrap(),
        OutputKind::Atomic {
            target: dir.join("a/../shots/0042.png")
        }
    );
    let before = snapshot(&dir.0);
    write_output_bytes(&link, b"new image").unwrap();
    write_output_bytes(&chain, b"newer image").unwrap();
    let after = snapshot(&dir.0);
    assert_eq!(fs::read(&target).unwrap(), b"newer image");
    let changed: Vec<String> = changes(&before, &after).into_iter().map(|c| c.0).collect();
    assert_eq!(changed, ["shots/0042.png"], "only the target changed");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // A dangling link creates its target; a loop is an error naming the path.
    let dangling = dir.join("dangling.png");
    std::os::unix::fs::symlink("shots/new.png", &dangling).unwrap();
    write_output_bytes(&dangling, b"x").unwrap();
    assert_eq!(fs::read(dir.join("shots/new.png")).unwrap(), b"x");
    assert!(fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());
    let looped = dir.join("loop.png");
    std::os::unix::fs::symlink("loop.png", &looped).unwrap();
    let message = refusal_message(&write_output_bytes(&looped, b"x").unwrap_err(), &looped);
    assert!(
        message.contains("loop.png") && message.contains("symlinks"),
        "{message}"
    );
    assert!(temporaries(&snapshot(&dir.0)).is_empty());
}

#[test]
fn character_devices_are_written_in_place_and_dev_full_reports_no_space() {
    let dir = Scratch::new("outputs-chardev");
    // Device nodes of our own where we may make them (a bug could then only replace those);
    // elsewhere the system's, which a non-root process cannot replace anyway.
    let (null, full) = if mknod(&dir.join("null"), "c", 1, 3) && mknod(&dir.join("full"), "c", 1, 7)
    {
        (dir.join("null"), dir.join("full"))
    } else if !is_root() {
        (PathBuf::from("/dev/null"), PathBuf::from("/dev/full"))
    } else {
        return;
    };
    let before = snapshot(&dir.0);
    assert_eq!(output_kind(&null).unwrap(), OutputKind::WriteThrough);
    write_output_bytes(&null, b"discarded").unwrap();
    let err = write_output_bytes(&full, &[0u8; 100_000]).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, source } if path == &full
            && source.kind() == std::io::ErrorKind::StorageFull),
        "{err:?}"
    );
    assert!(err.to_string().contains("No space left"), "{err}");
    for dev in [&null, &full] {
        assert!(fs::metadata(dev).unwrap().file_type().is_char_device());
    }
    assert_eq!(snapshot(&dir.0), before);
}

#[test]
fn a_fifo_gets_the_bytes_and_stays_a_fifo() {
    let dir = Scratch::new("outputs-fifo");
    let fifo = dir.join("pipe");
    mkfifo(&fifo);
    let before = snapshot(&dir.0);
    let reader = FifoReader::open(&fifo);
    let result = write_output_bytes(&fifo, b"through the pipe");
    let got = reader.finish();
    result.unwrap();
    assert_eq!(got, b"through the pipe");
    assert_eq!(snapshot(&dir.0), before);
}

#[test]
fn proc_descriptor_paths_are_written_through_like_dev_stdout() {
    use std::os::fd::AsRawFd;
    let dir = Scratch::new("outputs-procfd");
    let file_path = dir.join("captured.bin");
    let file = fs::File::create(&file_path).unwrap();
    let ino = fs::metadata(&file_path).unwrap().ino();
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    // As /dev/stdout -> /proc/self/fd/1: a link into /proc.
    let link = dir.join("stdout-like");
    std::os::unix::fs::symlink(&fd_path, &link).unwrap();
    assert_eq!(output_kind(&fd_path).unwrap(), OutputKind::WriteThrough);
    assert_eq!(output_kind(&link).unwrap(), OutputKind::WriteThrough);
    write_output_bytes(&link, b"a longer first content").unwrap();
    write_output_bytes(&fd_path, b"through fd").unwrap();
    drop(file);
    assert_eq!(fs::read(&file_path).unwrap(), b"through fd");
    assert_eq!(
        fs::metadata(&file_path).unwrap().ino(),
        ino,
        "same file, not replaced"
    );
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(temporaries(&snapshot(&dir.0)).is_empty());
}

#[test]
fn directories_sockets_block_devices_and_read_only_files_are_refused() {
    let dir = Scratch::new("outputs-refused");
    fs::create_dir_all(dir.join("sub")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
    let read_only = dir.join("keep.png");
    fs::write(&read_only, b"precious").unwrap();
    fs::set_permissions(&read_only, fs::Permissions::from_mode(0o444)).unwrap();
    std::os::unix::fs::symlink("keep.png", dir.join("keep-link.png")).unwrap();
    let mut cases = vec![
        ("sub", "is a directory"),
        ("sock", "is a socket"),
        ("keep.png", "read-only"),
        ("keep-link.png", "read-only"),
    ];
    // Major 240 is reserved for local use: no driver behind it, nothing to damage.
    if mknod(&dir.join("disk"), "b", 240, 0) {
        cases.push(("disk", "block device"));
    }
    let before = snapshot(&dir.0);
    for (name, why) in cases {
        let path = dir.join(name);
        let message = refusal_message(&write_output_bytes(&path, b"x").unwrap_err(), &path);
        assert!(
            message.contains(name) && message.contains(why),
            "{name}: {message}"
        );
        let err = check_outputs(&[NamedPath::new("-o", &path)], &[]).unwrap_err();
        assert!(refusal_message(&err, &path).contains(why), "{name}: {err}");
    }
    assert_eq!(snapshot(&dir.0), before);
    let message = invalid_message(&write_output_bytes(Path::new("/"), b"x").unwrap_err());
    assert!(message.contains("no file name"), "{message}");
}

#[test]
fn outputs_that_are_inputs_or_each_other_are_refused() {
    let dir = Scratch::new("outputs-collide");
    let init = dir.join("out-1.png");
    fs::write(&init, b"init image").unwrap();
    std::os::unix::fs::symlink("out-1.png", dir.join("alias.png")).unwrap();
    let (one, two) = (dir.join("out-1.png"), dir.join("out-2.png"));
    let inputs = [NamedPath::new("--init-image", &init)];
    let batch = [
        NamedPath::new("-o (image 1 of --batch 2)", &one),
        NamedPath::new("-o (image 2 of --batch 2)", &two),
    ];
    let message = invalid_message(&check_outputs(&batch, &inputs).unwrap_err());
    assert!(
        message.contains("image 1 of --batch 2") && message.contains("--init-image"),
        "{message}"
    );
    // Through a symlink, and the init image as the output itself.
    let alias = dir.join("alias.png");
    let message =
        invalid_message(&check_outputs(&[NamedPath::new("-o", &alias)], &inputs).unwrap_err());
    assert!(message.contains("--init-image"), "{message}");
    // Two outputs naming one new file (spelled differently), or stdout twice.
    let (a, b) = (dir.join("new.png"), dir.join("./sub/../new.png"));
    fs::create_dir_all(dir.join("sub")).unwrap();
    let outputs = [
        NamedPath::new("-o", &a),
        NamedPath::new("--save-tensor", &b),
    ];
    let message = invalid_message(&check_outputs(&outputs, &[]).unwrap_err());
    assert!(message.contains("same file"), "{message}");
    // Distinct outputs beside an unrelated input pass, and nothing was created.
    let before = snapshot(&dir.0);
    check_outputs(&[NamedPath::new("-o", &two)], &inputs).unwrap();
    assert_eq!(snapshot(&dir.0), before);
}

#[test]
fn a_read_only_directory_fails_cleanly() {
    let dir = Scratch::new("outputs-rodir");
    let target = dir.join("ro");
    let _mount;
    if is_root() {
        let Some(m) = Mount::tmpfs(&target, "size=64k") else {
            return;
        };
        fs::write(target.join("out.png"), b"old").unwrap();
        if !m.remount_read_only() {
            eprintln!("skipping: cannot remount the tmpfs read-only");
            return;
        }
        _mount = m;
    } else {
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("out.png"), b"old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let before = snapshot(&dir.0);
    for name in ["out.png", "new.png"] {
        let path = target.join(name);
        let err = check_outputs(&[NamedPath::new("-o", &path)], &[]).unwrap_err();
        assert!(
            matches!(err, Error::Io { .. }) && err.to_string().contains(name),
            "{err}"
        );
        let err = write_output_bytes(&path, b"new").unwrap_err();
        assert!(
            matches!(err, Error::Io { .. }) && err.to_string().contains(name),
            "{err}"
        );
    }
    assert_eq!(snapshot(&dir.0), before);
    if !is_root() {
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Fills the file system holding `dir` with a filler file until it reports no space.
fn fill(dir: &Path) {
    let mut filler = fs::File::create(dir.join("filler")).unwrap();
    let chunk = [0xA5u8; 4096];
    loop {
        match filler.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

#[test]
fn a_full_file_system_fails_cleanly_and_keeps_the_old_file() {
    let dir = Scratch::new("outputs-fullfs");
    let target = dir.join("full");
    if !is_root() {
        eprintln!("skipping: mounting a small tmpfs needs root");
        return;
    }
    let Some(_mount) = Mount::tmpfs(&target, "size=64k") else {
        return;
    };
    fs::write(target.join("out.png"), b"old").unwrap();
    fill(&target);
    let before = snapshot(&dir.0);
    let err = write_output_bytes(&target.join("out.png"), &[7u8; 100_000]).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
        "{err:?}"
    );
    assert!(err.to_string().contains("out.png"), "{err}");
    assert_eq!(snapshot(&dir.0), before);
}

// ---- CLI: stipple generate on tiny-pipe -----------------------------------------------------

/// `generate` on tiny-pipe (24×16, 2 steps) to `output`, plus `extra`.
fn generate(output: &Path, extra: &[&str], cwd: &Path) -> Output {
    let model = fixture("tiny-pipe");
    let mut args = vec![
        "generate",
        "a red apple",
        "-m",
        model.to_str().expect("model path"),
        "-W",
        "24",
        "-H",
        "16",
        "--steps",
        "2",
        "-o",
        output.to_str().expect("output path"),
    ];
    args.extend(extra);
    run_stipple(&args, cwd)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// (width, height, `parameters` text) of a PNG held in memory; panics unless it decodes fully
/// and ends exactly at its IEND chunk.
fn png_info(bytes: &[u8]) -> (u32, u32, String) {
    assert!(bytes.starts_with(PNG_SIGNATURE), "not a PNG");
    assert!(
        bytes.ends_with(&[0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]),
        "trailing bytes after IEND"
    );
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    reader.next_frame(&mut buf).expect("png frame");
    let info = reader.info();
    let params = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .unwrap_or_default();
    (info.width, info.height, params)
}

#[test]
fn cli_dash_writes_the_png_to_stdout_and_text_to_stderr() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("outputs-cli-stdout");
    let before = snapshot(&dir.0);
    let out = generate(Path::new("-"), &["--seed", "-1"], &dir.0);
    assert!(out.status.success(), "{}", stderr(&out));
    let (w, h, params) = png_info(&out.stdout);
    assert_eq!((w, h), (24, 16));
    // --seed -1: a random seed, printed on stderr and recorded in the PNG.
    let text = stderr(&out);
    let seed = text
        .split_once("seed ")
        .and_then(|(_, rest)| rest.split(';').next())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no seed on stderr: {text}"));
    assert!(params.contains(&format!("Seed: {seed},")), "{params}");
    assert_eq!(
        snapshot(&dir.0),
        before,
        "no file named - (or anything) created"
    );

    // One stdout per run: a batch or a second output there is refused before any work.
    for extra in [&["--batch", "2"][..], &["--save-tensor", "-"][..]] {
        let out = generate(Path::new("-"), extra, &dir.0);
        assert!(!out.status.success() && out.stdout.is_empty());
        assert!(
            stderr(&out).contains("-o -") || stderr(&out).contains("same file"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(snapshot(&dir.0), before);

    // --save-tensor -: the safetensors bytes on stdout, the PNG's path on stderr.
    let png = dir.join("image.png");
    let out = generate(&png, &["--save-tensor", "-"], &dir.0);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("image.png"), "{}", stderr(&out));
    let tensor = dir.join("tensor.safetensors");
    fs::write(&tensor, &out.stdout).unwrap();
    let (shape, _) = stipple::image_io::read_tensor_safetensors(&tensor, "image").unwrap();
    assert_eq!(shape, [1, 16, 24, 3]);
}

#[test]
fn cli_character_device_is_written_through_and_dev_full_fails() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("outputs-cli-chardev");
    if !mknod(&dir.join("null"), "c", 1, 3) || !mknod(&dir.join("full"), "c", 1, 7) {
        return;
    }
    let before = snapshot(&dir.0);
    let out = generate(&dir.join("null"), &[], &dir.0);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = generate(&dir.join("full"), &[], &dir.0);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("full") && text.contains("No space left"),
        "{text}"
    );
    assert_eq!(
        snapshot(&dir.0),
        before,
        "both still devices, nothing added"
    );
}

#[test]
fn cli_fifo_receives_the_png() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("outputs-cli-fifo");
    let fifo = dir.join("pipe.png");
    mkfifo(&fifo);
    let before = snapshot(&dir.0);
    let reader = FifoReader::open(&fifo);
    let out = generate(&fifo, &["--seed", "3"], &dir.0);
    let got = reader.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let (w, h, params) = png_info(&got);
    assert_eq!((w, h), (24, 16));
    assert!(params.contains("Seed: 3,"), "{params}");
    assert_eq!(snapshot(&dir.0), before);
}

#[test]
fn cli_symlink_to_another_directory_keeps_the_link() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("outputs-cli-symlink");
    fs::create_dir_all(dir.join("shots")).unwrap();
    fs::create_dir_all(dir.join("web")).unwrap();
    fs::write(dir.join("shots/0042.png"), b"old").unwrap();
    let link = dir.join("web/latest.png");
    std::os::unix::fs::symlink(dir.join("shots/0042.png"), &link).unwrap();
    let before = snapshot(&dir.0);
    let out = generate(&link, &[], &dir.0);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = snapshot(&dir.0);
    let changed: Vec<String> = changes(&before, &after).into_iter().map(|c| c.0).collect();
    assert_eq!(changed, ["shots/0042.png"]);
    let (w, h, _) = png_info(&fs::read(dir.join("shots/0042.png")).unwrap());
    assert_eq!((w, h), (24, 16));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn cli_directory_read_only_directory_and_full_file_system_fail_cleanly() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("outputs-cli-fail");
    fs::create_dir_all(dir.join("folder")).unwrap();
    let before = snapshot(&dir.0);
    let out = generate(&dir.join("folder"), &[], &dir.0);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    assert_eq!(snapshot(&dir.0), before);

    if !is_root() {
        eprintln!("skipping the read-only and full file system cases: mounting needs root");
        return;
    }
    let ro = dir.join("ro");
    let Some(ro_mount) = Mount::tmpfs(&ro, "size=64k") else {
        return;
    };
    fs::write(ro.join("out.png"), b"old").unwrap();
    assert!(ro_mount.remount_read_only(), "remount read-only");
    let full = dir.join("full");
    let Some(_full_mount) = Mount::tmpfs(&full, "size=64k") else {
        return;
    };
    fs::write(full.join("out.png"), b"old").unwrap();
    fill(&full);
    let before = snapshot(&dir.0);
    let out = generate(&ro.join("out.png"), &[], &dir.0);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    let out = generate(&full.join("out.png"), &[], &dir.0);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    assert_eq!(
        snapshot(&dir.0),
        before,
        "old files kept, no temporary left"
    );
}

#[test]
fn cli_batch_outputs_never_overwrite_the_init_image() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("outputs-cli-init");
    let init = dir.join("out-1.png");
    let out = generate(&init, &["--seed", "5"], &dir.0);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = snapshot(&dir.0);
    let init_s = init.to_str().unwrap();
    for output in [dir.join("out.png"), init.clone()] {
        let batch = if output == init { "1" } else { "2" };
        let out = generate(&output, &["--init-image", init_s, "--batch", batch], &dir.0);
        assert!(!out.status.success());
        let text = stderr(&out);
        assert!(
            text.contains("--init-image") && text.contains("destroy"),
            "{text}"
        );
    }
    assert_eq!(snapshot(&dir.0), before);
}
