//! One device shared between threads (tests, the server's worker beside uploads, embedders):
//! the GPU denoising loop must finish while another thread queues uploads on the same device.
//! It once waited forever: `on_submitted_work_done` flushes the queue's pending writes (here
//! the other thread's) into a new submission and attaches its callback to that one, while the
//! loop polled only until its own step's submission was done; nothing ran the callback after.
//! With the old loop `tests/single_file.rs` hung in 3 of 25 runs, and this test in 3 of 3 (the
//! fixed loop: 0 of 40 and 0 of 5). Generation runs on its own thread under a watchdog, so a
//! hang fails the test instead of stalling the suite.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::golden::fixture;
use common::*;
use stipple::gpu::{DType, Tensor};
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};

#[test]
fn generation_finishes_while_another_thread_uploads() {
    let Some(gpu) = gpu() else { return };
    let mut pipe = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
    let stop = Arc::new(AtomicBool::new(false));
    let uploader = {
        let (gpu, stop) = (gpu.clone(), stop.clone());
        let target =
            Tensor::from_f32(&gpu, "target", &[64], DType::F32, &[0.0; 64]).expect("upload");
        std::thread::spawn(move || {
            let bytes = vec![0u8; 256];
            let mut writes = 0usize;
            // Writes stay pending in the queue, without a submission or poll of their own,
            // until the generating thread's next submission flushes them. Bounded in count as
            // well as by `stop`.
            while !stop.load(Ordering::Relaxed) && writes < 2_000_000 {
                gpu.queue.write_buffer(&target.buffer, 0, &bytes);
                writes += 1;
                std::thread::sleep(Duration::from_micros(20));
            }
            writes
        })
    };
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let options = GenerateOptions {
            prompt: "a red apple".into(),
            steps: 12,
            width: 16,
            height: 16,
            ..Default::default()
        };
        for seed in 0..3 {
            let options = GenerateOptions {
                seed,
                ..options.clone()
            };
            let out = pipe.generate(&options, |_, _| Progress::Continue);
            if done.send(out.map(|o| o.images.len())).is_err() {
                return;
            }
        }
    });
    let mut results = Vec::new();
    for _ in 0..3 {
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(r) => results.push(r),
            Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let uploads = uploader.join().expect("uploader");
    assert_eq!(
        results.len(),
        3,
        "generation {} did not finish within 60 s while another thread uploaded ({uploads} writes)",
        results.len() + 1
    );
    for r in results {
        assert!(r.expect("generate") > 0);
    }
    assert!(uploads > 0, "the writer never ran alongside");
}
