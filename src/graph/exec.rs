//! Running a [`Plan`]: the whole graph recorded into one command encoder and one compute pass.

use super::Plan;
use crate::error::Result;
use crate::gpu::profile::PassTimer;

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

    /// Submit one run. Returns once the work is queued; reading an output waits for it.
    pub fn run(&self) -> Result<()> {
        let gpu = &self.gpu;
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
}

/// Time of one dispatch in a profiled run.
#[derive(Clone, Debug)]
pub struct DispatchTime {
    pub label: String,
    /// `shader::entry`.
    pub kernel: String,
    pub seconds: f64,
}

impl Plan {
    /// Run once with a timestamp between every two dispatches (TIMESTAMP_QUERY_INSIDE_PASSES)
    /// and return each dispatch's GPU time. A separate mode: the timestamps themselves cost a
    /// little, so use [`Plan::run_timed`] for totals. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_profiled(&self) -> Result<Vec<DispatchTime>> {
        let gpu = &self.gpu;
        if !gpu
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
        {
            return Err(crate::Error::invalid(
                "profile",
                "the adapter lacks timestamp queries inside passes (TIMESTAMP_QUERY_INSIDE_PASSES)",
            ));
        }
        let mut times = Vec::with_capacity(self.steps.len());
        // Query sets hold at most 4096 timestamps: profile in chunks of dispatches.
        const CHUNK: usize = 4000;
        for (chunk_index, chunk) in self.steps.chunks(CHUNK).enumerate() {
            let count = chunk.len() as u32 + 1;
            let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: count as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            gpu.scoped("profiling plan", || {
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    // Earlier chunks ran before: replay them untimed so inputs are as in a run.
                    for step in &self.steps[..chunk_index * CHUNK] {
                        pass.set_pipeline(&step.pipeline);
                        pass.set_bind_group(0, &step.bind_group, &[]);
                        let [x, y, z] = step.workgroups;
                        pass.dispatch_workgroups(x, y, z);
                    }
                    pass.write_timestamp(&queries, 0);
                    for (i, step) in chunk.iter().enumerate() {
                        pass.set_pipeline(&step.pipeline);
                        pass.set_bind_group(0, &step.bind_group, &[]);
                        let [x, y, z] = step.workgroups;
                        pass.dispatch_workgroups(x, y, z);
                        pass.write_timestamp(&queries, i as u32 + 1);
                    }
                }
                encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
                gpu.queue.submit([encoder.finish()]);
            })?;
            let bytes = crate::gpu::tensor::read_buffer(gpu, &resolved, "profile")?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
            let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
            for (i, step) in chunk.iter().enumerate() {
                let dt = ticks[i + 1].saturating_sub(ticks[i]) as f64 * period;
                times.push(DispatchTime {
                    label: step.label.clone(),
                    kernel: step.kernel.clone(),
                    seconds: dt,
                });
            }
        }
        Ok(times)
    }
}
