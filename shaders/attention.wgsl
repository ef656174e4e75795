// Scaled dot-product attention, flash-attention style (online softmax; the Tq × Tk score matrix
// is never stored):
//   dst[b, i, h·D + d] = Σ_j softmax_j(scale · q_i · k_j) · v[b, j, h·D + d]
//   with q_i = q[b, i, q_off + h·D ..][..D], k_j, v_j likewise; only keys j ≤ i when CAUSAL.
//   q, k, v rows have their own strides, so slices of a fused QKV projection are read in place.
//
// One query row per invocation; the keys stream through in tiles of TILE_KEYS: scores s_j, tile
// max m', rescale the running sum l and the accumulator by exp(m − m'), add Σ_j exp(s_j − m')·v_j.
// The query and accumulator are D4 = ⌈D/4⌉ vec4s (zero-padded), D ≤ 512. f32 math throughout.
//
// Split keys: lavapipe (Mesa llvmpipe) ends any invocation after 65535 loop iterations in total
// (LP_MAX_TGSI_LOOP_ITERATIONS, shared by every loop of a shader), which 4096 keys at D = 40
// exceed. So the keys are cut into `splits` ranges of `split_keys`, one per workgroup z-slice:
//   partial:  FINAL = 1 (one split) writes dst directly; otherwise writes (m, l) to part_ml and
//             the unnormalised accumulator to part_acc;
//   combine:  dst = Σ_s e^(m_s − M)·acc_s / Σ_s e^(m_s − M)·l_s,  M = max_s m_s.
// The queries go in chunks of q_rows (one partial/combine pair each) so the partials stay small.
//
// partial_tiled (the GPU variant; head dim ≤ 4·MAX_TILED_D4 = 160): one workgroup = WG
// consecutive queries of one (batch, head, key split). The keys stream through workgroup memory
// in tiles of KV_TILE: the WG invocations load the tile's K and V rows together (each vec4 read
// from memory once per workgroup instead of once per query), then each scores its query against
// the tile and updates its online softmax state as above. Every invocation reaches every
// barrier: queries past the end compute on a clamped row and skip the store; the key range is
// the workgroup's (causal masking per query).

alias T = f32;

override WG: u32 = 64;
override CAUSAL: u32 = 0;
override FINAL: u32 = 1;
// ⌈D/4⌉ as a pipeline constant: constant loop bounds let drivers unroll the head loops and keep
// the query and accumulator in registers. 0 = read it from the params (wide heads, where
// unrolling 128 iterations made lavapipe's shader compile take tens of seconds).
override D4: u32 = 10;
override ALIGNED: u32 = 0;

const MAX_D4: u32 = 128u;         // head dim ≤ 512 (the SD VAE's single head)
const TILE_KEYS: u32 = 32u;       // keys scored before one rescale of the accumulator
const MASKED: f32 = -3.0e38;      // score of a masked key (finite: exp(m − m') stays defined)

// partial_tiled: keys per workgroup-memory tile (≤ MAX_KV_TILE) and its array bounds.
override KV_TILE: u32 = 32;
const MAX_KV_TILE: u32 = 32u;
const MAX_TILED_D4: u32 = 40u;    // head dim ≤ 160
var<workgroup> k_tile: array<vec4<f32>, KV_TILE * D4>;   // (KV_TILE, D4)
var<workgroup> v_tile: array<vec4<f32>, KV_TILE * D4>;

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
    batch: u32,
    splits: u32,
    split_keys: u32,
    q_row0: u32,   // first query of this dispatch (queries are chunked to bound the partials)
    q_rows: u32,   // queries in this dispatch
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
@group(0) @binding(4) var<storage, read_write> dst: array<T>;
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>;   // (S, B, Tq, H)
@group(0) @binding(6) var<storage, read_write> part_acc: array<f32>;        // (S, B, Tq, H, D)
// The same k and v buffers seen as vec4s, read when ALIGNED = 1 (D, strides and offsets all
// multiples of 4): one vector load instead of four guarded scalar loads.
@group(0) @binding(7) var<storage, read> k4: array<vec4<T>>;
@group(0) @binding(8) var<storage, read> v4: array<vec4<T>>;

// Four consecutive elements of `buf` at base + d .. base + d + 3, zero past the head dim.
// (Three copies: WGSL cannot pass storage buffers to functions.)
fn load4_q(base: u32, d: u32) -> vec4<f32> {
    let last = p.d - 1u;
    return vec4<f32>(
        select(0.0, f32(q[base + min(d, last)]), d < p.d),
        select(0.0, f32(q[base + min(d + 1u, last)]), d + 1u < p.d),
        select(0.0, f32(q[base + min(d + 2u, last)]), d + 2u < p.d),
        select(0.0, f32(q[base + min(d + 3u, last)]), d + 3u < p.d));
}

fn load4_k(base: u32, d: u32) -> vec4<f32> {
    let last = p.d - 1u;
    return vec4<f32>(
        select(0.0, f32(k[base + min(d, last)]), d < p.d),
        select(0.0, f32(k[base + min(d + 1u, last)]), d + 1u < p.d),
        select(0.0, f32(k[base + min(d + 2u, last)]), d + 2u < p.d),
        select(0.0, f32(k[base + min(d + 3u, last)]), d + 3u < p.d));
}

fn load4_v(base: u32, d: u32) -> vec4<f32> {
    let last = p.d - 1u;
    return vec4<f32>(
        select(0.0, f32(v[base + min(d, last)]), d < p.d),
        select(0.0, f32(v[base + min(d + 1u, last)]), d + 1u < p.d),
        select(0.0, f32(v[base + min(d + 2u, last)]), d + 2u < p.d),
        select(0.0, f32(v[base + min(d + 3u, last)]), d + 3u < p.d));
}

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i_local = wid.x * WG + lid;
    let i = p.q_row0 + i_local;
    let h = wid.y;
    let b = wid.z % p.batch;
    let split = wid.z / p.batch;
    if (i_local >= p.q_rows || i >= p.tq) { return; }
    let d4 = select((p.d + 3u) / 4u, D4, D4 != 0u);

    var qv: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    let q_base = (b * p.tq + i) * p.q_stride + p.q_off + h * p.d;
    for (var c = 0u; c < d4; c++) {
        qv[c] = load4_q(q_base, c * 4u) * p.scale;
        acc[c] = vec4<f32>(0.0);
    }
    var m = MASKED;   // running max
    var l = 0.0;      // running Σ exp(s − m)

    let key_begin = split * p.split_keys;
    var key_end = min(p.tk, key_begin + p.split_keys);
    if (CAUSAL == 1u) { key_end = min(key_end, i + 1u); }
    let k_head = p.k_off + h * p.d;
    let v_head = p.v_off + h * p.d;
    var scores: array<f32, TILE_KEYS>;
    for (var j0 = key_begin; j0 < key_end; j0 += TILE_KEYS) {
        let nk = min(TILE_KEYS, key_end - j0);
        var tile_max = MASKED;
        for (var j = 0u; j < nk; j++) {
            let key_base = (b * p.tk + j0 + j) * p.k_stride + k_head;
            var s = 0.0;
            if (ALIGNED == 1u) {
                for (var c = 0u; c < d4; c++) { s += dot(qv[c], vec4<f32>(k4[key_base / 4u + c])); }
            } else {
                for (var c = 0u; c < d4; c++) { s += dot(qv[c], load4_k(key_base, c * 4u)); }
            }
            scores[j] = s;
            tile_max = max(tile_max, s);
        }
        let m_new = max(m, tile_max);
        let correction = exp(m - m_new);
        l *= correction;
        for (var c = 0u; c < d4; c++) { acc[c] *= correction; }
        for (var j = 0u; j < nk; j++) {
            let pj = exp(scores[j] - m_new);
            l += pj;
            let value_base = (b * p.tk + j0 + j) * p.v_stride + v_head;
            if (ALIGNED == 1u) {
                for (var c = 0u; c < d4; c++) { acc[c] += pj * vec4<f32>(v4[value_base / 4u + c]); }
            } else {
                for (var c = 0u; c < d4; c++) { acc[c] += pj * load4_v(value_base, c * 4u); }
            }
        }
        m = m_new;
    }

    let row = (b * p.q_rows + i_local) * p.heads + h;   // (b, i_local, h)
    if (FINAL == 1u) {
        let inv = 1.0 / l;
        let o_base = (b * p.tq + i) * p.o_stride + h * p.d;
        for (var c = 0u; c < d4; c++) {
            let r = acc[c] * inv;
            let d = c * 4u;
            if (d < p.d) { dst[o_base + d] = T(r.x); }
            if (d + 1u < p.d) { dst[o_base + d + 1u] = T(r.y); }
            if (d + 2u < p.d) { dst[o_base + d + 2u] = T(r.z); }
            if (d + 3u < p.d) { dst[o_base + d + 3u] = T(r.w); }
        }
    } else {
        let slot = split * p.batch * p.q_rows * p.heads + row;
        part_ml[slot] = vec2<f32>(m, l);
        let a_base = slot * p.d;
        for (var c = 0u; c < d4; c++) {
            let r = acc[c];
            let d = c * 4u;
            if (d < p.d) { part_acc[a_base + d] = r.x; }
            if (d + 1u < p.d) { part_acc[a_base + d + 1u] = r.y; }
            if (d + 2u < p.d) { part_acc[a_base + d + 2u] = r.z; }
            if (d + 3u < p.d) { part_acc[a_base + d + 3u] = r.w; }
        }
    }
}

@compute @workgroup_size(WG)
fn partial_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.y;
    let b = wid.z % p.batch;
    let split = wid.z / p.batch;
    let i_local = wid.x * WG + lid;
    let in_range = i_local < p.q_rows;
    let i = p.q_row0 + min(i_local, p.q_rows - 1u);

    var qv: array<vec4<f32>, MAX_TILED_D4>;
    var acc: array<vec4<f32>, MAX_TILED_D4>;
    let q_base = (b * p.tq + i) * p.q_stride + p.q_off + h * p.d;
    for (var c = 0u; c < D4; c++) {
        qv[c] = load4_q(q_base, c * 4u) * p.scale;
        acc[c] = vec4<f32>(0.0);
    }
    var m = MASKED;
    var l = 0.0;

    // The workgroup's key range (uniform): causal stops after its last query.
    let key_begin = split * p.split_keys;
    var key_end = min(p.tk, key_begin + p.split_keys);
    if (CAUSAL == 1u) {
        let last_query = p.q_row0 + min(wid.x * WG + WG, p.q_rows) - 1u;
        key_end = min(key_end, last_query + 1u);
    }
    let k_head = p.k_off + h * p.d;
    let v_head = p.v_off + h * p.d;
    var scores: array<f32, MAX_KV_TILE>;
    for (var j0 = key_begin; j0 < key_end; j0 += KV_TILE) {
        let nk = min(KV_TILE, key_end - j0);
        // Load the tile together: element e = (key, c).
        for (var e = lid; e < nk * D4; e += WG) {
            let key = j0 + e / D4;
            let c = e % D4;
            let k_base = (b * p.tk + key) * p.k_stride + k_head;
            let v_base = (b * p.tk + key) * p.v_stride + v_head;
            if (ALIGNED == 1u) {
                k_tile[e] = vec4<f32>(k4[k_base / 4u + c]);
                v_tile[e] = vec4<f32>(v4[v_base / 4u + c]);
            } else {
                k_tile[e] = load4_k(k_base, c * 4u);
                v_tile[e] = load4_v(v_base, c * 4u);
            }
        }
        workgroupBarrier();
        var tile_max = MASKED;
        for (var j = 0u; j < nk; j++) {
            var s = 0.0;
            for (var c = 0u; c < D4; c++) { s += dot(qv[c], k_tile[j * D4 + c]); }
            if (CAUSAL == 1u && j0 + j > i) { s = MASKED; }
            scores[j] = s;
            tile_max = max(tile_max, s);
        }
        let m_new = max(m, tile_max);
        let correction = exp(m - m_new);
        l *= correction;
        for (var c = 0u; c < D4; c++) { acc[c] *= correction; }
        for (var j = 0u; j < nk; j++) {
            let pj = select(0.0, exp(scores[j] - m_new), scores[j] > MASKED);
            l += pj;
            for (var c = 0u; c < D4; c++) { acc[c] += pj * v_tile[j * D4 + c]; }
        }
        m = m_new;
        workgroupBarrier();
    }

    if (!in_range) { return; }
    let row = (b * p.q_rows + i_local) * p.heads + h;   // (b, i_local, h)
    if (FINAL == 1u) {
        let inv = 1.0 / l;
        let o_base = (b * p.tq + i) * p.o_stride + h * p.d;
        for (var c = 0u; c < D4; c++) {
            let r = acc[c] * inv;
            let d = c * 4u;
            if (d < p.d) { dst[o_base + d] = T(r.x); }
            if (d + 1u < p.d) { dst[o_base + d + 1u] = T(r.y); }
            if (d + 2u < p.d) { dst[o_base + d + 2u] = T(r.z); }
            if (d + 3u < p.d) { dst[o_base + d + 3u] = T(r.w); }
        }
    } else {
        let slot = split * p.batch * p.q_rows * p.heads + row;
        part_ml[slot] = vec2<f32>(m, l);
        let a_base = slot * p.d;
        for (var c = 0u; c < D4; c++) {
            let r = acc[c];
            let d = c * 4u;
            if (d < p.d) { part_acc[a_base + d] = r.x; }
            if (d + 1u < p.d) { part_acc[a_base + d + 1u] = r.y; }
            if (d + 2u < p.d) { part_acc[a_base + d + 2u] = r.z; }
            if (d + 3u < p.d) { part_acc[a_base + d + 3u] = r.w; }
        }
    }
}

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WG + lid;   // (b, i_local, h, d)
    let rows = p.batch * p.q_rows * p.heads;
    if (e >= rows * p.d) { return; }
    let row = e / p.d;
    let d = e % p.d;
    var big_m = MASKED;
    for (var s = 0u; s < p.splits; s++) { big_m = max(big_m, part_ml[s * rows + row].x); }
    var num = 0.0;
    var den = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        let ml = part_ml[s * rows + row];
        let w = select(0.0, exp(ml.x - big_m), ml.y > 0.0);   // empty (fully masked) splits weigh 0
        num += w * part_acc[(s * rows + row) * p.d + d];
        den += w * ml.y;
    }
    let h = row % p.heads;
    let bi = row / p.heads;   // b · q_rows + i_local
    let b = bi / p.q_rows;
    let i = p.q_row0 + bi % p.q_rows;
    dst[(b * p.tq + i) * p.o_stride + h * p.d + d] = T(num / den);
}
