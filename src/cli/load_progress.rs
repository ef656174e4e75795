//! A progress bar while a model's weights stream to the GPU (on stderr; indicatif draws nothing
//! when stderr is not a terminal, so logs and pipes stay clean).

use std::path::Path;

use stipple::pipeline::{LoadOptions, Pipeline};
use stipple::Gpu;

/// [`Pipeline::load_with`] with a bar counting the weight bytes uploaded.
pub fn load_pipeline(
    gpu: &Gpu,
    model: &Path,
    options: &LoadOptions,
) -> stipple::Result<(Pipeline, Vec<String>)> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} loading weights {bar:30} {binary_bytes}/{binary_total_bytes} [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let loaded = Pipeline::load_with_progress(gpu, model, options, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    loaded
}
