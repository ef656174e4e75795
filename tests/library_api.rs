//! The library as an app embeds it: the logic of examples/generate.rs (default model, 2 steps)
//! and examples/embed_thread.rs (tiny-pipe) run here, and the types an app moves between
//! threads are `Send`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use stipple::pipeline::{GenerateOptions, GenerateOutput, LoadOptions, Pipeline, Progress};

#[allow(dead_code)]
mod generate_example {
    include!("../examples/generate.rs");
}

#[allow(dead_code)]
mod embed_thread_example {
    include!("../examples/embed_thread.rs");
}

fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/stipple-emoji-64")
}

#[test]
fn public_types_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Pipeline>();
    send::<stipple::Error>();
    send_sync::<GenerateOptions>();
    send_sync::<GenerateOutput>();
    send_sync::<LoadOptions>();
    send_sync::<Progress>();
    send_sync::<stipple::Gpu>();
}

#[test]
fn generate_example_writes_a_png() {
    if gpu().is_none() {
        return;
    }
    let out = scratch("example-generate").join("apple.png");
    generate_example::generate(&default_model(), "an emoji of a red apple", 2, &out)
        .expect("example generate");
    let (w, h, pixels) = stipple::image_io::read_image_rgb(&out).expect("read the PNG");
    assert_eq!((w, h), (64, 64));
    assert!(pixels.iter().any(|&v| v != pixels[0]), "a flat image");
}

#[test]
fn embed_thread_example_answers_each_request() {
    let Some(gpu) = gpu() else { return };
    let tiny = common::golden::fixture("tiny-pipe");
    let (worker, handle) = embed_thread_example::spawn_worker(tiny.clone());
    let options = |seed| GenerateOptions {
        prompt: "a red apple".into(),
        steps: 2,
        seed,
        width: 16,
        height: 16,
        ..Default::default()
    };
    let threads: Vec<_> = [1u64, 2]
        .into_iter()
        .map(|seed| {
            let worker = worker.clone();
            std::thread::spawn(move || embed_thread_example::request(&worker, options(seed)))
        })
        .collect();
    drop(worker);
    let outs: Vec<GenerateOutput> = threads
        .into_iter()
        .map(|t| t.join().expect("thread").expect("generate"))
        .collect();
    handle.join().expect("worker");
    // Each answer is the image of its own request: the same as generating it directly.
    let mut direct = Pipeline::load(&gpu, &tiny, None).expect("load");
    for (out, seed) in outs.iter().zip([1u64, 2]) {
        let want = direct
            .generate(&options(seed), |_, _| Progress::Continue)
            .expect("generate");
        assert_eq!(out.seed, seed);
        assert_eq!(out.images, want.images, "seed {seed}");
    }
    assert_ne!(outs[0].images, outs[1].images);

    // A model that cannot load: each request gets the error, nothing hangs.
    let (worker, handle) = embed_thread_example::spawn_worker("/nonexistent/model".into());
    let err = embed_thread_example::request(&worker, options(1)).unwrap_err();
    assert!(err.to_string().contains("nonexistent"), "{err}");
    drop(worker);
    handle.join().expect("worker");
}

#[test]
fn output_save_png_refuses_a_missing_index() {
    let out = GenerateOutput {
        width: 2,
        height: 1,
        images: vec![0.0, 0.5, 1.0, 1.0, 0.5, 0.0],
        seed: 0,
        scheduler: "euler".into(),
        prediction_type: stipple::schedulers::PredictionType::Epsilon,
        steps: 1,
        truncated_tokens: 0,
        latents: None,
        timings: Default::default(),
    };
    assert_eq!(out.rgb8(0), Some(vec![0, 128, 255, 255, 128, 0]));
    assert_eq!(out.rgb8(1), None);
    let path = scratch("save-png").join("x.png");
    let err = out.save_png(1, &path).unwrap_err().to_string();
    assert!(err.contains("past the batch of 1"), "{err}");
    assert!(!path.exists());
    out.save_png(0, &path).expect("save");
    let (w, h, _) = stipple::image_io::read_image_rgb(&path).expect("read");
    assert_eq!((w, h), (2, 1));
}
