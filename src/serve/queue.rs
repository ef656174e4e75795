//! The bounded FIFO between HTTP handlers and the GPU worker.
//!
//! A handler submits a [`Work`] item and awaits the worker's reply. When `--queue` jobs are
//! already waiting the submission fails at once with 503 + `Retry-After` (clients and load
//! balancers retry later or elsewhere) instead of piling up. A waiting or running job whose
//! client disconnects is cancelled: hyper drops the handler's future, and `DisconnectGuard`'s
//! `Drop` raises the job's flag, which the worker checks before starting it and between steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::api_error::ApiError;
use super::status::{JobFlags, Status};
use crate::error::Error;
use crate::pipeline::{GenerateOptions, InitImage};

/// Seconds a client is told to wait when the queue is full.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Images to draw with one model: one `generate` (batch 1) per seed, so every image can be
/// reproduced from its own seed, as A1111's `all_seeds` promise.
#[derive(Debug)]
pub struct GenerateJob {
    /// The catalog name of the model to use.
    pub model: String,
    /// Everything but the seed and the init image (batch 1).
    pub options: GenerateOptions,
    pub seeds: Vec<u64>,
    /// img2img: image k starts from `init_images[k % len]`; empty for text-to-image.
    pub init_images: Vec<InitImage>,
    /// LoRA files and multipliers from the prompt's `<lora:…>` tags (empty: the base model).
    pub loras: Vec<(std::path::PathBuf, f32)>,
}

/// What a handler asks the worker to do.
#[derive(Debug)]
pub enum Work {
    Generate(Box<GenerateJob>),
    /// Load (switch to) this catalog model.
    LoadModel(String),
}

/// One generated image, 8-bit RGB `(height, width, 3)`.
#[derive(Debug, Clone)]
pub struct Generated {
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// The scheduler that ran (short name or diffusers class name).
    pub scheduler: String,
    /// What the model predicted (written into the infotext, as the CLI does).
    pub prediction_type: crate::schedulers::PredictionType,
}

/// A successful job.
#[derive(Debug)]
pub enum Reply {
    /// Images in seed order; `interrupted` when `/interrupt` stopped the job after these.
    Images {
        images: Vec<Generated>,
        interrupted: bool,
    },
    Loaded,
}

/// Why a job produced nothing.
#[derive(Debug)]
pub enum JobError {
    /// `/sdapi/v1/interrupt` before the first image was done.
    Interrupted,
    /// SIGINT/SIGTERM.
    ShuttingDown,
    /// The pipeline failed (bad size, failed model load, device lost…).
    Failed(Error),
}

/// A job as the worker receives it.
pub struct Job {
    pub work: Work,
    pub flags: JobFlags,
    pub reply: oneshot::Sender<Result<Reply, JobError>>,
}

/// Raises the job's `disconnected` flag when the awaiting handler is dropped.
struct DisconnectGuard(Arc<AtomicBool>);

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The sending side of the job queue.
#[derive(Clone)]
pub struct JobQueue {
    tx: SyncSender<Job>,
    status: Arc<Status>,
}

impl JobQueue {
    /// A queue into `tx` (a `sync_channel` whose bound is the `--queue` length).
    pub fn new(tx: SyncSender<Job>, status: Arc<Status>) -> Self {
        JobQueue { tx, status }
    }

    /// Queues `work` and waits for the worker's answer; 503 when the queue is full or the
    /// server is stopping. Dropping the returned future cancels the job.
    pub async fn run(&self, work: Work) -> Result<Result<Reply, JobError>, ApiError> {
        if self.status.is_shutting_down() {
            return Err(ApiError::unavailable(
                "the server is shutting down",
                RETRY_AFTER_SECS,
            ));
        }
        let flags = JobFlags::default();
        let _guard = DisconnectGuard(flags.disconnected.clone());
        let (reply, answer) = oneshot::channel();
        let job = Job { work, flags, reply };
        self.status.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.tx.try_send(job) {
            self.status.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(match e {
                TrySendError::Full(_) => ApiError::unavailable(
                    "the queue is full (--queue): retry later",
                    RETRY_AFTER_SECS,
                ),
                TrySendError::Disconnected(_) => {
                    ApiError::unavailable("the GPU worker has stopped", RETRY_AFTER_SECS)
                }
            });
        }
        answer.await.map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the GPU worker stopped without answering",
            )
        })
    }
}
