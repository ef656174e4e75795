//! Prompt text → weighted 77-token chunks (A1111's `tokenize_line`) and the emphasis rescale,
//! without a GPU. References are independent of the chunking code: the tokenizer's own
//! `encode` (diffusers' truncation) and `encode_chunks` (plain 75-token splits), and sums
//! worked out by hand.

mod common;

use common::golden::fixture;
use stipple::pipeline::prompt_weights::{
    apply_emphasis, pad_to_common_length, weighted_prompt, PromptMode, WeightedPrompt,
    COMMA_BACKTRACK, MAX_CHUNKS,
};
use stipple::tokenizer::ClipTokenizer;

fn tokenizer(model: &str) -> ClipTokenizer {
    ClipTokenizer::from_dir(fixture(model).join("tokenizer")).expect("tokenizer")
}

const A1111: PromptMode = PromptMode {
    chunking: true,
    emphasis: true,
};

fn ids(p: &WeightedPrompt) -> Vec<Vec<u32>> {
    p.chunks.iter().map(|c| c.ids.clone()).collect()
}

/// `n` words of one token each ("cat cat …" is one `cat</w>` per word).
fn words(n: usize) -> String {
    vec!["cat"; n].join(" ")
}

#[test]
fn plain_prompts_split_every_75_tokens() {
    for model in ["tiny-pipe", "tiny-sd2"] {
        let tok = tokenizer(model);
        for n in [0, 1, 74, 75, 76, 150, 151, 300] {
            let prompt = words(n);
            assert_eq!(tok.tokenize(&prompt).unwrap().len(), n);
            let got = weighted_prompt(&tok, &prompt, A1111).unwrap();
            assert_eq!(
                ids(&got),
                tok.encode_chunks(&prompt).unwrap(),
                "{model} {n}"
            );
            assert_eq!(got.chunks.len(), n.div_ceil(75).max(1), "{model} {n}");
            assert_eq!(got.truncated, 0);
            for c in &got.chunks {
                assert_eq!(c.ids.len(), 77);
                assert!(c.weights.iter().all(|&w| w == 1.0) && !c.is_weighted());
            }
        }
    }
}

#[test]
fn a_comma_near_the_end_moves_the_words_after_it() {
    let tok = tokenizer("tiny-pipe");
    let enc = |s: &str| tok.encode(s).unwrap().ids;
    // 75 tokens with a comma at position 60 (15 from the end), then one more word: the 14
    // words after the comma go to the second chunk with it.
    let prompt = format!("{}, {} dog", words(60), words(14));
    assert_eq!(tok.tokenize(&prompt).unwrap().len(), 76);
    let got = weighted_prompt(&tok, &prompt, A1111).unwrap();
    assert_eq!(
        ids(&got),
        vec![
            enc(&format!("{},", words(60))),
            enc(&format!("{} dog", words(14)))
        ]
    );
    // The comma exactly COMMA_BACKTRACK tokens from the end still moves; one further does not.
    let at = 75 - COMMA_BACKTRACK;
    let prompt = format!("{}, {} dog", words(at), words(74 - at));
    let got = weighted_prompt(&tok, &prompt, A1111).unwrap();
    assert_eq!(
        got.chunks[1].ids[..3],
        [tok.bos_id(), enc("cat")[1], enc("cat")[1]]
    );
    assert_eq!(ids(&got)[0], enc(&format!("{},", words(at))));
    let prompt = format!("{}, {} dog", words(at - 1), words(75 - at));
    let got = weighted_prompt(&tok, &prompt, A1111).unwrap();
    assert_eq!(
        ids(&got),
        vec![
            enc(&format!("{}, {}", words(at - 1), words(75 - at))),
            enc("dog")
        ]
    );
    // Weights move with their tokens; a comma that fills the chunk moves nothing.
    let prompt = format!("{}, (dog:1.5) dog", words(73));
    let got = weighted_prompt(&tok, &prompt, A1111).unwrap();
    assert_eq!(ids(&got)[1], enc("dog dog"));
    assert_eq!(got.chunks[1].weights[..3], [1.0, 1.5, 1.0]);
    let prompt = format!("{}, dog", words(74));
    let got = weighted_prompt(&tok, &prompt, A1111).unwrap();
    assert_eq!(ids(&got), vec![enc(&format!("{},", words(74))), enc("dog")]);
}

#[test]
fn no_chunking_truncates_like_diffusers() {
    let tok = tokenizer("tiny-pipe");
    let mode = PromptMode {
        chunking: false,
        emphasis: true,
    };
    for n in [3, 75, 76, 200] {
        let prompt = words(n);
        let got = weighted_prompt(&tok, &prompt, mode).unwrap();
        let want = tok.encode(&prompt).unwrap();
        assert_eq!(ids(&got), vec![want.ids], "{n}");
        assert_eq!(got.truncated, want.truncated, "{n}");
        assert_eq!(got.truncated, n.saturating_sub(75));
    }
    // BREAK has no effect without chunks; the text around it is kept.
    let got = weighted_prompt(&tok, "a red BREAK apple", mode).unwrap();
    assert_eq!(ids(&got), vec![tok.encode("a red apple").unwrap().ids]);
}

#[test]
fn break_starts_a_new_chunk() {
    let tok = tokenizer("tiny-pipe");
    let enc = |s: &str| tok.encode(s).unwrap().ids;
    let got = weighted_prompt(&tok, "a red apple BREAK on a table", A1111).unwrap();
    assert_eq!(ids(&got), vec![enc("a red apple"), enc("on a table")]);
    // A leading BREAK closes an empty chunk (as A1111 does); a trailing one adds nothing.
    let got = weighted_prompt(&tok, "BREAK apple BREAK", A1111).unwrap();
    assert_eq!(ids(&got), vec![enc(""), enc("apple")]);
    // 75 tokens then BREAK: the full chunk is closed once, not followed by an empty one.
    let got = weighted_prompt(&tok, &format!("{} BREAK apple", words(75)), A1111).unwrap();
    assert_eq!(ids(&got), vec![enc(&words(75)), enc("apple")]);
    // Inside brackets BREAK is text (A1111 only breaks on weight -1).
    let got = weighted_prompt(&tok, "(a BREAK b)", A1111).unwrap();
    assert_eq!(ids(&got), vec![enc("a BREAK b")]);
}

#[test]
fn tokens_carry_their_run_weight() {
    let tok = tokenizer("tiny-pipe");
    let got = weighted_prompt(&tok, "a (red:1.5) [apple] ((table))", A1111).unwrap();
    assert_eq!(
        ids(&got),
        vec![tok.encode("a red apple table").unwrap().ids]
    );
    let w = &got.chunks[0].weights;
    // BOS, a, red, apple, table, EOS, padding.
    let square = (1.0f64 / 1.1) as f32;
    let double = (1.1f64 * 1.1) as f32;
    assert_eq!(&w[..6], &[1.0, 1.0, 1.5, square, double, 1.0]);
    assert!(w[6..].iter().all(|&x| x == 1.0));
    assert!(got.chunks[0].is_weighted());
    // Weights follow their tokens into the second chunk.
    let got = weighted_prompt(&tok, &format!("{} (dog:0.5)", words(75)), A1111).unwrap();
    assert_eq!(got.chunks.len(), 2);
    assert_eq!(&got.chunks[1].weights[..3], &[1.0, 0.5, 1.0]);
    assert!(!got.chunks[0].is_weighted());
}

#[test]
fn no_emphasis_keeps_the_syntax_as_text() {
    let tok = tokenizer("tiny-pipe");
    let mode = PromptMode {
        chunking: true,
        emphasis: false,
    };
    for prompt in ["a (red:1.5) apple", "[x] BREAK \\(y\\)"] {
        let got = weighted_prompt(&tok, prompt, mode).unwrap();
        assert_eq!(ids(&got), tok.encode_chunks(prompt).unwrap(), "{prompt}");
        assert!(!got.chunks[0].is_weighted());
    }
}

#[test]
fn too_many_chunks_is_an_error_naming_the_limit() {
    let tok = tokenizer("tiny-pipe");
    let at_limit = weighted_prompt(&tok, &words(75 * MAX_CHUNKS), A1111).unwrap();
    assert_eq!(at_limit.chunks.len(), MAX_CHUNKS);
    let err = weighted_prompt(&tok, &words(75 * MAX_CHUNKS + 1), A1111)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prompt") && err.contains(&MAX_CHUNKS.to_string()),
        "{err}"
    );
    let breaks = vec!["a"; MAX_CHUNKS + 1].join(" BREAK ");
    assert!(weighted_prompt(&tok, &breaks, A1111).is_err());
    // Without chunking nothing is refused: the tail is dropped.
    let off = PromptMode {
        chunking: false,
        emphasis: true,
    };
    let got = weighted_prompt(&tok, &words(75 * MAX_CHUNKS + 1), off).unwrap();
    assert_eq!(got.truncated, 75 * MAX_CHUNKS + 1 - 75);
}

#[test]
fn padding_appends_empty_chunks() {
    let tok = tokenizer("tiny-sd2"); // pads with "!"
    let mut prompts = vec![
        weighted_prompt(&tok, "blurry", A1111).unwrap(),
        weighted_prompt(&tok, &words(100), A1111).unwrap(),
    ];
    pad_to_common_length(&tok, &mut prompts, 2);
    assert_eq!(
        ids(&prompts[0]),
        vec![
            tok.encode("blurry").unwrap().ids,
            tok.encode("").unwrap().ids
        ]
    );
    assert_eq!(ids(&prompts[1]), tok.encode_chunks(&words(100)).unwrap());
}

#[test]
fn emphasis_scales_tokens_and_restores_the_mean() {
    // z (3 tokens, 2 channels), weights (1, 2, 0.5).
    let mut z = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    apply_emphasis(&mut z, &[1.0, 2.0, 0.5]);
    // mean before: 21 / 6 = 3.5; weighted: 1, 2, 6, 8, 2.5, 3 → mean 22.5 / 6 = 3.75.
    let s = 3.5f64 / 3.75;
    let want: Vec<f32> = [1.0, 2.0, 6.0, 8.0, 2.5, 3.0]
        .iter()
        .map(|&x: &f64| (x * s) as f32)
        .collect();
    for (g, w) in z.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6, "{z:?} vs {want:?}");
    }
    let mean = z.iter().map(|&x| x as f64).sum::<f64>() / 6.0;
    assert!((mean - 3.5).abs() < 1e-6);

    // Unweighted: untouched, bit for bit (plain prompts stay diffusers' numbers).
    let orig = vec![0.1f32, -0.7, 1e-8, 3.3];
    let mut z = orig.clone();
    apply_emphasis(&mut z, &[1.0, 1.0]);
    assert_eq!(z, orig);

    // A weighted mean of zero: weighted but not divided by zero.
    let mut z = vec![1.0f32, 1.0, -1.0, -1.0];
    apply_emphasis(&mut z, &[1.0, 1.0]);
    let mut z2 = vec![1.0f32, -1.0];
    apply_emphasis(&mut z2, &[2.0, 2.0]);
    assert!(z.iter().chain(&z2).all(|x| x.is_finite()));
    assert_eq!(z2, vec![2.0, -2.0]);
}
