//! Bad input never crashes stipple or leaves a partial output: every broken model folder,
//! config, weights file, tokenizer file and argument is built on the fly from the tiny-pipe
//! fixture in a temp dir, then fed to the CLI (`stipple generate`) or the library. Each case
//! asserts a non-zero exit (or `Err`), a message naming the offending file / tensor / field /
//! value / limit, no "panicked", and an output directory left empty.
//!
//! Cases that fail before the GPU is touched (arguments, output paths) run everywhere; the
//! others need an adapter (`common::gpu()`: skipped locally without one, required in CI).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use common::golden::fixture;
use common::{gpu, stipple};
use serde_json::{json, Map, Value};
use stipple::pipeline::{GenerateOptions, InitImage, Pipeline, Progress};
use stipple::weights::Weights;
use stipple::DType;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A scratch copy of tiny-pipe (`model/`) and an empty output directory (`out/`), removed on
/// drop.
struct Case {
    root: PathBuf,
    model: PathBuf,
    out_dir: PathBuf,
}

impl Case {
    fn new(name: &str) -> Case {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("stipple-bad-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let model = root.join("model");
        copy_dir(&fixture("tiny-pipe"), &model);
        let out_dir = root.join("out");
        std::fs::create_dir_all(&out_dir).expect("out dir");
        Case {
            root,
            model,
            out_dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.model.join(rel)
    }

    fn out(&self) -> String {
        self.out_dir.join("out.png").display().to_string()
    }

    /// Rewrites a JSON file of the model with `edit`.
    fn edit_json(&self, rel: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.path(rel);
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        edit(&mut v);
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.path(rel), bytes).expect("write");
    }

    fn remove(&self, rel: &str) {
        let p = self.path(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).expect("remove dir");
        } else {
            std::fs::remove_file(&p).expect("remove file");
        }
    }

    /// Files left in the output directory.
    fn leftovers(&self) -> Vec<String> {
        files_in(&self.out_dir)
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("golden") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The `error: …` lines of stderr (what the user reads), for the report and the asserts.
fn error_lines(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `stipple generate` on the case's model with `extra` arguments must fail naming every word
/// of `words`, and leave the output directory empty.
fn cli_fails(case: &Case, label: &str, extra: &[&str], words: &[&str]) {
    let model = case.model.display().to_string();
    let out = case.out();
    let mut args = vec!["generate", "an apple", "--seed", "1"];
    for (flag, value) in [("--steps", "2"), ("--dtype", "f32")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    if !extra.contains(&"-m") {
        args.extend(["-m", model.as_str()]);
    }
    if !extra.contains(&"-o") {
        args.extend(["-o", out.as_str()]);
    }
    args.extend(extra);
    let (ok, stderr) = stipple(&args);
    let message = error_lines(&stderr);
    eprintln!("[{label}] {message}");
    assert!(!ok, "{label}: should fail; stderr: {stderr}");
    assert!(
        !message.contains("cannot be used multiple times"),
        "{label}: a flag was given twice: {message}"
    );
    for w in words {
        assert!(
            message.contains(w),
            "{label}: message should name {w:?}: {message}"
        );
    }
    let left = case.leftovers();
    assert!(left.is_empty(), "{label}: left behind {left:?}");
}

/// A broken copy of tiny-pipe, made by `edit`, must fail the CLI naming `words`.
fn broken_model(label: &str, edit: impl FnOnce(&Case), words: &[&str]) {
    let case = Case::new(label);
    edit(&case);
    cli_fails(&case, label, &[], words);
}

// ---------------------------------------------------------------------------------------------
// Safetensors editing

/// (header entries, data section) of a safetensors file.
fn read_st(path: &Path) -> (Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let Value::Object(map) = header else {
        panic!("header is not an object")
    };
    (map, bytes[8 + n..].to_vec())
}

/// Writes a safetensors file from raw header text and data.
fn write_st_raw(path: &Path, header: &str, data: &[u8]) {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(data);
    std::fs::write(path, file).expect("write");
}

fn write_st(path: &Path, header: &Map<String, Value>, data: &[u8]) {
    write_st_raw(path, &Value::Object(header.clone()).to_string(), data);
}

const UNET_ST: &str = "unet/diffusion_pytorch_model.safetensors";
const UNET_FILE: &str = "diffusion_pytorch_model.safetensors";
/// A UNet tensor the loader reads (the first of the first attention block).
const TENSOR: &str = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";

/// Edits the UNet's safetensors header (and data) of `case`.
fn edit_unet_st(case: &Case, edit: impl FnOnce(&mut Map<String, Value>, &mut Vec<u8>)) {
    let path = case.path(UNET_ST);
    let (mut header, mut data) = read_st(&path);
    edit(&mut header, &mut data);
    write_st(&path, &header, &data);
}

fn offsets(entry: &Value) -> (u64, u64) {
    let o = &entry["data_offsets"];
    (o[0].as_u64().expect("begin"), o[1].as_u64().expect("end"))
}

// ---------------------------------------------------------------------------------------------
// 1. Model folder, model_index.json, component configs (CLI, needs an adapter)

#[test]
fn model_folder_errors_name_the_path() {
    if gpu().is_none() {
        return;
    }
    let case = Case::new("folder");
    let missing = case.root.join("no-such-model").display().to_string();
    cli_fails(
        &case,
        "model path missing",
        &["-m", &missing],
        &["no-such-model"],
    );
    let file = case.path("model_index.json").display().to_string();
    cli_fails(
        &case,
        "model path is a file",
        &["-m", &file],
        &["model_index.json", "not a folder"],
    );
    let empty = case.root.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let empty = empty.display().to_string();
    cli_fails(
        &case,
        "model folder without model_index.json",
        &["-m", &empty],
        &["model_index.json"],
    );

    broken_model(
        "component folder missing",
        |c| c.remove("unet"),
        &["\"unet\"", "missing"],
    );
    broken_model(
        "component missing from model_index.json",
        |c| {
            c.edit_json("model_index.json", |v| {
                v.as_object_mut().expect("object").remove("vae");
            })
        },
        &["model_index.json", "\"vae\""],
    );
    broken_model(
        "component without weights",
        |c| c.remove(UNET_ST),
        &["unet", UNET_FILE],
    );
    broken_model(
        "component config.json missing",
        |c| c.remove("vae/config.json"),
        &["vae/config.json"],
    );
    broken_model(
        "model_index.json invalid JSON",
        |c| c.write("model_index.json", "{\"unet\": [\"diffusers\", "),
        &["model_index.json"],
    );
    broken_model(
        "model_index.json not an object",
        |c| c.write("model_index.json", "[1, 2, 3]"),
        &["model_index.json"],
    );
}

#[test]
fn config_errors_name_the_file_and_field() {
    if gpu().is_none() {
        return;
    }
    broken_model(
        "unet config invalid JSON",
        |c| c.write("unet/config.json", "{\"in_channels\": 4,,}"),
        &["unet/config.json", "line 1"],
    );
    broken_model(
        "unet config field of the wrong type",
        |c| c.edit_json("unet/config.json", |v| v["in_channels"] = json!("four")),
        &["unet/config.json", "field in_channels", "\"four\""],
    );
    broken_model(
        "unet config negative field",
        |c| c.edit_json("unet/config.json", |v| v["layers_per_block"] = json!(-1)),
        &["unet/config.json", "field layers_per_block", "-1"],
    );
    broken_model(
        "unet config field missing",
        |c| {
            c.edit_json("unet/config.json", |v| {
                v.as_object_mut()
                    .expect("object")
                    .remove("block_out_channels");
            })
        },
        &["unet/config.json", "block_out_channels"],
    );
    broken_model(
        "unet config norm_num_groups 0",
        |c| c.edit_json("unet/config.json", |v| v["norm_num_groups"] = json!(0)),
        &["unet/config.json", "norm_num_groups"],
    );
    broken_model(
        "unet config unsupported block type",
        |c| {
            c.edit_json("unet/config.json", |v| {
                v["down_block_types"][1] = json!("AttnDownBlock2D")
            })
        },
        &["unet/config.json", "down_block_types[1]", "AttnDownBlock2D"],
    );
    broken_model(
        "vae config scaling_factor negative",
        |c| c.edit_json("vae/config.json", |v| v["scaling_factor"] = json!(-1.0)),
        &["vae/config.json", "scaling_factor"],
    );
    broken_model(
        "vae config act_fn unsupported",
        |c| c.edit_json("vae/config.json", |v| v["act_fn"] = json!("mish")),
        &["vae/config.json", "act_fn", "mish"],
    );
    broken_model(
        "text encoder config heads 0",
        |c| {
            c.edit_json("text_encoder/config.json", |v| {
                v["num_attention_heads"] = json!(0)
            })
        },
        &["text_encoder/config.json", "num_attention_heads"],
    );
    broken_model(
        "text encoder config hidden_size missing (default 512 ≠ weights)",
        |c| {
            c.edit_json("text_encoder/config.json", |v| {
                v.as_object_mut().expect("object").remove("hidden_size");
            })
        },
        &["model.safetensors", "token_embedding.weight", "512"],
    );
    broken_model(
        "text encoder config hidden_act unsupported",
        |c| {
            c.edit_json("text_encoder/config.json", |v| {
                v["hidden_act"] = json!("swish2")
            })
        },
        &["text_encoder/config.json", "hidden_act", "swish2"],
    );
}

#[test]
fn scheduler_config_errors_name_the_field() {
    if gpu().is_none() {
        return;
    }
    const S: &str = "scheduler/scheduler_config.json";
    broken_model(
        "scheduler config invalid JSON",
        |c| c.write(S, "{\"beta_end\": 0.012"),
        &["scheduler_config.json"],
    );
    broken_model(
        "scheduler num_train_timesteps 0",
        |c| c.edit_json(S, |v| v["num_train_timesteps"] = json!(0)),
        &["num_train_timesteps", "0"],
    );
    broken_model(
        "scheduler num_train_timesteps absurd",
        |c| {
            c.edit_json(S, |v| {
                v["num_train_timesteps"] = json!(1_000_000_000_000u64)
            })
        },
        &["num_train_timesteps", "1000000000000"],
    );
    broken_model(
        "scheduler beta_end out of range",
        |c| c.edit_json(S, |v| v["beta_end"] = json!(1.5)),
        &["beta_end", "1.5"],
    );
    broken_model(
        "scheduler prediction_type unknown",
        |c| c.edit_json(S, |v| v["prediction_type"] = json!("x0")),
        &["scheduler_config.json", "field prediction_type", "x0"],
    );
    broken_model(
        "scheduler steps_offset negative",
        |c| c.edit_json(S, |v| v["steps_offset"] = json!(-1)),
        &["scheduler_config.json", "field steps_offset", "-1"],
    );
    broken_model(
        "scheduler class unsupported",
        |c| c.edit_json(S, |v| v["_class_name"] = json!("UniPCMultistepScheduler")),
        &["UniPCMultistepScheduler"],
    );
    broken_model(
        "scheduler trained_betas of the wrong length",
        |c| c.edit_json(S, |v| v["trained_betas"] = json!([0.001, 0.002])),
        &["trained_betas", "2 values"],
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Safetensors files (library: no GPU; CLI: needs an adapter)

/// Every safetensors defect, as (label, edit of the UNet file, words).
type StEdit = Box<dyn Fn(&Path)>;

fn safetensors_defects() -> Vec<(&'static str, StEdit, Vec<&'static str>)> {
    let edit = |f: fn(&mut Map<String, Value>, &mut Vec<u8>)| -> StEdit {
        Box::new(move |path: &Path| {
            let (mut h, mut d) = read_st(path);
            f(&mut h, &mut d);
            write_st(path, &h, &d);
        })
    };
    vec![
        (
            "truncated in the data",
            Box::new(|p: &Path| {
                let bytes = std::fs::read(p).expect("read");
                std::fs::write(p, &bytes[..bytes.len() / 2]).expect("write");
            }),
            vec![UNET_FILE, "data_offsets", "truncated"],
        ),
        (
            "shorter than the header length field",
            Box::new(|p: &Path| std::fs::write(p, [1u8, 0, 0]).expect("write")),
            vec![UNET_FILE, "3 bytes"],
        ),
        (
            "empty file",
            Box::new(|p: &Path| std::fs::write(p, []).expect("write")),
            vec![UNET_FILE, "0 bytes"],
        ),
        (
            "header length larger than the file",
            Box::new(|p: &Path| {
                let mut bytes = std::fs::read(p).expect("read");
                bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                std::fs::write(p, bytes).expect("write");
            }),
            vec![UNET_FILE, "header length 1099511627776"],
        ),
        (
            "header is not JSON",
            Box::new(|p: &Path| {
                let (_, d) = read_st(p);
                write_st_raw(p, "{\"a\": {\"dtype\": \"F32\",", &d);
            }),
            vec![UNET_FILE, "not a valid JSON object"],
        ),
        (
            "header is not UTF-8",
            Box::new(|p: &Path| {
                let mut bytes = std::fs::read(p).expect("read");
                bytes[9] = 0xff;
                std::fs::write(p, bytes).expect("write");
            }),
            vec![UNET_FILE, "UTF-8"],
        ),
        (
            "header is a JSON array",
            Box::new(|p: &Path| {
                let (_, d) = read_st(p);
                write_st_raw(p, "[]", &d);
            }),
            vec![UNET_FILE, "JSON object"],
        ),
        (
            "duplicate tensor name",
            Box::new(|p: &Path| {
                let (h, d) = read_st(p);
                let text = Value::Object(h.clone()).to_string();
                let dup = format!(",\"{TENSOR}\":{}}}", h[TENSOR]);
                write_st_raw(p, &format!("{}{dup}", &text[..text.len() - 1]), &d);
            }),
            vec![UNET_FILE, "duplicate", TENSOR],
        ),
        (
            "offsets outside the data",
            edit(|h, d| {
                let (b, e) = offsets(&h[TENSOR]);
                let len = d.len() as u64;
                h[TENSOR]["data_offsets"] = json!([len + b, len + e]);
            }),
            vec![UNET_FILE, TENSOR, "data_offsets", "past the end"],
        ),
        (
            "offsets begin after end",
            edit(|h, _| {
                let (b, e) = offsets(&h[TENSOR]);
                h[TENSOR]["data_offsets"] = json!([e, b]);
            }),
            vec![UNET_FILE, TENSOR, "begin is after end"],
        ),
        (
            "offsets of the wrong size",
            edit(|h, _| {
                let (b, e) = offsets(&h[TENSOR]);
                h[TENSOR]["data_offsets"] = json!([b, e - 4]);
            }),
            vec![UNET_FILE, TENSOR, "data_offsets"],
        ),
        (
            "overlapping tensors",
            edit(|h, _| {
                // Another tensor of the same size moved onto TENSOR's bytes.
                let (b, e) = offsets(&h[TENSOR]);
                let other = h
                    .iter()
                    .find(|(n, v)| {
                        *n != TENSOR && *n != "__metadata__" && {
                            let (ob, oe) = offsets(v);
                            oe - ob == e - b
                        }
                    })
                    .map(|(n, _)| n.clone())
                    .expect("a tensor of the same size");
                h[&other]["data_offsets"] = json!([b, e]);
            }),
            vec![UNET_FILE, "overlap", TENSOR],
        ),
        (
            "unknown dtype",
            edit(|h, _| h[TENSOR]["dtype"] = json!("F12")),
            vec![UNET_FILE, TENSOR, "unknown dtype", "F12"],
        ),
        (
            "negative shape",
            edit(|h, _| h[TENSOR]["shape"] = json!([-16, 32])),
            vec![UNET_FILE, TENSOR, "shape"],
        ),
        (
            "metadata not strings",
            edit(|h, _| {
                h.insert("__metadata__".into(), json!({"format": 1}));
            }),
            vec![UNET_FILE, "__metadata__", "format"],
        ),
    ]
}

#[test]
fn safetensors_defects_are_errors_naming_the_file_and_tensor() {
    for (label, edit, words) in safetensors_defects() {
        let case = Case::new("st-lib");
        let path = case.path(UNET_ST);
        edit(&path);
        let e = Weights::open(&path).expect_err(label).to_string();
        eprintln!("[safetensors: {label}] {e}");
        for w in &words {
            assert!(e.contains(w), "{label}: message should name {w:?}: {e}");
        }
        // Through the folder, as the pipeline opens it.
        let e = Weights::open(case.path("unet"))
            .expect_err(label)
            .to_string();
        assert!(e.contains(UNET_FILE), "{label}: {e}");
    }
}

#[test]
fn safetensors_defects_fail_the_cli() {
    if gpu().is_none() {
        return;
    }
    for (label, edit, words) in safetensors_defects() {
        let case = Case::new("st-cli");
        edit(&case.path(UNET_ST));
        cli_fails(&case, &format!("safetensors: {label}"), &[], &words);
    }
}

#[test]
fn tensor_errors_name_the_tensor() {
    if gpu().is_none() {
        return;
    }
    broken_model(
        "tensor missing",
        |c| {
            edit_unet_st(c, |h, _| {
                h.remove(TENSOR);
            })
        },
        &[UNET_FILE, TENSOR, "not found"],
    );
    broken_model(
        "tensor renamed (near miss suggested)",
        |c| {
            edit_unet_st(c, |h, _| {
                let v = h.remove(TENSOR).expect("tensor");
                h.insert(TENSOR.replace("to_k", "to_kk"), v);
            })
        },
        &[UNET_FILE, TENSOR, "did you mean"],
    );
    broken_model(
        "tensor of the wrong shape",
        |c| edit_unet_st(c, |h, _| h[TENSOR]["shape"] = json!([8, 32])),
        &[UNET_FILE, TENSOR, "expected shape [16, 16]", "[8, 32]"],
    );
    broken_model(
        "tensor of an unconvertible dtype",
        |c| edit_unet_st(c, |h, _| h[TENSOR]["dtype"] = json!("I16")),
        &[UNET_FILE, TENSOR, "dtype I16 cannot be converted"],
    );
    broken_model(
        "tensor of a dtype with another size",
        |c| edit_unet_st(c, |h, _| h[TENSOR]["dtype"] = json!("F64")),
        &[UNET_FILE, TENSOR, "F64"],
    );
    broken_model(
        "extra tensor",
        |c| {
            edit_unet_st(c, |h, d| {
                let n = d.len();
                d.extend_from_slice(&[0; 8]);
                h.insert(
                    "mid_block.extra.weight".into(),
                    json!({"dtype": "F32", "shape": [2], "data_offsets": [n, n + 8]}),
                );
            })
        },
        &[UNET_FILE, "mid_block.extra.weight", "never used"],
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Tokenizer files (CLI, needs an adapter)

#[test]
fn tokenizer_file_errors_name_the_file() {
    if gpu().is_none() {
        return;
    }
    broken_model(
        "vocab.json missing",
        |c| c.remove("tokenizer/vocab.json"),
        &["tokenizer/vocab.json"],
    );
    broken_model(
        "merges.txt missing",
        |c| c.remove("tokenizer/merges.txt"),
        &["tokenizer/merges.txt"],
    );
    broken_model(
        "vocab.json invalid JSON",
        |c| c.write("tokenizer/vocab.json", "{\"a\": 1,"),
        &["vocab.json", "JSON"],
    );
    broken_model(
        "vocab.json empty object",
        |c| c.write("tokenizer/vocab.json", "{}"),
        &["vocab.json", "empty"],
    );
    broken_model(
        "vocab.json without <|endoftext|>",
        |c| {
            c.edit_json("tokenizer/vocab.json", |v| {
                v.as_object_mut().expect("object").remove("<|endoftext|>");
            })
        },
        &["vocab.json", "<|endoftext|>"],
    );
    broken_model(
        "merges.txt malformed line",
        |c| {
            let path = c.path("tokenizer/merges.txt");
            let text = std::fs::read_to_string(&path).expect("read");
            let mut lines: Vec<&str> = text.lines().collect();
            lines[2] = "a b c";
            std::fs::write(&path, lines.join("\n")).expect("write");
        },
        &["merges.txt", "line 3"],
    );
    broken_model(
        "merges.txt token not in vocab",
        |c| {
            let path = c.path("tokenizer/merges.txt");
            let text = std::fs::read_to_string(&path).expect("read");
            std::fs::write(&path, text.replacen('\n', "\nqqqq zzzz\n", 1)).expect("write");
        },
        &["merges.txt", "line 2", "qqqq"],
    );
    broken_model(
        "tokenizer_config.json invalid JSON",
        |c| c.write("tokenizer/tokenizer_config.json", "{"),
        &["tokenizer_config.json"],
    );
    broken_model(
        "pad_token not in the vocabulary",
        |c| {
            c.edit_json("tokenizer/special_tokens_map.json", |v| {
                v["pad_token"] = json!("<|pad|>")
            })
        },
        &["special_tokens_map.json", "pad_token", "<|pad|>"],
    );
    broken_model(
        "model_max_length too small",
        |c| {
            c.edit_json("tokenizer/tokenizer_config.json", |v| {
                v["model_max_length"] = json!(2)
            })
        },
        &["tokenizer_config.json", "model_max_length"],
    );
    broken_model(
        "model_max_length longer than the text encoder's positions",
        |c| {
            c.edit_json("tokenizer/tokenizer_config.json", |v| {
                v["model_max_length"] = json!(100)
            })
        },
        &[
            "tokenizer",
            "model_max_length",
            "100",
            "max_position_embeddings",
            "77",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Arguments checked before the GPU (run everywhere)

/// An 8-bit RGB PNG of `w`×`h` in `dir`.
fn png(dir: &Path, name: &str, w: u32, h: u32) -> String {
    let path = dir.join(name);
    let rgb = vec![128u8; (w * h * 3) as usize];
    stipple::image_io::write_png(&path, w, h, &rgb, None).expect("png");
    path.display().to_string()
}

fn latents(dir: &Path, name: &str, tensor: &str, shape: &[usize]) -> String {
    let path = dir.join(name);
    let n = shape.iter().product::<usize>();
    stipple::image_io::write_tensor_safetensors(&path, tensor, shape, &vec![0.1; n])
        .expect("latents");
    path.display().to_string()
}

#[test]
fn argument_errors_before_the_gpu() {
    let case = Case::new("args");
    let inputs = case.root.join("inputs");
    std::fs::create_dir_all(&inputs).expect("mkdir");
    let init = png(&inputs, "init.png", 16, 16);
    let garbage = inputs.join("garbage.png");
    std::fs::write(&garbage, b"not a png at all").expect("write");
    let garbage = garbage.display().to_string();
    let lat_3d = latents(&inputs, "l3.safetensors", "latents", &[4, 8, 8]);
    let lat_b2 = latents(&inputs, "lb2.safetensors", "latents", &[2, 4, 8, 8]);
    let lat_name = latents(&inputs, "lname.safetensors", "noise", &[1, 4, 8, 8]);
    let lat_i32 = inputs.join("li32.safetensors");
    write_st_raw(
        &lat_i32,
        &json!({"latents": {"dtype": "I32", "shape": [1, 4, 8, 8], "data_offsets": [0, 1024]}})
            .to_string(),
        &[0u8; 1024],
    );
    let lat_i32 = lat_i32.display().to_string();
    let missing = inputs.join("missing.png").display().to_string();

    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        ("steps 0", vec!["--steps", "0"], vec!["steps", "0"]),
        (
            "steps absurd",
            vec!["--steps", "1000000"],
            vec!["steps", "1000000"],
        ),
        (
            "guidance NaN",
            vec!["--cfg", "NaN"],
            vec!["guidance", "NaN"],
        ),
        (
            "guidance inf",
            vec!["--cfg", "inf"],
            vec!["guidance", "inf"],
        ),
        (
            "guidance negative",
            vec!["--cfg", "-2"],
            vec!["guidance", "-2"],
        ),
        ("batch 0", vec!["--batch", "0"], vec!["batch"]),
        (
            "strength above 1",
            vec!["--init-image", &init, "--strength", "1.5"],
            vec!["strength", "1.5"],
        ),
        (
            "strength negative",
            vec!["--init-image", &init, "--strength", "-0.25"],
            vec!["strength", "-0.25"],
        ),
        (
            "strength NaN",
            vec!["--init-image", &init, "--strength", "NaN"],
            vec!["strength", "NaN"],
        ),
        (
            "init image missing",
            vec!["--init-image", &missing],
            vec!["missing.png"],
        ),
        (
            "init image not an image",
            vec!["--init-image", &garbage],
            vec!["garbage.png", "decode"],
        ),
        (
            "latents 3-D",
            vec!["--latents", &lat_3d],
            vec!["l3.safetensors", "latents", "[4, 8, 8]"],
        ),
        (
            "latents of another batch",
            vec!["--latents", &lat_b2],
            vec!["--latents", "batch of 2", "--batch is 1"],
        ),
        (
            "latents tensor missing",
            vec!["--latents", &lat_name],
            vec!["lname.safetensors", "latents", "not found"],
        ),
        (
            "latents of dtype I32",
            vec!["--latents", &lat_i32],
            vec!["li32.safetensors", "latents", "I32"],
        ),
        (
            "latents not safetensors",
            vec!["--latents", &init],
            vec!["init.png"],
        ),
        ("unknown dtype", vec!["--dtype", "f8"], vec!["f8"]),
    ];
    for (label, extra, words) in cases {
        cli_fails(&case, label, &extra, &words);
    }
}

#[test]
fn output_path_errors_come_before_any_gpu_work() {
    let case = Case::new("output");
    let file = case.root.join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let under_file = file.join("out.png").display().to_string();
    let missing_dir = case.root.join("no-such-dir/out.png").display().to_string();
    let is_dir = case.out_dir.display().to_string();
    // /proc refuses new files even for root (permission bits do not stop root).
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "output directory missing",
            vec!["-o", &missing_dir],
            vec!["no-such-dir", "does not exist"],
        ),
        (
            "output directory is a file",
            vec!["-o", &under_file],
            vec!["a-file", "not a directory"],
        ),
        (
            "output directory not writable",
            vec!["-o", "/proc/out.png"],
            vec!["/proc", "not writable"],
        ),
        (
            "output is a directory",
            vec!["-o", &is_dir],
            vec!["is a directory"],
        ),
        (
            "save-tensor directory missing",
            vec!["--save-tensor", &missing_dir],
            vec!["no-such-dir", "does not exist"],
        ),
    ];
    for (label, extra, words) in cases {
        // An unknown backend makes any GPU work fail with its own message: the output error
        // must come first.
        let mut args = vec!["--backend", "nosuch"];
        args.extend(extra);
        cli_fails(&case, label, &args, &words);
    }
    // Image 2 of a batch cannot be written: nothing is generated, image 1 is not written.
    let batch = Case::new("output-batch");
    std::fs::create_dir_all(batch.out_dir.join("out-2.png")).expect("mkdir");
    let model = batch.model.display().to_string();
    let out = batch.out();
    let (ok, stderr) = stipple(&[
        "--backend",
        "nosuch",
        "generate",
        "an apple",
        "-m",
        &model,
        "--batch",
        "2",
        "-o",
        &out,
    ]);
    eprintln!(
        "[batch output out-2.png is a directory] {}",
        error_lines(&stderr)
    );
    assert!(
        !ok && stderr.contains("out-2.png") && stderr.contains("is a directory"),
        "{stderr}"
    );
    assert_eq!(files_in(&batch.out_dir), vec!["out-2.png".to_string()]);
}

// ---------------------------------------------------------------------------------------------
// 1. Arguments checked against the model (CLI, needs an adapter)

#[test]
fn argument_errors_against_the_model() {
    if gpu().is_none() {
        return;
    }
    let case = Case::new("args-model");
    let inputs = case.root.join("inputs");
    std::fs::create_dir_all(&inputs).expect("mkdir");
    let small = png(&inputs, "small.png", 8, 8);
    let init = png(&inputs, "init.png", 16, 16);
    let lat_c3 = latents(&inputs, "lc3.safetensors", "latents", &[1, 3, 8, 8]);
    let lat_odd = latents(&inputs, "lodd.safetensors", "latents", &[1, 4, 8, 8]);
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "width not a multiple of the VAE factor",
            vec!["-W", "22", "-H", "16"],
            vec!["width", "22", "multiple of 4"],
        ),
        (
            "height not a multiple",
            vec!["-W", "16", "-H", "17"],
            vec!["height", "17"],
        ),
        (
            "steps beyond the schedule",
            vec!["--steps", "1000", "--scheduler", "lcm"],
            vec!["steps", "1000"],
        ),
        (
            "scheduler unknown",
            vec!["--scheduler", "plms"],
            vec!["plms"],
        ),
        (
            "init image of another size",
            vec!["--init-image", &small],
            vec!["init image", "8×8", "16×16"],
        ),
        (
            "strength 0 leaves no step",
            vec!["--init-image", &init, "--strength", "0"],
            vec!["strength", "0"],
        ),
        (
            "latents with 3 channels",
            vec!["--latents", &lat_c3],
            vec!["latents", "[1, 4, 8, 8]"],
        ),
        (
            "latents of another size than -W/-H",
            vec!["--latents", &lat_odd, "-W", "24", "-H", "16"],
            vec!["latents", "[1, 4, 8, 12]"],
        ),
    ];
    for (label, extra, words) in cases {
        cli_fails(&case, label, &extra, &words);
    }
}

#[test]
fn size_beyond_the_adapter_limits() {
    let Some(gpu) = gpu() else {
        return;
    };
    // tiny-pipe's UNet holds (2 × h × w × ≥48) f32 activations at the latent size (CFG batch,
    // up-block concat): pick a latent side whose activations are twice the binding limit.
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size) as f64;
    let side = ((2.0 * limit / 384.0).sqrt().ceil() as usize).next_multiple_of(2);
    if side > 4096 {
        eprintln!("skipping: this adapter's limits need a {side}² latent (too much host memory)");
        return;
    }
    let size = (2 * side).to_string(); // VAE factor 2
    let case = Case::new("limits");
    cli_fails(
        &case,
        "size beyond the adapter's limits",
        &["-W", &size, "-H", &size],
        &["this adapter", "max_", "a size up to"],
    );
}

// ---------------------------------------------------------------------------------------------
// 1. + 2. The library: Err values naming what is wrong; cancel leaves nothing

#[test]
fn library_load_errors() {
    let Some(gpu) = gpu() else {
        return;
    };
    let case = Case::new("lib-load");
    let missing = case.root.join("no-such-model");
    let e = Pipeline::load(&gpu, &missing, Some(DType::F32))
        .err()
        .expect("missing folder")
        .to_string();
    assert!(e.contains("no-such-model"), "{e}");
    case.remove("text_encoder");
    let e = Pipeline::load(&gpu, &case.model, Some(DType::F32))
        .err()
        .expect("missing component")
        .to_string();
    assert!(e.contains("text_encoder"), "{e}");
}

#[test]
fn library_generate_errors() {
    let Some(gpu) = gpu() else {
        return;
    };
    let mut pipeline = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load");
    let base = GenerateOptions {
        prompt: "an apple".into(),
        steps: 2,
        ..Default::default()
    };
    let init = |w: usize, h: usize, strength: f32| InitImage {
        width: w,
        height: h,
        pixels: vec![0.0; w * h * 3],
        strength,
    };
    let cases: Vec<(&str, GenerateOptions, Vec<&str>)> = vec![
        (
            "steps 0",
            GenerateOptions {
                steps: 0,
                ..base.clone()
            },
            vec!["steps"],
        ),
        (
            "steps absurd",
            GenerateOptions {
                steps: usize::MAX,
                ..base.clone()
            },
            vec!["steps"],
        ),
        (
            "guidance NaN",
            GenerateOptions {
                guidance_scale: f32::NAN,
                ..base.clone()
            },
            vec!["guidance"],
        ),
        (
            "guidance -inf",
            GenerateOptions {
                guidance_scale: f32::NEG_INFINITY,
                ..base.clone()
            },
            vec!["guidance"],
        ),
        (
            "batch 0",
            GenerateOptions {
                batch: 0,
                ..base.clone()
            },
            vec!["batch"],
        ),
        (
            "width not a multiple",
            GenerateOptions {
                width: 18,
                ..base.clone()
            },
            vec!["width", "18"],
        ),
        (
            "latents of the wrong length",
            GenerateOptions {
                latents: Some(vec![0.0; 7]),
                ..base.clone()
            },
            vec!["latents", "7 values"],
        ),
        (
            "init image of another size",
            GenerateOptions {
                init_image: Some(init(8, 8, 0.5)),
                ..base.clone()
            },
            vec!["init image", "8×8"],
        ),
        (
            "init image pixels of the wrong length",
            GenerateOptions {
                init_image: Some(InitImage {
                    pixels: vec![0.0; 5],
                    ..init(16, 16, 0.5)
                }),
                ..base.clone()
            },
            vec!["init image", "5 values", "16×16"],
        ),
        (
            "strength NaN",
            GenerateOptions {
                init_image: Some(init(16, 16, f32::NAN)),
                ..base.clone()
            },
            vec!["strength"],
        ),
        (
            "unknown scheduler",
            GenerateOptions {
                scheduler: Some("plms".into()),
                ..base.clone()
            },
            vec!["plms"],
        ),
    ];
    for (label, options, words) in cases {
        let e = pipeline
            .generate(&options, |_, _| Progress::Continue)
            .err()
            .unwrap_or_else(|| panic!("{label}: should fail"))
            .to_string();
        eprintln!("[library: {label}] {e}");
        for w in words {
            assert!(e.contains(w), "{label}: message should name {w:?}: {e}");
        }
    }
    // Cancel after the first step: Err(Cancelled), and the pipeline still works afterwards.
    let mut calls = 0;
    let e = pipeline
        .generate(&base, |_, _| {
            calls += 1;
            Progress::Cancel
        })
        .expect_err("cancelled");
    assert!(matches!(e, stipple::Error::Cancelled), "{e}");
    assert_eq!(calls, 1);
    pipeline
        .generate(&base, |_, _| Progress::Continue)
        .expect("a run after a cancel");
}

#[test]
fn ctrl_c_writes_nothing() {
    if gpu().is_none() {
        return;
    }
    let case = Case::new("ctrlc");
    let out = case.out();
    let tensor = case.out_dir.join("t.safetensors").display().to_string();
    let model = case.model.display().to_string();
    // Long enough (1000 steps) that it is still denoising when interrupted.
    let mut child = Command::new(env!("CARGO_BIN_EXE_stipple"))
        .args([
            "generate",
            "an apple",
            "-m",
            &model,
            "--steps",
            "1000",
            "--dtype",
            "f32",
            "-W",
            "64",
            "-H",
            "64",
            "-o",
            &out,
            "--save-tensor",
            &tensor,
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut reader = BufReader::new(stderr);
    let mut text = String::new();
    // The "seed …" line is printed once the model is loaded, right before denoising.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read stderr") == 0 {
            break;
        }
        text += &line;
        if line.starts_with("seed ") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("read stderr");
    text += &rest;
    let status = child.wait().expect("wait");
    eprintln!("[ctrl-c] {}", error_lines(&text));
    assert!(!text.contains("panicked"), "{text}");
    assert!(!status.success(), "should not succeed: {text}");
    assert!(text.contains("interrupted"), "{text}");
    let left = case.leftovers();
    assert!(left.is_empty(), "left behind {left:?}");
}
