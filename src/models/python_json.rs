//! Python's `json` module writes `float("nan")`, `float("inf")` and `-inf` as the bare literals
//! `NaN`, `Infinity` and `-Infinity`, which strict JSON (and `serde_json`) rejects. diffusers
//! saves configs with `json.dumps`, so real files carry them, e.g. DPMSolverMultistepScheduler's
//! `"lambda_min_clipped": -Infinity`.
//!
//! Reading such a file takes two passes:
//! 1. [`mark_literals`] rewrites each literal that stands where a JSON value can stand (a whole
//!    token, outside strings, not an object key) into a marker string; strings that merely
//!    contain the words are left alone. Anything else that is not JSON stays as it is, so
//!    `serde_json` still reports it with its line and column.
//! 2. [`Lenient`] deserialises the parsed [`Value`] into the config struct, handing each marker
//!    to the visitor as the `f64` it stands for: a numeric field gets NaN/±∞, any other field
//!    gets serde's "invalid type: floating point `inf`, expected …" error.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserializer;
use serde_json::Value;

/// Marker strings start with U+0001, which a JSON file can only spell as the escape `\u0001`:
/// no config value holds it.
const MARKER: &str = "\u{1}stipple-python-float:";

/// The literals, longest first so that `-Infinity` is not read as `-` then `Infinity`.
const LITERALS: [(&str, f64); 3] = [
    ("-Infinity", f64::NEG_INFINITY),
    ("Infinity", f64::INFINITY),
    ("NaN", f64::NAN),
];

/// `text` with every Python float literal outside strings replaced by a marker string, or
/// `None` when it holds none (then it is plain JSON and parses as before).
pub(crate) fn mark_literals(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0; // bytes of `text` already in `out`
    let mut in_string = false;
    // Open containers, and whether an object key comes next (a literal there stays invalid).
    let mut open: Vec<u8> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1, // skip the escaped character
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                open.push(b);
                expect_key = b == b'{';
            }
            b'}' | b']' => {
                open.pop();
                expect_key = false;
            }
            b':' => expect_key = false,
            b',' => expect_key = open.last() == Some(&b'{'),
            _ => {}
        }
        let starts_token = !expect_key && (i == 0 || !is_word_byte(bytes[i - 1]));
        let found = LITERALS.iter().find(|(lit, _)| {
            let end = i + lit.len();
            starts_token
                && bytes[i..].starts_with(lit.as_bytes())
                && bytes.get(end).is_none_or(|&n| !is_word_byte(n))
        });
        match found {
            Some((lit, _)) => {
                out.push_str(&text[copied..i]);
                out.push('"');
                // JSON text cannot hold U+0001 raw: write its escape.
                out.push_str(&MARKER.replace('\u{1}', "\\u0001"));
                out.push_str(lit);
                out.push('"');
                i += lit.len();
                copied = i;
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// Bytes that continue a bare word or number (so `xNaN` or `1Infinity` are left alone).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
}

/// The float a marker string stands for.
fn marked_float(s: &str) -> Option<f64> {
    let lit = s.strip_prefix(MARKER)?;
    LITERALS.iter().find(|(l, _)| *l == lit).map(|&(_, v)| v)
}

/// Deserialise `T` from a parsed value whose marker strings are Python float literals.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> serde_json::Result<T> {
    T::deserialize(Lenient(value))
}

/// A [`Value`] deserialiser that turns marker strings back into floats, at any depth.
pub(crate) struct Lenient(pub Value);

impl<'de> IntoDeserializer<'de, serde_json::Error> for Lenient {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for Lenient {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        match self.0 {
            Value::String(s) => match marked_float(&s) {
                Some(x) => visitor.visit_f64(x),
                None => visitor.visit_string(s),
            },
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter().map(Lenient));
                let v = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(v)
            }
            Value::Object(map) => {
                let mut m = MapDeserializer::new(map.into_iter().map(|(k, v)| (k, Lenient(v))));
                let v = visitor.visit_map(&mut m)?;
                m.end()?;
                Ok(v)
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        match self.0 {
            Value::String(ref s) if marked_float(s).is_some() => self.deserialize_any(visitor),
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Probe {
        a: f64,
        b: Option<f32>,
        c: Vec<f64>,
        s: String,
    }

    fn parse(text: &str) -> serde_json::Result<Probe> {
        let marked = mark_literals(text).unwrap_or_else(|| text.to_string());
        from_value(serde_json::from_str(&marked)?)
    }

    #[test]
    fn literals_become_floats_and_strings_stay() {
        let p =
            parse(r#"{"a": -Infinity, "b": NaN, "c": [Infinity, 1, -2.5], "s": "NaN -Infinity"}"#)
                .unwrap();
        assert_eq!(p.a, f64::NEG_INFINITY);
        assert!(p.b.unwrap().is_nan());
        assert_eq!(p.c, [f64::INFINITY, 1.0, -2.5]);
        assert_eq!(p.s, "NaN -Infinity");
    }

    #[test]
    fn no_literal_no_rewrite() {
        assert_eq!(mark_literals(r#"{"s": "Infinity \" NaN"}"#), None);
        assert_eq!(mark_literals(r#"{"xNaN": 1, "v": 1Infinity}"#), None);
        // Not as object keys: those stay invalid JSON.
        assert_eq!(mark_literals(r#"{NaN: 1, "a": [1], Infinity: 2}"#), None);
        assert!(mark_literals(r#"{"a": {"b": [1, NaN]}, "c": -Infinity}"#).is_some());
        assert!(mark_literals("[NaN]").is_some());
        assert!(mark_literals("NaN").is_some());
    }

    #[test]
    fn literal_in_a_string_field_is_a_type_error() {
        let e = parse(r#"{"a": 1, "b": null, "c": [], "s": Infinity}"#).unwrap_err();
        assert!(e.to_string().contains("floating point `inf`"), "{e}");
    }
}
