//! DDIM (Song et al. 2020, "Denoising Diffusion Implicit Models", arXiv:2010.02502).
//!
//! Ports diffusers' `schedulers/scheduling_ddim.py` (`DDIMScheduler`): eq. (12) of the paper,
//! with `eta` scaling the added noise (0 = deterministic DDIM, 1 = DDPM-like).

use super::noise_schedule::{check_num_steps, ClassDefaults, NoiseSchedule};
use super::{
    check_same_len, check_step_inputs, PredictionType, Scheduler, SchedulerConfig,
    StepCoefficients, TimestepSpacing,
};
use crate::error::{Error, Result};

const DEFAULTS: ClassDefaults =
    ClassDefaults::ddpm("DDIMScheduler", TimestepSpacing::Leading, true, true);

#[derive(Debug, Clone)]
pub struct DDIMScheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    clip_sample_range: f64,
    timesteps: Vec<f64>,
    /// Training timesteps between two inference steps (`num_train_timesteps // steps`),
    /// which diffusers uses for the previous timestep whatever the spacing.
    step_ratio: i64,
    eta: f64,
}

/// Per-step scalars: ᾱ at t and at the previous timestep, and the noise std σ_t.
struct DdimScalars {
    alpha_prod_t: f64,
    alpha_prod_t_prev: f64,
    std_dev_t: f64,
}

impl DDIMScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, DEFAULTS)?;
        let train = schedule.num_train_timesteps();
        check_num_steps(DEFAULTS.class, num_inference_steps, train)?;
        let timesteps = schedule.spaced_timesteps(num_inference_steps, config.steps_offset, true);
        Ok(Self {
            schedule,
            prediction_type: config.prediction_type,
            clip_sample_range: config.clip_sample_range,
            timesteps,
            step_ratio: (train / num_inference_steps) as i64,
            eta: 0.0,
        })
    }

    /// Sets η (diffusers' `step(eta=…)`): the weight of fresh noise in each step.
    pub fn with_eta(mut self, eta: f64) -> Result<Self> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::invalid(
                "eta",
                format!("{eta} must be a finite number ≥ 0"),
            ));
        }
        self.eta = eta;
        Ok(self)
    }

    /// ᾱ_t for each step's timestep.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        self.timesteps
            .iter()
            .map(|&t| self.schedule.alpha_cumprod_at(t as i64))
            .collect()
    }

    fn scalars(&self, step_index: usize) -> DdimScalars {
        let t = self.timesteps[step_index] as i64;
        let alpha_prod_t = self.schedule.alpha_cumprod_at(t);
        let alpha_prod_t_prev = self.schedule.alpha_cumprod_at(t - self.step_ratio);
        // σ_t² = (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev), eq. (16)
        let variance = (1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t)
            * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        DdimScalars {
            alpha_prod_t,
            alpha_prod_t_prev,
            std_dev_t: self.eta * variance.sqrt(),
        }
    }

    /// (x̂₀, ε̂) as linear combinations `(coef of sample, coef of model_output)`.
    fn predictions(&self, alpha_prod_t: f64) -> ((f64, f64), (f64, f64)) {
        let (sa, sb) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
        let eps = match self.prediction_type {
            PredictionType::Epsilon => (0.0, 1.0),
            PredictionType::Sample => (1.0 / sb, -sa / sb),
            PredictionType::VPrediction => (sb, sa),
        };
        (x0_coefficients(self.prediction_type, alpha_prod_t), eps)
    }
}

impl Scheduler for DDIMScheduler {
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
        self.eta > 0.0 && step_index < self.timesteps.len()
    }

    fn step_coefficients(&self, step_index: usize) -> Option<StepCoefficients> {
        if self.schedule.clip_sample || step_index >= self.timesteps.len() {
            return None;
        }
        let s = self.scalars(step_index);
        let ((x0_x, x0_m), (eps_x, eps_m)) = self.predictions(s.alpha_prod_t);
        // x_prev = √ᾱ_prev · x̂₀ + √(1 − ᾱ_prev − σ²) · ε̂ + σ · noise
        let a = s.alpha_prod_t_prev.sqrt();
        let d = (1.0 - s.alpha_prod_t_prev - s.std_dev_t * s.std_dev_t).sqrt();
        Some(StepCoefficients {
            sample: a * x0_x + d * eps_x,
            model_output: a * x0_m + d * eps_m,
            noise: if self.eta > 0.0 { s.std_dev_t } else { 0.0 },
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
        // Clipping x̂₀ makes the step nonlinear; ε̂ stays the model's (no
        // `use_clipped_model_output`).
        let s = self.scalars(step_index);
        let ((x0_x, x0_m), (eps_x, eps_m)) = self.predictions(s.alpha_prod_t);
        let a = s.alpha_prod_t_prev.sqrt();
        let d = (1.0 - s.alpha_prod_t_prev - s.std_dev_t * s.std_dev_t).sqrt();
        let range = self.clip_sample_range;
        let out = sample
            .iter()
            .zip(model_output)
            .enumerate()
            .map(|(i, (&x, &m))| {
                let (x, m) = (x as f64, m as f64);
                let x0 = (x0_x * x + x0_m * m).clamp(-range, range);
                let eps = eps_x * x + eps_m * m;
                let n = noise.map_or(0.0, |n| n[i] as f64);
                (a * x0 + d * eps + s.std_dev_t * n) as f32
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

/// x̂₀ = px·x_t + pm·m for a DDPM-family model output m at ᾱ_t (`pred_original_sample`).
pub(crate) fn x0_coefficients(prediction_type: PredictionType, alpha_prod_t: f64) -> (f64, f64) {
    let (sa, sb) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
    match prediction_type {
        PredictionType::Epsilon => (1.0 / sa, -sb / sa),
        PredictionType::Sample => (0.0, 1.0),
        PredictionType::VPrediction => (sa, -sb),
    }
}

/// q(x_t | x_0) = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε.
pub(crate) fn add_noise_ddpm(original: &[f32], noise: &[f32], alpha_prod: f64) -> Vec<f32> {
    let (a, b) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
    original
        .iter()
        .zip(noise)
        .map(|(&x, &n)| (a * x as f64 + b * n as f64) as f32)
        .collect()
}
