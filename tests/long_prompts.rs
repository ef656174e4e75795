//! Long prompts and emphasis through the pipeline's text conditioning (A1111's way, see
//! docs/prompts.md), on the tiny models:
//! - a prompt over 75 tokens encodes to 154 context rows whose chunks equal the text encoder run
//!   on each 75-token piece alone (reference: the encoder graph on hand-split ids, which does
//!   not use the chunking code); the negative prompt is padded with an empty-prompt chunk;
//! - a weighted prompt equals the unweighted one scaled token-wise and mean-restored, computed
//!   here from the unweighted output;
//! - plain prompts give bit-identical conditioning with and without chunking/emphasis;
//! - SDXL: both encoders chunked, pooled `text_embeds` from the first chunk;
//! - generation and the server's txt2img run with a long weighted prompt.
//!
//! Tolerance: 1e-5 absolute on f32 hidden states (the reference runs at a different batch size).

mod common;

use common::golden::fixture;
use common::server::{decode_png_base64, Client, ServerProcess};
use common::*;
use serde_json::json;
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::{DType, Plan};

const TOL: f32 = 1e-5;

fn load(model: &str) -> Option<Pipeline> {
    let gpu = gpu()?;
    Some(Pipeline::load(&gpu, &fixture(model), Some(DType::F32)).expect("load pipeline"))
}

/// 90 one-token words (> 75): "cat", "dog", … cycled.
fn long_prompt() -> String {
    let words = ["cat", "dog", "red", "apple", "table", "tree"];
    (0..90)
        .map(|i| words[i % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn options(prompt: &str) -> GenerateOptions {
    GenerateOptions {
        prompt: prompt.into(),
        negative_prompt: "blurry".into(),
        width: 24,
        height: 16,
        steps: 2,
        ..Default::default()
    }
}

/// `last_hidden_state` of the pipeline's text encoder for one row of 77 ids.
fn encoder_alone(pipe: &Pipeline, ids: &[u32]) -> Vec<f32> {
    let enc = &pipe.text_encoder;
    let plan = Plan::new(&pipe.gpu, enc.graph(DType::F32, 1, false).unwrap()).unwrap();
    plan.write_input("inputs_embeds", &enc.embed_tokens(ids).unwrap())
        .unwrap();
    plan.run().unwrap();
    plan.read_output("last_hidden_state").unwrap() // (77, D)
}

#[test]
fn long_prompt_chunks_equal_the_encoder_on_each_piece() {
    let Some(mut pipe) = load("tiny-pipe") else {
        return;
    };
    let prompt = long_prompt();
    let tok = &pipe.tokenizer;
    let tokens = tok.tokenize(&prompt).unwrap();
    assert_eq!(tokens.len(), 90);
    let (bos, eos) = (tok.bos_id(), tok.eos_id());
    let mut first = vec![bos];
    first.extend_from_slice(&tokens[..75]);
    first.push(eos);
    let mut second = vec![bos];
    second.extend_from_slice(&tokens[75..]);
    second.push(eos);
    second.resize(77, tok.pad_id());
    let negative = tok.encode("blurry").unwrap().ids;
    let empty = tok.encode("").unwrap().ids;

    let cond = pipe.encode_text(&options(&prompt)).unwrap();
    let d = pipe.text_encoder.config.hidden_size;
    assert_eq!(cond.context_len, 154);
    assert_eq!(cond.context.len(), 2 * 154 * d); // [negative, prompt]
    assert_eq!(cond.truncated_tokens, 0);
    let row = 77 * d;
    let want = [
        encoder_alone(&pipe, &negative),
        encoder_alone(&pipe, &empty),
        encoder_alone(&pipe, &first),
        encoder_alone(&pipe, &second),
    ]
    .concat();
    for (k, what) in ["negative", "negative padding", "chunk 1", "chunk 2"]
        .iter()
        .enumerate()
    {
        let got = &cond.context[k * row..(k + 1) * row];
        assert_close(what, got, &want[k * row..(k + 1) * row], TOL, 0.0);
    }

    // --no-chunking: diffusers' truncation, one chunk, the dropped tokens reported.
    let truncated = pipe
        .encode_text(&GenerateOptions {
            no_chunking: true,
            ..options(&prompt)
        })
        .unwrap();
    assert_eq!(
        (truncated.context_len, truncated.truncated_tokens),
        (77, 15)
    );
    assert_close(
        "no-chunking prompt",
        &truncated.context[row..],
        &want[2 * row..3 * row],
        TOL,
        0.0,
    );

    // The whole pipeline runs on a 154-token context.
    let out = pipe
        .generate(&options(&format!("{prompt} (apple:1.3)")), |_, _| {
            Progress::Continue
        })
        .unwrap();
    assert_eq!(out.truncated_tokens, 0);
    assert!(out.images.iter().all(|x| x.is_finite()));
}

#[test]
fn weights_scale_tokens_and_restore_the_mean() {
    let Some(mut pipe) = load("tiny-pipe") else {
        return;
    };
    let d = pipe.text_encoder.config.hidden_size;
    let plain = pipe
        .encode_text(&options("a red apple on a wooden table"))
        .unwrap();
    // Same tokens: BOS, a, red, apple, …; "red" ×1.5 and "apple" ×1/1.1.
    let weighted = pipe
        .encode_text(&options("a (red:1.5) [apple] on a wooden table"))
        .unwrap();
    assert_eq!(weighted.context_len, 77);
    let row = 77 * d;
    // The negative prompt is not weighted: identical.
    assert_eq!(weighted.context[..row], plain.context[..row]);
    let z = &plain.context[row..];
    let mut w = vec![1.0f32; 77];
    w[2] = 1.5;
    w[3] = (1.0f64 / 1.1) as f32;
    let scaled: Vec<f32> = z.iter().enumerate().map(|(i, &x)| x * w[i / d]).collect();
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let ratio = mean(z) / mean(&scaled);
    let want: Vec<f32> = scaled.iter().map(|&x| (x as f64 * ratio) as f32).collect();
    assert_close(
        "weighted prompt",
        &weighted.context[row..],
        &want,
        TOL,
        1e-5,
    );
    assert!(
        max_abs_diff(&weighted.context[row..], z) > 1e-3,
        "weights had no effect"
    );

    // --no-emphasis: the parentheses are text, the tokens differ from the plain prompt's.
    let literal = pipe
        .encode_text(&GenerateOptions {
            no_emphasis: true,
            ..options("a (red:1.5) [apple] on a wooden table")
        })
        .unwrap();
    assert!(max_abs_diff(&literal.context[row..], z) > 1e-3);
}

#[test]
fn plain_prompts_are_unchanged_bit_for_bit() {
    let Some(mut pipe) = load("tiny-pipe") else {
        return;
    };
    let a1111 = pipe
        .encode_text(&options("a red apple on a wooden table"))
        .unwrap();
    let diffusers = pipe
        .encode_text(&GenerateOptions {
            no_chunking: true,
            no_emphasis: true,
            ..options("a red apple on a wooden table")
        })
        .unwrap();
    assert_eq!(a1111.context_len, 77);
    assert_eq!(a1111.context, diffusers.context);
}

#[test]
fn sdxl_chunks_both_encoders_and_pools_the_first_chunk() {
    let Some(mut pipe) = load("tiny-sdxl") else {
        return;
    };
    let head = "a red apple on a wooden table";
    let short = pipe.encode_text(&options(head)).unwrap();
    let long = pipe
        .encode_text(&options(&format!("{head} BREAK {}", long_prompt())))
        .unwrap();
    assert_eq!(short.context_len, 77);
    assert_eq!(long.context_len, 3 * 77); // head | 75 tokens | 15 tokens
    let width = short.context.len() / (2 * 77);
    let row = |c: &[f32], k: usize, len: usize| c[k * len * width..(k * len + 77) * width].to_vec();
    // The first chunk of each text is the short encoding (negative: "blurry" itself).
    for k in 0..2 {
        assert_close(
            "first chunk",
            &row(&long.context, k, 231),
            &row(&short.context, k, 77),
            TOL,
            0.0,
        );
    }
    // Pooled text_embeds from the first chunk (A1111).
    assert_close(
        "text_embeds",
        long.text_embeds.as_ref().unwrap(),
        short.text_embeds.as_ref().unwrap(),
        TOL,
        0.0,
    );
    let out = pipe
        .generate(&options(&format!("{head} BREAK (pear:1.2)")), |_, _| {
            Progress::Continue
        })
        .unwrap();
    assert!(out.images.iter().all(|x| x.is_finite()));
}

#[test]
fn server_txt2img_accepts_a_long_weighted_prompt() {
    let Some(server) = ServerProcess::start(&[]) else {
        return;
    };
    let client = Client::new(&server.url);
    let prompt = format!("{} ((apple:1.3)) BREAK [blurry]", long_prompt());
    let reply = client.post(
        "/sdapi/v1/txt2img",
        &json!({
            "prompt": prompt,
            "negative_prompt": "(ugly:1.2)",
            "steps": 2,
            "width": 16,
            "height": 16,
            "seed": 7,
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let png = decode_png_base64(body["images"][0].as_str().expect("an image"));
    assert_eq!((png.width, png.height), (16, 16));
    assert!(body["info"].as_str().unwrap().contains("apple:1.3"));

    // Past the chunk limit: 422 naming the field, not a huge plan.
    let reply = client.post(
        "/sdapi/v1/txt2img",
        &json!({"prompt": "cat ".repeat(75 * 20 + 1), "steps": 2, "width": 16, "height": 16}),
    );
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("prompt"), "{}", reply.text);
}

#[test]
fn cli_warns_about_truncation_only_with_no_chunking() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("long-prompt-cli");
    let model = fixture("tiny-pipe").display().to_string();
    let prompt = long_prompt();
    let run = |extra: &[&str], name: &str| {
        let out = dir.join(name).display().to_string();
        let mut args = vec![
            "generate", &prompt, "-m", &model, "--steps", "2", "-W", "16", "-H", "16", "-o", &out,
        ];
        args.extend_from_slice(extra);
        let (ok, stderr) = stipple(&args);
        assert!(ok, "{stderr}");
        assert!(dir.join(name).exists());
        stderr
    };
    let chunked = run(&[], "chunked.png");
    assert!(!chunked.contains("truncated"), "{chunked}");
    let truncated = run(&["--no-chunking", "--no-emphasis"], "truncated.png");
    assert!(
        truncated.contains("15 tokens past the 75-token window were dropped"),
        "{truncated}"
    );
    // Too long even for chunks: a clear error, no file.
    let huge = "cat ".repeat(75 * 20 + 1);
    let out = dir.join("huge.png").display().to_string();
    let (ok, stderr) = stipple(&["generate", &huge, "-m", &model, "-o", &out]);
    assert!(!ok && stderr.contains("chunks of 75 tokens"), "{stderr}");
    assert!(!dir.join("huge.png").exists());
}
