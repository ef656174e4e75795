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

    /// Run once and wait; returns the run's GPU time in seconds (timestamp queries when the
    /// adapter has them, else wall-clock time from submit to completion).
    pub fn run_timed(&self) -> Result<f64> {
        let gpu = &self.gpu;
        let timer = gpu.supports_timestamps().then(|| PassTimer::new(gpu));
        let start = std::time::Instant::now();
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
