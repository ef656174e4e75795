//! What a user may change in a model's scheduler config at generation time (the CLI's
//! `--prediction-type`, `--timestep-spacing`, `--karras`), applied like diffusers'
//! `Scheduler.from_config(config, timestep_spacing=…, use_karras_sigmas=…)` keyword
//! overrides: the noise schedule is kept, the named fields replaced.

use std::fmt;
use std::str::FromStr;

use super::{PredictionType, SchedulerConfig, SchedulerKind, TimestepSpacing};
use crate::error::{Error, Result};

/// Overrides on top of a model's scheduler config; `Default` changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerOverrides {
    /// What the UNet predicts (ε or v); `None` keeps the config's.
    pub prediction_type: Option<PredictionType>,
    /// How inference timesteps are spread (SD-Turbo needs `trailing`); `None` keeps the
    /// config's, or the scheduler class's default when the config has none.
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Karras sigmas (Euler and DPM-Solver++ only); `false` keeps the config's.
    pub karras: bool,
}

/// Schedulers that have `use_karras_sigmas` in diffusers.
const KARRAS_KINDS: [SchedulerKind; 2] = [SchedulerKind::Euler, SchedulerKind::DpmSolverMultistep];

impl SchedulerConfig {
    /// This config with `overrides` applied. Errors when `karras` is asked of a scheduler
    /// without Karras sigmas (the class comes from `_class_name`).
    pub fn with_overrides(&self, overrides: &SchedulerOverrides) -> Result<Self> {
        let mut config = self.clone();
        if let Some(p) = overrides.prediction_type {
            config.prediction_type = p;
        }
        if let Some(s) = overrides.timestep_spacing {
            config.timestep_spacing = Some(s);
        }
        if overrides.karras {
            let class = config.class_name.as_deref().unwrap_or("(no _class_name)");
            match SchedulerKind::from_class_name(class) {
                Some(kind) if KARRAS_KINDS.contains(&kind) => config.use_karras_sigmas = true,
                _ => {
                    return Err(Error::invalid(
                        "karras",
                        format!(
                            "{class} has no Karras sigmas; choose --scheduler euler, dpmpp-2m \
                             or dpmpp-2m-karras"
                        ),
                    ))
                }
            }
        }
        Ok(config)
    }
}

impl PredictionType {
    /// diffusers' spelling: `epsilon`, `v_prediction` or `sample`.
    pub fn name(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }
}

impl TimestepSpacing {
    /// diffusers' spelling: `leading`, `linspace` or `trailing`.
    pub fn name(self) -> &'static str {
        match self {
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Linspace => "linspace",
            TimestepSpacing::Trailing => "trailing",
        }
    }
}

/// Parses diffusers' spelling of a unit enum, listing the accepted names on error.
fn parse_named<T: Copy>(what: &str, s: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|&v| name(v)).collect();
        Error::invalid(
            what,
            format!("unknown value {s:?}; expected one of {}", names.join(", ")),
        )
    })
}

impl FromStr for PredictionType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        use PredictionType::*;
        parse_named(
            "prediction type",
            s,
            &[Epsilon, VPrediction, Sample],
            Self::name,
        )
    }
}

impl FromStr for TimestepSpacing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        use TimestepSpacing::*;
        parse_named(
            "timestep spacing",
            s,
            &[Leading, Linspace, Trailing],
            Self::name,
        )
    }
}

impl fmt::Display for PredictionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for TimestepSpacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
