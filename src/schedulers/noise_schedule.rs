//! The training noise schedule (betas → ᾱ_t → σ_t) and the numpy helpers diffusers' schedulers
//! build their inference timesteps with.
//!
//! Ports the module-level `betas_for_alpha_bar` and `rescale_zero_terminal_snr` of diffusers'
//! `schedulers/scheduling_ddim.py` (copied into every scheduler there), the `__init__` beta
//! setup, and `_sigma_to_t` / `_convert_to_karras` of `scheduling_euler_discrete.py`.
//! numpy's `arange`, `linspace`, `interp` and `round` (half to even) are mirrored so that
//! timesteps land on exactly the same integers.

use super::{unsupported, BetaSchedule, SchedulerConfig, TimestepSpacing};
use crate::error::Result;

/// Largest `num_train_timesteps` accepted (diffusers' models use 1000): the schedule holds a
/// few `f64`s per training step, so an absurd value must be an error, not an allocation abort.
pub(crate) const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// A diffusers class's own defaults for the config fields whose default differs by class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClassDefaults {
    pub class: &'static str,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub timestep_spacing: TimestepSpacing,
    pub set_alpha_to_one: bool,
    pub clip_sample: bool,
}

impl ClassDefaults {
    /// DDIM, PNDM, Euler, Euler a and DPM-Solver share the DDPM paper's linear schedule.
    pub const fn ddpm(
        class: &'static str,
        spacing: TimestepSpacing,
        set_alpha_to_one: bool,
        clip_sample: bool,
    ) -> Self {
        Self {
            class,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            timestep_spacing: spacing,
            set_alpha_to_one,
            clip_sample,
        }
    }
}

/// The training schedule of one scheduler instance, resolved against its class defaults.
#[derive(Debug, Clone)]
pub(crate) struct NoiseSchedule {
    /// ᾱ_t for t in 0..num_train_timesteps.
    pub alphas_cumprod: Vec<f64>,
    pub timestep_spacing: TimestepSpacing,
    pub set_alpha_to_one: bool,
    pub clip_sample: bool,
}

impl NoiseSchedule {
    pub fn new(config: &SchedulerConfig, defaults: ClassDefaults) -> Result<Self> {
        let class = defaults.class;
        if config.thresholding {
            return Err(unsupported(
                class,
                "thresholding",
                "dynamic thresholding is not implemented",
            ));
        }
        let n = config.num_train_timesteps;
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(unsupported(
                class,
                "num_train_timesteps",
                format!("{n} is outside 2..={MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        let mut betas = match &config.trained_betas {
            Some(betas) if betas.len() != n => {
                return Err(unsupported(
                    class,
                    "trained_betas",
                    format!("{} values for num_train_timesteps = {n}", betas.len()),
                ))
            }
            Some(betas) => betas.clone(),
            None => {
                let start = config.beta_start.unwrap_or(defaults.beta_start);
                let end = config.beta_end.unwrap_or(defaults.beta_end);
                for (field, beta) in [("beta_start", start), ("beta_end", end)] {
                    if !(0.0..1.0).contains(&beta) {
                        return Err(unsupported(
                            class,
                            field,
                            format!("{beta} is outside [0, 1)"),
                        ));
                    }
                }
                match config.beta_schedule.unwrap_or(defaults.beta_schedule) {
                    BetaSchedule::Linear => linspace(start, end, n),
                    BetaSchedule::ScaledLinear => linspace(start.sqrt(), end.sqrt(), n)
                        .into_iter()
                        .map(|b| b * b)
                        .collect(),
                    BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar_cosine(n, 0.999),
                }
            }
        };
        if let Some(bad) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
            return Err(unsupported(
                class,
                "betas",
                format!("beta {bad} is outside [0, 1)"),
            ));
        }
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut product = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                product *= 1.0 - b;
                product
            })
            .collect();
        Ok(Self {
            alphas_cumprod,
            timestep_spacing: config.timestep_spacing.unwrap_or(defaults.timestep_spacing),
            set_alpha_to_one: config.set_alpha_to_one.unwrap_or(defaults.set_alpha_to_one),
            clip_sample: config.clip_sample.unwrap_or(defaults.clip_sample),
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// σ_t = √((1 − ᾱ_t) / ᾱ_t), the noise level of the variance-exploding view (k-diffusion).
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// ᾱ used past the last step (t < 0): 1, or ᾱ_0 when `set_alpha_to_one` is false.
    pub fn final_alpha_cumprod(&self) -> f64 {
        if self.set_alpha_to_one {
            1.0
        } else {
            self.alphas_cumprod[0]
        }
    }

    /// ᾱ at an integer timestep, or the final ᾱ for negative ones.
    pub fn alpha_cumprod_at(&self, t: i64) -> f64 {
        match usize::try_from(t) {
            Ok(t) => self.alphas_cumprod[t.min(self.alphas_cumprod.len() - 1)],
            Err(_) => self.final_alpha_cumprod(),
        }
    }

    /// `num_inference_steps` timesteps, descending, spaced as DDIM/Euler/PNDM/LCM-style
    /// schedulers do (`leading` adds `steps_offset`; `linspace` is rounded when `round_linspace`).
    pub fn spaced_timesteps(
        &self,
        num_inference_steps: usize,
        steps_offset: usize,
        round_linspace: bool,
    ) -> Vec<f64> {
        let train = self.num_train_timesteps();
        let n = num_inference_steps;
        match self.timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut t = linspace(0.0, (train - 1) as f64, n);
                if round_linspace {
                    t.iter_mut().for_each(|v| *v = v.round_ties_even());
                }
                t.reverse();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = train as f64 / n as f64;
                arange(train as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|t| t.round_ties_even() - 1.0)
                    .collect()
            }
        }
    }
}

/// Checks `num_inference_steps` against the training schedule, as diffusers' `set_timesteps`.
pub(crate) fn check_num_steps(
    class: &str,
    num_inference_steps: usize,
    num_train_timesteps: usize,
) -> Result<()> {
    if num_inference_steps == 0 || num_inference_steps > num_train_timesteps {
        return Err(crate::error::Error::invalid(
            "number of inference steps",
            format!("{class} needs 1 to {num_train_timesteps} steps, got {num_inference_steps}"),
        ));
    }
    Ok(())
}

/// Glide's cosine schedule: β_i = min(1 − ᾱ(t_{i+1}) / ᾱ(t_i), max_beta).
fn betas_for_alpha_bar_cosine(n: usize, max_beta: f64) -> Vec<f64> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (arXiv:2305.08891, Algorithm 1): shift and scale √ᾱ so
/// that √ᾱ_T = 0 while √ᾱ_0 is kept.
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut product = 1.0;
    let mut sqrt_ab: Vec<f64> = betas
        .iter()
        .map(|b| {
            product *= 1.0 - b;
            product.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_ab[0], sqrt_ab[sqrt_ab.len() - 1]);
    for v in &mut sqrt_ab {
        *v = (*v - last) * first / (first - last);
    }
    let alphas_bar: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(betas.len());
    out.push(1.0 - alphas_bar[0]);
    out.extend(alphas_bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// numpy `linspace(start, stop, num)` (endpoint included), computed as numpy does.
pub(crate) fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let step = (stop - start) / div;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// numpy `arange(start, stop, step)` for floats: `ceil((stop − start) / step)` values
/// `start + i·δ`, where δ is re-derived from the first two values as numpy's fill does.
pub(crate) fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    // Also catches NaN (a zero step).
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| {
            if i == 0 {
                start
            } else if i == 1 {
                start + step
            } else {
                start + i as f64 * delta
            }
        })
        .collect()
}

/// numpy `interp(x, arange(len(fp)), fp)`.
pub(crate) fn interp(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    let slope = fp[j + 1] - fp[j];
    slope * (x - j as f64) + fp[j]
}

/// Karras et al. 2022 (arXiv:2206.00364, eq. 5) sigmas: uniform in σ^(1/ρ), ρ = 7.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// The fractional training timestep whose σ is `sigma`: linear interpolation in log σ
/// (`_sigma_to_t`). `log_sigmas` ascends with t.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let at_or_below = log_sigmas.iter().filter(|&&l| log_sigma - l >= 0.0).count();
    let low_idx = at_or_below.saturating_sub(1).min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}
