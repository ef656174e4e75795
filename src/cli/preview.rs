//! `stipple generate --preview FILE --preview-every N [--taesd DIR]`: live previews of the
//! predicted image, written atomically so a viewer never reads a half-written PNG.

use std::path::{Path, PathBuf};

use stipple::image_io;
use stipple::output_file;
use stipple::pipeline::{PreviewImage, PreviewMethod, PreviewOptions};

#[derive(clap::Args, Clone, Debug)]
pub struct PreviewArgs {
    /// Write a preview PNG of the image being drawn (the first of a batch) to FILE every
    /// --preview-every steps, replacing it atomically. Made with --taesd when given, else with
    /// a latent→RGB projection (blurry, approximate colours, free).
    #[arg(long, value_name = "FILE")]
    pub preview: Option<PathBuf>,
    /// Steps between previews.
    #[arg(long, value_name = "N", default_value_t = 5, requires = "preview")]
    pub preview_every: usize,
    /// A TAESD folder (diffusers AutoencoderTiny: config.json + weights, e.g. madebyollin/taesd
    /// for SD1.x/2.x, taesdxl for SDXL) that decodes the previews.
    #[arg(long, value_name = "DIR", requires = "preview")]
    pub taesd: Option<PathBuf>,
}

impl PreviewArgs {
    /// Checks that need no GPU.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.preview {
            anyhow::ensure!(
                !output_file::is_stdout(path),
                "--preview - is not possible: previews replace a file, name one"
            );
            check_every(self.preview_every)?;
        }
        check_taesd(self.taesd.as_deref())
    }

    /// The library's preview options, None without --preview.
    pub fn options(&self) -> Option<PreviewOptions> {
        self.preview.as_ref().map(|_| PreviewOptions {
            every: self.preview_every,
            method: if self.taesd.is_some() {
                PreviewMethod::Taesd
            } else {
                PreviewMethod::Linear
            },
        })
    }
}

/// `--preview-every N`: at least 1.
pub fn check_every(every: usize) -> anyhow::Result<()> {
    anyhow::ensure!(every >= 1, "--preview-every 0: use 1 or more steps");
    Ok(())
}

/// `--taesd DIR`: a folder with a config.json (the rest is checked when it loads).
pub fn check_taesd(dir: Option<&Path>) -> anyhow::Result<()> {
    if let Some(dir) = dir {
        anyhow::ensure!(
            dir.join("config.json").is_file(),
            "--taesd {}: no config.json there (a diffusers AutoencoderTiny folder)",
            dir.display()
        );
    }
    Ok(())
}

/// The preview as a PNG at `path` (temporary file + rename; see `output_file`).
pub fn write_preview(path: &Path, image: &PreviewImage) -> stipple::Result<()> {
    let png = image_io::encode_png(image.width as u32, image.height as u32, &image.rgb, None)?;
    output_file::write_output_bytes(path, &png)
}
