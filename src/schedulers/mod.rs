//! Noise schedulers: the CPU half of each denoising step, ported from diffusers'
//! `src/diffusers/schedulers/` (`scheduling_utils.py` for the shared config, one file per
//! scheduler below).
//!
//! A scheduler is built for a fixed number of inference steps. Per step the pipeline calls
//! [`Scheduler::scale_model_input`], runs the UNet at [`Scheduler::timesteps`]`[i]`, then
//! [`Scheduler::step`]. Coefficients are computed in f64; samples stay f32. Steps that are one
//! linear combination of `sample`, `model_output` and `noise` also report it as
//! [`StepCoefficients`], and every scheduler describes its whole run as linear combinations
//! over GPU buffers ([`Scheduler::gpu_program`], [`gpu_step`]) for the GPU denoising loop.
//!
//! Randomness is the caller's: ancestral schedulers (Euler a, LCM, DDIM with `eta > 0`) take
//! their noise as an argument (see [`Scheduler::needs_noise`]).

mod ddim;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
pub mod gpu_step;
mod lcm;
mod noise_schedule;
mod overrides;
mod pndm;

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

pub use ddim::DDIMScheduler;
pub use dpm_solver_multistep::DPMSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;
pub use gpu_step::{GpuProgram, GpuStep, Lin, Slot, Source};
pub use lcm::LCMScheduler;
pub use overrides::SchedulerOverrides;
pub use pndm::PNDMScheduler;

/// `prev_sample = sample·x + model_output·m + noise·n`, elementwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoefficients {
    pub sample: f64,
    pub model_output: f64,
    /// 0 when the step draws no noise.
    pub noise: f64,
}

impl StepCoefficients {
    /// Applies the combination; `noise` may be `None` only when its coefficient is 0.
    pub fn apply(&self, sample: &[f32], model_output: &[f32], noise: Option<&[f32]>) -> Vec<f32> {
        match noise {
            Some(n) if self.noise != 0.0 => sample
                .iter()
                .zip(model_output)
                .zip(n)
                .map(|((&x, &m), &n)| {
                    (self.sample * x as f64 + self.model_output * m as f64 + self.noise * n as f64)
                        as f32
                })
                .collect(),
            _ => sample
                .iter()
                .zip(model_output)
                .map(|(&x, &m)| (self.sample * x as f64 + self.model_output * m as f64) as f32)
                .collect(),
        }
    }
}

/// One diffusers scheduler, set up for a fixed number of inference steps.
///
/// `step_index` is the position in [`Scheduler::timesteps`] (diffusers' `step_index`), not the
/// timestep value. Multistep schedulers (PNDM, DPM-Solver++) keep a history and must be stepped
/// at consecutive indices; a call at any other index starts a new history, as a fresh
/// diffusers scheduler would (img2img starts at a later index).
pub trait Scheduler: Send + std::fmt::Debug {
    /// diffusers class name, e.g. `"EulerDiscreteScheduler"`.
    fn class_name(&self) -> &'static str;

    /// UNet timestep for each step, in order (fractional for Karras sigmas in Euler).
    fn timesteps(&self) -> &[f64];

    /// Scale of the initial Gaussian latents.
    fn init_noise_sigma(&self) -> f64;

    /// Factor [`Scheduler::scale_model_input`] applies at `step_index` (1 for DDPM-family).
    fn input_scale(&self, _step_index: usize) -> f64 {
        1.0
    }

    /// The UNet's input at `step_index`: `sample · input_scale(step_index)`.
    fn scale_model_input(&self, sample: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.check_index(step_index)?;
        let scale = self.input_scale(step_index);
        Ok(sample.iter().map(|&x| (x as f64 * scale) as f32).collect())
    }

    /// Whether [`Scheduler::step`] at `step_index` needs a noise tensor.
    fn needs_noise(&self, _step_index: usize) -> bool {
        false
    }

    /// The step as one linear combination, when it is one (no clipping, no history).
    fn step_coefficients(&self, _step_index: usize) -> Option<StepCoefficients> {
        None
    }

    /// The steps from `first_step` to the end as the GPU loop runs them, with a fresh history
    /// (as [`Scheduler::step`] starts one at `first_step`); None when a step is not a linear
    /// combination (`clip_sample`): the pipeline then runs the CPU loop.
    fn gpu_program(&self, first_step: usize) -> Option<GpuProgram> {
        gpu_step::single_step_program(self, first_step)
    }

    /// One denoising step from `timesteps()[step_index]` to the next: the previous sample
    /// (diffusers' `prev_sample`). `noise` is standard Gaussian, same length as `sample`.
    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<Vec<f32>>;

    /// diffusers' `pred_original_sample` at `step_index` as `(cx, cm)`: the denoised estimate
    /// x̂₀ = cx·sample + cm·model_output (sample as the scheduler holds it, before
    /// `scale_model_input`). None past the schedule.
    fn pred_original_coefficients(&self, step_index: usize) -> Option<(f64, f64)>;

    /// The predicted x̂₀ (live previews): [`Scheduler::pred_original_coefficients`] applied
    /// to `model_output` and `sample`. Takes `&self`: call it before [`Scheduler::step`].
    fn predicted_original(
        &self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
    ) -> Result<Vec<f32>> {
        check_step_inputs_no_noise(self, model_output, step_index, sample)?;
        let (cx, cm) = self
            .pred_original_coefficients(step_index)
            .ok_or_else(|| Error::invalid("step index", format!("{step_index} has no x̂₀")))?;
        let c = StepCoefficients {
            sample: cx,
            model_output: cm,
            noise: 0.0,
        };
        Ok(c.apply(sample, model_output, None))
    }

    /// img2img: `original` noised to the level of `timesteps()[step_index]`.
    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>>;

    /// Checks a step index against the schedule.
    fn check_index(&self, step_index: usize) -> Result<()> {
        let n = self.timesteps().len();
        if step_index >= n {
            return Err(Error::invalid(
                "step index",
                format!(
                    "{step_index} is past the {n} steps of {}",
                    self.class_name()
                ),
            ));
        }
        Ok(())
    }
}

/// Checks the step index and that `model_output` and `sample` agree in length.
fn check_step_inputs_no_noise<S: Scheduler + ?Sized>(
    scheduler: &S,
    model_output: &[f32],
    step_index: usize,
    sample: &[f32],
) -> Result<()> {
    scheduler.check_index(step_index)?;
    if model_output.len() != sample.len() {
        return Err(Error::invalid(
            "model output",
            format!(
                "{} values for a sample of {}",
                model_output.len(),
                sample.len()
            ),
        ));
    }
    Ok(())
}

/// Checks that the step's tensors agree in length and that noise is there when needed.
pub(crate) fn check_step_inputs(
    scheduler: &dyn Scheduler,
    model_output: &[f32],
    step_index: usize,
    sample: &[f32],
    noise: Option<&[f32]>,
) -> Result<()> {
    check_step_inputs_no_noise(scheduler, model_output, step_index, sample)?;
    match noise {
        Some(n) if n.len() != sample.len() => Err(Error::invalid(
            "noise",
            format!("{} values for a sample of {}", n.len(), sample.len()),
        )),
        None if scheduler.needs_noise(step_index) => Err(Error::invalid(
            "noise",
            format!(
                "{} step {step_index} needs a noise tensor",
                scheduler.class_name()
            ),
        )),
        _ => Ok(()),
    }
}

/// An option diffusers has but stipple does not implement, naming the field.
pub(crate) fn unsupported(class: &str, field: &str, why: impl Into<String>) -> Error {
    Error::invalid(format!("{class} config field {field}"), why)
}

pub(crate) fn check_same_len(original: &[f32], noise: &[f32]) -> Result<()> {
    if original.len() != noise.len() {
        return Err(Error::invalid(
            "noise",
            format!("{} values for a sample of {}", noise.len(), original.len()),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    /// Glide cosine schedule (`betas_for_alpha_bar`).
    SquaredcosCapV2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// How inference timesteps are spread over the training ones (Table 2 of
/// "Common Diffusion Noise Schedules and Sample Steps are Flawed", arXiv:2305.08891).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// Last sigma of Euler / DPM-Solver schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    Zero,
    SigmaMin,
}

/// diffusers' `scheduler_config.json`, every field optional.
///
/// Fields whose default differs between diffusers classes are `Option`s resolved by each
/// scheduler with its class's default (e.g. `timestep_spacing`: `leading` for DDIM, PNDM, LCM;
/// `linspace` for Euler and DPM-Solver), so a config written for one class can drive
/// another, as `Scheduler.from_config(pipe.scheduler.config)` does in diffusers. Unknown
/// fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: usize,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
    pub prediction_type: PredictionType,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: usize,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    pub thresholding: bool,
    // PNDM
    pub skip_prk_steps: bool,
    // Euler / DPM-Solver
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigmas_type: FinalSigmasType,
    pub interpolation_type: String,
    pub timestep_type: String,
    // DPM-Solver
    pub solver_order: usize,
    pub algorithm_type: String,
    pub solver_type: String,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_lu_lambdas: bool,
    pub lambda_min_clipped: f64,
    pub variance_type: Option<String>,
    // LCM
    pub original_inference_steps: usize,
    pub timestep_scaling: f64,
}

impl Default for SchedulerConfig {
    /// diffusers' defaults.
    fn default() -> Self {
        Self {
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: None,
            beta_end: None,
            beta_schedule: None,
            trained_betas: None,
            rescale_betas_zero_snr: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            set_alpha_to_one: None,
            clip_sample: None,
            clip_sample_range: 1.0,
            thresholding: false,
            skip_prk_steps: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            final_sigmas_type: FinalSigmasType::Zero,
            interpolation_type: "linear".into(),
            timestep_type: "discrete".into(),
            solver_order: 2,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
            use_lu_lambdas: false,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
        }
    }
}

/// The schedulers stipple implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Ddim,
    Pndm,
    Euler,
    EulerAncestral,
    DpmSolverMultistep,
    Lcm,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 6] = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::Lcm,
    ];

    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            SchedulerKind::Lcm => "LCMScheduler",
        }
    }

    pub fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == name)
    }
}

/// Names accepted by [`SchedulerConfig::with_name`] (the CLI's `--scheduler`).
pub const SCHEDULER_NAMES: [&str; 7] = [
    "ddim",
    "pndm",
    "euler",
    "euler-a",
    "dpmpp-2m",
    "dpmpp-2m-karras",
    "lcm",
];

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        crate::models::config::read_config(path.as_ref())
    }

    /// The training schedule shared by SD1.x and SD2.x checkpoints (their
    /// `scheduler_config.json`), for single-file checkpoints that carry none. SD2.x 768-v
    /// models additionally need `prediction_type = VPrediction`.
    pub fn stable_diffusion() -> Self {
        Self {
            class_name: Some("PNDMScheduler".into()),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            skip_prk_steps: true,
            steps_offset: 1,
            ..Self::default()
        }
    }

    /// This config with the scheduler chosen by a short name: `ddim`, `pndm`, `euler`,
    /// `euler-a`, `dpmpp-2m`, `dpmpp-2m-karras` or `lcm`. The noise schedule (betas,
    /// prediction type, spacing) is kept, as diffusers' `from_config` does.
    pub fn with_name(&self, name: &str) -> Result<Self> {
        let (kind, karras) = match name {
            "ddim" => (SchedulerKind::Ddim, false),
            "pndm" => (SchedulerKind::Pndm, false),
            "euler" => (SchedulerKind::Euler, false),
            "euler-a" => (SchedulerKind::EulerAncestral, false),
            "dpmpp-2m" => (SchedulerKind::DpmSolverMultistep, false),
            "dpmpp-2m-karras" => (SchedulerKind::DpmSolverMultistep, true),
            "lcm" => (SchedulerKind::Lcm, false),
            _ => {
                return Err(Error::invalid(
                    "scheduler",
                    format!(
                        "unknown name {name:?}; expected one of {}",
                        SCHEDULER_NAMES.join(", ")
                    ),
                ))
            }
        };
        let mut config = self.clone();
        config.class_name = Some(kind.class_name().into());
        if matches!(kind, SchedulerKind::DpmSolverMultistep) {
            // The name fully chooses the variant.
            config.use_karras_sigmas = karras;
            config.algorithm_type = "dpmsolver++".into();
            config.solver_order = 2;
        }
        Ok(config)
    }

    /// Rejects NaN and infinities where a float field needs a number (a config written by
    /// Python's json may hold `NaN`/`Infinity`); `lambda_min_clipped` may be −∞ (its default).
    fn check_floats(&self, class: &str) -> Result<()> {
        let fields = [
            ("clip_sample_range", Some(self.clip_sample_range)),
            ("sigma_min", self.sigma_min),
            ("sigma_max", self.sigma_max),
            ("timestep_scaling", Some(self.timestep_scaling)),
        ];
        for (field, value) in fields {
            if let Some(v) = value.filter(|v| !v.is_finite()) {
                return Err(unsupported(
                    class,
                    field,
                    format!("{v} is not a finite number"),
                ));
            }
        }
        if self.lambda_min_clipped.is_nan() || self.lambda_min_clipped == f64::INFINITY {
            return Err(unsupported(
                class,
                "lambda_min_clipped",
                format!("{} must be a number or -Infinity", self.lambda_min_clipped),
            ));
        }
        Ok(())
    }

    /// The scheduler named by `_class_name`, for `num_inference_steps` steps.
    pub fn build(&self, num_inference_steps: usize) -> Result<Box<dyn Scheduler>> {
        let name = self.class_name.as_deref().ok_or_else(|| {
            Error::invalid(
                "scheduler config",
                "no _class_name: choose a scheduler by name",
            )
        })?;
        let kind = SchedulerKind::from_class_name(name).ok_or_else(|| {
            let known: Vec<_> = SchedulerKind::ALL.iter().map(|k| k.class_name()).collect();
            Error::invalid(
                "scheduler",
                format!(
                    "unsupported class {name:?}; supported: {}",
                    known.join(", ")
                ),
            )
        })?;
        self.build_kind(kind, num_inference_steps)
    }

    pub fn build_kind(
        &self,
        kind: SchedulerKind,
        num_inference_steps: usize,
    ) -> Result<Box<dyn Scheduler>> {
        self.check_floats(kind.class_name())?;
        Ok(match kind {
            SchedulerKind::Ddim => Box::new(DDIMScheduler::new(self, num_inference_steps)?),
            SchedulerKind::Pndm => Box::new(PNDMScheduler::new(self, num_inference_steps)?),
            SchedulerKind::Euler => {
                Box::new(EulerDiscreteScheduler::new(self, num_inference_steps)?)
            }
            SchedulerKind::EulerAncestral => Box::new(EulerAncestralDiscreteScheduler::new(
                self,
                num_inference_steps,
            )?),
            SchedulerKind::DpmSolverMultistep => {
                Box::new(DPMSolverMultistepScheduler::new(self, num_inference_steps)?)
            }
            SchedulerKind::Lcm => Box::new(LCMScheduler::new(self, num_inference_steps)?),
        })
    }
}
