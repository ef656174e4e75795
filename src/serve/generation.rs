//! What the A1111 and OpenAI routes share once a request is parsed: queue the job, turn its
//! outcome into images or an HTTP error, and encode each image as a base64 PNG carrying the
//! same A1111 `parameters` text the CLI writes.

use axum::http::StatusCode;

use super::api_error::ApiError;
use super::queue::{GenerateJob, Generated, JobError, Reply, Work};
use super::samplers;
use super::AppState;
use crate::image_io::{a1111_parameters, scheduler_parameters, A1111Parameters};
use crate::pipeline::{GenerateOptions, InitImage};

/// Images of a finished job with their infotexts, and whether `/interrupt` cut it short.
pub struct Finished {
    pub images: Vec<Generated>,
    pub infotexts: Vec<String>,
    pub interrupted: bool,
}

/// Runs `options` once per seed on the worker with `model` (img2img: `init_images` and their
/// `denoising_strength`). `field_of` maps the library's argument names (`width`,
/// `guidance scale`, …) to the request's field names for 422 errors.
pub async fn run(
    state: &AppState,
    model: &str,
    options: &GenerateOptions,
    seeds: Vec<u64>,
    init_images: Vec<InitImage>,
    denoising_strength: Option<f32>,
    field_of: impl Fn(&str) -> String,
) -> Result<Finished, ApiError> {
    // `<lora:NAME:MULTIPLIER>` tags select LoRAs and leave the encoded prompt; the infotext
    // keeps them, as A1111's does.
    let (prompt, tags) = crate::lora::prompt_tags::extract_lora_tags(&options.prompt)
        .map_err(|e| ApiError::field(field_of("prompt"), e.to_string()))?;
    let loras = state.loras.resolve(&tags, &field_of("prompt"))?;
    let job = GenerateJob {
        model: model.to_string(),
        options: GenerateOptions {
            prompt,
            ..options.clone()
        },
        seeds,
        init_images,
        loras,
    };
    match state.queue.run(Work::Generate(Box::new(job))).await? {
        Ok(Reply::Images {
            images,
            interrupted,
        }) => Ok(Finished {
            infotexts: images
                .iter()
                .map(|g| infotext(options, g, model, denoising_strength))
                .collect(),
            images,
            interrupted,
        }),
        Ok(Reply::Loaded) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the worker answered a generation with a model load",
        )),
        Err(JobError::Interrupted) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "interrupted (POST /sdapi/v1/interrupt) before the first image was finished",
        )),
        Err(JobError::ShuttingDown) => Err(ApiError::unavailable(
            "the server is shutting down; the job was cancelled",
            super::queue::RETRY_AFTER_SECS,
        )),
        Err(JobError::Failed(e)) => Err(ApiError::from_pipeline(e, field_of)),
    }
}

/// The A1111 infotext of one image (the PNG's `parameters` chunk, A1111's `infotexts[i]`);
/// img2img passes its `denoising_strength`.
pub fn infotext(
    options: &GenerateOptions,
    image: &Generated,
    model: &str,
    denoising_strength: Option<f32>,
) -> String {
    a1111_parameters(&A1111Parameters {
        prompt: options.prompt.clone(),
        negative_prompt: options.negative_prompt.clone(),
        steps: options.steps as u32,
        sampler: samplers::a1111_name(&image.scheduler).to_string(),
        cfg_scale: options.guidance_scale,
        seed: image.seed,
        width: image.width as u32,
        height: image.height as u32,
        model: model.to_string(),
        denoising_strength,
        extra: scheduler_parameters(&options.scheduler_overrides, image.prediction_type),
    })
}

/// Base64 PNGs, each with its infotext, encoded off the async threads.
pub async fn encode(
    images: Vec<Generated>,
    infotexts: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    tokio::task::spawn_blocking(move || {
        images
            .iter()
            .zip(&infotexts)
            .map(|(g, text)| super::images::png_base64(g.width, g.height, &g.rgb, text))
            .collect::<crate::Result<Vec<String>>>()
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("PNG encoding: {e}"),
        )
    })?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Seeds for `count` images from a request's seed: `None` or -1 = random; image k gets
/// `seed + k` (A1111's `all_seeds`).
pub fn seeds(seed: Option<i64>, count: u64, field: &str) -> Result<Vec<u64>, ApiError> {
    let first = match seed {
        None | Some(-1) => crate::rng::random_seed(),
        Some(s) if s >= 0 => s as u64,
        Some(s) => {
            return Err(ApiError::field(
                field,
                format!("{s}: use -1 for a random seed or a value ≥ 0"),
            ))
        }
    };
    Ok((0..count).map(|k| first.wrapping_add(k)).collect())
}
