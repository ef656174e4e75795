//! Deterministic noise that reproduces PyTorch's CPU generator bit for bit: `TorchRng::new(S)`
//! then `randn(n)` gives the values of
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(S), dtype=torch.float32)`
//! flattened (`numel(shape) == n`), which is what diffusers' `randn_tensor` draws on the CPU. The
//! same `--seed` therefore gives the same initial latents, and images that can match diffusers'.
//!
//! What torch does (torch 2.x, `ATen/core/MT19937RNGEngine.h`, `ATen/core/DistributionsHelper.h`,
//! `ATen/native/cpu/DistributionTemplates.h`, `ATen/native/cpu/avx_mathfun.h`), reproduced here:
//!
//! 1. **Engine**: the standard 32-bit Mersenne Twister (MT19937) seeded with the low 32 bits of the
//!    seed (`manual_seed` keeps a `u64`, `at::mt19937` uses `seed & 0xffffffff`), Knuth's
//!    initialisation `s[i] = 1812433253 * (s[i-1] ^ (s[i-1] >> 30)) + i` ([`Mt19937`]).
//!    Re-seeding also clears the cached normal of step 3.
//! 2. **Uniforms**: a float uniform in [0, 1) is `(u32 & (2^24 - 1)) * 2^-24` (one draw); a double
//!    uniform is `(u64 & (2^53 - 1)) * 2^-53` where the u64 is `(first draw << 32) | second draw`.
//!    `torch.rand` ([`TorchRng::rand`]) is the float one.
//! 3. **Fewer than 16 elements** (scalar path, `normal_distribution<double>`): per element, if a
//!    cached normal exists it is returned (and cleared); otherwise two double uniforms `u1, u2`
//!    give `r = sqrt(-2 * log1p(-u2))`, `theta = 2π * u1`; `r * sin(theta)` is cached *in the
//!    generator* and `r * cos(theta)` returned, computed in f64 and rounded to f32. The cache
//!    survives across calls (a later `randn(3)` may start with the leftover of an earlier one) and
//!    the ≥ 16 path neither uses nor clears it.
//! 4. **16 elements or more** (vectorised path, `normal_fill`): fill all `n` values with float
//!    uniforms, then for each full block of 16 apply Box–Muller to the 8 pairs
//!    `(data[j], data[j + 8])`: `u1 = 1 - data[j]`, `u2 = data[j + 8]`,
//!    `radius = sqrt(-2 * log(u1))`, `data[j] = radius * cos(theta)`,
//!    `data[j + 8] = radius * sin(theta)` with `theta = 2π * u2`. If `n % 16 != 0`, draw 16 *new*
//!    uniforms into the last 16 slots (overwriting values already transformed) and transform that
//!    block again.
//!
//! Step 4's `log`/`sin`/`cos` are what differ between machines, so torch itself gives different
//! last bits on different CPUs; [`NormalKernel`] picks which to reproduce:
//!
//! - [`NormalKernel::Avx2`] (the default, [`TorchRng::new`]): x86 CPUs with AVX2 or AVX-512 (what
//!   torch dispatches to on almost every Linux/Windows PC; its AVX-512 capability gives the same
//!   values). torch evaluates `log256_ps` and `sincos256_ps` from `avx_mathfun.h` (Cephes
//!   polynomials, Julien Pommier's SSE code widened to AVX) with `theta = f32(2π) * u2` in float.
//!   They are re-implemented here one lane at a time, operation for operation, with the
//!   multiply-adds that GCC contracts into FMA instructions in torch's `-mavx2 -mfma` build fused
//!   the same way (each marked `fma(..)` below). Only IEEE basic operations and FMA are involved,
//!   so the values are identical on every platform. Checked: all 2^24 possible inputs of the log
//!   and of sin/cos against that header compiled with `g++ -O2 -mavx2 -mfma`, and 8M values of
//!   torch 2.15's own `randn`.
//! - [`NormalKernel::Generic`]: torch's portable path (ARM such as Apple silicon, x86 without
//!   AVX2): `std::log`, `std::cos`, `std::sin` on floats, `theta` computed in double (`2π * u2`)
//!   and rounded to float. Here they are Rust's `f32::ln/cos/sin`, which call the platform's
//!   `logf/cosf/sinf` just as torch does: identical to torch run on the same platform (checked
//!   against 8M values of torch 2.15 on glibc). These functions are not correctly rounded (an
//!   f64-then-round version differs from glibc in about 1% of values), so across platforms this
//!   flavour may differ in the last bit.
//!
//! Step 3 uses f64 `log1p`, `sin`, `cos` from the platform's libm (as torch does): their last-bit
//! differences between libms almost never survive the rounding to f32.

use crate::time::{SystemTime, UNIX_EPOCH};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Which of torch's two float32 Box–Muller implementations (tensors of ≥ 16 elements) to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormalKernel {
    /// torch on x86 with AVX2/AVX-512: `avx_mathfun.h` polynomials (bit-exact everywhere).
    #[default]
    Avx2,
    /// torch's portable path (ARM, old x86): float `std::log/cos/sin`.
    Generic,
}

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The 32-bit Mersenne Twister, seeded and stepped exactly as `at::mt19937`.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    /// Index of the next word of `state` to temper; `N` means "regenerate first".
    index: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// Seeds with the low 32 bits of `seed`, like `at::mt19937(seed)`.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32; // truncation is torch's behaviour
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: N }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 != 0 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// PyTorch's CPU generator (`torch.Generator("cpu")`): MT19937 plus the cached second normal of
/// the scalar path. See the module header for the algorithm.
#[derive(Debug, Clone)]
pub struct TorchRng {
    mt: Mt19937,
    /// `next_double_normal_sample_` of torch's `CPUGeneratorImpl`.
    next_normal: Option<f64>,
    kernel: NormalKernel,
}

impl TorchRng {
    /// `torch.Generator("cpu").manual_seed(seed)`, reproducing torch on AVX2/AVX-512 x86.
    pub fn new(seed: u64) -> Self {
        Self::with_kernel(seed, NormalKernel::Avx2)
    }

    /// Like [`TorchRng::new`], reproducing the chosen torch Box–Muller implementation.
    pub fn with_kernel(seed: u64, kernel: NormalKernel) -> Self {
        TorchRng {
            mt: Mt19937::new(seed),
            next_normal: None,
            kernel,
        }
    }

    /// The Box–Muller implementation this generator follows.
    pub fn kernel(&self) -> NormalKernel {
        self.kernel
    }

    /// The next raw 32-bit output of the engine (`generator->random()`).
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// `generator->random64()`: two draws, the first in the high half.
    fn next_u64(&mut self) -> u64 {
        let hi = self.mt.next_u32() as u64;
        let lo = self.mt.next_u32() as u64;
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits, in [0, 1).
    fn uniform_f32(&mut self) -> f32 {
        (self.mt.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits, in [0, 1).
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `torch.rand(n)` (float32, flattened): uniform in [0, 1).
    pub fn rand(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform_f32()).collect()
    }

    /// `torch.randn(n)` (float32, flattened; any shape is just its element count).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            self.box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            self.box_muller_16(tail);
        }
        data
    }

    /// `normal_distribution<double>(0, 1)` with the generator's cached second sample.
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_normal = Some(r * theta.sin());
        // `* std + mean` with std 1, mean 0: only turns -0 into +0.
        r * theta.cos() + 0.0
    }

    /// Box–Muller on 16 uniforms in place: pairs `(block[j], block[j + 8])`.
    fn box_muller_16(&self, block: &mut [f32]) {
        for j in 0..8 {
            let (c, s) = match self.kernel {
                NormalKernel::Avx2 => {
                    let radius = (-2.0 * cephes_log(1.0 - block[j])).sqrt();
                    let theta = TWO_PI_F32 * block[j + 8];
                    let (sin, cos) = cephes_sincos(theta);
                    (radius * cos, radius * sin)
                }
                NormalKernel::Generic => {
                    let radius = (-2.0 * log_f32(1.0 - block[j])).sqrt();
                    let theta = (2.0 * std::f64::consts::PI * block[j + 8] as f64) as f32;
                    (radius * cos_f32(theta), radius * sin_f32(theta))
                }
            };
            // torch ends with `fma(n, std, mean)`, std 1 and mean 0: only turns -0 into +0.
            block[j] = c + 0.0;
            block[j + 8] = s + 0.0;
        }
    }
}

/// A fresh random seed for runs without `--seed` (print it so the run can be repeated). It is
/// below 2^32 - 1, like AUTOMATIC1111's, since torch uses only the low 32 bits of a seed anyway.
pub fn random_seed() -> u64 {
    // RandomState is keyed from the OS entropy source; mix in the clock as well.
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    // No process ids on the web (std panics there): the clock alone varies.
    #[cfg(not(target_arch = "wasm32"))]
    h.write_u32(std::process::id());
    h.finish() % 0xffff_ffff
}

// ---- NormalKernel::Generic: the platform's float log/cos/sin, as torch's std::log etc. ----

fn log_f32(x: f32) -> f32 {
    x.ln()
}

fn cos_f32(x: f32) -> f32 {
    x.cos()
}

fn sin_f32(x: f32) -> f32 {
    x.sin()
}

// ---- NormalKernel::Avx2: avx_mathfun.h's log256_ps and sincos256_ps, one lane ----

/// `_mm256_set1_ps(2.0f * c10::pi<double>)`.
const TWO_PI_F32: f32 = (2.0 * std::f64::consts::PI) as f32;

// Constants exactly as written in avx_mathfun.h (rounded to f32 by the compiler, as in C; the
// extra digits are kept so they can be compared with the header).
const MIN_NORM_POS: f32 = f32::MIN_POSITIVE; // 0x0080_0000
const SQRTHF: f32 = std::f32::consts::FRAC_1_SQRT_2;
#[allow(clippy::excessive_precision)]
const LOG_P: [f32; 9] = [
    7.0376836292E-2,
    -1.1514610310E-1,
    1.1676998740E-1,
    -1.2420140846E-1,
    1.4249322787E-1,
    -1.6668057665E-1,
    2.0000714765E-1,
    -2.4999993993E-1,
    3.3333331174E-1,
];
#[allow(clippy::excessive_precision)]
const LOG_Q1: f32 = -2.12194440e-4;
#[allow(clippy::excessive_precision)]
const LOG_Q2: f32 = 0.693359375;

/// `a * b + c` with one rounding, as the FMA instruction torch's AVX2 build emits for
/// `_mm256_add_ps(_mm256_mul_ps(a, b), c)`.
#[inline]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Cephes `logf` as in `log256_ps`, for `x > 0` (torch only passes `1 - u` in `[2^-24, 1]`).
fn cephes_log(x: f32) -> f32 {
    if x.is_nan() || x <= 0.0 {
        return f32::NAN;
    }
    let x = x.max(MIN_NORM_POS);
    let bits = x.to_bits();
    let exponent = (bits >> 23) as i32 - 0x7f;
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let mut e = exponent as f32 + 1.0;
    let below = x < SQRTHF;
    let tmp = if below { x } else { 0.0 };
    x -= 1.0;
    if below {
        e -= 1.0;
    }
    x += tmp;
    let z = x * x;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = fma(y, x, p);
    }
    y *= x;
    y = fma(y, z, e * LOG_Q1);
    y = fma(z, -0.5, y);
    x += y;
    fma(e, LOG_Q2, x)
}

const MINUS_DP1: f32 = -0.78515625;
#[allow(clippy::excessive_precision)]
const MINUS_DP2: f32 = -2.4187564849853515625e-4;
#[allow(clippy::excessive_precision)]
const MINUS_DP3: f32 = -3.77489497744594108e-8;
#[allow(clippy::excessive_precision)]
const SINCOF: [f32; 3] = [-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1];
#[allow(clippy::excessive_precision)]
const COSCOF: [f32; 3] = [
    2.443315711809948E-005,
    -1.388731625493765E-003,
    4.166664568298827E-002,
];
#[allow(clippy::excessive_precision)]
const FOPI: f32 = 1.27323954473516; // 4 / pi

/// Cephes `sinf`/`cosf` as in `sincos256_ps`: returns `(sin x, cos x)`.
fn cephes_sincos(x: f32) -> (f32, f32) {
    let sign_sin = x.to_bits() & 0x8000_0000;
    let mut x = x.abs();
    // j = (int(x * 4/pi) + 1) & ~1: the octant, rounded to even.
    let j = ((x * FOPI) as i32).wrapping_add(1) & !1;
    let y = j as f32;
    let swap_sin = ((j & 4) as u32) << 29;
    let poly_sin = j & 2 == 0; // true: sine polynomial gives sin, else cos
    x = fma(y, MINUS_DP1, x);
    x = fma(y, MINUS_DP2, x);
    x = fma(y, MINUS_DP3, x);
    let sign_cos = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
    let sign_sin = sign_sin ^ swap_sin;

    let z = x * x;
    let mut yc = fma(COSCOF[0], z, COSCOF[1]);
    yc = fma(yc, z, COSCOF[2]);
    yc *= z;
    yc = fma(yc, z, -(z * 0.5));
    yc += 1.0;

    let mut ys = fma(SINCOF[0], z, SINCOF[1]);
    ys = fma(ys, z, SINCOF[2]);
    ys *= z;
    ys = fma(ys, x, x);

    // torch selects with masks and adds: `sel + 0` (only turns -0 into +0).
    let (sin, cos) = if poly_sin { (ys, yc) } else { (yc, ys) };
    let (sin, cos) = (sin + 0.0, cos + 0.0);
    (
        f32::from_bits(sin.to_bits() ^ sign_sin),
        f32::from_bits(cos.to_bits() ^ sign_cos),
    )
}
