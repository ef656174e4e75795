//! The [`Timer`] of real tuning: each candidate's problem graph is built for the graph's
//! target with the candidate forced, checked to dispatch that candidate, planned, run once
//! (pipeline compilation and first-use costs) and then timed with GPU timestamps (wall clock to
//! completion where the adapter has none) until [`RUNS`] runs or its cap; the median counts.

use std::collections::HashMap;
use std::time::Duration;

use super::candidates::{find, Problem, Tunable};
use super::choose::Timer;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Target, TuneKey};
use crate::graph::Plan;
use crate::time::Instant;

/// Timed runs per candidate (after the untimed first run), fewer when the cap is reached.
pub const RUNS: usize = 5;

/// FLOPs of a representative problem on GPUs: milliseconds on most, enough work to fill them.
pub const GPU_MAX_FLOPS: u64 = 1 << 34;
/// FLOPs of a representative problem on CPU adapters (a GPU variant forced on lavapipe runs at
/// a few GFLOP/s: tens of milliseconds).
pub const CPU_MAX_FLOPS: u64 = 1 << 26;

/// Times candidates on `gpu` for graphs of `target` (its variant, loop budget and limits).
pub struct GpuTimer<'a> {
    gpu: &'a Gpu,
    target: Target,
    registry: &'a [Tunable],
    /// One problem per key (weights uploaded once); `Err` text when it could not be made.
    problems: HashMap<TuneKey, std::result::Result<Problem, String>>,
}

impl<'a> GpuTimer<'a> {
    pub fn new(gpu: &'a Gpu, target: &Target, registry: &'a [Tunable]) -> GpuTimer<'a> {
        GpuTimer {
            gpu,
            target: target.clone(),
            registry,
            problems: HashMap::new(),
        }
    }

    fn max_flops(&self) -> u64 {
        if self.target.device_type == wgpu::DeviceType::Cpu {
            CPU_MAX_FLOPS
        } else {
            GPU_MAX_FLOPS
        }
    }

    /// The problem of `key`, made on first request.
    pub fn problem(&mut self, key: &TuneKey) -> Result<&Problem> {
        if !self.problems.contains_key(key) {
            let made = find(self.registry, &key.op)
                .ok_or_else(|| Error::invalid("tuning key", format!("{key}: unknown op")))
                .and_then(|t| (t.problem)(self.gpu, key, self.max_flops()))
                .map_err(|e| e.to_string());
            self.problems.insert(key.clone(), made);
        }
        match &self.problems[key] {
            Ok(p) => Ok(p),
            Err(e) => Err(Error::invalid("tuning problem", e.clone())),
        }
    }

    fn run(&mut self, key: &TuneKey, config: &str, cap: Duration, start: Instant) -> Result<f64> {
        let target = self.target.clone().with_config(&key.op, config);
        let gpu = self.gpu;
        let problem = self.problem(key)?;
        let g = (problem.build)(&target)?;
        // The candidate must be what the graph dispatches (a fallback would time the default).
        let used = g.tuning_uses().iter().find(|u| u.key.op == key.op);
        if used.and_then(|u| u.decision.as_deref()) != Some(config) {
            return Err(Error::invalid(
                "tuning problem",
                format!("{key}: the graph did not dispatch {config}"),
            ));
        }
        let plan = Plan::new(gpu, g)?;
        for (name, data) in &problem.inputs {
            plan.write_input(name, data)?;
        }
        plan.run_timed()?;
        let mut times = Vec::with_capacity(RUNS);
        while times.len() < RUNS && (times.is_empty() || start.elapsed() < cap) {
            times.push(plan.run_timed()?);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

impl Timer for GpuTimer<'_> {
    fn time(&mut self, key: &TuneKey, config: &str, cap: Duration) -> (Result<f64>, Duration) {
        let start = Instant::now();
        let result = self.run(key, config, cap, start);
        (result, start.elapsed())
    }
}
