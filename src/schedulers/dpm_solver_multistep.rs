//! DPM-Solver++ multistep, orders 1 and 2 ("DPM++ 2M", with or without Karras sigmas).
//! Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
//! Models" (arXiv:2211.01095), Algorithm 2, in the data-prediction (x̂₀) form.
//!
//! Ports diffusers' `schedulers/scheduling_dpmsolver_multistep.py`
//! (`DPMSolverMultistepScheduler`) for `algorithm_type = "dpmsolver++"`, `solver_order` 1 or 2,
//! `solver_type` midpoint or heun. The SDE variants, order 3 and the exotic sigma schedules
//! (exponential, beta, Lu lambdas, flow) are rejected with an error naming the field.

use super::gpu_step::{GpuProgram, GpuStep, Lin, Slot, Source};
use super::noise_schedule::{
    arange, check_num_steps, interp, karras_sigmas, linspace, sigma_to_t, ClassDefaults,
    NoiseSchedule,
};
use super::{
    check_same_len, check_step_inputs, unsupported, BetaSchedule, FinalSigmasType, PredictionType,
    Scheduler, SchedulerConfig, TimestepSpacing,
};
use crate::error::Result;

const DEFAULTS: ClassDefaults = ClassDefaults::ddpm(
    "DPMSolverMultistepScheduler",
    TimestepSpacing::Linspace,
    false,
    false,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

#[derive(Debug, Clone)]
pub struct DPMSolverMultistepScheduler {
    prediction_type: PredictionType,
    solver_order: usize,
    solver_type: SolverType,
    /// Whether the last step falls back to first order (see `step`).
    final_step_first_order: bool,
    timesteps: Vec<f64>,
    /// One per timestep, plus the final sigma.
    sigmas: Vec<f64>,
    // Multistep state.
    previous_x0: Option<Vec<f32>>,
    lower_order_nums: usize,
    last_step: Option<usize>,
}

/// One step: `a·x + b·m0 + c1·(m0 − m1)` (c1 = 0 at first order).
struct StepScalars {
    a: f64,
    b: f64,
    c1: f64,
}

/// α_t and σ_t of the VP process at VE noise level σ: α = 1/√(σ² + 1), σ_t = σ·α.
fn alpha_sigma_t(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// Half log-SNR λ = log α_t − log σ_t (+∞ at σ = 0).
fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma_t(sigma);
    a.ln() - s.ln()
}

impl DPMSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let class = DEFAULTS.class;
        let mut schedule = NoiseSchedule::new(config, DEFAULTS)?;
        let train = schedule.num_train_timesteps();
        check_num_steps(class, num_inference_steps, train)?;
        if config.algorithm_type != "dpmsolver++" && config.algorithm_type != "deis" {
            return Err(unsupported(
                class,
                "algorithm_type",
                format!(
                    "{:?}: only \"dpmsolver++\" is implemented",
                    config.algorithm_type
                ),
            ));
        }
        let solver_type = match config.solver_type.as_str() {
            // diffusers maps the DEIS/UniPC names to midpoint.
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => return Err(unsupported(class, "solver_type", format!("{other:?}"))),
        };
        if !(1..=2).contains(&config.solver_order) {
            return Err(unsupported(
                class,
                "solver_order",
                format!(
                    "{}: only orders 1 and 2 are implemented",
                    config.solver_order
                ),
            ));
        }
        for (on, field) in [
            (config.use_exponential_sigmas, "use_exponential_sigmas"),
            (config.use_beta_sigmas, "use_beta_sigmas"),
            (config.use_lu_lambdas, "use_lu_lambdas"),
            (config.variance_type.is_some(), "variance_type"),
        ] {
            if on {
                return Err(unsupported(class, field, "not implemented"));
            }
        }
        if config.rescale_betas_zero_snr {
            schedule.alphas_cumprod[train - 1] = 2f64.powi(-24);
        }

        // Inference timesteps, with the high-noise end clipped at `lambda_min_clipped`
        // (λ decreases with t; count the trailing timesteps below the bound).
        let train_sigmas = schedule.sigmas();
        let clipped_idx = train_sigmas
            .iter()
            .filter(|&&s| lambda(s) < config.lambda_min_clipped)
            .count();
        let last_timestep = train - clipped_idx;
        let n = num_inference_steps;
        let mut timesteps: Vec<f64> = match schedule.timestep_spacing {
            TimestepSpacing::Linspace => {
                let t = linspace(0.0, last_timestep as f64 - 1.0, n + 1);
                t[1..].iter().rev().map(|v| v.round_ties_even()).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = last_timestep / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * ratio + config.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                arange(last_timestep as f64, 0.0, -(train as f64 / n as f64))
                    .into_iter()
                    .map(|t| t.round_ties_even() - 1.0)
                    .collect()
            }
        };

        let mut sigmas: Vec<f64> = if config.use_karras_sigmas {
            let log_sigmas: Vec<f64> = train_sigmas.iter().map(|s| s.ln()).collect();
            let sigma_min = config.sigma_min.unwrap_or(train_sigmas[0]);
            let sigma_max = config.sigma_max.unwrap_or(train_sigmas[train - 1]);
            let sigmas = karras_sigmas(sigma_min, sigma_max, n);
            let cosine = config.beta_schedule == Some(BetaSchedule::SquaredcosCapV2);
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if cosine {
                        t
                    } else {
                        t.round_ties_even()
                    }
                })
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| interp(t, &train_sigmas))
                .collect()
        };
        let final_zero = config.final_sigmas_type == FinalSigmasType::Zero;
        sigmas.push(if final_zero { 0.0 } else { train_sigmas[0] });

        let len = timesteps.len();
        Ok(Self {
            prediction_type: config.prediction_type,
            solver_order: config.solver_order,
            solver_type,
            final_step_first_order: config.euler_at_final
                || (config.lower_order_final && len < 15)
                || final_zero,
            timesteps,
            sigmas,
            previous_x0: None,
            lower_order_nums: 0,
            last_step: None,
        })
    }

    /// σ for each step, plus the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The step's scalars at `i` after `lower_order_nums` earlier steps of this history:
    /// x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·D0 (+ the order-2 correction on D1).
    fn step_scalars(&self, i: usize, lower_order_nums: usize) -> StepScalars {
        let (sigma_s0, sigma_t) = (self.sigmas[i], self.sigmas[i + 1]);
        let (alpha_t, sigma_t_vp) = alpha_sigma_t(sigma_t);
        let (_, sigma_s0_vp) = alpha_sigma_t(sigma_s0);
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let a = sigma_t_vp / sigma_s0_vp;
        let b = -alpha_t * (-h).exp_m1();
        let last = i + 1 == self.timesteps.len();
        let first_order =
            self.solver_order == 1 || lower_order_nums < 1 || (last && self.final_step_first_order);
        let c1 = if first_order {
            0.0
        } else {
            // D1 = (m0 − m1)/r0, r0 = h_0/h, with h_0 the previous step's λ increment.
            let h_0 = lambda(sigma_s0) - lambda(self.sigmas[i - 1]);
            let r0 = h_0 / h;
            let c = match self.solver_type {
                SolverType::Midpoint => 0.5 * b,
                SolverType::Heun => alpha_t * ((-h).exp_m1() / h + 1.0),
            };
            c / r0
        };
        StepScalars { a, b, c1 }
    }

    /// x̂₀ = cx·x + cm·m (`convert_model_output`).
    fn x0_coefficients(&self, sigma: f64) -> (f64, f64) {
        let (alpha_t, sigma_t) = alpha_sigma_t(sigma);
        match self.prediction_type {
            PredictionType::Epsilon => (1.0 / alpha_t, -sigma_t / alpha_t),
            PredictionType::Sample => (0.0, 1.0),
            PredictionType::VPrediction => (alpha_t, -sigma_t),
        }
    }
}

impl Scheduler for DPMSolverMultistepScheduler {
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
        self.timesteps.get(step_index)?;
        Some(self.x0_coefficients(self.sigmas[step_index]))
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        check_step_inputs(self, model_output, step_index, sample, noise)?;
        if self.last_step.is_none_or(|last| last + 1 != step_index) {
            self.previous_x0 = None;
            self.lower_order_nums = 0;
        }
        self.last_step = Some(step_index);

        let i = step_index;
        let (cx, cm) = self.x0_coefficients(self.sigmas[i]);
        let x0: Vec<f32> = sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| (cx * x as f64 + cm * m as f64) as f32)
            .collect();

        let StepScalars { a, b, c1 } = self.step_scalars(i, self.lower_order_nums);
        let out: Vec<f32> = match &self.previous_x0 {
            Some(prev) if c1 != 0.0 => sample
                .iter()
                .zip(&x0)
                .zip(prev)
                .map(|((&x, &m0), &m1)| {
                    let (m0, m1) = (m0 as f64, m1 as f64);
                    (a * x as f64 + b * m0 + c1 * (m0 - m1)) as f32
                })
                .collect(),
            _ => sample
                .iter()
                .zip(&x0)
                .map(|(&x, &m0)| (a * x as f64 + b * m0 as f64) as f32)
                .collect(),
        };
        self.previous_x0 = Some(x0);
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        Ok(out)
    }

    /// `step` replayed on its counters. History buffer 0 holds the previous x̂₀ (`m1`).
    fn gpu_program(&self, first_step: usize) -> Option<GpuProgram> {
        const PREVIOUS_X0: Slot = Slot::History(0);
        let mut lower_order_nums = 0;
        let mut steps = Vec::new();
        for i in first_step..self.timesteps.len() {
            let c = self.step_scalars(i, lower_order_nums);
            let (cx, cm) = self.x0_coefficients(self.sigmas[i]);
            let x0 = Lin(vec![
                (Source::Slot(Slot::Sample), cx),
                (Source::ModelOutput, cm),
            ]);
            // a·x + b·m0 (+ c1·(m0 − m1))
            let mut out = Lin::slot(Slot::Sample).scaled(c.a).plus(c.b + c.c1, &x0);
            if c.c1 != 0.0 {
                out = out.plus(-c.c1, &Lin::slot(PREVIOUS_X0));
            }
            steps.push(GpuStep {
                writes: vec![(Slot::Sample, out), (PREVIOUS_X0, x0)],
            });
            lower_order_nums = (lower_order_nums + 1).min(self.solver_order);
        }
        Some(GpuProgram { history: 1, steps })
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Result<Vec<f32>> {
        self.check_index(step_index)?;
        check_same_len(original, noise)?;
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[step_index]);
        Ok(original
            .iter()
            .zip(noise)
            .map(|(&x, &n)| (alpha_t * x as f64 + sigma_t * n as f64) as f32)
            .collect())
    }
}
