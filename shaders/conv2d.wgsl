// 2-D convolution as an implicit GEMM, NHWC, with fused bias and residual:
//   dst[b, oy, ox, co] = bias[co] + residual[b, oy, ox, co]
//       + Σ_{ky, kx, ci} src[b, oy·s − pad + ky, ox·s − pad + kx, ci] · w[(ky·KW + kx)·CIN + ci, co]
//   src (B, H, W, CIN); dst (B, HO, WO, COUT); out-of-image taps read zero (zero padding).
//   With up_shift = 1 the convolved image is src's nearest 2× upsampling (diffusers'
//   Upsample2D): H, W above are the upsampled size and pixel (iy, ix) reads
//   src[b, iy >> 1, ix >> 1, ·] of the (B, H/2, W/2, CIN) buffer.
//   w is torch's (COUT, CIN, KH, KW) weight repacked at load to (KH·KW·CIN, NP) as vec4 with
//   NP = COUT rounded up to 8 (zero columns). No im2col buffer is materialised: the GEMM row
//   m = (b, oy, ox) computes its input addresses on the fly.
//
// Same register blocking as matmul.wgsl: 4 output pixels × 8 output channels per invocation.

alias T = f32;

const TM: u32 = 4u;
const WGX: u32 = 8u;
const WGY: u32 = 8u;

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

// Output pixel m = (b, oy, ox) as (b, oy·s − pad, ox·s − pad): the input origin of its window.
fn origin(m: u32) -> vec3<i32> {
    let ox = m % p.wo;
    let oy = (m / p.wo) % p.ho;
    let b = m / (p.wo * p.ho);
    return vec3<i32>(i32(b), i32(oy * p.stride) - i32(p.pad), i32(ox * p.stride) - i32(p.pad));
}

// Index of the src pixel behind convolved pixel (b, iy, ix), inside the image.
fn src_pixel(b: u32, iy: u32, ix: u32) -> u32 {
    let h = p.h >> p.up_shift;
    let w = p.w >> p.up_shift;
    return (b * h + (iy >> p.up_shift)) * w + (ix >> p.up_shift);
}

// Offset of input pixel (b, iy, ix) in `src`, and whether it lies inside the image.
fn tap(o: vec3<i32>, ky: u32, kx: u32) -> vec2<u32> {
    let iy = o.y + i32(ky);
    let ix = o.z + i32(kx);
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let offset = select(0u, src_pixel(u32(o.x), u32(iy), u32(ix)) * p.cin, inside);
    return vec2<u32>(offset, select(0u, 1u, inside));
}

fn store_row(m: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (m >= p.batch * p.ho * p.wo) { return; }
    for (var j = 0u; j < 8u; j++) {
        let co = col0 + j;
        if (co < p.cout) {
            var v = select(hi, lo, j < 4u)[j % 4u];
            if (p.has_bias != 0u) { v += f32(bias[co]); }
            if (p.has_residual != 0u) { v += f32(residual[m * p.cout + co]); }
            dst[m * p.cout + co] = T(v);
        }
    }
}

@compute @workgroup_size(WGX, WGY)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let rows = p.batch * p.ho * p.wo;
    let c4 = gid.x * 2u;
    let m0 = (gid.y + gid.z * (65535u * WGY)) * TM;  // rows beyond 65535 workgroups spill into z
    if (c4 >= p.np4 || m0 >= rows) { return; }

    let last = rows - 1u;
    let o0 = origin(min(m0, last));
    let o1 = origin(min(m0 + 1u, last));
    let o2 = origin(min(m0 + 2u, last));
    let o3 = origin(min(m0 + 3u, last));

    var a0l = vec4<f32>(0.0); var a0h = vec4<f32>(0.0);
    var a1l = vec4<f32>(0.0); var a1h = vec4<f32>(0.0);
    var a2l = vec4<f32>(0.0); var a2h = vec4<f32>(0.0);
    var a3l = vec4<f32>(0.0); var a3h = vec4<f32>(0.0);
    var wi = c4;
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            let t0 = tap(o0, ky, kx);
            let t1 = tap(o1, ky, kx);
            let t2 = tap(o2, ky, kx);
            let t3 = tap(o3, ky, kx);
            let in0 = f32(t0.y); let in1 = f32(t1.y); let in2 = f32(t2.y); let in3 = f32(t3.y);
            for (var ci = 0u; ci < p.cin; ci++) {
                let wl = vec4<f32>(w[wi]);
                let wh = vec4<f32>(w[wi + 1u]);
                wi += p.np4;
                let s0 = f32(src[t0.x + ci]) * in0;
                let s1 = f32(src[t1.x + ci]) * in1;
                let s2 = f32(src[t2.x + ci]) * in2;
                let s3 = f32(src[t3.x + ci]) * in3;
                a0l += s0 * wl; a0h += s0 * wh;
                a1l += s1 * wl; a1h += s1 * wh;
                a2l += s2 * wl; a2h += s2 * wh;
                a3l += s3 * wl; a3h += s3 * wh;
            }
        }
    }
    let col0 = c4 * 4u;
    store_row(m0, col0, a0l, a0h);
    store_row(m0 + 1u, col0, a1l, a1h);
    store_row(m0 + 2u, col0, a2l, a2h);
    store_row(m0 + 3u, col0, a3l, a3h);
}
