//! Latent Consistency Model multistep sampling (Luo et al. 2023, "Latent Consistency Models",
//! arXiv:2310.04378, Algorithm 1): each step maps x_t straight to a denoised estimate with the
//! consistency boundary condition, then re-noises it to the next timestep.
//!
//! Ports diffusers' `schedulers/scheduling_lcm.py` (`LCMScheduler`) without custom timesteps
//! or img2img `strength` (the caller starts at a later step index instead). The noise comes
//! in as an argument.

use super::ddim::{add_noise_ddpm, x0_coefficients};
use super::noise_schedule::{check_num_steps, ClassDefaults, NoiseSchedule};
use super::{
    check_same_len, check_step_inputs, BetaSchedule, PredictionType, Scheduler, SchedulerConfig,
    StepCoefficients, TimestepSpacing,
};
use crate::error::{Error, Result};

const DEFAULTS: ClassDefaults = ClassDefaults {
    class: "LCMScheduler",
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: BetaSchedule::ScaledLinear,
    timestep_spacing: TimestepSpacing::Leading,
    set_alpha_to_one: true,
    clip_sample: false,
};

/// σ_data of the consistency-model boundary condition.
const SIGMA_DATA: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct LCMScheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    clip_sample_range: f64,
    timestep_scaling: f64,
    timesteps: Vec<f64>,
}

/// Per-step scalars of the LCM update.
struct LcmScalars {
    alpha_prod_t: f64,
    alpha_prod_t_prev: f64,
    c_skip: f64,
    c_out: f64,
}

impl LCMScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, DEFAULTS)?;
        let train = schedule.num_train_timesteps();
        check_num_steps(DEFAULTS.class, num_inference_steps, train)?;
        let original_steps = config.original_inference_steps;
        if original_steps == 0 || original_steps > train || num_inference_steps > original_steps {
            return Err(Error::invalid(
                "number of inference steps",
                format!(
                    "LCMScheduler needs steps ≤ original_inference_steps ({original_steps}) ≤ \
                     num_train_timesteps ({train}), got {num_inference_steps} steps"
                ),
            ));
        }
        // The distillation schedule (every k-th training timestep, from k − 1), sampled evenly
        // from its high-noise end.
        let k = train / original_steps;
        let origin: Vec<usize> = (1..=original_steps).rev().map(|i| i * k - 1).collect();
        let skip = origin.len() as f64 / num_inference_steps as f64;
        let timesteps = (0..num_inference_steps)
            .map(|i| origin[((i as f64 * skip).floor() as usize).min(origin.len() - 1)] as f64)
            .collect();
        Ok(Self {
            schedule,
            prediction_type: config.prediction_type,
            clip_sample_range: config.clip_sample_range,
            timestep_scaling: config.timestep_scaling,
            timesteps,
        })
    }

    /// ᾱ_t for each step's timestep.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        self.timesteps
            .iter()
            .map(|&t| self.schedule.alpha_cumprod_at(t as i64))
            .collect()
    }

    fn scalars(&self, step_index: usize) -> LcmScalars {
        let t = self.timesteps[step_index];
        let prev_t = self.timesteps.get(step_index + 1).copied().unwrap_or(t);
        // c_skip(t) = σ_d² / (t'² + σ_d²), c_out(t) = t' / √(t'² + σ_d²), t' = t · scaling
        let scaled = t * self.timestep_scaling;
        let denom = scaled * scaled + SIGMA_DATA * SIGMA_DATA;
        LcmScalars {
            alpha_prod_t: self.schedule.alpha_cumprod_at(t as i64),
            alpha_prod_t_prev: self.schedule.alpha_cumprod_at(prev_t as i64),
            c_skip: SIGMA_DATA * SIGMA_DATA / denom,
            c_out: scaled / denom.sqrt(),
        }
    }

    fn is_last(&self, step_index: usize) -> bool {
        step_index + 1 == self.timesteps.len()
    }
}

impl Scheduler for LCMScheduler {
    fn class_name(&self) -> &'static str {
        DEFAULTS.class
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn pred_original_coefficients(&self, step_index: usize) -> Option<(f64, f64)> {
        let t = *self.timesteps.get(step_index)? as i64;
        Some(x0_coefficients(
            self.prediction_type,
            self.schedule.alpha_cumprod_at(t),
        ))
    }

    fn needs_noise(&self, step_index: usize) -> bool {
        // The last step returns the denoised estimate itself.
        step_index + 1 < self.timesteps.len()
    }

    fn step_coefficients(&self, step_index: usize) -> Option<StepCoefficients> {
        if self.schedule.clip_sample || step_index >= self.timesteps.len() {
            return None;
        }
        let s = self.scalars(step_index);
        let (px, pm) = x0_coefficients(self.prediction_type, s.alpha_prod_t);
        // denoised = c_out·x̂₀ + c_skip·x; then √ᾱ_prev·denoised + √(1 − ᾱ_prev)·noise
        let (scale, noise) = if self.is_last(step_index) {
            (1.0, 0.0)
        } else {
            (
                s.alpha_prod_t_prev.sqrt(),
                (1.0 - s.alpha_prod_t_prev).sqrt(),
            )
        };
        Some(StepCoefficients {
            sample: scale * (s.c_out * px + s.c_skip),
            model_output: scale * s.c_out * pm,
            noise,
        })
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        check_step_inputs(self, model_output, step_index, sample, noise)?;
        if let Some(c) = self.step_coefficients(step_index) {
            return Ok(c.apply(sample, model_output, noise));
        }
        let s = self.scalars(step_index);
        let (px, pm) = x0_coefficients(self.prediction_type, s.alpha_prod_t);
        let range = self.clip_sample_range;
        let last = self.is_last(step_index);
        let (a, b) = (
            s.alpha_prod_t_prev.sqrt(),
            (1.0 - s.alpha_prod_t_prev).sqrt(),
        );
        let out = sample
            .iter()
            .zip(model_output)
            .enumerate()
            .map(|(i, (&x, &m))| {
                let (x, m) = (x as f64, m as f64);
                let x0 = (px * x + pm * m).clamp(-range, range);
                let denoised = s.c_out * x0 + s.c_skip * x;
                match (last, noise) {
                    (false, Some(n)) => (a * denoised + b * n[i] as f64) as f32,
                    _ => denoised as f32,
                }
            });
        Ok(out.collect())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.check_index(step_index)?;
        check_same_len(original, noise)?;
        let a = self
            .schedule
            .alpha_cumprod_at(self.timesteps[step_index] as i64);
        Ok(add_noise_ddpm(original, noise, a))
    }
}
