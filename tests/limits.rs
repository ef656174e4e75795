//! Requests too large for the adapter fail with the option to change and the largest value that
//! fits (`stipple::pipeline::limits`), and those values really fit: the library on tiny-pipe
//! under a lowered binding limit (so the bounds are small enough to run), and the CLI under the
//! adapter's own limit. Also the user-facing bounds of --steps, --strength and --seed.

mod common;

use std::path::Path;

use common::cli::{run_stipple, Scratch};
use common::golden::fixture;
use common::gpu;
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::{DType, Error};

fn tiny(binding_limit: u64) -> Option<Pipeline> {
    let gpu = gpu()?;
    let mut p = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
    p.binding_limit = binding_limit;
    Some(p)
}

#[test]
fn the_largest_batch_named_fits_and_one_more_does_not() {
    let Some(mut p) = tiny(1 << 20) else {
        return;
    };
    let err = p.check_fits(1000, 24, 16, true, false).unwrap_err();
    let message = err.to_string();
    let Error::TooLarge(too_large) = err else {
        panic!("expected TooLarge: {message}")
    };
    let b = too_large
        .max_batch
        .unwrap_or_else(|| panic!("no batch bound: {message}"));
    assert!(
        message.starts_with("--batch 1000 at 24×16 needs ")
            && message.contains("binds at most 1 MiB per buffer")
            && message.contains(&format!("use --batch ≤ {b}")),
        "{message}"
    );
    assert!(b > 1 && b < 1000, "{message}");
    p.check_fits(b, 24, 16, true, false)
        .expect("the bound fits");
    assert!(p.check_fits(b + 1, 24, 16, true, false).is_err());
    // Without guidance the UNet runs half the rows: a larger batch fits.
    let no_cfg = p.check_fits(1000, 24, 16, false, false).unwrap_err();
    assert!(matches!(no_cfg, Error::TooLarge(t) if t.max_batch.is_some_and(|n| n > b)));
    // And a generation at the bound runs under that limit.
    let options = GenerateOptions {
        prompt: "an apple".into(),
        steps: 1,
        width: 24,
        height: 16,
        batch: b,
        ..GenerateOptions::default()
    };
    let out = p
        .generate(&options, |_, _| Progress::Continue)
        .expect("generate at the bound");
    assert_eq!(out.images.len(), b * 16 * 24 * 3);
    let over = GenerateOptions {
        batch: b + 1,
        ..options
    };
    assert!(matches!(
        p.generate(&over, |_, _| Progress::Continue),
        Err(Error::TooLarge(_))
    ));
}

#[test]
fn the_largest_size_named_fits_and_keeps_the_aspect_ratio() {
    let Some(p) = tiny(1 << 20) else {
        return;
    };
    let (w, h) = (2048, 1024);
    let err = p.check_fits(1, w, h, true, false).unwrap_err();
    let message = err.to_string();
    let Error::TooLarge(too_large) = err else {
        panic!("expected TooLarge: {message}")
    };
    let (mw, mh) = too_large
        .max_size
        .unwrap_or_else(|| panic!("no size bound: {message}"));
    assert_eq!(
        too_large.max_batch, None,
        "batch 1 has no smaller batch: {message}"
    );
    assert!(
        message.contains(&format!("a size up to {mw}×{mh} (-W {mw} -H {mh})")),
        "{message}"
    );
    assert!(mw < w && mh < h && mw == 2 * mh, "{message}");
    let m = p.size_multiple();
    assert!(
        mw % m == 0 && mh % m == 0,
        "{mw}×{mh} on the {m}-pixel grid"
    );
    p.check_fits(1, mw, mh, true, false)
        .expect("the bound fits");
    assert!(p.check_fits(1, mw + 2 * m, mh + m, true, false).is_err());
}

/// `generate` on tiny-pipe at 24×16 with 2 steps into `dir`, plus `extra`; (success, stderr).
fn generate(dir: &Path, extra: &[&str]) -> (bool, String) {
    let model = fixture("tiny-pipe");
    let output = dir.join("out.png");
    let mut args = vec![
        "generate",
        "a red apple",
        "-m",
        model.to_str().expect("model"),
        "-W",
        "24",
        "-H",
        "16",
        "-o",
        output.to_str().expect("output"),
    ];
    if !extra.contains(&"--steps") {
        args.extend(["--steps", "2"]);
    }
    args.extend(extra);
    let out = run_stipple(&args, dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn cli_batch_beyond_the_adapter_says_which_batch_fits() {
    let Some(gpu) = gpu() else {
        return;
    };
    let dir = Scratch::new("limits-batch");
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    // The UNet's text context alone, (2·batch, 77, 16) f32 with guidance, exceeds one binding.
    let batch = (limit / (2 * 77 * 16 * 4) + 1).to_string();
    let (ok, stderr) = generate(dir.path(), &["--batch", &batch]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("--batch {batch} at 24×16 needs")),
        "{stderr}"
    );
    assert!(!stderr.contains("split or tile"), "{stderr}");
    let bound: usize = stderr
        .split_once("use --batch ≤ ")
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no batch bound in: {stderr}"));
    if bound <= 32 {
        let (ok, stderr) = generate(dir.path(), &["--batch", &bound.to_string()]);
        assert!(ok, "--batch {bound} should fit: {stderr}");
        let (ok, stderr) = generate(dir.path(), &["--batch", &(bound + 1).to_string()]);
        assert!(
            !ok && stderr.contains(&format!("use --batch ≤ {bound}")),
            "{stderr}"
        );
    } else {
        eprintln!("not running --batch {bound}: too many images for a test");
    }
}

#[test]
fn cli_steps_strength_and_seed_bounds_are_in_the_users_terms() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("limits-bounds");
    let init = dir.join("init.png");
    let (ok, stderr) = generate(dir.path(), &["--seed", "1"]);
    assert!(ok, "{stderr}");
    std::fs::rename(dir.join("out.png"), &init).expect("rename");
    let init_s = init.to_str().expect("path");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--steps", "5000"], "use --steps ≤ 1000"),
        (vec!["--steps", "0"], "use --steps ≥ 1"),
        (
            vec![
                "--init-image",
                init_s,
                "--strength",
                "0.01",
                "--steps",
                "20",
            ],
            "use --strength ≥ 0.05 or --steps ≥ 100",
        ),
        (vec!["--seed", "-2"], "-1 for a random one"),
        (vec!["--seed", "abc"], "-1 for a random one"),
    ];
    for (extra, want) in cases {
        let (ok, stderr) = generate(dir.path(), &extra);
        assert!(!ok, "{extra:?} should fail");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
        assert!(!dir.join("out.png").exists(), "{extra:?} wrote an image");
    }
}

#[test]
fn cli_prompts_file_beyond_the_limit_says_how_to_split_it() {
    // Fails while reading the file, before any GPU work: no adapter needed.
    let dir = Scratch::new("limits-prompts");
    let prompts = dir.join("prompts.txt");
    let lines: String = (0..100_001).map(|i| format!("prompt {i}\n")).collect();
    std::fs::write(&prompts, lines).expect("write prompts");
    let out_dir = dir.join("images");
    let model = fixture("tiny-pipe");
    let out = run_stipple(
        &[
            "generate",
            "-m",
            model.to_str().expect("model"),
            "--prompts-file",
            prompts.to_str().expect("path"),
            "--out-dir",
            out_dir.to_str().expect("path"),
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("holds 100001 prompts") && stderr.contains("split -l 100000"),
        "{stderr}"
    );
    assert!(!out_dir.exists(), "no output folder for a refused run");
}

#[test]
fn a_decoder_too_wide_for_any_tile_says_so_with_its_size() {
    let Some(mut p) = tiny(64) else {
        return;
    };
    let c = p.vae.config.latent_channels;
    let err = p.decode(&vec![0.0; 8 * 12 * c], [1, 8, 12]).unwrap_err();
    let message = err.to_string();
    let Error::Limit { needed, max, .. } = err else {
        panic!("expected a Limit error: {message}")
    };
    assert!(needed > max && max == 64, "{message}");
    assert!(
        message.contains("VAE decoder") && message.contains("cannot run on this adapter"),
        "{message}"
    );
}
