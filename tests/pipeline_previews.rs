//! `Pipeline::generate_with_previews` on the tiny-pipe model: previews arrive on the steps
//! asked for, at the output size, from the linear projection or a TAESD; asking for previews
//! does not change the generated images; bad preview settings are errors, not panics.

mod common;

use std::path::Path;

use common::golden::fixture;
use common::*;
use stipple::pipeline::{
    GenerateOptions, Pipeline, PreviewMethod, PreviewOptions, Progress, StepInfo,
};
use stipple::DType;

fn taesd_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/taesd/tiny")
}

fn options() -> GenerateOptions {
    GenerateOptions {
        prompt: "a red apple on a wooden table".into(),
        steps: 5,
        width: 24,
        height: 16,
        seed: 7,
        scheduler: Some("euler".into()),
        ..GenerateOptions::default()
    }
}

/// (step, width, height, RGB bytes) of one preview.
type Seen = (usize, usize, usize, Vec<u8>);

/// Runs with previews; returns the images and what each preview was.
fn run(
    pipeline: &mut Pipeline,
    previews: Option<&PreviewOptions>,
) -> stipple::Result<(Vec<f32>, Vec<Seen>)> {
    let mut seen = Vec::new();
    let out = pipeline.generate_with_previews(&options(), previews, |info: &StepInfo| {
        assert_eq!(info.total, 5);
        if let Some(p) = &info.preview {
            assert_eq!(p.rgb.len(), p.width * p.height * 3);
            seen.push((info.step, p.width, p.height, p.rgb.clone()));
        }
        Progress::Continue
    })?;
    Ok((out.images, seen))
}

#[test]
fn previews_on_the_steps_asked_for_without_changing_the_image() {
    let Some(gpu) = gpu() else { return };
    let mut pipeline = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).unwrap();
    let plain = pipeline
        .generate(&options(), |_, _| Progress::Continue)
        .unwrap();

    let linear = PreviewOptions {
        every: 2,
        method: PreviewMethod::Linear,
    };
    let (images, seen) = run(&mut pipeline, Some(&linear)).unwrap();
    assert_eq!(images, plain.images, "previews changed the image");
    let steps: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(steps, [2, 4]);
    assert!(seen.iter().all(|s| (s.1, s.2) == (24, 16)));
    // Predictions of x̂₀ at different noise levels differ.
    assert_ne!(seen[0].3, seen[1].3);

    // TAESD: none loaded yet.
    let taesd = PreviewOptions {
        every: 1,
        method: PreviewMethod::Taesd,
    };
    let err = run(&mut pipeline, Some(&taesd)).unwrap_err();
    assert!(err.to_string().contains("TAESD"), "{err}");
    pipeline.set_taesd(&taesd_dir()).unwrap();
    assert!(pipeline.has_taesd());
    let (images, seen) = run(&mut pipeline, Some(&taesd)).unwrap();
    assert_eq!(images, plain.images);
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| (s.1, s.2) == (24, 16)));
    // A random TAESD's picture is not the linear projection's.
    assert_ne!(seen[1].3, run(&mut pipeline, Some(&linear)).unwrap().1[0].3);

    // every = 0 is refused before any work.
    let zero = PreviewOptions {
        every: 0,
        method: PreviewMethod::Linear,
    };
    let err = run(&mut pipeline, Some(&zero)).unwrap_err();
    assert!(err.to_string().contains("preview every"), "{err}");
}

#[test]
fn cancel_from_the_step_callback() {
    let Some(gpu) = gpu() else { return };
    let mut pipeline = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).unwrap();
    let linear = PreviewOptions {
        every: 1,
        method: PreviewMethod::Linear,
    };
    let mut calls = 0;
    let result = pipeline.generate_with_previews(&options(), Some(&linear), |info| {
        calls += 1;
        if info.preview.is_some() && info.step == 2 {
            Progress::Cancel
        } else {
            Progress::Continue
        }
    });
    assert!(matches!(result, Err(stipple::Error::Cancelled)));
    assert_eq!(calls, 2);
}

#[test]
fn a_taesd_of_another_factor_is_refused() {
    let Some(gpu) = gpu() else { return };
    let mut pipeline = Pipeline::load(&gpu, &fixture("tiny-pipe"), Some(DType::F32)).unwrap();
    let x4 = taesd_dir().with_file_name("tiny-x4");
    let err = pipeline.set_taesd(&x4).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("×4") && text.contains("×2"), "{text}");
    assert!(text.contains("config.json"), "{text}");
    assert!(!pipeline.has_taesd());
}
