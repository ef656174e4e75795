//! LoRAs on a loaded pipeline: `set_loras` merges them into the text encoder's and UNet's GPU
//! weights, and can be called again between generations with other files or scales (the
//! weights they touched come back from the memory-mapped base files; nothing else is reloaded).

use std::path::Path;

use super::Pipeline;
use crate::error::Result;
use crate::lora::apply::read_all;
use crate::lora::LoraReport;

impl Pipeline {
    /// Makes the model `base + Σ scale·ΔW` for these `(file, scale)` LoRAs, replacing the
    /// previous set (`&[]` restores the base model). A key that matches no module of the model
    /// is an error naming the file and key; on any error the weights are unchanged.
    /// Returns per file how many modules it changed.
    pub fn set_loras<P: AsRef<Path>>(&mut self, loras: &[(P, f32)]) -> Result<Vec<LoraReport>> {
        self.set_loras_with(loras, false)
    }

    /// [`Pipeline::set_loras`]; with `lenient`, keys that match no module are skipped and listed
    /// in the reports instead.
    pub fn set_loras_with<P: AsRef<Path>>(
        &mut self,
        loras: &[(P, f32)],
        lenient: bool,
    ) -> Result<Vec<LoraReport>> {
        let files = read_all(loras)?;
        self.lora.apply(&self.gpu, &files, lenient)
    }
}
