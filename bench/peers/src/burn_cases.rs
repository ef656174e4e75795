//! The `stipple bench kernels` cases written with burn's tensor API, from the same random values
//! (`stipple::bench::cases::noise` with the seeds `cases::build` uses), each in burn's own
//! layout, and a check of burn's output against stipple's CPU reference.

use burn::module::Param;
use burn::nn::GroupNormConfig;
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::{attention, conv2d, linear};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use stipple::bench::cases::{self, noise, CaseKind};
use stipple::{DType, Gpu};

/// One case on burn's device: `run()` queues the op and returns its output (kept alive until
/// the device is synchronised, so lazy backends cannot drop the work).
pub struct PeerCase {
    pub run: Box<dyn Fn() -> Tensor<4>>,
    /// The output in stipple's layout, as a flat row-major vector.
    pub to_stipple_layout: Box<dyn Fn(Tensor<4>) -> Vec<f32>>,
}

fn tensor<const D: usize>(device: &Device, values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// (rows, cols) row-major → (cols, rows).
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// (B, P, C) channels-last → (B, C, P) channels-first (and back with `p`, `c` swapped).
fn channels_first(v: &[f32], b: usize, p: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for n in 0..b {
        let base = n * p * c;
        for i in 0..p {
            for j in 0..c {
                out[base + j * p + i] = v[base + i * c + j];
            }
        }
    }
    out
}

/// (B, T, H·D) → (B, H, T, D) (and (B, H, T, D) → (B, T, H·D) with `inverse`).
fn heads(v: &[f32], b: usize, t: usize, h: usize, d: usize, inverse: bool) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for n in 0..b {
        for i in 0..t {
            for hh in 0..h {
                for k in 0..d {
                    let packed = ((n * t + i) * h + hh) * d + k;
                    let split = ((n * h + hh) * t + i) * d + k;
                    if inverse {
                        out[packed] = v[split];
                    } else {
                        out[split] = v[packed];
                    }
                }
            }
        }
    }
    out
}

fn values(y: Tensor<4>) -> Vec<f32> {
    y.into_data().try_into_vec::<f32>().expect("f32 output")
}

/// `kind` at batch `b` and latent side `s` on `device`.
pub fn build(device: &Device, kind: CaseKind, b: usize, s: usize) -> PeerCase {
    match kind {
        CaseKind::Linear => linear_case(device, b * s * s, 320, 320),
        CaseKind::TextLinear { k, n } => linear_case(device, b * 77, k, n),
        CaseKind::Conv(ksize) => {
            let (c, pad) = (320, ksize / 2);
            let w = tensor(
                device,
                noise(c * c * ksize * ksize, 9, 0.02),
                [c, c, ksize, ksize],
            );
            let bias = tensor(device, noise(c, 10, 0.1), [c]);
            let x = noise(b * s * s * c, 1, 1.0); // (B, S, S, C)
            let x = tensor(device, channels_first(&x, b, s * s, c), [b, c, s, s]);
            let opts = ConvOptions::new([1, 1], [pad, pad], [1, 1], 1);
            PeerCase {
                run: Box::new(move || {
                    conv2d(x.clone(), w.clone(), Some(bias.clone()), opts.clone())
                }),
                to_stipple_layout: Box::new(move |y| channels_first(&values(y), b, c, s * s)),
            }
        }
        CaseKind::Attention { cross, .. } => {
            let (t, h, d) = (s * s, 8, 40);
            let tk = if cross { 77 } else { t };
            let q = heads(&noise(b * t * h * d, 1, 1.0), b, t, h, d, false);
            let kv = heads(&noise(b * tk * h * d, 2, 1.0), b, tk, h, d, false);
            let q = tensor(device, q, [b, h, t, d]);
            let kv = tensor(device, kv, [b, h, tk, d]);
            PeerCase {
                run: Box::new(move || {
                    let opts = AttentionModuleOptions {
                        scale: None,
                        softcap: None,
                        is_causal: false,
                    };
                    attention(q.clone(), kv.clone(), kv.clone(), None, None, opts)
                }),
                to_stipple_layout: Box::new(move |y| heads(&values(y), b, t, h, d, true)),
            }
        }
        CaseKind::GroupNorm { .. } => {
            let c = 320;
            let mut norm = GroupNormConfig::new(32, c).init(device);
            norm.gamma = Some(Param::from_tensor(tensor(device, noise(c, 11, 1.0), [c])));
            norm.beta = Some(Param::from_tensor(tensor(device, noise(c, 12, 1.0), [c])));
            let x = noise(b * s * s * c, 1, 1.0); // (B, S·S, C)
            let x: Tensor<3> = tensor(device, channels_first(&x, b, s * s, c), [b, c, s * s]);
            PeerCase {
                run: Box::new(move || silu(norm.forward(x.clone())).unsqueeze::<4>()),
                to_stipple_layout: Box::new(move |y| channels_first(&values(y), b, c, s * s)),
            }
        }
    }
}

/// `(m, k) · (k, n) + bias`; burn's `linear` takes the weight as (k, n).
fn linear_case(device: &Device, m: usize, k: usize, n: usize) -> PeerCase {
    let w = tensor(device, transpose(&noise(n * k, 7, 0.05), n, k), [k, n]);
    let bias = tensor(device, noise(n, 8, 0.1), [n]);
    let x = tensor(device, noise(m * k, 1, 1.0), [m, k]);
    PeerCase {
        run: Box::new(move || linear(x.clone(), w.clone(), Some(bias.clone())).unsqueeze::<4>()),
        to_stipple_layout: Box::new(values),
    }
}

/// Max |burn − reference| / max(1, max |reference|) at a small latent, against stipple's f64 CPU
/// reference of the same case ("ok 1.2e-6", or "FAIL …" above 1e-3).
pub fn check(
    gpu: &Gpu,
    device: &Device,
    kind: CaseKind,
    b: usize,
    s: usize,
) -> Result<String, String> {
    let case = cases::build(gpu, kind, DType::F32, b, s).map_err(|e| e.to_string())?;
    let want = case.reference();
    let peer = build(device, kind, b, s);
    let got = (peer.to_stipple_layout)((peer.run)());
    if got.len() != want.len() {
        return Err(format!(
            "{}: burn gave {} values, the reference {}",
            kind.label(),
            got.len(),
            want.len()
        ));
    }
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()))
        / scale;
    Ok(if err <= 1e-3 {
        format!("ok {err:.1e}")
    } else {
        format!("FAIL {err:.1e}")
    })
}
