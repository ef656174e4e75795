//! Single-file checkpoints in the original LDM layout (the `.safetensors` files AUTOMATIC1111,
//! ComfyUI and stable-diffusion.cpp load): UNet, VAE and text encoder in one file, under
//! `model.diffusion_model.`, `first_stage_model.` and `cond_stage_model.`.
//!
//! Loading happens in two steps. [`LdmCheckpoint::open`] maps the file, validates its header,
//! normalises names (a top-level `state_dict.` prefix is stripped; `model_ema.*` EMA copies
//! are dropped: the non-EMA weights are used) and detects the family ([`detect`]). Then, once
//! the component configs are known (built-in [`presets`] or a diffusers folder's),
//! [`LdmCheckpoint::into_weights`] renames every tensor to its diffusers name under `unet.`,
//! `vae.`, `text_encoder.` (and SDXL's `text_encoder_2.`) through the [`table`] built for those configs, so each model's
//! usual `load(ctx, &weights.pp("unet"), config)` reads it unchanged. No tensor is copied:
//! renamed entries point into the same memory map (OpenCLIP's fused q/k/v at row sub-ranges).
//! Messages about missing or unused tensors use the file's LDM names.

pub mod configs;
pub mod convert;
pub mod detect;
pub mod inpainting;
pub mod ldm_clip;
pub mod ldm_unet;
pub mod ldm_vae;
pub mod presets;
pub mod table;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::safetensors_file::{SafetensorsFile, TensorInfo};
use super::{FileDtype, Weights};
use crate::error::{Error, Result};
use configs::Configs;
pub use detect::Family;
use table::{Mapped, Part, Table};

/// Extensions of PyTorch pickle checkpoints, refused by [`refuse_pickle`].
pub const PICKLE_EXTENSIONS: [&str; 4] = ["ckpt", "pt", "pth", "bin"];

/// An error for pickle checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`): unpickling runs arbitrary
/// code, so stipple reads only safetensors; the message gives a one-line conversion.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let Some(ext) = ext.filter(|e| PICKLE_EXTENSIONS.contains(&e.as_str())) else {
        return Ok(());
    };
    let out = path.with_extension("safetensors");
    Err(Error::Config {
        file: path.to_path_buf(),
        message: format!(
            ".{ext} files are PyTorch pickles, and loading a pickle can run arbitrary code, so \
             stipple reads only .safetensors. Convert it once (PyTorch's weights_only loader \
             refuses code): python3 -c \"import torch, safetensors.torch as st; \
             sd = torch.load('{}', map_location='cpu', weights_only=True); \
             sd = sd.get('state_dict', sd); st.save_file({{k: v.contiguous() for k, v in \
             sd.items() if isinstance(v, torch.Tensor)}}, '{}')\"",
            path.display(),
            out.display()
        ),
    })
}

/// An opened, family-detected LDM single file (see the module docs).
pub struct LdmCheckpoint {
    path: PathBuf,
    file: SafetensorsFile,
    /// Normalised names; EMA copies already dropped.
    tensors: Vec<TensorInfo>,
    pub family: Family,
    /// The `global_step` tensor, when the file has one (it decides SD2's prediction type).
    pub global_step: Option<i64>,
}

impl LdmCheckpoint {
    /// Maps and validates the file, normalises names and detects the family. Fails for
    /// pickles, invalid or truncated files, and unsupported or unknown checkpoints, naming the
    /// file and what was looked for.
    pub fn open(path: &Path) -> Result<LdmCheckpoint> {
        refuse_pickle(path)?;
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            return Err(Error::Config {
                file: path.to_path_buf(),
                message: "not a folder (a diffusers model folder: model_index.json, unet/, \
                          vae/, …) nor a single-file .safetensors checkpoint"
                    .into(),
            });
        }
        let (file, header) = SafetensorsFile::open(path)?;
        let mut tensors = Vec::with_capacity(header.tensors.len());
        for mut t in header.tensors {
            let Some(name) = detect::normalise(&t.name) else {
                continue;
            };
            t.name = name.to_string();
            tensors.push(t);
        }
        let global_step = tensors
            .iter()
            .find(|t| t.name == "global_step")
            .and_then(|t| read_integer(t.dtype, file.bytes(t.range.clone())));
        let family = detect::detect(
            path,
            tensors
                .iter()
                .map(|t| (t.name.as_str(), t.shape.as_slice())),
            global_step,
        )?;
        Ok(LdmCheckpoint {
            path: path.to_path_buf(),
            file,
            tensors,
            family,
            global_step,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(normalised name, shape)` of every tensor (EMA copies excluded).
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
    }

    /// The shape of a tensor (normalised name).
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors().find(|(n, _)| *n == name).map(|(_, s)| s)
    }

    /// The rename table of this file's family for these component configs.
    pub fn table(&self, configs: &Configs) -> Table {
        full_table(self.family, configs)
    }

    /// The tensors under their diffusers names (`unet.*`, `vae.*`, `text_encoder.*`).
    /// Tensors no rule maps keep their LDM name, so [`Weights::finish`] reports them.
    pub fn into_weights(self, table: Table) -> Result<Weights> {
        let mut renamed = Vec::with_capacity(self.tensors.len());
        let mut transposed = Vec::new();
        for t in self.tensors {
            if detect::is_ignored_extra(&t.name) {
                continue;
            }
            match table.to_diffusers(&t.name) {
                Mapped::Ignored => {}
                Mapped::Unknown => renamed.push(t),
                Mapped::Rename(name) => renamed.push(TensorInfo { name, ..t }),
                Mapped::Squeeze(name) => {
                    let shape = match t.shape.as_slice() {
                        [o, i, 1, 1] => vec![*o, *i],
                        _ => t.shape.clone(), // wrong shapes are reported by the model's load
                    };
                    renamed.push(TensorInfo { name, shape, ..t });
                }
                Mapped::Transpose(name) => {
                    transposed.push(name.clone());
                    renamed.push(TensorInfo { name, ..t });
                }
                Mapped::Rows(parts) => renamed.extend(split_rows(&self.path, &t, &parts)?),
            }
        }
        let table = Arc::new(table);
        let names = move |diffusers: &str| {
            table.to_ldm(diffusers).map(|s| match s.part {
                Part::Rows { index, count } => format!("{} (row block {index} of {count})", s.ldm),
                _ => s.ldm,
            })
        };
        let mut weights = Weights::renamed(self.path, self.file, renamed, Box::new(names))?;
        for name in &transposed {
            // Not 2-D: left as is, and the model's load reports the shape.
            weights.read_transposed(name);
        }
        Ok(weights)
    }
}

/// The table for a family: UNet + VAE + the family's text encoder(s).
pub fn full_table(family: Family, configs: &Configs) -> Table {
    let mut t = ldm_unet::table(&configs.unet);
    t.extend(ldm_vae::table(&configs.vae));
    t.extend(match family {
        Family::Sdxl => ldm_clip::sdxl_table(
            configs
                .text_encoder_2
                .as_ref()
                .unwrap_or(&configs.text_encoder),
        ),
        Family::Sd2Base | Family::Sd2V => ldm_clip::open_clip_table(&configs.text_encoder),
        Family::Sd1 => ldm_clip::sd1_table(),
    });
    t
}

/// Splits a tensor into `parts.len()` equal blocks of rows (first dimension), each a byte
/// sub-range of the source.
fn split_rows(path: &Path, t: &TensorInfo, parts: &[String]) -> Result<Vec<TensorInfo>> {
    let n = parts.len();
    let rows = t.shape.first().copied().unwrap_or(0);
    if rows == 0 || rows % n != 0 {
        return Err(Error::Weight {
            file: path.to_path_buf(),
            tensor: t.name.clone(),
            message: format!(
                "shape {:?} cannot be split into {n} equal blocks of rows ({})",
                t.shape,
                parts.join(", ")
            ),
        });
    }
    let bytes = t.range.len() / n;
    let mut shape = t.shape.clone();
    shape[0] = rows / n;
    Ok(parts
        .iter()
        .enumerate()
        .map(|(k, name)| TensorInfo {
            name: name.clone(),
            dtype: t.dtype,
            shape: shape.clone(),
            range: t.range.start + k * bytes..t.range.start + (k + 1) * bytes,
        })
        .collect())
}

/// A one-element integer tensor's value.
fn read_integer(dtype: FileDtype, bytes: &[u8]) -> Option<i64> {
    match dtype {
        FileDtype::I64 => Some(i64::from_le_bytes(bytes.try_into().ok()?)),
        FileDtype::I32 => Some(i32::from_le_bytes(bytes.try_into().ok()?).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickles_are_refused_with_a_conversion_command() {
        for name in ["model.ckpt", "model.PT", "x.pth", "pytorch_model.bin"] {
            let m = refuse_pickle(Path::new(name)).unwrap_err().to_string();
            assert!(m.contains("arbitrary code"), "{m}");
            assert!(m.contains("st.save_file"), "{m}");
        }
        assert!(refuse_pickle(Path::new("model.safetensors")).is_ok());
    }

    #[test]
    fn rows_are_byte_sub_ranges() {
        let t = TensorInfo {
            name: "in_proj_weight".into(),
            dtype: FileDtype::F16,
            shape: vec![6, 2],
            range: 100..124,
        };
        let parts = ["q", "k", "v"].map(String::from);
        let split = split_rows(Path::new("f"), &t, &parts).unwrap();
        assert_eq!(split[1].range, 108..116);
        assert_eq!(split[2].shape, vec![2, 2]);
        assert_eq!(split[2].name, "v");
        let bad = TensorInfo {
            shape: vec![4, 3],
            range: 0..24,
            ..t
        };
        assert!(split_rows(Path::new("f"), &bad, &parts).is_err());
    }

    #[test]
    fn integers() {
        assert_eq!(
            read_integer(FileDtype::I64, &875_000i64.to_le_bytes()),
            Some(875_000)
        );
        assert_eq!(read_integer(FileDtype::I32, &7i32.to_le_bytes()), Some(7));
        assert_eq!(read_integer(FileDtype::F32, &[0; 4]), None);
    }
}
