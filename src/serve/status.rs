//! What the server is doing, shared by the GPU worker (writes) and the HTTP handlers (read):
//! the running job's progress for `/sdapi/v1/progress`, its interrupt flag for
//! `/sdapi/v1/interrupt`, the queue length, the loaded and the selected model, and the live
//! preview setting with the running job's latest preview.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Cancellation flags of one job, checked between denoising steps.
#[derive(Clone, Debug, Default)]
pub struct JobFlags {
    /// The client went away (its response future was dropped).
    pub disconnected: Arc<AtomicBool>,
    /// `POST /sdapi/v1/interrupt` (or `/skip`) while the job ran.
    pub interrupted: Arc<AtomicBool>,
}

/// The job on the GPU now.
#[derive(Debug)]
struct Running {
    flags: JobFlags,
    started: Instant,
    /// A1111's `job_timestamp`: `YYYYMMDDhhmmss` when the job started (UTC).
    timestamp: String,
    images: usize,
    image: usize,
    step: usize,
    steps: usize,
    /// The latest live preview, a base64 PNG.
    preview: Option<String>,
}

/// Live previews for `/sdapi/v1/progress` (`stipple serve --previews --preview-every N`, or
/// A1111's `live_previews_enable` and `show_progress_every_n_steps` options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivePreviews {
    pub enabled: bool,
    /// Steps between previews (≥ 1).
    pub every: usize,
}

impl Default for LivePreviews {
    fn default() -> Self {
        LivePreviews {
            enabled: false,
            every: 5,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    running: Option<Running>,
    /// The model the worker holds (None until the first load ends, or after a failed switch).
    loaded: Option<String>,
    /// The model new jobs use (A1111 `sd_model_checkpoint`).
    selected: String,
    live_previews: LivePreviews,
}

/// One `/sdapi/v1/progress` answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgressReport {
    pub progress: f64,
    pub eta_relative: f64,
    pub state: ProgressState,
    /// The running job's latest preview, a base64 PNG; null when previews are off or none
    /// has been made yet.
    pub current_image: Option<String>,
    pub textinfo: Option<String>,
}

/// A1111's `state` object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgressState {
    pub skipped: bool,
    pub interrupted: bool,
    pub job: String,
    pub job_count: usize,
    pub job_timestamp: String,
    pub job_no: usize,
    pub sampling_step: usize,
    pub sampling_steps: usize,
}

/// Server status shared by handlers and the worker.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<Inner>,
    /// Jobs accepted and not yet taken by the worker.
    pub waiting: AtomicUsize,
    /// Set once SIGINT/SIGTERM arrives: new work is refused, the running job is cancelled.
    pub shutting_down: AtomicBool,
}

/// UTC `YYYYMMDDhhmmss` for a Unix time (civil-from-days, proleptic Gregorian).
fn timestamp(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Status {
    pub fn new(selected: String) -> Status {
        Status {
            inner: Mutex::new(Inner {
                selected,
                ..Inner::default()
            }),
            ..Status::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind: keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn selected_model(&self) -> String {
        self.lock().selected.clone()
    }

    pub fn set_selected_model(&self, name: &str) {
        self.lock().selected = name.to_string();
    }

    pub fn loaded_model(&self) -> Option<String> {
        self.lock().loaded.clone()
    }

    pub fn set_loaded_model(&self, name: Option<&str>) {
        self.lock().loaded = name.map(str::to_string);
    }

    /// The worker starts a job of `images` images.
    pub fn start_job(&self, flags: &JobFlags, images: usize) {
        self.lock().running = Some(Running {
            flags: flags.clone(),
            started: Instant::now(),
            timestamp: timestamp(unix_now()),
            images,
            image: 0,
            step: 0,
            steps: 0,
            preview: None,
        });
    }

    /// Progress within the running job: image `image` (0-based), `step` of `steps` done.
    pub fn set_progress(&self, image: usize, step: usize, steps: usize) {
        if let Some(r) = self.lock().running.as_mut() {
            (r.image, r.step, r.steps) = (image, step, steps);
        }
    }

    /// The running job's latest preview (base64 PNG).
    pub fn set_preview(&self, png_base64: String) {
        if let Some(r) = self.lock().running.as_mut() {
            r.preview = Some(png_base64);
        }
    }

    pub fn live_previews(&self) -> LivePreviews {
        self.lock().live_previews
    }

    /// Turns previews on or off and sets their period (values < 1 are raised to 1).
    pub fn set_live_previews(&self, previews: LivePreviews) {
        self.lock().live_previews = LivePreviews {
            every: previews.every.max(1),
            ..previews
        };
    }

    pub fn end_job(&self) {
        self.lock().running = None;
    }

    /// Interrupts the running job, if any; true when there was one.
    pub fn interrupt(&self) -> bool {
        match &self.lock().running {
            Some(r) => {
                r.flags.interrupted.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Whether a job is on the GPU now.
    pub fn busy(&self) -> bool {
        self.lock().running.is_some()
    }

    /// `/sdapi/v1/progress`.
    pub fn progress(&self) -> ProgressReport {
        let waiting = self.waiting.load(Ordering::SeqCst);
        let inner = self.lock();
        let Some(r) = &inner.running else {
            return ProgressReport {
                progress: 0.0,
                eta_relative: 0.0,
                state: ProgressState {
                    skipped: false,
                    interrupted: false,
                    job: String::new(),
                    job_count: waiting,
                    job_timestamp: "0".into(),
                    job_no: 0,
                    sampling_step: 0,
                    sampling_steps: 0,
                },
                current_image: None,
                textinfo: None,
            };
        };
        let per_image = if r.steps == 0 {
            0.0
        } else {
            r.step as f64 / r.steps as f64
        };
        let progress = ((r.image as f64 + per_image) / r.images.max(1) as f64).clamp(0.0, 1.0);
        let elapsed = r.started.elapsed().as_secs_f64();
        let eta = if progress > 0.0 {
            elapsed / progress - elapsed
        } else {
            0.0
        };
        ProgressReport {
            progress,
            eta_relative: eta,
            state: ProgressState {
                skipped: false,
                interrupted: r.flags.interrupted.load(Ordering::SeqCst),
                job: format!("job {}/{}", r.image + 1, r.images),
                job_count: waiting + 1,
                job_timestamp: r.timestamp.clone(),
                job_no: r.image,
                sampling_step: r.step,
                sampling_steps: r.steps,
            },
            current_image: r.preview.clone(),
            textinfo: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "19700101000000");
        assert_eq!(timestamp(951_782_400), "20000229000000");
        assert_eq!(timestamp(1_700_000_000), "20231114221320");
    }

    #[test]
    fn progress_over_images_and_steps() {
        let status = Status::new("m".into());
        assert_eq!(status.progress().progress, 0.0);
        let flags = JobFlags::default();
        status.start_job(&flags, 2);
        status.set_progress(1, 5, 10);
        let p = status.progress();
        assert!((p.progress - 0.75).abs() < 1e-12);
        assert_eq!(p.state.sampling_step, 5);
        assert_eq!(p.state.job_count, 1);
        assert_eq!(p.current_image, None);
        status.set_preview("cG5n".into());
        assert_eq!(status.progress().current_image.as_deref(), Some("cG5n"));
        assert!(status.interrupt());
        assert!(flags.interrupted.load(Ordering::SeqCst));
        status.end_job();
        assert_eq!(status.progress().current_image, None);
        assert!(!status.interrupt());
    }
}
