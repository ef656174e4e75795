//! Writing `.safetensors` files streaming: the header first (every tensor's name, dtype, shape
//! and offsets are known up front), then each tensor's values produced chunk by chunk, so a
//! multi-gigabyte checkpoint is written with a few MiB of memory. The file appears atomically
//! (temporary file + rename, see [`crate::output_file`]): never half-written.
//!
//! Layout (as the `safetensors` library writes it): `u64` little-endian header length, the JSON
//! header padded with spaces to a multiple of 8 bytes, then the tensors back to back in the
//! order given.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::dtype::FileDtype;
use crate::error::{Error, Result};

/// Elements produced per chunk (4 MiB as f32).
const CHUNK: usize = 1 << 20;

/// One tensor to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// F32, F16 or BF16.
    pub dtype: FileDtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Writes `tensors` to `path`. `fill(k, start, out)` writes elements `start..start + out.len()`
/// of tensor `k` as f32 (converted to the tensor's dtype here, rounding to nearest even).
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorSpec],
    metadata: &BTreeMap<String, String>,
    mut fill: impl FnMut(usize, usize, &mut [f32]),
) -> Result<()> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for t in tensors {
        if !matches!(t.dtype, FileDtype::F32 | FileDtype::F16 | FileDtype::BF16) {
            return Err(Error::invalid(
                "dtype",
                format!(
                    "tensor {}: cannot write {} (F32, F16, BF16 only)",
                    t.name, t.dtype
                ),
            ));
        }
        if header.contains_key(&t.name) {
            return Err(Error::invalid(
                "tensor name",
                format!("{} given twice for {}", t.name, path.display()),
            ));
        }
        let bytes = t.numel() * t.dtype.bits() / 8;
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    text.resize(text.len().div_ceil(8) * 8, b' ');

    crate::output_file::write_output(path, |w| {
        let io = |e| Error::io(path, e);
        w.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&text).map_err(io)?;
        let mut values = vec![0.0f32; CHUNK];
        let mut bytes = Vec::with_capacity(CHUNK * 4);
        for (k, t) in tensors.iter().enumerate() {
            let n = t.numel();
            for start in (0..n).step_by(CHUNK) {
                let chunk = &mut values[..CHUNK.min(n - start)];
                fill(k, start, chunk);
                bytes.clear();
                encode(t.dtype, chunk, &mut bytes);
                w.write_all(&bytes).map_err(io)?;
            }
        }
        Ok(())
    })
}

/// Appends `values` as little-endian `dtype` (F32, F16 or BF16) to `out`.
fn encode(dtype: FileDtype, values: &[f32], out: &mut Vec<u8>) {
    match dtype {
        FileDtype::F16 => out.extend(
            values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes()),
        ),
        FileDtype::BF16 => out.extend(
            values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()),
        ),
        _ => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Weights;

    #[test]
    fn round_trip_through_the_loader() {
        let dir = std::env::temp_dir().join(format!("stipple-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let specs = vec![
            TensorSpec {
                name: "a".into(),
                dtype: FileDtype::F32,
                shape: vec![3, CHUNK / 2 + 1], // crosses a chunk boundary
            },
            TensorSpec {
                name: "b.weight".into(),
                dtype: FileDtype::F16,
                shape: vec![5],
            },
            TensorSpec {
                name: "c".into(),
                dtype: FileDtype::BF16,
                shape: vec![],
            },
        ];
        let value = |k: usize, i: usize| (k * 1000 + i % 977) as f32 * 0.25;
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(&path, &specs, &meta, |k, start, out| {
            for (i, o) in (start..).zip(out.iter_mut()) {
                *o = value(k, i);
            }
        })
        .unwrap();
        let w = Weights::open(&path).unwrap();
        for (k, s) in specs.iter().enumerate() {
            let got = w.root().get(&s.name, &s.shape).unwrap();
            let want: Vec<f32> = (0..s.numel()).map(|i| value(k, i)).collect();
            assert_eq!(got, want, "{}", s.name);
        }
        w.finish().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
