//! `stipple bench unet|vae|clip` and `generate --profile` on the tiny test pipeline: the JSON
//! report's fields and their consistency (FLOPs of the profile tables = FLOPs of the graph),
//! the Chrome trace (one complete event per dispatch, times never going backwards), clear
//! errors for bad arguments, and an unchanged image when generating with `--profile`.

mod common;

use common::cli::{run_stipple, Scratch};
use common::golden::fixture;
use common::gpu;
use serde_json::Value;

fn json_stdout(args: &[&str]) -> Value {
    let out = run_stipple(args, std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        out.status.success(),
        "stipple {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn check_trace(path: &std::path::Path, dispatches: usize) {
    let trace: Value = serde_json::from_slice(&std::fs::read(path).expect("trace")).expect("JSON");
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    assert_eq!(events.len(), dispatches, "one event per dispatch");
    let mut last = 0.0;
    for e in events {
        assert_eq!(e["ph"], "X");
        assert!(e["name"].is_string() && e["cat"].is_string());
        assert!(e["pid"].is_u64() && e["tid"].is_u64());
        let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
        assert!(ts >= last && dur >= 0.0, "ts {ts} after {last}");
        last = ts;
        let args = &e["args"];
        assert!(args["kernel"].as_str().unwrap().contains("::"));
        assert!(args["module"].is_string() && args["shapes"].is_string());
        assert!(args["flops"].is_u64());
    }
}

#[test]
fn bench_unet_json_profile_and_trace() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("bench-unet");
    let trace = dir.join("unet.json");
    let model = fixture("tiny-pipe").display().to_string();
    let r = json_stdout(&[
        "bench",
        "unet",
        "--family",
        &model,
        "--iters",
        "2",
        "--peak-gflops",
        "100",
        "--json",
        "--profile",
        "--depth",
        "1",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(r["model"], "unet");
    assert_eq!(r["batch"], 2);
    assert_eq!(r["size"], serde_json::json!([16, 16]));
    assert_eq!(r["run_seconds"].as_array().unwrap().len(), 2);
    assert!(r["step_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(r["peak_gflops"], 100.0);
    assert_eq!(r["peak_source"], "given");
    let flops = r["flops"].as_u64().unwrap();
    assert!(flops > 0 && r["tensor_flops"].as_u64().unwrap() <= flops);
    assert!(r["weights_bytes"].as_u64().unwrap() > 0);
    assert!(r["activation_peak_bytes"].as_u64().unwrap() > 0);
    let p = &r["profile"];
    for table in ["by_kernel", "by_module"] {
        let rows = p[table].as_array().unwrap();
        let f: u64 = rows.iter().map(|row| row["flops"].as_u64().unwrap()).sum();
        let n: u64 = rows
            .iter()
            .map(|row| row["dispatches"].as_u64().unwrap())
            .sum();
        assert_eq!(f, flops, "{table} FLOPs add up to the graph's");
        assert_eq!(n, r["dispatches"].as_u64().unwrap());
        let share: f64 = rows.iter().map(|row| row["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-6);
    }
    let modules: Vec<&str> = p["by_module"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    assert!(
        modules.contains(&"mid_block") && modules.contains(&"down_blocks.0"),
        "{modules:?}"
    );
    check_trace(&trace, r["dispatches"].as_u64().unwrap() as usize);
}

#[test]
fn bench_vae_and_clip_json() {
    if gpu().is_none() {
        return;
    }
    let model = fixture("tiny-pipe").display().to_string();
    // The FMA peak measured in the same process.
    let vae = json_stdout(&[
        "bench", "vae", "--family", &model, "--iters", "1", "--size", "24x16", "--json",
    ]);
    assert_eq!(vae["model"], "vae");
    assert_eq!(vae["batch"], 1);
    assert_eq!(vae["size"], serde_json::json!([16, 24]));
    assert_eq!(vae["latent"], serde_json::json!([8, 12]));
    assert_eq!(vae["peak_source"], "measured");
    assert!(vae["peak_gflops"].as_f64().unwrap() > 0.0);
    assert!(vae["flops_by_class"]["conv"].as_u64().unwrap() > 0);
    let clip = json_stdout(&[
        "bench",
        "clip",
        "--family",
        &model,
        "--iters",
        "1",
        "--peak-gflops",
        "1",
        "--json",
    ]);
    assert_eq!(clip["model"], "clip");
    assert_eq!(clip["tokens"], 77);
    assert!(clip["flops_by_class"]["matmul"].as_u64().unwrap() > 0);
    assert!(clip.get("profile").is_none());
}

#[test]
fn bench_bad_arguments_fail_cleanly() {
    let model = fixture("tiny-pipe").display().to_string();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (args, expected) in [
        (
            vec!["bench", "unet", "--family", "no-such-family"],
            "not a family",
        ),
        (
            vec!["bench", "unet", "--family", &model, "--size", "17"],
            "multiples of",
        ),
        (
            vec!["bench", "unet", "--family", &model, "--size", "axb"],
            "--size",
        ),
        (
            vec!["bench", "clip", "--family", &model, "--iters", "0"],
            "at least 1",
        ),
        (
            vec!["bench", "vae", "--family", &model, "--peak-gflops", "0"],
            "peak",
        ),
    ] {
        let out = run_stipple(&args, root);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn generate_profile_prints_tables_and_leaves_the_image_unchanged() {
    if gpu().is_none() {
        return;
    }
    let dir = Scratch::new("generate-profile");
    let model = fixture("tiny-pipe").display().to_string();
    let (plain, profiled, trace) = (
        dir.join("plain.png"),
        dir.join("profiled.png"),
        dir.join("t.json"),
    );
    let base = [
        "generate",
        "a red apple",
        "-m",
        &model,
        "--steps",
        "3",
        "--seed",
        "7",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = run_stipple(&args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {stderr}");
        stderr
    };
    let quiet = run(&["-o", plain.to_str().unwrap()]);
    assert!(!quiet.contains("GPU timestamps"), "{quiet}");
    let stderr = run(&[
        "-o",
        profiled.to_str().unwrap(),
        "--profile",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&profiled).unwrap(),
        "--profile changed the image"
    );
    for expected in [
        "text encoder: ",
        "vae decoder: 1 run,",
        "::conv2d", // conv2d::conv2d or the target's variant (conv2d_subgroup::conv2d_subgroup)
        "mid_block.attentions.0",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in: {stderr}");
    }
    // One UNet run per model evaluation (PNDM evaluates 3 steps 4 times).
    let unet_runs: usize = stderr
        .split("unet: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a unet section");
    assert!(unet_runs >= 3, "{stderr}");
    let t: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let n = t["traceEvents"].as_array().unwrap().len();
    check_trace(&trace, n);
    assert!(
        n > 3 * 100,
        "{n} events for 3 UNet steps, a prompt and a decode"
    );
}
