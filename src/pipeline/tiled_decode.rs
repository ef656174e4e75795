//! VAE decoding in overlapping latent tiles, for sizes whose full decode would need a tensor
//! larger than the adapter's storage-binding limit (SD's decoder at 512×512 in f32 holds a
//! 512×512×256 activation: 256 MiB, over the 128 MiB many adapters allow).
//!
//! Tiles overlap by `overlap` latents and are blended with weights that ramp linearly across the
//! overlap, as diffusers' `AutoencoderKL.tiled_decode` does. Group normalisation sees one tile at
//! a time, so a tiled image differs slightly from an untiled one (as in diffusers).

use crate::error::{Error, Result};

/// Tile origins along one axis: `tile`-long windows overlapping by `overlap`, the last one
/// flush with the end.
pub fn tile_starts(size: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if size <= tile {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + tile < size)
        .collect();
    starts.push(size - tile);
    starts
}

/// The latent tile side to decode with: shrink by about half (plus room for the overlap) until
/// `fits(tile_h, tile_w)`; None when even 8 latents do not fit.
pub fn shrink_tile(
    h: usize,
    w: usize,
    mut fits: impl FnMut(usize, usize) -> Result<bool>,
) -> Result<Option<usize>> {
    let mut tile = h.max(w);
    while tile > 8 {
        tile = tile.div_ceil(2) + tile.div_ceil(8);
        if fits(tile.min(h), tile.min(w))? {
            return Ok(Some(tile));
        }
    }
    Ok(None)
}

/// Weight of output position `p` (in a tile of `len` outputs starting at `start` of `total`)
/// that ramps over `ramp` outputs on sides shared with a neighbouring tile.
fn ramp_weight(p: usize, start: usize, len: usize, total: usize, ramp: usize) -> f32 {
    let mut w = 1.0f32;
    if start > 0 && ramp > 0 {
        w = w.min((p as f32 + 0.5) / ramp as f32);
    }
    if start + len < total && ramp > 0 {
        w = w.min((len as f32 - p as f32 - 0.5) / ramp as f32);
    }
    w.clamp(1e-3, 1.0)
}

/// Decode one image's latents (h, w, c) NHWC tile by tile. `decode_tile(latents, [th, tw])`
/// returns the tile's pixels (th·f, tw·f, 3). Returns (h·f, w·f, 3).
pub async fn decode_tiled(
    latents: &[f32],
    [h, w, c]: [usize; 3],
    tile: usize,
    overlap: usize,
    factor: usize,
    mut decode_tile: impl AsyncFnMut(&[f32], [usize; 2]) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    if latents.len() != h * w * c || tile == 0 || overlap >= tile {
        return Err(Error::invalid(
            "tiled decode",
            format!("latents {h}×{w}×{c}, tile {tile}, overlap {overlap}"),
        ));
    }
    let (th, tw) = (tile.min(h), tile.min(w));
    let (big_h, big_w) = (h * factor, w * factor);
    let mut sum = vec![0.0f32; big_h * big_w * 3];
    let mut weight = vec![0.0f32; big_h * big_w];
    let ramp = overlap * factor;
    for y0 in tile_starts(h, th, overlap) {
        for x0 in tile_starts(w, tw, overlap) {
            let mut tile_latents = Vec::with_capacity(th * tw * c);
            for y in y0..y0 + th {
                tile_latents.extend_from_slice(&latents[(y * w + x0) * c..(y * w + x0 + tw) * c]);
            }
            let pixels = decode_tile(&tile_latents, [th, tw]).await?; // (th·f, tw·f, 3)
            let (ph, pw) = (th * factor, tw * factor);
            if pixels.len() != ph * pw * 3 {
                return Err(Error::invalid(
                    "tiled decode",
                    format!(
                        "tile decoded to {} values, expected {}",
                        pixels.len(),
                        ph * pw * 3
                    ),
                ));
            }
            for py in 0..ph {
                let wy = ramp_weight(py, y0 * factor, ph, big_h, ramp);
                for px in 0..pw {
                    let wt = wy * ramp_weight(px, x0 * factor, pw, big_w, ramp);
                    let o = (y0 * factor + py) * big_w + x0 * factor + px;
                    weight[o] += wt;
                    for k in 0..3 {
                        sum[o * 3 + k] += wt * pixels[(py * pw + px) * 3 + k];
                    }
                }
            }
        }
    }
    Ok(sum
        .iter()
        .enumerate()
        .map(|(i, v)| v / weight[i / 3])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A position-independent "decoder" (nearest 2× upsampling of the first 3 channels): tiling
    /// must reproduce the untiled result exactly, whatever the tiles and overlaps.
    fn upsample(latents: &[f32], [h, w]: [usize; 2], c: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(h * w * 12);
        for y in 0..2 * h {
            for x in 0..2 * w {
                out.extend_from_slice(&latents[((y / 2) * w + x / 2) * c..][..3]);
            }
        }
        out
    }

    #[test]
    fn tiles_cover_and_blend_exactly() {
        let (h, w, c) = (13, 21, 4);
        let latents: Vec<f32> = (0..h * w * c)
            .map(|i| ((i * 37) % 101) as f32 / 7.0)
            .collect();
        let full = upsample(&latents, [h, w], c);
        for (tile, overlap) in [(4, 1), (5, 2), (8, 3), (13, 4), (32, 8)] {
            let mut calls = 0;
            let tiled = pollster::block_on(decode_tiled(
                &latents,
                [h, w, c],
                tile,
                overlap,
                2,
                async |t, [th, tw]| {
                    calls += 1;
                    Ok(upsample(t, [th, tw], c))
                },
            ))
            .expect("decode");
            let err = tiled
                .iter()
                .zip(&full)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-4, "tile {tile} overlap {overlap}: error {err}");
            assert!(calls >= 1);
        }
    }

    #[test]
    fn starts_reach_the_end() {
        assert_eq!(tile_starts(10, 4, 1), vec![0, 3, 6]);
        assert_eq!(tile_starts(4, 8, 2), vec![0]);
        assert_eq!(tile_starts(64, 32, 8), vec![0, 24, 32]);
    }
}
