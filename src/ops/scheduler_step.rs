//! The GPU denoising loop's step kernel (`shaders/scheduler_step.wgsl`, `docs/gpu-loop.md`):
//! a scheduler step as a few linear combinations ([`GpuStep`]) of latent-sized f32 buffers,
//! with the CFG combine of the UNet output fused in, the next UNet input written straight into
//! the UNet plan's `sample` buffer and, when a preview is due, x̂₀ into its own buffer.
//!
//! Unlike the graph ops this one is dispatched eagerly on buffers that outlive one plan run:
//! [`StepKernel`] owns the loop's state (sample, noise, history) for one generation.

use bytemuck::{Pod, Zeroable};
use std::num::NonZeroU64;
use std::sync::Arc;

use super::grid_1d;
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, KernelKey, Tensor};
use crate::schedulers::gpu_step::{GpuStep, Lin, Slot, Source, MAX_HISTORY};

const WG: usize = 256;
/// Combinations one dispatch can write (the shader's `out` array).
pub const MAX_OUTPUTS: usize = 8;
/// `dst` of the preview buffer and `v` index of the model output, as the shader numbers them.
const PREVIEW: u32 = 8;
const MODEL: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct Params {
    n: u32,
    outputs: u32,
    cfg: u32,
    guidance: f32,
    read_model: u32,
    unet_copies: u32,
    unet_src: u32,
    unet_scale: f32,
    slots: u32,
    z_scale: f32,
    z_shift: f32,
    _pad: u32,
    dst: [[u32; 4]; 2],
    coef: [[f32; 4]; 24],
}

/// Where the step's model output comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ModelOutput {
    /// No UNet output read (the loop's first UNet input).
    None,
    /// The UNet output as is (batch rows).
    Plain,
    /// `u + g·(t − u)` of the UNet output's [uncond, text] halves.
    Guided(f32),
}

/// The next step's UNet input: `copies` × (the new sample · `scale`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NextInput {
    pub copies: usize,
    pub scale: f64,
}

/// The loop's buffers and the compiled kernel, for one generation's shapes.
pub struct StepKernel {
    gpu: Gpu,
    /// Latent values per buffer (batch × h × w × C).
    n: usize,
    /// State buffers: sample, noise and the history.
    slots: usize,
    /// (slots, n) f32.
    state: Tensor,
    /// (n) f32: the preview x̂₀ of the steps that write it.
    x0: Tensor,
    params: wgpu::Buffer,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    unet_in_numel: usize,
    unet_out_numel: usize,
}

impl StepKernel {
    /// Buffers for `n` latent values and `history` history buffers, bound to the UNet plan's
    /// output `unet_out` (read) and input `unet_in` (written), which share a dtype.
    pub fn new(
        gpu: &Gpu,
        n: usize,
        history: usize,
        unet_out: &Tensor,
        unet_in: &Tensor,
    ) -> Result<StepKernel> {
        if history > MAX_HISTORY {
            return Err(Error::invalid(
                "scheduler history",
                format!("{history} buffers; the step kernel holds {MAX_HISTORY}"),
            ));
        }
        if unet_out.dtype != unet_in.dtype {
            return Err(Error::shape(
                "scheduler step",
                format!(
                    "UNet output {} and input {} differ in dtype",
                    unet_out.dtype.name(),
                    unet_in.dtype.name()
                ),
            ));
        }
        if n == 0 || !unet_out.numel().is_multiple_of(n) || !unet_in.numel().is_multiple_of(n) {
            return Err(Error::shape(
                "scheduler step",
                format!(
                    "UNet output {:?} and input {:?} are not whole copies of {n} latent values",
                    unet_out.shape, unet_in.shape
                ),
            ));
        }
        u32::try_from((2 + history) * n)
            .map_err(|_| Error::shape("scheduler step", "state exceeds u32 indexing"))?;
        let slots = 2 + history;
        let state = Tensor::zeros(gpu, "scheduler state", &[slots, n], DType::F32)?;
        let x0 = Tensor::zeros(gpu, "preview x0", &[n], DType::F32)?;
        let params = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scheduler step params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let pipeline = gpu.kernels.pipeline(
            gpu,
            &KernelKey::new("scheduler_step", "step", unet_in.dtype),
        )?;
        let layout = pipeline.get_bind_group_layout(0);
        let bind_group = gpu.scoped("binding the scheduler step", || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("scheduler step"),
                layout: &layout,
                entries: &[
                    entry(0, &params),
                    entry(1, &unet_out.buffer),
                    entry(2, &state.buffer),
                    entry(3, &unet_in.buffer),
                    entry(4, &x0.buffer),
                ],
            })
        })?;
        Ok(StepKernel {
            gpu: gpu.clone(),
            n,
            slots,
            state,
            x0,
            params,
            pipeline,
            bind_group,
            unet_in_numel: unet_in.numel(),
            unet_out_numel: unet_out.numel(),
        })
    }

    /// Upload `data` (n values) into a state buffer: the initial latents, a step's noise.
    pub fn write_slot(&self, slot: Slot, data: &[f32]) -> Result<()> {
        if data.len() != self.n || slot.index() >= self.slots {
            return Err(Error::shape(
                "scheduler state",
                format!(
                    "{} values for {slot:?} of {} buffers of {}",
                    data.len(),
                    self.slots,
                    self.n
                ),
            ));
        }
        let offset = (slot.index() * self.n * 4) as u64;
        self.gpu
            .queue
            .write_buffer(&self.state.buffer, offset, bytemuck::cast_slice(data));
        Ok(())
    }

    /// The kernel's parameters for one step: `step`'s writes, the preview x̂₀ = cx·x + cm·m
    /// when given, and the next UNet input from the new sample.
    pub fn params(
        &self,
        step: &GpuStep,
        model: ModelOutput,
        x0: Option<(f64, f64)>,
        next: Option<NextInput>,
    ) -> Result<Params> {
        let mut writes: Vec<(u32, &Lin)> = Vec::new();
        for (slot, lin) in &step.writes {
            if slot.index() >= self.slots {
                return Err(Error::shape(
                    "scheduler step",
                    format!("writes {slot:?} beyond {} buffers", self.slots),
                ));
            }
            writes.push((slot.index() as u32, lin));
        }
        let preview = x0.map(|(cx, cm)| {
            Lin(vec![
                (Source::Slot(Slot::Sample), cx),
                (Source::ModelOutput, cm),
            ])
        });
        if let Some(lin) = &preview {
            writes.push((PREVIEW, lin));
        }
        if writes.len() > MAX_OUTPUTS {
            return Err(Error::shape(
                "scheduler step",
                format!(
                    "{} combinations; a dispatch writes {MAX_OUTPUTS}",
                    writes.len()
                ),
            ));
        }
        let copies = match model {
            ModelOutput::None => 0,
            ModelOutput::Plain => 1,
            ModelOutput::Guided(_) => 2,
        };
        if copies > 0 && self.unet_out_numel != copies * self.n {
            return Err(Error::shape(
                "scheduler step",
                format!(
                    "UNet output has {} values, expected {copies} × {}",
                    self.unet_out_numel, self.n
                ),
            ));
        }
        let mut p = Params {
            n: self.n as u32,
            outputs: writes.len() as u32,
            cfg: matches!(model, ModelOutput::Guided(_)) as u32,
            guidance: match model {
                ModelOutput::Guided(g) => g,
                _ => 0.0,
            },
            read_model: (copies > 0) as u32,
            slots: self.slots as u32,
            ..Params::default()
        };
        for (o, (dst, lin)) in writes.iter().enumerate() {
            p.dst[o / 4][o % 4] = *dst;
            for &(source, c) in &lin.0 {
                let k = match source {
                    Source::ModelOutput if copies == 0 => {
                        return Err(Error::shape(
                            "scheduler step",
                            "reads the model output where there is none",
                        ))
                    }
                    Source::ModelOutput => MODEL,
                    Source::Slot(s) => s.index(),
                };
                p.coef[o * 3 + k / 4][k % 4] += c as f32;
            }
        }
        if let Some(next) = next {
            let src = step
                .writes
                .iter()
                .position(|(s, _)| *s == Slot::Sample)
                .ok_or_else(|| Error::shape("scheduler step", "no new sample to feed the UNet"))?;
            if next.copies * self.n != self.unet_in_numel {
                return Err(Error::shape(
                    "scheduler step",
                    format!(
                        "UNet input has {} values, expected {} × {}",
                        self.unet_in_numel, next.copies, self.n
                    ),
                ));
            }
            p.unet_copies = next.copies as u32;
            p.unet_src = src as u32;
            p.unet_scale = next.scale as f32;
        }
        Ok(p)
    }

    /// Queue one step (no wait); returns its submission.
    pub fn run(&self, p: &Params) -> Result<wgpu::SubmissionIndex> {
        let workgroups = grid_1d("scheduler step", self.n.div_ceil(WG))?;
        self.dispatch(&self.pipeline, &self.bind_group, p, workgroups)
    }

    /// Queue the decoder's input: `z = x · scale + shift` into `z` (n values, any dtype).
    pub fn to_decoder(&self, z: &Tensor, scale: f64, shift: f64) -> Result<wgpu::SubmissionIndex> {
        if z.numel() != self.n {
            return Err(Error::shape(
                "decoder input",
                format!("{:?} holds {} values, not {}", z.shape, z.numel(), self.n),
            ));
        }
        let gpu = &self.gpu;
        let pipeline = gpu.kernels.pipeline(
            gpu,
            &KernelKey::new("scheduler_step", "to_decoder", z.dtype),
        )?;
        let layout = pipeline.get_bind_group_layout(0);
        let bind_group = gpu.scoped("binding the decoder input", || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("scheduler to_decoder"),
                layout: &layout,
                entries: &[
                    entry(0, &self.params),
                    entry(2, &self.state.buffer),
                    entry(5, &z.buffer),
                ],
            })
        })?;
        let p = Params {
            n: self.n as u32,
            z_scale: scale as f32,
            z_shift: shift as f32,
            ..Params::default()
        };
        let workgroups = grid_1d("decoder input", self.n.div_ceil(WG))?;
        self.dispatch(&pipeline, &bind_group, &p, workgroups)
    }

    fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        p: &Params,
        [x, y, z]: [u32; 3],
    ) -> Result<wgpu::SubmissionIndex> {
        let gpu = &self.gpu;
        // Ordered with the submissions: this step's params land before its dispatch, after
        // the earlier steps'.
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(p));
        gpu.scoped("running the scheduler step", || {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("scheduler step"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                pass.dispatch_workgroups(x, y, z);
            }
            gpu.queue.submit([encoder.finish()])
        })
    }

    /// The preview x̂₀ written by the last step that had one (awaits the GPU).
    pub async fn read_x0(&self) -> Result<Vec<f32>> {
        self.x0.to_f32_async(&self.gpu).await
    }

    /// The state buffers, each n values (awaits the GPU).
    pub async fn read_state(&self) -> Result<Vec<Vec<f32>>> {
        let all = self.state.to_f32_async(&self.gpu).await?;
        Ok(all.chunks(self.n).map(<[f32]>::to_vec).collect())
    }

    /// The current sample x (awaits the GPU; one readback).
    pub async fn read_sample(&self) -> Result<Vec<f32>> {
        let mut state = self.read_state().await?;
        Ok(state.swap_remove(0))
    }
}

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: 0,
            size: NonZeroU64::new(buffer.size()),
        }),
    }
}
