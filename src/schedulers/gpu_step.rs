//! A scheduler's steps as the GPU loop runs them (`docs/gpu-loop.md`): per step, a few
//! elementwise linear combinations over the loop's latent-sized buffers, all reading the
//! values from before the step and written together (so history can shift in one pass).
//!
//! Buffers ([`Slot`]): the sample x, the step's uploaded noise, and up to [`MAX_HISTORY`]
//! history buffers (PNDM's past model outputs, DPM-Solver++'s previous x̂₀). Sources are those
//! plus the model output m (after the CFG combine). Coefficients are f64 here, cast to f32 for
//! the kernel (`shaders/scheduler_step.wgsl`). [`GpuStep::apply`] runs a step on the CPU in f64:
//! the reference tests hold both the kernel and each scheduler's `step` to.

use super::{Scheduler, StepCoefficients};

/// History buffers a scheduler may use (PNDM: 4 model outputs, the RK start sample and the
/// RK accumulator).
pub const MAX_HISTORY: usize = 6;

/// One latent-sized f32 buffer of the loop's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// x: the latents being denoised.
    Sample,
    /// The step's standard Gaussian noise (drawn on the CPU, uploaded).
    Noise,
    /// History buffer `k` (< [`MAX_HISTORY`]).
    History(usize),
}

impl Slot {
    /// Index in the state buffer: sample 0, noise 1, history 2 + k.
    pub fn index(self) -> usize {
        match self {
            Slot::Sample => 0,
            Slot::Noise => 1,
            Slot::History(k) => 2 + k,
        }
    }
}

/// What a term of a combination reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Slot(Slot),
    /// The UNet output of this step, after classifier-free guidance.
    ModelOutput,
}

/// Σ coefficient · source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lin(pub Vec<(Source, f64)>);

impl Lin {
    pub fn of(source: Source, c: f64) -> Lin {
        Lin(vec![(source, c)])
    }

    pub fn slot(slot: Slot) -> Lin {
        Lin::of(Source::Slot(slot), 1.0)
    }

    pub fn model() -> Lin {
        Lin::of(Source::ModelOutput, 1.0)
    }

    /// self + c·other, merging equal sources.
    pub fn plus(mut self, c: f64, other: &Lin) -> Lin {
        for &(s, k) in &other.0 {
            match self.0.iter_mut().find(|(t, _)| *t == s) {
                Some((_, v)) => *v += c * k,
                None => self.0.push((s, c * k)),
            }
        }
        self
    }

    pub fn scaled(&self, c: f64) -> Lin {
        Lin::default().plus(c, self)
    }

    /// The coefficient of `source` (0 when absent).
    pub fn coefficient(&self, source: Source) -> f64 {
        self.0
            .iter()
            .filter(|(s, _)| *s == source)
            .map(|(_, c)| c)
            .sum()
    }
}

/// One denoising step: `writes` are evaluated on the values from before the step, then stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuStep {
    pub writes: Vec<(Slot, Lin)>,
}

impl GpuStep {
    /// A step that is one [`StepCoefficients`] combination (no history); noise only if drawn.
    pub fn single(c: StepCoefficients, with_noise: bool) -> GpuStep {
        let mut lin = Lin(vec![
            (Source::Slot(Slot::Sample), c.sample),
            (Source::ModelOutput, c.model_output),
        ]);
        if with_noise && c.noise != 0.0 {
            lin.0.push((Source::Slot(Slot::Noise), c.noise));
        }
        GpuStep {
            writes: vec![(Slot::Sample, lin)],
        }
    }

    /// The combination written into the sample (the step's `prev_sample`).
    pub fn sample(&self) -> Option<&Lin> {
        self.writes
            .iter()
            .find(|(s, _)| *s == Slot::Sample)
            .map(|(_, l)| l)
    }

    /// CPU reference in f64: `state[slot.index()]` holds each buffer (missing ones read as 0).
    pub fn apply(&self, state: &mut Vec<Vec<f32>>, model_output: &[f32]) {
        let n = model_output.len();
        let need = self
            .writes
            .iter()
            .map(|(s, _)| s.index() + 1)
            .max()
            .unwrap_or(0);
        if state.len() < need {
            state.resize(need, Vec::new());
        }
        let read = |state: &Vec<Vec<f32>>, s: Source, i: usize| -> f64 {
            match s {
                Source::ModelOutput => model_output[i] as f64,
                Source::Slot(slot) => state
                    .get(slot.index())
                    .and_then(|v| v.get(i))
                    .map_or(0.0, |&x| x as f64),
            }
        };
        let values: Vec<Vec<f32>> = self
            .writes
            .iter()
            .map(|(_, lin)| {
                (0..n)
                    .map(|i| {
                        lin.0
                            .iter()
                            .map(|&(s, c)| c * read(state, s, i))
                            .sum::<f64>() as f32
                    })
                    .collect()
            })
            .collect();
        for ((slot, _), v) in self.writes.iter().zip(values) {
            state[slot.index()] = v;
        }
    }
}

/// A scheduler's whole run from one step index to the end, for the GPU loop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuProgram {
    /// History buffers used (≤ [`MAX_HISTORY`]).
    pub history: usize,
    /// One per step, from the first step index on.
    pub steps: Vec<GpuStep>,
}

/// The default [`Scheduler::gpu_program`]: every step one [`StepCoefficients`], or None.
pub(crate) fn single_step_program<S: Scheduler + ?Sized>(
    scheduler: &S,
    first_step: usize,
) -> Option<GpuProgram> {
    let steps = (first_step..scheduler.timesteps().len())
        .map(|i| {
            scheduler
                .step_coefficients(i)
                .map(|c| GpuStep::single(c, scheduler.needs_noise(i)))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(GpuProgram { history: 0, steps })
}
