//! The GPU worker: one thread that opens the adapter, owns the loaded [`Pipeline`] and runs
//! queued jobs one at a time in FIFO order. The pipeline is created on this thread and never
//! leaves it, so the HTTP side needs nothing from it but the queue and the shared [`Status`].

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::models::ModelCatalog;
use super::queue::{GenerateJob, Generated, Job, JobError, Reply, Work};
use super::status::{JobFlags, Status};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, GpuOptions};
use crate::pipeline::{Pipeline, PreviewMethod, PreviewOptions, Progress};

/// What the worker needs to start.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub gpu: GpuOptions,
    /// None = auto (f16 on GPUs with shader-f16, f32 on CPU adapters).
    pub dtype: Option<DType>,
    pub catalog: ModelCatalog,
    /// A TAESD folder that decodes live previews (else the latent→RGB projection).
    pub taesd: Option<std::path::PathBuf>,
}

struct Worker {
    gpu: Gpu,
    config: WorkerConfig,
    status: Arc<Status>,
    /// The loaded model's catalog name and pipeline.
    loaded: Option<(String, Pipeline)>,
    /// The LoRAs merged into the loaded model (re-merged only when a job asks for others).
    loras: Vec<(std::path::PathBuf, f32)>,
}

/// Starts the worker: opens the adapter and loads the default model, then serves `jobs` until
/// every sender is gone. Returns once the model is loaded (or with the error that stopped it),
/// along with the adapter's name.
pub fn spawn(
    config: WorkerConfig,
    jobs: Receiver<Job>,
    status: Arc<Status>,
) -> Result<(JoinHandle<()>, String)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("stipple-gpu-worker".into())
        .spawn(move || {
            let started = Gpu::new(&config.gpu).and_then(|gpu| {
                let mut worker = Worker {
                    gpu,
                    config,
                    status,
                    loaded: None,
                    loras: Vec::new(),
                };
                let default = worker.config.catalog.default_model().name.clone();
                worker.ensure_loaded(&default)?;
                Ok(worker)
            });
            match started {
                Ok(mut worker) => {
                    let _ = ready_tx.send(Ok(worker.gpu.info.name.clone()));
                    while let Ok(job) = jobs.recv() {
                        worker.status.waiting.fetch_sub(1, Ordering::SeqCst);
                        worker.run(job);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| Error::io("stipple-gpu-worker thread", e))?;
    match ready_rx.recv() {
        Ok(Ok(adapter)) => Ok((handle, adapter)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(Error::invalid(
                "GPU worker",
                "stopped while loading the model (panicked)",
            ))
        }
    }
}

impl Worker {
    /// Loads `name` unless it is loaded; the previous model is dropped first (one model in GPU
    /// memory at a time).
    fn ensure_loaded(&mut self, name: &str) -> Result<&mut Pipeline> {
        if self.loaded.as_ref().is_none_or(|(n, _)| n != name) {
            self.loaded = None;
            self.loras.clear();
            self.status.set_loaded_model(None);
            let entry = self.config.catalog.find(name).ok_or_else(|| {
                Error::invalid(
                    "sd_model_checkpoint",
                    format!(
                        "unknown model {name:?}; available: {:?}",
                        self.config.catalog.names()
                    ),
                )
            })?;
            let mut pipeline = Pipeline::load(&self.gpu, &entry.path, self.config.dtype)?;
            if let Some(taesd) = &self.config.taesd {
                pipeline.set_taesd(taesd)?;
            }
            self.status.set_loaded_model(Some(&entry.name));
            self.loaded = Some((entry.name.clone(), pipeline));
        }
        let (_, pipeline) = self.loaded.as_mut().expect("loaded just above");
        Ok(pipeline)
    }

    fn run(&mut self, job: Job) {
        if job.flags.disconnected.load(Ordering::SeqCst) {
            return; // nobody is waiting for it
        }
        if self.status.is_shutting_down() {
            let _ = job.reply.send(Err(JobError::ShuttingDown));
            return;
        }
        let result = match job.work {
            Work::LoadModel(name) => self
                .ensure_loaded(&name)
                .map(|_| Reply::Loaded)
                .map_err(JobError::Failed),
            Work::Generate(generate) => {
                self.status.start_job(&job.flags, generate.seeds.len());
                let result = self.generate(*generate, &job.flags);
                self.status.end_job();
                result
            }
        };
        let _ = job.reply.send(result);
    }

    /// One `generate` per seed; stops between steps when the job's client disconnects, it is
    /// interrupted or the server stops.
    fn generate(&mut self, job: GenerateJob, flags: &JobFlags) -> Result<Reply, JobError> {
        let status = self.status.clone();
        self.ensure_loaded(&job.model).map_err(JobError::Failed)?;
        let pipeline = &mut self.loaded.as_mut().expect("loaded just above").1;
        if self.loras != job.loras {
            // On an error the weights are unchanged, and so is the recorded set.
            pipeline.set_loras(&job.loras).map_err(JobError::Failed)?;
            self.loras = job.loras.clone();
        }
        let live = status.live_previews();
        let previews = live.enabled.then(|| PreviewOptions {
            every: live.every,
            method: if pipeline.has_taesd() {
                PreviewMethod::Taesd
            } else {
                PreviewMethod::Linear
            },
        });
        let mut images = Vec::with_capacity(job.seeds.len());
        for (k, &seed) in job.seeds.iter().enumerate() {
            let mut options = job.options.clone();
            options.seed = seed;
            if !job.init_images.is_empty() {
                options.init_image = Some(job.init_images[k % job.init_images.len()].clone());
            }
            status.set_progress(k, 0, 0);
            let out = pipeline.generate_with_previews(&options, previews.as_ref(), |info| {
                status.set_progress(k, info.step, info.total);
                if let Some(preview) = &info.preview {
                    // A preview that cannot be encoded is skipped, not fatal.
                    if let Ok(png) = super::images::preview_png_base64(preview) {
                        status.set_preview(png);
                    }
                }
                let stop = flags.disconnected.load(Ordering::SeqCst)
                    || flags.interrupted.load(Ordering::SeqCst)
                    || status.is_shutting_down();
                if stop {
                    Progress::Cancel
                } else {
                    Progress::Continue
                }
            });
            match out {
                Ok(out) => images.push(Generated {
                    seed,
                    width: out.width,
                    height: out.height,
                    rgb: super::images::unit_to_rgb8(&out.images),
                    scheduler: out.scheduler,
                    prediction_type: out.prediction_type,
                }),
                Err(Error::Cancelled) if status.is_shutting_down() => {
                    return Err(JobError::ShuttingDown)
                }
                Err(Error::Cancelled) if images.is_empty() => return Err(JobError::Interrupted),
                Err(Error::Cancelled) => {
                    return Ok(Reply::Images {
                        images,
                        interrupted: true,
                    })
                }
                Err(e) => return Err(JobError::Failed(e)),
            }
        }
        Ok(Reply::Images {
            images,
            interrupted: false,
        })
    }
}
