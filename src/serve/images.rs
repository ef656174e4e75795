//! Images over HTTP: base64 PNGs out (with the A1111 `parameters` text chunk the CLI writes),
//! base64 PNGs in for img2img (optionally as a `data:image/png;base64,` URL).

use std::io::Cursor;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::api_error::ApiError;
use crate::image_io;
use crate::pipeline::{InitImage, Mask};

pub use crate::image_io::unit_to_rgb8;

/// An RGB image as a base64 PNG carrying `parameters`.
pub fn png_base64(
    width: usize,
    height: usize,
    rgb: &[u8],
    parameters: &str,
) -> crate::Result<String> {
    let png = image_io::encode_png(width as u32, height as u32, rgb, Some(parameters))?;
    Ok(BASE64.encode(png))
}

/// A live preview as a base64 PNG (no text chunk).
pub fn preview_png_base64(preview: &crate::pipeline::PreviewImage) -> crate::Result<String> {
    let (w, h) = (preview.width as u32, preview.height as u32);
    let png = image_io::encode_png(w, h, &preview.rgb, None)?;
    Ok(BASE64.encode(png))
}

/// Decodes base64 (a bare string or a `data:…;base64,` URL), naming `field` on failure.
fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    let data = match text.split_once(";base64,") {
        Some((prefix, data)) if prefix.starts_with("data:") => data,
        _ => text,
    };
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64
        .decode(data.as_bytes())
        .map_err(|e| ApiError::field(field, format!("is not valid base64: {e}")))
}

/// An img2img start image: decoded, resized to `width`×`height` when it has another size
/// (A1111's resize mode 0, "Just resize"), as diffusers' preprocessing `2·(v/255) − 1`.
/// Images over `max_pixels` are refused from their header, before decoding.
pub fn decode_init_image(
    text: &str,
    field: &str,
    target: Option<(u32, u32)>,
    max_pixels: u64,
    strength: f32,
) -> Result<InitImage, ApiError> {
    let mut rgb = decode_rgb8(text, field, max_pixels)?;
    let (w, h) = rgb.dimensions();
    let (width, height) = target.unwrap_or((w, h));
    if (width, height) != (w, h) {
        rgb = image::imageops::resize(&rgb, width, height, image::imageops::FilterType::Lanczos3);
    }
    Ok(InitImage {
        width: width as usize,
        height: height as usize,
        pixels: rgb
            .as_raw()
            .iter()
            .map(|&b| 2.0 * (b as f32 / 255.0) - 1.0)
            .collect(),
        strength,
    })
}

/// An inpainting mask (A1111's `mask`: white = repaint): decoded at its own size (the
/// pipeline resizes it to the image's, as diffusers does). Refused over `max_pixels`.
pub fn decode_mask(text: &str, field: &str, max_pixels: u64) -> Result<Mask, ApiError> {
    let rgb = decode_rgb8(text, field, max_pixels)?;
    let (w, h) = rgb.dimensions();
    Mask::from_rgb8(w as usize, h as usize, rgb.as_raw())
        .map_err(|e| ApiError::field(field, e.to_string()))
}

/// A base64 image as 8-bit RGB; images over `max_pixels` are refused from their header.
fn decode_rgb8(text: &str, field: &str, max_pixels: u64) -> Result<image::RgbImage, ApiError> {
    let bytes = decode_base64(text, field)?;
    let reader = || {
        image::ImageReader::new(Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|e| ApiError::field(field, format!("cannot be read: {e}")))
    };
    let undecodable = |e: image::ImageError| {
        ApiError::field(field, format!("cannot be decoded (PNG expected): {e}"))
    };
    let (w, h) = reader()?.into_dimensions().map_err(undecodable)?;
    if w as u64 * h as u64 > max_pixels {
        return Err(ApiError::field(
            field,
            format!("is {w}×{h}, over the server's limit of {max_pixels} pixels (--max-pixels)"),
        ));
    }
    Ok(reader()?.decode().map_err(undecodable)?.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> String {
        let rgb: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        png_base64(width as usize, height as usize, &rgb, "a cat\nSteps: 2").unwrap()
    }

    #[test]
    fn init_images_decode_resize_and_refuse() {
        let text = png(4, 2);
        let init = decode_init_image(&text, "init_images[0]", None, 100, 0.5).unwrap();
        assert_eq!((init.width, init.height, init.pixels.len()), (4, 2, 24));
        assert_eq!(init.pixels[0], -1.0);
        assert!((init.pixels[1] - (2.0 * 7.0 / 255.0 - 1.0)).abs() < 1e-6);
        let url = format!("data:image/png;base64,{text}");
        let init = decode_init_image(&url, "f", Some((8, 8)), 100, 0.5).unwrap();
        assert_eq!((init.width, init.height, init.pixels.len()), (8, 8, 192));
        let e = decode_init_image(&text, "init_images[0]", None, 7, 0.5).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("init_images[0]"));
        let e = decode_init_image("@@@", "init_images[1]", None, 100, 0.5).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("init_images[1]"));
        let e = decode_init_image(&BASE64.encode(b"not a png"), "x", None, 100, 0.5).unwrap_err();
        assert!(e.message.contains("decoded"), "{}", e.message);
    }

    #[test]
    fn rgb8_rounds_half_to_even() {
        assert_eq!(
            unit_to_rgb8(&[0.0, 1.0, 2.0, -1.0, 0.5]),
            [0, 255, 255, 0, 128]
        );
    }
}
