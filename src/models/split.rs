//! Linear and Conv2d layers whose packed weight may be split into output ranges, so that a
//! weight larger than the adapter's `max_storage_buffer_binding_size` / `max_buffer_size`
//! still loads and runs (docs/loading.md, "Tensors past the adapter's limits").
//!
//! ```text
//! y = x·Wᵀ + b,  W (N, K)  =  [W₀; W₁; …]  rows (output features) [r₀, r₁), [r₁, r₂), …
//! y = [x·W₀ᵀ + b₀ ‖ x·W₁ᵀ + b₁ ‖ …]          one matmul per range, concatenated on channels
//! act(y) + residual  =  [act(y₀) ‖ act(y₁) ‖ …] + residual   (activations are elementwise)
//! ```
//!
//! A convolution splits the same way over output channels (torch rows `co`). Each range is an
//! ordinary [`LinearWeight`] / [`Conv2dWeight`] computing exactly the outputs the whole weight
//! would (same reduction order), so a split layer gives the same values. A layer that fits is
//! one range and adds exactly the graph it always did. Ranges are chosen by [`ranges`] at load.

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::concat::concat_channels;
use crate::ops::conv2d::{self, Conv2dOptions, Conv2dWeight};
use crate::ops::elementwise;
use crate::ops::matmul::{self, LinearOptions, LinearWeight};
use crate::ops::pad8;

/// `nn.Linear`: one packed weight, or several over consecutive output-feature ranges.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Output ranges in order; their `out_features` sum to the layer's.
    pub parts: Vec<LinearWeight>,
}

/// `nn.Conv2d`: one packed weight, or several over consecutive output-channel ranges.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// Output-channel ranges in order; their `out_channels` sum to the layer's.
    pub parts: Vec<Conv2dWeight>,
}

impl Linear {
    pub fn out_features(&self) -> usize {
        self.parts.iter().map(|p| p.out_features).sum()
    }
}

impl Conv2d {
    pub fn out_channels(&self) -> usize {
        self.parts.iter().map(|p| p.out_channels).sum()
    }
}

/// Output ranges `[start, end)` of `n` rows such that each range's packed weight,
/// `row_bytes · pad8(len)` bytes, fits in `max` bytes (all of `0..n` when it fits whole).
/// Ranges other than the last are multiples of 8 wide, so only the last has zero padding.
/// Error naming `what` and the limit when even 8 rows (the packing's unit) do not fit.
pub fn ranges(what: &str, n: usize, row_bytes: u64, max: u64) -> Result<Vec<(usize, usize)>> {
    if row_bytes * pad8(n) as u64 <= max {
        return Ok(vec![(0, n)]);
    }
    let per_part = (max / row_bytes.max(1)) as usize / 8 * 8;
    if per_part == 0 {
        return Err(Error::Limit {
            what: format!("tensor {what}, split into 8 output rows (the finest split),"),
            needed: 8 * row_bytes,
            limit: "max_storage_buffer_binding_size",
            max,
            hint: " bytes".into(),
        });
    }
    Ok((0..n)
        .step_by(per_part)
        .map(|s| (s, (s + per_part).min(n)))
        .collect())
}

/// `ops::matmul::linear` over a possibly split [`Linear`]: x (…, K) → (…, N).
pub fn linear(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    w: &Linear,
    opts: LinearOptions,
) -> Result<ValueId> {
    if let [one] = w.parts.as_slice() {
        return matmul::linear(g, name, x, one, opts);
    }
    let per_part = LinearOptions {
        residual: None,
        ..opts
    };
    let mut y: Option<ValueId> = None;
    for (i, part) in w.parts.iter().enumerate() {
        let yi = matmul::linear(g, &format!("{name}#{i}"), x, part, per_part)?; // (…, Nᵢ)
        y = Some(match y {
            None => yi,
            Some(prev) => concat_channels(g, &format!("{name}#..{i}"), prev, yi)?, // (…, ΣNᵢ)
        });
    }
    let y = y.ok_or_else(|| Error::invalid(name, "a Linear with no weight parts"))?;
    match opts.residual {
        Some(r) => elementwise::add(g, &format!("{name}+residual"), y, r), // (…, N)
        None => Ok(y),
    }
}

/// `ops::conv2d::conv2d` over a possibly split [`Conv2d`]: (B, H, W, CIN) → (B, HO, WO, COUT).
pub fn conv2d(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    w: &Conv2d,
    opts: Conv2dOptions,
) -> Result<ValueId> {
    if let [one] = w.parts.as_slice() {
        return conv2d::conv2d(g, name, x, one, opts);
    }
    let per_part = Conv2dOptions {
        residual: None,
        ..opts
    };
    let mut y: Option<ValueId> = None;
    for (i, part) in w.parts.iter().enumerate() {
        let yi = conv2d::conv2d(g, &format!("{name}#{i}"), x, part, per_part)?; // (B, HO, WO, Cᵢ)
        y = Some(match y {
            None => yi,
            Some(prev) => concat_channels(g, &format!("{name}#..{i}"), prev, yi)?,
        });
    }
    let y = y.ok_or_else(|| Error::invalid(name, "a Conv2d with no weight parts"))?;
    match opts.residual {
        Some(r) => elementwise::add(g, &format!("{name}+residual"), y, r), // (B, HO, WO, COUT)
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn ranges_fit_the_limit_and_cover_every_row() {
        // Fits whole.
        assert_eq!(ranges("w", 20, 4, 96).unwrap(), vec![(0, 20)]);
        // 4 bytes per row, 40 bytes: 8 rows per part (10 rounded down to a multiple of 8).
        assert_eq!(
            ranges("w", 20, 4, 40).unwrap(),
            vec![(0, 8), (8, 16), (16, 20)]
        );
        for (n, row, max) in [(1, 3, 2), (17, 5, 80), (1000, 7, 1000), (9, 1, 64)] {
            match ranges("w", n, row, max) {
                Ok(r) => {
                    assert_eq!(r.first().unwrap().0, 0);
                    assert_eq!(r.last().unwrap().1, n);
                    assert!(r.windows(2).all(|w| w[0].1 == w[1].0));
                    assert!(r
                        .iter()
                        .all(|&(s, e)| row * crate::ops::pad8(e - s) as u64 <= max));
                }
                Err(e) => {
                    let m = e.to_string();
                    assert!(row * 8 > max, "{n} {row} {max}: {m}");
                    assert!(
                        m.contains("max_storage_buffer_binding_size") && m.contains("tensor w"),
                        "{m}"
                    );
                }
            }
        }
    }
}
