// Linear layer for GPU targets, tiled through workgroup memory (same math, bindings and packed
// weight as matmul.wgsl):
//   dst[m, n] = act( Σ_k src[m, k] · w[k, n] + bias[n] ) + residual[m, n]
//   src (M, K) row-major (leading axes flattened into rows); w is the weight transposed and
//   packed at load: (K, NP) as vec4, NP = N rounded up to 8 with zero columns; dst (M, N).
//   act (override ACT): 0 none, 1 SiLU, 2 GELU (erf), 3 GELU (tanh), 4 quick-GELU x·σ(1.702x).
//   Bias/residual are read when the params say so; otherwise the op binds `src` in their place.
//
// A workgroup of 16 × 16 = 256 invocations computes a BM × BN = 128 × 64 output tile. K is
// streamed in steps of BK = 16: each step the workgroup copies a 128 × 16 slice of `src`
// (k-major, so rows are read as vec4) and a 16 × 64 slice of `w` into workgroup memory as f32,
// and each invocation accumulates 8 rows × 4 columns in eight named vec4 accumulators (arrays of
// accumulators become memory traffic): per k, 2 + 1 vec4 workgroup loads feed 32 FMAs.
// Global loads are coalesced: for `src`, the 16 invocations of a row group read 16 consecutive k
// of one row; for `w`, 16 consecutive vec4 of one k row. The `src` tile's k rows are padded to
// 33 vec4 so the transposing stores do not all hit one bank.
// Rows and columns past the end re-read the last row / vec4 column (their results are not
// stored); k past K loads zero. Workgroup memory: 16·33·16 + 16·16·16 B = 12.3 KiB (WebGPU's
// default limit is 16 KiB). Loop iterations per invocation: ⌈K/16⌉·17 + 32.

alias T = f32;

override ACT: u32 = 0;

const BM: u32 = 128u;          // rows per workgroup tile
const BN4: u32 = 16u;          // vec4 columns per workgroup tile (BN = 64)
const BK: u32 = 16u;           // k per step
const A_STRIDE: u32 = 33u;     // vec4 per k row of a_tile: BM / 4 = 32, plus one of padding

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

// a_tile[k · A_STRIDE + r4] = src rows 4·r4 .. 4·r4 + 3 of the tile at step-relative k.
var<workgroup> a_tile: array<vec4<f32>, 528>;   // BK · A_STRIDE
// b_tile[k · BN4 + c4] = w vec4 column c4 of the tile at step-relative k.
var<workgroup> b_tile: array<vec4<f32>, 256>;   // BK · BN4

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

// Columns col0 .. col0 + 3 of output row `row`: bias, activation, residual, store.
fn store4(row: u32, col0: u32, acc: vec4<f32>) {
    if (row >= p.m) { return; }
    let out_row = row * p.n;
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col < p.n) {
            var v = acc[j];
            if (p.has_bias != 0u) { v += f32(bias[col]); }
            v = activate(v);
            if (p.has_residual != 0u) { v += f32(residual[out_row + col]); }
            dst[out_row + col] = T(v);
        }
    }
}

// `src` at (row, k) with the row clamped to the last one.
fn a_at(row: u32, kc: u32) -> f32 {
    return f32(src[min(row, p.m - 1u) * p.k + kc]);
}

@compute @workgroup_size(256)
fn linear_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row_base = (wid.y + wid.z * 65535u) * BM;   // tiles beyond 65535 spill into z
    let c4_base = wid.x * BN4;
    // Loading roles: `src` at step-relative k = lk for rows 8·lg .. 8·lg + 7; `w` at k row bk,
    // vec4 column bc4.
    let lk = li % BK;
    let lg = li / BK;
    let bk = li / BN4;
    let bc4 = min(c4_base + li % BN4, p.np4 - 1u);
    let ra = row_base + lg * 8u;
    // Computing roles: rows 8·ty .. 8·ty + 7, columns 4·tx .. 4·tx + 3 of the tile.
    let tx = li % 16u;
    let ty = li / 16u;

    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);
    let steps = (p.k + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * BK;
        let ka = k0 + lk;
        let kc = min(ka, p.k - 1u);
        let zero = vec4<f32>(0.0);
        let lo = vec4<f32>(a_at(ra, kc), a_at(ra + 1u, kc), a_at(ra + 2u, kc), a_at(ra + 3u, kc));
        let hi = vec4<f32>(a_at(ra + 4u, kc), a_at(ra + 5u, kc), a_at(ra + 6u, kc), a_at(ra + 7u, kc));
        a_tile[lk * A_STRIDE + lg * 2u] = select(zero, lo, ka < p.k);
        a_tile[lk * A_STRIDE + lg * 2u + 1u] = select(zero, hi, ka < p.k);
        let kb = k0 + bk;
        let wv = vec4<f32>(w[min(kb, p.k - 1u) * p.np4 + bc4]);
        b_tile[bk * BN4 + li % BN4] = select(zero, wv, kb < p.k);
        workgroupBarrier();
        for (var t = 0u; t < BK; t++) {
            let a_lo = a_tile[t * A_STRIDE + ty * 2u];
            let a_hi = a_tile[t * A_STRIDE + ty * 2u + 1u];
            let b = b_tile[t * BN4 + tx];
            acc0 += a_lo.x * b; acc1 += a_lo.y * b;
            acc2 += a_lo.z * b; acc3 += a_lo.w * b;
            acc4 += a_hi.x * b; acc5 += a_hi.y * b;
            acc6 += a_hi.z * b; acc7 += a_hi.w * b;
        }
        workgroupBarrier();
    }
    let row0 = row_base + ty * 8u;
    let col0 = (c4_base + tx) * 4u;
    store4(row0, col0, acc0);
    store4(row0 + 1u, col0, acc1);
    store4(row0 + 2u, col0, acc2);
    store4(row0 + 3u, col0, acc3);
    store4(row0 + 4u, col0, acc4);
    store4(row0 + 5u, col0, acc5);
    store4(row0 + 6u, col0, acc6);
    store4(row0 + 7u, col0, acc7);
}
