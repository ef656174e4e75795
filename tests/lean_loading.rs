//! Lean loading: weights stream from the memory map to the GPU in chunks (packed and converted
//! on the fly), tensors over the adapter's binding limit stay on the CPU or fail with a clear
//! error, and loading reports progress.
//!
//! - The chunked repacking (and the conv's segmented repacking from contiguous source runs)
//!   equals the whole-tensor repacking for odd shapes and chunk sizes (CPU only).
//! - `Tensor::from_fill` round-trips values across chunk boundaries in f32 and f16.
//! - The tiny-pipe model (full 49408-token CLIP table, f16 on disk) loaded under a binding limit
//!   lowered below its token table gives the same image as under the adapter's limit (the table
//!   is gathered on the CPU); under a limit below a GPU weight, loading fails naming the tensor
//!   and the limit.

mod common;

use common::golden::fixture;
use common::*;
use stipple::ops::{conv2d, matmul};
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::{DType, Tensor};

#[test]
fn chunked_repacking_equals_whole_repacking() {
    let mut rng = Rng::new(7);
    for &(n, k) in &[(1, 1), (3, 5), (9, 7), (17, 33), (320, 77)] {
        let w = rng.vec(n * k, 1.0);
        let whole = matmul::pack_weight(&w, n, k);
        for &chunk in &[1, 3, 8, 61, whole.len()] {
            let mut got = vec![f32::NAN; whole.len()];
            for start in (0..whole.len()).step_by(chunk) {
                let end = (start + chunk).min(whole.len());
                matmul::pack_weight_range(|i| w[i], n, k, start, &mut got[start..end]);
            }
            assert_eq!(got, whole, "linear n={n} k={k} chunk={chunk}");

            let mut got = vec![f32::NAN; whole.len()];
            let read = |row: usize, col: usize, out: &mut [f32]| {
                out.copy_from_slice(&w[row * k + col..row * k + col + out.len()])
            };
            matmul::pack_weight_segments(read, n, k, chunk, |offset, values| {
                assert!(got[offset..offset + values.len()]
                    .iter()
                    .all(|v| v.is_nan()));
                got[offset..offset + values.len()].copy_from_slice(values);
            });
            assert_eq!(got, whole, "linear segments n={n} k={k} max_chunk={chunk}");
        }
    }
    for &shape in &[
        [1, 1, 1, 1],
        [3, 5, 3, 3],
        [9, 2, 1, 1],
        [17, 6, 3, 3],
        [8, 3, 1, 3],
    ] {
        let [cout, cin, kh, kw] = shape;
        let w = rng.vec(cout * cin * kh * kw, 1.0);
        let whole = conv2d::pack_weight(&w, cout, cin, kh, kw);
        // Reference: the layout the conv2d kernel documents, written out directly.
        let np = stipple::ops::pad8(cout);
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..kh {
                    for kx in 0..kw {
                        assert_eq!(
                            whole[((ky * kw + kx) * cin + ci) * np + co],
                            w[((co * cin + ci) * kh + ky) * kw + kx]
                        );
                    }
                }
            }
        }
        for &chunk in &[1, 5, 8, 97, whole.len()] {
            let mut got = vec![f32::NAN; whole.len()];
            for start in (0..whole.len()).step_by(chunk) {
                let end = (start + chunk).min(whole.len());
                conv2d::pack_weight_range(|i| w[i], shape, start, &mut got[start..end]);
            }
            assert_eq!(got, whole, "conv {shape:?} chunk={chunk}");

            // Segments from contiguous source runs: every element written exactly once.
            let mut got = vec![f32::NAN; whole.len()];
            let mut writes = vec![0u32; whole.len()];
            let read =
                |start: usize, out: &mut [f32]| out.copy_from_slice(&w[start..start + out.len()]);
            conv2d::pack_weight_segments(read, shape, chunk, |offset, values| {
                assert_eq!(offset % 8, 0, "segment offsets are whole padded rows");
                got[offset..offset + values.len()].copy_from_slice(values);
                writes[offset..offset + values.len()]
                    .iter_mut()
                    .for_each(|n| *n += 1);
            });
            assert_eq!(got, whole, "conv segments {shape:?} max_chunk={chunk}");
            assert!(
                writes.iter().all(|&n| n == 1),
                "{shape:?}: each element once"
            );
        }
    }
}

#[test]
fn streamed_upload_round_trips_across_chunks() {
    let Some(gpu) = gpu() else { return };
    let chunk = stipple::gpu::tensor::UPLOAD_CHUNK;
    for dtype in dtypes(&gpu) {
        for n in [1, 3, chunk - 1, chunk, 2 * chunk + 3] {
            let values: Vec<f32> = (0..n).map(|i| ((i % 2039) as f32 - 1000.0) / 8.0).collect();
            let t = Tensor::from_fill(&gpu, "streamed", &[n], dtype, |start, out| {
                assert!(out.len() <= chunk);
                out.copy_from_slice(&values[start..start + out.len()])
            })
            .expect("upload");
            let back = t.to_f32(&gpu).expect("read back");
            // Every value is a multiple of 1/8 below 128: exact in f16 too.
            assert_eq!(back, values, "{} n={n}", dtype.name());
        }
    }
}

fn tiny_pipe_image(pipe: &mut Pipeline) -> Vec<f32> {
    let options = GenerateOptions {
        prompt: "a red apple on a wooden table".into(),
        negative_prompt: String::new(),
        steps: 2,
        guidance_scale: 7.5,
        seed: 3,
        width: 24,
        height: 16,
        batch: 1,
        scheduler: Some("ddim".into()),
        latents: None,
        init_image: None,
        ..Default::default()
    };
    let out = pipe
        .generate(&options, |_, _| Progress::Continue)
        .expect("generate");
    out.images
}

#[test]
fn token_table_over_the_binding_limit_stays_on_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-pipe");
    let mut normal = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    let want = tiny_pipe_image(&mut normal);

    // The table is 49408 × 16 f32 = 3.0 MiB; every GPU tensor of this model is far smaller.
    let mut low = gpu.clone();
    low.limits.max_storage_buffer_binding_size = 1 << 20;
    let mut pipe = Pipeline::load(&low, &dir, Some(DType::F32)).expect("load under 1 MiB");
    assert_eq!(tiny_pipe_image(&mut pipe), want);

    // Below a GPU weight: a clear error, not a crash.
    let mut tiny = gpu.clone();
    tiny.limits.max_storage_buffer_binding_size = 64;
    let err = Pipeline::load(&tiny, &dir, Some(DType::F32))
        .err()
        .expect("a 64-byte limit cannot hold the weights")
        .to_string();
    assert!(
        err.contains("max_storage_buffer_binding_size") && err.contains("tensor"),
        "{err}"
    );
}

#[test]
fn loading_reports_progress_up_to_the_file_bytes() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-pipe");
    let seen = std::sync::Mutex::new(Vec::new());
    let options = stipple::pipeline::LoadOptions {
        dtype: Some(DType::F32),
        ..Default::default()
    };
    Pipeline::load_with_progress(&gpu, &dir, &options, &|done, total| {
        seen.lock().unwrap().push((done, total));
    })
    .expect("load");
    let seen = seen.into_inner().unwrap();
    let (done, total) = *seen.last().expect("progress was reported");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "monotonic");
    assert!(total > 0 && done <= total, "{done} / {total}");
    // Everything but buffers the model skips (CLIP's position_ids, if present) is counted.
    assert!(done as f64 >= 0.99 * total as f64, "{done} / {total}");
}
