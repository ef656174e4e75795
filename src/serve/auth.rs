//! `--api-key`: every route but `/health` needs `Authorization: Bearer KEY` (OpenAI clients) or
//! HTTP Basic with KEY as the password, any user name (A1111's `--api-auth user:KEY`, as Open
//! WebUI and SillyTavern send it). Missing or wrong credentials are a 401 in the route's error
//! shape.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::api_error::{ApiError, OpenAiError};

/// Equal lengths and bytes, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Authorization` header value carries `key`.
pub fn authorized(value: Option<&str>, key: &str) -> bool {
    let Some((scheme, credentials)) = value.and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return constant_time_eq(credentials.as_bytes(), key.as_bytes());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = BASE64.decode(credentials) else {
            return false;
        };
        let password = match decoded.iter().position(|&b| b == b':') {
            Some(colon) => &decoded[colon + 1..],
            None => &decoded[..],
        };
        return constant_time_eq(password, key.as_bytes());
    }
    false
}

/// Middleware: passes `/health` and authorized requests, answers 401 otherwise.
pub async fn require_key(State(key): State<Arc<str>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" {
        return next.run(request).await;
    }
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorized(value, &key) {
        return next.run(request).await;
    }
    let error = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API key: send `Authorization: Bearer KEY` or HTTP Basic with KEY as the password",
    );
    if path.starts_with("/v1/") {
        OpenAiError(error).into_response()
    } else {
        error.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic() {
        let basic = |s: &str| format!("Basic {}", BASE64.encode(s));
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        assert!(authorized(Some("bearer  s3cret "), "s3cret"));
        assert!(authorized(Some(&basic("user:s3cret")), "s3cret"));
        assert!(authorized(Some(&basic(":s3cret")), "s3cret"));
        assert!(authorized(Some(&basic("s3cret")), "s3cret"));
        assert!(!authorized(None, "s3cret"));
        assert!(!authorized(Some("Bearer s3cre"), "s3cret"));
        assert!(!authorized(Some("Bearer s3crett"), "s3cret"));
        assert!(!authorized(Some(&basic("s3cret:user")), "s3cret"));
        assert!(!authorized(Some("Basic !!!"), "s3cret"));
        assert!(!authorized(Some("Token s3cret"), "s3cret"));
        assert!(!authorized(Some("s3cret"), "s3cret"));
    }
}
