// 2-D convolution for CPU adapters (lavapipe): implicit GEMM, NHWC, fused bias and residual:
//   dst[b, oy, ox, co] = bias[co] + residual[b, oy, ox, co]
//       + Σ_{ky, kx, ci} src[b, oy·s − pad + ky, ox·s − pad + kx, ci] · w[(ky·KW + kx)·CIN + ci, co]
//   src (B, H, W, CIN), read as vec4 (CIN a multiple of 4); dst (B, HO, WO, COUT);
//   out-of-image taps read zero (zero padding; extra padding at the end only sets HO, WO).
//   With up_shift = 1 the convolved image is src's nearest 2× upsampling (diffusers'
//   Upsample2D): H, W above are the upsampled size and pixel (iy, ix) reads
//   src[b, iy >> 1, ix >> 1, ·] of the (B, H/2, W/2, CIN) buffer.
//   w is (K, NP) as vec4 with K = KH·KW·CIN, NP = COUT rounded up to 8 (zero columns), row
//   (ky·KW + kx)·CIN + ci, laid out (params.blocked) as in matmul_subgroup.wgsl: Packed (the
//   layout of conv2d.wgsl) or Blocked (blocks of 32 output channels, each its own (K, width)
//   matrix).
//
// The GEMM of matmul_subgroup.wgsl with rows m = (b, oy, ox) (docs/kernels.md, "Subgroup
// GEMM"): a workgroup is one subgroup of 8 lanes computing ROWS·8 output pixels × 32 output
// channels; each lane owns ROWS pixels × 32 channels; per tap and 4 input channels a lane loads
// one vec4 of each of its pixels and one vec4 of each of the 4 weight rows at its own chunk of
// 4 output channels, and subgroupBroadcast hands every lane all 32 channels' weights.
// Needs subgroups of at least 8 invocations (one workgroup = one subgroup).
// Loop iterations per invocation: KH·KW·(1 + CIN/4) + 8·(1 + 4·ROWS).

alias T = f32;

override ROWS: u32 = 8u;   // output pixels per lane: 4 or 8

const CHUNKS: u32 = 8u;    // 4-channel chunks per lane (one per lane of the subgroup)

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
    blocked: u32,      // 1: w is in the Blocked layout
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> residual: array<T>;
@group(0) @binding(5) var<storage, read_write> dst: array<T>;

// Four vec4s: a tile of 4 pixels × 4 channels, 4 pixels × 4 input channels of src, or
// 4 input × 4 output channels of w.
struct Quad {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// t += s · w: 4 pixels × 4 output channels over 4 input channels.
fn fma_quad(t: Quad, s: Quad, w: Quad) -> Quad {
    var o = t;
    o.r0 += s.r0.x * w.r0; o.r0 += s.r0.y * w.r1; o.r0 += s.r0.z * w.r2; o.r0 += s.r0.w * w.r3;
    o.r1 += s.r1.x * w.r0; o.r1 += s.r1.y * w.r1; o.r1 += s.r1.z * w.r2; o.r1 += s.r1.w * w.r3;
    o.r2 += s.r2.x * w.r0; o.r2 += s.r2.y * w.r1; o.r2 += s.r2.z * w.r2; o.r2 += s.r2.w * w.r3;
    o.r3 += s.r3.x * w.r0; o.r3 += s.r3.y * w.r1; o.r3 += s.r3.z * w.r2; o.r3 += s.r3.w * w.r3;
    return o;
}

// Output pixel m = (b, oy, ox) as (b, oy·s − pad, ox·s − pad): the input origin of its window.
fn origin(m: u32) -> vec3<i32> {
    let ox = m % p.wo;
    let oy = (m / p.wo) % p.ho;
    let b = m / (p.wo * p.ho);
    return vec3<i32>(i32(b), i32(oy * p.stride) - i32(p.pad), i32(ox * p.stride) - i32(p.pad));
}

// Tap (ky, kx) of the window at `o`: its src offset in vec4s, or -1 outside the image.
fn tap(o: vec3<i32>, ky: u32, kx: u32) -> i32 {
    let iy = o.y + i32(ky);
    let ix = o.z + i32(kx);
    if (iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) { return -1; }
    let h = p.h >> p.up_shift;
    let w = p.w >> p.up_shift;
    let pixel = (u32(o.x) * h + (u32(iy) >> p.up_shift)) * w + (u32(ix) >> p.up_shift);
    return i32(pixel * (p.cin / 4u));
}

// 4 input channels (vec4 index c4) of 4 pixels at tap offsets t0..t3 (zero where -1).
fn load_pixels(t0: i32, t1: i32, t2: i32, t3: i32, c4: u32) -> Quad {
    let z = vec4<f32>(0.0);
    return Quad(select(z, vec4<f32>(src[u32(max(t0, 0)) + c4]), t0 >= 0),
                select(z, vec4<f32>(src[u32(max(t1, 0)) + c4]), t1 >= 0),
                select(z, vec4<f32>(src[u32(max(t2, 0)) + c4]), t2 >= 0),
                select(z, vec4<f32>(src[u32(max(t3, 0)) + c4]), t3 >= 0));
}

// The weights of chunk c (4 input × 4 output channels) from the lanes' loads l0..l3.
fn chunk_weights(l0: vec4<f32>, l1: vec4<f32>, l2: vec4<f32>, l3: vec4<f32>, c: u32) -> Quad {
    switch c {
        case 0u: { return Quad(subgroupBroadcast(l0, 0u), subgroupBroadcast(l1, 0u), subgroupBroadcast(l2, 0u), subgroupBroadcast(l3, 0u)); }
        case 1u: { return Quad(subgroupBroadcast(l0, 1u), subgroupBroadcast(l1, 1u), subgroupBroadcast(l2, 1u), subgroupBroadcast(l3, 1u)); }
        case 2u: { return Quad(subgroupBroadcast(l0, 2u), subgroupBroadcast(l1, 2u), subgroupBroadcast(l2, 2u), subgroupBroadcast(l3, 2u)); }
        case 3u: { return Quad(subgroupBroadcast(l0, 3u), subgroupBroadcast(l1, 3u), subgroupBroadcast(l2, 3u), subgroupBroadcast(l3, 3u)); }
        case 4u: { return Quad(subgroupBroadcast(l0, 4u), subgroupBroadcast(l1, 4u), subgroupBroadcast(l2, 4u), subgroupBroadcast(l3, 4u)); }
        case 5u: { return Quad(subgroupBroadcast(l0, 5u), subgroupBroadcast(l1, 5u), subgroupBroadcast(l2, 5u), subgroupBroadcast(l3, 5u)); }
        case 6u: { return Quad(subgroupBroadcast(l0, 6u), subgroupBroadcast(l1, 6u), subgroupBroadcast(l2, 6u), subgroupBroadcast(l3, 6u)); }
        default: { return Quad(subgroupBroadcast(l0, 7u), subgroupBroadcast(l1, 7u), subgroupBroadcast(l2, 7u), subgroupBroadcast(l3, 7u)); }
    }
}

// Output channels 4·c4 .. 4·c4 + 3 (those < COUT) of output pixel m (< B·HO·WO).
fn store4(m: u32, c4: u32, v: vec4<f32>) {
    if (m >= p.batch * p.ho * p.wo) { return; }
    for (var j = 0u; j < 4u; j++) {
        let co = c4 * 4u + j;
        if (co < p.cout) {
            var x = v[j];
            if (p.has_bias != 0u) { x += f32(bias[co]); }
            if (p.has_residual != 0u) { x += f32(residual[m * p.cout + co]); }
            dst[m * p.cout + co] = T(x);
        }
    }
}

fn store_quad(m0: u32, c4: u32, t: Quad) {
    store4(m0, c4, t.r0);
    store4(m0 + 1u, c4, t.r1);
    store4(m0 + 2u, c4, t.r2);
    store4(m0 + 3u, c4, t.r3);
}

// Workgroup (x, y + 65535·z) = (block of 32 output channels, block of 8·ROWS output pixels).
@compute @workgroup_size(8)
fn conv2d_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(subgroup_invocation_id) lane: u32) {
    let m0 = (wid.y + wid.z * 65535u) * (8u * ROWS) + lane * ROWS;   // this lane's pixels
    let c0 = wid.x * CHUNKS;                                           // first vec4 channel
    // Pixels past the end re-read the last one and are not stored.
    let last = p.batch * p.ho * p.wo - 1u;
    let o0 = origin(min(m0, last));
    let o1 = origin(min(m0 + 1u, last));
    let o2 = origin(min(m0 + 2u, last));
    let o3 = origin(min(m0 + 3u, last));
    let o4 = origin(min(m0 + 4u, last));
    let o5 = origin(min(m0 + 5u, last));
    let o6 = origin(min(m0 + 6u, last));
    let o7 = origin(min(m0 + 7u, last));
    let c4s = p.cin / 4u;
    // This lane's weight column and the vec4s between weight rows: NP/4 (Packed), or the width
    // of this workgroup's block, whose (K, width) matrix starts at c0·K vec4s (Blocked).
    // Channels past NP re-read the last one and are not stored.
    let blocked = p.blocked != 0u;
    let ws = select(p.np4, min(CHUNKS, p.np4 - c0), blocked);
    var wi = select(min(c0 + lane, p.np4 - 1u), c0 * p.kh * p.kw * p.cin + min(lane, ws - 1u), blocked);

    // Chunk c's accumulators: pixels 0..3 in a_c, pixels 4..7 in b_c (ROWS = 8).
    var a0 = Quad(); var a1 = Quad(); var a2 = Quad(); var a3 = Quad();
    var a4 = Quad(); var a5 = Quad(); var a6 = Quad(); var a7 = Quad();
    var b0 = Quad(); var b1 = Quad(); var b2 = Quad(); var b3 = Quad();
    var b4 = Quad(); var b5 = Quad(); var b6 = Quad(); var b7 = Quad();
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            let t0 = tap(o0, ky, kx); let t1 = tap(o1, ky, kx);
            let t2 = tap(o2, ky, kx); let t3 = tap(o3, ky, kx);
            let t4 = tap(o4, ky, kx); let t5 = tap(o5, ky, kx);
            let t6 = tap(o6, ky, kx); let t7 = tap(o7, ky, kx);
            for (var c4 = 0u; c4 < c4s; c4++) {
                let lo = load_pixels(t0, t1, t2, t3, c4);          // (4 pixels, 4 channels)
                var hi = Quad();
                if (ROWS == 8u) { hi = load_pixels(t4, t5, t6, t7, c4); }
                let l0 = vec4<f32>(w[wi]);                         // (4 in, 4 out) of chunk `lane`
                let l1 = vec4<f32>(w[wi + ws]);
                let l2 = vec4<f32>(w[wi + 2u * ws]);
                let l3 = vec4<f32>(w[wi + 3u * ws]);
                wi += 4u * ws;
                var q = chunk_weights(l0, l1, l2, l3, 0u);
                a0 = fma_quad(a0, lo, q); if (ROWS == 8u) { b0 = fma_quad(b0, hi, q); }
                q = chunk_weights(l0, l1, l2, l3, 1u);
                a1 = fma_quad(a1, lo, q); if (ROWS == 8u) { b1 = fma_quad(b1, hi, q); }
                q = chunk_weights(l0, l1, l2, l3, 2u);
                a2 = fma_quad(a2, lo, q); if (ROWS == 8u) { b2 = fma_quad(b2, hi, q); }
                q = chunk_weights(l0, l1, l2, l3, 3u);
                a3 = fma_quad(a3, lo, q); if (ROWS == 8u) { b3 = fma_quad(b3, hi, q); }
                q = chunk_weights(l0, l1, l2, l3, 4u);
                a4 = fma_quad(a4, lo, q); if (ROWS == 8u) { b4 = fma_quad(b4, hi, q); }
                q = chunk_weights(l0, l1, l2, l3, 5u);
                a5 = fma_quad(a5, lo, q); if (ROWS == 8u) { b5 = fma_quad(b5, hi, q); }
                q = chunk_weights(l0, l1, l2, l3, 6u);
                a6 = fma_quad(a6, lo, q); if (ROWS == 8u) { b6 = fma_quad(b6, hi, q); }
                q = chunk_weights(l0, l1, l2, l3, 7u);
                a7 = fma_quad(a7, lo, q); if (ROWS == 8u) { b7 = fma_quad(b7, hi, q); }
            }
        }
    }
    // Store chunk 0, then shift the chunks down (one inlined epilogue instead of eight).
    for (var c = 0u; c < CHUNKS; c++) {
        if (c0 + c < p.np4) {
            store_quad(m0, c0 + c, a0);
            if (ROWS == 8u) { store_quad(m0 + 4u, c0 + c, b0); }
        }
        a0 = a1; a1 = a2; a2 = a3; a3 = a4; a4 = a5; a5 = a6; a6 = a7;
        b0 = b1; b1 = b2; b2 = b3; b3 = b4; b4 = b5; b5 = b6; b6 = b7;
    }
}
