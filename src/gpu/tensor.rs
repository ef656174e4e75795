//! A GPU tensor: a labelled storage buffer with a shape and a storage dtype.
//!
//! Compute is always f32; `DType` is only how values are stored. Host data is `f32` on both
//! sides of upload/download and converted here.
//!
//! Uploads stream: [`Tensor::from_fill`] produces a tensor's values chunk by chunk
//! ([`UPLOAD_CHUNK`] elements: 4 MiB of f32 scratch, whatever the tensor's size) and queues
//! each chunk with `write_buffer`. wgpu keeps every queued chunk in a staging allocation until
//! a submission that carries it has finished, so after every [`UPLOAD_FLUSH_BYTES`] queued the
//! upload submits and waits: host memory during a model load stays the GPU buffers plus a
//! bounded window, instead of a second copy of the whole model (on lavapipe, where GPU buffers
//! are host memory, that second copy doubled the peak).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Storage dtype of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }

    /// Bytes a buffer of `numel` elements takes: rounded up to 4 because copies and
    /// `write_buffer` work in 4-byte units.
    pub fn buffer_bytes(self, numel: usize) -> u64 {
        ((numel * self.size()).max(4) as u64).div_ceil(4) * 4
    }

    /// Encode f32 host values into this dtype's bytes (padded to `buffer_bytes`).
    pub fn encode(self, data: &[f32]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.buffer_bytes(data.len()) as usize);
        self.encode_into(data, &mut bytes);
        bytes.resize(self.buffer_bytes(data.len()) as usize, 0);
        bytes
    }

    /// Append the little-endian bytes of `data` in this dtype to `out` (no padding).
    pub fn encode_into(self, data: &[f32], out: &mut Vec<u8>) {
        match self {
            DType::F32 => out.extend_from_slice(bytemuck::cast_slice(data)),
            DType::F16 => {
                use half::slice::HalfFloatSliceExt;
                let start = out.len();
                out.resize(start + 2 * data.len(), 0);
                match bytemuck::try_cast_slice_mut::<u8, half::f16>(&mut out[start..]) {
                    // Vectorised (F16C) where the bytes happen to be 2-aligned (always, in
                    // practice: allocations are), else element by element.
                    Ok(halves) if cfg!(target_endian = "little") => {
                        halves.convert_from_f32_slice(data)
                    }
                    _ => {
                        for (c, &x) in out[start..].chunks_exact_mut(2).zip(data) {
                            c.copy_from_slice(&half::f16::from_f32(x).to_le_bytes());
                        }
                    }
                }
            }
        }
    }

    /// Decode `numel` values of this dtype from bytes.
    pub fn decode(self, bytes: &[u8], numel: usize) -> Vec<f32> {
        match self {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes[..numel * 4]),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes[..numel * 2])
                .into_iter()
                .map(f32::from)
                .collect(),
        }
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "F32" | "float32" => Ok(DType::F32),
            "f16" | "F16" | "float16" => Ok(DType::F16),
            _ => Err(Error::invalid(
                "dtype",
                format!("{s:?} (expected f32 or f16)"),
            )),
        }
    }
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A labelled GPU buffer with a shape and dtype. Clones share the buffer.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: Arc<wgpu::Buffer>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub label: String,
    /// A shape without data (a 4-byte buffer): graphs holding placeholders can be planned
    /// ([`crate::Graph::memory`]) but not run.
    pub placeholder: bool,
}

/// Usage of every tensor buffer: bound as storage, uploaded to, read back from.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl Tensor {
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Bytes of the tensor's data (what a real buffer of it takes, also for placeholders).
    pub fn bytes(&self) -> u64 {
        self.dtype.buffer_bytes(self.numel())
    }

    /// A tensor with a shape but no data, for planning memory without weights.
    pub fn placeholder(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 4,
            usage: TENSOR_USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
            placeholder: true,
        })
    }

    /// Upload f32 host data, stored as `dtype`.
    pub fn from_f32(
        gpu: &Gpu,
        label: &str,
        shape: &[usize],
        dtype: DType,
        data: &[f32],
    ) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                label,
                format!("{} values given for shape {shape:?}", data.len()),
            ));
        }
        Self::from_fill(gpu, label, shape, dtype, |start, out| {
            out.copy_from_slice(&data[start..start + out.len()])
        })
    }

    /// A tensor whose values `fill(start, out)` writes, chunk by chunk: elements
    /// `start..start + out.len()` in row-major order, `out.len() <= UPLOAD_CHUNK`. Host memory
    /// used is one chunk, whatever the tensor's size (see the module docs).
    pub fn from_fill(
        gpu: &Gpu,
        label: &str,
        shape: &[usize],
        dtype: DType,
        mut fill: impl FnMut(usize, &mut [f32]),
    ) -> Result<Tensor> {
        let n = numel(shape);
        Self::from_writes(gpu, label, shape, dtype, |writer| {
            let mut values = vec![0.0f32; n.min(UPLOAD_CHUNK)];
            for start in (0..n).step_by(UPLOAD_CHUNK) {
                let chunk = &mut values[..UPLOAD_CHUNK.min(n - start)];
                fill(start, chunk);
                writer.write(start, chunk);
            }
        })
    }

    /// A tensor whose contents `write_all` produces as segments through
    /// [`UploadWriter::write`], in any order (each element once; unwritten elements are
    /// zero). Segments are encoded and queued one by one (see the module docs).
    pub fn from_writes(
        gpu: &Gpu,
        label: &str,
        shape: &[usize],
        dtype: DType,
        write_all: impl FnOnce(&mut UploadWriter),
    ) -> Result<Tensor> {
        let size = dtype.buffer_bytes(numel(shape));
        check_binding_size(gpu, label, size)?;
        let buffer = gpu.scoped(&format!("uploading {label}"), || {
            let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            });
            let mut writer = UploadWriter {
                gpu,
                buffer: &buffer,
                dtype,
                bytes: Vec::new(),
            };
            write_all(&mut writer);
            buffer
        })?;
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
            placeholder: false,
        })
    }

    /// A zero-filled tensor.
    pub fn zeros(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = dtype.buffer_bytes(numel(shape));
        check_binding_size(gpu, label, bytes)?;
        let buffer = gpu.scoped(&format!("allocating {label}"), || {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            })
        })?;
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
            placeholder: false,
        })
    }

    /// Overwrite the tensor's contents from f32 host data.
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::shape(
                &self.label,
                format!("{} values given for shape {:?}", data.len(), self.shape),
            ));
        }
        gpu.queue
            .write_buffer(&self.buffer, 0, &self.dtype.encode(data));
        Ok(())
    }

    /// Read the tensor back to the host as f32 (blocks until the GPU is done; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.to_f32_async(gpu))
    }

    /// Read the tensor back to the host as f32 once the GPU is done.
    pub async fn to_f32_async(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = read_buffer_async(gpu, &self.buffer, &self.label).await?;
        Ok(self.dtype.decode(&bytes, self.numel()))
    }
}

/// Queues segments of one tensor's contents (see [`Tensor::from_writes`]).
pub struct UploadWriter<'a> {
    gpu: &'a Gpu,
    buffer: &'a wgpu::Buffer,
    dtype: DType,
    bytes: Vec<u8>,
}

impl UploadWriter<'_> {
    /// Writes elements `offset..offset + values.len()`. Copies work in 4-byte units: for f16,
    /// `offset` must be even, and so must `values.len()` unless the segment ends the tensor
    /// (it is padded with a zero, as the buffer is). Panics otherwise (a caller invariant).
    pub fn write(&mut self, offset: usize, values: &[f32]) {
        let size = self.dtype.size();
        assert!(
            (offset * size).is_multiple_of(4),
            "upload segment at element {offset} is not 4-byte aligned"
        );
        self.bytes.clear();
        self.dtype.encode_into(values, &mut self.bytes);
        self.bytes.resize(self.bytes.len().div_ceil(4) * 4, 0);
        let start = (offset * size) as u64;
        self.gpu.queue.write_buffer(self.buffer, start, &self.bytes);
        queued(self.gpu, self.bytes.len() as u64);
    }

    /// [`Self::write`] for an F16 tensor given raw f16 bit patterns (an F16 file's bytes, no
    /// round trip through f32). Same alignment rules. Panics on an F32 tensor (a caller
    /// invariant).
    pub fn write_f16_bits(&mut self, offset: usize, bits: &[u16]) {
        assert_eq!(
            self.dtype,
            DType::F16,
            "write_f16_bits on a {:?} tensor",
            self.dtype
        );
        assert!(
            offset.is_multiple_of(2),
            "upload segment at element {offset} is not 4-byte aligned"
        );
        self.bytes.clear();
        if cfg!(target_endian = "little") {
            self.bytes.extend_from_slice(bytemuck::cast_slice(bits));
        } else {
            self.bytes.extend(bits.iter().flat_map(|b| b.to_le_bytes()));
        }
        self.bytes.resize(self.bytes.len().div_ceil(4) * 4, 0);
        let start = (offset * 2) as u64;
        self.gpu.queue.write_buffer(self.buffer, start, &self.bytes);
        queued(self.gpu, self.bytes.len() as u64);
    }
}

/// Elements produced per upload chunk (4 MiB as f32).
pub const UPLOAD_CHUNK: usize = 1 << 20;

/// Bytes queued with `write_buffer` after which an upload submits and waits, so that wgpu
/// frees the staging memory behind them. Small on purpose: wgpu sub-allocates its staging
/// buffers from the same memory blocks as the weights (lavapipe has one memory type), and the
/// pages a freed staging buffer touched stay resident in blocks the weights keep alive. Peak RSS
/// of a full-size SD1.5 load (f16 file, f32 weights) on lavapipe: +828 MiB over the GPU weights
/// at a 64 MiB window, +613 at 32, +450 at 16, +331 at 8, +261 at 4, +229 at 2; the load time
/// did not change (docs/loading.md).
pub const UPLOAD_FLUSH_BYTES: u64 = 4 << 20;

/// Bytes queued since the last flush (process-wide: flushing one device more often than
/// needed costs little).
static QUEUED: AtomicU64 = AtomicU64::new(0);

/// Counts `bytes` queued on `gpu`; past [`UPLOAD_FLUSH_BYTES`], submits and waits.
fn queued(gpu: &Gpu, bytes: u64) {
    if QUEUED.fetch_add(bytes, Ordering::Relaxed) + bytes >= UPLOAD_FLUSH_BYTES {
        QUEUED.store(0, Ordering::Relaxed);
        gpu.queue.submit([]);
        // A failed wait (device lost) surfaces at the caller's next check.
        let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
    }
}

/// Error unless a buffer of `bytes` can be bound as one storage binding on this adapter.
pub fn check_binding_size(gpu: &Gpu, what: &str, bytes: u64) -> Result<()> {
    let max = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    if bytes > max {
        return Err(Error::Limit {
            what: format!("tensor {what}"),
            needed: bytes,
            limit: "max_storage_buffer_binding_size",
            max,
            hint: " bytes".into(),
        });
    }
    Ok(())
}

/// Copy a whole buffer to a staging buffer and map it (blocking; native only).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer, label: &str) -> Result<Vec<u8>> {
    pollster::block_on(read_buffer_async(gpu, buffer, label))
}

/// Copy a whole buffer to a staging buffer, map it and await the mapping.
pub(crate) async fn read_buffer_async(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    label: &str,
) -> Result<Vec<u8>> {
    let context = format!("reading back {label}");
    let staging = gpu.scoped(&context, || {
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback staging"),
            size: buffer.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
        gpu.queue.submit([encoder.finish()]);
        staging
    })?;
    let (callback, mapped) = crate::gpu::completion::completion();
    staging.map_async(wgpu::MapMode::Read, .., move |r| callback.complete(r));
    // Natively the callback runs inside this poll; the browser polls by itself.
    gpu.wait(&context)?;
    let mapped = mapped.await;
    gpu.check(&context)?;
    match mapped {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            return Err(Error::GpuValidation {
                context,
                message: e.to_string(),
            })
        }
        None => {
            return Err(Error::DeviceLost(format!(
                "{context}: map callback dropped"
            )))
        }
    }
    let bytes = staging
        .get_mapped_range(..)
        .map_err(|e| Error::GpuValidation {
            context: context.clone(),
            message: e.to_string(),
        })?
        .to_vec();
    staging.unmap();
    Ok(bytes)
}
