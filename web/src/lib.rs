//! stipple in a web page: the exports `web/main.js` calls through wasm-bindgen.
//!
//! ```text
//! fetch(model files) ─▶ Generator.load(files, name) ─▶ Generator.generate(…, onStep) ─▶ PNG bytes
//! ```
//!
//! The same library code as the CLI runs underneath (`Pipeline::generate_async`); every wait on
//! the GPU is an awaited WebGPU promise, so the page repaints between denoising steps. The PNG
//! carries the CLI's A1111 `parameters` text (`GenerateOutput::png`).

mod files;

use stipple::files::Mount;
use stipple::pipeline::{GenerateOptions, Pipeline, PreviewMethod, PreviewOptions, Progress};
use stipple::{Gpu, GpuOptions};
use wasm_bindgen::prelude::*;

/// Steps between the live previews the page shows.
const PREVIEW_EVERY: usize = 2;

/// Largest seed a JS number holds exactly (2^53).
const MAX_SEED: f64 = 9_007_199_254_740_992.0;

/// A loaded model on the page's WebGPU device.
#[wasm_bindgen]
pub struct Generator {
    pipeline: Pipeline,
    /// The fetched files, readable by the loaders while the generator lives (`stipple::files`).
    _files: Mount,
    /// Written as `Model:` in the PNG's parameters (the CLI writes the model folder's name).
    model_name: String,
    adapter: String,
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

#[wasm_bindgen]
impl Generator {
    /// Opens the WebGPU device and loads a diffusers model folder from fetched files: `files`
    /// maps paths relative to the folder (`"unet/config.json"`) to `Uint8Array`s.
    pub async fn load(files: js_sys::Map, model_name: String) -> Result<Generator, JsError> {
        let files = files::model_folder(&files)
            .map_err(js_error)?
            .mount("/web-model");
        let gpu = Gpu::new_async(&GpuOptions::default())
            .await
            .map_err(js_error)?;
        let adapter = match gpu.info.name.as_str() {
            "" => format!("a WebGPU adapter ({:?})", gpu.info.backend),
            name => format!("{name} ({:?})", gpu.info.backend),
        };
        // The same folder loader as the CLI's, reading the mounted files; dtype as `--dtype auto`.
        let pipeline = Pipeline::load(&gpu, files.root(), None).map_err(js_error)?;
        Ok(Generator {
            pipeline,
            _files: files,
            model_name,
            adapter,
        })
    }

    /// The WebGPU adapter in words (name, backend).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// Generates one image and returns its PNG bytes. `scheduler` "" = the model's own;
    /// `width`/`height` 0 = the model's native size. `on_step(step, total, preview)` is called
    /// after each denoising step; returning `false` from it cancels. Every [`PREVIEW_EVERY`]
    /// steps `preview` is the predicted image so far as `{width, height, rgb: Uint8Array}` (the
    /// latent→RGB projection: shapes and rough colours), otherwise `null`.
    #[allow(clippy::too_many_arguments)] // mirrors the CLI's flags one to one
    pub async fn generate(
        &mut self,
        prompt: String,
        negative: String,
        steps: u32,
        cfg: f32,
        seed: f64,
        scheduler: String,
        width: u32,
        height: u32,
        on_step: js_sys::Function,
    ) -> Result<Vec<u8>, JsError> {
        if !(seed.is_finite() && seed >= 0.0 && seed.fract() == 0.0 && seed <= MAX_SEED) {
            return Err(js_error(format!(
                "invalid seed {seed}: an integer in 0..=2^53 is expected"
            )));
        }
        let options = GenerateOptions {
            prompt,
            negative_prompt: negative,
            steps: steps as usize,
            guidance_scale: cfg,
            seed: seed as u64,
            width: width as usize,
            height: height as usize,
            scheduler: (!scheduler.is_empty()).then_some(scheduler),
            ..GenerateOptions::default()
        };
        let previews = PreviewOptions {
            every: PREVIEW_EVERY,
            method: PreviewMethod::Linear,
        };
        let out = self
            .pipeline
            .generate_with_previews_async(&options, Some(&previews), |info| {
                let preview = info.preview.as_ref().map_or(JsValue::NULL, |p| {
                    let object = js_sys::Object::new();
                    let set = |key: &str, value: JsValue| {
                        let _ = js_sys::Reflect::set(&object, &key.into(), &value);
                    };
                    set("width", (p.width as u32).into());
                    set("height", (p.height as u32).into());
                    set("rgb", js_sys::Uint8Array::from(&p.rgb[..]).into());
                    object.into()
                });
                let keep_going = on_step
                    .call3(
                        &JsValue::NULL,
                        &(info.step as u32).into(),
                        &(info.total as u32).into(),
                        &preview,
                    )
                    .map(|r| r.as_bool() != Some(false))
                    .unwrap_or(true);
                if keep_going {
                    Progress::Continue
                } else {
                    Progress::Cancel
                }
            })
            .await
            .map_err(js_error)?;
        out.png(0, &options, &self.model_name).map_err(js_error)
    }
}
