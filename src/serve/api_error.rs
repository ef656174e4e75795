//! Errors as HTTP responses: a status, the request field at fault (when one is) and a message.
//!
//! A1111 routes answer `{"error": "<reason>", "field": "steps", "detail": "<message>"}` (the
//! `error`/`detail` keys A1111's own API errors use); OpenAI routes answer OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}` through [`OpenAiError`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::Error;

/// A failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// The request field at fault (`steps`, `init_images[0]`, …).
    pub field: Option<String>,
    pub message: String,
    /// Seconds for a `Retry-After` header (503 when the queue is full or the server stops).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            field: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 422: a field holds a value the server cannot use.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// A pipeline error: bad arguments become 422 naming the request field, the rest 500.
    /// `field_of` maps the library's argument names (`width`, `strength`) to request fields.
    pub fn from_pipeline(e: Error, field_of: impl Fn(&str) -> String) -> Self {
        match e {
            Error::InvalidArgument { name, message } => ApiError::field(field_of(&name), message),
            Error::Limit { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }

    fn reason(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    fn with_headers(&self, body: serde_json::Value) -> Response {
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, Basic realm=\"stipple\""),
            );
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.status, self.message),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.reason(),
            "field": self.field,
            "detail": self.message,
        });
        self.with_headers(body)
    }
}

/// An [`ApiError`] in OpenAI's error shape.
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let kind = match e.status.as_u16() {
            401 => "authentication_error",
            400..=499 => "invalid_request_error",
            503 => "server_overloaded",
            _ => "server_error",
        };
        let body = serde_json::json!({
            "error": {
                "message": e.message,
                "type": kind,
                "param": e.field,
                "code": e.status.as_u16(),
            }
        });
        e.with_headers(body)
    }
}
