//! AUTOMATIC1111's LoRA tags in a prompt: `<lora:NAME>` or `<lora:NAME:MULTIPLIER>` (multiplier
//! 1 when absent). The tags are taken out of the text before it is encoded, as A1111's extra
//! networks are; the rest of the prompt (emphasis, `BREAK`, …) is left as it is.

use crate::error::{Error, Result};

/// One `<lora:NAME:MULTIPLIER>` tag.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub multiplier: f32,
}

/// `prompt` without its `<lora:…>` tags, and the tags in order of appearance. A tag with an empty
/// name or a multiplier that is not a finite number is an error naming the tag. A1111's third
/// field (a separate UNet multiplier) is refused rather than silently ignored.
pub fn extract_lora_tags(prompt: &str) -> Result<(String, Vec<LoraTag>)> {
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("<lora:") {
        let Some(len) = rest[start..].find('>') else {
            break; // an unclosed tag stays text, as in A1111
        };
        let tag = &rest[start..start + len + 1];
        let body = &tag["<lora:".len()..tag.len() - 1];
        let mut fields = body.split(':');
        let name = fields.next().unwrap_or("").trim();
        let multiplier = match fields.next() {
            None => 1.0,
            Some(m) => m
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|m| m.is_finite())
                .ok_or_else(|| {
                    Error::invalid("prompt", format!("{tag}: the multiplier must be a number"))
                })?,
        };
        if name.is_empty() {
            return Err(Error::invalid("prompt", format!("{tag}: no LoRA name")));
        }
        if fields.next().is_some() {
            return Err(Error::invalid(
                "prompt",
                format!("{tag}: separate text-encoder and UNet multipliers are not supported"),
            ));
        }
        text.push_str(&rest[..start]);
        tags.push(LoraTag {
            name: name.to_string(),
            multiplier,
        });
        rest = &rest[start + len + 1..];
    }
    text.push_str(rest);
    Ok((text, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, multiplier: f32) -> LoraTag {
        LoraTag {
            name: name.into(),
            multiplier,
        }
    }

    #[test]
    fn tags_are_taken_out_in_order() {
        let (text, tags) =
            extract_lora_tags("a (red:1.2) apple <lora:style_a:0.8>, <lora:b> on a table").unwrap();
        assert_eq!(text, "a (red:1.2) apple ,  on a table");
        assert_eq!(tags, vec![tag("style_a", 0.8), tag("b", 1.0)]);
    }

    #[test]
    fn no_tags_and_unclosed_tags_stay_text() {
        assert_eq!(
            extract_lora_tags("plain").unwrap(),
            ("plain".into(), vec![])
        );
        let (text, tags) = extract_lora_tags("x <lora:open").unwrap();
        assert_eq!((text.as_str(), tags.len()), ("x <lora:open", 0));
        let (text, tags) = extract_lora_tags("<lora:n:-0.5>").unwrap();
        assert_eq!((text.as_str(), tags), ("", vec![tag("n", -0.5)]));
    }

    #[test]
    fn bad_tags_are_errors_naming_the_tag() {
        for bad in [
            "<lora::1>",
            "<lora:n:abc>",
            "<lora:n:inf>",
            "<lora:n:1:0.5>",
        ] {
            let e = extract_lora_tags(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
