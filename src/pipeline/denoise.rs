//! The denoising loop, in two forms (`docs/gpu-loop.md`):
//!
//! - **GPU loop** (the default): latents stay on the GPU from the first upload to the VAE
//!   decoder's input. Per step the CPU writes the timestep (and, for ancestral schedulers, the
//!   step's noise, drawn with the same [`TorchRng`] in the same order as the CPU loop), queues
//!   the UNet plan and the step kernel (`ops::scheduler_step`: CFG combine, the scheduler's
//!   combinations from [`Scheduler::gpu_program`], the next UNet input) and waits only for the
//!   step before (one step in flight, so progress is reported when a step is done and
//!   cancelling stops within a step). A preview reads x̂₀ back on the steps it is due.
//! - **CPU loop** (the reference, [`GenerateOptions::cpu_loop`]): the UNet output is read back
//!   every step and the scheduler steps on the CPU in f64. Inpainting always runs it (its
//!   per-step re-noising of the kept region is CPU code, `inpaint.rs`), and so do schedulers
//!   with no GPU form (`clip_sample`).

use super::inpaint::Inpaint;
use super::preview::{self, PreviewTarget};
use super::{layout, GenerateOptions, Pipeline, PreviewOptions, Progress, StepInfo};
use crate::error::{Error, Result};
use crate::gpu::completion::{completion, Completion};
use crate::graph::Plan;
use crate::ops::scheduler_step::{ModelOutput, NextInput, StepKernel};
use crate::rng::TorchRng;
use crate::schedulers::{GpuProgram, GpuStep, Lin, Scheduler, Slot};

/// The latents after the loop: on the host (CPU loop) or in the step kernel's state.
pub(crate) enum Latents {
    Host(Vec<f32>),
    Gpu(Box<StepKernel>),
}

/// What the loop runs on.
pub(crate) struct Denoise<'a> {
    pub options: &'a GenerateOptions,
    pub previews: Option<&'a PreviewOptions>,
    /// The UNet plan's key in the plan cache (inputs other than sample/timestep written).
    pub key: (usize, usize, usize, usize),
    /// Latent (B, C, h, w) of the denoised sample.
    pub nchw: [usize; 4],
    pub first_step: usize,
    pub preview_target: PreviewTarget,
}

/// Submitted work a step waits on: natively its submission index (polled), on the web the
/// queue's work-done callback (`None` natively: see `wait_for`).
struct InFlight {
    step: usize,
    index: wgpu::SubmissionIndex,
    done: Option<Completion<()>>,
}

impl Pipeline {
    /// Runs the loop from `first_step`: the GPU loop unless the options, inpainting or the
    /// scheduler ask for the CPU one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn denoise(
        &mut self,
        d: &Denoise<'_>,
        scheduler: &mut dyn Scheduler,
        rng: &mut TorchRng,
        latents: Vec<f32>,
        inpaint: Option<&Inpaint>,
        progress: &mut dyn FnMut(&StepInfo) -> Progress,
    ) -> Result<Latents> {
        let program = match (d.options.cpu_loop, inpaint) {
            (false, None) => scheduler.gpu_program(d.first_step),
            _ => None,
        };
        match program {
            Some(program) => {
                self.denoise_gpu(d, scheduler, &program, rng, latents, progress)
                    .await
            }
            None => Ok(Latents::Host(
                self.denoise_cpu(d, scheduler, rng, latents, inpaint, progress)
                    .await?,
            )),
        }
    }

    /// The CPU loop: one UNet readback and a CPU scheduler step per step.
    async fn denoise_cpu(
        &mut self,
        d: &Denoise<'_>,
        scheduler: &mut dyn Scheduler,
        rng: &mut TorchRng,
        mut latents: Vec<f32>,
        inpaint: Option<&Inpaint>,
        progress: &mut dyn FnMut(&StepInfo) -> Progress,
    ) -> Result<Vec<f32>> {
        let options = d.options;
        let cfg = options.do_cfg();
        let rows = d.key.0;
        let numel = d.nchw.iter().product();
        let timesteps: Vec<f64> = scheduler.timesteps().to_vec();
        let total = timesteps.len() - d.first_step;
        for (done, i) in (d.first_step..timesteps.len()).enumerate() {
            let plan = &self.plans.unet[&d.key];
            let input = scheduler.scale_model_input(&latents, i)?;
            let batch_input = if cfg {
                [input.clone(), input].concat()
            } else {
                input
            };
            let batch_input = match inpaint {
                Some(state) => state.unet_input(batch_input), // (rows, h, w, 2C + 1)
                None => batch_input,
            };
            plan.write_input("sample", &batch_input)?;
            plan.write_input("timestep", &vec![timesteps[i] as f32; rows])?;
            plan.run()?;
            let out = plan.read_output_async("out").await?;
            let noise_pred = if cfg {
                let (uncond, text) = out.split_at(out.len() / 2);
                let g = options.guidance_scale;
                uncond
                    .iter()
                    .zip(text)
                    .map(|(&u, &t)| u + g * (t - u))
                    .collect()
            } else {
                out
            };
            let step_noise = if scheduler.needs_noise(i) {
                Some(layout::nchw_to_nhwc(&rng.randn(numel), d.nchw))
            } else {
                None
            };
            let x0 = preview::due_x0(d.previews, done + 1, scheduler, &noise_pred, i, &latents)?;
            latents = scheduler.step(&noise_pred, i, &latents, step_noise.as_deref())?;
            if let Some(state) = inpaint {
                latents = state.after_step(latents, scheduler, i)?;
            }
            let preview = match x0 {
                Some((method, x0)) => Some(
                    self.preview
                        .image(&self.gpu, method, &x0, &d.preview_target)
                        .await?,
                ),
                None => None,
            };
            if progress(&StepInfo::new(done + 1, total, preview)) == Progress::Cancel {
                return Err(Error::Cancelled);
            }
        }
        Ok(latents)
    }

    /// The GPU loop (see the module header).
    async fn denoise_gpu(
        &mut self,
        d: &Denoise<'_>,
        scheduler: &dyn Scheduler,
        program: &GpuProgram,
        rng: &mut TorchRng,
        latents: Vec<f32>,
        progress: &mut dyn FnMut(&StepInfo) -> Progress,
    ) -> Result<Latents> {
        let options = d.options;
        let cfg = options.do_cfg();
        let rows = d.key.0;
        let numel: usize = d.nchw.iter().product();
        let timesteps: Vec<f64> = scheduler.timesteps().to_vec();
        let total = timesteps.len() - d.first_step;
        if program.steps.len() != total {
            return Err(Error::invalid(
                "scheduler",
                format!(
                    "{} describes {} GPU steps for {total} steps",
                    scheduler.class_name(),
                    program.steps.len()
                ),
            ));
        }
        let plan: &Plan = &self.plans.unet[&d.key];
        let kernel = StepKernel::new(
            &self.gpu,
            numel,
            program.history,
            &plan.output_tensor("out")?,
            &plan.input_tensor("sample")?,
        )?;
        let copies = if cfg { 2 } else { 1 };
        let model = if cfg {
            ModelOutput::Guided(options.guidance_scale)
        } else {
            ModelOutput::Plain
        };
        // Initial latents, uploaded once; the first UNet input from them.
        kernel.write_slot(Slot::Sample, &latents)?;
        let keep = GpuStep {
            writes: vec![(Slot::Sample, Lin::slot(Slot::Sample))],
        };
        let first_input = NextInput {
            copies,
            scale: scheduler.input_scale(d.first_step),
        };
        kernel.run(&kernel.params(&keep, ModelOutput::None, None, Some(first_input))?)?;

        let mut in_flight: Option<InFlight> = None;
        for (done, (i, step)) in (d.first_step..timesteps.len())
            .zip(&program.steps)
            .enumerate()
        {
            let plan: &Plan = &self.plans.unet[&d.key];
            plan.write_input("timestep", &vec![timesteps[i] as f32; rows])?;
            plan.run()?;
            if scheduler.needs_noise(i) {
                kernel.write_slot(
                    Slot::Noise,
                    &layout::nchw_to_nhwc(&rng.randn(numel), d.nchw),
                )?;
            }
            let due = d.previews.filter(|p| p.due(done + 1));
            let x0 = match due {
                Some(_) => Some(
                    scheduler
                        .pred_original_coefficients(i)
                        .ok_or_else(|| Error::invalid("step index", format!("{i} has no x̂₀")))?,
                ),
                None => None,
            };
            let next = (i + 1 < timesteps.len()).then(|| NextInput {
                copies,
                scale: scheduler.input_scale(i + 1),
            });
            let index = kernel.run(&kernel.params(step, model, x0, next)?)?;
            // The web's only completion signal; natively the poll in `wait_for` is enough, and
            // registering would flush the queue's pending writes into a submission of its own.
            let completed = cfg!(target_arch = "wasm32").then(|| {
                let (callback, completed) = completion();
                self.gpu
                    .queue
                    .on_submitted_work_done(move || callback.complete(()));
                completed
            });
            let this = InFlight {
                step: done + 1,
                index,
                done: completed,
            };
            match due {
                Some(p) => {
                    // The readback waits for this step, and so for the one before.
                    let x0 = kernel.read_x0().await?;
                    if let Some(before) = in_flight.take() {
                        report(progress, before.step, total, None)?;
                    }
                    let image = self
                        .preview
                        .image(&self.gpu, p.method, &x0, &d.preview_target)
                        .await?;
                    report(progress, done + 1, total, Some(image))?;
                }
                None => {
                    // Keep one step queued behind the one being waited for.
                    if let Some(before) = in_flight.replace(this) {
                        let step = before.step;
                        self.wait_for(before).await?;
                        report(progress, step, total, None)?;
                    }
                }
            }
        }
        if let Some(last) = in_flight.take() {
            let step = last.step;
            self.wait_for(last).await?;
            report(progress, step, total, None)?;
        }
        Ok(Latents::Gpu(Box::new(kernel)))
    }

    async fn wait_for(&self, work: InFlight) -> Result<()> {
        // Natively this blocks until the step's submission is done, which is all we need. On
        // the web it does nothing, and the work-done callback is the only signal. Natively no
        // callback is registered: `on_submitted_work_done` first flushes pending writes and
        // attaches to the newest submission, so on a device shared with another thread (its
        // uploads, its plans) it can belong to a later submission than this poll waits for,
        // and awaiting it hung (`tests/shared_device.rs`).
        self.gpu
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(work.index),
                timeout: None,
            })
            .map_err(|e| Error::DeviceLost(format!("denoising step {}: {e}", work.step)))?;
        let dropped = match work.done {
            Some(done) => done.await.is_none(),
            None => false,
        };
        if dropped {
            return Err(Error::DeviceLost(format!(
                "denoising step {}: work-done callback dropped",
                work.step
            )));
        }
        self.gpu.check("denoising")
    }
}

fn report(
    progress: &mut dyn FnMut(&StepInfo) -> Progress,
    step: usize,
    total: usize,
    preview: Option<super::PreviewImage>,
) -> Result<()> {
    match progress(&StepInfo::new(step, total, preview)) {
        Progress::Cancel => Err(Error::Cancelled),
        Progress::Continue => Ok(()),
    }
}
