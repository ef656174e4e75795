//! `stipple generate --prompts-file FILE --out-dir DIR`: many prompts in one process (the model
//! is loaded and its plans built once). One prompt per line; blank lines and lines starting
//! with `#` are skipped. Prompt k (counting prompts, from 0) is written to `DIR/kkkk.png`
//! (`DIR/kkkk-1.png`, … with `--batch`) with seed `seed + k`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Most prompts one file may hold (a typo'd path to a huge file should fail fast, not run
/// for days).
pub const MAX_PROMPTS: usize = 100_000;

/// Most bytes a prompts file may hold: MAX_PROMPTS prompts of CLIP's 77 tokens fit easily, and
/// a wrong file (a disk image, a video) is refused after reading this much, not all of it.
pub const MAX_BYTES: u64 = 64 << 20;

/// How to cut a too-large prompts file into runs that fit, in the user's terms.
fn split_advice(path: &Path) -> String {
    format!(
        "split it into files of at most {MAX_PROMPTS} prompts (e.g. `split -l {MAX_PROMPTS} {} \
         part-`) and run each with its own --out-dir",
        path.display()
    )
}

/// The prompts of `path`, in order.
pub fn read_prompts(path: &Path) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_BYTES,
        "prompts file {} is larger than the limit of {} MiB: {}",
        path.display(),
        MAX_BYTES >> 20,
        split_advice(path)
    );
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "prompts file {} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        !prompts.is_empty(),
        "prompts file {} holds no prompts (one per line; blank lines and # comments are skipped)",
        path.display()
    );
    anyhow::ensure!(
        prompts.len() <= MAX_PROMPTS,
        "prompts file {} holds {} prompts, more than the limit of {MAX_PROMPTS}: {}",
        path.display(),
        prompts.len(),
        split_advice(path)
    );
    Ok(prompts)
}

/// `DIR/0007.png` for prompt 7, or `DIR/0007-2.png` for its second image of a batch.
pub fn image_path(dir: &Path, prompt_index: usize, image: usize, batch: usize) -> PathBuf {
    if batch == 1 {
        dir.join(format!("{prompt_index:04}.png"))
    } else {
        dir.join(format!("{prompt_index:04}-{}.png", image + 1))
    }
}
