//! Elementwise kernels (`shaders/elementwise.wgsl`): activations, scale, add/mul with broadcast,
//! GEGLU.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, params, to_u32};
use crate::error::{Error, Result};
use crate::gpu::tensor::numel;
use crate::gpu::KernelKey;
use crate::graph::{Dispatch, Graph, ValueId};

const WG: usize = 256;

/// An activation, as the shaders number them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity = 0,
    Silu = 1,
    /// GELU with erf (torch's default `approximate="none"`).
    Gelu = 2,
    /// GELU with the tanh approximation.
    GeluTanh = 3,
    /// x · σ(1.702x), the original CLIP's activation.
    QuickGelu = 4,
    /// max(x, 0) (TAESD's `act_fn = "relu"`). Elementwise kernel only (not fused in matmul).
    Relu = 5,
    /// tanh(x) (TAESD's input clamp). Elementwise kernel only.
    Tanh = 6,
}

impl Activation {
    /// Parse a transformers/diffusers `hidden_act` / `act_fn` name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_tanh" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            "identity" | "linear" => Activation::Identity,
            _ => {
                return Err(Error::invalid(
                    "activation",
                    format!("{name:?} is not supported"),
                ))
            }
        })
    }

    /// The scalar function (CPU reference).
    pub fn apply(self, x: f32) -> f32 {
        let x64 = x as f64;
        (match self {
            Activation::Identity => x64,
            Activation::Silu => x64 / (1.0 + (-x64).exp()),
            Activation::Gelu => 0.5 * x64 * (1.0 + erf(x64 / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x64 * (1.0 + (c * (x64 + 0.044715 * x64.powi(3))).tanh())
            }
            Activation::QuickGelu => x64 / (1.0 + (-1.702 * x64).exp()),
            Activation::Relu => x64.max(0.0),
            Activation::Tanh => x64.tanh(),
        }) as f32
    }
}

/// erf for the CPU references (W. J. Cody's rational approximations are overkill here: this
/// series/continued-fraction pair is accurate to ~1e-15, far below the f32 tolerances).
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // Maclaurin series: erf(a) = 2/√π Σ (−1)^n a^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, mut n) = (a, a, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction for erfc.
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
    };
    r.copysign(x)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    inner: u32,
    rep: u32,
    alpha: f32,
    beta: f32,
}

fn push(
    g: &mut Graph,
    name: &str,
    entry: &'static str,
    key_extra: (&'static str, u32),
    p: Params,
    buffers: Vec<(u32, ValueId)>,
) -> Result<()> {
    let kernel = KernelKey::new("elementwise", entry, g.dtype).with(key_extra.0, key_extra.1);
    let workgroups = grid_1d(name, (p.n as usize).div_ceil(WG))?;
    g.dispatch(Dispatch {
        label: name.to_string(),
        kernel,
        params: params(&p),
        buffers,
        workgroups,
    })
}

/// `act(x) · alpha + beta`, any shape.
pub fn unary(
    g: &mut Graph,
    name: &str,
    x: ValueId,
    act: Activation,
    alpha: f32,
    beta: f32,
) -> Result<ValueId> {
    let shape = g.shape(x)?;
    let n = to_u32(name, "elements", numel(&shape))?;
    let y = g.intermediate(name, &shape, g.dtype)?;
    let p = Params {
        n,
        inner: 1,
        rep: 1,
        alpha,
        beta,
    };
    push(
        g,
        name,
        "unary",
        ("ACT", act as u32),
        p,
        vec![(1, x), (2, y)],
    )?;
    Ok(y)
}

/// `act(x)`.
pub fn activation(g: &mut Graph, name: &str, x: ValueId, act: Activation) -> Result<ValueId> {
    unary(g, name, x, act, 1.0, 0.0)
}

/// `x · s`.
pub fn scale(g: &mut Graph, name: &str, x: ValueId, s: f32) -> Result<ValueId> {
    unary(g, name, x, Activation::Identity, s, 0.0)
}

/// How `b`'s shape broadcasts over `a`'s: `b` equals `a` after dropping axes of size 1 in `b`
/// that are larger in `a`; the dropped axes must be contiguous (one run), e.g. (B, 1, 1, C) over
/// (B, H, W, C), or (C) over (B, T, C).
fn broadcast(name: &str, a: &[usize], b: &[usize]) -> Result<(usize, usize)> {
    let err = || Error::shape(name, format!("cannot broadcast {b:?} over {a:?}"));
    if b.len() > a.len() {
        return Err(err());
    }
    // Left-pad b with ones.
    let b: Vec<usize> = std::iter::repeat_n(1, a.len() - b.len())
        .chain(b.iter().copied())
        .collect();
    let repeated: Vec<bool> = a.iter().zip(&b).map(|(&x, &y)| x != y).collect();
    if a.iter().zip(&b).any(|(&x, &y)| x != y && y != 1) {
        return Err(err());
    }
    let (Some(first), Some(last)) = (
        repeated.iter().position(|&r| r),
        repeated.iter().rposition(|&r| r),
    ) else {
        return Ok((numel(a), 1));
    };
    if repeated[first..=last].iter().any(|&r| !r) {
        return Err(err());
    }
    Ok((numel(&a[last + 1..]), numel(&a[first..=last])))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add = 0,
    Mul = 1,
}

/// `a ⊕ b` with `b` broadcast over `a` (see `broadcast`).
pub fn binary(g: &mut Graph, name: &str, a: ValueId, b: ValueId, op: BinaryOp) -> Result<ValueId> {
    let shape = g.shape(a)?;
    let (inner, rep) = broadcast(name, &shape, &g.shape(b)?)?;
    let n = to_u32(name, "elements", numel(&shape))?;
    let y = g.intermediate(name, &shape, g.dtype)?;
    let p = Params {
        n,
        inner: to_u32(name, "inner", inner)?,
        rep: to_u32(name, "rep", rep)?,
        alpha: 1.0,
        beta: 0.0,
    };
    push(
        g,
        name,
        "binary",
        ("OP", op as u32),
        p,
        vec![(1, a), (2, y), (3, b)],
    )?;
    Ok(y)
}

pub fn add(g: &mut Graph, name: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
    binary(g, name, a, b, BinaryOp::Add)
}

pub fn mul(g: &mut Graph, name: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
    binary(g, name, a, b, BinaryOp::Mul)
}

/// GEGLU: (…, 2F) → (…, F), `hidden · gelu(gate)` with `hidden, gate = x.chunk(2, -1)`.
pub fn geglu(g: &mut Graph, name: &str, x: ValueId) -> Result<ValueId> {
    let mut shape = g.shape(x)?;
    let last = shape.len() - 1;
    if shape[last] % 2 != 0 {
        return Err(Error::shape(
            name,
            format!("GEGLU needs an even last axis, got {shape:?}"),
        ));
    }
    shape[last] /= 2;
    let n = to_u32(name, "elements", numel(&shape))?;
    let y = g.intermediate(name, &shape, g.dtype)?;
    let p = Params {
        n,
        inner: to_u32(name, "F", shape[last])?,
        rep: 1,
        alpha: 1.0,
        beta: 0.0,
    };
    push(g, name, "geglu", ("WG", WG as u32), p, vec![(1, x), (2, y)])?;
    Ok(y)
}

/// CPU references.
pub mod reference {
    use super::Activation;

    pub fn unary(x: &[f32], act: Activation, alpha: f32, beta: f32) -> Vec<f32> {
        x.iter().map(|&v| act.apply(v) * alpha + beta).collect()
    }

    /// `a ⊕ b` for b broadcast as (outer, 1, inner) over a (outer, rep, inner).
    pub fn binary(a: &[f32], b: &[f32], inner: usize, rep: usize, mul: bool) -> Vec<f32> {
        a.iter()
            .enumerate()
            .map(|(i, &x)| {
                let y = b[(i / (inner * rep)) * inner + i % inner];
                if mul {
                    x * y
                } else {
                    x + y
                }
            })
            .collect()
    }

    pub fn geglu(x: &[f32], f: usize) -> Vec<f32> {
        x.chunks(2 * f)
            .flat_map(|row| (0..f).map(move |c| row[c] * Activation::Gelu.apply(row[f + c])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast("t", &[2, 3, 4], &[2, 3, 4]).unwrap(), (24, 1));
        assert_eq!(
            broadcast("t", &[2, 5, 5, 8], &[2, 1, 1, 8]).unwrap(),
            (8, 25)
        );
        assert_eq!(broadcast("t", &[2, 7, 8], &[8]).unwrap(), (8, 14));
        assert!(broadcast("t", &[2, 7, 8], &[2, 7, 1]).is_ok());
        assert!(broadcast("t", &[2, 7, 8], &[3]).is_err());
        assert!(broadcast("t", &[2, 7, 8], &[1, 7, 1]).is_err());
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, e) in [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.5, -0.9661051464753108),
        ] {
            assert!((erf(x) - e).abs() < 1e-13, "erf({x}) = {} != {e}", erf(x));
        }
    }
}
