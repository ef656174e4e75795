//! Lean loading: weights stream from the memory map to the GPU in chunks (packed and converted
//! on the fly), tensors over the adapter's binding limit stay on the CPU, are split, or fail
//! with a clear error, and loading reports progress.
//!
//! - The chunked repacking (and the conv's segmented repacking from contiguous source runs)
//!   equals the whole-tensor repacking for odd shapes and chunk sizes, in both weight layouts
//!   (CPU only).
//! - `Tensor::from_fill` round-trips values across chunk boundaries in f32 and f16.
//! - The tiny-pipe model (full 49408-token CLIP table, f16 on disk) loaded under a binding limit
//!   lowered below its token table gives the same image as under the adapter's limit (the table
//!   is gathered on the CPU); under 30 KiB, below its largest weights, those load split into
//!   output ranges and give the same image within 1e-6, with and without a LoRA merged into the
//!   split layers; under a limit too small for 8 output rows of a weight, loading fails naming
//!   the tensor and the limit. A conv_shortcut over `[hidden ‖ skip]`, loaded as two input ranges,
//!   splits each range into output ranges there too and computes what the whole layer computes
//!   over the concatenation.
//! - F16 files loaded as F16 upload their bits without conversion: packing raw f16 bits equals
//!   packing the f32 values and converting (CPU), and the tiny-pipe f16 folder gives the same
//!   image, bit for bit, as its f32 copy (written with `stipple convert`'s functions, so it
//!   takes the converting path) when both load as F16.

mod common;

use common::golden::fixture;
use common::scratch::Scratch;
use common::*;
use stipple::ops::{conv2d, matmul};
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::{DType, Tensor};

#[test]
fn chunked_repacking_equals_whole_repacking() {
    let mut rng = Rng::new(7);
    for &(n, k) in &[(1, 1), (3, 5), (9, 7), (17, 33), (37, 19), (320, 77)] {
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
        [37, 5, 3, 3],
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

/// The Blocked layout (`WeightLayout::Blocked`: blocks of 32 output columns, each its own
/// (K, width) packed matrix, one after another) holds what `docs/kernels.md` and the subgroup
/// shaders say: w[k, n] at 32b·K + k·width_b + n − 32b; streamed in segments (as the loader
/// does) it equals the whole repacking, every element written once, for linears and convs.
#[test]
fn blocked_layout_streams_and_matches_its_definition() {
    use stipple::ops::{pad8, WeightLayout};
    let blocked = WeightLayout::Blocked;
    let mut rng = Rng::new(11);
    for &(n, k) in &[(1, 4), (8, 3), (33, 5), (64, 7), (70, 9), (100, 16)] {
        let w = rng.vec(n * k, 1.0);
        let whole = matmul::pack_weight_laid_out(&w, n, k, blocked);
        assert_eq!(whole.len(), k * pad8(n));
        for col in 0..n {
            let (b, width) = (col / 32, (pad8(n) - col / 32 * 32).min(32));
            for kk in 0..k {
                assert_eq!(
                    whole[32 * b * k + kk * width + col - 32 * b],
                    w[col * k + kk],
                    "linear n={n} k={k}"
                );
            }
        }
        for &chunk in &[1, 8, 61, whole.len()] {
            let mut got = vec![f32::NAN; whole.len()];
            let read = |row: usize, col: usize, out: &mut [f32]| {
                out.copy_from_slice(&w[row * k + col..row * k + col + out.len()])
            };
            matmul::pack_weight_segments_laid_out(read, n, k, blocked, chunk, |offset, values| {
                assert!(got[offset..offset + values.len()]
                    .iter()
                    .all(|v| v.is_nan()));
                got[offset..offset + values.len()].copy_from_slice(values);
            });
            assert_eq!(got, whole, "linear n={n} k={k} max_chunk={chunk}");
        }
    }
    for &shape in &[[8, 4, 3, 3], [33, 3, 1, 1], [70, 2, 3, 3]] {
        let [cout, cin, kh, kw] = shape;
        let w = rng.vec(cout * cin * kh * kw, 1.0);
        let whole = conv2d::pack_weight_laid_out(&w, shape, blocked);
        let rows = kh * kw * cin;
        for co in 0..cout {
            let (b, width) = (co / 32, (pad8(cout) - co / 32 * 32).min(32));
            for ci in 0..cin {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = (ky * kw + kx) * cin + ci;
                        assert_eq!(
                            whole[32 * b * rows + row * width + co - 32 * b],
                            w[((co * cin + ci) * kh + ky) * kw + kx]
                        );
                    }
                }
            }
        }
        for &chunk in &[1, 8, 97, whole.len()] {
            let mut got = vec![f32::NAN; whole.len()];
            let read =
                |start: usize, out: &mut [f32]| out.copy_from_slice(&w[start..start + out.len()]);
            conv2d::pack_weight_segments_laid_out(read, shape, blocked, chunk, |offset, values| {
                assert!(got[offset..offset + values.len()]
                    .iter()
                    .all(|v| v.is_nan()));
                got[offset..offset + values.len()].copy_from_slice(values);
            });
            assert_eq!(got, whole, "conv {shape:?} max_chunk={chunk}");
        }
    }
    // Packed is the one-block case.
    let w = rng.vec(70 * 9, 1.0);
    assert_eq!(
        matmul::pack_weight_laid_out(&w, 70, 9, WeightLayout::Packed),
        matmul::pack_weight(&w, 70, 9)
    );
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

#[test]
fn packing_raw_f16_bits_equals_packing_f32() {
    use half::f16;
    let mut rng = Rng::new(11);
    // f16 values (as f32, exactly representable) and their bits.
    let mut halves = |len: usize| -> (Vec<f32>, Vec<u16>) {
        let h: Vec<f16> = rng.vec(len, 2.0).into_iter().map(f16::from_f32).collect();
        (
            h.iter().map(|x| x.to_f32()).collect(),
            h.iter().map(|x| x.to_bits()).collect(),
        )
    };
    let to_bits =
        |v: &[f32]| -> Vec<u16> { v.iter().map(|&x| f16::from_f32(x).to_bits()).collect() };
    for &(n, k) in &[(1, 1), (3, 5), (17, 33), (37, 19), (320, 77)] {
        let (w, bits) = halves(n * k);
        for &chunk in &[1, 8, 61, 1 << 20] {
            let mut want = vec![0.0f32; k * stipple::ops::pad8(n)];
            let read = |r: usize, c: usize, out: &mut [f32]| {
                out.copy_from_slice(&w[r * k + c..r * k + c + out.len()])
            };
            matmul::pack_weight_segments(read, n, k, chunk, |o, v| {
                want[o..o + v.len()].copy_from_slice(v)
            });
            let mut got = vec![u16::MAX; want.len()];
            let read = |r: usize, c: usize, out: &mut [u16]| {
                out.copy_from_slice(&bits[r * k + c..r * k + c + out.len()])
            };
            matmul::pack_weight_segments(read, n, k, chunk, |o, v| {
                got[o..o + v.len()].copy_from_slice(v)
            });
            assert_eq!(got, to_bits(&want), "linear n={n} k={k} chunk={chunk}");
        }
    }
    for &shape in &[[1, 1, 1, 1], [3, 5, 3, 3], [17, 6, 3, 3], [37, 5, 3, 3]] {
        let [cout, cin, kh, kw] = shape;
        let (w, bits) = halves(cout * cin * kh * kw);
        for &chunk in &[1, 97, 1 << 20] {
            let mut want = vec![0.0f32; kh * kw * cin * stipple::ops::pad8(cout)];
            let read = |s: usize, out: &mut [f32]| out.copy_from_slice(&w[s..s + out.len()]);
            conv2d::pack_weight_segments(read, shape, chunk, |o, v| {
                want[o..o + v.len()].copy_from_slice(v)
            });
            let mut got = vec![u16::MAX; want.len()];
            let read = |s: usize, out: &mut [u16]| out.copy_from_slice(&bits[s..s + out.len()]);
            conv2d::pack_weight_segments(read, shape, chunk, |o, v| {
                got[o..o + v.len()].copy_from_slice(v)
            });
            assert_eq!(got, to_bits(&want), "conv {shape:?} chunk={chunk}");
        }
    }
}

#[test]
fn f16_files_upload_raw_bits_identical_to_converted_values() {
    use stipple::weights::single_file::convert::{folder_to_single_file, single_file_to_folder};
    use stipple::weights::FileDtype;
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-pipe");
    // The fixture's weights are F16 on disk: loaded as F16 they take the raw-bits path.
    let unet = std::fs::read(dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(unet[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&unet[8..8 + header_len]).unwrap();
    assert!(
        header.contains("\"F16\"") && !header.contains("\"F32\""),
        "fixture is f16"
    );

    // An F32 copy of the same values: F16 → F32 is exact, so loading it as F16 converts each
    // value back to the same f16.
    let scratch = Scratch::new("raw-f16");
    let file = scratch.path().join("tiny-pipe-f32.safetensors");
    folder_to_single_file(&dir, &file, Some(FileDtype::F32)).expect("to single file");
    let f32_folder = scratch.path().join("tiny-pipe-f32");
    single_file_to_folder(&file, &f32_folder, Some(&dir), Some(FileDtype::F32)).expect("back");

    let mut raw = Pipeline::load(&gpu, &dir, Some(DType::F16)).expect("load f16 folder");
    let mut converted = Pipeline::load(&gpu, &f32_folder, Some(DType::F16)).expect("load f32");
    let (want, got) = (tiny_pipe_image(&mut converted), tiny_pipe_image(&mut raw));
    assert!(want.iter().all(|v| v.is_finite()));
    assert_eq!(got, want, "raw f16 upload differs from the converted one");
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

/// A kohya LoRA (rank 2, alpha 2) on layers that split under a 30 KiB binding limit:
/// the 3×3 conv `up_blocks.0.resnets.0.conv1` (32 ← 64 channels) and the Linear
/// `mid_block…ff.net.0.proj` (256 ← 32 features).
fn lora_on_split_layers(dir: &std::path::Path) -> std::path::PathBuf {
    use safetensors::tensor::TensorView;
    let mut rng = Rng::new(11);
    let f32_bytes = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let modules = [
        (
            "lora_unet_up_blocks_0_resnets_0_conv1",
            vec![2, 64, 3, 3],
            vec![32, 2, 1, 1],
        ),
        (
            "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
            vec![2, 32],
            vec![256, 2],
        ),
    ];
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (module, down, up) in modules {
        let n_down: usize = down.iter().product();
        let n_up: usize = up.iter().product();
        tensors.push((format!("{module}.alpha"), vec![], f32_bytes(vec![2.0])));
        tensors.push((
            format!("{module}.lora_down.weight"),
            down,
            f32_bytes(rng.vec(n_down, 0.5)),
        ));
        tensors.push((
            format!("{module}.lora_up.weight"),
            up,
            f32_bytes(rng.vec(n_up, 0.5)),
        ));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let view = TensorView::new(safetensors::Dtype::F32, s.clone(), d).expect("view");
            (n.clone(), view)
        })
        .collect();
    let path = dir.join("split_layers_lora.safetensors");
    safetensors::serialize_to_file(views, None, &path).expect("write LoRA");
    path
}

fn small_image(pipe: &mut Pipeline) -> Vec<f32> {
    // 8×8 px (4×4 latents: this VAE scales by 2) without classifier-free guidance (batch 1):
    // every activation fits in 30 KiB (the largest: cross-attention keys and values,
    // 77 × 64 f32 = 19.3 KiB).
    let options = GenerateOptions {
        prompt: "a red apple on a wooden table".into(),
        steps: 2,
        guidance_scale: 0.0,
        seed: 5,
        width: 8,
        height: 8,
        scheduler: Some("ddim".into()),
        ..Default::default()
    };
    pipe.generate(&options, |_, _| Progress::Continue)
        .expect("generate")
        .images
}

#[test]
fn weights_past_the_binding_limit_are_split_by_output_rows() {
    let Some(gpu) = gpu() else { return };
    let dir = fixture("tiny-pipe");
    let lora = lora_on_split_layers(&scratch("split-lora"));
    let mut normal = Pipeline::load(&gpu, &dir, Some(DType::F32)).expect("load");
    let want = small_image(&mut normal);
    normal.set_loras(&[(&lora, 0.9)]).expect("LoRA");
    let want_lora = small_image(&mut normal);
    assert!(
        max_abs_diff(&want, &want_lora) > 1e-3,
        "the LoRA changes the image"
    );

    // 30 KiB is below tiny-pipe's largest weights (conv 32 ← 64 × 3×3: 72 KiB packed, 4
    // ranges of 8 channels; the 256 ← 32 Linear: 32 KiB, 240 + 16 features), which can only
    // load as several output ranges.
    let mut low = gpu.clone();
    low.limits.max_storage_buffer_binding_size = 30 << 10;
    let mut split = Pipeline::load(&low, &dir, Some(DType::F32)).expect("load under 30 KiB");
    let err = max_abs_diff(&small_image(&mut split), &want);
    assert!(err <= 1e-6, "split weights change the image by {err}");
    // A LoRA merges into each range of a split weight, and comes off again.
    split
        .set_loras(&[(&lora, 0.9)])
        .expect("LoRA on split weights");
    let err = max_abs_diff(&small_image(&mut split), &want_lora);
    assert!(err <= 1e-6, "LoRA on split weights is off by {err}");
    split.set_loras::<&std::path::Path>(&[]).expect("clear");
    let err = max_abs_diff(&small_image(&mut split), &want);
    assert!(err <= 1e-6, "clearing the LoRA leaves {err}");

    // 16 KiB: 8 output channels of that conv (the finest split) need 8 · 576 · 4 = 18 KiB.
    let mut tiny = gpu.clone();
    tiny.limits.max_storage_buffer_binding_size = 16 << 10;
    let m = Pipeline::load(&tiny, &dir, Some(DType::F32))
        .err()
        .expect("a 16 KiB limit cannot hold 8 output channels of that conv")
        .to_string();
    assert!(
        m.contains("up_blocks.0.resnets.0.conv1.weight")
            && m.contains("finest split")
            && m.contains("max_storage_buffer_binding_size is 16384"),
        "{m}"
    );
}

/// tiny-pipe's `up_blocks.0.resnets.0.conv_shortcut` (32 ← 32 + 32, 1×1) as a [`ConcatConv2d`]
/// under a 1 KiB binding limit: each input range (32 rows) splits into output ranges (4 of 8
/// channels in f32, 2 of 16 in f16) and `W_b·skip + (W_a·hidden + b)` equals the whole layer over
/// the concatenation within 1e-6 (f32) and 4e-3 (f16) of max(1, max |output|).
#[test]
fn conv_over_a_concatenation_splits_by_input_and_output_ranges() {
    use stipple::models::concat_conv::ConcatConv2d;
    use stipple::models::{layers, split, Ctx};
    use stipple::ops::concat::concat_channels;
    use stipple::ops::conv2d::Conv2dOptions;
    let Some(gpu) = gpu() else { return };
    let weights =
        stipple::weights::Weights::open(fixture("tiny-pipe").join("unet")).expect("weights");
    let w = weights.pp("up_blocks.0.resnets.0.conv_shortcut");
    let mut low = gpu.clone();
    low.limits.max_storage_buffer_binding_size = 1 << 10;
    for dtype in dtypes(&gpu) {
        let folded = ConcatConv2d::load(Ctx::new(&low, dtype), &w, [32, 32], 32, 1).expect("split");
        let parts = if dtype == DType::F32 { 4 } else { 2 };
        assert_eq!(folded.a.parts.len(), parts);
        assert_eq!(folded.b.parts.len(), parts);
        assert!(folded.a.parts[0].bias.is_some() && folded.b.parts[0].bias.is_none());
        let whole = layers::conv2d(Ctx::new(&gpu, dtype), &w, 64, 32, 1).expect("whole");
        assert_eq!(whole.parts.len(), 1);
        let mut rng = Rng::new(3);
        let shape = [2, 3, 5, 32];
        let (h, s) = (
            quantize(&rng.vec(960, 2.0), dtype),
            quantize(&rng.vec(960, 2.0), dtype),
        );
        let opts = Conv2dOptions::default();
        let inputs: [(&str, &[usize], &[f32]); 2] = [("h", &shape, &h), ("s", &shape, &s)];
        // Weights are laid out for the device's target (Blocked on lavapipe): graphs use it too.
        let got = run_graph_for(&gpu, &gpu.target, dtype, &inputs, |g, ids| {
            folded.forward(g, "conv_shortcut", ids[0], ids[1], opts)
        });
        let want = run_graph_for(&gpu, &gpu.target, dtype, &inputs, |g, ids| {
            let cat = concat_channels(g, "cat", ids[0], ids[1])?;
            split::conv2d(g, "conv_shortcut", cat, &whole, opts)
        });
        let err = max_abs_diff(&got, &want) / max_abs(&want).max(1.0);
        let tol = if dtype == DType::F32 { 1e-6 } else { 4e-3 };
        assert!(err <= tol, "{}: {err}", dtype.name());
    }
}
