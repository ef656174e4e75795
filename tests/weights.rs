//! `stipple::weights` without a GPU: safetensors files written on the fly (valid ones with the
//! `safetensors` crate, corrupted ones byte by byte) into a fresh temp directory per test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use safetensors::tensor::{Dtype, TensorView};
use stipple::weights::{FileDtype, Weights};
use stipple::Error;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "stipple-weights-test-{}-{n}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tensor to write: name, dtype, shape, f32 values (converted to `dtype`).
struct T<'a>(&'a str, Dtype, &'a [usize], &'a [f32]);

fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::I64 => values
            .iter()
            .flat_map(|v| (*v as i64).to_le_bytes())
            .collect(),
        other => panic!("test helper does not encode {other:?}"),
    }
}

/// Writes a valid safetensors file with the `safetensors` crate.
fn write_valid(path: &Path, tensors: &[T]) {
    let data: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .map(|t| (t.0.to_string(), encode(t.1, t.3)))
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|(t, (name, bytes))| {
            (
                name.clone(),
                TensorView::new(t.1, t.2.to_vec(), bytes).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A file from a raw JSON header and data section.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes `bytes` as `<name>.safetensors`, opens it, and checks that the error is an
/// `Error::Safetensors` naming the file and containing every `needles` string.
fn corrupt(name: &str, bytes: &[u8], needles: &[&str]) -> String {
    let dir = TempDir::new(name);
    let file_name = format!("{name}.safetensors");
    let path = dir.path(&file_name);
    std::fs::write(&path, bytes).unwrap();
    let err = Weights::open(&path).expect_err("corrupt file must not open");
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::Safetensors { file, .. } if file == &path),
        "wrong variant or file: {err:?}"
    );
    assert!(msg.contains(&file_name), "message lacks file name: {msg}");
    for needle in needles {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    msg
}

const F32_VALUES: [f32; 6] = [0.5, -1.25, 3.0, 256.0, -0.0078125, 1.5];

fn small_model(path: &Path) {
    write_valid(
        path,
        &[
            T(
                "down_blocks.0.conv.weight",
                Dtype::F32,
                &[2, 3],
                &F32_VALUES,
            ),
            T("down_blocks.0.conv.bias", Dtype::F16, &[2], &[0.25, -2.0]),
            T(
                "down_blocks.1.norm.weight",
                Dtype::BF16,
                &[3],
                &[1.0, 2.0, -4.5],
            ),
            T("conv_in.weight", Dtype::F32, &[1], &[7.0]),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Opening valid files

#[test]
fn single_file_dtypes_round_trip_exactly() {
    let dir = TempDir::new("single");
    let path = dir.path("model.safetensors");
    let f16_values = [0.5f32, -1.25, 3.0, 65504.0, 6.103_515_6e-5, -1024.0];
    let bf16_values = [0.5f32, -1.25, 3.0, 2f32.powi(100), -0.0078125, 1.0e-30_f32];
    // bf16 holds 8 bits of mantissa: make the last value representable.
    let bf16_values = bf16_values.map(|v| half::bf16::from_f32(v).to_f32());
    write_valid(
        &path,
        &[
            T("a", Dtype::F32, &[2, 3], &F32_VALUES),
            T("b", Dtype::F16, &[6], &f16_values),
            T("c", Dtype::BF16, &[3, 2], &bf16_values),
        ],
    );
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.path(), path);
    assert_eq!(w.names(), ["a", "b", "c"]);
    let root = w.root();
    assert_eq!(root.get("a", &[2, 3]).unwrap(), F32_VALUES);
    assert_eq!(root.get("b", &[6]).unwrap(), f16_values);
    assert_eq!(root.get("c", &[3, 2]).unwrap(), bf16_values);
    assert_eq!(root.dtype("b").unwrap(), FileDtype::F16);
    assert_eq!(root.dtype("c").unwrap(), FileDtype::BF16);
    let (shape, values) = root.get_any("c").unwrap();
    assert_eq!(shape, [3, 2]);
    assert_eq!(values, bf16_values);
    w.finish().unwrap();
}

#[test]
fn unaligned_data_section_reads_correctly() {
    // Header of odd length: the data section (and the f32 tensor) starts at an odd offset.
    let header = r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[1,13]}}"#;
    assert_eq!((8 + header.len()) % 2, 1, "want an odd data start");
    let mut data = vec![0xAAu8];
    for v in [1.5f32, -2.0, 1.0e-3] {
        data.extend(v.to_le_bytes());
    }
    let dir = TempDir::new("unaligned");
    let path = dir.path("u.safetensors");
    std::fs::write(&path, raw(header, &data)).unwrap();
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.root().get("x", &[3]).unwrap(), [1.5, -2.0, 1.0e-3]);
}

#[test]
fn sharded_index_with_two_shards() {
    let dir = TempDir::new("sharded");
    write_valid(
        &dir.path("m-00001-of-00002.safetensors"),
        &[
            T("encoder.a", Dtype::F32, &[2], &[1.0, 2.0]),
            T("encoder.b", Dtype::F16, &[1], &[3.0]),
        ],
    );
    write_valid(
        &dir.path("m-00002-of-00002.safetensors"),
        &[T("decoder.c", Dtype::BF16, &[2, 1], &[4.0, -5.0])],
    );
    let index = dir.path("m.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"metadata": {"total_size": 14}, "weight_map": {
            "encoder.a": "m-00001-of-00002.safetensors",
            "encoder.b": "m-00001-of-00002.safetensors",
            "decoder.c": "m-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let w = Weights::open(&index).unwrap();
    assert_eq!(w.path(), index);
    assert_eq!(w.files().len(), 2);
    assert_eq!(w.names(), ["decoder.c", "encoder.a", "encoder.b"]);
    assert_eq!(w.pp("encoder").get("a", &[2]).unwrap(), [1.0, 2.0]);
    assert_eq!(w.pp("encoder").get("b", &[1]).unwrap(), [3.0]);
    assert_eq!(w.unused(), ["decoder.c"]);
    assert_eq!(w.pp("decoder").get("c", &[2, 1]).unwrap(), [4.0, -5.0]);
    w.finish().unwrap();

    // The directory resolves to the index when it is the only candidate.
    let w = Weights::open(&dir.0).unwrap();
    assert_eq!(w.path(), index);
}

#[test]
fn directory_with_diffusion_pytorch_model() {
    let dir = TempDir::new("dir");
    let file = dir.path("diffusion_pytorch_model.safetensors");
    small_model(&file);
    std::fs::write(dir.path("config.json"), "{}").unwrap();
    let w = Weights::open(&dir.0).unwrap();
    assert_eq!(w.path(), file);
    assert_eq!(w.root().get("conv_in.weight", &[1]).unwrap(), [7.0]);
}

#[test]
fn directory_prefers_single_file_over_index() {
    let dir = TempDir::new("prefer");
    let file = dir.path("diffusion_pytorch_model.safetensors");
    small_model(&file);
    std::fs::write(
        dir.path("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map": {"x": "missing.safetensors"}}"#,
    )
    .unwrap();
    let w = Weights::open(&dir.0).unwrap();
    assert_eq!(w.path(), file);
}

#[test]
fn directory_without_or_with_ambiguous_weights() {
    let dir = TempDir::new("emptydir");
    small_model(&dir.path("unet.safetensors"));
    let msg = Weights::open(&dir.0).unwrap_err().to_string();
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
    assert!(
        msg.contains("unet.safetensors"),
        "lists what it found: {msg}"
    );

    // The only variant present is opened (tests/hub_folders.rs covers the choices).
    let variant = dir.path("diffusion_pytorch_model.fp16.safetensors");
    small_model(&variant);
    assert_eq!(Weights::open(&dir.0).unwrap().path(), variant);

    small_model(&dir.path("model.safetensors"));
    small_model(&dir.path("diffusion_pytorch_model.safetensors"));
    let msg = Weights::open(&dir.0).unwrap_err().to_string();
    assert!(msg.contains("ambiguous"), "{msg}");
}

#[test]
fn nonexistent_path_is_io_error() {
    let dir = TempDir::new("nonexistent");
    let path = dir.path("nope.safetensors");
    let err = Weights::open(&path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Views, lookups, bookkeeping

#[test]
fn prefix_views() {
    let dir = TempDir::new("views");
    let path = dir.path("model.safetensors");
    small_model(&path);
    let w = Weights::open(&path).unwrap();
    let blocks = w.pp("down_blocks");
    assert_eq!(blocks.prefix(), "down_blocks");
    let b0 = blocks.pp(0);
    assert_eq!(b0.prefix(), "down_blocks.0");
    assert_eq!(b0.pp("conv").prefix(), "down_blocks.0.conv");
    assert_eq!(w.root().pp("x").prefix(), w.pp("x").prefix());
    assert_eq!(w.root().prefix(), "");
    assert!(b0.contains("conv.weight"));
    assert!(!b0.contains("conv.wieght"));
    assert!(w.contains("down_blocks.0.conv.weight"));
    assert_eq!(b0.shape("conv.weight").unwrap(), [2, 3]);
    assert_eq!(b0.get("conv.weight", &[2, 3]).unwrap(), F32_VALUES);
    assert_eq!(b0.pp("conv").get("bias", &[2]).unwrap(), [0.25, -2.0]);
    assert_eq!(
        blocks.pp(1).pp("norm").get("weight", &[3]).unwrap(),
        [1.0, 2.0, -4.5]
    );
}

#[test]
fn missing_tensor_names_full_name_file_and_near_miss() {
    let dir = TempDir::new("missing");
    let path = dir.path("model.safetensors");
    small_model(&path);
    let w = Weights::open(&path).unwrap();
    let b0 = w.pp("down_blocks").pp(0);

    let err = b0.get("conv.wieght", &[2, 3]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Weight { .. }), "{err:?}");
    assert!(msg.contains("down_blocks.0.conv.wieght"), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(
        msg.contains("did you mean down_blocks.0.conv.weight"),
        "{msg}"
    );

    // No near miss: the message says what lives under the prefix instead.
    let msg = b0
        .get("attentions.0.proj_in.weight", &[1])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("down_blocks.0.attentions.0.proj_in.weight"),
        "{msg}"
    );
    assert!(msg.contains("down_blocks.0.conv.weight"), "{msg}");
    assert!(!msg.contains("did you mean"), "{msg}");

    let msg = w
        .pp("up_blocks")
        .pp(3)
        .shape("resnets.0.norm1.weight")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("up_blocks.3.resnets.0.norm1.weight"), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");

    let msg = b0.get_any("nothing_like_it").unwrap_err().to_string();
    assert!(msg.contains("down_blocks.0.nothing_like_it"), "{msg}");

    // A failed fetch marks nothing used.
    assert_eq!(w.unused().len(), 4);
}

#[test]
fn wrong_shape_names_expected_and_found() {
    let dir = TempDir::new("shape");
    let path = dir.path("model.safetensors");
    small_model(&path);
    let w = Weights::open(&path).unwrap();
    let err = w
        .pp("down_blocks.0")
        .get("conv.weight", &[3, 3])
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Weight { .. }), "{err:?}");
    assert!(msg.contains("down_blocks.0.conv.weight"), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("[3, 3]") && msg.contains("[2, 3]"), "{msg}");
    // Same element count: a hint about reshaping.
    let msg = w
        .root()
        .get("down_blocks.0.conv.weight", &[6])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("reshape"), "{msg}");
    assert!(w
        .unused()
        .contains(&"down_blocks.0.conv.weight".to_string()));
}

#[test]
fn finish_reports_unused_until_all_fetched() {
    let dir = TempDir::new("unused");
    let path = dir.path("model.safetensors");
    small_model(&path);
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.unused(), w.names());
    let err = w.finish().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Weight { .. }), "{err:?}");
    assert!(msg.contains("model.safetensors"), "{msg}");
    for name in w.names() {
        assert!(msg.contains(&name), "lists {name}: {msg}");
    }

    w.root().get("conv_in.weight", &[1]).unwrap();
    w.pp("down_blocks.0").get_any("conv.weight").unwrap();
    w.pp("down_blocks.0").get("conv.bias", &[2]).unwrap();
    assert_eq!(w.unused(), ["down_blocks.1.norm.weight"]);
    let msg = w.finish().unwrap_err().to_string();
    assert!(msg.contains("down_blocks.1.norm.weight"), "{msg}");
    assert!(!msg.contains("conv_in.weight"), "{msg}");

    w.pp("down_blocks").pp(1).get("norm.weight", &[3]).unwrap();
    assert!(w.unused().is_empty());
    w.finish().unwrap();
}

#[test]
fn finish_lists_at_most_ten() {
    let dir = TempDir::new("many");
    let path = dir.path("model.safetensors");
    let names: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    let tensors: Vec<T> = names
        .iter()
        .map(|n| T(n, Dtype::F32, &[1], &[1.0]))
        .collect();
    write_valid(&path, &tensors);
    let w = Weights::open(&path).unwrap();
    let msg = w.finish().unwrap_err().to_string();
    assert!(msg.contains("t00") && msg.contains("t09"), "{msg}");
    assert!(!msg.contains("t10"), "{msg}");
    assert!(msg.contains("15 more"), "{msg}");
}

#[test]
fn skip_marks_used_without_reading() {
    let dir = TempDir::new("skip");
    let path = dir.path("model.safetensors");
    write_valid(
        &path,
        &[
            T(
                "text_model.embeddings.position_ids",
                Dtype::I64,
                &[1, 3],
                &[0.0, 1.0, 2.0],
            ),
            T("model_ema.a", Dtype::F32, &[1], &[1.0]),
            T("model_ema.b", Dtype::F32, &[1], &[1.0]),
            T("w", Dtype::F32, &[1], &[1.0]),
        ],
    );
    let w = Weights::open(&path).unwrap();
    // An unsupported dtype opens fine and fails only when fetched, naming the dtype.
    let msg = w
        .pp("text_model.embeddings")
        .get("position_ids", &[1, 3])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("I64"), "{msg}");
    assert!(msg.contains("text_model.embeddings.position_ids"), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");

    assert!(w.pp("text_model.embeddings").skip("position_ids"));
    assert!(!w.root().skip("absent"));
    assert_eq!(w.pp("model_ema").skip_all(), 2);
    assert_eq!(w.unused(), ["w"]);
    w.root().get("w", &[1]).unwrap();
    w.finish().unwrap();
}

#[test]
fn weights_are_send_and_sync() {
    fn check<T: Send + Sync>(_: &T) {}
    let dir = TempDir::new("sync");
    let path = dir.path("model.safetensors");
    small_model(&path);
    let w = Weights::open(&path).unwrap();
    check(&w);
    std::thread::scope(|s| {
        s.spawn(|| w.root().get("conv_in.weight", &[1]).unwrap());
        s.spawn(|| w.pp("down_blocks.0").get("conv.bias", &[2]).unwrap());
    });
    assert_eq!(w.unused().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Corrupt files

#[test]
fn corrupt_empty_file() {
    corrupt("empty", b"", &["0 bytes", "too short"]);
}

#[test]
fn corrupt_five_bytes() {
    corrupt("five", &[1, 2, 3, 4, 5], &["5 bytes", "too short"]);
}

#[test]
fn corrupt_header_length_past_end() {
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    corrupt("hdrlen", &bytes, &["header length 1000", "exceeds"]);
    // A header length near u64::MAX must not overflow either.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    corrupt("hdrmax", &bytes, &["exceeds"]);
}

#[test]
fn corrupt_header_not_utf8() {
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    corrupt("utf8", &bytes, &["UTF-8"]);
}

#[test]
fn corrupt_header_truncated_json() {
    corrupt("brace", &raw("{", &[]), &["not a valid JSON object"]);
}

#[test]
fn corrupt_header_json_array() {
    corrupt(
        "array",
        &raw("[1, 2]", &[]),
        &["not a valid JSON object", "sequence"],
    );
}

#[test]
fn corrupt_unknown_dtype() {
    let header = r#"{"weird.q":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}}"#;
    corrupt(
        "dtype",
        &raw(header, &[0]),
        &["weird.q", "unknown dtype \"Q4\""],
    );
}

#[test]
fn corrupt_entry_missing_field() {
    let header = r#"{"no.offsets":{"dtype":"F32","shape":[1]}}"#;
    corrupt(
        "field",
        &raw(header, &[0; 4]),
        &["no.offsets", "data_offsets"],
    );
    let header = r#"{"not.object":[1, 2]}"#;
    corrupt(
        "entry",
        &raw(header, &[]),
        &["not.object", "must be an object"],
    );
    let header = r#"{"bad.shape":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#;
    corrupt(
        "shape",
        &raw(header, &[0; 4]),
        &["bad.shape", "non-negative"],
    );
}

#[test]
fn corrupt_metadata_not_strings() {
    let header = r#"{"__metadata__":{"format":"pt","step":5}}"#;
    corrupt("meta", &raw(header, &[]), &["__metadata__", "\"step\""]);
    // Valid metadata is accepted.
    let dir = TempDir::new("meta-ok");
    let path = dir.path("m.safetensors");
    std::fs::write(&path, raw(r#"{"__metadata__":{"format":"pt"}}"#, &[])).unwrap();
    let w = Weights::open(&path).unwrap();
    assert!(w.names().is_empty());
    w.finish().unwrap();
}

#[test]
fn corrupt_duplicate_name_in_one_header() {
    let header = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
                    "a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    corrupt(
        "dup",
        &raw(header, &[0, 0]),
        &["duplicate tensor name \"a\""],
    );
}

#[test]
fn corrupt_offsets_past_end() {
    let header = r#"{"far.away":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    corrupt(
        "pastend",
        &raw(header, &[0; 8]),
        &["far.away", "past the end", "8 bytes"],
    );
}

#[test]
fn corrupt_offsets_begin_after_end() {
    let header = r#"{"back.wards":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#;
    corrupt(
        "backwards",
        &raw(header, &[0; 8]),
        &["back.wards", "[8, 4]", "begin is after end"],
    );
}

#[test]
fn corrupt_size_mismatch() {
    let header = r#"{"wrong.size":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#;
    corrupt(
        "size",
        &raw(header, &[0; 8]),
        &["wrong.size", "8 bytes", "6 bytes"],
    );
}

#[test]
fn corrupt_overlapping_tensors() {
    let header = r#"{"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                    "second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    corrupt(
        "overlap",
        &raw(header, &[0; 12]),
        &["first", "[0, 8]", "second", "[4, 12]", "overlap"],
    );
}

#[test]
fn gaps_and_empty_tensors_are_fine() {
    // Out of order, a gap, and a zero-sized tensor sharing an offset: all valid.
    let header = r#"{"late":{"dtype":"U8","shape":[2],"data_offsets":[6,8]},
                    "empty":{"dtype":"F32","shape":[0, 3],"data_offsets":[6,6]},
                    "early":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#;
    let dir = TempDir::new("gaps");
    let path = dir.path("g.safetensors");
    let mut data = half::f16::from_f32(-3.5).to_le_bytes().to_vec();
    data.extend([0, 0, 0, 0, 1, 2]);
    std::fs::write(&path, raw(header, &data)).unwrap();
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.root().get("early", &[1]).unwrap(), [-3.5]);
    assert_eq!(w.root().get("empty", &[0, 3]).unwrap(), Vec::<f32>::new());
    let msg = w.root().get_any("late").unwrap_err().to_string();
    assert!(msg.contains("U8") && msg.contains("late"), "{msg}");
}

#[test]
fn corrupt_shape_product_overflows() {
    let header =
        r#"{"huge":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,4]}}"#;
    corrupt(
        "overflow",
        &raw(header, &[0; 4]),
        &["huge", "more elements than fit"],
    );
    // numel fits but numel × 4 bytes does not.
    let header =
        r#"{"huge2":{"dtype":"F32","shape":[4611686018427387904,2],"data_offsets":[0,4]}}"#;
    corrupt("overflow2", &raw(header, &[0; 4]), &["huge2", "F32"]);
    // A shape dimension beyond u64.
    let header = r#"{"huge3":{"dtype":"F32","shape":[1e30],"data_offsets":[0,4]}}"#;
    corrupt(
        "overflow3",
        &raw(header, &[0; 4]),
        &["huge3", "non-negative integers"],
    );
}

#[test]
fn truncation_at_every_length_never_panics() {
    let dir = TempDir::new("truncate");
    let good = dir.path("good.safetensors");
    small_model(&good);
    let bytes = std::fs::read(&good).unwrap();
    let path = dir.path("cut.safetensors");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = Weights::open(&path).expect_err("truncated file must not open");
        assert!(
            matches!(err, Error::Safetensors { .. }),
            "len {len}: {err:?}"
        );
        assert!(err.to_string().contains("cut.safetensors"), "{err}");
    }
    // Flipping any single header byte either still opens or gives a clean error.
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for i in 0..header_end {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            std::fs::write(&path, &b).unwrap();
            if let Ok(w) = Weights::open(&path) {
                for name in w.names() {
                    let _ = w.root().get_any(&name);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Broken shard sets

#[test]
fn index_with_missing_shard_file() {
    let dir = TempDir::new("missing-shard");
    write_valid(
        &dir.path("s1.safetensors"),
        &[T("a", Dtype::F32, &[1], &[1.0])],
    );
    let index = dir.path("x.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"weight_map": {"a": "s1.safetensors", "b.gone": "s2.safetensors"}}"#,
    )
    .unwrap();
    let err = Weights::open(&index).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Safetensors { .. }), "{err:?}");
    assert!(msg.contains("x.safetensors.index.json"), "{msg}");
    assert!(msg.contains("s2.safetensors"), "{msg}");
    assert!(msg.contains("b.gone"), "{msg}");
}

#[test]
fn index_weight_map_not_an_object() {
    let dir = TempDir::new("bad-index");
    let index = dir.path("x.safetensors.index.json");
    std::fs::write(&index, r#"{"weight_map": ["s1.safetensors"]}"#).unwrap();
    let msg = Weights::open(&index).unwrap_err().to_string();
    assert!(msg.contains("x.safetensors.index.json"), "{msg}");
    assert!(
        msg.contains("weight_map") && msg.contains("an array"),
        "{msg}"
    );

    std::fs::write(&index, r#"{"metadata": {}}"#).unwrap();
    let msg = Weights::open(&index).unwrap_err().to_string();
    assert!(msg.contains("weight_map"), "{msg}");

    std::fs::write(&index, r#"{"weight_map": {"a": 3}}"#).unwrap();
    let msg = Weights::open(&index).unwrap_err().to_string();
    assert!(
        msg.contains("tensor a") && msg.contains("a number"),
        "{msg}"
    );

    std::fs::write(&index, r#"{"weight_map": {"a": "../s.safetensors"}}"#).unwrap();
    let msg = Weights::open(&index).unwrap_err().to_string();
    assert!(msg.contains("../s.safetensors"), "{msg}");

    std::fs::write(&index, "{ not json").unwrap();
    let msg = Weights::open(&index).unwrap_err().to_string();
    assert!(msg.contains("not valid JSON"), "{msg}");
}

#[test]
fn duplicate_tensor_across_shards_names_both_files() {
    let dir = TempDir::new("dup-shards");
    write_valid(
        &dir.path("s1.safetensors"),
        &[T("shared.w", Dtype::F32, &[1], &[1.0])],
    );
    write_valid(
        &dir.path("s2.safetensors"),
        &[
            T("shared.w", Dtype::F32, &[1], &[2.0]),
            T("other", Dtype::F32, &[1], &[3.0]),
        ],
    );
    let index = dir.path("x.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"weight_map": {"shared.w": "s1.safetensors", "other": "s2.safetensors"}}"#,
    )
    .unwrap();
    let msg = Weights::open(&index).unwrap_err().to_string();
    assert!(msg.contains("shared.w"), "{msg}");
    assert!(
        msg.contains("s1.safetensors") && msg.contains("s2.safetensors"),
        "{msg}"
    );
}

#[test]
fn index_lists_tensor_absent_from_its_shard() {
    let dir = TempDir::new("absent");
    write_valid(
        &dir.path("s1.safetensors"),
        &[T("a", Dtype::F32, &[1], &[1.0])],
    );
    let index = dir.path("x.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"weight_map": {"a": "s1.safetensors", "ghost": "s1.safetensors"}}"#,
    )
    .unwrap();
    let err = Weights::open(&index).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Weight { .. }), "{err:?}");
    assert!(
        msg.contains("ghost") && msg.contains("s1.safetensors"),
        "{msg}"
    );
    assert!(msg.contains("x.safetensors.index.json"), "{msg}");
}

#[test]
fn corrupt_shard_error_names_the_shard() {
    let dir = TempDir::new("corrupt-shard");
    std::fs::write(dir.path("s1.safetensors"), [1, 2, 3]).unwrap();
    let index = dir.path("x.safetensors.index.json");
    std::fs::write(&index, r#"{"weight_map": {"a": "s1.safetensors"}}"#).unwrap();
    let msg = Weights::open(&index).unwrap_err().to_string();
    assert!(
        msg.contains("s1.safetensors") && msg.contains("too short"),
        "{msg}"
    );
}
