//! The networks of the Stable Diffusion family as graph builders, one file per diffusers module
//! with diffusers' type, field and weight names (candle's `stable_diffusion/` is the model for
//! this layout). Each module is loaded once from a [`WeightsView`]
//! (weights repacked for the kernels and uploaded in the compute dtype) and adds its nodes to a
//! [`Graph`](crate::graph::Graph) with `forward`. Node names are the weight prefixes, so GPU
//! captures and errors read like the checkpoint.
//!
//! Activations are NHWC: (B, H, W, C), flattened for free to the transformers' (B, H·W, C).

pub mod attention;
pub mod autoencoder_kl;
pub mod autoencoder_tiny;
pub mod clip;
pub mod concat_conv;
pub mod config;
pub mod embeddings;
pub mod layers;
mod python_json;
pub mod resnet;
pub mod split;
pub mod transformer_2d;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod vae;

use crate::error::Result;
use crate::gpu::{DType, Gpu, Target, Tensor};
use crate::weights::{TensorData, WeightsView};

/// A decoder's graph: input `z` of `z_shape` (B, h, w, latent channels), output `image`
/// from `decode`; probes at block boundaries when `probes`.
pub fn latent_decoder_graph(
    dtype: DType,
    target: &Target,
    probes: bool,
    z_shape: [usize; 4],
    decode: impl FnOnce(
        &mut crate::graph::Graph,
        crate::graph::ValueId,
    ) -> Result<crate::graph::ValueId>,
) -> Result<crate::graph::Graph> {
    let mut g = crate::graph::Graph::for_target(dtype, target);
    if probes {
        g = g.with_probes();
    }
    let z = g.input("z", &z_shape)?;
    let image = decode(&mut g, z)?;
    g.output("image", image)?;
    Ok(g)
}

/// Where and how weights are uploaded.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub gpu: &'a Gpu,
    /// Storage dtype of weights and activations.
    pub dtype: DType,
    /// Build with placeholder weights (shapes only, nothing read): for planning memory of
    /// models whose weights are not at hand. Such graphs cannot run.
    pub placeholders: bool,
    /// Where Linear/Conv2d uploads are recorded so LoRAs can rewrite them (see
    /// [`crate::lora::targets`]); None = not recorded.
    pub lora_targets: Option<&'a crate::lora::Targets>,
    /// Told the file bytes of each weight once it is on the GPU (a loading progress bar).
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// What the models' graphs are built for (defaults to `gpu.target`).
    pub target: &'a Target,
}

impl<'a> Ctx<'a> {
    pub fn new(gpu: &'a Gpu, dtype: DType) -> Self {
        Ctx {
            gpu,
            dtype,
            placeholders: false,
            lora_targets: None,
            progress: None,
            target: &gpu.target,
        }
    }

    /// Shapes only (see [`Ctx::placeholders`]).
    pub fn placeholders(gpu: &'a Gpu, dtype: DType) -> Self {
        Ctx {
            gpu,
            dtype,
            placeholders: true,
            lora_targets: None,
            progress: None,
            target: &gpu.target,
        }
    }

    /// Weights of `shape` read from `w.name`, or a placeholder; uploaded as `label`.
    pub fn tensor(&self, w: &WeightsView, name: &str, shape: &[usize]) -> Result<Tensor> {
        let label = w.full_name(name);
        if self.placeholders {
            return Tensor::placeholder(self.gpu, &label, shape, self.dtype);
        }
        let data = w.data(name, shape)?;
        let tensor = Tensor::from_fill(self.gpu, &label, shape, self.dtype, |start, out| {
            data.read(start, out)
        })?;
        self.loaded(&data);
        Ok(tensor)
    }

    /// Reports a weight as loaded to [`Ctx::progress`].
    pub fn loaded(&self, data: &TensorData) {
        if let Some(progress) = self.progress {
            progress(data.bytes().len() as u64);
        }
    }
}
