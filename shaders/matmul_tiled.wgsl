// Linear layer for GPU targets, tiled through workgroup memory (same math, bindings and packed
// weight as matmul.wgsl):
//   dst[m, n] = act( Σ_k src[m, k] · w[k, n] + bias[n] ) + residual[m, n]
//   src (M, K) row-major (leading axes flattened into rows); w is the weight transposed and
//   packed at load: (K, NP) as vec4, NP = N rounded up to 8 with zero columns; dst (M, N).
//   act (override ACT): 0 none, 1 SiLU, 2 GELU (erf), 3 GELU (tanh), 4 quick-GELU x·σ(1.702x).
//   Bias/residual are read when the params say so; otherwise the op binds `src` in their place.
//
// Tile geometry is set per pipeline by override constants (the configurations and how one is
// chosen per adapter: src/ops/matmul_tiled.rs, docs/targets.md). The defaults: a workgroup of
// WG = 256 invocations computes a BM × BN = 128 × 64 output tile, K streamed in steps of
// BK = 16: each step the workgroup copies a BM × BK slice of `src` (k-major, so rows are read as
// vec4) and a BK × BN slice of `w` into workgroup memory as f32, and each invocation accumulates
// TM = 8 rows × 4 columns in named vec4 accumulators (arrays of accumulators become memory
// traffic): per k, TM/4 + 1 vec4 workgroup loads feed 4·TM FMAs. Every configuration keeps
// WG = (BM / TM) · BN4, one or two `src` vec4 loads per invocation per step
// (BK · BM / 4 = WG or 2·WG) and at most one `w` vec4 (BK · BN4 ≤ WG); TM is 4 or 8.
// The k order of each output's sum is the same in every configuration (0, 1, …, K − 1).
// Global loads are coalesced: BK consecutive invocations read BK consecutive k of the same 4
// rows of `src`; `w` loads are BN4 consecutive vec4 of one k row. The `src` tile's k rows are
// padded to BM/4 + 1 vec4 so the transposing stores do not all hit one bank.
// Rows and columns past the end re-read the last row / vec4 column (their results are not
// stored); k past K loads zero. Workgroup memory: 16·BK·(BM/4 + 1 + BN4) B, 12.3 KiB by default
// (WebGPU's default limit is 16 KiB). Loop iterations per invocation: ⌈K/BK⌉·(BK + 1) + 4·TM.

alias T = f32;

override ACT: u32 = 0;

override BM: u32 = 128u;       // rows per workgroup tile
override BN4: u32 = 16u;       // vec4 columns per workgroup tile (BN = 4·BN4)
override BK: u32 = 16u;        // k per step
override TM: u32 = 8u;         // rows per invocation: 4 or 8
override WG: u32 = 256u;       // invocations: (BM / TM) · BN4
override A_STRIDE: u32 = BM / 4u + 1u;   // vec4 per k row of a_tile, one of padding

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
var<workgroup> a_tile: array<vec4<f32>, BK * A_STRIDE>;
// b_tile[k · BN4 + c4] = w vec4 column c4 of the tile at step-relative k.
var<workgroup> b_tile: array<vec4<f32>, BK * BN4>;

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

// Rows 4·r4 .. 4·r4 + 3 of the tile at k (`ok`: k < K; else zero), as a vec4.
fn a_rows(row_base: u32, r4: u32, kc: u32, ok: bool) -> vec4<f32> {
    let r = row_base + r4 * 4u;
    let v = vec4<f32>(a_at(r, kc), a_at(r + 1u, kc), a_at(r + 2u, kc), a_at(r + 3u, kc));
    return select(vec4<f32>(0.0), v, ok);
}

@compute @workgroup_size(WG)
fn linear_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row_base = (wid.y + wid.z * 65535u) * BM;   // tiles beyond 65535 spill into z
    let c4_base = wid.x * BN4;
    // Loading roles: `src` at step-relative k = lk for row groups r4 (and r4 + WG/BK when
    // BK·BM/4 = 2·WG); `w` at k row bk, vec4 column bc4 (invocations li < BK·BN4).
    let lk = li % BK;
    let r4 = li / BK;
    let a_twice = BK * BM / 4u > WG;
    let bk = li / BN4;
    let b_loads = li < BK * BN4;
    let bc4 = min(c4_base + li % BN4, p.np4 - 1u);
    // Computing roles: rows TM·ty .. TM·ty + TM − 1, columns 4·tx .. 4·tx + 3 of the tile.
    let tx = li % BN4;
    let ty = li / BN4;

    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);
    let steps = (p.k + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * BK;
        let ka = k0 + lk;
        let kc = min(ka, p.k - 1u);
        a_tile[lk * A_STRIDE + r4] = a_rows(row_base, r4, kc, ka < p.k);
        if (a_twice) {
            let r4b = r4 + WG / BK;
            a_tile[lk * A_STRIDE + r4b] = a_rows(row_base, r4b, kc, ka < p.k);
        }
        if (b_loads) {
            let kb = k0 + bk;
            let wv = vec4<f32>(w[min(kb, p.k - 1u) * p.np4 + bc4]);
            b_tile[bk * BN4 + li % BN4] = select(vec4<f32>(0.0), wv, kb < p.k);
        }
        workgroupBarrier();
        for (var t = 0u; t < BK; t++) {
            let b = b_tile[t * BN4 + tx];
            let a_lo = a_tile[t * A_STRIDE + ty * (TM / 4u)];
            acc0 += a_lo.x * b; acc1 += a_lo.y * b;
            acc2 += a_lo.z * b; acc3 += a_lo.w * b;
            if (TM == 8u) {
                let a_hi = a_tile[t * A_STRIDE + ty * 2u + 1u];
                acc4 += a_hi.x * b; acc5 += a_hi.y * b;
                acc6 += a_hi.z * b; acc7 += a_hi.w * b;
            }
        }
        workgroupBarrier();
    }
    let row0 = row_base + ty * TM;
    let col0 = (c4_base + tx) * 4u;
    store4(row0, col0, acc0);
    store4(row0 + 1u, col0, acc1);
    store4(row0 + 2u, col0, acc2);
    store4(row0 + 3u, col0, acc3);
    if (TM == 8u) {
        store4(row0 + 4u, col0, acc4);
        store4(row0 + 5u, col0, acc5);
        store4(row0 + 6u, col0, acc6);
        store4(row0 + 7u, col0, acc7);
    }
}
