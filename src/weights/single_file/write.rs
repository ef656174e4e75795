//! Writing safetensors files (for `stipple convert`): tensors given as on-disk bytes, copied
//! unchanged or converted between F32, F16 and BF16, written atomically (no partial file on
//! error).

use std::path::Path;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::output_file::write_output;
pub use crate::weights::transpose_bytes;
use crate::weights::{to_f32, FileDtype};

/// One tensor to write: its bytes are the concatenation of `parts` (e.g. q, k and v rows
/// fused back into one `in_proj_weight`), all of dtype `dtype`.
pub struct OutTensor<'a> {
    pub name: String,
    pub dtype: FileDtype,
    pub shape: Vec<usize>,
    pub parts: Vec<&'a [u8]>,
}

fn is_float(d: FileDtype) -> bool {
    matches!(d, FileDtype::F32 | FileDtype::F16 | FileDtype::BF16)
}

/// The dtype a tensor is written in: `to` for floating-point tensors, else its own.
fn out_dtype(t: &OutTensor, to: Option<FileDtype>) -> FileDtype {
    match to {
        Some(d) if is_float(t.dtype) => d,
        _ => t.dtype,
    }
}

fn encode(values: &[f32], to: FileDtype) -> Vec<u8> {
    match to {
        FileDtype::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        FileDtype::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes `tensors` (sorted by name) to `path`; floating-point tensors are converted to `to`
/// when given (F32, F16 or BF16), others are copied as they are.
pub fn write_safetensors(
    path: &Path,
    tensors: &mut [OutTensor],
    to: Option<FileDtype>,
) -> Result<()> {
    if let Some(d) = to.filter(|d| !is_float(*d)) {
        return Err(Error::invalid(
            "dtype",
            format!("{d} is not f32, f16 or bf16"),
        ));
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors.iter() {
        let numel: usize = t.shape.iter().product();
        let dtype = out_dtype(t, to);
        let size = dtype.byte_size(numel).ok_or_else(|| {
            Error::invalid(
                "tensor",
                format!("{}: {numel} elements of {dtype} have no byte size", t.name),
            )
        })?;
        let given: usize = t.parts.iter().map(|p| p.len()).sum();
        if t.dtype.byte_size(numel) != Some(given) {
            return Err(Error::invalid(
                "tensor",
                format!(
                    "{}: shape {:?} of {} does not match its {given} bytes",
                    t.name, t.shape, t.dtype
                ),
            ));
        }
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + size]}),
        );
        offset += size;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    write_output(path, |w| {
        let io = |e| Error::io(path, e);
        w.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&header).map_err(io)?;
        for t in tensors.iter() {
            let dtype = out_dtype(t, to);
            for part in &t.parts {
                if dtype == t.dtype {
                    w.write_all(part).map_err(io)?;
                } else {
                    let values = to_f32(t.dtype, part).map_err(|message| Error::Weight {
                        file: path.to_path_buf(),
                        tensor: t.name.clone(),
                        message,
                    })?;
                    w.write_all(&encode(&values, dtype)).map_err(io)?;
                }
            }
        }
        w.flush().map_err(io)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Weights;

    #[test]
    fn writes_concatenated_and_converted_tensors() {
        let dir = std::env::temp_dir().join(format!("stipple-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [3.5f32, -4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let ids: Vec<u8> = [7i64].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut tensors = vec![
            OutTensor {
                name: "w".into(),
                dtype: FileDtype::F32,
                shape: vec![2, 2],
                parts: vec![&a, &b],
            },
            OutTensor {
                name: "ids".into(),
                dtype: FileDtype::I64,
                shape: vec![1],
                parts: vec![&ids],
            },
        ];
        write_safetensors(&path, &mut tensors, Some(FileDtype::F16)).unwrap();
        let w = Weights::open(&path).unwrap();
        assert_eq!(w.root().dtype("w").unwrap(), FileDtype::F16);
        assert_eq!(
            w.root().get("w", &[2, 2]).unwrap(),
            vec![1.0, 2.0, 3.5, -4.0]
        );
        assert_eq!(w.raw("ids").unwrap().2, ids.as_slice());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn transposes_bytes() {
        // (2, 3) of 2-byte values → (3, 2).
        let x: Vec<u8> = (0..12).collect();
        assert_eq!(
            transpose_bytes(&x, 2, 3, 2),
            vec![0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]
        );
    }

    #[test]
    fn byte_count_mismatch_is_an_error() {
        let a = [0u8; 12];
        let mut tensors = vec![OutTensor {
            name: "w".into(),
            dtype: FileDtype::F32,
            shape: vec![2, 2],
            parts: vec![&a],
        }];
        let path = std::env::temp_dir().join("stipple-never-written.safetensors");
        assert!(write_safetensors(&path, &mut tensors, None).is_err());
        assert!(!path.exists());
    }
}
