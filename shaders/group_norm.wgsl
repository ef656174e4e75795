// Group normalisation over NHWC activations, with optional fused SiLU (diffusers GroupNorm(+SiLU)):
//   x = src (B, HW, C), or [src ‖ src2] on channels when TWO_SOURCES = 1: src (B, HW, C1),
//       src2 (B, HW, C − C1), read where they are (diffusers' up blocks normalise
//       torch.cat([hidden_states, res_hidden_states], dim=1); the concatenation is never written)
//   x[b, ·, c] += add[b, c] when ADD = 1 (ResnetBlock2D: conv1's output + time_emb_proj(temb),
//       add (B, C), summed in f32 as it is loaded)
//   group g of batch b = channels [g·cpg, (g+1)·cpg) over all HW pixels (a group may straddle C1)
//   mean, var = statistics of that group;  dst = (x − mean) / √(var + eps) · gamma[c] + beta[c]
//   then SiLU if SILU = 1.                                       dst (B, HW, C); gamma, beta (C)
//
// One workgroup per group would give only 32 workgroups per image, so the reduction is split:
//   partial_stats: workgroup (chunk, g, b) reduces `chunk_pixels` pixels of one group to
//                  (count, mean, M2) with per-invocation Welford and Chan's pairwise merge;
//   finalize:      workgroup (g, b) merges the chunks into (mean, 1/√(var + eps));
//   apply:         four elements per invocation (reading the partials directly when a group
//                  is a single chunk, and finalize is skipped).
// partial_stats and finalize reduce through workgroup memory (a barrier tree: GPUs without
// subgroups); group_norm_subgroup.wgsl has the same two entries reduced with subgroup
// operations, writing the same partials and stats for this file's apply.
// partial_stats_serial and finalize_serial (CPU targets) write them without workgroup memory or
// barriers, one summary per invocation, laid out flat (WG per workgroup):
//   partial_stats_serial: invocation (chunk, g, b) runs Welford over its chunk's pixels × the
//                  group's channels, in order, on x − x₀ (x₀ the chunk's first value):
//                  n += 1;  δ = x − x̄;  x̄ += δ / n;  M2 += δ·(x − x̄);  then x̄ += x₀
//   finalize_serial: invocation (g, b) merges its chunks' summaries (Chan et al.):
//                  n = nₐ + n_b,  x̄ = x̄ₐ + δ·n_b / n,  M2 = M2ₐ + M2_b + δ²·nₐ·n_b / n
// On llvmpipe each workgroup barrier is a coroutine switch per invocation, and for the small
// tensors of small models the barrier tree costs more than the arithmetic. Their loops stay
// within lavapipe's 65 535 iterations per loop (chunk_pixels ≤ 8192, chunks ≤ HW).
// Statistics are f32 whatever T is.

alias T = f32;

override WG: u32 = 256;
override SILU: u32 = 0;
// 1 when each group is one chunk: apply reads its statistics straight from the partials and
// the finalize dispatch is skipped (per-dispatch cost dominates small tensors on lavapipe).
override FROM_PARTIALS: u32 = 0;
override TWO_SOURCES: u32 = 0;
override ADD: u32 = 0;

struct Params {
    n: u32,            // B · HW · C
    hw: u32,
    c: u32,
    groups: u32,
    chunk_pixels: u32,
    chunks: u32,
    eps: f32,
    c1: u32,           // channels of src (C unless TWO_SOURCES)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> partials: array<vec4<f32>>;   // (B, G, chunks)
@group(0) @binding(3) var<storage, read_write> stats: array<vec2<f32>>;      // (B, G): mean, rstd
@group(0) @binding(4) var<storage, read> gamma: array<T>;
@group(0) @binding(5) var<storage, read> beta: array<T>;
@group(0) @binding(6) var<storage, read_write> dst: array<T>;
@group(0) @binding(7) var<storage, read> src2: array<T>;                      // (B, HW, C − C1)
@group(0) @binding(8) var<storage, read> add: array<T>;                       // (B, C)

var<workgroup> scratch: array<vec4<f32>, WG>;

// x at pixel row `row` = b·HW + pixel, channel `ch`. Branch-free: on llvmpipe a per-lane
// branch around a load makes it a loop over the lanes, so both sources are read (clamped in
// range) and one is selected.
fn load(row: u32, b: u32, ch: u32) -> f32 {
    var x: f32;
    if (TWO_SOURCES == 1u) {
        let first = f32(src[row * p.c1 + min(ch, p.c1 - 1u)]);
        let c2 = p.c - p.c1;
        let second = f32(src2[row * c2 + min(ch - min(ch, p.c1), c2 - 1u)]);
        x = select(first, second, ch >= p.c1);
    } else {
        x = f32(src[row * p.c1 + ch]);
    }
    if (ADD == 1u) {
        x += f32(add[b * p.c + ch]);
    }
    return x;
}

// ⌊a / b⌋ for a < 2^31, 0 < b < 2^23, through f32 divisions: CPU adapters divide u32 by a
// runtime value one lane at a time (x86 has no vector integer division), f32 in vectors. The
// first quotient is off by at most 2 + 256 / b (f32 keeps 24 bits of a); the remainder it leaves
// is exact in f32 and its quotient brings the estimate to ⌊a / b⌋ or one more (rounding is
// monotonic), which the last select corrects.
fn div_floor(a: u32, b: u32) -> u32 {
    let fb = f32(b);
    let q0 = u32(f32(a) / fb);
    let r = bitcast<i32>(a - q0 * b);   // a − q0·b, signed (u32 arithmetic wraps)
    let q = bitcast<u32>(bitcast<i32>(q0) + i32(floor(f32(r) / fb)));
    return select(q, q - 1u, q * b > a);
}

// Chan et al.: merge two (count, mean, M2) summaries.
fn merge(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let n = a.x + b.x;
    if (n == 0.0) { return vec4<f32>(0.0); }
    let delta = b.y - a.y;
    let mean = a.y + delta * (b.x / n);
    let m2 = a.z + b.z + delta * delta * (a.x * b.x / n);
    return vec4<f32>(n, mean, m2, 0.0);
}

// Tree-reduce `scratch` into scratch[0].
fn reduce_scratch(lid: u32) {
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            scratch[lid] = merge(scratch[lid], scratch[lid + stride]);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn partial_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wid.x;
    let g = wid.y;
    let b = wid.z;
    let cpg = p.c / p.groups;
    let pixel0 = chunk * p.chunk_pixels;
    let pixels = min(p.chunk_pixels, p.hw - pixel0);
    let count = pixels * cpg;
    // Welford over this invocation's strided elements.
    var acc = vec4<f32>(0.0);
    for (var e = lid; e < count; e += WG) {
        let pixel = div_floor(e, cpg);
        let x = load(b * p.hw + pixel0 + pixel, b, g * cpg + e - pixel * cpg);
        acc.x += 1.0;
        let delta = x - acc.y;
        acc.y += delta / acc.x;
        acc.z += delta * (x - acc.y);
    }
    scratch[lid] = acc;
    reduce_scratch(lid);
    if (lid == 0u) {
        partials[(b * p.groups + g) * p.chunks + chunk] = scratch[0];
    }
}

@compute @workgroup_size(WG)
fn finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bg = wid.y * p.groups + wid.x;
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < p.chunks; i += WG) {
        acc = merge(acc, partials[bg * p.chunks + i]);
    }
    scratch[lid] = acc;
    reduce_scratch(lid);
    if (lid == 0u) {
        let total = scratch[0];
        let variance = max(total.z / total.x, 0.0);   // biased, as torch
        stats[bg] = vec2<f32>(total.y, inverseSqrt(variance + p.eps));
    }
}

// Flat index of a serial entry's invocation, clamped to the last of `count` summaries: those
// past it redo it (the same values to the same address) rather than return, since after a
// divergent return every load is a loop over the lanes on llvmpipe.
fn serial_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, count: u32) -> u32 {
    return min((wid.y * nwg.x + wid.x) * WG + lid, count - 1u);
}

@compute @workgroup_size(WG)
fn partial_stats_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let summaries = p.chunks * p.groups * (p.n / (p.hw * p.c));
    let s = serial_index(wid, nwg, lid, summaries);   // = (b · G + g) · chunks + chunk
    let chunk = s % p.chunks;
    let bg = s / p.chunks;
    let b = bg / p.groups;
    let g = bg - b * p.groups;
    let cpg = p.c / p.groups;
    let pixel0 = chunk * p.chunk_pixels;
    let pixels = min(p.chunk_pixels, p.hw - pixel0);
    let row0 = b * p.hw + pixel0;
    // Welford over x − x₀ (x₀ the chunk's first value): one long chain of mean updates
    // accumulates rounding in units of |mean|, so shifting the data to near zero keeps a large
    // mean (300 ± 2 in the kernel test) from costing precision; M2 does not change.
    let shift = load(row0, b, g * cpg);
    var acc = vec3<f32>(0.0);   // (count, mean of x − x₀, M2)
    for (var pixel = 0u; pixel < pixels; pixel++) {
        for (var k = 0u; k < cpg; k++) {
            let x = load(row0 + pixel, b, g * cpg + k) - shift;
            acc.x += 1.0;
            let delta = x - acc.y;
            acc.y += delta / acc.x;
            acc.z += delta * (x - acc.y);
        }
    }
    partials[s] = vec4<f32>(acc.x, acc.y + shift, acc.z, 0.0);
}

@compute @workgroup_size(WG)
fn finalize_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let bg = serial_index(wid, nwg, lid, p.groups * (p.n / (p.hw * p.c)));
    var total = vec4<f32>(0.0);
    for (var k = 0u; k < p.chunks; k++) {
        total = merge(total, partials[bg * p.chunks + k]);
    }
    let variance = max(total.z / total.x, 0.0);   // biased, as torch
    stats[bg] = vec2<f32>(total.y, inverseSqrt(variance + p.eps));
}

// dst[i] for one element i (< n).
fn apply_one(i: u32) {
    let row = div_floor(i, p.c);
    let ch = i - row * p.c;
    let b = div_floor(row, p.hw);
    let bg = b * p.groups + div_floor(ch, p.c / p.groups);
    var s: vec2<f32>;
    if (FROM_PARTIALS == 1u) {
        let part = partials[bg];   // one chunk per group: (count, mean, M2)
        s = vec2<f32>(part.y, inverseSqrt(max(part.z / part.x, 0.0) + p.eps));
    } else {
        s = stats[bg];
    }
    let x = load(row, b, ch);
    var y = (x - s.x) * s.y * f32(gamma[ch]) + f32(beta[ch]);
    if (SILU == 1u) { y = y / (1.0 + exp(-y)); }
    dst[i] = T(y);
}

// APPLY_ELEMENTS (4) elements per invocation, WG apart, written out rather than looped (a loop
// around loads is a loop over the lanes on llvmpipe): llvmpipe's cost per workgroup outweighs
// one element's work. Invocations past the end redo the last element (the same value to the
// same address) instead of returning, for the same reason.
@compute @workgroup_size(WG)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let first = (wid.y * nwg.x + wid.x) * 4u * WG + lid;
    apply_one(min(first, p.n - 1u));
    apply_one(min(first + WG, p.n - 1u));
    apply_one(min(first + 2u * WG, p.n - 1u));
    apply_one(min(first + 3u * WG, p.n - 1u));
}
