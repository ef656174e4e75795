//! Element types a safetensors file may declare, and their conversion to `f32`.
//!
//! Every dtype of the safetensors format is *recognised* (so a file holding, say, CLIP's `I64`
//! `position_ids` opens fine); only `F32`, `F16` and `BF16` *convert* to `f32`. Asking for
//! another one is an error naming the dtype, raised when that tensor is fetched.
//!
//! Conversion reads little-endian bytes one element at a time and never casts the mmapped
//! pointer: safetensors does not promise any alignment of tensor data.

/// The dtype of a tensor as stored in a safetensors file (the header's `"dtype"` string).
///
/// Not to be confused with `stipple::DType` (how a GPU tensor is stored): this one
/// only describes bytes on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileDtype {
    Bool,
    F4,
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

impl FileDtype {
    /// Every dtype, for error messages and tests.
    pub const ALL: [FileDtype; 22] = [
        FileDtype::Bool,
        FileDtype::F4,
        FileDtype::F6E2M3,
        FileDtype::F6E3M2,
        FileDtype::U8,
        FileDtype::I8,
        FileDtype::F8E5M2,
        FileDtype::F8E4M3,
        FileDtype::F8E8M0,
        FileDtype::F8E4M3Fnuz,
        FileDtype::F8E5M2Fnuz,
        FileDtype::I16,
        FileDtype::U16,
        FileDtype::F16,
        FileDtype::BF16,
        FileDtype::I32,
        FileDtype::U32,
        FileDtype::F32,
        FileDtype::C64,
        FileDtype::F64,
        FileDtype::I64,
        FileDtype::U64,
    ];

    /// Parses the header's dtype string (`"F16"`, `"BF16"`, …); `None` when unknown.
    pub fn parse(s: &str) -> Option<FileDtype> {
        FileDtype::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The name used in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            FileDtype::Bool => "BOOL",
            FileDtype::F4 => "F4",
            FileDtype::F6E2M3 => "F6_E2M3",
            FileDtype::F6E3M2 => "F6_E3M2",
            FileDtype::U8 => "U8",
            FileDtype::I8 => "I8",
            FileDtype::F8E5M2 => "F8_E5M2",
            FileDtype::F8E4M3 => "F8_E4M3",
            FileDtype::F8E8M0 => "F8_E8M0",
            FileDtype::F8E4M3Fnuz => "F8_E4M3FNUZ",
            FileDtype::F8E5M2Fnuz => "F8_E5M2FNUZ",
            FileDtype::I16 => "I16",
            FileDtype::U16 => "U16",
            FileDtype::F16 => "F16",
            FileDtype::BF16 => "BF16",
            FileDtype::I32 => "I32",
            FileDtype::U32 => "U32",
            FileDtype::F32 => "F32",
            FileDtype::C64 => "C64",
            FileDtype::F64 => "F64",
            FileDtype::I64 => "I64",
            FileDtype::U64 => "U64",
        }
    }

    /// Bits per element (4 and 6 for the packed micro-float formats).
    pub fn bits(self) -> usize {
        match self {
            FileDtype::F4 => 4,
            FileDtype::F6E2M3 | FileDtype::F6E3M2 => 6,
            FileDtype::Bool
            | FileDtype::U8
            | FileDtype::I8
            | FileDtype::F8E5M2
            | FileDtype::F8E4M3
            | FileDtype::F8E8M0
            | FileDtype::F8E4M3Fnuz
            | FileDtype::F8E5M2Fnuz => 8,
            FileDtype::I16 | FileDtype::U16 | FileDtype::F16 | FileDtype::BF16 => 16,
            FileDtype::I32 | FileDtype::U32 | FileDtype::F32 => 32,
            FileDtype::C64 | FileDtype::F64 | FileDtype::I64 | FileDtype::U64 => 64,
        }
    }

    /// Whether [`to_f32`] accepts this dtype.
    pub fn converts_to_f32(self) -> bool {
        matches!(self, FileDtype::F32 | FileDtype::F16 | FileDtype::BF16)
    }

    /// Bytes that `numel` elements take, or `None` on overflow or when the packed size is not
    /// a whole number of bytes.
    pub fn byte_size(self, numel: usize) -> Option<usize> {
        let bits = numel.checked_mul(self.bits())?;
        bits.is_multiple_of(8).then_some(bits / 8)
    }
}

impl std::fmt::Display for FileDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Converts little-endian tensor bytes to `f32`.
///
/// `F32` is copied, `F16` goes through `half`, `BF16` is shifted into the high half of an
/// `f32` (exact). The error message names the dtype when it does not convert, or when the
/// byte count is not a whole number of elements (the header validation makes that
/// unreachable for bytes that come from a [`super::Weights`]).
pub fn to_f32(dtype: FileDtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let elem = dtype.bits() / 8;
    if dtype.converts_to_f32() && !bytes.len().is_multiple_of(elem) {
        return Err(format!(
            "{} bytes is not a whole number of {dtype} elements ({elem} bytes each)",
            bytes.len()
        ));
    }
    match dtype {
        FileDtype::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        FileDtype::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        FileDtype::BF16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect()),
        other => Err(format!(
            "dtype {other} cannot be converted to f32 (supported: F32, F16, BF16)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in FileDtype::ALL {
            assert_eq!(FileDtype::parse(d.name()), Some(d));
        }
        assert_eq!(FileDtype::parse("Q4"), None);
        assert_eq!(FileDtype::parse("f16"), None);
    }

    #[test]
    fn converts_unaligned_bytes() {
        let values = [1.5f32, -2.25, 0.0, 65504.0];
        let mut bytes = vec![0u8]; // force misalignment
        for v in values {
            bytes.extend(v.to_le_bytes());
        }
        assert_eq!(to_f32(FileDtype::F32, &bytes[1..]).unwrap(), values);
        let mut bytes = vec![0u8];
        for v in values {
            bytes.extend(half::f16::from_f32(v).to_le_bytes());
        }
        assert_eq!(to_f32(FileDtype::F16, &bytes[1..]).unwrap(), values);
        let mut bytes = vec![0u8];
        for v in [1.5f32, -2.25, 0.0, 3.0e38] {
            bytes.extend(half::bf16::from_f32(v).to_le_bytes());
        }
        let back = to_f32(FileDtype::BF16, &bytes[1..]).unwrap();
        assert_eq!(back[..3], [1.5, -2.25, 0.0]);
        assert_eq!(back[3], half::bf16::from_f32(3.0e38).to_f32());
    }

    #[test]
    fn rejects_other_dtypes_by_name() {
        let err = to_f32(FileDtype::I64, &[0; 8]).unwrap_err();
        assert!(err.contains("I64"), "{err}");
        let err = to_f32(FileDtype::F16, &[0; 3]).unwrap_err();
        assert!(err.contains("F16"), "{err}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(FileDtype::F16.byte_size(3), Some(6));
        assert_eq!(FileDtype::F4.byte_size(3), None);
        assert_eq!(FileDtype::F4.byte_size(4), Some(2));
        assert_eq!(FileDtype::F32.byte_size(usize::MAX), None);
    }
}
