//! Euler ancestral sampler ("Euler a"): an Euler step down to σ_down, then fresh noise of
//! std σ_up, with σ_down² + σ_up² = σ_next² (k-diffusion's `sample_euler_ancestral`).
//!
//! Ports diffusers' `schedulers/scheduling_euler_ancestral_discrete.py`
//! (`EulerAncestralDiscreteScheduler`). The noise comes in as an argument.

use super::euler::SigmaSchedule;
use super::noise_schedule::ClassDefaults;
use super::{
    check_same_len, check_step_inputs, PredictionType, Scheduler, SchedulerConfig,
    StepCoefficients, TimestepSpacing,
};
use crate::error::Result;

const DEFAULTS: ClassDefaults = ClassDefaults::ddpm(
    "EulerAncestralDiscreteScheduler",
    TimestepSpacing::Linspace,
    false,
    false,
);

#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    schedule: SigmaSchedule,
    prediction_type: PredictionType,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        // diffusers' Euler a has none of Euler's sigma options (a config that sets them is
        // read as if it did not) and always ends at σ = 0.
        let config = SchedulerConfig {
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            final_sigmas_type: super::FinalSigmasType::Zero,
            interpolation_type: "linear".into(),
            timestep_type: "discrete".into(),
            ..config.clone()
        };
        let (_, schedule) = SigmaSchedule::new(&config, DEFAULTS, num_inference_steps)?;
        Ok(Self {
            schedule,
            prediction_type: config.prediction_type,
        })
    }

    /// σ for each step, plus the final 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.schedule.sigmas
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        DEFAULTS.class
    }

    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma
    }

    fn pred_original_coefficients(&self, step_index: usize) -> Option<(f64, f64)> {
        let sigma = *self.schedule.sigmas.get(step_index)?;
        Some(SigmaSchedule::x0_coefficients(self.prediction_type, sigma))
    }

    fn input_scale(&self, step_index: usize) -> f64 {
        self.schedule.input_scale(step_index)
    }

    fn needs_noise(&self, step_index: usize) -> bool {
        // The last step goes to σ = 0 and adds no noise.
        step_index + 1 < self.schedule.timesteps.len()
    }

    fn step_coefficients(&self, step_index: usize) -> Option<StepCoefficients> {
        let sigma = *self.schedule.sigmas.get(step_index)?;
        let sigma_to = *self.schedule.sigmas.get(step_index + 1)?;
        let sigma_up =
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let (px, pm) = SigmaSchedule::x0_coefficients(self.prediction_type, sigma);
        let dt_over_sigma = (sigma_down - sigma) / sigma;
        Some(StepCoefficients {
            sample: 1.0 + (1.0 - px) * dt_over_sigma,
            model_output: -pm * dt_over_sigma,
            noise: sigma_up,
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
        let c = self
            .step_coefficients(step_index)
            .expect("index checked above");
        Ok(c.apply(sample, model_output, noise))
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.check_index(step_index)?;
        check_same_len(original, noise)?;
        Ok(self.schedule.add_noise(original, noise, step_index))
    }
}
