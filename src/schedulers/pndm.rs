//! PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds",
//! arXiv:2202.09778): Runge-Kutta warm-up steps, then linear multistep (PLMS).
//!
//! Ports diffusers' `schedulers/scheduling_pndm.py` (`PNDMScheduler`). Stable Diffusion's
//! default config sets `skip_prk_steps`, so its first PLMS steps use lower orders instead.

use super::ddim::{add_noise_ddpm, x0_coefficients};
use super::gpu_step::{GpuProgram, GpuStep, Lin, Slot, Source};
use super::noise_schedule::{arange, check_num_steps, linspace, ClassDefaults, NoiseSchedule};
use super::{
    check_same_len, check_step_inputs, unsupported, PredictionType, Scheduler, SchedulerConfig,
    TimestepSpacing,
};
use crate::error::Result;

const DEFAULTS: ClassDefaults =
    ClassDefaults::ddpm("PNDMScheduler", TimestepSpacing::Leading, false, false);

/// PNDM's Runge-Kutta / multistep order.
const PNDM_ORDER: usize = 4;

#[derive(Debug, Clone)]
pub struct PNDMScheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    skip_prk_steps: bool,
    /// PRK steps first, then PLMS steps.
    timesteps: Vec<f64>,
    num_prk_steps: usize,
    /// `num_train_timesteps // num_inference_steps`.
    step_ratio: i64,
    // Multistep state, as diffusers keeps it.
    counter: usize,
    ets: Vec<Vec<f32>>,
    cur_model_output: Vec<f64>,
    cur_sample: Option<Vec<f32>>,
    last_step: Option<usize>,
}

impl PNDMScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(config, DEFAULTS)?;
        let train = schedule.num_train_timesteps();
        check_num_steps(DEFAULTS.class, num_inference_steps, train)?;
        if config.prediction_type == PredictionType::Sample {
            return Err(unsupported(
                DEFAULTS.class,
                "prediction_type",
                "PNDM supports epsilon and v_prediction",
            ));
        }
        let n = num_inference_steps;
        // Ascending inference timesteps (`_timesteps`).
        let base: Vec<i64> = match schedule.timestep_spacing {
            TimestepSpacing::Linspace => linspace(0.0, (train - 1) as f64, n)
                .iter()
                .map(|t| t.round_ties_even() as i64)
                .collect(),
            TimestepSpacing::Leading => (0..n)
                .map(|i| (i * (train / n) + config.steps_offset) as i64)
                .collect(),
            TimestepSpacing::Trailing => arange(train as f64, 0.0, -(train as f64 / n as f64))
                .iter()
                .rev()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect(),
        };
        let (prk, plms): (Vec<i64>, Vec<i64>) = if config.skip_prk_steps {
            // PLMS from the start; the second timestep repeats (its two half steps).
            let k = base.len();
            let mut plms: Vec<i64> = base[..k - 1].to_vec();
            if k >= 2 {
                plms.push(base[k - 2]);
            }
            plms.push(base[k - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if n < PNDM_ORDER {
                return Err(unsupported(
                    DEFAULTS.class,
                    "skip_prk_steps",
                    format!("Runge-Kutta warm-up needs at least {PNDM_ORDER} steps, got {n}"),
                ));
            }
            // The last 4 timesteps and their midpoints, each RK stage twice.
            let half = (train / n / 2) as i64;
            let tail = &base[base.len() - PNDM_ORDER..];
            let pairs: Vec<i64> = tail.iter().flat_map(|&t| [t, t + half]).collect();
            let doubled: Vec<i64> = pairs[..pairs.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..base.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        let num_prk_steps = prk.len();
        let timesteps = prk.into_iter().chain(plms).map(|t| t as f64).collect();
        Ok(Self {
            schedule,
            prediction_type: config.prediction_type,
            skip_prk_steps: config.skip_prk_steps,
            timesteps,
            num_prk_steps,
            step_ratio: (train / n) as i64,
            counter: 0,
            ets: Vec::new(),
            cur_model_output: Vec::new(),
            cur_sample: None,
            last_step: None,
        })
    }

    /// ᾱ_t for each step's timestep.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        self.timesteps
            .iter()
            .map(|&t| self.schedule.alpha_cumprod_at(t as i64))
            .collect()
    }

    fn reset(&mut self) {
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output.clear();
        self.cur_sample = None;
    }

    /// Runge-Kutta stage: accumulates 1/6, 1/3, 1/3, 1/6 of the four model outputs.
    fn step_prk(&mut self, model_output: &[f32], timestep: i64, sample: &[f32]) -> Vec<f32> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            self.step_ratio / 2
        };
        let prev_timestep = timestep - diff_to_prev;
        let timestep = self.timesteps[self.counter / 4 * 4] as i64;
        let stage = self.counter % 4;
        let weight = if stage == 0 || stage == 3 {
            1.0 / 6.0
        } else {
            1.0 / 3.0
        };
        if stage == 0 {
            self.cur_model_output = vec![0.0; model_output.len()];
            self.ets.push(model_output.to_vec());
            self.cur_sample = Some(sample.to_vec());
        }
        let eps: Vec<f32> = if stage == 3 {
            let out = self
                .cur_model_output
                .iter()
                .zip(model_output)
                .map(|(&c, &m)| (c + weight * m as f64) as f32);
            let out = out.collect();
            self.cur_model_output = vec![0.0; model_output.len()];
            out
        } else {
            for (c, &m) in self.cur_model_output.iter_mut().zip(model_output) {
                *c += weight * m as f64;
            }
            model_output.to_vec()
        };
        let cur_sample = self.cur_sample.as_deref().unwrap_or(sample);
        let prev = self.prev_sample(cur_sample, timestep, prev_timestep, &eps);
        self.counter += 1;
        prev
    }

    /// Linear multistep: Adams-Bashforth over up to four past model outputs.
    fn step_plms(&mut self, model_output: &[f32], timestep: i64, sample: &[f32]) -> Vec<f32> {
        let mut timestep = timestep;
        let mut prev_timestep = timestep - self.step_ratio;
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.to_vec());
        } else {
            // Second call of the pair that makes the first step: same interval again.
            prev_timestep = timestep;
            timestep += self.step_ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let combine = |weights: &[f64], scale: f64| -> Vec<f32> {
            (0..model_output.len())
                .map(|i| {
                    let sum: f64 = weights
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w * e[k - 1 - j][i] as f64)
                        .sum();
                    (sum * scale) as f32
                })
                .collect()
        };
        let mut sample = sample.to_vec();
        let eps = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.to_vec()
        } else if k == 1 && self.counter == 1 {
            if let Some(cur) = self.cur_sample.take() {
                sample = cur;
            }
            model_output
                .iter()
                .zip(&e[k - 1])
                .map(|(&m, &p)| ((m as f64 + p as f64) / 2.0) as f32)
                .collect()
        } else if k == 2 {
            combine(&[3.0, -1.0], 0.5)
        } else if k == 3 {
            combine(&[23.0, -16.0, 5.0], 1.0 / 12.0)
        } else {
            combine(&[55.0, -59.0, 37.0, -9.0], 1.0 / 24.0)
        };
        let prev = self.prev_sample(&sample, timestep, prev_timestep, &eps);
        self.counter += 1;
        prev
    }

    /// (sample_coeff, eps_coeff, ᾱ_t) of the transfer from `timestep` to `prev_timestep`.
    fn transfer_coefficients(&self, timestep: i64, prev_timestep: i64) -> (f64, f64, f64) {
        let alpha_prod_t = self.schedule.alpha_cumprod_at(timestep);
        let alpha_prod_t_prev = self.schedule.alpha_cumprod_at(prev_timestep);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_t_prev.sqrt()
            + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        let eps_coeff = -(alpha_prod_t_prev - alpha_prod_t) / denom;
        (sample_coeff, eps_coeff, alpha_prod_t)
    }

    /// [`PNDMScheduler::prev_sample`] as a combination of the GPU loop's buffers: `sample`
    /// is the buffer read as x_t, `model_output` the combined model output.
    fn prev_sample_lin(
        &self,
        sample: Slot,
        timestep: i64,
        prev_timestep: i64,
        model_output: &Lin,
    ) -> Lin {
        let (sample_coeff, eps_coeff, alpha_prod_t) =
            self.transfer_coefficients(timestep, prev_timestep);
        let x = Lin::slot(sample);
        let eps = match self.prediction_type {
            PredictionType::VPrediction => model_output
                .scaled(alpha_prod_t.sqrt())
                .plus((1.0 - alpha_prod_t).sqrt(), &x),
            _ => model_output.clone(),
        };
        x.scaled(sample_coeff).plus(eps_coeff, &eps)
    }

    /// x_{t−δ} from x_t and ε (eq. (9) of the paper, the "transfer" part φ).
    fn prev_sample(
        &self,
        sample: &[f32],
        timestep: i64,
        prev_timestep: i64,
        model_output: &[f32],
    ) -> Vec<f32> {
        let (sample_coeff, eps_coeff, alpha_prod_t) =
            self.transfer_coefficients(timestep, prev_timestep);
        let beta_prod_t = 1.0 - alpha_prod_t;
        sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| {
                let (x, m) = (x as f64, m as f64);
                // v → ε: ε = √ᾱ_t · v + √(1 − ᾱ_t) · x_t
                let eps = match self.prediction_type {
                    PredictionType::VPrediction => alpha_prod_t.sqrt() * m + beta_prod_t.sqrt() * x,
                    _ => m,
                };
                (sample_coeff * x + eps_coeff * eps) as f32
            })
            .collect()
    }
}

impl Scheduler for PNDMScheduler {
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

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        check_step_inputs(self, model_output, step_index, sample, noise)?;
        if self.last_step.is_none_or(|last| last + 1 != step_index) {
            self.reset();
        }
        self.last_step = Some(step_index);
        let timestep = self.timesteps[step_index] as i64;
        Ok(
            if !self.skip_prk_steps && self.counter < self.num_prk_steps {
                self.step_prk(model_output, timestep, sample)
            } else {
                self.step_plms(model_output, timestep, sample)
            },
        )
    }

    /// `step` replayed on the counters alone (the data lives on the GPU). History buffers:
    /// 0–3 the stored model outputs `ets`, newest first; 4 `cur_sample`; 5 `cur_model_output`.
    fn gpu_program(&self, first_step: usize) -> Option<GpuProgram> {
        const CUR_SAMPLE: Slot = Slot::History(4);
        const CUR_MODEL_OUTPUT: Slot = Slot::History(5);
        let ets = |j: usize| Slot::History(j);
        // ets.push(model_output), keeping the 4 newest (older ones are never read).
        let push = |writes: &mut Vec<(Slot, Lin)>, len_after: usize| {
            for j in (1..len_after.min(PNDM_ORDER)).rev() {
                writes.push((ets(j), Lin::slot(ets(j - 1))));
            }
            writes.push((ets(0), Lin::model()));
        };
        let (mut counter, mut len, mut has_cur_sample) = (0usize, 0usize, false);
        let mut steps = Vec::new();
        for i in first_step..self.timesteps.len() {
            let timestep = self.timesteps[i] as i64;
            let mut writes = Vec::new();
            let (x, t, prev_t, eps) = if !self.skip_prk_steps && counter < self.num_prk_steps {
                // step_prk
                let diff = if counter % 2 == 1 {
                    0
                } else {
                    self.step_ratio / 2
                };
                let t = self.timesteps[counter / 4 * 4] as i64;
                let stage = counter % 4;
                let w = if stage == 0 || stage == 3 {
                    1.0 / 6.0
                } else {
                    1.0 / 3.0
                };
                let mut x = CUR_SAMPLE;
                if stage == 0 {
                    len += 1;
                    push(&mut writes, len);
                    writes.push((CUR_SAMPLE, Lin::slot(Slot::Sample)));
                    has_cur_sample = true;
                    x = Slot::Sample;
                }
                let accumulated = Lin::slot(CUR_MODEL_OUTPUT).plus(w, &Lin::model());
                let eps = match stage {
                    3 => {
                        writes.push((CUR_MODEL_OUTPUT, Lin::default()));
                        accumulated
                    }
                    0 => {
                        writes.push((CUR_MODEL_OUTPUT, Lin::of(Source::ModelOutput, w)));
                        Lin::model()
                    }
                    _ => {
                        writes.push((CUR_MODEL_OUTPUT, accumulated));
                        Lin::model()
                    }
                };
                (x, t, timestep - diff, eps)
            } else {
                // step_plms
                let (mut t, mut prev_t) = (timestep, timestep - self.step_ratio);
                let pushed = counter != 1;
                if pushed {
                    len = len.min(3) + 1;
                    push(&mut writes, len);
                } else {
                    prev_t = timestep;
                    t += self.step_ratio;
                }
                // e[k − 1 − j] of the CPU code: the j-th newest stored output.
                let e = |j: usize| -> Lin {
                    match (pushed, j) {
                        (true, 0) => Lin::model(),
                        (true, j) => Lin::slot(ets(j - 1)),
                        (false, j) => Lin::slot(ets(j)),
                    }
                };
                let combine = |weights: &[f64], scale: f64| {
                    weights
                        .iter()
                        .enumerate()
                        .fold(Lin::default(), |acc, (j, w)| acc.plus(w * scale, &e(j)))
                };
                let mut x = Slot::Sample;
                let eps = if len == 1 && counter == 0 {
                    writes.push((CUR_SAMPLE, Lin::slot(Slot::Sample)));
                    has_cur_sample = true;
                    Lin::model()
                } else if len == 1 && counter == 1 {
                    if has_cur_sample {
                        x = CUR_SAMPLE;
                        has_cur_sample = false;
                    }
                    Lin::model().scaled(0.5).plus(0.5, &e(0))
                } else if len == 2 {
                    combine(&[3.0, -1.0], 0.5)
                } else if len == 3 {
                    combine(&[23.0, -16.0, 5.0], 1.0 / 12.0)
                } else {
                    combine(&[55.0, -59.0, 37.0, -9.0], 1.0 / 24.0)
                };
                (x, t, prev_t, eps)
            };
            counter += 1;
            writes.push((Slot::Sample, self.prev_sample_lin(x, t, prev_t, &eps)));
            steps.push(GpuStep { writes });
        }
        Some(GpuProgram { history: 6, steps })
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
