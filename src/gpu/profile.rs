//! GPU timing of one compute pass with timestamp queries (TIMESTAMP_QUERY).

#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::tensor::read_buffer;
use crate::gpu::Gpu;

/// Two timestamps (pass begin, pass end) and the buffer they resolve into.
pub struct PassTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
}

impl PassTimer {
    pub fn new(gpu: &Gpu) -> Self {
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pass timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pass timer resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        PassTimer { queries, resolved }
    }

    pub fn timestamp_writes(&self) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        }
    }

    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0);
    }

    /// Seconds between the two timestamps (after the work completed; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_seconds(&self, gpu: &Gpu) -> crate::Result<f64> {
        let bytes = read_buffer(gpu, &self.resolved, "pass timer")?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period_ns = gpu.queue.get_timestamp_period() as f64;
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * period_ns * 1e-9)
    }
}
