//! CLIP tokenizer vs transformers' `CLIPTokenizer` on the shipped vocabulary
//! (`tests/fixtures/tokenizer/clip_ids.json`, written by `tools/golden/tokenizer_golden.py`),
//! plus long-prompt policy, config files and error cases. No GPU needed.

use std::path::{Path, PathBuf};

use stipple::tokenizer::{ClipTokenizer, DEFAULT_MAX_LENGTH};
use stipple::Error;

const BOS: u32 = 49406;
const EOS: u32 = 49407;

fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_tokenizer")
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_dir(vocab_dir()).expect("shipped tokenizer files load")
}

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    /// BOS + all tokens + EOS, untruncated.
    ids: Vec<u32>,
    /// transformers with padding="max_length", max_length=77, truncation=True.
    input_ids: Vec<u32>,
}

fn golden() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/clip_ids.json");
    let text = std::fs::read_to_string(&path).expect("golden file");
    serde_json::from_str::<Golden>(&text)
        .expect("golden JSON")
        .cases
}

/// A scratch folder under the target dir holding the shipped vocab files, for config tests.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stipple-tokenizer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_vocab(dir: &Path) {
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(vocab_dir().join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn shipped_vocabulary_has_clip_size() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (BOS, EOS, EOS));
    assert_eq!(tok.max_length(), DEFAULT_MAX_LENGTH);
    assert_eq!(tok.token_to_id("cat</w>"), Some(2368));
}

#[test]
fn a_photo_of_a_cat() {
    let ids = tokenizer().encode("a photo of a cat").unwrap();
    assert_eq!(&ids.ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids.ids[7..].iter().all(|&id| id == EOS));
    assert_eq!(ids.ids.len(), 77);
    assert_eq!(ids.truncated, 0);
}

#[test]
fn ids_match_transformers_goldens() {
    let tok = tokenizer();
    let cases = golden();
    assert!(cases.len() >= 25, "golden has {} prompts", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let tokens = tok.tokenize(&case.prompt).unwrap();
        let mut full = vec![BOS];
        full.extend(&tokens);
        full.push(EOS);
        if full != case.ids {
            failures.push(format!(
                "{:?}:\n  got      {full:?}\n  expected {:?}",
                case.prompt, case.ids
            ));
        }
        let encoded = tok.encode(&case.prompt).unwrap();
        if encoded.ids != case.input_ids {
            failures.push(format!(
                "{:?} (encode, 77):\n  got      {:?}\n  expected {:?}",
                case.prompt, encoded.ids, case.input_ids
            ));
        }
        assert_eq!(
            encoded.truncated,
            case.ids.len().saturating_sub(77),
            "{:?}",
            case.prompt
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn normalisation_cases() {
    let tok = tokenizer();
    let base = tok.tokenize("a photo of a cat").unwrap();
    for variant in [
        "A PHOTO OF A CAT",
        "  a   photo \t of\n a   cat  ",
        "a photo of a cat\n",
    ] {
        assert_eq!(tok.tokenize(variant).unwrap(), base, "{variant:?}");
    }
    assert!(tok.tokenize("").unwrap().is_empty());
    assert!(tok.tokenize(" \t\n ").unwrap().is_empty());
}

#[test]
fn decode_round_trips_lowercased_text() {
    let tok = tokenizer();
    let ids = tok.encode("A photo of a café, don't 1234!").unwrap();
    assert_eq!(
        tok.decode(&ids.ids).unwrap(),
        "a photo of a café , don 't 1 2 3 4 !"
    );
}

#[test]
fn encode_truncates_long_prompts_and_counts_the_rest() {
    let tok = tokenizer();
    let prompt = vec!["cat"; 100].join(" ");
    let ids = tok.encode(&prompt).unwrap();
    assert_eq!(ids.ids.len(), 77);
    assert_eq!(ids.truncated, 25);
    assert_eq!(ids.ids[0], BOS);
    assert!(ids.ids[1..76].iter().all(|&id| id == 2368));
    assert_eq!(ids.ids[76], EOS);

    // Exactly 75 tokens fit without truncation.
    assert_eq!(tok.encode(&vec!["cat"; 75].join(" ")).unwrap().truncated, 0);
    assert_eq!(tok.encode(&vec!["cat"; 76].join(" ")).unwrap().truncated, 1);
}

#[test]
fn encode_chunks_keeps_every_token() {
    let tok = tokenizer();
    for case in golden() {
        let content = &case.ids[1..case.ids.len() - 1];
        let chunks = tok.encode_chunks(&case.prompt).unwrap();
        assert_eq!(
            chunks.len(),
            content.len().div_ceil(75).max(1),
            "{:?}",
            case.prompt
        );
        for (chunk, expected) in chunks.iter().zip(content.chunks(75)) {
            // BOS, up to 75 tokens, EOS, then padding (EOS in SD1.x) up to 77.
            let mut wrapped = vec![BOS];
            wrapped.extend_from_slice(expected);
            wrapped.resize(77, EOS);
            assert_eq!(chunk, &wrapped, "{:?}", case.prompt);
        }
        // The first chunk is what `encode` gives.
        assert_eq!(chunks[0], tok.encode(&case.prompt).unwrap().ids);
    }
}

#[test]
fn encode_chunks_of_150_tokens_gives_two_full_chunks() {
    let tok = tokenizer();
    let chunks = tok.encode_chunks(&vec!["cat"; 150].join(" ")).unwrap();
    assert_eq!(chunks.len(), 2);
    for chunk in &chunks {
        assert_eq!((chunk[0], chunk[76]), (BOS, EOS));
        assert!(chunk[1..76].iter().all(|&id| id == 2368));
    }
    assert_eq!(
        tok.encode_chunks("").unwrap(),
        vec![[vec![BOS], vec![EOS; 76]].concat()]
    );
}

#[test]
fn pad_token_and_max_length_from_config() {
    // SD2.x tokenizers pad with "!" (id 0).
    let dir = temp_dir("sd2");
    copy_vocab(&dir);
    std::fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"bos_token": {"content": "<|startoftext|>"}, "pad_token": "!"}"#,
    )
    .unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.pad_id(), 0);
    let ids = tok.encode("a photo of a cat").unwrap().ids;
    assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids[7..].iter().all(|&id| id == 0));
    assert_eq!(ids.len(), 77);

    // pad_token as an AddedToken object, model_max_length from tokenizer_config.json;
    // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"pad_token": {"__type": "AddedToken", "content": "<|endoftext|>"}, "model_max_length": 16}"#,
    )
    .unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!((tok.pad_id(), tok.max_length()), (0, 16));
    let ids = tok.encode(&vec!["cat"; 20].join(" ")).unwrap();
    assert_eq!((ids.ids.len(), ids.truncated), (16, 6));

    std::fs::remove_file(dir.join("special_tokens_map.json")).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.pad_id(), EOS);

    // transformers' "no limit" sentinel (int(1e30)) means the default 77.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"model_max_length": 1000000000000000019884624838656}"#,
    )
    .unwrap();
    assert_eq!(ClipTokenizer::from_dir(&dir).unwrap().max_length(), 77);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shipped_config_is_sd1() {
    let tok = tokenizer();
    assert_eq!((tok.pad_id(), tok.max_length()), (EOS, 77));
}

fn load_error(dir: &Path) -> String {
    let err = ClipTokenizer::from_dir(dir).expect_err("loading should fail");
    err.to_string()
}

#[test]
fn missing_files_name_the_path() {
    let dir = temp_dir("missing");
    let msg = load_error(&dir);
    assert!(
        msg.contains(&dir.join("vocab.json").display().to_string()),
        "{msg}"
    );

    std::fs::copy(vocab_dir().join("vocab.json"), dir.join("vocab.json")).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&dir.join("merges.txt").display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_vocab_json_names_the_file() {
    let dir = temp_dir("bad-vocab");
    copy_vocab(&dir);
    std::fs::write(dir.join("vocab.json"), "{\"a\": 0, ").unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains(&dir.join("vocab.json").display().to_string()),
        "{msg}"
    );

    std::fs::write(dir.join("vocab.json"), r#"{"a": -1}"#).unwrap();
    assert!(load_error(&dir).contains("vocab.json"));

    // Valid JSON, but no special tokens.
    std::fs::write(dir.join("vocab.json"), r#"{"a": 0}"#).unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains("vocab.json") && msg.contains("<|startoftext|>"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_merges_line_names_file_and_line() {
    let dir = temp_dir("bad-merges");
    copy_vocab(&dir);
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    let mut lines: Vec<&str> = merges.lines().collect();
    lines[3] = "three parts here";
    std::fs::write(dir.join("merges.txt"), lines.join("\n")).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join("merges.txt").display().to_string()) && msg.contains("line 4"),
        "{msg}"
    );

    lines[3] = "zzzq qqqz";
    std::fs::write(dir.join("merges.txt"), lines.join("\n")).unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains("merges.txt") && msg.contains("line 4") && msg.contains("zzzq"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_config_names_the_file() {
    let dir = temp_dir("bad-config");
    copy_vocab(&dir);
    std::fs::write(dir.join("tokenizer_config.json"), "not json").unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains(&dir.join("tokenizer_config.json").display().to_string()),
        "{msg}"
    );

    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"pad_token": "<|nope|>"}"#,
    )
    .unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains("tokenizer_config.json") && msg.contains("<|nope|>"),
        "{msg}"
    );

    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"model_max_length": 2}"#,
    )
    .unwrap();
    assert!(load_error(&dir).contains("model_max_length"));
    std::fs::remove_dir_all(&dir).unwrap();
}
