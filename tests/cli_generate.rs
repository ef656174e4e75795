//! `stipple generate` end to end on the tiny-pipe model: `--latents` in, `--save-tensor` out,
//! matching diffusers' pipeline (same tolerance as tests/pipeline.rs: 1e-4 on the [0, 1] image);
//! the PNG carries the A1111 `parameters` chunk; bad arguments fail with a clear message, a
//! non-zero exit, no panic and no output file.

mod common;

use std::path::Path;

use common::golden::{fixture, Golden};
use common::*;

fn model() -> String {
    fixture("tiny-pipe").display().to_string()
}

#[test]
fn latents_in_tensor_out_matches_diffusers_for_every_scheduler() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("cli-match");
    let golden = Golden::open(fixture("tiny-pipe").join("golden_pipeline.safetensors"));
    let (shape, latents) = golden.f32("latents");
    let latents_file = dir.join("latents.safetensors");
    stipple::image_io::write_tensor_safetensors(&latents_file, "latents", &shape, &latents)
        .expect("write latents");
    for scheduler in [
        "ddim",
        "pndm",
        "euler",
        "euler-a",
        "dpmpp-2m",
        "dpmpp-2m-karras",
        "lcm",
    ] {
        let png = dir.join(format!("{scheduler}.png"));
        let tensor = dir.join(format!("{scheduler}.safetensors"));
        let (steps, cfg) = if scheduler == "lcm" {
            ("4", "1.0")
        } else {
            ("6", "7.5")
        };
        let (ok, stderr) = stipple(&[
            "generate",
            "a red apple on a wooden table",
            "-n",
            "blurry",
            "-m",
            &model(),
            "--steps",
            steps,
            "--cfg",
            cfg,
            "--seed",
            "1234",
            "--scheduler",
            scheduler,
            "--dtype",
            "f32",
            "--latents",
            latents_file.to_str().expect("path"),
            "--save-tensor",
            tensor.to_str().expect("path"),
            "-o",
            png.to_str().expect("path"),
        ]);
        assert!(ok, "{scheduler}: {stderr}");
        let (got_shape, got) =
            stipple::image_io::read_tensor_safetensors(&tensor, "image").expect("read tensor");
        assert_eq!(got_shape, vec![1, 16, 24, 3]);
        let (_, want) = golden.f32(&format!("image.{scheduler}"));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{scheduler:>16}: CLI image max abs error {err:.2e}");
        assert!(err <= 1e-4, "{scheduler}: CLI image off diffusers by {err}");
        // The PNG: right size, A1111 parameters.
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(&png).expect("png"),
        ));
        let reader = decoder.read_info().expect("png header");
        let info = reader.info();
        assert_eq!((info.width, info.height), (24, 16));
        let text: Vec<String> = info
            .uncompressed_latin1_text
            .iter()
            .map(|t| format!("{}={}", t.keyword, t.text))
            .collect();
        let params = text
            .iter()
            .find(|t| t.starts_with("parameters="))
            .expect("parameters chunk");
        assert!(
            params.contains("Negative prompt: blurry")
                && params.contains("Seed: 1234")
                && params.contains("Size: 24x16"),
            "{params}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Leftover files in `dir` other than `keep`.
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect()
}

#[test]
fn bad_arguments_fail_cleanly() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("cli-bad");
    let out = dir.join("out.png");
    let out_s = out.to_str().expect("path").to_string();
    let bad_latents = dir.join("bad_latents.safetensors");
    stipple::image_io::write_tensor_safetensors(&bad_latents, "latents", &[1, 4, 3, 3], &[0.0; 36])
        .expect("write");
    let model = model();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-W", "22", "-H", "16"], "width"),
        (vec!["-W", "0"], "width"),
        (vec!["--steps", "0"], "steps"),
        (vec!["--cfg", "-1"], "guidance"),
        (vec!["--cfg", "NaN"], "guidance"),
        (vec!["--batch", "0"], "batch"),
        (vec!["--scheduler", "plms"], "plms"),
        (
            vec!["--latents", bad_latents.to_str().expect("path")],
            "latents",
        ),
        (
            vec!["--latents", "/nonexistent/latents.safetensors"],
            "/nonexistent/latents.safetensors",
        ),
        (
            vec!["--init-image", "/nonexistent/init.png"],
            "/nonexistent/init.png",
        ),
        (vec!["-m", "/nonexistent/model"], "/nonexistent/model"),
        (vec!["--backend", "nosuch"], "nosuch"),
        (vec!["--adapter", "99"], "99"),
    ];
    for (extra, word) in cases {
        // Defaults for what the case does not set (clap rejects a flag given twice).
        let mut args = vec!["generate", "an apple", "-o", &out_s];
        for (flag, value) in [
            ("-m", model.as_str()),
            ("-W", "24"),
            ("-H", "16"),
            ("--steps", "2"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend(extra.iter());
        let (ok, stderr) = stipple(&args);
        assert!(!ok, "{extra:?} should fail");
        assert!(
            !stderr.contains("cannot be used multiple times"),
            "{extra:?}: {stderr}"
        );
        assert!(
            stderr.contains(word),
            "{extra:?}: message should name {word:?}: {stderr}"
        );
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    }
    // An unwritable / missing output directory fails before any GPU work.
    let (ok, stderr) = stipple(&[
        "generate",
        "an apple",
        "-m",
        &model,
        "-o",
        "/nonexistent/dir/out.png",
    ]);
    assert!(!ok && stderr.contains("/nonexistent/dir"), "{stderr}");
    let leftovers: Vec<String> = files_in(&dir)
        .into_iter()
        .filter(|f| f != "bad_latents.safetensors")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// RGB bytes of a PNG.
fn png_pixels(path: &Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("png"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf.truncate(info.buffer_size());
    buf
}

#[test]
fn prompts_file_writes_one_numbered_image_per_prompt_with_seed_plus_index() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("cli-prompts");
    let prompts = dir.join("prompts.txt");
    std::fs::write(
        &prompts,
        "# evaluation prompts\na red apple\n\n  a blue square  \na smiling face\n",
    )
    .expect("write prompts");
    let out_dir = dir.join("images");
    let model = model();
    let common = ["-m", &model, "-W", "24", "-H", "16", "--steps", "3"];
    let mut args = vec![
        "generate",
        "--prompts-file",
        prompts.to_str().expect("path"),
    ];
    args.extend(["--out-dir", out_dir.to_str().expect("path"), "--seed", "40"]);
    args.extend(common);
    let (ok, stderr) = stipple(&args);
    assert!(ok, "{stderr}");
    let mut names = files_in(&out_dir);
    names.sort();
    assert_eq!(names, ["0000.png", "0001.png", "0002.png"]);
    // Prompt 1 ("a blue square", trimmed) with seed 41 alone gives the same pixels.
    let single = dir.join("single.png");
    let mut args = vec![
        "generate",
        "a blue square",
        "-o",
        single.to_str().expect("path"),
    ];
    args.extend(["--seed", "41"]);
    args.extend(common);
    let (ok, stderr) = stipple(&args);
    assert!(ok, "{stderr}");
    assert_eq!(png_pixels(&single), png_pixels(&out_dir.join("0001.png")));
    assert_ne!(
        png_pixels(&out_dir.join("0000.png")),
        png_pixels(&out_dir.join("0001.png"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_prompts_files_fail_cleanly() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("cli-bad-prompts");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "# only a comment\n\n").expect("write");
    let binary = dir.join("binary.txt");
    std::fs::write(&binary, b"an apple\n\xff\xfe\n").expect("write");
    let out_dir = dir.join("out");
    let out_s = out_dir.to_str().expect("path").to_string();
    let model = model();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--prompts-file",
                empty.to_str().expect("path"),
                "--out-dir",
                &out_s,
            ],
            "no prompts",
        ),
        (
            vec![
                "--prompts-file",
                binary.to_str().expect("path"),
                "--out-dir",
                &out_s,
            ],
            "not UTF-8",
        ),
        (
            vec!["--prompts-file", "/nonexistent/p.txt", "--out-dir", &out_s],
            "/nonexistent/p.txt",
        ),
        (
            vec!["--prompts-file", empty.to_str().expect("path")],
            "--out-dir",
        ),
        (
            vec![
                "an apple",
                "--prompts-file",
                empty.to_str().expect("path"),
                "--out-dir",
                &out_s,
            ],
            "cannot be used with",
        ),
    ];
    for (extra, word) in cases {
        let mut args = vec!["generate", "-m", &model, "--steps", "2"];
        args.extend(extra.iter());
        let (ok, stderr) = stipple(&args);
        assert!(!ok, "{extra:?} should fail");
        assert!(
            stderr.contains(word),
            "{extra:?}: message should name {word:?}: {stderr}"
        );
        assert!(
            !out_dir.exists() || files_in(&out_dir).is_empty(),
            "{extra:?} wrote images"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
