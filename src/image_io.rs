//! Image and tensor files at the edges of the pipeline:
//!
//! - [`write_png`]: 8-bit RGB PNG with the generation parameters in a text chunk keyed
//!   `parameters`, the way AUTOMATIC1111's web UI stores them (PNG Info tabs and most image
//!   browsers read it back); [`a1111_parameters`] formats that text.
//! - [`float_image_to_rgb8`] / [`to_unit_range`]: VAE output in [-1, 1] to pixels, exactly as
//!   diffusers' `VaeImageProcessor.postprocess` (output types "pil" and "np").
//! - [`read_image_rgb`]: a PNG (any colour type) to [-1, 1] values for img2img, as diffusers'
//!   `VaeImageProcessor.preprocess`.
//! - [`write_tensor_safetensors`] / [`read_tensor_safetensors`]: one f32 tensor in a minimal
//!   safetensors file (latents, debugging dumps).
//!
//! Images are NHWC without the batch: `(H, W, 3)`, row-major, RGB. Every file is written
//! through [`crate::output_file::write_output`]: `-` is standard output, devices and FIFOs are
//! written in place, anything else atomically (a failed or interrupted write leaves the
//! previous file, or nothing, never a truncated one).

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::output_file::write_output;
use crate::weights::Weights;

/// Text chunk keyword AUTOMATIC1111 uses for the generation parameters.
pub const PARAMETERS_KEYWORD: &str = "parameters";

/// The fields of an AUTOMATIC1111 "parameters" text (see [`a1111_parameters`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct A1111Parameters {
    pub prompt: String,
    /// Empty: no "Negative prompt:" line.
    pub negative_prompt: String,
    pub steps: u32,
    /// A1111's sampler name: "Euler a", "Euler", "DDIM", "PLMS", "DPM++ 2M", …
    pub sampler: String,
    pub cfg_scale: f32,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// The model's name (A1111 writes the checkpoint file stem).
    pub model: String,
    /// img2img strength ("Denoising strength"); `None` for text-to-image.
    pub denoising_strength: Option<f32>,
    /// Further `Key: value` pairs, appended in order (e.g. `("Version", "stipple 0.1.0")`).
    pub extra: Vec<(String, String)>,
}

/// A1111's `infotext_utils.quote`: values holding `,`, `:` or a newline are written as a JSON
/// string (non-ASCII kept as is), others verbatim.
fn quote(value: &str) -> Cow<'_, str> {
    if value.contains([',', '\n', ':']) {
        // Serialising a &str cannot fail; fall back to the raw value rather than panic.
        Cow::Owned(serde_json::to_string(value).unwrap_or_else(|_| value.to_string()))
    } else {
        Cow::Borrowed(value)
    }
}

/// Formats generation parameters exactly as AUTOMATIC1111's `create_infotext`:
///
/// ```text
/// a photo of a cat
/// Negative prompt: blurry
/// Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: tiny-sd1
/// ```
///
/// The negative prompt line is left out when it is empty; the whole text is trimmed of
/// surrounding whitespace (A1111's `.strip()`); values with `,`, `:` or newlines are quoted as
/// JSON strings. Numbers use the shortest form that reads back exactly (`7` for 7.0, `7.5`).
pub fn a1111_parameters(p: &A1111Parameters) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("Steps", p.steps.to_string()),
        ("Sampler", p.sampler.clone()),
        ("CFG scale", p.cfg_scale.to_string()),
        ("Seed", p.seed.to_string()),
        ("Size", format!("{}x{}", p.width, p.height)),
    ];
    if !p.model.is_empty() {
        fields.push(("Model", p.model.clone()));
    }
    if let Some(strength) = p.denoising_strength {
        fields.push(("Denoising strength", strength.to_string()));
    }
    for (key, value) in &p.extra {
        fields.push((key.as_str(), value.clone()));
    }
    let params = fields
        .iter()
        .map(|(key, value)| format!("{key}: {}", quote(value)))
        .collect::<Vec<_>>()
        .join(", ");
    let negative = if p.negative_prompt.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", p.negative_prompt)
    };
    format!("{}{negative}\n{params}", p.prompt)
        .trim()
        .to_string()
}

/// Turns a PNG encoder error into an error naming `path`.
fn png_error(path: &Path, e: png::EncodingError) -> Error {
    match e {
        png::EncodingError::IoError(e) => Error::io(path, e),
        other => Error::io(
            path,
            io::Error::other(format!("PNG encoding failed: {other}")),
        ),
    }
}

/// The scheduler settings an infotext records beyond A1111's standard fields (the same for the
/// CLI and the server): the prediction type always, the timestep spacing and Karras sigmas when set.
pub fn scheduler_parameters(
    overrides: &crate::schedulers::SchedulerOverrides,
    prediction_type: crate::schedulers::PredictionType,
) -> Vec<(String, String)> {
    let mut extra = vec![("Prediction type".into(), prediction_type.to_string())];
    if let Some(spacing) = overrides.timestep_spacing {
        extra.push(("Timestep spacing".into(), spacing.to_string()));
    }
    if overrides.karras {
        // A1111's key for the sigma schedule.
        extra.push(("Schedule type".into(), "Karras".into()));
    }
    extra
}

/// Writes an 8-bit RGB PNG (see [`write_output`] for what each kind of path gets), with
/// `parameters` (if any) in a text chunk keyed `parameters`: `tEXt` when the text is Latin-1,
/// else `iTXt` (UTF-8), as PIL does for A1111.
///
/// `rgb` is `(height, width, 3)` row-major. Errors: zero or mismatched dimensions
/// ([`Error::InvalidArgument`]); any file system or encoding failure ([`Error::Io`] naming
/// `path`), after which no temporary file is left behind.
pub fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    rgb: &[u8],
    parameters: Option<&str>,
) -> Result<()> {
    if let Some(message) = rgb_size_error(width, height, rgb) {
        return Err(Error::invalid(
            "image",
            format!("{message} (writing {})", path.display()),
        ));
    }
    write_output(path, |w| {
        encode_png_to(&mut *w, width, height, rgb, parameters).map_err(|e| png_error(path, e))?;
        w.flush().map_err(|e| Error::io(path, e))
    })
}

/// Why `rgb` is not a `width`×`height` RGB image (zero or mismatched dimensions), if it is not.
fn rgb_size_error(width: u32, height: u32, rgb: &[u8]) -> Option<String> {
    let expected = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(3));
    (width == 0 || height == 0 || expected != Some(rgb.len())).then(|| {
        format!(
            "{width}x{height} RGB needs {} bytes, got {}",
            expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
            rgb.len()
        )
    })
}

/// The PNG of [`write_png`] into `w` (dimensions already checked).
fn encode_png_to(
    w: impl Write,
    width: u32,
    height: u32,
    rgb: &[u8],
    parameters: Option<&str>,
) -> std::result::Result<(), png::EncodingError> {
    let mut encoder = png::Encoder::new(w, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    if let Some(text) = parameters {
        let latin1 = text.chars().all(|c| (c as u32) < 256);
        let (key, text) = (PARAMETERS_KEYWORD.to_string(), text.to_string());
        if latin1 {
            encoder.add_text_chunk(key, text)?;
        } else {
            encoder.add_itxt_chunk(key, text)?;
        }
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()
}

/// The PNG [`write_png`] would write, in memory (the server's base64 images).
pub fn encode_png(
    width: u32,
    height: u32,
    rgb: &[u8],
    parameters: Option<&str>,
) -> Result<Vec<u8>> {
    if let Some(message) = rgb_size_error(width, height, rgb) {
        return Err(Error::invalid("image", message));
    }
    let mut bytes = Vec::new();
    encode_png_to(&mut bytes, width, height, rgb, parameters)
        .map_err(|e| Error::invalid("image", format!("PNG encoding failed: {e}")))?;
    Ok(bytes)
}

/// The pipeline's `[0, 1]` output to 8-bit as diffusers' `numpy_to_pil`: `round(v · 255)`
/// with ties to even, as the CLI writes its PNGs.
pub fn unit_to_rgb8(image: &[f32]) -> Vec<u8> {
    image
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
        .collect()
}

/// diffusers' `denormalize`: `(x * 0.5 + 0.5).clamp(0, 1)` in f32. NaN stays NaN.
#[inline]
fn denormalize(x: f32) -> f32 {
    (x * 0.5 + 0.5).clamp(0.0, 1.0)
}

/// VAE output in [-1, 1] (any layout) to [0, 1], as diffusers' `output_type="np"`:
/// `(x * 0.5 + 0.5).clamp(0, 1)`. NaN stays NaN (for the caller to detect).
pub fn to_unit_range(image: &[f32]) -> Vec<f32> {
    image.iter().map(|&x| denormalize(x)).collect()
}

/// VAE output in [-1, 1] (any layout, e.g. `(H, W, 3)`) to 8-bit values, as diffusers'
/// `output_type="pil"`: `(x * 0.5 + 0.5).clamp(0, 1)`, then `(v * 255).round()` with numpy's
/// round-half-to-even, then `uint8`. Out-of-range values saturate; NaN becomes 0 (detect NaN
/// separately: a NaN image is a failed run, not a black one).
pub fn float_image_to_rgb8(image: &[f32]) -> Vec<u8> {
    image
        .iter()
        .map(|&x| {
            let v = (denormalize(x) * 255.0).round_ties_even();
            if v.is_nan() {
                0
            } else {
                v as u8
            }
        })
        .collect()
}

/// Reads an image for img2img: returns `(width, height, values)` with values `(H, W, 3)` in
/// [-1, 1], as diffusers' preprocessing (`v / 255` in f32, then `2 * v - 1`).
///
/// Any PNG colour type is accepted: grey is replicated, alpha dropped (PIL's `convert("RGB")`),
/// 16-bit samples scaled to 8 bits. Only PNG support is compiled in. Errors name the file:
/// missing/unreadable files are [`Error::Io`] with the OS error, undecodable or truncated
/// content [`Error::Io`] saying it cannot be decoded (kind `InvalidData` or `UnexpectedEof`).
pub fn read_image_rgb(path: &Path) -> Result<(u32, u32, Vec<f32>)> {
    let (width, height, rgb) = read_image_rgb8(path)?;
    let values = rgb
        .iter()
        .map(|&b| 2.0 * (b as f32 / 255.0) - 1.0)
        .collect();
    Ok((width, height, values))
}

/// An image file as 8-bit RGB (H, W, 3): width, height, bytes. Errors name the file.
pub fn read_image_rgb8(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let decoded = reader.decode().map_err(|e| {
        let kind = match &e {
            image::ImageError::IoError(io) => io.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        let message = format!("cannot decode image (only PNG is supported): {e}");
        Error::io(path, io::Error::new(kind, message))
    })?;
    let rgb = decoded.to_rgb8();
    let (width, height) = rgb.dimensions();
    Ok((width, height, rgb.into_raw()))
}

/// Writes one f32 tensor as a minimal safetensors file (through [`write_output`]): an 8-byte
/// little-endian header length, the JSON header
/// `{"<name>":{"data_offsets":[0,N],"dtype":"F32","shape":[…]}}` padded with spaces to a
/// multiple of 8, then the little-endian data.
///
/// Errors: empty or reserved (`__metadata__`) name, or `shape` that does not hold
/// `data.len()` values ([`Error::InvalidArgument`]); file system failures ([`Error::Io`]).
pub fn write_tensor_safetensors(
    path: &Path,
    name: &str,
    shape: &[usize],
    data: &[f32],
) -> Result<()> {
    if name.is_empty() || name == "__metadata__" {
        return Err(Error::invalid(
            "tensor name",
            format!("{name:?} cannot be used (writing {})", path.display()),
        ));
    }
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if numel != Some(data.len()) {
        return Err(Error::invalid(
            "tensor shape",
            format!(
                "{name}: shape {shape:?} does not hold {} values (writing {})",
                data.len(),
                path.display()
            ),
        ));
    }
    let nbytes = data.len() * 4;
    let header = serde_json::json!({
        name: { "dtype": "F32", "shape": shape, "data_offsets": [0, nbytes] }
    });
    let mut header = header.to_string().into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    write_output(path, |w| {
        let io_err = |e| Error::io(path, e);
        w.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io_err)?;
        w.write_all(&header).map_err(io_err)?;
        for chunk in data.chunks(16 * 1024) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes).map_err(io_err)?;
        }
        w.flush().map_err(io_err)
    })
}

/// Reads tensor `name` from a safetensors file as f32 (from F32, F16 or BF16): `(shape, data)`.
/// Errors name the file and the tensor (through [`Weights`]).
pub fn read_tensor_safetensors(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    Weights::open(path)?.root().get_any(name)
}
