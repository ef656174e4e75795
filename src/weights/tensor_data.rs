//! One tensor's bytes, borrowed from the memory map, read as `f32` element by element or range
//! by range: the loader streams weights to the GPU through this without a host copy of the
//! tensor (see `Tensor::from_fill`).
//!
//! When a [`TensorData`] is dropped, the pages of its byte range are handed back to the kernel
//! (`madvise(MADV_DONTNEED)`): once a weight is on the GPU its file pages no longer count in the
//! process's resident memory. They stay in the page cache, so a second load is still warm, and
//! a later read of the same bytes (a neighbour tensor sharing a page) faults them in again.

use std::ops::Range;

use super::dtype::FileDtype;
use super::safetensors_file::SafetensorsFile;

/// A validated tensor in one of the float dtypes that convert to `f32` (F32, F16, BF16).
pub struct TensorData<'a> {
    file: &'a SafetensorsFile,
    range: Range<usize>,
    elements: Elements<'a>,
    pub dtype: FileDtype,
    pub shape: Vec<usize>,
    /// Read as the transpose of the file's `(shape[1], shape[0])` bytes.
    transposed: bool,
}

/// The bytes as little-endian elements (byte arrays: the map gives no alignment).
#[derive(Clone, Copy)]
enum Elements<'a> {
    F32(&'a [[u8; 4]]),
    F16(&'a [[u8; 2]]),
    BF16(&'a [[u8; 2]]),
}

impl std::fmt::Debug for TensorData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorData")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish()
    }
}

impl<'a> TensorData<'a> {
    /// `range` of `file` as `dtype` (F32, F16 or BF16; `None` for another dtype). The range
    /// comes from the file's validated header, so it holds `numel × size` bytes.
    pub(super) fn new(
        file: &'a SafetensorsFile,
        range: Range<usize>,
        dtype: FileDtype,
        shape: Vec<usize>,
    ) -> Option<Self> {
        let bytes = file.bytes(range.clone());
        let elements = match dtype {
            FileDtype::F32 => Elements::F32(bytemuck::cast_slice(bytes)),
            FileDtype::F16 => Elements::F16(bytemuck::cast_slice(bytes)),
            FileDtype::BF16 => Elements::BF16(bytemuck::cast_slice(bytes)),
            _ => return None,
        };
        Some(TensorData {
            file,
            range,
            elements,
            dtype,
            shape,
            transposed: false,
        })
    }

    /// This 2-D tensor read as the transpose of the bytes: `self.shape` is the shape read, the
    /// file holds `(shape[1], shape[0])` row-major.
    pub(super) fn transposed(mut self) -> Self {
        self.transposed = self.shape.len() == 2;
        self
    }

    /// The file element behind element `i` of the tensor as read.
    #[inline]
    fn source_index(&self, i: usize) -> usize {
        if self.transposed {
            let (rows, cols) = (self.shape[0], self.shape[1]);
            (i % cols) * rows + i / cols
        } else {
            i
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        self.file.bytes(self.range.clone())
    }

    /// Element `i` (row-major) as `f32`. Panics if `i >= numel` (a caller invariant).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        let i = self.source_index(i);
        match self.elements {
            Elements::F32(e) => f32::from_le_bytes(e[i]),
            Elements::F16(e) => half::f16::from_le_bytes(e[i]).to_f32(),
            // BF16 is the high half of an f32: exact.
            Elements::BF16(e) => f32::from_bits((u16::from_le_bytes(e[i]) as u32) << 16),
        }
    }

    /// Elements `start..start + out.len()` as `f32`, converted in one pass.
    pub fn read(&self, start: usize, out: &mut [f32]) {
        if self.transposed {
            for (k, o) in out.iter_mut().enumerate() {
                *o = self.get(start + k);
            }
            return;
        }
        let end = start + out.len();
        match self.elements {
            Elements::F32(e) => {
                for (o, &b) in out.iter_mut().zip(&e[start..end]) {
                    *o = f32::from_le_bytes(b);
                }
            }
            Elements::F16(e) => {
                use half::slice::HalfFloatSliceExt;
                let bytes: &[u8] = bytemuck::cast_slice(&e[start..end]);
                match bytemuck::try_cast_slice::<u8, half::f16>(bytes) {
                    // Vectorised (F16C) when the file's data is 2-aligned (safetensors
                    // writers align it), else element by element.
                    Ok(halves) if cfg!(target_endian = "little") => {
                        halves.convert_to_f32_slice(out)
                    }
                    _ => {
                        for (o, &b) in out.iter_mut().zip(&e[start..end]) {
                            *o = half::f16::from_le_bytes(b).to_f32();
                        }
                    }
                }
            }
            Elements::BF16(e) => {
                for (o, &b) in out.iter_mut().zip(&e[start..end]) {
                    *o = f32::from_bits((u16::from_le_bytes(b) as u32) << 16);
                }
            }
        }
    }

    /// True when the tensor's bytes are F16 read in file order: [`Self::read_f16_bits`] then
    /// gives exactly what an F16 GPU tensor holds, with no conversion through f32.
    pub fn is_plain_f16(&self) -> bool {
        matches!(self.elements, Elements::F16(_)) && !self.transposed
    }

    /// Elements `start..start + out.len()` as raw f16 bit patterns. Only for
    /// [`Self::is_plain_f16`] tensors; panics otherwise (a caller invariant).
    pub fn read_f16_bits(&self, start: usize, out: &mut [u16]) {
        let Elements::F16(e) = self.elements else {
            panic!("read_f16_bits on a {:?} tensor", self.dtype);
        };
        assert!(!self.transposed, "read_f16_bits on a transposed tensor");
        let end = start + out.len();
        for (o, &b) in out.iter_mut().zip(&e[start..end]) {
            *o = u16::from_le_bytes(b);
        }
    }

    /// The whole tensor as `f32` (for the few tensors kept on the host).
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.numel()];
        self.read(0, &mut out);
        out
    }
}

/// The `(cols, rows)` transpose of a row-major `(rows, cols)` matrix of `element`-byte values.
pub fn transpose_bytes(bytes: &[u8], rows: usize, cols: usize, element: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for c in 0..cols {
        for r in 0..rows {
            let at = (r * cols + c) * element;
            out.extend_from_slice(&bytes[at..at + element]);
        }
    }
    out
}

impl Drop for TensorData<'_> {
    fn drop(&mut self) {
        self.file.release(self.range.clone());
    }
}
