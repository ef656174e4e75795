//! Tuning decisions: which candidate configuration each tunable kernel uses for a shape class on
//! this adapter. The table lives in the [`Target`](super::Target) (shared by every clone, so a
//! decision made after a model was loaded reaches that model's next graphs) and ops read it when
//! they add their dispatches ([`crate::graph::Graph::tuned`]). Who fills it (measurement at first
//! use, the cache file, `stipple bench autotune`): [`crate::autotune`], `docs/targets.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::gpu::DType;

/// One tunable problem: a kernel, a storage dtype and a coarse shape class.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TuneKey {
    /// The tunable kernel (its entry point name, e.g. `linear_tiled`); the registry of
    /// tunables is `crate::autotune::candidates`.
    pub op: String,
    pub dtype: DType,
    /// Representative sizes of the class, op-specific (GEMMs: M, N; attention: head dim):
    /// every shape of the class maps to these, and the tuner measures them.
    pub class: Vec<usize>,
}

impl TuneKey {
    pub fn new(op: &str, dtype: DType, class: Vec<usize>) -> TuneKey {
        TuneKey {
            op: op.to_string(),
            dtype,
            class,
        }
    }
}

/// `op/dtype/s1xs2x…`, e.g. `linear_tiled/f16/4096x640` (the cache file's key).
impl std::fmt::Display for TuneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let class: Vec<String> = self.class.iter().map(|c| c.to_string()).collect();
        write!(f, "{}/{}/{}", self.op, self.dtype.name(), class.join("x"))
    }
}

impl std::str::FromStr for TuneKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<TuneKey> {
        let bad = |why: &str| Error::invalid("tuning key", format!("{s:?}: {why}"));
        let mut parts = s.split('/');
        let (Some(op), Some(dtype), Some(class), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected op/dtype/class"));
        };
        if op.is_empty() {
            return Err(bad("empty op"));
        }
        let class = class
            .split('x')
            .map(|c| {
                c.parse::<usize>()
                    .map_err(|_| bad("class sizes must be integers"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TuneKey {
            op: op.to_string(),
            dtype: dtype.parse()?,
            class,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Table {
    /// Measured (or cached) choices.
    decisions: BTreeMap<TuneKey, String>,
    /// Configurations forced per op whatever the key (tests, and the tuner's own measurements).
    forced: BTreeMap<String, String>,
}

/// The decision table of one target (see the module docs). Lookups of undecided keys return
/// `None`: the op then runs its default configuration, today's kernel.
#[derive(Default)]
pub struct Tuning {
    table: RwLock<Table>,
}

impl Tuning {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        // A panic while a decision was being written leaves a complete map: keep using it.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration `key` uses: the op's forced one, else the decision, else `None`.
    pub fn decision(&self, key: &TuneKey) -> Option<String> {
        let t = self.read();
        t.forced
            .get(&key.op)
            .or_else(|| t.decisions.get(key))
            .cloned()
    }

    /// Whether `key` has a decision (forced configurations do not count: they are not tuned).
    pub fn is_decided(&self, key: &TuneKey) -> bool {
        self.read().decisions.contains_key(key)
    }

    /// Record `config` as the decision of `key`.
    pub fn decide(&self, key: TuneKey, config: &str) {
        self.write().decisions.insert(key, config.to_string());
    }

    /// Drop the decision of `key` (it is tuned again at its next use).
    pub fn forget(&self, key: &TuneKey) {
        self.write().decisions.remove(key);
    }

    /// Every decision, sorted by key.
    pub fn decisions(&self) -> BTreeMap<TuneKey, String> {
        self.read().decisions.clone()
    }

    pub fn len(&self) -> usize {
        self.read().decisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A separate table with the same decisions and `config` forced for every key of `op`.
    pub fn with_forced(&self, op: &str, config: &str) -> Tuning {
        let mut table = self.read().clone();
        table.forced.insert(op.to_string(), config.to_string());
        Tuning {
            table: RwLock::new(table),
        }
    }
}

impl PartialEq for Tuning {
    fn eq(&self, other: &Tuning) -> bool {
        std::ptr::eq(self, other) || *self.read() == *other.read()
    }
}

impl std::fmt::Debug for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.read();
        write!(
            f,
            "Tuning {{ {} decisions, forced {:?} }}",
            t.decisions.len(),
            t.forced
        )
    }
}

/// How a device tunes kernel configurations ([`crate::GpuOptions::autotune`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AutotuneOptions {
    /// Measure the candidates of undecided (op, shape class) keys at first use and keep the
    /// decisions in the cache file (`--no-autotune` turns this off: default configurations,
    /// no cache read or written).
    pub enabled: bool,
    /// Directory of the cache file (`None`: `STIPPLE_CACHE_DIR`, else the user's cache dir).
    pub cache_dir: Option<PathBuf>,
    /// Wall-clock time measurements may take in one process on one device.
    pub budget: Duration,
}

/// The default measurement budget per process and device.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(3);

impl Default for AutotuneOptions {
    fn default() -> Self {
        AutotuneOptions {
            enabled: true,
            cache_dir: None,
            budget: DEFAULT_BUDGET,
        }
    }
}

impl AutotuneOptions {
    /// Tuning off: default configurations, nothing measured, no cache file read or written.
    pub fn off() -> Self {
        AutotuneOptions {
            enabled: false,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_and_parse() {
        let key = TuneKey::new("linear_tiled", DType::F16, vec![4096, 640]);
        assert_eq!(key.to_string(), "linear_tiled/f16/4096x640");
        assert_eq!(
            "partial_tiled/f32/64".parse::<TuneKey>().unwrap().class,
            [64]
        );
        assert_eq!(key.to_string().parse::<TuneKey>().unwrap(), key);
        for bad in [
            "",
            "linear_tiled/f16",
            "/f32/1",
            "op/f64/1",
            "op/f32/1xq",
            "a/f32/1/2",
        ] {
            assert!(bad.parse::<TuneKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forced_configs_override_decisions_in_a_separate_table() {
        let t = Tuning::default();
        let key = TuneKey::new("op", DType::F32, vec![1]);
        assert_eq!(t.decision(&key), None);
        t.decide(key.clone(), "a");
        assert_eq!(t.decision(&key).as_deref(), Some("a"));
        let forced = t.with_forced("op", "b");
        assert_eq!(forced.decision(&key).as_deref(), Some("b"));
        assert!(!forced.is_decided(&TuneKey::new("op", DType::F32, vec![2])));
        // The original table is untouched.
        assert_eq!(t.decision(&key).as_deref(), Some("a"));
        t.forget(&key);
        assert!(t.is_empty());
    }
}
