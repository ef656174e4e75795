//! AUTOMATIC1111's `/sdapi/v1` API, as SillyTavern, Open WebUI and other clients call it.
//!
//! Generation: `POST /sdapi/v1/txt2img` and `/img2img`. Unknown fields are ignored, wrong types
//! are a 422 naming the field. Differences from A1111, by design: absent `width`/`height` mean
//! the model's native size (A1111: 512); every image of `batch_size × n_iter` is its own
//! batch-1 generation with seed `seed + k`, so each is reproducible from its infotext; an
//! interrupted job returns the images finished before the interrupt (409 when there are none).
//!
//! Status and settings: `progress`, `interrupt`/`skip`, `options` (only `sd_model_checkpoint`
//! is acted on), `sd-models`, `samplers`, `schedulers`, and empty lists where stipple has no
//! such feature (`upscalers`, `sd-vae`, `prompt-styles`, `embeddings`); `loras` lists `--lora-dir`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::body::parse_json;
use super::generation;
use super::images::decode_init_image;
use super::inpaint::request_mask;
use super::queue::{JobError, Reply, Work};
use super::samplers::{self, SAMPLERS, SCHEDULES};
use super::AppState;
use crate::pipeline::GenerateOptions;

/// `override_settings`: only the model is honoured.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct OverrideSettings {
    sd_model_checkpoint: Option<String>,
    /// `/options` only: live previews in `/progress` on or off.
    live_previews_enable: Option<bool>,
    /// `/options` only: steps between previews; < 1 turns them off (A1111's -1).
    show_progress_every_n_steps: Option<i64>,
}

/// The fields of `txt2img` / `img2img` that stipple reads.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct GenerationRequest {
    prompt: Option<String>,
    negative_prompt: Option<String>,
    steps: Option<u32>,
    cfg_scale: Option<f32>,
    width: Option<u32>,
    height: Option<u32>,
    seed: Option<i64>,
    sampler_name: Option<String>,
    /// Older clients send the sampler here.
    sampler_index: Option<String>,
    scheduler: Option<String>,
    batch_size: Option<u32>,
    n_iter: Option<u32>,
    denoising_strength: Option<f32>,
    init_images: Option<Vec<String>>,
    /// img2img inpainting: a base64 mask, white = repaint (src/serve/inpaint.rs).
    mask: Option<String>,
    mask_blur: Option<f32>,
    inpainting_mask_invert: Option<Value>,
    override_settings: Option<OverrideSettings>,
}

/// The `/sdapi/v1` routes.
pub fn routes() -> Router<Arc<AppState>> {
    let empty_list = || get(|| async { Json(json!([])) });
    Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/skip", post(interrupt))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/samplers", get(sampler_list))
        .route("/sdapi/v1/schedulers", get(schedule_list))
        .route("/sdapi/v1/upscalers", empty_list())
        .route("/sdapi/v1/latent-upscale-modes", empty_list())
        .route("/sdapi/v1/sd-vae", empty_list())
        .route("/sdapi/v1/loras", get(super::loras::list))
        .route("/sdapi/v1/prompt-styles", empty_list())
        .route(
            "/sdapi/v1/embeddings",
            get(|| async { Json(json!({"loaded": {}, "skipped": {}})) }),
        )
}

async fn txt2img(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    generate(&state, body, false).await
}

async fn img2img(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    generate(&state, body, true).await
}

/// The request field behind one of the library's argument names.
fn field_of(name: &str) -> String {
    match name {
        "guidance scale" => "cfg_scale",
        "strength" => "denoising_strength",
        "init image" => "init_images",
        "batch" => "batch_size",
        "scheduler" => "sampler_name",
        other => other,
    }
    .to_string()
}

async fn generate(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    img2img: bool,
) -> Result<Json<Value>, ApiError> {
    let (request, mut echo) = parse_json::<GenerationRequest>(body)?;
    let sampler = request
        .sampler_name
        .as_deref()
        .or(request.sampler_index.as_deref());
    let scheduler = samplers::resolve(sampler, request.scheduler.as_deref())?;
    let lcm = scheduler.as_deref() == Some("lcm");
    let steps = request.steps.unwrap_or(if lcm { 4 } else { 20 });
    let cfg_scale = request.cfg_scale.unwrap_or(7.0);
    let images = request.batch_size.unwrap_or(1) as u64 * request.n_iter.unwrap_or(1) as u64;
    let size = [request.width, request.height];
    state
        .limits
        .check(size, ["width", "height"], steps, images, "batch_size")?;
    let seeds = generation::seeds(request.seed, images, "seed")?;
    let model = match request
        .override_settings
        .as_ref()
        .and_then(|o| o.sd_model_checkpoint.as_deref())
    {
        Some(name) => state.model_named(name, "override_settings.sd_model_checkpoint")?,
        None => state.status.selected_model(),
    };
    let strength = request.denoising_strength.unwrap_or(0.75);
    let init_images = if img2img {
        if !(0.0..=1.0).contains(&strength) {
            return Err(ApiError::field(
                "denoising_strength",
                format!("{strength} is outside [0, 1]"),
            ));
        }
        let texts = request.init_images.as_deref().unwrap_or_default();
        if texts.is_empty() {
            return Err(ApiError::field(
                "init_images",
                "img2img needs at least one base64 image",
            ));
        }
        let mut decoded = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            // The first image decides the size when the request gives none; the rest follow it.
            let target = match (decoded.first(), request.width, request.height) {
                (_, Some(w), Some(h)) => Some((w, h)),
                (Some(first), _, _) => {
                    let first: &crate::pipeline::InitImage = first;
                    Some((first.width as u32, first.height as u32))
                }
                _ => None,
            };
            let field = format!("init_images[{i}]");
            decoded.push(decode_init_image(
                text,
                &field,
                target,
                state.limits.max_pixels,
                strength,
            )?);
        }
        decoded
    } else {
        Vec::new()
    };
    let (width, height) = match init_images.first() {
        Some(first) => (first.width, first.height),
        None => (
            request.width.unwrap_or(0) as usize,
            request.height.unwrap_or(0) as usize,
        ),
    };
    let mask = match (&request.mask, img2img) {
        (Some(text), true) => Some(request_mask(
            text,
            request.mask_blur,
            request.inpainting_mask_invert.as_ref(),
            state.limits.max_pixels,
        )?),
        _ => None,
    };
    let options = GenerateOptions {
        mask,
        prompt: request.prompt.clone().unwrap_or_default(),
        negative_prompt: request.negative_prompt.clone().unwrap_or_default(),
        steps: steps as usize,
        guidance_scale: cfg_scale,
        width,
        height,
        scheduler,
        ..GenerateOptions::default()
    };
    let denoising_strength = img2img.then_some(strength);
    let finished = generation::run(
        state,
        &model,
        &options,
        seeds,
        init_images,
        denoising_strength,
        field_of,
    )
    .await?;
    let all_seeds: Vec<u64> = finished.images.iter().map(|g| g.seed).collect();
    let first = finished.images.first();
    let sampler_name = first.map_or("", |g| samplers::a1111_name(&g.scheduler));
    let info = json!({
        "prompt": options.prompt,
        "all_prompts": vec![&options.prompt; all_seeds.len()],
        "negative_prompt": options.negative_prompt,
        "all_negative_prompts": vec![&options.negative_prompt; all_seeds.len()],
        "seed": all_seeds.first(),
        "all_seeds": all_seeds,
        "subseed": -1,
        "all_subseeds": vec![-1; all_seeds.len()],
        "subseed_strength": 0,
        "width": first.map(|g| g.width),
        "height": first.map(|g| g.height),
        "sampler_name": sampler_name,
        "cfg_scale": cfg_scale,
        "steps": steps,
        "batch_size": request.batch_size.unwrap_or(1),
        "n_iter": request.n_iter.unwrap_or(1),
        "denoising_strength": denoising_strength,
        "restore_faces": false,
        "sd_model_name": model,
        "sd_model_hash": null,
        "clip_skip": 1,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": finished.infotexts,
        "styles": [],
        "interrupted": finished.interrupted,
        "version": concat!("stipple ", env!("CARGO_PKG_VERSION")),
    });
    // Echo the request (A1111 drops the init images and the mask from it), with the defaults
    // used filled in.
    if let Some(map) = echo.as_object_mut() {
        map.insert("init_images".into(), Value::Null);
        if map.contains_key("mask") {
            map.insert("mask".into(), Value::Null);
        }
        for (key, value) in [
            ("prompt", json!(options.prompt)),
            ("negative_prompt", json!(options.negative_prompt)),
            ("steps", json!(steps)),
            ("cfg_scale", json!(cfg_scale)),
            ("seed", json!(request.seed.unwrap_or(-1))),
            ("sampler_name", json!(sampler_name)),
            ("batch_size", json!(request.batch_size.unwrap_or(1))),
            ("n_iter", json!(request.n_iter.unwrap_or(1))),
        ] {
            map.entry(key).or_insert(value);
        }
    }
    let images = generation::encode(finished.images, finished.infotexts).await?;
    Ok(Json(json!({
        "images": images,
        "parameters": echo,
        "info": info.to_string(),
    })))
}

async fn progress(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!(state.status.progress()))
}

async fn interrupt(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.status.interrupt();
    Json(json!({}))
}

async fn get_options(State(state): State<Arc<AppState>>) -> Json<Value> {
    let live = state.status.live_previews();
    Json(json!({
        "sd_model_checkpoint": state.status.selected_model(),
        "sd_checkpoint_hash": null,
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "samples_format": "png",
        "live_previews_enable": live.enabled,
        "show_progress_every_n_steps": live.every,
    }))
}

/// `POST /sdapi/v1/options`: `sd_model_checkpoint` loads that model now (a 422 names an
/// unknown one); other settings are accepted and ignored.
async fn set_options(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (settings, _) = parse_json::<OverrideSettings>(body)?;
    if settings.live_previews_enable.is_some() || settings.show_progress_every_n_steps.is_some() {
        let mut live = state.status.live_previews();
        if let Some(enabled) = settings.live_previews_enable {
            live.enabled = enabled;
        }
        match settings.show_progress_every_n_steps {
            Some(n) if n < 1 => live.enabled = false,
            Some(n) => live.every = usize::try_from(n).unwrap_or(usize::MAX),
            None => {}
        }
        state.status.set_live_previews(live);
    }
    if let Some(requested) = settings.sd_model_checkpoint {
        let name = state.model_named(&requested, "sd_model_checkpoint")?;
        match state.queue.run(Work::LoadModel(name.clone())).await? {
            Ok(Reply::Loaded) => state.status.set_selected_model(&name),
            Ok(Reply::Images { .. }) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the worker answered a model load with images",
                ))
            }
            Err(JobError::Failed(e)) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("loading model {name:?}: {e}"),
                ))
            }
            Err(_) => {
                return Err(ApiError::unavailable(
                    "the server is shutting down",
                    super::queue::RETRY_AFTER_SECS,
                ))
            }
        }
    }
    Ok(Json(Value::Null))
}

async fn sd_models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<Value> = state
        .catalog
        .models
        .iter()
        .map(|m| {
            json!({
                "title": m.name,
                "model_name": m.name,
                "hash": null,
                "sha256": null,
                "filename": m.path.display().to_string(),
                "config": null,
            })
        })
        .collect();
    Json(json!(models))
}

async fn sampler_list() -> Json<Value> {
    let list: Vec<Value> = SAMPLERS
        .iter()
        .map(|(name, aliases, short)| {
            let aliases: Vec<&str> = std::iter::once(*short)
                .chain(aliases.iter().copied())
                .collect();
            json!({"name": name, "aliases": aliases, "options": {}})
        })
        .collect();
    Json(json!(list))
}

async fn schedule_list() -> Json<Value> {
    let list: Vec<Value> = SCHEDULES
        .iter()
        .map(|(name, label)| {
            json!({"name": name, "label": label, "aliases": null, "default_rho": -1, "need_inner_model": false})
        })
        .collect();
    Json(json!(list))
}
