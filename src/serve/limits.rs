//! Per-request limits set by flags (`--max-pixels`, `--max-steps`, `--max-images`,
//! `--max-body-mib`): a request over one is refused with a 422 naming the field and the limit
//! before it is queued, so one client cannot hold the GPU for minutes or exhaust its memory.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_error::ApiError;

/// What one request may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest width × height.
    pub max_pixels: u64,
    /// Largest `steps`.
    pub max_steps: u32,
    /// Largest number of images per request (A1111 `batch_size × n_iter`, OpenAI `n`).
    pub max_images: u32,
    /// Largest request body (base64 init images included).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: 1024 * 1024,
            max_steps: 150,
            max_images: 8,
            max_body_bytes: 32 << 20,
        }
    }
}

impl Limits {
    /// Checks a request's size, steps and image count. `size_fields` name where the size came
    /// from (`width`/`height` for A1111, `size` for OpenAI); an absent side is the model's
    /// native one, which the operator chose with the model.
    pub fn check(
        &self,
        size: [Option<u32>; 2],
        size_fields: [&str; 2],
        steps: u32,
        images: u64,
        images_field: &str,
    ) -> Result<(), ApiError> {
        for (value, field) in size.into_iter().zip(size_fields) {
            if value == Some(0) {
                return Err(ApiError::field(field, "must be at least 1"));
            }
        }
        let pixels = size.iter().map(|v| v.unwrap_or(1) as u64).product::<u64>();
        if pixels > self.max_pixels {
            let side = |v: Option<u32>| v.map_or("native".to_string(), |v| v.to_string());
            return Err(ApiError::field(
                size_fields[0],
                format!(
                    "{}×{} is over the server's limit of {} pixels (--max-pixels)",
                    side(size[0]),
                    side(size[1]),
                    self.max_pixels
                ),
            ));
        }
        if steps == 0 || steps > self.max_steps {
            return Err(ApiError::field(
                "steps",
                format!(
                    "{steps} is outside 1..={} (the server's --max-steps)",
                    self.max_steps
                ),
            ));
        }
        if images == 0 || images > self.max_images as u64 {
            return Err(ApiError::field(
                images_field,
                format!(
                    "{images} images is outside 1..={} per request (the server's --max-images)",
                    self.max_images
                ),
            ));
        }
        Ok(())
    }
}

/// Middleware: a request whose `Content-Length` is over `max` bytes gets a 413 at once, before
/// its body is read (bodies without a length are cut off at `max` by `DefaultBodyLimit`).
pub async fn reject_large_bodies(
    State(max): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > max as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body ({n} bytes) is larger than the server's limit of {max} bytes \
                 (--max-body-mib)"
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_names_its_field() {
        let limits = Limits {
            max_pixels: 64 * 64,
            max_steps: 10,
            max_images: 2,
            max_body_bytes: 1024,
        };
        let f = ["width", "height"];
        let size = |w: u32, h: u32| [Some(w), Some(h)];
        assert!(limits.check(size(64, 64), f, 10, 2, "batch_size").is_ok());
        assert!(limits.check([None, None], f, 10, 2, "batch_size").is_ok());
        let e = limits
            .check(size(64, 65), f, 10, 2, "batch_size")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("width"));
        assert!(e.message.contains("--max-pixels"), "{}", e.message);
        let e = limits
            .check([None, Some(4097)], f, 10, 2, "batch_size")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("width"));
        let e = limits
            .check(size(8, 0), f, 10, 2, "batch_size")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("height"));
        let e = limits
            .check(size(8, 8), f, 11, 2, "batch_size")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps"));
        let e = limits.check(size(8, 8), f, 0, 2, "batch_size").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps"));
        let e = limits.check(size(8, 8), f, 5, 3, "n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("n"));
        // No overflow at the extremes.
        assert!(limits
            .check(size(u32::MAX, u32::MAX), f, 5, 1, "n")
            .is_err());
    }
}
