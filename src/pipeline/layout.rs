//! NCHW (PyTorch, diffusers, `--latents` files, torch-compatible noise) ↔ NHWC (stipple's
//! activations) for latents.

/// (B, C, H, W) → (B, H, W, C).
pub fn nchw_to_nhwc(x: &[f32], [b, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for n in 0..b {
        for ch in 0..c {
            for i in 0..h * w {
                y[(n * h * w + i) * c + ch] = x[(n * c + ch) * h * w + i];
            }
        }
    }
    y
}

/// (B, H, W, C) → (B, C, H, W).
pub fn nhwc_to_nchw(x: &[f32], [b, h, w, c]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for n in 0..b {
        for i in 0..h * w {
            for ch in 0..c {
                y[(n * c + ch) * h * w + i] = x[(n * h * w + i) * c + ch];
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let x: Vec<f32> = (0..2 * 3 * 4 * 5).map(|v| v as f32).collect();
        let y = nchw_to_nhwc(&x, [2, 3, 4, 5]);
        assert_eq!(y[1], x[20]); // (0, 0, 0, c=1) = x[0, 1, 0, 0]
        assert_eq!(nhwc_to_nchw(&y, [2, 4, 5, 3]), x);
    }
}
