// Scaled dot-product attention, flash-attention style (online softmax; the Tq × Tk score matrix
// is never stored):
//   dst[b, i, h·D + d] = Σ_j softmax_j(scale · q_i · k_j) · v[b, j, h·D + d]
//   with q_i = q[b, i, q_off + h·D ..][..D], k_j, v_j likewise; j ≤ i only when CAUSAL.
//   q rows have stride q_stride (elements) so fused QKV projections are read in place.
//
// One query row per invocation; a workgroup of WG queries walks the keys in tiles held in
// workgroup memory (f32). Per tile: scores s_j, tile max m', rescale the running sum l and
// accumulator by exp(m − m'), add Σ_j exp(s_j − m')·v_j. Head dims up to 160 (D4 = ⌈D/4⌉ vec4s,
// zero-padded); the tile holds TILE_VEC4 / D4 keys. f32 math and exp throughout.

alias T = f32;

override WG: u32 = 64;
override CAUSAL: u32 = 0;

const MAX_D4: u32 = 40u;          // head dim ≤ 160
const TILE_VEC4: u32 = 640u;      // 10 KiB per tile: K and V tiles take 20 KiB of workgroup memory
const MAX_TILE_KEYS: u32 = 64u;
const MASKED: f32 = -3.0e38;  // score of a masked key (finite, so exp(m − m') stays defined)

struct Params {
    tq: u32,
    tk: u32,
    heads: u32,
    d: u32,
    q_stride: u32, q_off: u32,
    k_stride: u32, k_off: u32,
    v_stride: u32, v_off: u32,
    o_stride: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
@group(0) @binding(4) var<storage, read_write> dst: array<T>;

var<workgroup> k_tile: array<vec4<f32>, TILE_VEC4>;
var<workgroup> v_tile: array<vec4<f32>, TILE_VEC4>;

// Four consecutive head elements starting at `d` (zero past the head dim).
fn load4_k(base: u32, d: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (d + e < p.d) { r[e] = f32(k[base + d + e]); }
    }
    return r;
}

fn load4_v(base: u32, d: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (d + e < p.d) { r[e] = f32(v[base + d + e]); }
    }
    return r;
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.y;
    let b = wid.z;
    let i = wid.x * WG + lid;
    let has_query = i < p.tq;
    let d4 = (p.d + 3u) / 4u;
    let tile_keys = min(TILE_VEC4 / d4, MAX_TILE_KEYS);

    // This invocation's query, pre-scaled.
    var qv: array<vec4<f32>, MAX_D4>;
    let q_base = (b * p.tq + min(i, p.tq - 1u)) * p.q_stride + p.q_off + h * p.d;
    for (var c = 0u; c < d4; c++) {
        var r = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            if (c * 4u + e < p.d) { r[e] = f32(q[q_base + c * 4u + e]); }
        }
        qv[c] = r * p.scale;
    }
    var acc: array<vec4<f32>, MAX_D4>;
    for (var c = 0u; c < d4; c++) { acc[c] = vec4<f32>(0.0); }
    var m = MASKED;    // running max
    var l = 0.0;       // running Σ exp(s − m)

    // Keys past the last query of this workgroup are masked for all of it when causal.
    var key_end = p.tk;
    if (CAUSAL == 1u) { key_end = min(p.tk, wid.x * WG + WG); }

    var scores: array<f32, MAX_TILE_KEYS>;
    for (var j0 = 0u; j0 < key_end; j0 += tile_keys) {
        let nk = min(tile_keys, key_end - j0);
        workgroupBarrier();
        for (var t = lid; t < nk * d4; t += WG) {
            let j = t / d4;
            let c = t % d4;
            let key = b * p.tk + j0 + j;
            k_tile[t] = load4_k(key * p.k_stride + p.k_off + h * p.d, c * 4u);
            v_tile[t] = load4_v(key * p.v_stride + p.v_off + h * p.d, c * 4u);
        }
        workgroupBarrier();
        // Inactive invocations (past the last query) still join the barriers above.
        if (has_query) {
            var tile_max = MASKED;
            for (var j = 0u; j < nk; j++) {
                var s = 0.0;
                for (var c = 0u; c < d4; c++) { s += dot(qv[c], k_tile[j * d4 + c]); }
                if (CAUSAL == 1u && j0 + j > i) { s = MASKED; }
                scores[j] = s;
                tile_max = max(tile_max, s);
            }
            let m_new = max(m, tile_max);
            let correction = exp(m - m_new);
            l *= correction;
            for (var c = 0u; c < d4; c++) { acc[c] *= correction; }
            for (var j = 0u; j < nk; j++) {
                let pj = select(0.0, exp(scores[j] - m_new), scores[j] > MASKED);
                l += pj;
                for (var c = 0u; c < d4; c++) { acc[c] += pj * v_tile[j * d4 + c]; }
            }
            m = m_new;
        }
    }
    if (!has_query) { return; }
    let inv = 1.0 / l;
    let o_base = (b * p.tq + i) * p.o_stride + h * p.d;
    for (var c = 0u; c < d4; c++) {
        let r = acc[c] * inv;
        for (var e = 0u; e < 4u; e++) {
            if (c * 4u + e < p.d) { dst[o_base + c * 4u + e] = T(r[e]); }
        }
    }
}
