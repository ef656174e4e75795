//! OpenAI's images API: `POST /v1/images/generations` and `GET /v1/models`.
//!
//! `prompt` (required), `n`, `size` ("WxH"; absent or "auto" = the model's native size) and
//! `response_format` ("b64_json", also the answer when absent: the server keeps no files to
//! link to, so "url" is refused). `model` selects a model of `/v1/models` by name; other names
//! (clients default to "dall-e-2") use the selected model. stipple extensions: `negative_prompt`,
//! `steps`, `cfg_scale`, `seed`, `sampler_name`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_error::{ApiError, OpenAiError};
use super::body::parse_json;
use super::generation;
use super::samplers;
use super::status::unix_now;
use super::AppState;
use crate::pipeline::GenerateOptions;

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct ImagesRequest {
    prompt: Option<String>,
    n: Option<u32>,
    size: Option<String>,
    response_format: Option<String>,
    model: Option<String>,
    negative_prompt: Option<String>,
    steps: Option<u32>,
    cfg_scale: Option<f32>,
    seed: Option<i64>,
    sampler_name: Option<String>,
}

/// The `/v1` routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/images/generations", post(generations))
        .route("/v1/models", get(models))
}

/// "WxH" (or "auto") as `[width, height]`.
fn parse_size(size: Option<&str>) -> Result<[Option<u32>; 2], ApiError> {
    let Some(size) = size
        .map(str::trim)
        .filter(|s| !s.eq_ignore_ascii_case("auto"))
    else {
        return Ok([None, None]);
    };
    let parsed = size
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some([w.trim().parse().ok()?, h.trim().parse().ok()?]));
    match parsed {
        Some([w, h]) => Ok([Some(w), Some(h)]),
        None => Err(ApiError::field(
            "size",
            format!("{size:?} is not WIDTHxHEIGHT (e.g. \"512x512\") or \"auto\""),
        )),
    }
}

fn field_of(name: &str) -> String {
    match name {
        "width" | "height" => "size",
        "guidance scale" => "cfg_scale",
        "scheduler" => "sampler_name",
        other => other,
    }
    .to_string()
}

async fn generations(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, OpenAiError> {
    let (request, _) = parse_json::<ImagesRequest>(body)?;
    let prompt = request
        .prompt
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::field("prompt", "is required"))?;
    match request.response_format.as_deref() {
        None | Some("b64_json") => {}
        Some(other) => {
            return Err(ApiError::field(
                "response_format",
                format!(
                    "{other:?} is not supported: use \"b64_json\" (the server stores no files)"
                ),
            )
            .into())
        }
    }
    let size = parse_size(request.size.as_deref())?;
    let scheduler = samplers::resolve(request.sampler_name.as_deref(), None)?;
    let steps = request
        .steps
        .unwrap_or(if scheduler.as_deref() == Some("lcm") {
            4
        } else {
            20
        });
    let n = request.n.unwrap_or(1) as u64;
    state.limits.check(size, ["size", "size"], steps, n, "n")?;
    let seeds = generation::seeds(request.seed, n, "seed")?;
    let model = request
        .model
        .as_deref()
        .and_then(|m| state.catalog.find(m))
        .map_or_else(|| state.status.selected_model(), |m| m.name.clone());
    let options = GenerateOptions {
        prompt: prompt.clone(),
        negative_prompt: request.negative_prompt.unwrap_or_default(),
        steps: steps as usize,
        guidance_scale: request.cfg_scale.unwrap_or(7.0),
        width: size[0].unwrap_or(0) as usize,
        height: size[1].unwrap_or(0) as usize,
        scheduler,
        ..GenerateOptions::default()
    };
    let finished =
        generation::run(&state, &model, &options, seeds, Vec::new(), None, field_of).await?;
    let images = generation::encode(finished.images, finished.infotexts).await?;
    let data: Vec<Value> = images
        .into_iter()
        .map(|b64| json!({"b64_json": b64, "revised_prompt": prompt}))
        .collect();
    Ok(Json(json!({"created": unix_now(), "data": data})))
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = state
        .catalog
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "stipple"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(None).unwrap(), [None, None]);
        assert_eq!(parse_size(Some("auto")).unwrap(), [None, None]);
        assert_eq!(parse_size(Some("512x768")).unwrap(), [Some(512), Some(768)]);
        assert_eq!(parse_size(Some(" 64X32 ")).unwrap(), [Some(64), Some(32)]);
        for bad in ["512", "x512", "512x", "ax b", "-1x5", "1.5x2"] {
            let e = parse_size(Some(bad)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("size"), "{bad}");
        }
    }
}
