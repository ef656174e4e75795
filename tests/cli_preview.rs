//! `stipple generate --preview FILE --preview-every N [--taesd DIR]` on the tiny-pipe model:
//! the preview is a PNG of the output size, written atomically (nothing temporary left
//! behind), and the final image is the same as without previews; bad preview flags fail
//! before any output is written.

mod common;

use std::path::Path;

use common::cli::{run_stipple, Scratch};
use common::golden::fixture;
use common::*;

fn model() -> String {
    fixture("tiny-pipe").display().to_string()
}

fn taesd() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/taesd/tiny")
        .display()
        .to_string()
}

/// `stipple generate "a red apple" -m MODEL -o OUT`, then `extra`.
fn generate_args<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["generate", "a red apple", "-m", model, "-o", out];
    args.extend_from_slice(extra);
    args
}

/// Generates 4 Euler steps at 24×16 with `extra` flags into `dir`; asserts success.
fn generate(dir: &Path, out: &str, tensor: &str, extra: &[&str]) {
    let model = model();
    let mut flags = vec![
        "--steps",
        "4",
        "-W",
        "24",
        "-H",
        "16",
        "--seed",
        "3",
        "--scheduler",
        "euler",
        "--save-tensor",
        tensor,
    ];
    flags.extend_from_slice(extra);
    let args = generate_args(&model, out, &flags);
    let run = run_stipple(&args, dir);
    assert!(
        run.status.success(),
        "stipple {args:?} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// (width, height, color type) of a PNG.
fn png_info(path: &Path) -> (u32, u32, png::ColorType) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a valid PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut buf).expect("PNG data");
    (frame.width, frame.height, frame.color_type)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn preview_png_linear_and_taesd() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("cli-preview");
    generate(dir.path(), "plain.png", "plain.safetensors", &[]);
    generate(
        dir.path(),
        "linear.png",
        "linear.safetensors",
        &["--preview", "linear-preview.png", "--preview-every", "2"],
    );
    let taesd = taesd();
    generate(
        dir.path(),
        "taesd.png",
        "taesd.safetensors",
        &[
            "--preview",
            "taesd-preview.png",
            "--preview-every",
            "1",
            "--taesd",
            &taesd,
        ],
    );
    for preview in ["linear-preview.png", "taesd-preview.png"] {
        assert_eq!(
            png_info(&dir.join(preview)),
            (24, 16, png::ColorType::Rgb),
            "{preview}"
        );
    }
    // Nothing temporary left behind: exactly the files asked for.
    assert_eq!(
        entries(dir.path()),
        [
            "linear-preview.png",
            "linear.png",
            "linear.safetensors",
            "plain.png",
            "plain.safetensors",
            "taesd-preview.png",
            "taesd.png",
            "taesd.safetensors",
        ]
    );
    // Previews do not change the image.
    let plain = std::fs::read(dir.join("plain.safetensors")).unwrap();
    assert_eq!(
        plain,
        std::fs::read(dir.join("linear.safetensors")).unwrap()
    );
    assert_eq!(plain, std::fs::read(dir.join("taesd.safetensors")).unwrap());
}

#[test]
fn bad_preview_flags_fail_cleanly() {
    let dir = Scratch::new("cli-preview-bad");
    let model = model();
    let missing = dir.join("no-such-taesd").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--preview", "p.png", "--preview-every", "0"],
            "--preview-every",
        ),
        (&["--preview", "-"], "--preview"),
        (&["--preview", "p.png", "--taesd", &missing], "--taesd"),
        (&["--taesd", &missing], "--preview"),
    ];
    for (extra, needle) in cases {
        let mut flags = vec!["--steps", "2"];
        flags.extend_from_slice(extra);
        let args = generate_args(&model, "out.png", &flags);
        let run = run_stipple(&args, dir.path());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(
            entries(dir.path()).is_empty(),
            "{extra:?} left {:?}",
            entries(dir.path())
        );
    }
}
