//! Euler sampler in the σ (variance-exploding) parameterisation of Karras et al. 2022,
//! "Elucidating the Design Space of Diffusion-Based Generative Models" (arXiv:2206.00364),
//! Algorithm 2 without churn.
//!
//! Ports diffusers' `schedulers/scheduling_euler_discrete.py` (`EulerDiscreteScheduler`),
//! including Karras sigmas and `final_sigmas_type`. `s_churn` is not ported (its default, 0,
//! is what pipelines use).

use super::noise_schedule::{
    check_num_steps, interp, karras_sigmas, sigma_to_t, ClassDefaults, NoiseSchedule,
};
use super::{
    check_same_len, check_step_inputs, unsupported, FinalSigmasType, PredictionType, Scheduler,
    SchedulerConfig, StepCoefficients, TimestepSpacing,
};
use crate::error::Result;

const DEFAULTS: ClassDefaults = ClassDefaults::ddpm(
    "EulerDiscreteScheduler",
    TimestepSpacing::Linspace,
    false,
    false,
);

/// Inference timesteps and sigmas shared by Euler and Euler ancestral.
#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    /// One per timestep, plus the final sigma.
    pub sigmas: Vec<f64>,
    pub init_noise_sigma: f64,
}

impl SigmaSchedule {
    /// `set_timesteps` of the Euler schedulers. ᾱ_T is clamped to 2⁻²⁴ under zero terminal
    /// SNR so that σ_T stays finite.
    pub fn new(
        config: &SchedulerConfig,
        defaults: ClassDefaults,
        num_inference_steps: usize,
    ) -> Result<(NoiseSchedule, Self)> {
        let class = defaults.class;
        let mut schedule = NoiseSchedule::new(config, defaults)?;
        let train = schedule.num_train_timesteps();
        check_num_steps(class, num_inference_steps, train)?;
        for (on, field) in [
            (config.use_exponential_sigmas, "use_exponential_sigmas"),
            (config.use_beta_sigmas, "use_beta_sigmas"),
            (config.interpolation_type != "linear", "interpolation_type"),
            (config.timestep_type != "discrete", "timestep_type"),
        ] {
            if on {
                return Err(unsupported(class, field, "not implemented"));
            }
        }
        if config.rescale_betas_zero_snr {
            schedule.alphas_cumprod[train - 1] = 2f64.powi(-24);
        }

        let mut timesteps =
            schedule.spaced_timesteps(num_inference_steps, config.steps_offset, false);
        let train_sigmas = schedule.sigmas();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(t, &train_sigmas))
            .collect();
        if config.use_karras_sigmas {
            let log_sigmas: Vec<f64> = train_sigmas.iter().map(|s| s.ln()).collect();
            let sigma_min = config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, num_inference_steps);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
        }
        sigmas.push(match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train_sigmas[0],
        });

        let max_sigma = sigmas.iter().copied().fold(0.0, f64::max);
        let init_noise_sigma = match schedule.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok((
            schedule,
            Self {
                timesteps,
                sigmas,
                init_noise_sigma,
            },
        ))
    }

    /// x̂₀ = px·x + pm·m for the prediction type at noise level σ.
    pub fn x0_coefficients(prediction_type: PredictionType, sigma: f64) -> (f64, f64) {
        match prediction_type {
            PredictionType::Epsilon => (1.0, -sigma),
            PredictionType::Sample => (0.0, 1.0),
            PredictionType::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                (1.0 / s2, -sigma / s2.sqrt())
            }
        }
    }

    /// The model sees x / √(σ² + 1), i.e. the DDPM-scaled sample.
    pub fn input_scale(&self, step_index: usize) -> f64 {
        let sigma = self.sigmas[step_index];
        1.0 / (sigma * sigma + 1.0).sqrt()
    }

    /// img2img: x₀ + σ·ε.
    pub fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32> {
        let sigma = self.sigmas[step_index];
        original
            .iter()
            .zip(noise)
            .map(|(&x, &n)| (x as f64 + sigma * n as f64) as f32)
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    schedule: SigmaSchedule,
    prediction_type: PredictionType,
}

impl EulerDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let (_, schedule) = SigmaSchedule::new(config, DEFAULTS, num_inference_steps)?;
        Ok(Self {
            schedule,
            prediction_type: config.prediction_type,
        })
    }

    /// σ for each step, plus the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.schedule.sigmas
    }
}

impl Scheduler for EulerDiscreteScheduler {
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

    fn step_coefficients(&self, step_index: usize) -> Option<StepCoefficients> {
        let (sigma, sigma_next) = (
            *self.schedule.sigmas.get(step_index)?,
            *self.schedule.sigmas.get(step_index + 1)?,
        );
        // d = (x − x̂₀)/σ;  x_next = x + d·(σ_next − σ)
        let (px, pm) = SigmaSchedule::x0_coefficients(self.prediction_type, sigma);
        let dt_over_sigma = (sigma_next - sigma) / sigma;
        Some(StepCoefficients {
            sample: 1.0 + (1.0 - px) * dt_over_sigma,
            model_output: -pm * dt_over_sigma,
            noise: 0.0,
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
        Ok(c.apply(sample, model_output, None))
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.check_index(step_index)?;
        check_same_len(original, noise)?;
        Ok(self.schedule.add_noise(original, noise, step_index))
    }
}
