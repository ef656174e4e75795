//! AUTOMATIC1111's prompt emphasis syntax, parsed exactly as its `parse_prompt_attention`
//! (`modules/prompt_parser.py`): the prompt becomes runs of text with a weight each.
//!
//! - `(text)` multiplies the weights inside by 1.1, `[text]` by 1/1.1; nesting multiplies.
//! - `(text:1.3)` multiplies by 1.3 (a number with optional sign, digits and dots).
//! - `\(`, `\)`, `\[`, `\]`, `\\` are literal characters; a lone `\` is dropped.
//! - Brackets left open apply from where they opened to the end; a stray closer is text.
//! - `BREAK` (a whole word, with the whitespace around it) splits a text run and appears as the
//!   run `("BREAK", -1.0)`; brackets around it multiply that weight too, as A1111 does, and
//!   then it is no longer a break for A1111's tokenizer (`text == "BREAK" and weight == -1`).
//! - Neighbouring runs of equal weight are merged; an empty prompt is `[("", 1.0)]`.
//!
//! Weights are f64 multiplied in A1111's order, so they equal Python's floats bit for bit.
//! The number of `(text:1.3)` follows A1111 ≥ 1.6 (`:\s*([+-]?[.\d]+)\s*\)`, spaces allowed);
//! a number Python's `float()` rejects (`1.2.3`), where A1111 fails, keeps the weight 1.
//! The pipeline turns the runs into weighted token chunks in `pipeline::prompt_weights`.

/// One run of prompt text and its emphasis weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub weight: f64,
}

impl Chunk {
    /// Whether A1111 treats this run as a BREAK (start a new 75-token chunk).
    pub fn is_break(&self) -> bool {
        self.text == "BREAK" && self.weight == -1.0
    }
}

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// One token of A1111's `re_attention` regex.
enum Token<'a> {
    /// `\(` and the other escapes: the character after the backslash (empty for a lone `\`).
    Escaped(&'a str),
    Open,
    OpenSquare,
    /// `:1.3)` with its number as written.
    WeightClose(&'a str),
    Close,
    CloseSquare,
    Text(&'a str),
}

/// The next token of `s` (non-empty), and its length in bytes; the alternatives are tried in
/// the regex's order.
fn next_token(s: &str) -> (Token<'_>, usize) {
    let bytes = s.as_bytes();
    match bytes[0] {
        b'\\' => match bytes.get(1) {
            Some(b'(' | b')' | b'[' | b']' | b'\\') => (Token::Escaped(&s[1..2]), 2),
            _ => (Token::Escaped(""), 1),
        },
        b'(' => (Token::Open, 1),
        b'[' => (Token::OpenSquare, 1),
        b':' => match weight_close(s) {
            Some((number, len)) => (Token::WeightClose(number), len),
            None => (Token::Text(":"), 1),
        },
        b')' => (Token::Close, 1),
        b']' => (Token::CloseSquare, 1),
        _ => {
            let len = s.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(s.len());
            (Token::Text(&s[..len]), len)
        }
    }
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`: the number and the match length.
fn weight_close(s: &str) -> Option<(&str, usize)> {
    let after_colon = &s[1..];
    let rest = after_colon.trim_start();
    let start = s.len() - rest.len();
    let sign = usize::from(rest.starts_with(['+', '-']));
    let digits = rest[sign..]
        .find(|c: char| !(c == '.' || c.is_ascii_digit()))
        .unwrap_or(rest.len() - sign);
    if digits == 0 {
        return None;
    }
    let number = &s[start..start + sign + digits];
    let tail = &s[start + sign + digits..];
    let tail_trimmed = tail.trim_start();
    tail_trimmed
        .starts_with(')')
        .then(|| (number, s.len() - tail_trimmed.len() + 1))
}

/// Python's `float()` of `[+-]?[.\d]+`: None for forms it rejects ("." or "1.2.3"), where
/// A1111 fails; stipple then keeps the weight 1.
fn python_float(number: &str) -> Option<f64> {
    let digits = number.trim_start_matches(['+', '-']);
    if digits.matches('.').count() > 1 || !digits.contains(|c: char| c.is_ascii_digit()) {
        return None;
    }
    number.parse::<f64>().ok()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
fn split_breaks(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    let mut search_from = 0;
    while let Some(found) = rest[search_from..].find("BREAK") {
        let at = search_from + found;
        let end = at + "BREAK".len();
        let before_ok = rest[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after_ok = rest[end..].chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            let head = rest[..at].trim_end();
            parts.push(head);
            rest = rest[end..].trim_start();
            search_from = 0;
        } else {
            search_from = at + 1;
        }
    }
    parts.push(rest);
    parts
}

/// A1111's `parse_prompt_attention`.
pub fn parse_prompt_attention(prompt: &str) -> Vec<Chunk> {
    let mut res: Vec<Chunk> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<Chunk>, from: usize, by: f64| {
        for chunk in &mut res[from..] {
            chunk.weight *= by;
        }
    };
    let mut rest = prompt;
    while !rest.is_empty() {
        let (token, len) = next_token(rest);
        rest = &rest[len..];
        match token {
            Token::Escaped(c) => res.push(Chunk {
                text: c.to_string(),
                weight: 1.0,
            }),
            Token::Open => round.push(res.len()),
            Token::OpenSquare => square.push(res.len()),
            Token::WeightClose(number) if !round.is_empty() => {
                let from = round.pop().unwrap_or_default();
                multiply(&mut res, from, python_float(number).unwrap_or(1.0));
            }
            Token::Close if !round.is_empty() => {
                let from = round.pop().unwrap_or_default();
                multiply(&mut res, from, ROUND);
            }
            Token::CloseSquare if !square.is_empty() => {
                let from = square.pop().unwrap_or_default();
                multiply(&mut res, from, SQUARE);
            }
            Token::WeightClose(_) | Token::Close | Token::CloseSquare | Token::Text(_) => {
                let text = match token {
                    Token::Text(t) => t,
                    Token::Close => ")",
                    Token::CloseSquare => "]",
                    // An unmatched `:1.3)` is text as written.
                    _ => &prompt[prompt.len() - rest.len() - len..prompt.len() - rest.len()],
                };
                for (i, part) in split_breaks(text).into_iter().enumerate() {
                    if i > 0 {
                        res.push(Chunk {
                            text: "BREAK".into(),
                            weight: -1.0,
                        });
                    }
                    res.push(Chunk {
                        text: part.to_string(),
                        weight: 1.0,
                    });
                }
            }
        }
    }
    for from in round {
        multiply(&mut res, from, ROUND);
    }
    for from in square {
        multiply(&mut res, from, SQUARE);
    }
    if res.is_empty() {
        res.push(Chunk {
            text: String::new(),
            weight: 1.0,
        });
    }
    let mut merged: Vec<Chunk> = Vec::with_capacity(res.len());
    for chunk in res {
        match merged.last_mut() {
            Some(last) if last.weight == chunk.weight => last.text.push_str(&chunk.text),
            _ => merged.push(chunk),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(prompt: &str) -> Vec<(String, f64)> {
        parse_prompt_attention(prompt)
            .into_iter()
            .map(|c| (c.text, c.weight))
            .collect()
    }

    fn want(chunks: &[(&str, f64)]) -> Vec<(String, f64)> {
        chunks.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    /// The examples in A1111's `parse_prompt_attention` docstring, with its exact floats.
    #[test]
    fn a1111_docstring_examples() {
        let cases: [(&str, &[(&str, f64)]); 6] = [
            ("normal text", &[("normal text", 1.0)]),
            (
                "an (important) word",
                &[("an ", 1.0), ("important", 1.1), (" word", 1.0)],
            ),
            ("(unbalanced", &[("unbalanced", 1.1)]),
            ("\\(literal\\]", &[("(literal]", 1.0)]),
            ("(unnecessary)(parens)", &[("unnecessaryparens", 1.1)]),
            (
                "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
                &[
                    ("a ", 1.0),
                    ("house", 1.5730000000000004),
                    (" ", 1.1),
                    ("on", 1.0),
                    (" a ", 1.1),
                    ("hill", 0.55),
                    (", sun, ", 1.1),
                    ("sky", 1.4641000000000006),
                    (".", 1.1),
                ],
            ),
        ];
        for (prompt, expected) in cases {
            assert_eq!(parsed(prompt), want(expected), "{prompt}");
        }
    }

    /// Further cases, with the results A1111's `parse_prompt_attention` gives for them (run
    /// under Python 3; weights are its float products, compared exactly).
    #[test]
    fn brackets_escapes_and_breaks() {
        let cases: [(&str, &[(&str, f64)]); 13] = [
            ("", &[("", 1.0)]),
            ("x  BREAK\n y", &[("x", 1.0), ("BREAK", -1.0), ("y", 1.0)]),
            ("[a]", &[("a", 1.0 / 1.1)]),
            ("[[a]]", &[("a", (1.0 / 1.1) * (1.0 / 1.1))]),
            ("a)b]c", &[("a)b]c", 1.0)]),
            ("(a:1.5) b", &[("a", 1.5), (" b", 1.0)]),
            ("(a: -0.5 ) b", &[("a", -0.5), (" b", 1.0)]),
            ("a:1.5) b", &[("a:1.5) b", 1.0)]),
            ("time: 12:30", &[("time: 12:30", 1.0)]),
            ("\\\\ and \\x", &[("\\ and x", 1.0)]),
            ("a BREAK b", &[("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
            ("aBREAK b BREAKS", &[("aBREAK b BREAKS", 1.0)]),
            ("(a BREAK b)", &[("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
        ];
        for (prompt, expected) in cases {
            assert_eq!(parsed(prompt), want(expected), "{prompt:?}");
        }
        let chunks = parse_prompt_attention("cat BREAK dog");
        assert!(chunks[1].is_break());
        assert!(!parse_prompt_attention("(cat BREAK dog)")[1].is_break());
    }

    /// Nesting, unbalanced and mismatched brackets, weights that do not close, escapes next
    /// to brackets and BREAK between weighted runs: expected runs worked out by hand from
    /// A1111's algorithm (regex `re_attention` of A1111 ≥ 1.6, which allows spaces around the
    /// number; stacks of open brackets; a weight multiplies from its opening bracket to the end
    /// of the result; leftover opens multiply, round ones first; equal neighbours merge).
    #[test]
    fn hand_worked_a1111_cases() {
        let cases: [(&str, &[(&str, f64)]); 11] = [
            ("((a) b)", &[("a", 1.1 * 1.1), (" b", 1.1)]),
            ("[a:1.5]", &[("a:1.5", 1.0 / 1.1)]),
            ("(a:1.5", &[("a:1.5", 1.1)]),
            (
                "a [b (c:2)] d",
                &[
                    ("a ", 1.0),
                    ("b ", 1.0 / 1.1),
                    ("c", 2.0 * (1.0 / 1.1)),
                    (" d", 1.0),
                ],
            ),
            ("\\(a\\) (b)", &[("(a) ", 1.0), ("b", 1.1)]),
            ("(a]", &[("a]", 1.1)]),
            ("a)(b", &[("a)", 1.0), ("b", 1.1)]),
            ("(a:1.2:1.3)", &[("a:1.2", 1.3)]),
            (
                "(a) BREAK [b]",
                &[
                    ("a", 1.1),
                    ("", 1.0),
                    ("BREAK", -1.0),
                    ("", 1.0),
                    ("b", 1.0 / 1.1),
                ],
            ),
            ("BREAK", &[("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
            ("[(a:0.5)", &[("a", 0.5 * (1.0 / 1.1))]),
        ];
        for (prompt, expected) in cases {
            assert_eq!(parsed(prompt), want(expected), "{prompt:?}");
        }
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float("1.3"), Some(1.3));
        assert_eq!(python_float("+.5"), Some(0.5));
        assert_eq!(python_float("2."), Some(2.0));
        assert_eq!(python_float("."), None);
        assert_eq!(python_float("1.2.3"), None);
    }
}
