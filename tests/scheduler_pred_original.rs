//! `Scheduler::predicted_original` (the x̂₀ live previews decode) against the forward-process
//! formula, for every scheduler and prediction type. No GPU.
//!
//! Each scheduler's `add_noise` defines its sample space: x_t = α·x₀ + σ·ε (DDPM family:
//! α = √ᾱ_t, σ = √(1 − ᾱ_t); Euler family: α = 1, σ = σ_t). From a known x₀ and ε we build the
//! exact model output for each prediction type — ε, v = (α·ε − σ·x₀)/√(α² + σ²) (the
//! velocity of the unit-variance sample), or x₀ itself — and the scheduler must give x₀ back.

use stipple::schedulers::{PredictionType, SchedulerConfig, SCHEDULER_NAMES};

/// Deterministic values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn predicted_original_inverts_the_forward_process() {
    let n = 37;
    let x0 = values(1, n);
    let eps = values(2, n);
    let mut checked = 0;
    for name in SCHEDULER_NAMES {
        for prediction in [
            PredictionType::Epsilon,
            PredictionType::VPrediction,
            PredictionType::Sample,
        ] {
            let mut config = SchedulerConfig::stable_diffusion().with_name(name).unwrap();
            config.prediction_type = prediction;
            let scheduler = match config.build(10) {
                Ok(s) => s,
                // PNDM has no sample prediction (diffusers raises too).
                Err(_) if prediction == PredictionType::Sample && name == "pndm" => continue,
                Err(e) => panic!("{name} {prediction:?}: {e}"),
            };
            for i in [0, 3, 9] {
                let alpha = scheduler.add_noise(&[1.0], &[0.0], i).unwrap()[0] as f64;
                let sigma = scheduler.add_noise(&[0.0], &[1.0], i).unwrap()[0] as f64;
                let norm = (alpha * alpha + sigma * sigma).sqrt();
                let sample = scheduler.add_noise(&x0, &eps, i).unwrap();
                let output: Vec<f32> = x0
                    .iter()
                    .zip(&eps)
                    .map(|(&x, &e)| match prediction {
                        PredictionType::Epsilon => e,
                        PredictionType::VPrediction => {
                            ((alpha * e as f64 - sigma * x as f64) / norm) as f32
                        }
                        PredictionType::Sample => x,
                    })
                    .collect();
                let got = scheduler.predicted_original(&output, i, &sample).unwrap();
                // f32 samples: the error grows with σ/α (x̂₀ divides by α at high noise).
                let tol = 2e-5 * (1.0 + sigma / alpha);
                for (k, (&g, &want)) in got.iter().zip(&x0).enumerate() {
                    let err = (g as f64 - want as f64).abs();
                    assert!(
                        err <= tol,
                        "{name} {prediction:?} step {i} [{k}]: x̂₀ {g} vs x₀ {want} (|err| {err:.2e} > {tol:.2e})"
                    );
                }
                checked += 1;
            }
        }
    }
    // 7 names × 3 prediction types × 3 steps, less PNDM's sample prediction.
    assert_eq!(checked, (7 * 3 - 1) * 3);
}

#[test]
fn predicted_original_rejects_bad_inputs() {
    let scheduler = SchedulerConfig::stable_diffusion()
        .with_name("euler")
        .unwrap()
        .build(4)
        .unwrap();
    let err = scheduler
        .predicted_original(&[0.0; 3], 4, &[0.0; 3])
        .unwrap_err();
    assert!(err.to_string().contains("step index"), "{err}");
    let err = scheduler
        .predicted_original(&[0.0; 2], 0, &[0.0; 3])
        .unwrap_err();
    assert!(err.to_string().contains("model output"), "{err}");
}
