//! The generated image as the PNG the CLI writes: same pixels (diffusers' `numpy_to_pil`
//! rounding) and the same A1111 `parameters` text.

use stipple::image_io::{self, scheduler_parameters, A1111Parameters};
use stipple::pipeline::{GenerateOptions, GenerateOutput};

/// The first image of `out` as PNG bytes with `parameters`, as `stipple generate` writes it.
pub fn generation_png(
    options: &GenerateOptions,
    out: &GenerateOutput,
    model_name: &str,
) -> stipple::Result<Vec<u8>> {
    let (w, h) = (out.width, out.height);
    // (H, W, 3) in [0, 1] → 8 bits, rounding half to even as numpy.
    let rgb: Vec<u8> = out.images[..w * h * 3]
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
        .collect();
    let params = image_io::a1111_parameters(&A1111Parameters {
        prompt: options.prompt.clone(),
        negative_prompt: options.negative_prompt.clone(),
        steps: out.steps as u32,
        sampler: out.scheduler.clone(),
        cfg_scale: options.guidance_scale,
        seed: out.seed,
        width: w as u32,
        height: h as u32,
        model: model_name.to_string(),
        denoising_strength: None,
        extra: scheduler_parameters(&options.scheduler_overrides, out.prediction_type),
    });
    image_io::encode_png(w as u32, h as u32, &rgb, Some(&params))
}
