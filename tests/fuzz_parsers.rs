//! Property-based fuzzing of every parser that reads user files, in the normal test run
//! (no GPU needed):
//!
//! | target                          | entry point                                              | cases |
//! |---------------------------------|----------------------------------------------------------|-------|
//! | safetensors: raw bytes          | `Weights::open` on a temp file                           | 512   |
//! | safetensors: built + mutated    | `Weights::open`, `get_any`, `finish`                     | 512   |
//! | safetensors: sharded index      | `Weights::open` on `*.safetensors.index.json`            | 256   |
//! | model configs (UNet, VAE, CLIP) | `read_config` + `validate` on JSON-ish text              | 512   |
//! | scheduler config                | `SchedulerConfig::from_file`, `with_name`, `build(steps)`, three steps | 512 |
//! | Python json `NaN`/`Infinity`    | the two rows above on configs holding those literals     | 256   |
//! | tokenizer prompts               | shipped `ClipTokenizer`: `encode`, `encode_chunks`, `decode` | 512 |
//! | tokenizer files                 | `ClipTokenizer::from_dir` on small arbitrary vocab/merges/config | 256 |
//!
//! Properties: nothing panics; every failure is an `Err` whose message is non-empty and names
//! the file it came from; what parses behaves (tensors read back with the declared shape,
//! schedulers have finite timesteps, every encoded prompt is 77 ids starting with BOS and
//! holding EOS). `PROPTEST_CASES=N` overrides every count (used for the long local runs);
//! failures are not persisted to disk: inputs found are kept below as explicit regression tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Map, Value};

use stipple::models::config::{
    read_config, AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig,
};
use stipple::schedulers::{SchedulerConfig, SCHEDULER_NAMES};
use stipple::tokenizer::ClipTokenizer;
use stipple::weights::Weights;

// ---------------------------------------------------------------------------------------------
// Harness

/// `default` cases unless `PROPTEST_CASES` is set; no failure files written.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A fresh directory per case, removed on drop (also when the case fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(target: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("stipple-fuzz-{target}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An error is acceptable when its message is non-empty and names `file` (its file name).
fn check_error(e: &stipple::Error, file: &Path) -> Result<(), TestCaseError> {
    let message = e.to_string();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    prop_assert!(!message.trim().is_empty(), "empty error message: {e:?}");
    prop_assert!(
        message.contains(&name),
        "error does not name {name}: {message}"
    );
    Ok(())
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(path)
}

fn fixture_json(path: &str) -> Value {
    let text = std::fs::read_to_string(fixture(path)).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

// ---------------------------------------------------------------------------------------------
// JSON strategies

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0u64..70).prop_map(Value::from),
        (-5i64..0).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-2.0f64..2.0).prop_map(|f| json!(f)),
        "[a-zA-Z_0-9]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Byte offset of a char boundary of `s` picked by `idx`.
fn boundary(s: &str, idx: Index) -> usize {
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    bounds[idx.index(bounds.len())]
}

/// Serialised JSON, sometimes truncated or with a character inserted or removed.
fn jsonish(value: impl Strategy<Value = Value>) -> impl Strategy<Value = String> {
    (value, 0u8..6, any::<Index>(), any::<char>()).prop_map(|(v, mutation, idx, c)| {
        let mut text = if mutation == 5 {
            serde_json::to_string_pretty(&v).expect("serialise")
        } else {
            v.to_string()
        };
        let at = boundary(&text, idx);
        match mutation {
            2 => text.truncate(at),
            3 => text.insert(at, c),
            4 if at < text.len() => {
                text.remove(at);
            }
            _ => {}
        }
        text
    })
}

/// Values a config field may plausibly (or implausibly) hold.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u64..70).prop_map(Value::from),
        1 => prop::collection::vec(0u64..70, 0..6).prop_map(|v| json!(v)),
        1 => select(vec![
            "silu", "gelu", "quick_gelu", "relu", "CrossAttnDownBlock2D", "DownBlock2D",
            "UpBlock2D", "CrossAttnUpBlock2D", "DownEncoderBlock2D", "UpDecoderBlock2D",
            "UNetMidBlock2DCrossAttn", "positional", "fourier", "default", "scale_shift",
        ])
        .prop_map(Value::from),
        1 => prop::collection::vec(
            select(vec!["CrossAttnDownBlock2D", "DownBlock2D", "UpBlock2D",
                        "CrossAttnUpBlock2D", "DownEncoderBlock2D", "UpDecoderBlock2D", "x"]),
            0..5,
        )
        .prop_map(|v| json!(v)),
        2 => json_value(),
    ]
}

/// `object` with each `(key, value, remove)` applied: the key removed, or set to the value.
fn apply_edits(mut object: Value, edits: Vec<(String, Value, bool)>) -> Value {
    let fields = object.as_object_mut().expect("a JSON object fixture");
    for (key, value, remove) in edits {
        if remove {
            fields.remove(&key);
        } else {
            fields.insert(key, value);
        }
    }
    object
}

/// `base` with up to five fields (of `fields`, or new ones) set to other values or removed.
fn edited_object(base: Value, fields: Vec<String>) -> impl Strategy<Value = Value> {
    let key = prop_oneof![4 => select(fields), 1 => "[a-z_]{1,8}"];
    prop::collection::vec((key, field_value(), any::<bool>()), 0..5)
        .prop_map(move |edits| apply_edits(base.clone(), edits))
}

/// Text for a config file: an edited real config (mostly), arbitrary JSON, or arbitrary text.
fn config_text(base: Value) -> impl Strategy<Value = String> {
    let fields: Vec<String> = base.as_object().expect("object").keys().cloned().collect();
    prop_oneof![
        6 => jsonish(edited_object(base, fields)),
        2 => jsonish(json_value()),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).to_string()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Safetensors

const DTYPES: [(&str, usize); 7] = [
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U8", 1),
    ("I64", 8),
    ("BOOL", 1),
];

/// (name, dtype, shape) of a tensor written by [`valid_safetensors`].
type Listed = (String, &'static str, Vec<usize>);

/// A well-formed safetensors file: (name, dtype, shape) laid out back to back, with metadata.
fn valid_safetensors(
    tensors: &[(String, usize, Vec<usize>)],
    metadata: bool,
    fill: u8,
) -> (Vec<u8>, Vec<Listed>) {
    let mut header = Map::new();
    if metadata {
        header.insert("__metadata__".into(), json!({"format": "pt"}));
    }
    let mut offset = 0usize;
    let mut listed = Vec::new();
    for (name, d, shape) in tensors {
        let (dtype, size) = DTYPES[*d];
        let bytes = size * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        listed.push((name.clone(), dtype, shape.clone()));
        offset += bytes;
    }
    let mut json = Value::Object(header).to_string().into_bytes();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    // Finite f32/f16/bf16 patterns whatever `fill` is (high bits clear).
    file.extend((0..offset).map(|i| (i as u8).wrapping_mul(fill) & 0x3f));
    (file, listed)
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(Index),
    Flip(Index, u8),
    FlipHeader(Index, u8),
    HeaderLen(u64),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::FlipHeader(i, x)),
        1 => prop_oneof![any::<u64>(), 0u64..512].prop_map(Mutation::HeaderLen),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    match m {
        Mutation::None => {}
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Flip(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Mutation::FlipHeader(i, x) => {
            let i = 8 + i.index(header_end - 8);
            bytes[i] ^= x;
        }
        Mutation::HeaderLen(n) => bytes[..8].copy_from_slice(&n.to_le_bytes()),
        Mutation::Append(extra) => bytes.extend_from_slice(extra),
    }
    bytes
}

/// A header built from arbitrary entries (tensor-like or not), its length field, and data.
fn crafted_safetensors() -> impl Strategy<Value = Vec<u8>> {
    let dtype = prop_oneof![
        4 => select(DTYPES.iter().map(|d| d.0).collect::<Vec<_>>()).prop_map(Value::from),
        1 => select(vec!["F4", "F6_E2M3", "F8_E4M3", "C64", "F64", "U64"]).prop_map(Value::from),
        1 => "[A-Z0-9_]{0,6}".prop_map(Value::from),
        1 => json_leaf(),
    ];
    let shape = prop_oneof![
        4 => prop::collection::vec(0u64..6, 0..4).prop_map(|v| json!(v)),
        1 => prop::collection::vec(any::<u64>(), 1..4).prop_map(|v| json!(v)),
        1 => json_value(),
    ];
    let offsets = prop_oneof![
        4 => (0u64..96, 0u64..96).prop_map(|(a, b)| json!([a, b])),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| json!([a, b])),
        1 => json_value(),
    ];
    let field = |k: &'static str| prop_oneof![Just(k.to_string()), "[a-z_]{0,12}"];
    let tensor = (
        (field("dtype"), dtype),
        (field("shape"), shape),
        (field("data_offsets"), offsets),
    )
        .prop_map(|((kd, d), (ks, s), (ko, o))| {
            let mut m = Map::new();
            m.insert(kd, d);
            m.insert(ks, s);
            m.insert(ko, o);
            Value::Object(m)
        });
    let entry = prop_oneof![5 => tensor, 1 => json_value()];
    let name = prop_oneof![
        5 => "[a-z0-9_.]{0,16}",
        1 => Just("__metadata__".to_string()),
        1 => any::<String>(),
    ];
    let header = prop::collection::vec((name, entry), 0..5);
    (
        header,
        prop::option::of(json_value()),
        prop::collection::vec(any::<u8>(), 0..128),
        0usize..9,
        prop_oneof![4 => Just(None), 1 => any::<u64>().prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(entries, metadata, data, pad, len, dup)| {
            // Entries are written by hand so that duplicate names reach the parser.
            let mut parts: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
                .collect();
            if let Some(m) = metadata {
                parts.push(format!("\"__metadata__\":{m}"));
            }
            if dup {
                if let Some(first) = parts.first().cloned() {
                    parts.push(first);
                }
            }
            let mut json = format!("{{{}}}", parts.join(",")).into_bytes();
            json.extend(std::iter::repeat_n(b' ', pad));
            let n = len.unwrap_or(json.len() as u64);
            let mut file = n.to_le_bytes().to_vec();
            file.extend_from_slice(&json);
            file.extend_from_slice(&data);
            file
        })
}

/// Opens `path` and, if it opens, reads every tensor: errors name the file; reads of float
/// tensors give `numel` values.
fn open_and_read(path: &Path) -> Result<Option<Weights>, TestCaseError> {
    let weights = match Weights::open(path) {
        Ok(w) => w,
        Err(e) => {
            check_error(&e, path)?;
            return Ok(None);
        }
    };
    for name in weights.names() {
        let root = weights.root();
        let shape = root
            .shape(&name)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let dtype = root
            .dtype(&name)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match root.get_any(&name) {
            Ok((s, data)) => {
                prop_assert!(dtype.converts_to_f32(), "{name}: {dtype} read as f32");
                prop_assert_eq!(&s, &shape);
                prop_assert_eq!(data.len(), shape.iter().product::<usize>());
            }
            Err(e) => {
                prop_assert!(!dtype.converts_to_f32(), "{name}: {e}");
                let message = e.to_string();
                prop_assert!(message.contains(&name), "{message}");
                check_error(&e, path)?;
            }
        }
        // A wrong expected shape is an error naming the tensor.
        let mut wrong = shape.clone();
        wrong.push(3);
        let e = root.get(&name, &wrong).expect_err("wrong shape accepted");
        prop_assert!(e.to_string().contains(&name), "{e}");
    }
    if let Err(e) = weights.finish() {
        check_error(&e, path)?;
    }
    // A name that is not there: an error naming it.
    let e = weights
        .root()
        .get("no.such.tensor", &[1])
        .expect_err("missing tensor found");
    prop_assert!(e.to_string().contains("no.such.tensor"), "{e}");
    Ok(Some(weights))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn safetensors_raw_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        let dir = Scratch::new("st-raw");
        let path = dir.write("model.safetensors", &bytes);
        open_and_read(&path)?;
    }

    #[test]
    fn safetensors_crafted_headers_never_panic(bytes in crafted_safetensors()) {
        let dir = Scratch::new("st-crafted");
        let path = dir.write("model.safetensors", &bytes);
        open_and_read(&path)?;
    }

    #[test]
    fn safetensors_valid_then_mutated(
        tensors in prop::collection::vec(
            ("[a-z][a-z0-9_.]{0,12}", 0usize..DTYPES.len(), prop::collection::vec(0usize..5, 0..4)),
            0..5,
        ),
        metadata in any::<bool>(),
        fill in any::<u8>(),
        m in mutation(),
    ) {
        let mut seen = std::collections::HashSet::new();
        let tensors: Vec<_> = tensors.into_iter().filter(|t| seen.insert(t.0.clone())).collect();
        let (bytes, listed) = valid_safetensors(&tensors, metadata, fill);
        let dir = Scratch::new("st-valid");
        let path = dir.write("model.safetensors", apply(bytes, &m));
        let opened = open_and_read(&path)?;
        if matches!(m, Mutation::None | Mutation::Append(_)) {
            // Unmutated (or with trailing bytes, which the format allows): opens, same tensors.
            let weights = opened.ok_or_else(|| TestCaseError::fail("a valid file was rejected"))?;
            prop_assert_eq!(weights.names().len(), listed.len());
            for (name, _, shape) in &listed {
                prop_assert_eq!(&weights.root().shape(name).expect("listed"), shape);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn safetensors_index_never_panics(
        text in prop_oneof![
            3 => prop::collection::btree_map(
                "[a-z.]{0,6}",
                prop_oneof![
                    3 => select(vec![
                        "model-00001.safetensors", "missing.safetensors", "../model-00001.safetensors",
                        "/model-00001.safetensors", "", ".", "sub/x.safetensors", "model.safetensors.index.json",
                    ]).prop_map(Value::from),
                    1 => json_leaf(),
                ],
                0..4,
            )
            .prop_flat_map(|m| {
                let map: Map<String, Value> = m.into_iter().collect();
                jsonish(prop_oneof![
                    4 => Just(json!({ "weight_map": map.clone() })),
                    1 => Just(json!({ "metadata": {}, "weight_map": Value::Array(map.into_values().collect()) })),
                ])
            }),
            1 => jsonish(json_value()),
        ],
    ) {
        let dir = Scratch::new("st-index");
        let (shard, _) = valid_safetensors(&[("a".into(), 0, vec![2]), ("b".into(), 1, vec![3])], false, 1);
        dir.write("model-00001.safetensors", shard);
        let index = dir.write("model.safetensors.index.json", text);
        // Through the directory and through the index file itself.
        for path in [dir.0.clone(), index.clone()] {
            if let Err(e) = Weights::open(&path) {
                let message = e.to_string();
                prop_assert!(!message.trim().is_empty());
                prop_assert!(message.contains("model"), "{message}");
            }
        }
        open_and_read(&index)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Model configs

/// read_config + validate on `text`; errors name config.json.
fn check_model_config<T: serde::de::DeserializeOwned>(
    text: &str,
    validate: impl Fn(&T, &Path) -> stipple::Result<()>,
    after: impl Fn(&T),
) -> Result<(), TestCaseError> {
    let dir = Scratch::new("config");
    let path = dir.write("config.json", text);
    match read_config::<T>(&path) {
        Err(e) => check_error(&e, &path)?,
        Ok(config) => match validate(&config, &path) {
            Err(e) => check_error(&e, &path)?,
            Ok(()) => after(&config),
        },
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn unet_config_never_panics(text in config_text(fixture_json("tiny-pipe/unet/config.json"))) {
        check_model_config::<UNet2DConditionConfig>(&text, |c, p| c.validate(p), |c| {
            for i in 0..c.block_out_channels.len() + 1 {
                let _ = c.heads(i);
            }
        })?;
    }

    #[test]
    fn vae_config_never_panics(text in config_text(fixture_json("tiny-pipe/vae/config.json"))) {
        check_model_config::<AutoencoderKLConfig>(&text, |c, p| c.validate(p), |c| {
            let _ = c.downscale_factor();
        })?;
    }

    #[test]
    fn clip_config_never_panics(
        text in config_text(fixture_json("tiny-pipe/text_encoder/config.json")),
    ) {
        check_model_config::<ClipTextConfig>(&text, |c, p| c.validate(p), |_| {})?;
    }
}

// ---------------------------------------------------------------------------------------------
// Scheduler config

const SCHEDULER_FIELDS: [&str; 35] = [
    "_class_name",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
    "set_alpha_to_one",
    "clip_sample",
    "clip_sample_range",
    "thresholding",
    "skip_prk_steps",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "sigma_min",
    "sigma_max",
    "final_sigmas_type",
    "interpolation_type",
    "timestep_type",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "use_lu_lambdas",
    "lambda_min_clipped",
    "variance_type",
    "original_inference_steps",
    "timestep_scaling",
    "dynamic_thresholding_ratio",
    "sample_max_value",
];

/// Values shaped like scheduler fields (valid enum names, booleans, small and huge numbers).
fn scheduler_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => select(vec![
            "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
            "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "LCMScheduler",
            "UniPCMultistepScheduler", "linear", "scaled_linear", "squaredcos_cap_v2",
            "epsilon", "v_prediction", "sample", "leading", "trailing", "linspace", "zero",
            "sigma_min", "dpmsolver++", "dpmsolver", "deis", "midpoint", "heun", "bh2",
            "discrete", "continuous", "log_linear", "fixed_small",
        ])
        .prop_map(Value::from),
        2 => any::<bool>().prop_map(Value::from),
        2 => (0u64..1100).prop_map(Value::from),
        1 => (1u64..40).prop_map(Value::from),
        1 => (-1.0f64..2.0).prop_map(|f| json!(f)),
        1 => (0.0f64..0.05).prop_map(|f| json!(f)),
        1 => prop_oneof![Just(json!(1e7)), Just(json!(1_000_000_000_000u64)), Just(json!(-1.0e300)), Just(json!(1.0e300))],
        1 => prop::collection::vec(-0.1f64..1.1, 0..12).prop_map(|v| json!(v)),
        1 => (2usize..40).prop_map(|n| json!(vec![0.01; n])),
        1 => json_leaf(),
    ]
}

fn scheduler_text() -> impl Strategy<Value = String> {
    let base = fixture_json("tiny-pipe/scheduler/scheduler_config.json");
    let key = prop_oneof![6 => select(SCHEDULER_FIELDS.to_vec()).prop_map(String::from), 1 => "[a-z_]{1,8}"];
    let edited = prop::collection::vec((key, scheduler_value(), prop::bool::weighted(0.15)), 0..7)
        .prop_map(move |edits| apply_edits(base.clone(), edits));
    prop_oneof![8 => jsonish(edited), 1 => jsonish(json_value()), 1 => any::<String>()]
}

/// Up to three steps of a built scheduler on a tiny sample: errors only, no panics.
fn exercise(s: &mut dyn stipple::schedulers::Scheduler) -> Result<(), TestCaseError> {
    let n = s.timesteps().len();
    prop_assert!(n >= 1, "{} built with no timesteps", s.class_name());
    prop_assert!(
        s.timesteps().iter().all(|t| t.is_finite()),
        "{} has non-finite timesteps {:?}",
        s.class_name(),
        s.timesteps()
    );
    let _ = s.init_noise_sigma();
    let mut sample = vec![0.25f32, -0.5, 1.0, 0.0, 2.0, -1.5, 0.125, 0.75];
    let output = vec![0.1f32; sample.len()];
    let noise = vec![-0.3f32; sample.len()];
    for i in 0..n.min(3) {
        let _ = s.step_coefficients(i);
        let scaled = s.scale_model_input(&sample, i);
        prop_assert!(scaled.is_ok(), "{:?}", scaled.err());
        let step_noise = s.needs_noise(i).then_some(noise.as_slice());
        match s.step(&output, i, &sample, step_noise) {
            Ok(next) => sample = next,
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
    if let Err(e) = s.add_noise(&sample, &noise, n - 1) {
        prop_assert!(!e.to_string().is_empty());
    }
    // Past the end: an error, not a panic.
    prop_assert!(s.scale_model_input(&sample, n).is_err());
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn scheduler_config_never_panics(
        text in scheduler_text(),
        steps in prop_oneof![4 => 0usize..60, 1 => 0usize..1200, 1 => Just(usize::MAX)],
        name in prop::option::of(prop_oneof![4 => select(SCHEDULER_NAMES.to_vec()), 1 => Just("plms")]),
    ) {
        check_scheduler_text(&text, steps, name)?;
    }
}

/// `SchedulerConfig::from_file` on `text`, the scheduler `name` (if any), `build(steps)`, and
/// `exercise`: errors only, naming the file where one is read.
fn check_scheduler_text(text: &str, steps: usize, name: Option<&str>) -> Result<(), TestCaseError> {
    let dir = Scratch::new("sched");
    let path = dir.write("scheduler_config.json", text);
    let config = match SchedulerConfig::from_file(&path) {
        Ok(c) => c,
        Err(e) => return check_error(&e, &path),
    };
    let config = match name.map(|n| config.with_name(n)).transpose() {
        Ok(c) => c.unwrap_or(config),
        Err(e) => {
            prop_assert!(e.to_string().contains("plms"), "{e}");
            return Ok(());
        }
    };
    match config.build(steps) {
        Ok(mut s) => exercise(s.as_mut())?,
        Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Python json's float literals

const PY_LITERALS: [&str; 3] = ["NaN", "Infinity", "-Infinity"];

/// `base` as Python's json writes it, with one to three fields (of `fields`, or new ones) set to
/// `NaN`, `Infinity` or `-Infinity`, as diffusers' configs can hold them.
fn with_python_literals(base: Value, fields: Vec<String>) -> impl Strategy<Value = String> {
    let key = prop_oneof![4 => select(fields), 1 => "[a-z_]{1,8}"];
    prop::collection::vec((key, select(PY_LITERALS.to_vec())), 1..4).prop_map(move |edits| {
        let mut object = base.clone();
        let map = object.as_object_mut().expect("a JSON object fixture");
        for (i, (key, _)) in edits.iter().enumerate() {
            map.insert(key.clone(), Value::from(format!("__py_literal_{i}__")));
        }
        let mut text = serde_json::to_string_pretty(&object).expect("serialise");
        for (i, (_, literal)) in edits.iter().enumerate() {
            text = text.replace(&format!("\"__py_literal_{i}__\""), literal);
        }
        text
    })
}

fn keys(base: &Value) -> Vec<String> {
    base.as_object().expect("object").keys().cloned().collect()
}

fn python_config_text(path: &str) -> impl Strategy<Value = String> {
    let base = fixture_json(path);
    let fields = keys(&base);
    with_python_literals(base, fields)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn python_literals_in_scheduler_config_never_panic(
        text in with_python_literals(
            fixture_json("tiny-pipe/scheduler/scheduler_config.json"),
            SCHEDULER_FIELDS.iter().map(|f| f.to_string()).collect(),
        ),
        steps in 1usize..30,
        name in prop::option::of(select(SCHEDULER_NAMES.to_vec())),
    ) {
        check_scheduler_text(&text, steps, name)?;
    }

    #[test]
    fn python_literals_in_model_configs_never_panic(
        unet in python_config_text("tiny-pipe/unet/config.json"),
        vae in python_config_text("tiny-pipe/vae/config.json"),
        clip in python_config_text("tiny-pipe/text_encoder/config.json"),
    ) {
        check_model_config::<UNet2DConditionConfig>(&unet, |c, p| c.validate(p), |_| {})?;
        check_model_config::<AutoencoderKLConfig>(&vae, |c, p| c.validate(p), |c| {
            assert_usable_scaling(c.scaling_factor);
        })?;
        check_model_config::<ClipTextConfig>(&clip, |c, p| c.validate(p), |_| {})?;
    }
}

/// A validated VAE config has a usable scaling factor.
fn assert_usable_scaling(x: f32) {
    assert!(x.is_finite() && x > 0.0, "validated scaling_factor {x}");
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

fn shipped_tokenizer() -> &'static ClipTokenizer {
    static T: OnceLock<ClipTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        ClipTokenizer::from_dir(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_tokenizer"),
        )
        .expect("shipped tokenizer")
    })
}

/// Pieces that stress normalisation, splitting and special-token matching.
const FRAGMENTS: [&str; 32] = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|endoftext",
    "|>",
    "</w>",
    " ",
    "\t\n  \r",
    "\u{00a0}",
    "\u{200b}",
    "\u{0301}",
    "e\u{0301}",
    "\u{fb01}",
    "\u{0130}",
    "\u{00df}",
    "\u{1f469}\u{200d}\u{1f469}\u{200d}\u{1f467}",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    "\0",
    "a",
    "cat",
    "'s",
    "'S",
    "123",
    "!!!",
    "\u{ff41}",
    "\u{65e5}\u{672c}",
    "\u{d55c}",
    "(masterpiece:1.2)",
    "[",
    "\u{10ffff}",
    "\u{e000}",
];

fn prompt() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(any::<char>(), 0..120).prop_map(String::from_iter),
        2 => prop::collection::vec(select(FRAGMENTS.to_vec()), 0..80).prop_map(|v| v.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..160)
            .prop_map(|b| String::from_utf8_lossy(&b).to_string()),
        1 => ("[a-z]{1,8}", 1usize..200).prop_map(|(w, n)| vec![w; n].join(" ")),
        1 => "\\PC{0,120}",
    ]
}

/// `ids` is one padded sequence: max_length ids, BOS first, EOS present, all in the vocabulary.
fn check_sequence(t: &ClipTokenizer, ids: &[u32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(ids.len(), t.max_length());
    prop_assert_eq!(ids[0], t.bos_id());
    prop_assert!(ids[1..].contains(&t.eos_id()), "no EOS in {ids:?}");
    // vocab_size() builds the whole vocabulary map: ask once.
    static VOCAB: OnceLock<u32> = OnceLock::new();
    let vocab = *VOCAB.get_or_init(|| t.vocab_size() as u32);
    prop_assert!(
        ids.iter().all(|&id| id < vocab),
        "id out of range in {ids:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn tokenizer_any_prompt_gives_77_ids(prompt in prompt()) {
        let t = shipped_tokenizer();
        prop_assert_eq!(t.max_length(), 77);
        let encoded = t.encode(&prompt).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_sequence(t, &encoded.ids)?;
        let chunks = t.encode_chunks(&prompt).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // encode keeps 75 tokens and counts the rest: the chunks hold all of them.
        let tokens = 75 + encoded.truncated;
        if encoded.truncated == 0 {
            prop_assert_eq!(chunks.len(), 1);
        } else {
            prop_assert_eq!(chunks.len(), tokens.div_ceil(75));
        }
        for chunk in &chunks {
            check_sequence(t, chunk)?;
        }
        prop_assert_eq!(&chunks[0], &encoded.ids);
        let _ = t.decode(&encoded.ids);
    }
}

/// Small tokenizer folders: a vocabulary over a few byte-level symbols, merges, configs.
fn tokenizer_files() -> impl Strategy<Value = (String, String, Option<String>)> {
    let token = prop_oneof![
        4 => "[abc]{1,3}(</w>)?",
        1 => select(vec!["<|startoftext|>", "<|endoftext|>", "!", "Ġ", "</w>", ""]).prop_map(String::from),
        1 => any::<String>(),
    ];
    let vocab =
        prop::collection::btree_map(token.clone(), prop_oneof![0u32..40, any::<u32>()], 0..24)
            .prop_map(|m| {
                let mut m: Map<String, Value> = m.into_iter().map(|(k, v)| (k, json!(v))).collect();
                // Mostly keep the special tokens so that loading gets past them.
                m.entry("<|startoftext|>").or_insert(json!(100));
                m.entry("<|endoftext|>").or_insert(json!(101));
                Value::Object(m)
            });
    let vocab_text = prop_oneof![5 => jsonish(vocab), 1 => jsonish(json_value())];
    let line = prop_oneof![
        6 => ("[abc]{1,2}", "[abc]{1,2}(</w>)?").prop_map(|(a, b)| format!("{a} {b}")),
        1 => "[abc <>/w]{0,8}",
        1 => Just("#version: 0.2".to_string()),
        1 => any::<String>(),
    ];
    let merges = prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"));
    let tok_config = prop::option::of(jsonish(prop_oneof![
        3 => (
            prop_oneof![
                select(vec!["<|endoftext|>", "!", "a", "zz"]).prop_map(Value::from),
                Just(json!({"content": "<|endoftext|>"})),
                json_leaf(),
            ],
            prop_oneof![(0u64..200).prop_map(Value::from), Just(json!(1e30)), json_leaf()],
        )
            .prop_map(|(pad, max)| json!({"pad_token": pad, "model_max_length": max})),
        1 => json_value(),
    ]));
    (vocab_text, merges, tok_config)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn tokenizer_files_never_panic(
        (vocab, merges, tok_config) in tokenizer_files(),
        prompt in prop_oneof!["[abc !]{0,40}", "\\PC{0,40}"],
    ) {
        let dir = Scratch::new("tok");
        dir.write("vocab.json", &vocab);
        dir.write("merges.txt", &merges);
        if let Some(c) = &tok_config {
            dir.write("tokenizer_config.json", c);
        }
        let t = match ClipTokenizer::from_dir(&dir.0) {
            Ok(t) => t,
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.trim().is_empty());
                prop_assert!(
                    ["vocab.json", "merges.txt", "tokenizer_config.json"].iter().any(|f| message.contains(f)),
                    "error names no tokenizer file: {message}"
                );
                return Ok(());
            }
        };
        // max_length may be set by tokenizer_config.json: every sequence has that length.
        match t.encode(&prompt) {
            Ok(encoded) => {
                prop_assert_eq!(encoded.ids.len(), t.max_length());
                prop_assert_eq!(encoded.ids[0], t.bos_id());
                prop_assert!(encoded.ids[1..].contains(&t.eos_id()));
            }
            Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
        }
        if let Ok(chunks) = t.encode_chunks(&prompt) {
            prop_assert!(!chunks.is_empty());
            for c in &chunks {
                prop_assert_eq!(c.len(), t.max_length());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regression inputs found by the fuzzers above (kept explicit so they run on every machine).

fn scheduler_file(dir: &Scratch, config: Value) -> SchedulerConfig {
    let path = dir.write("scheduler_config.json", config.to_string());
    SchedulerConfig::from_file(&path).expect("parses")
}

/// scheduler_config_never_panics: `num_train_timesteps: 1e12` aborted the whole process
/// ("memory allocation of 8000000000000 bytes failed") while building the beta schedule.
#[test]
fn regression_absurd_num_train_timesteps_is_an_error() {
    let dir = Scratch::new("regress");
    for class in [
        "DDIMScheduler",
        "PNDMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "LCMScheduler",
    ] {
        for n in [1_000_000_000_000u64, 100_001, 0, 1] {
            let config = scheduler_file(
                &dir,
                json!({"_class_name": class, "num_train_timesteps": n}),
            );
            let e = config.build(4).expect_err("absurd num_train_timesteps");
            let message = e.to_string();
            assert!(
                message.contains("num_train_timesteps") && message.contains(&n.to_string()),
                "{class}: {message}"
            );
        }
    }
}

/// beta_end ≥ 1 used to be reported as "betas: beta 1.0018… is outside [0, 1)", naming
/// neither the field nor the value the user wrote.
#[test]
fn regression_beta_range_names_the_field() {
    let dir = Scratch::new("regress");
    for (field, value) in [("beta_end", 1.5), ("beta_start", -0.1)] {
        let config = scheduler_file(
            &dir,
            json!({"_class_name": "EulerDiscreteScheduler", field: value}),
        );
        let message = config.build(4).expect_err("bad beta").to_string();
        assert!(
            message.contains(field) && message.contains(&value.to_string()),
            "{message}"
        );
    }
}

/// A value of the wrong type is reported with its field name, not only a line and column.
#[test]
fn regression_config_type_errors_name_the_field() {
    let dir = Scratch::new("regress");
    let path = dir.write(
        "config.json",
        "{\n  \"sample_size\": 8,\n  \"norm_num_groups\": \"four\"\n}",
    );
    let message = read_config::<UNet2DConditionConfig>(&path)
        .expect_err("string for usize")
        .to_string();
    assert!(
        message.contains("config.json") && message.contains("norm_num_groups"),
        "{message}"
    );
    let path = dir.write(
        "scheduler_config.json",
        "{\"timestep_spacing\": \"sometimes\"}",
    );
    let message = SchedulerConfig::from_file(&path)
        .expect_err("unknown spacing")
        .to_string();
    assert!(
        message.contains("scheduler_config.json") && message.contains("timestep_spacing"),
        "{message}"
    );
}
