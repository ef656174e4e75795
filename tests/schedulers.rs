//! Schedulers vs diffusers goldens (`tests/fixtures/schedulers/*.json`, written by
//! `tools/golden/scheduler_golden.py`): timesteps, sigmas / ᾱ, init_noise_sigma, add_noise and
//! every step of a short run on fixed (2, 4, 3, 3) tensors. No GPU needed.
//!
//! Tolerance: diffusers computes in float32 and stipple's coefficients in f64, so values are
//! compared normwise: max |ours − golden| ≤ 1e-5 · max(1, max |golden|) per tensor (timesteps:
//! 2e-3 absolute: fractional Karras timesteps come from diffusers' float32 ᾱ cumprod and are
//! float32; 1.1e-3 seen for Euler Karras over linspace). A step's output may
//! in addition differ by 8 float32 ulps of its input's magnitude: diffusers' float32 update
//! `x + d·dt` cancels when σ_next ≪ σ (σ_max ≈ 2·10⁴ under the cosine schedule), and its
//! rounding error, not ours, then dominates.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use stipple::schedulers::{
    DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler, LCMScheduler, PNDMScheduler, Scheduler, SchedulerConfig, SchedulerKind,
    SchedulerOverrides, TimestepSpacing,
};
use stipple::Error;

const RTOL: f64 = 1e-5;

#[derive(Deserialize)]
struct Golden {
    class_name: String,
    config: serde_json::Value,
    num_inference_steps: usize,
    eta: f64,
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
    initial_sample: Vec<f32>,
    sigmas: Option<Vec<f64>>,
    alphas_cumprod: Option<Vec<f64>>,
    add_noise: AddNoise,
    steps: Vec<Step>,
    /// Set for schedulers derived from a hub `scheduler_config.json` of another class.
    derive: Option<Derive>,
}

/// diffusers' `Target.from_config(Source.from_config(json.loads(source_text)).config, **kw)`,
/// which stipple does as `from_file(source_text)`, `with_name(name)`, `with_overrides(…)`.
#[derive(Deserialize)]
struct Derive {
    source_text: String,
    name: String,
    prediction_type: Option<String>,
    timestep_spacing: Option<String>,
    #[serde(default)]
    karras: bool,
}

#[derive(Deserialize)]
struct AddNoise {
    step_index: usize,
    original: Vec<f32>,
    noise: Vec<f32>,
    result: Vec<f32>,
}

#[derive(Deserialize)]
struct Step {
    step_index: usize,
    model_input: Vec<f32>,
    model_output: Vec<f32>,
    noise: Option<Vec<f32>>,
    prev_sample: Vec<f32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers")
}

fn load(stem: &str) -> Golden {
    let path = fixtures().join(format!("{stem}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config_of(g: &Golden) -> SchedulerConfig {
    if let Some(d) = &g.derive {
        let config = derived_config(d).expect("derived config");
        assert_eq!(config.class_name.as_deref(), Some(g.class_name.as_str()));
        return config;
    }
    let mut config: SchedulerConfig =
        serde_json::from_value(g.config.clone()).expect("config parses");
    config.class_name = Some(g.class_name.clone());
    config
}

/// The config stipple derives from a hub file: read as `scheduler_config.json`, then the
/// CLI's `--scheduler`, `--prediction-type`, `--timestep-spacing` and `--karras`.
fn derived_config(d: &Derive) -> stipple::Result<SchedulerConfig> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("stipple-derive-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    std::fs::write(&path, &d.source_text).unwrap();
    let source = SchedulerConfig::from_file(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    let overrides = SchedulerOverrides {
        prediction_type: d
            .prediction_type
            .as_deref()
            .map(|p| p.parse())
            .transpose()?,
        timestep_spacing: d
            .timestep_spacing
            .as_deref()
            .map(|t| t.parse())
            .transpose()?,
        karras: d.karras,
    };
    source?.with_name(&d.name)?.with_overrides(&overrides)
}

/// Normwise error: max |a − b| / max(1, max |b|).
fn rel_err<A: Copy + Into<f64>, B: Copy + Into<f64>>(ours: &[A], golden: &[B]) -> f64 {
    assert_eq!(ours.len(), golden.len(), "length");
    let scale = golden.iter().map(|&b| b.into().abs()).fold(1.0, f64::max);
    let max_abs = ours
        .iter()
        .zip(golden)
        .map(|(&a, &b)| (a.into() - b.into()).abs())
        .fold(0.0, f64::max);
    max_abs / scale
}

fn assert_close<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    what: &str,
    ours: &[A],
    golden: &[B],
) -> f64 {
    assert_close_with_input(what, ours, golden, &[])
}

/// As `assert_close`, allowing float32 rounding on the scale of the step's `input` too.
fn assert_close_with_input<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    what: &str,
    ours: &[A],
    golden: &[B],
    input: &[f32],
) -> f64 {
    let err = rel_err(ours, golden);
    let scale = golden.iter().map(|&b| b.into().abs()).fold(1.0, f64::max);
    let input_max = input.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    let allowed = RTOL + 8.0 * f32::EPSILON as f64 * input_max / scale;
    assert!(
        err <= allowed,
        "{what}: normwise error {err:.3e} > {allowed:.3e}"
    );
    err
}

/// A scheduler, with its sigmas or its ᾱ at each timestep.
type Built = (Box<dyn Scheduler>, Option<Vec<f64>>, Option<Vec<f64>>);

/// The scheduler for a golden, plus its sigmas or ᾱ(timesteps) when it has them.
fn build(g: &Golden) -> Built {
    let config = config_of(g);
    let n = g.num_inference_steps;
    match SchedulerKind::from_class_name(&g.class_name).expect("known class") {
        SchedulerKind::Ddim => {
            let s = DDIMScheduler::new(&config, n)
                .unwrap()
                .with_eta(g.eta)
                .unwrap();
            let a = s.alphas_cumprod();
            (Box::new(s), None, Some(a))
        }
        SchedulerKind::Pndm => {
            let s = PNDMScheduler::new(&config, n).unwrap();
            let a = s.alphas_cumprod();
            (Box::new(s), None, Some(a))
        }
        SchedulerKind::Lcm => {
            let s = LCMScheduler::new(&config, n).unwrap();
            let a = s.alphas_cumprod();
            (Box::new(s), None, Some(a))
        }
        SchedulerKind::Euler => {
            let s = EulerDiscreteScheduler::new(&config, n).unwrap();
            let sig = s.sigmas().to_vec();
            (Box::new(s), Some(sig), None)
        }
        SchedulerKind::EulerAncestral => {
            let s = EulerAncestralDiscreteScheduler::new(&config, n).unwrap();
            let sig = s.sigmas().to_vec();
            (Box::new(s), Some(sig), None)
        }
        SchedulerKind::DpmSolverMultistep => {
            let s = DPMSolverMultistepScheduler::new(&config, n).unwrap();
            let sig = s.sigmas().to_vec();
            (Box::new(s), Some(sig), None)
        }
    }
}

/// Checks one golden; returns the largest normwise error seen.
fn check(stem: &str) -> f64 {
    let g = load(stem);
    let (mut scheduler, sigmas, alphas) = build(&g);
    assert_eq!(scheduler.class_name(), g.class_name);

    let ts = scheduler.timesteps();
    assert_eq!(
        ts.len(),
        g.timesteps.len(),
        "{stem}: timesteps {ts:?} vs {:?}",
        g.timesteps
    );
    for (a, b) in ts.iter().zip(&g.timesteps) {
        assert!(
            (a - b).abs() <= 2e-3,
            "{stem}: timesteps {ts:?} vs {:?}",
            g.timesteps
        );
    }
    let mut worst = 0.0f64;
    if let (Some(ours), Some(golden)) = (&sigmas, &g.sigmas) {
        worst = worst.max(assert_close(&format!("{stem}: sigmas"), ours, golden));
    }
    if let (Some(ours), Some(golden)) = (&alphas, &g.alphas_cumprod) {
        worst = worst.max(assert_close(
            &format!("{stem}: alphas_cumprod"),
            ours,
            golden,
        ));
    }
    let init = [scheduler.init_noise_sigma()];
    worst = worst.max(assert_close(
        &format!("{stem}: init_noise_sigma"),
        &init,
        &[g.init_noise_sigma],
    ));

    let an = &g.add_noise;
    let noised = scheduler
        .add_noise(&an.original, &an.noise, an.step_index)
        .unwrap();
    worst = worst.max(assert_close(
        &format!("{stem}: add_noise"),
        &noised,
        &an.result,
    ));

    // Teacher-forced: each step starts from diffusers' previous output, so float32 rounding in
    // the golden does not carry over (multistep history is still ours).
    let mut sample = g.initial_sample.clone();
    for step in &g.steps {
        let i = step.step_index;
        let input = scheduler.scale_model_input(&sample, i).unwrap();
        worst = worst.max(assert_close(
            &format!("{stem}: step {i} model input"),
            &input,
            &step.model_input,
        ));
        let noise = if scheduler.needs_noise(i) {
            step.noise.as_deref()
        } else {
            None
        };
        if let Some(c) = scheduler.step_coefficients(i) {
            // The fused form gives the same result as `step`.
            let fused = c.apply(&sample, &step.model_output, noise);
            let what = format!("{stem}: step {i} coefficients");
            worst = worst.max(assert_close_with_input(
                &what,
                &fused,
                &step.prev_sample,
                &sample,
            ));
        }
        let prev = scheduler
            .step(&step.model_output, i, &sample, noise)
            .unwrap();
        let what = format!("{stem}: step {i} prev_sample");
        worst = worst.max(assert_close_with_input(
            &what,
            &prev,
            &step.prev_sample,
            &sample,
        ));
        sample = step.prev_sample.clone();
    }
    println!(
        "{stem}: {} steps, max normwise error {worst:.2e}",
        g.steps.len()
    );
    worst
}

macro_rules! golden_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check(stringify!($name)); })*
    };
}

golden_tests!(
    ddim_sd15,
    ddim_trailing_vpred_clip,
    ddim_defaults_linspace_eta,
    pndm_sd15,
    pndm_prk,
    euler_sd15,
    euler_leading_vpred,
    euler_karras_trailing,
    euler_cosine_sample,
    euler_ancestral_sd15,
    euler_ancestral_leading_vpred,
    dpmpp_2m_sd15,
    dpmpp_2m_karras_sd15,
    dpmpp_2m_vpred_trailing_sigma_min,
    dpmpp_2m_leading_16,
    lcm_defaults,
    lcm_sd15_clip,
    derive_euler_a_trailing_from_pndm_1,
    derive_euler_a_trailing_from_pndm_4,
    derive_euler_a_from_turbo_4,
    derive_ddim_from_turbo_2,
    derive_euler_from_dpm_karras_file,
    derive_dpmpp_karras_from_ddim_vpred,
    derive_euler_vpred_linspace_from_pndm,
    derive_pndm_trailing_from_dpm_karras_file,
);

#[test]
fn every_fixture_is_tested() {
    let mut stems: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    stems.sort();
    assert_eq!(
        stems.len(),
        25,
        "new fixture? add it to golden_tests!: {stems:?}"
    );
    let worst = stems.iter().map(|s| check(s)).fold(0.0, f64::max);
    println!("all fixtures: max normwise error {worst:.2e}");
}

#[test]
fn names_pick_the_same_schedulers_as_diffusers_configs() {
    let sd = SchedulerConfig::stable_diffusion();
    for (name, stem) in [
        ("ddim", "ddim_sd15"),
        ("pndm", "pndm_sd15"),
        ("euler", "euler_sd15"),
        ("euler-a", "euler_ancestral_sd15"),
        ("dpmpp-2m", "dpmpp_2m_sd15"),
        ("dpmpp-2m-karras", "dpmpp_2m_karras_sd15"),
    ] {
        let g = load(stem);
        let s = sd
            .with_name(name)
            .unwrap()
            .build(g.num_inference_steps)
            .unwrap();
        assert_eq!(s.class_name(), g.class_name, "{name}");
        assert_eq!(s.timesteps(), g.timesteps.as_slice(), "{name}");
    }
    let lcm = sd.with_name("lcm").unwrap().build(4).unwrap();
    assert_eq!(lcm.class_name(), "LCMScheduler");
    assert_eq!(lcm.timesteps(), &[999.0, 759.0, 499.0, 259.0]);
}

#[test]
fn config_from_file_ignores_unknown_fields() {
    let dir = std::env::temp_dir().join(format!("stipple-schedulers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false,
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "trained_betas": null, "some_future_field": [1, 2]}"#,
    )
    .unwrap();
    let config = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(config, SchedulerConfig::stable_diffusion());
    let s = config.build(5).unwrap();
    assert_eq!(s.timesteps(), load("pndm_sd15").timesteps.as_slice());

    std::fs::write(&path, r#"{"beta_schedule": "sigmoid"}"#).unwrap();
    let err = SchedulerConfig::from_file(&path).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string())
            && err.to_string().contains("sigmoid"),
        "{err}"
    );

    std::fs::remove_file(&path).unwrap();
    let err = SchedulerConfig::from_file(&path).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_not_panics() {
    let sd = SchedulerConfig::stable_diffusion();
    let msg = sd.with_name("heun").unwrap_err().to_string();
    assert!(
        msg.contains("heun") && msg.contains("dpmpp-2m-karras"),
        "{msg}"
    );

    let mut unknown = sd.clone();
    unknown.class_name = Some("UniPCMultistepScheduler".into());
    assert!(unknown
        .build(10)
        .unwrap_err()
        .to_string()
        .contains("UniPCMultistepScheduler"));
    let mut no_class = sd.clone();
    no_class.class_name = None;
    assert!(no_class.build(10).is_err());

    for kind in SchedulerKind::ALL {
        assert!(sd.build_kind(kind, 0).is_err(), "{kind:?} with 0 steps");
        assert!(
            sd.build_kind(kind, 1001).is_err(),
            "{kind:?} with 1001 steps"
        );
    }
    let mut thresholding = sd.clone();
    thresholding.thresholding = true;
    assert!(thresholding
        .build_kind(SchedulerKind::Ddim, 10)
        .unwrap_err()
        .to_string()
        .contains("thresholding"));
    let mut sde = sd.clone();
    sde.algorithm_type = "sde-dpmsolver++".into();
    assert!(sde
        .build_kind(SchedulerKind::DpmSolverMultistep, 10)
        .unwrap_err()
        .to_string()
        .contains("algorithm_type"));

    let x = vec![0.0f32; 8];
    let mut euler_a = sd.build_kind(SchedulerKind::EulerAncestral, 5).unwrap();
    let msg = euler_a.step(&x, 0, &x, None).unwrap_err().to_string();
    assert!(msg.contains("noise"), "{msg}");
    assert!(euler_a.step(&x, 0, &x, Some(&x[..4])).is_err());
    assert!(euler_a.step(&x[..4], 0, &x, Some(&x)).is_err());
    assert!(euler_a
        .step(&x, 5, &x, Some(&x))
        .unwrap_err()
        .to_string()
        .contains("step index"));
    // The last step goes to σ = 0 and needs no noise.
    assert!(euler_a.step(&x, 4, &x, None).is_ok());
    assert!(euler_a.add_noise(&x, &x[..2], 0).is_err());
    assert!(euler_a.scale_model_input(&x, 5).is_err());
}

#[test]
fn multistep_history_restarts_at_a_jump() {
    // img2img starts at a later index: the first step taken is first order, as in a fresh
    // diffusers scheduler with begin_index set.
    let g = load("dpmpp_2m_sd15");
    let config = config_of(&g);
    let mut a = DPMSolverMultistepScheduler::new(&config, 5).unwrap();
    let mut b = DPMSolverMultistepScheduler::new(&config, 5).unwrap();
    let (x, m) = (&g.initial_sample, &g.steps[0].model_output);
    a.step(m, 0, x, None).unwrap();
    let from_jump = a.step(m, 2, x, None).unwrap();
    let fresh = b.step(m, 2, x, None).unwrap();
    assert_eq!(from_jump, fresh);
}

#[test]
fn ddim_from_the_pndm_file_keeps_its_schedule() {
    // The SD1.5 folder's PNDM config, switched to DDIM (`--scheduler ddim`), is what diffusers'
    // DDIMScheduler.from_config(pipe.scheduler.config) gives: the ddim_sd15 golden.
    let g = load("derive_euler_a_trailing_from_pndm_4");
    let d = g.derive.as_ref().unwrap();
    let ddim = derived_config(&Derive {
        source_text: d.source_text.clone(),
        name: "ddim".into(),
        prediction_type: None,
        timestep_spacing: None,
        karras: false,
    })
    .unwrap();
    let want = load("ddim_sd15");
    let s = ddim.build(want.num_inference_steps).unwrap();
    assert_eq!(s.class_name(), "DDIMScheduler");
    assert_eq!(s.timesteps(), want.timesteps.as_slice());
}

#[test]
fn overrides_apply_and_karras_is_refused_where_diffusers_has_none() {
    let sd = SchedulerConfig::stable_diffusion();
    let trailing = SchedulerOverrides {
        timestep_spacing: Some(TimestepSpacing::Trailing),
        ..Default::default()
    };
    let euler_a = sd
        .with_name("euler-a")
        .unwrap()
        .with_overrides(&trailing)
        .unwrap();
    assert_eq!(euler_a.build(1).unwrap().timesteps(), &[999.0]);
    assert_eq!(
        sd.with_overrides(&SchedulerOverrides::default()).unwrap(),
        sd
    );
    let karras = SchedulerOverrides {
        karras: true,
        ..Default::default()
    };
    for name in ["euler-a", "ddim", "pndm", "lcm"] {
        let msg = sd
            .with_name(name)
            .unwrap()
            .with_overrides(&karras)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("Karras") && msg.contains("dpmpp-2m"),
            "{name}: {msg}"
        );
    }
    for name in ["euler", "dpmpp-2m"] {
        let c = sd.with_name(name).unwrap().with_overrides(&karras).unwrap();
        assert!(c.use_karras_sigmas, "{name}");
    }
    let msg = "x_prediction"
        .parse::<stipple::schedulers::PredictionType>()
        .unwrap_err();
    assert!(msg.to_string().contains("v_prediction"), "{msg}");
    let msg = "middle".parse::<TimestepSpacing>().unwrap_err();
    assert!(msg.to_string().contains("trailing"), "{msg}");
}

#[test]
fn python_float_literals_in_scheduler_files() {
    let dir = std::env::temp_dir().join(format!("stipple-pyfloat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    let write = |text: &str| std::fs::write(&path, text).unwrap();

    write(
        r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
              "beta_schedule": "scaled_linear", "variance_type": null}"#,
    );
    let c = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(c.lambda_min_clipped, f64::NEG_INFINITY);
    c.build(5).unwrap();

    // A finite value still reads as written.
    write(r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -5.1}"#);
    assert_eq!(
        SchedulerConfig::from_file(&path)
            .unwrap()
            .lambda_min_clipped,
        -5.1
    );

    // NaN / infinities where a number is needed: an error naming the field, at build.
    for (field, text) in [
        (
            "sigma_min",
            r#"{"_class_name": "EulerDiscreteScheduler", "sigma_min": NaN}"#,
        ),
        (
            "sigma_max",
            r#"{"_class_name": "EulerDiscreteScheduler", "sigma_max": Infinity}"#,
        ),
        (
            "lambda_min_clipped",
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": NaN}"#,
        ),
        (
            "beta_start",
            r#"{"_class_name": "DDIMScheduler", "beta_start": NaN}"#,
        ),
    ] {
        write(text);
        let msg = SchedulerConfig::from_file(&path)
            .unwrap()
            .build(5)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(field), "{field}: {msg}");
    }

    // A literal in a non-numeric field: a config error naming the file and the field.
    write(r#"{"_class_name": "DDIMScheduler", "timestep_spacing": -Infinity}"#);
    let msg = SchedulerConfig::from_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("timestep_spacing") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    // In strings the words are text; elsewhere invalid JSON stays invalid.
    write(r#"{"_class_name": "NaN Infinity", "_note": "-Infinity"}"#);
    let c = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(c.class_name.as_deref(), Some("NaN Infinity"));
    write(r#"{"beta_end": Infinityx}"#);
    assert!(SchedulerConfig::from_file(&path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
