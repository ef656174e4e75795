//! Running a [`Plan`]: the whole graph recorded into one command encoder and one compute pass.
//! Profiled runs put a GPU timestamp before the first dispatch and after every dispatch
//! (TIMESTAMP_QUERY_INSIDE_PASSES): [`Plan::run_profiled`] reads them back at once; [`Plan::run`]
//! leaves them to the device's [`Collector`](crate::gpu::collector::Collector) while it is enabled.

use std::sync::Arc;

use super::Plan;
use crate::error::Result;
use crate::gpu::collector::{PendingRun, StepInfo};
use crate::gpu::profile::PassTimer;

/// A query set holds at most 4096 timestamps.
const QUERIES_PER_SET: u32 = 4096;

impl Plan {
    fn record(&self, encoder: &mut wgpu::CommandEncoder, timer: Option<&PassTimer>) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("plan"),
            timestamp_writes: timer.map(PassTimer::timestamp_writes),
        });
        for step in &self.steps {
            pass.set_pipeline(&step.pipeline);
            pass.set_bind_group(0, &step.bind_group, &[]);
            let [x, y, z] = step.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Records the run with a timestamp before the first dispatch and after each one, resolved
    /// into the returned buffer (`dispatches + 1` u64 ticks, QUERY_RESOLVE | COPY_SRC).
    fn record_timestamped(&self, encoder: &mut wgpu::CommandEncoder) -> wgpu::Buffer {
        let device = &self.gpu.device;
        let count = self.steps.len() as u32 + 1;
        let sets: Vec<(wgpu::QuerySet, u32)> = (0..count.div_ceil(QUERIES_PER_SET))
            .map(|i| {
                let n = (count - i * QUERIES_PER_SET).min(QUERIES_PER_SET);
                let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: n,
                });
                (set, n)
            })
            .collect();
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("plan (profiled)"),
                timestamp_writes: None,
            });
            let stamp = |pass: &mut wgpu::ComputePass, j: u32| {
                let (set, _) = &sets[(j / QUERIES_PER_SET) as usize];
                pass.write_timestamp(set, j % QUERIES_PER_SET);
            };
            stamp(&mut pass, 0);
            for (i, step) in self.steps.iter().enumerate() {
                pass.set_pipeline(&step.pipeline);
                pass.set_bind_group(0, &step.bind_group, &[]);
                let [x, y, z] = step.workgroups;
                pass.dispatch_workgroups(x, y, z);
                stamp(&mut pass, i as u32 + 1);
            }
        }
        // Offsets are multiples of 4096 · 8 bytes (the 256-byte resolve alignment holds).
        for (i, (set, n)) in sets.iter().enumerate() {
            let offset = i as u64 * QUERIES_PER_SET as u64 * 8;
            encoder.resolve_query_set(set, 0..*n, &resolved, offset);
        }
        resolved
    }

    /// Submit one run. Returns once the work is queued; reading an output waits for it.
    /// While the device's profile collector is enabled (and the adapter has timestamps inside
    /// passes) the run is timed dispatch by dispatch and handed to it.
    pub fn run(&self) -> Result<()> {
        let gpu = &self.gpu;
        if gpu.profiler.is_enabled() && self.gpu.supports_profiling() {
            let resolved = gpu.scoped("running plan", || {
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                let resolved = self.record_timestamped(&mut encoder);
                gpu.queue.submit([encoder.finish()]);
                resolved
            })?;
            gpu.profiler.push(PendingRun {
                model: self.model_name(),
                steps: self.step_info(),
                resolved,
            });
            return Ok(());
        }
        gpu.scoped("running plan", || {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("plan"),
                });
            self.record(&mut encoder, None);
            gpu.queue.submit([encoder.finish()]);
        })
    }

    /// Run once and wait (native only); returns the run's GPU time in seconds (timestamp queries when the
    /// adapter has them, else wall-clock time from submit to completion).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_timed(&self) -> Result<f64> {
        let gpu = &self.gpu;
        let timer = gpu.supports_timestamps().then(|| PassTimer::new(gpu));
        let start = crate::time::Instant::now();
        gpu.scoped("running plan", || {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("plan"),
                });
            self.record(&mut encoder, timer.as_ref());
            if let Some(t) = &timer {
                t.resolve(&mut encoder);
            }
            gpu.queue.submit([encoder.finish()]);
        })?;
        gpu.wait("running plan")?;
        let wall = start.elapsed().as_secs_f64();
        match timer {
            Some(t) => t.read_seconds(gpu),
            None => Ok(wall),
        }
    }

    /// What profiles show of each dispatch (label, kernel, FLOPs, shapes), built on first use.
    pub fn step_info(&self) -> Arc<[StepInfo]> {
        self.step_info
            .get_or_init(|| {
                let values = &self.graph.values;
                self.graph
                    .dispatches
                    .iter()
                    .zip(&self.steps)
                    .map(|(d, step)| StepInfo {
                        label: step.label.clone(),
                        kernel: step.kernel.clone(),
                        flops: super::flops::dispatch_flops(values, d).flops,
                        shapes: super::flops::bound_shapes(values, d),
                    })
                    .collect()
            })
            .clone()
    }

    /// The model this plan runs, told by its inputs: `unet` (`sample`), `text encoder`
    /// (`inputs_embeds`), `vae decoder` (`z`), `vae encoder` (`image`), else `plan`.
    pub fn model_name(&self) -> &'static str {
        let has = |name: &str| self.inputs.contains_key(name);
        if has("sample") {
            "unet"
        } else if has("inputs_embeds") {
            "text encoder"
        } else if has("z") {
            "vae decoder"
        } else if has("image") {
            "vae encoder"
        } else {
            "plan"
        }
    }
}

/// Time of one dispatch in a profiled run.
#[derive(Clone, Debug)]
pub struct DispatchTime {
    pub label: String,
    /// `shader::entry`.
    pub kernel: String,
    /// From the run's first timestamp to this dispatch's start.
    pub start_seconds: f64,
    pub seconds: f64,
    /// FLOPs counted from the graph ([`super::flops`]).
    pub flops: u64,
    /// Shapes of the bound values.
    pub shapes: String,
}

impl Plan {
    /// Run once with a timestamp before the first dispatch and after each one
    /// (TIMESTAMP_QUERY_INSIDE_PASSES) and return each dispatch's GPU time. A separate mode:
    /// the timestamps themselves cost a little, so use [`Plan::run_timed`] for totals. Native
    /// only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_profiled(&self) -> Result<Vec<DispatchTime>> {
        let gpu = &self.gpu;
        if !self.gpu.supports_profiling() {
            return Err(crate::Error::invalid(
                "profile",
                "the adapter lacks timestamp queries inside passes (TIMESTAMP_QUERY_INSIDE_PASSES)",
            ));
        }
        let resolved = gpu.scoped("profiling plan", || {
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            let resolved = self.record_timestamped(&mut encoder);
            gpu.queue.submit([encoder.finish()]);
            resolved
        })?;
        let bytes = crate::gpu::tensor::read_buffer(gpu, &resolved, "profile")?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        let seconds = crate::gpu::collector::tick_deltas(&ticks, period);
        let mut start = 0.0;
        Ok(self
            .step_info()
            .iter()
            .zip(seconds)
            .map(|(info, s)| {
                let t = DispatchTime {
                    label: info.label.clone(),
                    kernel: info.kernel.clone(),
                    start_seconds: start,
                    seconds: s,
                    flops: info.flops,
                    shapes: info.shapes.clone(),
                };
                start += s;
                t
            })
            .collect())
    }
}
