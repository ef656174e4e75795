//! Request bodies: JSON parsed with the path of the offending field, so a wrong type is a 422
//! naming that field (`steps: invalid type: string "20", expected u32`) and broken JSON a 400.
//! Unknown fields are ignored by the request types (`#[serde(default)]`, no `deny_unknown_fields`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::api_error::ApiError;

/// The body as JSON `T` (and as a raw JSON value, for echoing it back), or a 4xx error: 413 over
/// the body limit, 400 for broken or non-object JSON, 422 naming the field with a wrong type.
pub fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<(T, serde_json::Value), ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than the server's limit (--max-body-mib)".to_string()
        } else {
            e.body_text()
        };
        ApiError::new(status, message)
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
        ));
    }
    let parsed = serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = e.path().to_string();
        ApiError::field(field, e.into_inner().to_string())
    })?;
    Ok((parsed, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(default)]
    struct Request {
        steps: Option<u32>,
        override_settings: Option<std::collections::HashMap<String, String>>,
    }

    fn parse(text: &str) -> Result<Request, ApiError> {
        parse_json::<Request>(Ok(Bytes::from(text.to_string()))).map(|(r, _)| r)
    }

    #[test]
    fn fields_and_errors() {
        assert_eq!(
            parse(r#"{"steps": 3, "unknown": [1]}"#).unwrap().steps,
            Some(3)
        );
        let e = parse(r#"{"steps": "3"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("steps"));
        let e = parse(r#"{"override_settings": {"sd_model_checkpoint": 5}}"#).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("override_settings.sd_model_checkpoint")
        );
        let e = parse(r#"{"steps": 3"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse("[1, 2]").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse(r#"{"steps": -1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps"));
    }
}
