//! Inpainting single files (SD1.5-inpainting, SD2-inpainting): the UNet's `conv_in` takes 9
//! channels (latents 4 + mask 1 + masked-image latents 4). diffusers loads them with the
//! `stable-diffusion-inpainting` / `stable-diffusion-2-inpainting` configs, which differ from
//! the text-to-image ones (SD1.5, SD2.1-base) only in the UNet's `in_channels`; so the family
//! preset is taken with `in_channels` set from the file. An SD2.x inpainting file is detected
//! as SD2-base (ε-prediction, 512), as diffusers' `inpainting_v2` type.

use super::configs::Configs;
use super::detect::CONV_IN;
use super::LdmCheckpoint;
use crate::error::Result;

/// The UNet's input channels in the file (4, or 9 for inpainting).
pub fn unet_in_channels(ckpt: &LdmCheckpoint) -> Option<usize> {
    ckpt.shape(CONV_IN).and_then(|s| s.get(1).copied())
}

/// Makes `configs` take the file's UNet input channels when they differ (an inpainting file
/// with the family's text-to-image configs); the JSON text `stipple convert` writes follows.
pub fn adapt(configs: &mut Configs, ckpt: &LdmCheckpoint) -> Result<()> {
    let Some(channels) = unet_in_channels(ckpt) else {
        return Ok(());
    };
    if configs.unet.in_channels == channels {
        return Ok(());
    }
    configs.unet.in_channels = channels;
    let label = || ckpt.path().to_path_buf();
    let mut json: serde_json::Value =
        serde_json::from_str(&configs.texts[0]).map_err(|e| crate::Error::Config {
            file: label(),
            message: format!("UNet config: {e}"),
        })?;
    json["in_channels"] = channels.into();
    configs.texts[0] = serde_json::to_string_pretty(&json).expect("JSON value serialises");
    configs.origin = format!(
        "{} (UNet in_channels {channels} from the file)",
        configs.origin
    );
    Ok(())
}
