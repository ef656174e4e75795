//! The GPU denoising loop against the CPU loop (docs/gpu-loop.md), in three tiers:
//! 1. no GPU: every scheduler's `gpu_program`, run by `GpuStep::apply` (f64), equals its CPU
//!    `step` over whole runs (history, warm-ups, final-order switches, later first steps);
//! 2. the step kernel against `StepCoefficients::apply` and `GpuStep::apply` on odd lengths;
//! 3. the tiny pipeline: GPU-loop latents equal CPU-loop latents for every scheduler, CFG on
//!    and off, v-prediction, img2img, batch 2 and previews.
//!
//! Tolerances: tier 1 1e-5 abs (f32 rounding of intermediates the CPU keeps in f32, latents of
//! order 1–15); tier 2 1e-5 relative to max(1, |reference|); tier 3 1e-4 abs on the latents
//! and 1e-5 on the [0, 1] image (seen on lavapipe: latents ≤ 5.2e-5, image ≤ 5.4e-6; the f32
//! coefficients and fused sums differ from the CPU's f64 in the last bits, and the UNet carries
//! that from step to step, most with CFG 7.5 and Euler's σ up to 14.6).

mod common;

use common::golden::fixture;
use common::*;
use stipple::gpu::{DType, Tensor};
use stipple::ops::scheduler_step::{ModelOutput, NextInput, StepKernel};
use stipple::pipeline::{
    GenerateOptions, InitImage, Pipeline, PreviewMethod, PreviewOptions, Progress,
};
use stipple::rng::TorchRng;
use stipple::schedulers::{
    DDIMScheduler, GpuStep, PredictionType, Scheduler, SchedulerConfig, SchedulerOverrides, Slot,
    StepCoefficients,
};

/// CPU `step` vs the GPU program applied in f64, from `first` to the end; max abs difference.
fn program_vs_step(mut scheduler: Box<dyn Scheduler>, first: usize) -> f32 {
    let n = 37;
    let program = scheduler
        .gpu_program(first)
        .unwrap_or_else(|| panic!("{} has no GPU program", scheduler.class_name()));
    let mut rng = Rng::new(7);
    let mut torch = TorchRng::new(3);
    let sigma = scheduler.init_noise_sigma() as f32;
    let mut cpu = rng.vec(n, sigma);
    let mut state = vec![cpu.clone()];
    let mut worst = 0f32;
    for (i, step) in (first..scheduler.timesteps().len()).zip(&program.steps) {
        // A model output that depends on the sample, as a UNet's does.
        let m: Vec<f32> = cpu
            .iter()
            .zip(rng.vec(n, 1.0))
            .map(|(&x, r)| 0.3 * x / sigma.max(1.0) + r)
            .collect();
        let noise = scheduler.needs_noise(i).then(|| torch.randn(n));
        if let Some(z) = &noise {
            state.resize(2, Vec::new());
            state[Slot::Noise.index()] = z.clone();
        }
        step.apply(&mut state, &m);
        cpu = scheduler.step(&m, i, &cpu, noise.as_deref()).expect("step");
        worst = worst.max(max_abs_diff(&cpu, &state[0]));
        // Both go on from the CPU's sample, so differences do not compound.
        state[0] = cpu.clone();
    }
    worst
}

fn config(name: &str, prediction: PredictionType) -> SchedulerConfig {
    let mut c = SchedulerConfig::stable_diffusion()
        .with_name(name)
        .expect(name);
    c.prediction_type = prediction;
    c
}

#[test]
fn every_scheduler_program_matches_its_cpu_step() {
    let mut failures = Vec::new();
    let mut check = |label: String, scheduler: Box<dyn Scheduler>, first: usize| {
        let err = program_vs_step(scheduler, first);
        eprintln!("{label:>40}: max abs {err:.2e}");
        if err.is_nan() || err > 1e-5 {
            failures.push(format!("{label}: {err:.3e}"));
        }
    };
    for prediction in [PredictionType::Epsilon, PredictionType::VPrediction] {
        for name in [
            "ddim",
            "pndm",
            "euler",
            "euler-a",
            "dpmpp-2m",
            "dpmpp-2m-karras",
            "lcm",
        ] {
            let c = config(name, prediction);
            for (steps, first) in [(6, 0), (10, 4), (1, 0), (20, 0)] {
                let label = format!("{name} {prediction:?} {steps} steps from {first}");
                check(label, c.build(steps).expect("build"), first);
            }
        }
        // Variants the short names do not reach.
        let mut karras = config("euler", prediction);
        karras.use_karras_sigmas = true;
        check(
            format!("euler karras {prediction:?}"),
            karras.build(8).unwrap(),
            0,
        );
        let mut prk = config("pndm", prediction);
        prk.skip_prk_steps = false;
        check(format!("pndm prk {prediction:?}"), prk.build(8).unwrap(), 0);
        check(
            format!("pndm prk {prediction:?} from 3"),
            prk.build(8).unwrap(),
            3,
        );
        let mut heun = config("dpmpp-2m", prediction);
        heun.solver_type = "heun".into();
        heun.lower_order_final = false;
        heun.final_sigmas_type = stipple::schedulers::FinalSigmasType::SigmaMin;
        check(
            format!("dpmpp-2m heun {prediction:?}"),
            heun.build(7).unwrap(),
            0,
        );
        let mut first_order = config("dpmpp-2m", prediction);
        first_order.solver_order = 1;
        check(
            format!("dpmpp-1 {prediction:?}"),
            first_order.build(5).unwrap(),
            0,
        );
        let ddim = DDIMScheduler::new(&config("ddim", prediction), 6)
            .unwrap()
            .with_eta(0.7)
            .unwrap();
        check(format!("ddim eta 0.7 {prediction:?}"), Box::new(ddim), 0);
    }
    assert!(
        failures.is_empty(),
        "GPU programs off the CPU step: {failures:?}"
    );
}

#[test]
fn clip_sample_has_no_gpu_program() {
    let mut c = config("ddim", PredictionType::Epsilon);
    c.clip_sample = Some(true);
    assert!(c.build(4).unwrap().gpu_program(0).is_none());
}

/// The kernel on odd lengths: a single combination with CFG and noise vs
/// `StepCoefficients::apply`, plus the preview x̂₀ and the next UNet input (two copies).
#[test]
fn step_kernel_matches_step_coefficients() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    for n in [1usize, 7, 33, 259, 1031] {
        let out = rng.vec(2 * n, 2.0);
        let (x, z) = (rng.vec(n, 3.0), rng.vec(n, 1.0));
        let unet_out = Tensor::from_f32(&gpu, "out", &[2, n], DType::F32, &out).unwrap();
        let unet_in = Tensor::zeros(&gpu, "in", &[2, n], DType::F32).unwrap();
        let k = StepKernel::new(&gpu, n, 1, &unet_out, &unet_in).unwrap();
        k.write_slot(Slot::Sample, &x).unwrap();
        k.write_slot(Slot::Noise, &z).unwrap();
        let c = StepCoefficients {
            sample: 0.93,
            model_output: -0.41,
            noise: 0.27,
        };
        let g = 7.5f32;
        let m: Vec<f32> = (0..n).map(|i| out[i] + g * (out[n + i] - out[i])).collect();
        let step = GpuStep::single(c, true);
        let next = NextInput {
            copies: 2,
            scale: 0.61,
        };
        let p = k
            .params(&step, ModelOutput::Guided(g), Some((1.2, -0.8)), Some(next))
            .unwrap();
        k.run(&p).unwrap();
        let want = c.apply(&x, &m, Some(&z));
        let got = pollster::block_on(k.read_sample()).unwrap();
        let close = |got: &[f32], want: &[f32], what: &str| {
            let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
            let err = max_abs_diff(got, want) / scale;
            assert!(err <= 1e-5, "n = {n}, {what}: {err:.2e}");
        };
        close(&got, &want, "sample");
        let x0: Vec<f32> = x
            .iter()
            .zip(&m)
            .map(|(&x, &m)| (1.2 * x as f64 - 0.8 * m as f64) as f32)
            .collect();
        close(&pollster::block_on(k.read_x0()).unwrap(), &x0, "x0");
        let next_in: Vec<f32> = want.iter().map(|&v| v * 0.61).collect();
        let got_in = unet_in.to_f32(&gpu).unwrap();
        close(&got_in[..n], &next_in, "UNet input 0");
        close(&got_in[n..], &next_in, "UNet input 1");
    }
}

/// A multistep program (DPM++ 2M: sample and history written together) on the kernel vs
/// `GpuStep::apply`, without CFG.
#[test]
fn step_kernel_runs_multistep_programs() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(5);
    let n = 45;
    let scheduler = config("pndm", PredictionType::VPrediction)
        .build(7)
        .unwrap();
    let program = scheduler.gpu_program(0).unwrap();
    let x = rng.vec(n, 1.0);
    let unet_out = Tensor::zeros(&gpu, "out", &[n], DType::F32).unwrap();
    let unet_in = Tensor::zeros(&gpu, "in", &[n], DType::F32).unwrap();
    let k = StepKernel::new(&gpu, n, program.history, &unet_out, &unet_in).unwrap();
    k.write_slot(Slot::Sample, &x).unwrap();
    let mut state = vec![x];
    for step in &program.steps {
        let m = rng.vec(n, 1.0);
        unet_out.write_f32(&gpu, &m).unwrap();
        k.run(&k.params(step, ModelOutput::Plain, None, None).unwrap())
            .unwrap();
        step.apply(&mut state, &m);
    }
    let got = pollster::block_on(k.read_state()).unwrap();
    let err = max_abs_diff(&got[0], &state[0]);
    assert!(err <= 1e-5, "sample after PNDM steps: {err:.2e}");
}

fn tiny(gpu: &stipple::Gpu) -> Pipeline {
    Pipeline::load(gpu, &fixture("tiny-pipe"), Some(DType::F32)).expect("load tiny-pipe")
}

/// Max abs differences of the GPU and CPU loops' final latents and images for `options`
/// (previews, if any, must agree to one 8-bit level).
fn both_loops(
    pipe: &mut Pipeline,
    options: &GenerateOptions,
    previews: Option<&PreviewOptions>,
) -> (f32, f32) {
    let mut run = |cpu_loop: bool| {
        let o = GenerateOptions {
            cpu_loop,
            keep_latents: true,
            ..options.clone()
        };
        let mut shown = Vec::new();
        let out = pipe
            .generate_with_previews(&o, previews, |info| {
                if let Some(p) = &info.preview {
                    shown.push(p.rgb.clone());
                }
                Progress::Continue
            })
            .expect("generate");
        (out.latents.expect("latents kept"), out.images, shown)
    };
    let (gpu_latents, gpu_image, gpu_previews) = run(false);
    let (cpu_latents, cpu_image, cpu_previews) = run(true);
    assert_eq!(gpu_previews.len(), cpu_previews.len(), "preview count");
    for (a, b) in gpu_previews.iter().zip(&cpu_previews) {
        let off = a.iter().zip(b).filter(|(x, y)| x.abs_diff(**y) > 1).count();
        assert_eq!(off, 0, "a preview differs by more than one level");
    }
    (
        max_abs_diff(&gpu_latents, &cpu_latents),
        max_abs_diff(&gpu_image, &cpu_image),
    )
}

#[test]
fn gpu_loop_matches_cpu_loop_on_the_tiny_pipe() {
    let Some(gpu) = gpu() else { return };
    let mut pipe = tiny(&gpu);
    let base = GenerateOptions {
        prompt: "a red apple".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        seed: 99,
        width: 16,
        height: 16,
        ..Default::default()
    };
    let every = PreviewOptions {
        every: 2,
        method: PreviewMethod::Linear,
    };
    let mut cases: Vec<(String, GenerateOptions, Option<&PreviewOptions>)> = Vec::new();
    for name in [
        "ddim",
        "pndm",
        "euler",
        "euler-a",
        "dpmpp-2m",
        "dpmpp-2m-karras",
        "lcm",
    ] {
        for guidance in [7.5, 1.0] {
            let o = GenerateOptions {
                scheduler: Some(name.into()),
                guidance_scale: guidance,
                ..base.clone()
            };
            cases.push((format!("{name} cfg {guidance}"), o, None));
        }
    }
    let karras = SchedulerOverrides {
        karras: true,
        ..Default::default()
    };
    cases.push((
        "euler karras".into(),
        GenerateOptions {
            scheduler: Some("euler".into()),
            scheduler_overrides: karras,
            ..base.clone()
        },
        None,
    ));
    let v = SchedulerOverrides {
        prediction_type: Some(PredictionType::VPrediction),
        ..Default::default()
    };
    for name in ["dpmpp-2m", "pndm", "euler-a"] {
        cases.push((
            format!("{name} v-prediction"),
            GenerateOptions {
                scheduler: Some(name.into()),
                scheduler_overrides: v,
                ..base.clone()
            },
            None,
        ));
    }
    let pixels: Vec<f32> = (0..16 * 16 * 3)
        .map(|i| (i % 7) as f32 / 3.5 - 1.0)
        .collect();
    for name in ["dpmpp-2m", "pndm"] {
        cases.push((
            format!("{name} img2img 0.6"),
            GenerateOptions {
                scheduler: Some(name.into()),
                steps: 5,
                init_image: Some(InitImage {
                    width: 16,
                    height: 16,
                    pixels: pixels.clone(),
                    strength: 0.6,
                }),
                ..base.clone()
            },
            None,
        ));
    }
    cases.push((
        "euler-a batch 2".into(),
        GenerateOptions {
            scheduler: Some("euler-a".into()),
            batch: 2,
            ..base.clone()
        },
        None,
    ));
    cases.push((
        "dpmpp-2m previews".into(),
        GenerateOptions {
            scheduler: Some("dpmpp-2m".into()),
            ..base.clone()
        },
        Some(&every),
    ));
    let mut failures = Vec::new();
    for (label, options, previews) in &cases {
        let (latents, image) = both_loops(&mut pipe, options, *previews);
        eprintln!("{label:>24}: latents {latents:.2e}, image {image:.2e}");
        if latents.is_nan() || latents > 1e-4 || image.is_nan() || image > 1e-5 {
            failures.push(format!("{label}: latents {latents:.3e}, image {image:.3e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "GPU loop off the CPU loop: {failures:?}"
    );
}

#[test]
fn gpu_loop_cancels_and_reports_every_step() {
    let Some(gpu) = gpu() else { return };
    let mut pipe = tiny(&gpu);
    let options = GenerateOptions {
        prompt: "a red apple".into(),
        steps: 5,
        scheduler: Some("euler".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let done = pipe.generate(&options, |step, total| {
        seen.push((step, total));
        Progress::Continue
    });
    assert!(done.is_ok());
    assert_eq!(seen, (1..=5).map(|s| (s, 5)).collect::<Vec<_>>());
    seen.clear();
    let cancelled = pipe.generate(&options, |step, total| {
        seen.push((step, total));
        if step == 2 {
            Progress::Cancel
        } else {
            Progress::Continue
        }
    });
    assert!(matches!(cancelled, Err(stipple::Error::Cancelled)));
    assert_eq!(seen, [(1, 5), (2, 5)]);
}
