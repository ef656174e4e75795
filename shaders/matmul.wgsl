// Linear layer with fused bias, activation and residual:
//   dst[m, n] = act( Σ_k src[m, k] · w[k, n] + bias[n] ) + residual[m, n]
//   src (M, K) row-major (leading axes flattened into rows); w is the weight transposed and packed at load: (K, NP) as vec4,
//   NP = N rounded up to 8 with zero columns (torch's Linear weight is (N, K)); dst (M, N).
//   act (override ACT): 0 none, 1 SiLU, 2 GELU (erf), 3 GELU (tanh), 4 quick-GELU x·σ(1.702x).  Bias/residual are read when the params say
//   so; otherwise the op binds `src` in their place.
//
// Register blocking without workgroup memory (fastest on lavapipe, see KERNELS.md): each
// invocation computes 4 rows × 8 columns into eight named vec4 accumulators. Across the lanes of
// a workgroup row the `src` loads are uniform and the `w` loads contiguous. A workgroup of 8×8
// invocations covers 32 rows × 64 columns (entry `linear`, GPU targets).
//
// Entry `linear_rows` (CPU targets): the same 32 × 64 block per workgroup, but a workgroup of 8
// invocations (one lavapipe SIMD group) that walks its 8 groups of 4 rows in turn. The rows then
// depend only on the workgroup id, so the `src` loads are uniform (one scalar load instead of a
// per-lane gather on lavapipe): 1.28× at 154×768×3072, 0.91× at 8192×320×320 (docs/kernels.md),
// so the op uses it for few rows only. Its loop runs 8·K iterations: K stays within budget / 8.

alias T = f32;

override ACT: u32 = 0;

const TM: u32 = 4u;    // rows per invocation
const WGX: u32 = 8u;   // invocations along N (8 columns each)
const WGY: u32 = 8u;   // invocations along M (4 rows each)

struct Params {
    m: u32,
    n: u32,
    k: u32,
    np4: u32,          // NP / 4: vec4 columns of w
    has_bias: u32,
    has_residual: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read> w: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> residual: array<T>;
@group(0) @binding(5) var<storage, read_write> dst: array<T>;

fn activate(x: f32) -> f32 {
    switch ACT {
        case 1u: { return x / (1.0 + exp(-x)); }
        case 2u: {
            // GELU via A&S 7.1.26 erf (|error| < 1.5e-7).
            let z = x * 0.70710678118654752;
            let a = abs(z);
            let t = 1.0 / (1.0 + 0.3275911 * a);
            let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
            return 0.5 * x * (1.0 + sign(z) * (1.0 - poly * exp(-a * a)));
        }
        case 3u: {
            let inner = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
            return 0.5 * x * (1.0 + tanh(inner));
        }
        case 4u: { return x / (1.0 + exp(-1.702 * x)); }
        default: { return x; }
    }
}

fn store_row(row: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (row >= p.m) { return; }
    let out_row = row * p.n;
    for (var j = 0u; j < 8u; j++) {
        let col = col0 + j;
        if (col < p.n) {
            var v = select(hi, lo, j < 4u)[j % 4u];
            if (p.has_bias != 0u) { v += f32(bias[col]); }
            v = activate(v);
            if (p.has_residual != 0u) { v += f32(residual[out_row + col]); }
            dst[out_row + col] = T(v);
        }
    }
}

// The 4 rows × 8 columns from `row0` and vec4 column `c4`: accumulate over K, then store.
fn tile(row0: u32, c4: u32) {
    // Out-of-range rows re-read the last row; their results are not stored.
    let last = p.m - 1u;
    let x0 = min(row0, last) * p.k;
    let x1 = min(row0 + 1u, last) * p.k;
    let x2 = min(row0 + 2u, last) * p.k;
    let x3 = min(row0 + 3u, last) * p.k;

    var a0l = vec4<f32>(0.0); var a0h = vec4<f32>(0.0);
    var a1l = vec4<f32>(0.0); var a1h = vec4<f32>(0.0);
    var a2l = vec4<f32>(0.0); var a2h = vec4<f32>(0.0);
    var a3l = vec4<f32>(0.0); var a3h = vec4<f32>(0.0);
    var wi = c4;
    for (var kk = 0u; kk < p.k; kk++) {
        let wl = vec4<f32>(w[wi]);
        let wh = vec4<f32>(w[wi + 1u]);
        wi += p.np4;
        let s0 = f32(src[x0 + kk]);
        let s1 = f32(src[x1 + kk]);
        let s2 = f32(src[x2 + kk]);
        let s3 = f32(src[x3 + kk]);
        a0l += s0 * wl; a0h += s0 * wh;
        a1l += s1 * wl; a1h += s1 * wh;
        a2l += s2 * wl; a2h += s2 * wh;
        a3l += s3 * wl; a3h += s3 * wh;
    }
    let col0 = c4 * 4u;
    store_row(row0, col0, a0l, a0h);
    store_row(row0 + 1u, col0, a1l, a1h);
    store_row(row0 + 2u, col0, a2l, a2h);
    store_row(row0 + 3u, col0, a3l, a3h);
}

@compute @workgroup_size(WGX, WGY)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = gid.x * 2u;             // first vec4 column of this invocation
    let row0 = (gid.y + gid.z * (65535u * WGY)) * TM;  // rows beyond 65535 workgroups spill into z
    if (c4 >= p.np4 || row0 >= p.m) { return; }
    tile(row0, c4);
}

@compute @workgroup_size(WGX)
fn linear_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c4 = (wid.x * WGX + lid.x) * 2u;     // first vec4 column of this invocation
    if (c4 >= p.np4) { return; }
    let block = (wid.y + wid.z * 65535u) * (TM * WGY);  // rows beyond 65535 workgroups spill into z
    for (var q = 0u; q < WGY; q++) {
        let row0 = block + q * TM;           // uniform across the workgroup
        if (row0 >= p.m) { break; }
        tile(row0, c4);
    }
}
