//! Per-adapter choice of kernel configurations by measurement (src/autotune/), on this adapter
//! with the GPU kernel variant forced (lavapipe in CI): decisions in the target change what
//! graphs dispatch; the tiny pipeline gives the same image (≤ 1e-5) whatever configuration
//! runs; at first use the undecided keys are measured and cached, and a later device on the
//! same adapter reads the cache and measures nothing; `--no-autotune` touches no file; a
//! corrupt cache warns once and is ignored; `stipple bench autotune` and `stipple info`.
//! Every cache lives in a scratch directory (never the user's); nothing asserts a timing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cli::Scratch;
use common::golden::fixture;
use common::*;
use stipple::gpu::{AutotuneOptions, TuneKey, Variant};
use stipple::ops::attention::{self, AttentionOptions};
use stipple::ops::attention_tiled::CONFIGS;
use stipple::ops::matmul::{self, LinearOptions, LinearWeight};
use stipple::ops::matmul_tiled::{self, TILES};
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::{DType, Gpu, GpuOptions};

/// A device on the test adapter with `autotune`, graphs forced to the GPU kernel variant.
fn device(autotune: AutotuneOptions) -> Option<Gpu> {
    gpu()?;
    let options = GpuOptions {
        autotune,
        ..GpuOptions::from_env()
    };
    let mut gpu = Gpu::new(&options).expect("device");
    gpu.target = gpu.target.clone().with_variant(Variant::Gpu);
    Some(gpu)
}

fn tuning_in(dir: &Path, budget: Duration) -> AutotuneOptions {
    AutotuneOptions {
        enabled: true,
        cache_dir: Some(dir.to_path_buf()),
        budget,
    }
}

fn tiny_image(gpu: &Gpu) -> Vec<f32> {
    let options = GenerateOptions {
        prompt: "a green triangle".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        seed: 7,
        width: 24,
        height: 16,
        ..Default::default()
    };
    let mut pipe = Pipeline::load(gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
    pipe.generate(&options, |_, _| Progress::Continue)
        .expect("generate")
        .images
}

#[test]
fn decisions_in_the_target_change_what_graphs_dispatch() {
    let Some(gpu) = gpu() else { return };
    let target = gpu.target.clone().with_variant(Variant::Gpu);
    let target = stipple::gpu::Target {
        tuning: Default::default(),
        ..target
    };
    let (m, k, n) = (300, 64, 96);
    let w = LinearWeight::upload(&gpu, "proj", &vec![0.5; n * k], None, n, k, DType::F32)
        .expect("upload");
    let build = || {
        let mut g = stipple::Graph::for_target(DType::F32, &target);
        let x = g.input("x", &[m, k]).expect("x");
        let y = matmul::linear(&mut g, "proj", x, &w, LinearOptions::default()).expect("linear");
        let opts = AttentionOptions {
            heads: 2,
            head_dim: 48,
            scale: None,
            causal: false,
        };
        let q = g.reshape(y, &[1, m, n]).expect("reshape");
        attention::attention(&mut g, "attn", q.into(), q.into(), q.into(), opts).expect("attn");
        g
    };
    let overrides = |g: &stipple::Graph, i: usize| {
        let d = &g.dispatches()[i];
        (d.kernel.overrides.clone(), d.workgroups)
    };
    let o = |g: &stipple::Graph, i: usize, name: &str| {
        let found = overrides(g, i).0.into_iter().find(|(n, _)| *n == name);
        found.map(|(_, v)| v as usize)
    };
    // Undecided: the defaults, and the graph remembers both keys as undecided.
    let g = build();
    assert_eq!(o(&g, 0, "BM"), Some(matmul_tiled::DEFAULT_TILE.rows));
    assert_eq!(o(&g, 1, "WG"), Some(64));
    let keys: Vec<TuneKey> = g.tuning_uses().iter().map(|u| u.key.clone()).collect();
    assert_eq!(keys.len(), 2);
    assert!(g.tuning_uses().iter().all(|u| u.decision.is_none()));
    assert_eq!(keys[0].op, "linear_tiled");
    assert_eq!(keys[1].op, "partial_tiled");
    // Decided: the next graph dispatches the decisions, its grids follow.
    target.tuning.decide(keys[0].clone(), "64x32k8");
    target.tuning.decide(keys[1].clone(), "wg128-kv16");
    let g = build();
    assert_eq!(o(&g, 0, "BM"), Some(64));
    assert_eq!(o(&g, 0, "BN4"), Some(8));
    assert_eq!(o(&g, 0, "BK"), Some(8));
    let columns = stipple::ops::pad8(n).div_ceil(32) as u32;
    assert_eq!(overrides(&g, 0).1, [columns, m.div_ceil(64) as u32, 1]);
    assert_eq!(o(&g, 1, "WG"), Some(128));
    assert_eq!(o(&g, 1, "KV_TILE"), Some(16));
    assert_eq!(overrides(&g, 1).1[0] as usize, m.div_ceil(128));
    assert!(g.tuning_uses().iter().all(|u| u.decision.is_some()));
}

/// The tiny pipeline (text encoder, UNet, VAE decoder) with the GPU variant forced gives the
/// same image whatever configuration every tunable kernel runs: each GEMM tile with an
/// attention configuration, against the defaults.
#[test]
fn the_image_is_the_same_whatever_configuration_runs() {
    let Some(gpu) = gpu() else { return };
    let mut forced = gpu.clone();
    forced.target = gpu.target.clone().with_variant(Variant::Gpu);
    let want = tiny_image(&forced);
    for (i, tile) in TILES.iter().enumerate().skip(1) {
        let attn = CONFIGS[i % CONFIGS.len()];
        let mut g = forced.clone();
        g.target = forced
            .target
            .clone()
            .with_config("linear_tiled", tile.name)
            .with_config("conv2d_tiled", tile.name)
            .with_config("partial_tiled", attn.name);
        let got = tiny_image(&g);
        let diff = max_abs_diff(&got, &want);
        eprintln!("{} + {}: max abs difference {diff:e}", tile.name, attn.name);
        assert!(
            diff <= 1e-5,
            "{} + {}: images differ by {diff}",
            tile.name,
            attn.name
        );
    }
}

/// First use measures the keys the pipeline's graphs ask for and caches the decisions; the
/// image is the default's; a new device on the same adapter reads them and measures nothing.
#[test]
fn first_use_measures_and_caches_and_the_next_device_reuses() {
    let scratch = Scratch::new("autotune-first-use");
    let Some(gpu) = device(tuning_in(scratch.path(), Duration::from_secs(120))) else {
        return;
    };
    let cache = scratch.join("autotune.json");
    assert!(!cache.exists());
    assert!(gpu.target.tuning.is_empty());
    let got = tiny_image(&gpu);
    assert!(
        gpu.autotune.spent() > Duration::ZERO,
        "nothing was measured"
    );
    let decided = gpu.target.tuning.decisions();
    assert!(!decided.is_empty());
    assert!(cache.exists(), "no cache written");
    let text = std::fs::read_to_string(&cache).expect("cache");
    for key in decided.keys() {
        assert!(text.contains(&key.to_string()), "{key} not cached:\n{text}");
    }
    // Same image as the default configurations (summation orders may differ only slightly).
    let want = tiny_image(&device(AutotuneOptions::off()).expect("device"));
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-5, "tuned vs default: images differ by {diff}");

    let again = device(tuning_in(scratch.path(), Duration::from_secs(120))).expect("device");
    assert_eq!(
        again.target.tuning.decisions(),
        decided,
        "cache not read back"
    );
    let image = tiny_image(&again);
    assert_eq!(again.autotune.spent(), Duration::ZERO, "measured again");
    assert!(max_abs_diff(&image, &got) <= 1e-5);
}

#[test]
fn no_autotune_reads_and_writes_no_cache() {
    let scratch = Scratch::new("autotune-off");
    // A cache with a decision for this adapter: not read when tuning is off.
    let on = device(tuning_in(scratch.path(), Duration::ZERO)).expect("device");
    let key = TuneKey::new("linear_tiled", DType::F32, vec![1024, 320]);
    stipple::autotune::cache::save(
        on.autotune.cache_path().expect("path"),
        on.autotune.adapter_key(),
        &[(key, "64x32k8".to_string())].into_iter().collect(),
        &[],
    )
    .expect("save");
    let before = std::fs::read(scratch.join("autotune.json")).expect("cache");
    let Some(gpu) = device(AutotuneOptions {
        enabled: false,
        cache_dir: Some(scratch.path().to_path_buf()),
        ..Default::default()
    }) else {
        return;
    };
    assert!(gpu.target.tuning.is_empty());
    assert!(gpu.autotune.cache_path().is_none());
    tiny_image(&gpu);
    assert_eq!(gpu.autotune.spent(), Duration::ZERO);
    assert!(gpu.target.tuning.is_empty());
    assert_eq!(
        std::fs::read(scratch.join("autotune.json")).unwrap(),
        before
    );
    // With tuning on, the same file is read.
    let on = device(tuning_in(scratch.path(), Duration::ZERO)).expect("device");
    assert_eq!(on.target.tuning.len(), 1);
}

/// `stipple` with STIPPLE_CACHE_DIR = `dir`, the GPU variant forced; (success, stdout, stderr).
fn stipple_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stipple"))
        .args(args)
        .env("STIPPLE_CACHE_DIR", dir)
        .env("STIPPLE_FORCE_VARIANT", "gpu")
        .env_remove("STIPPLE_MODEL")
        .output()
        .expect("run stipple");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "stipple {args:?}: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.success(), stdout, stderr)
}

#[test]
fn bench_autotune_measures_within_its_budget_and_info_shows_the_cache() {
    if gpu().is_none() {
        return;
    }
    let scratch = Scratch::new("autotune-cli");
    let (ok, out, err) = stipple_in(scratch.path(), &["bench", "autotune", "--budget", "2"]);
    assert!(ok, "bench autotune failed: {err}");
    assert!(
        out.contains("gpu kernels") && out.contains("candidate"),
        "{out}"
    );
    assert!(out.contains("128x64k16"), "{out}");
    assert!(out.contains("keys decided in"), "{out}");
    let cache = scratch.join("autotune.json");
    assert!(out.contains(&cache.display().to_string()), "{out}");
    let decided = stipple::autotune::cache::summary(
        &cache,
        &stipple::autotune::cache::AdapterKey::of(&gpu().unwrap().info),
    )
    .expect("cache written")
    .0;
    assert!(decided >= 1, "no decision cached");
    let (ok, out, err) = stipple_in(scratch.path(), &["info"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Autotune:"))
        .unwrap_or_else(|| panic!("no Autotune line: {out}"));
    assert!(line.contains(&cache.display().to_string()), "{line}");
    assert!(line.contains(&format!("{decided} decisions")), "{line}");
    // JSON, and the flags that contradict measuring.
    let (ok, out, _) = stipple_in(
        scratch.path(),
        &["bench", "autotune", "--budget", "0.5", "--json"],
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(v["rows"].as_array().is_some_and(|r| !r.is_empty()), "{out}");
    let (ok, _, err) = stipple_in(scratch.path(), &["bench", "autotune", "--no-autotune"]);
    assert!(!ok && err.contains("--no-autotune"), "{err}");
}

#[test]
fn a_corrupt_cache_warns_once_and_generation_goes_on() {
    if gpu().is_none() {
        return;
    }
    let scratch = Scratch::new("autotune-corrupt");
    std::fs::write(scratch.join("autotune.json"), "{ not json").expect("write");
    let out = scratch.join("out.png");
    let model = fixture("tiny-pipe");
    let generate = |extra: &[&str]| {
        let (model, out) = (model.to_str().unwrap(), out.to_str().unwrap());
        let mut args = vec!["generate", "a red square", "-m", model, "--steps", "1"];
        args.extend(["-W", "16", "-H", "16", "--dtype", "f32", "-o", out]);
        args.extend(extra);
        stipple_in(scratch.path(), &args)
    };
    let (ok, _, err) = generate(&[]);
    assert!(ok, "{err}");
    assert!(out.exists());
    let warnings = err
        .lines()
        .filter(|l| l.starts_with("warning: autotune cache"))
        .count();
    assert_eq!(warnings, 1, "{err}");
    // `--no-autotune` does not read it: no warning.
    let (ok, _, err) = generate(&["--no-autotune"]);
    assert!(ok, "{err}");
    assert!(!err.contains("warning: autotune"), "{err}");
}
