//! Per-adapter choice of kernel configurations by measurement (autotune).
//!
//! Some kernels have several configurations that compute the same result at different speeds
//! depending on the GPU: the tiled GEMMs' tile shapes, the GPU attention kernel's queries per
//! workgroup and K/V tile ([`candidates::TUNABLES`]). One configuration for every GPU is far
//! from each one's best (ggml-webgpu measured 44 % of the best in the worst case), so stipple
//! measures them on the adapter at hand and remembers the choice.
//!
//! Where it happens:
//! - **Ops ask.** When an op of a tunable kernel adds its dispatch it looks up the decision of
//!   its key (kernel, dtype, coarse shape class) in the graph's [`Target`](crate::gpu::Target)
//!   ([`Graph::tuned`]); without one it runs the default, today's kernel. The graph records every
//!   key it asked for.
//! - **Plans are built at first use.** Graphs are built from a target, plans have the device:
//!   where the pipeline (and `bench`) plan a graph, [`tuned_graph`] builds it, measures the
//!   keys it asked for that have no decision yet ([`prepare`]: each candidate on a
//!   representative problem, GPU timestamps where the adapter has them), records the winners in
//!   the target's table and the cache file, and rebuilds the graph when a decision changed what
//!   it dispatches. Every later graph of any model on that device reads the decision: the
//!   table is shared by every clone of the target.
//! - **Bounded.** Measurements share one budget per process and device
//!   ([`AutotuneOptions::budget`], 3 s by default; each candidate at most a quarter of it); keys
//!   not reached stay undecided and are measured at a later first use, in a later process.
//!   With a complete cache nothing is measured.
//! - **Cached** per adapter, driver and stipple version ([`cache`]), loaded when the device is
//!   opened. `stipple bench autotune` measures a family's keys again and rewrites them;
//!   `--no-autotune` ([`AutotuneOptions::enabled`]) runs the defaults and touches no file.
//!
//! CPU-variant kernels have no candidates yet; adding some is described in [`candidates`].

pub mod cache;
pub mod candidates;
pub mod choose;
#[cfg(not(target_arch = "wasm32"))]
pub mod measure;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Result;
use crate::gpu::{AutotuneOptions, Gpu, TuneKey, Tuning};
use crate::graph::Graph;
use cache::AdapterKey;
use candidates::{find, TUNABLES};
use choose::KeyReport;

/// A device's tuning state: settings, where its decisions are cached, and the measurement time
/// this process has spent on it.
#[derive(Debug)]
pub struct Autotuner {
    options: AutotuneOptions,
    /// Whether graphs may be measured (enabled, and the device compiles the embedded shaders).
    measuring: bool,
    key: AdapterKey,
    path: Option<PathBuf>,
    /// Measurement time spent in this process; held while measuring (one tuning at a time).
    spent: Mutex<Duration>,
}

impl Autotuner {
    /// The tuner of a device opened on `info`; loads the cache's decisions for the adapter into
    /// `tuning`. Edited shaders (`--shaders`) turn tuning off: their timings would be cached as
    /// the embedded kernels'.
    pub fn open(
        options: &AutotuneOptions,
        info: &wgpu::AdapterInfo,
        edited_shaders: bool,
        tuning: &Tuning,
    ) -> Autotuner {
        let enabled = options.enabled && !edited_shaders;
        let key = AdapterKey::of(info);
        let path = enabled
            .then(|| cache::cache_dir(options.cache_dir.as_deref()))
            .flatten()
            .map(|d| cache::file_in(&d));
        if let Some(p) = &path {
            for (k, config) in cache::load(p, &key) {
                tuning.decide(k, &config);
            }
        }
        Autotuner {
            options: options.clone(),
            measuring: enabled && !cfg!(target_arch = "wasm32"),
            key,
            path,
            spent: Mutex::new(Duration::ZERO),
        }
    }

    /// A tuner that never measures or writes (a device compiling edited shaders).
    pub fn read_only(&self) -> Autotuner {
        Autotuner {
            options: self.options.clone(),
            measuring: false,
            key: self.key.clone(),
            path: None,
            spent: Mutex::new(Duration::ZERO),
        }
    }

    /// Whether graphs are measured at first use.
    pub fn measuring(&self) -> bool {
        self.measuring
    }

    pub fn options(&self) -> &AutotuneOptions {
        &self.options
    }

    /// The cache file (`None`: tuning off, or no cache directory on this platform).
    pub fn cache_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What this device's decisions are keyed by in the cache.
    pub fn adapter_key(&self) -> &AdapterKey {
        &self.key
    }

    /// Measurement time this process has spent on the device.
    pub fn spent(&self) -> Duration {
        *self.spent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record the decisions of `reports` in `tuning` and the cache file; `dropped` keys are
    /// forgotten in both. A cache that cannot be written warns once: never an error.
    #[cfg(not(target_arch = "wasm32"))]
    fn record(&self, tuning: &Tuning, reports: &[KeyReport], dropped: &[TuneKey]) {
        let mut decided = std::collections::BTreeMap::new();
        for r in reports {
            if let Some(c) = &r.chosen {
                tuning.decide(r.key.clone(), c);
                decided.insert(r.key.clone(), c.clone());
            }
        }
        for k in dropped {
            tuning.forget(k);
        }
        if decided.is_empty() && dropped.is_empty() {
            return;
        }
        if let Some(path) = &self.path {
            if let Err(e) = cache::save(path, &self.key, &decided, dropped) {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!("warning: autotune decisions not cached: {e}");
                });
            }
        }
    }
}

/// The configuration `key` runs with `decision` (`None`: the op's default).
fn effective(key: &TuneKey, decision: Option<String>) -> Option<String> {
    decision.or_else(|| {
        find(TUNABLES, &key.op)
            .and_then(|t| t.default_config(key))
            .map(str::to_string)
    })
}

/// Whether `g` was built with a configuration its target's table no longer holds.
fn stale(g: &Graph) -> bool {
    g.tuning_uses().iter().any(|u| {
        let now = g.target.tuning.decision(&u.key);
        effective(&u.key, u.decision.clone()) != effective(&u.key, now)
    })
}

/// At first use: measures the keys `g` asked for that have no decision yet, within what is left
/// of the device's budget, and records the decisions (module docs). Returns whether `g`
/// dispatches a configuration that is no longer the decision (rebuild it). Never fails: a
/// candidate that fails is not chosen, a cache that cannot be written warns.
pub fn prepare(gpu: &Gpu, g: &Graph) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let tuner = &gpu.autotune;
        if !tuner.measuring {
            return false;
        }
        let tuning = &g.target.tuning;
        let mut spent = tuner.spent.lock().unwrap_or_else(|e| e.into_inner());
        let missing: Vec<TuneKey> = g
            .tuning_uses()
            .iter()
            .map(|u| u.key.clone())
            .filter(|k| !tuning.is_decided(k) && find(TUNABLES, &k.op).is_some())
            .collect();
        let mut budget = choose::Budget {
            total: tuner.options.budget,
            spent: *spent,
        };
        if !missing.is_empty() && !budget.exhausted() {
            let mut timer = measure::GpuTimer::new(gpu, &g.target, TUNABLES);
            let reports = choose::tune(TUNABLES, &missing, &mut timer, &mut budget);
            *spent = budget.spent;
            drop(spent);
            tuner.record(tuning, &reports, &[]);
        }
    }
    #[cfg(target_arch = "wasm32")]
    let _ = gpu;
    stale(g)
}

/// `build()`'s graph, its undecided keys measured first ([`prepare`]) and rebuilt when that
/// changed what it dispatches. Where plans are made at first use.
pub fn tuned_graph(gpu: &Gpu, build: impl Fn() -> Result<Graph>) -> Result<Graph> {
    let g = build()?;
    if prepare(gpu, &g) {
        build()
    } else {
        Ok(g)
    }
}

/// One key's measurement by [`retune`]: the report and the problem timed.
#[derive(Clone, Debug)]
pub struct Retuned {
    pub report: KeyReport,
    /// What was timed (`None`: the problem could not be made or nothing ran).
    pub problem: Option<String>,
}

/// Measure `keys` again for graphs of `target` on `gpu`, decided or not, within `budget` (not
/// the device's): decisions replace those in the table and the cache; keys left undecided are
/// forgotten in both (measured at their next first use). `stipple bench autotune`.
#[cfg(not(target_arch = "wasm32"))]
pub fn retune(
    gpu: &Gpu,
    target: &crate::gpu::Target,
    keys: &[TuneKey],
    budget: Duration,
) -> Vec<Retuned> {
    let mut timer = measure::GpuTimer::new(gpu, target, TUNABLES);
    let mut budget = choose::Budget::new(budget);
    let reports = choose::tune(TUNABLES, keys, &mut timer, &mut budget);
    let dropped: Vec<TuneKey> = reports
        .iter()
        .filter(|r| r.chosen.is_none())
        .map(|r| r.key.clone())
        .collect();
    if gpu.autotune.options.enabled {
        gpu.autotune.record(&target.tuning, &reports, &dropped);
    }
    reports
        .into_iter()
        .map(|report| {
            let measured = report
                .rows
                .iter()
                .any(|r| r.outcome != choose::Outcome::Skipped);
            let problem = measured
                .then(|| timer.problem(&report.key).ok().map(|p| p.shape.clone()))
                .flatten();
            Retuned { report, problem }
        })
        .collect()
}
