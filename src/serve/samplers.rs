//! AUTOMATIC1111 sampler and scheduler names ↔ stipple's scheduler short names
//! (`crate::schedulers::SCHEDULER_NAMES`).
//!
//! A1111 names a sampler ("Euler a", "DPM++ 2M") and, since 1.9, separately a noise schedule
//! ("Automatic", "Karras", …); older clients fold the schedule into the sampler name
//! ("DPM++ 2M Karras"). Both spellings map to the same stipple scheduler.

use super::api_error::ApiError;

/// (A1111 sampler name, aliases A1111 also accepts, stipple short name).
pub const SAMPLERS: [(&str, &[&str], &str); 7] = [
    ("Euler a", &["k_euler_a", "k_euler_ancestral"], "euler-a"),
    ("Euler", &["k_euler"], "euler"),
    ("DDIM", &[], "ddim"),
    ("PLMS", &["PNDM"], "pndm"),
    ("DPM++ 2M", &["k_dpmpp_2m"], "dpmpp-2m"),
    ("DPM++ 2M Karras", &["k_dpmpp_2m_ka"], "dpmpp-2m-karras"),
    ("LCM", &[], "lcm"),
];

/// A1111 schedule names served by `/sdapi/v1/schedulers`: (name, label).
pub const SCHEDULES: [(&str, &str); 3] = [
    ("automatic", "Automatic"),
    ("uniform", "Uniform"),
    ("karras", "Karras"),
];

/// The stipple scheduler for an A1111 `sampler_name` and `scheduler`; `None` = the model's own.
/// Names are matched case-insensitively; stipple's short names are accepted too.
pub fn resolve(sampler: Option<&str>, schedule: Option<&str>) -> Result<Option<String>, ApiError> {
    let sampler = sampler.map(str::trim).filter(|s| !s.is_empty());
    let Some(sampler) = sampler else {
        return match schedule.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) if s.eq_ignore_ascii_case("automatic") => Ok(None),
            Some(s) => Err(ApiError::field(
                "scheduler",
                format!("{s:?} needs a sampler_name (the model's own scheduler has no variants)"),
            )),
        };
    };
    let short = SAMPLERS
        .iter()
        .find(|(name, aliases, short)| {
            name.eq_ignore_ascii_case(sampler)
                || short.eq_ignore_ascii_case(sampler)
                || aliases.iter().any(|a| a.eq_ignore_ascii_case(sampler))
        })
        .map(|(_, _, short)| *short)
        .ok_or_else(|| {
            let names: Vec<&str> = SAMPLERS.iter().map(|(n, _, _)| *n).collect();
            ApiError::field(
                "sampler_name",
                format!("unknown sampler {sampler:?}; expected one of {names:?}"),
            )
        })?;
    let schedule = schedule
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase);
    match schedule.as_deref() {
        None | Some("automatic") => Ok(Some(short.to_string())),
        Some("uniform") if short == "dpmpp-2m-karras" => Ok(Some("dpmpp-2m".to_string())),
        Some("uniform") => Ok(Some(short.to_string())),
        Some("karras") if short.starts_with("dpmpp-2m") => Ok(Some("dpmpp-2m-karras".to_string())),
        Some(other) => Err(ApiError::field(
            "scheduler",
            format!(
                "{other:?} is not available with sampler {sampler:?}: use \"Automatic\"{}",
                if short.starts_with("dpmpp-2m") {
                    ", \"Uniform\" or \"Karras\""
                } else {
                    " or \"Uniform\""
                }
            ),
        )),
    }
}

/// The A1111 sampler name for a stipple scheduler short name or diffusers class name (as
/// `GenerateOutput::scheduler` holds it), for infotexts.
pub fn a1111_name(scheduler: &str) -> &str {
    let short = match scheduler {
        "DDIMScheduler" => "ddim",
        "PNDMScheduler" => "pndm",
        "EulerDiscreteScheduler" => "euler",
        "EulerAncestralDiscreteScheduler" => "euler-a",
        "DPMSolverMultistepScheduler" => "dpmpp-2m",
        "LCMScheduler" => "lcm",
        other => other,
    };
    SAMPLERS
        .iter()
        .find(|(_, _, s)| *s == short)
        .map_or(scheduler, |(name, _, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_names_map_to_stipple_schedulers() {
        let cases = [
            ("Euler a", None, "euler-a"),
            ("euler A", Some("Automatic"), "euler-a"),
            ("Euler", None, "euler"),
            ("DDIM", None, "ddim"),
            ("PLMS", None, "pndm"),
            ("PNDM", None, "pndm"),
            ("DPM++ 2M", None, "dpmpp-2m"),
            ("DPM++ 2M", Some("Karras"), "dpmpp-2m-karras"),
            ("DPM++ 2M Karras", None, "dpmpp-2m-karras"),
            ("DPM++ 2M Karras", Some("Uniform"), "dpmpp-2m"),
            ("LCM", None, "lcm"),
            ("dpmpp-2m-karras", None, "dpmpp-2m-karras"),
        ];
        for (sampler, schedule, want) in cases {
            let got = resolve(Some(sampler), schedule).unwrap();
            assert_eq!(got.as_deref(), Some(want), "{sampler} / {schedule:?}");
        }
        assert_eq!(resolve(None, None).unwrap(), None);
        assert_eq!(resolve(Some(""), Some("Automatic")).unwrap(), None);
    }

    #[test]
    fn unknown_names_name_the_field() {
        let e = resolve(Some("Heun"), None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sampler_name"));
        let e = resolve(Some("Euler"), Some("Karras")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scheduler"));
        let e = resolve(None, Some("Exponential")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scheduler"));
    }

    #[test]
    fn every_stipple_scheduler_has_an_a1111_name() {
        for short in crate::schedulers::SCHEDULER_NAMES {
            let name = a1111_name(short);
            assert_ne!(name, short, "{short}");
            assert_eq!(resolve(Some(name), None).unwrap().as_deref(), Some(short));
        }
        assert_eq!(a1111_name("PNDMScheduler"), "PLMS");
    }
}
