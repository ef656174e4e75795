// 2-D convolution for GPU targets: implicit GEMM, NHWC, tiled through workgroup memory (same
// math, bindings and packed weight as conv2d.wgsl):
//   dst[b, oy, ox, co] = bias[co] + residual[b, oy, ox, co]
//       + Σ_{ky, kx, ci} src[b, oy·s − pad + ky, ox·s − pad + kx, ci] · w[(ky·KW + kx)·CIN + ci, co]
//   src (B, H, W, CIN); dst (B, HO, WO, COUT); out-of-image taps read zero (zero padding).
//   With up_shift = 1 the convolved image is src's nearest 2× upsampling (diffusers'
//   Upsample2D): H, W above are the upsampled size and pixel (iy, ix) reads
//   src[b, iy >> 1, ix >> 1, ·] of the (B, H/2, W/2, CIN) buffer.
//   w is torch's (COUT, CIN, KH, KW) weight repacked at load to (KH·KW·CIN, NP) as vec4 with
//   NP = COUT rounded up to 8 (zero columns).
//
// As a GEMM: row m = (b, oy, ox) of M = B·HO·WO output pixels, reduction index
// k = (ky·KW + kx)·CIN + ci of K = KH·KW·CIN, column co. The tiling and its override constants
// are matmul_tiled.wgsl's (by default a workgroup of 256 invocations computes 128 pixels × 64
// channels, K streamed in steps of 16 through workgroup memory, 8 pixels × 4 channels per
// invocation in named vec4 accumulators; the configurations: src/ops/matmul_tiled.rs).
// No im2col buffer exists: each step's BM × BK `src` slice is gathered from the image. The
// window origin of each of the tile's BM pixels is computed once into workgroup memory (every
// configuration has WG ≥ BM); a loading invocation decodes its k into (ky, kx, ci) once per
// step (its k is the same for both of its vec4 loads, WG being a multiple of BK). The BK
// consecutive invocations loading one group of 4 pixels read BK consecutive channels of each
// input pixel (contiguous in NHWC).
// Workgroup memory: matmul_tiled.wgsl's tiles + 16·BM B of origins, 14.3 KiB by default
// (WebGPU's default limit is 16 KiB). Loop iterations per invocation: ⌈K/BK⌉·(BK + 1) + 4·TM.

alias T = f32;

override BM: u32 = 128u;       // output pixels per workgroup tile
override BN4: u32 = 16u;       // vec4 output channels per workgroup tile (BN = 4·BN4)
override BK: u32 = 16u;        // k per step
override TM: u32 = 8u;         // pixels per invocation: 4 or 8
override WG: u32 = 256u;       // invocations: (BM / TM) · BN4
override A_STRIDE: u32 = BM / 4u + 1u;   // vec4 per k row of a_tile, one of padding

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    cin: u32,
    ho: u32,
    wo: u32,
    cout: u32,
    np4: u32,          // NP / 4
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    has_bias: u32,
    has_residual: u32,
    up_shift: u32,     // 1: src is read nearest-upsampled 2× (h, w are the upsampled size)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read> w: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> residual: array<T>;
@group(0) @binding(5) var<storage, read_write> dst: array<T>;

var<workgroup> a_tile: array<vec4<f32>, BK * A_STRIDE>;   // as in matmul_tiled.wgsl
var<workgroup> b_tile: array<vec4<f32>, BK * BN4>;
// Per tile pixel: (b, oy·s − pad, ox·s − pad, 1), or w = 0 for pixels past the end.
var<workgroup> origins: array<vec4<i32>, BM>;

// Output channels col0 .. col0 + 3 of output pixel m: bias, residual, store.
fn store4(m: u32, col0: u32, acc: vec4<f32>) {
    if (m >= p.batch * p.ho * p.wo) { return; }
    for (var j = 0u; j < 4u; j++) {
        let co = col0 + j;
        if (co < p.cout) {
            var v = acc[j];
            if (p.has_bias != 0u) { v += f32(bias[co]); }
            if (p.has_residual != 0u) { v += f32(residual[m * p.cout + co]); }
            dst[m * p.cout + co] = T(v);
        }
    }
}

// Index of the src pixel behind convolved pixel (b, iy, ix), inside the image.
fn src_pixel(b: u32, iy: u32, ix: u32) -> u32 {
    let h = p.h >> p.up_shift;
    let w = p.w >> p.up_shift;
    return (b * h + (iy >> p.up_shift)) * w + (ix >> p.up_shift);
}

// `src` at tile pixel r, tap (ky, kx), channel ci; zero outside the image, past the last pixel
// or past K (`ok` false).
fn a_at(r: u32, ky: u32, kx: u32, ci: u32, ok: bool) -> f32 {
    let o = origins[r];
    let iy = o.y + i32(ky);
    let ix = o.z + i32(kx);
    let inside = ok && o.w != 0 && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let offset = select(0u, src_pixel(u32(o.x), u32(iy), u32(ix)) * p.cin + ci, inside);
    return select(0.0, f32(src[offset]), inside);
}

// Tile pixels 4·r4 .. 4·r4 + 3 at tap (ky, kx), channel ci, as a vec4 (see a_at).
fn a_pixels(r4: u32, ky: u32, kx: u32, ci: u32, ok: bool) -> vec4<f32> {
    let r = r4 * 4u;
    return vec4<f32>(a_at(r, ky, kx, ci, ok), a_at(r + 1u, ky, kx, ci, ok),
                     a_at(r + 2u, ky, kx, ci, ok), a_at(r + 3u, ky, kx, ci, ok));
}

@compute @workgroup_size(WG)
fn conv2d_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let rows = p.batch * p.ho * p.wo;
    let kdim = p.kh * p.kw * p.cin;
    let row_base = (wid.y + wid.z * 65535u) * BM;   // tiles beyond 65535 spill into z
    let c4_base = wid.x * BN4;
    if (li < BM) {
        let m = row_base + li;
        let ox = m % p.wo;
        let oy = (m / p.wo) % p.ho;
        let b = m / (p.wo * p.ho);
        origins[li] = vec4<i32>(i32(b), i32(oy * p.stride) - i32(p.pad),
                                i32(ox * p.stride) - i32(p.pad), select(0, 1, m < rows));
    }
    // Loading roles as in matmul_tiled.wgsl: `src` at step-relative k = lk for pixel groups r4
    // (and r4 + WG/BK when BK·BM/4 = 2·WG); `w` at k row bk, vec4 column bc4.
    let lk = li % BK;
    let r4 = li / BK;
    let a_twice = BK * BM / 4u > WG;
    let bk = li / BN4;
    let b_loads = li < BK * BN4;
    let bc4 = min(c4_base + li % BN4, p.np4 - 1u);
    // Computing roles: tile pixels TM·ty .. TM·ty + TM − 1, channels 4·tx .. 4·tx + 3.
    let tx = li % BN4;
    let ty = li / BN4;

    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);
    workgroupBarrier();   // origins written
    let steps = (kdim + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * BK;
        let ka = k0 + lk;
        let ok = ka < kdim;
        let tap = ka / p.cin;
        let ci = ka % p.cin;
        let ky = tap / p.kw;
        let kx = tap % p.kw;
        a_tile[lk * A_STRIDE + r4] = a_pixels(r4, ky, kx, ci, ok);
        if (a_twice) {
            let r4b = r4 + WG / BK;
            a_tile[lk * A_STRIDE + r4b] = a_pixels(r4b, ky, kx, ci, ok);
        }
        if (b_loads) {
            let kb = k0 + bk;
            let wv = vec4<f32>(w[min(kb, kdim - 1u) * p.np4 + bc4]);
            b_tile[bk * BN4 + li % BN4] = select(vec4<f32>(0.0), wv, kb < kdim);
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
    let m0 = row_base + ty * TM;
    let col0 = (c4_base + tx) * 4u;
    store4(m0, col0, acc0);
    store4(m0 + 1u, col0, acc1);
    store4(m0 + 2u, col0, acc2);
    store4(m0 + 3u, col0, acc3);
    if (TM == 8u) {
        store4(m0 + 4u, col0, acc4);
        store4(m0 + 5u, col0, acc5);
        store4(m0 + 6u, col0, acc6);
        store4(m0 + 7u, col0, acc7);
    }
}
