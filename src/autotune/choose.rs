//! The choice itself, independent of any GPU: time each candidate of a key through a
//! [`Timer`], within a [`Budget`], and pick the fastest. Tests drive it with a fake timer.
//!
//! Rules:
//! - candidates are timed in order, default first; a candidate whose measurement took longer
//!   than the per-candidate cap (a quarter of the budget, less what is left) or failed is not
//!   eligible;
//! - once the budget is spent the remaining candidates are skipped (a candidate already started
//!   finishes: GPU work cannot be interrupted);
//! - the fastest eligible candidate wins, but another configuration displaces the default only
//!   when it is at least [`MARGIN`] faster (timings are noisy; the default is today's kernel);
//!   with no eligible candidate the default is kept;
//! - a key whose candidates were not all timed is decided only if it started with the whole
//!   budget (it would never fit; the fastest of those timed wins), otherwise it is left
//!   undecided, to be tuned at its next first use with a fresh budget.

use std::time::Duration;

use super::candidates::{find, Tunable};
use crate::error::Result;
use crate::gpu::TuneKey;

/// A non-default configuration must be at least this much faster than the default (as a
/// fraction of the default's time) to replace it.
pub const MARGIN: f64 = 0.03;

/// Times one candidate configuration of a key.
pub trait Timer {
    /// Seconds per run of `config` on `key`'s problem (`Err`: the candidate failed), and the
    /// wall-clock time the measurement took, failed or not. `cap` is the time it should stay
    /// within: a timer stops its timed runs there.
    fn time(&mut self, key: &TuneKey, config: &str, cap: Duration) -> (Result<f64>, Duration);
}

/// Wall-clock time measurements may still take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub total: Duration,
    pub spent: Duration,
}

impl Budget {
    pub fn new(total: Duration) -> Budget {
        Budget {
            total,
            spent: Duration::ZERO,
        }
    }

    pub fn left(&self) -> Duration {
        self.total.saturating_sub(self.spent)
    }

    pub fn exhausted(&self) -> bool {
        self.left().is_zero()
    }

    /// The most one candidate may take: a quarter of the budget, and no more than is left.
    pub fn cap(&self) -> Duration {
        (self.total / 4).min(self.left())
    }
}

/// What timing one candidate gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Seconds per run.
    Timed(f64),
    /// Seconds per run, but the measurement took longer than its cap: not eligible.
    OverCap(f64),
    /// The candidate failed (compile or run error): not eligible.
    Failed(String),
    /// Not timed: the budget was spent.
    Skipped,
}

/// One candidate's row of a report.
#[derive(Clone, Debug, PartialEq)]
pub struct CandidateRow {
    pub config: String,
    pub outcome: Outcome,
}

/// What tuning one key gave.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyReport {
    pub key: TuneKey,
    pub rows: Vec<CandidateRow>,
    /// The decision (`None`: left undecided, see the module docs).
    pub chosen: Option<String>,
}

impl KeyReport {
    /// Whether every candidate was timed (or failed).
    pub fn complete(&self) -> bool {
        !self.rows.iter().any(|r| r.outcome == Outcome::Skipped)
    }
}

/// Time `candidates` (default first) of `key` and choose (module docs).
pub fn tune_key(
    key: &TuneKey,
    candidates: &[&str],
    timer: &mut dyn Timer,
    budget: &mut Budget,
) -> KeyReport {
    let whole_budget = budget.spent.is_zero();
    let mut rows = Vec::with_capacity(candidates.len());
    for &config in candidates {
        if budget.exhausted() {
            rows.push(CandidateRow {
                config: config.to_string(),
                outcome: Outcome::Skipped,
            });
            continue;
        }
        let cap = budget.cap();
        let (result, spent) = timer.time(key, config, cap);
        budget.spent += spent;
        let outcome = match result {
            Ok(s) if spent <= cap => Outcome::Timed(s),
            Ok(s) => Outcome::OverCap(s),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        rows.push(CandidateRow {
            config: config.to_string(),
            outcome,
        });
    }
    let timed = |r: &CandidateRow| match r.outcome {
        Outcome::Timed(s) => Some(s),
        _ => None,
    };
    let best = rows
        .iter()
        .filter_map(|r| timed(r).map(|s| (r, s)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let default = rows.first();
    let chosen = match (best, default.and_then(|d| timed(d).map(|s| (d, s)))) {
        (Some((_, s)), Some((d, ds))) if s > ds * (1.0 - MARGIN) => d.config.clone(),
        (Some((b, _)), _) => b.config.clone(),
        (None, _) => candidates
            .first()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    };
    let report = KeyReport {
        key: key.clone(),
        rows,
        chosen: None,
    };
    let decided = report.complete() || whole_budget;
    KeyReport {
        chosen: (decided && !chosen.is_empty()).then_some(chosen),
        ..report
    }
}

/// Tune every key of `keys` whose op `registry` knows (others are left out of the report),
/// in order, within `budget`.
pub fn tune(
    registry: &[Tunable],
    keys: &[TuneKey],
    timer: &mut dyn Timer,
    budget: &mut Budget,
) -> Vec<KeyReport> {
    keys.iter()
        .filter_map(|key| {
            let tunable = find(registry, &key.op)?;
            let candidates = (tunable.candidates)(key);
            Some(tune_key(key, &candidates, timer, budget))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::gpu::{DType, Variant};

    /// Per config: seconds per run (`None`: fails) and the time a measurement takes.
    struct FakeTimer {
        times: Vec<(&'static str, Option<f64>, Duration)>,
        calls: Vec<String>,
    }

    impl Timer for FakeTimer {
        fn time(&mut self, key: &TuneKey, config: &str, _: Duration) -> (Result<f64>, Duration) {
            self.calls.push(format!("{}:{config}", key.op));
            let (_, secs, spent) = *self
                .times
                .iter()
                .find(|(c, _, _)| *c == config)
                .expect("known config");
            let result = secs.ok_or_else(|| Error::invalid("fake", "failed"));
            (result, spent)
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn key(op: &str) -> TuneKey {
        TuneKey::new(op, DType::F32, vec![1, 2])
    }

    fn fake(times: &[(&'static str, Option<f64>, u64)]) -> FakeTimer {
        FakeTimer {
            times: times.iter().map(|&(c, s, d)| (c, s, ms(d))).collect(),
            calls: Vec::new(),
        }
    }

    const ABC: [&str; 3] = ["a", "b", "c"];

    #[test]
    fn picks_the_fastest() {
        let mut t = fake(&[
            ("a", Some(3.0), 10),
            ("b", Some(1.0), 10),
            ("c", Some(2.0), 10),
        ]);
        let mut budget = Budget::new(ms(1000));
        let r = tune_key(&key("op"), &ABC, &mut t, &mut budget);
        assert_eq!(r.chosen.as_deref(), Some("b"));
        assert!(r.complete());
        assert_eq!(budget.spent, ms(30));
        assert_eq!(r.rows[1].outcome, Outcome::Timed(1.0));
    }

    #[test]
    fn the_default_stays_unless_clearly_beaten() {
        let mut t = fake(&[
            ("a", Some(1.0), 10),
            ("b", Some(0.99), 10),
            ("c", Some(1.5), 10),
        ]);
        let r = tune_key(&key("op"), &ABC, &mut t, &mut Budget::new(ms(1000)));
        assert_eq!(r.chosen.as_deref(), Some("a"));
    }

    #[test]
    fn every_candidate_failing_keeps_the_default() {
        let mut t = fake(&[("a", None, 10), ("b", None, 10), ("c", None, 10)]);
        let r = tune_key(&key("op"), &ABC, &mut t, &mut Budget::new(ms(1000)));
        assert_eq!(r.chosen.as_deref(), Some("a"));
        assert!(matches!(r.rows[2].outcome, Outcome::Failed(_)));
    }

    #[test]
    fn candidates_over_their_cap_are_not_eligible() {
        // Budget 1 s: the cap is 250 ms; "b" is fastest but took 400 ms to measure.
        let mut t = fake(&[("a", Some(3.0), 10), ("b", Some(1.0), 400), ("c", None, 10)]);
        let r = tune_key(&key("op"), &ABC, &mut t, &mut Budget::new(ms(1000)));
        assert_eq!(r.rows[1].outcome, Outcome::OverCap(1.0));
        assert_eq!(r.chosen.as_deref(), Some("a"));
        // Every candidate over its cap: the default.
        let mut t = fake(&[
            ("a", Some(3.0), 300),
            ("b", Some(1.0), 300),
            ("c", Some(2.0), 300),
        ]);
        let r = tune_key(&key("op"), &ABC, &mut t, &mut Budget::new(ms(1000)));
        assert_eq!(r.chosen.as_deref(), Some("a"));
    }

    #[test]
    fn the_budget_skips_the_rest_and_bounds_the_time_spent() {
        // 100 ms budget, 60 ms per measurement: two measured, the third skipped.
        let times = [
            ("a", Some(3.0), 60),
            ("b", Some(1.0), 60),
            ("c", Some(0.5), 60),
        ];
        let mut t = fake(&times);
        let mut budget = Budget::new(ms(100));
        let reports = tune(&registry(), &[key("op"), key("op2")], &mut t, &mut budget);
        assert_eq!(t.calls, ["op:a", "op:b"]);
        assert!(budget.exhausted());
        // The first key started with the whole budget: decided from what was timed (both
        // measurements took longer than the 25 ms cap, so the default).
        assert!(!reports[0].complete());
        assert_eq!(reports[0].chosen.as_deref(), Some("a"));
        assert_eq!(reports[0].rows[2].outcome, Outcome::Skipped);
        // The second key got nothing: left undecided for its next first use.
        assert_eq!(reports[1].chosen, None);
        assert!(reports[1]
            .rows
            .iter()
            .all(|r| r.outcome == Outcome::Skipped));

        // A key started after others spent part of the budget and cut short stays undecided.
        let mut t = fake(&[
            ("a", Some(2.0), 10),
            ("b", Some(1.0), 10),
            ("c", Some(0.5), 10),
        ]);
        let mut budget = Budget::new(ms(100));
        budget.spent = ms(85);
        let r = tune_key(&key("op"), &ABC, &mut t, &mut budget);
        assert_eq!(t.calls.len(), 2);
        assert_eq!(r.chosen, None);
    }

    fn registry() -> Vec<Tunable> {
        fn abc(_: &TuneKey) -> Vec<&'static str> {
            ABC.to_vec()
        }
        fn no_problem(
            _: &crate::gpu::Gpu,
            k: &TuneKey,
            _: u64,
        ) -> Result<super::super::candidates::Problem> {
            Err(Error::invalid("fake", k.to_string()))
        }
        ["op", "op2"]
            .iter()
            .map(|&op| Tunable {
                op,
                variant: Variant::Gpu,
                dims: &["x", "y"],
                candidates: abc,
                problem: no_problem,
            })
            .collect()
    }

    /// The extension point for CPU-variant kernels: a fake candidate set registered for
    /// `Variant::Cpu` is tuned like any other, and its decision reaches graphs through the
    /// target's table.
    #[test]
    fn cpu_variant_candidates_can_be_registered() {
        use super::super::candidates::tunes;
        use crate::gpu::Target;
        let mut registry = registry();
        registry[0].op = "linear_rows_fake";
        registry[0].variant = Variant::Cpu;
        assert!(tunes(&registry, Variant::Cpu));
        let mut t = fake(&[
            ("a", Some(2.0), 1),
            ("b", Some(1.0), 1),
            ("c", Some(3.0), 1),
        ]);
        let k = key("linear_rows_fake");
        let reports = tune(
            &registry,
            std::slice::from_ref(&k),
            &mut t,
            &mut Budget::new(ms(100)),
        );
        assert_eq!(reports[0].chosen.as_deref(), Some("b"));
        let target = Target::default();
        assert_eq!(target.variant, Variant::Cpu);
        target.tuning.decide(k.clone(), "b");
        let mut g = crate::graph::Graph::for_target(DType::F32, &target);
        assert_eq!(g.tuned(k).as_deref(), Some("b"));
        // Unregistered ops are not tuned.
        assert!(tune(
            &registry,
            &[key("unknown")],
            &mut t,
            &mut Budget::new(ms(100))
        )
        .is_empty());
    }
}
