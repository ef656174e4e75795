//! A profile of every plan run on a device (`stipple generate --profile`): while enabled,
//! [`Plan::run`](crate::graph::Plan::run) records a GPU timestamp before its first dispatch and
//! after each one and leaves the resolved timestamps here; [`Collector::take`] reads them back
//! once the work is done (a readback per run, only then). Disabled (the default), a run checks
//! one atomic flag and records nothing else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a profile shows of one dispatch of a plan.
#[derive(Clone, Debug)]
pub struct StepInfo {
    /// The diffusers module path of the node (`down_blocks.1.attentions.0…`).
    pub label: String,
    /// `shader::entry`.
    pub kernel: String,
    /// FLOPs counted from the graph ([`crate::graph::flops`]).
    pub flops: u64,
    /// Shapes of the bound values ([`crate::graph::flops::bound_shapes`]).
    pub shapes: String,
}

/// One run's dispatch times.
#[derive(Clone, Debug)]
pub struct TimedRun {
    /// The plan's model (`unet`, `text encoder`, `vae decoder`, …).
    pub model: &'static str,
    pub steps: Arc<[StepInfo]>,
    /// GPU clock at the first timestamp, in seconds (comparable between runs of one device).
    pub start_seconds: f64,
    /// Seconds of each dispatch, in `steps` order.
    pub seconds: Vec<f64>,
}

/// A run whose timestamps are resolved into `resolved` but not read back yet.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // read back natively only
pub(crate) struct PendingRun {
    pub model: &'static str,
    pub steps: Arc<[StepInfo]>,
    /// `steps.len() + 1` u64 ticks (QUERY_RESOLVE | COPY_SRC).
    pub resolved: wgpu::Buffer,
}

/// Per-device profile of plan runs (shared by the clones of a [`crate::Gpu`]).
#[derive(Default)]
pub struct Collector {
    enabled: AtomicBool,
    pending: Mutex<Vec<PendingRun>>,
}

impl Collector {
    /// Start (or stop) profiling every plan run on the device.
    pub fn enable(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn push(&self, run: PendingRun) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(run);
        }
    }

    /// Read back and return every run collected since the last call, in submission order
    /// (waits for the GPU; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn take(&self, gpu: &crate::Gpu) -> crate::Result<Vec<TimedRun>> {
        let pending = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Ok(Vec::new()),
        };
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        pending
            .into_iter()
            .map(|run| {
                let bytes = crate::gpu::tensor::read_buffer(gpu, &run.resolved, "profile")?;
                let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                Ok(TimedRun {
                    model: run.model,
                    start_seconds: ticks.first().copied().unwrap_or(0) as f64 * period,
                    seconds: tick_deltas(&ticks, period),
                    steps: run.steps,
                })
            })
            .collect()
    }
}

/// Seconds between consecutive timestamps.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn tick_deltas(ticks: &[u64], period_seconds: f64) -> Vec<f64> {
    ticks
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 * period_seconds)
        .collect()
}
