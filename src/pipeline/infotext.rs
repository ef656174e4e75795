//! The AUTOMATIC1111 `parameters` text a generated image is saved with. One definition for
//! every writer (the CLI's files, `GenerateOutput::png` for the web page), so the same
//! generation gives the same text everywhere.

use super::options::{GenerateOptions, GenerateOutput};
use crate::image_io::{a1111_parameters, scheduler_parameters, A1111Parameters};

impl GenerateOutput {
    /// The A1111 `parameters` text of this generation (prompt, negative prompt, steps, sampler,
    /// CFG scale, seed, size, model, img2img strength, scheduler choices).
    pub fn parameters(&self, options: &GenerateOptions, model_name: &str) -> String {
        a1111_parameters(&A1111Parameters {
            prompt: options.prompt.clone(),
            negative_prompt: options.negative_prompt.clone(),
            steps: self.steps as u32,
            sampler: self.scheduler.clone(),
            cfg_scale: options.guidance_scale,
            seed: self.seed,
            width: self.width as u32,
            height: self.height as u32,
            model: model_name.to_string(),
            denoising_strength: options.init_image.as_ref().map(|i| i.strength),
            extra: scheduler_parameters(&options.scheduler_overrides, self.prediction_type),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::PredictionType;

    fn output(images: Vec<f32>, width: usize, height: usize) -> GenerateOutput {
        GenerateOutput {
            width,
            height,
            images,
            seed: 3,
            scheduler: "euler".into(),
            prediction_type: PredictionType::Epsilon,
            steps: 12,
            truncated_tokens: 0,
            latents: None,
            timings: Default::default(),
        }
    }

    #[test]
    fn rgb8_rounds_half_to_even_saturates_and_stops_at_the_batch() {
        // Two 1×1 images; 0.5·255 = 127.5 rounds to 128 (even), 2.5 → 2 by the same rule.
        let out = output(vec![0.0, 0.5, 1.0, -0.2, 1.3, 2.5 / 255.0], 1, 1);
        assert_eq!(out.rgb8(0), Some(vec![0, 128, 255]));
        assert_eq!(out.rgb8(1), Some(vec![0, 255, 2]));
        assert_eq!(out.rgb8(2), None);
    }

    #[test]
    fn parameters_take_the_prompt_from_options_and_the_rest_from_the_output() {
        let out = output(vec![0.0; 2 * 4 * 3], 2, 4);
        let options = GenerateOptions {
            prompt: "a cat, sitting".into(),
            negative_prompt: "dog".into(),
            guidance_scale: 7.5,
            ..GenerateOptions::default()
        };
        assert_eq!(
            out.parameters(&options, "m"),
            "a cat, sitting\nNegative prompt: dog\nSteps: 12, Sampler: euler, CFG scale: 7.5, \
             Seed: 3, Size: 2x4, Model: m, Prediction type: epsilon"
        );
    }
}
