//! A1111's inpainting fields of `POST /sdapi/v1/img2img`: `mask` (base64 image, white =
//! repaint), `mask_blur` (Gaussian σ in pixels, A1111's default 4; 0 = none),
//! `inpainting_mask_invert` (0/1 or a boolean: repaint the black part instead).
//! `inpainting_fill`, `inpaint_full_res` and `inpaint_full_res_padding` are ignored: the
//! pipeline starts from the init image itself ("original") at its full size, as diffusers does.

use serde_json::Value;

use super::api_error::ApiError;
use super::images::decode_mask;
use crate::pipeline::Mask;

/// A1111's `mask_blur` when the request has none.
pub const DEFAULT_MASK_BLUR: f32 = 4.0;

/// Largest `mask_blur` accepted (A1111's UI slider stops at 64).
pub const MAX_MASK_BLUR: f32 = 64.0;

/// The request's mask: decoded, inverted when asked, blurred by `mask_blur`.
pub fn request_mask(
    text: &str,
    mask_blur: Option<f32>,
    invert: Option<&Value>,
    max_pixels: u64,
) -> Result<Mask, ApiError> {
    let blur = mask_blur.unwrap_or(DEFAULT_MASK_BLUR);
    if !(0.0..=MAX_MASK_BLUR).contains(&blur) {
        return Err(ApiError::field(
            "mask_blur",
            format!("{blur} is outside [0, {MAX_MASK_BLUR}] (pixels)"),
        ));
    }
    let invert = match invert {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
        Some(other) => {
            return Err(ApiError::field(
                "inpainting_mask_invert",
                format!("{other} must be 0, 1, true or false"),
            ))
        }
    };
    let mut mask = decode_mask(text, "mask", max_pixels)?;
    if invert {
        mask.invert();
    }
    Ok(mask.blur(blur))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::images::png_base64;
    use serde_json::json;

    /// A 4×2 mask, left half black, right half white.
    fn mask_png() -> String {
        let rgb: Vec<u8> = (0..8)
            .flat_map(|i| if i % 4 < 2 { [0u8; 3] } else { [255u8; 3] })
            .collect();
        png_base64(4, 2, &rgb, "mask").unwrap()
    }

    #[test]
    fn invert_blur_and_refusals() {
        let text = mask_png();
        let m = request_mask(&text, Some(0.0), None, 100).unwrap();
        assert_eq!(m.values, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        let m = request_mask(&text, Some(0.0), Some(&json!(1)), 100).unwrap();
        assert_eq!(m.values, [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let m = request_mask(&text, Some(0.0), Some(&json!(true)), 100).unwrap();
        assert_eq!(m.values[0], 1.0);
        let blurred = request_mask(&text, None, None, 100).unwrap();
        assert!(blurred.values[1] > 0.0 && blurred.values[2] < 1.0);
        let e = request_mask(&text, Some(-1.0), None, 100).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mask_blur"));
        let e = request_mask(&text, Some(0.0), Some(&json!("yes")), 100).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inpainting_mask_invert"));
        let e = request_mask("@@", Some(0.0), None, 100).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mask"));
        let e = request_mask(&text, Some(0.0), None, 7).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mask"));
    }
}
