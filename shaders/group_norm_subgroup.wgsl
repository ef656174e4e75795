// Group-norm statistics reduced with subgroup operations: the `partial_stats` and `finalize` of
// group_norm.wgsl for adapters with the SUBGROUP feature (GPU variant). They write the same
// partials (count, mean, M2) and stats (mean, 1/√(var + eps)), read by group_norm.wgsl's
// `apply`; the loads (two sources split at C1, the per-(batch, channel) addend) are the same.
//
//   Welford per invocation over its strided elements, then one merge of all K summaries
//   (nₖ, x̄ₖ, M2ₖ) at once (Chan et al., generalised to K parts):
//     n = Σ nₖ,   x̄ = Σ nₖ·x̄ₖ / n,   M2 = Σ (M2ₖ + nₖ·(x̄ₖ − x̄)²)
//   first inside each subgroup (subgroupAdd), then over the subgroups' summaries.
//
// Nothing is assumed about the subgroup size (WGSL allows 4 to 128; 8 on lavapipe, 32 on NVIDIA,
// 32 or 64 on AMD), nor about which invocations share a subgroup, nor that subgroups are full:
// the first invocation of each subgroup takes a slot from a workgroup counter and stores its
// subgroup's summary there; after a barrier every subgroup merges all slots (the same value in
// every subgroup) and invocation 0 stores it. Two barriers per workgroup instead of the barrier
// tree's log₂(WG) + 1. Subgroup operations run only in uniform control flow.
// The Rust side compiles this file only where the device has SUBGROUP (on the web it prepends
// `enable subgroups;`, which naga, natively, does not accept). Statistics are f32 whatever T is.

alias T = f32;

override WG: u32 = 256;
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
@group(0) @binding(1) var<storage, read> src: array<T>;                       // (B, HW, C1)
@group(0) @binding(2) var<storage, read_write> partials: array<vec4<f32>>;   // (B, G, chunks)
@group(0) @binding(3) var<storage, read_write> stats: array<vec2<f32>>;      // (B, G): mean, rstd
@group(0) @binding(7) var<storage, read> src2: array<T>;                      // (B, HW, C − C1)
@group(0) @binding(8) var<storage, read> add: array<T>;                       // (B, C)

// One summary per subgroup (a subgroup has at least one invocation).
var<workgroup> slots: array<vec4<f32>, WG>;
var<workgroup> used: atomic<u32>;

// x at pixel row `row` = b·HW + pixel, channel `ch` (as group_norm.wgsl's `load`).
fn load(row: u32, b: u32, ch: u32) -> f32 {
    var x: f32;
    if (TWO_SOURCES == 1u && ch >= p.c1) {
        x = f32(src2[row * (p.c - p.c1) + (ch - p.c1)]);
    } else {
        x = f32(src[row * p.c1 + ch]);
    }
    if (ADD == 1u) {
        x += f32(add[b * p.c + ch]);
    }
    return x;
}

// Chan et al.: merge two (count, mean, M2) summaries (as group_norm.wgsl's `merge`).
fn merge(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let n = a.x + b.x;
    if (n == 0.0) { return vec4<f32>(0.0); }
    let delta = b.y - a.y;
    let mean = a.y + delta * (b.x / n);
    let m2 = a.z + b.z + delta * delta * (a.x * b.x / n);
    return vec4<f32>(n, mean, m2, 0.0);
}

// The (n, mean, M2) of all the summaries of this invocation's subgroup, in every invocation.
fn subgroup_merge(s: vec4<f32>) -> vec4<f32> {
    let n = subgroupAdd(s.x);
    let sum = subgroupAdd(s.x * s.y);
    let mean = select(0.0, sum / n, n > 0.0);
    let d = s.y - mean;
    let m2 = subgroupAdd(s.z + s.x * d * d);
    return vec4<f32>(n, mean, m2, 0.0);
}

// The (n, mean, M2) of one summary per invocation of the workgroup, in every invocation.
fn workgroup_merge(s: vec4<f32>, lid: u32, sid: u32, size: u32) -> vec4<f32> {
    if (lid == 0u) {
        atomicStore(&used, 0u);
    }
    workgroupBarrier();
    let mine = subgroup_merge(s);
    if (sid == 0u) {
        slots[atomicAdd(&used, 1u)] = mine;
    }
    workgroupBarrier();
    let filled = atomicLoad(&used);
    var acc = vec4<f32>(0.0);
    for (var i = sid; i < filled; i += size) {
        acc = merge(acc, slots[i]);
    }
    return subgroup_merge(acc);
}

@compute @workgroup_size(WG)
fn partial_stats(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
                 @builtin(subgroup_invocation_id) sid: u32,
                 @builtin(subgroup_size) size: u32) {
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
        let x = load(b * p.hw + pixel0 + e / cpg, b, g * cpg + e % cpg);
        acc.x += 1.0;
        let delta = x - acc.y;
        acc.y += delta / acc.x;
        acc.z += delta * (x - acc.y);
    }
    let total = workgroup_merge(acc, lid, sid, size);
    if (lid == 0u) {
        partials[(b * p.groups + g) * p.chunks + chunk] = total;
    }
}

@compute @workgroup_size(WG)
fn finalize(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32,
            @builtin(subgroup_invocation_id) sid: u32,
            @builtin(subgroup_size) size: u32) {
    let bg = wid.y * p.groups + wid.x;
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < p.chunks; i += WG) {
        acc = merge(acc, partials[bg * p.chunks + i]);
    }
    let total = workgroup_merge(acc, lid, sid, size);
    if (lid == 0u) {
        let variance = max(total.z / total.x, 0.0);   // biased, as torch
        stats[bg] = vec2<f32>(total.y, inverseSqrt(variance + p.eps));
    }
}
