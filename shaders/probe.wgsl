// Adapter peak probes for `stipple bench` (not used by models):
//   fma_throughput: each invocation runs `iters` rounds of 4 independent vec4 FMA chains, each
//                   chain stepped 8 times a round (32 vec4 FMAs = 256 flops a round), and writes
//                   one sum so nothing is optimised away. Shaped for CPU adapters too, where
//                   each vec4 component is one SIMD register: 16 accumulators fill AVX2's 16
//                   registers without spilling, and 32 FMAs a round amortise llvmpipe's per-
//                   iteration loop cost. The earlier 8 chains × 1 step read 36 % of this
//                   machine's 134 GFLOP/s (2 cores × 2.1 GHz × 2 FMA units × 8 lanes × 2), so
//                   our kernels measured over 100 % of it; this one reads 64–75 %;
//   copy_bandwidth: dst[i] = src[i] over vec4s (bytes moved = 2 · size).

alias T = f32;

override WG: u32 = 256;

struct Params {
    n: u32,       // vec4 elements (copy) or invocations (fma)
    iters: u32,
    seed: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<T>>;

@compute @workgroup_size(WG)
fn fma_throughput(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    let x = vec4<f32>(f32(i) * 1e-7 + p.seed);
    var a0 = x; var a1 = x + 1.0; var a2 = x + 2.0; var a3 = x + 3.0;
    let m = vec4<f32>(0.9999);
    let c = vec4<f32>(1e-4);
    for (var it = 0u; it < p.iters; it++) {
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    }
    if (i < p.n) {
        dst[i] = vec4<T>(a0 + a1 + a2 + a3);
    }
}

@compute @workgroup_size(WG)
fn copy_bandwidth(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < p.n) { dst[i] = src[i]; }
}
