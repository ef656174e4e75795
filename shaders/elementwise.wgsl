// Elementwise kernels (one invocation per output element, f32 math on T storage).
//
//   unary:  dst[i] = act(src[i]) * alpha + beta
//           act (override ACT): 0 identity, 1 SiLU x·σ(x), 2 GELU erf 0.5x(1+erf(x/√2)),
//           3 GELU tanh 0.5x(1+tanh(√(2/π)(x+0.044715x³))), 4 quick-GELU x·σ(1.702x),
//           5 ReLU max(x, 0), 6 tanh(x) (TAESD's input clamp 3·tanh(x/3))
//   binary: dst[i] = src[i] ⊕ other[j],  j = (i / (inner·rep))·inner + i mod inner
//           ⊕ (override OP): 0 add, 1 mul. rep = 1 is same-shape; inner = C, rep = HW broadcasts a
//           (B, 1, C) tensor over (B, HW, C); inner = C, rep = B·HW broadcasts a (C) vector.
//   geglu:  src (rows, 2F) → dst (rows, F): dst[r, f] = src[r, f] · GELU_erf(src[r, F + f])
//           (diffusers GEGLU: hidden, gate = proj(x).chunk(2); hidden * gelu(gate))
//
// Workgroups are laid out 2-D (x, y) to stay under 65535 per dimension; the flat workgroup
// index is wid.y · num_workgroups.x + wid.x.

alias T = f32;

override WG: u32 = 256;
override ACT: u32 = 0;
override OP: u32 = 0;

struct Params {
    n: u32,      // output elements
    inner: u32,  // binary: broadcast inner size; geglu: F
    rep: u32,    // binary: broadcast repeat count
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;
@group(0) @binding(3) var<storage, read> other: array<T>;

// Abramowitz & Stegun 7.1.26: |error| < 1.5e-7.
fn erf_f32(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return sign(x) * (1.0 - poly * exp(-a * a));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752));
}

fn activate(x: f32) -> f32 {
    switch ACT {
        case 1u: { return x * sigmoid(x); }
        case 2u: { return gelu_erf(x); }
        case 3u: {
            // Clamped: tanh of a large argument overflows to NaN on some drivers.
            let inner = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
            return 0.5 * x * (1.0 + tanh(inner));
        }
        case 4u: { return x * sigmoid(1.702 * x); }
        case 5u: { return max(x, 0.0); }
        // Clamped: tanh is ±1 to f32 precision past |x| = 10, and large arguments overflow.
        case 6u: { return tanh(clamp(x, -15.0, 15.0)); }
        default: { return x; }
    }
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    dst[i] = T(activate(f32(src[i])) * p.alpha + p.beta);
}

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let j = (i / (p.inner * p.rep)) * p.inner + i % p.inner;
    let a = f32(src[i]);
    let b = f32(other[j]);
    var y: f32;
    if (OP == 1u) { y = a * b; } else { y = a + b; }
    dst[i] = T(y);
}

@compute @workgroup_size(WG)
fn geglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let f = p.inner;
    let row = i / f;
    let col = i % f;
    let hidden = f32(src[row * 2u * f + col]);
    let gate = f32(src[row * 2u * f + f + col]);
    dst[i] = T(hidden * gelu_erf(gate));
}
