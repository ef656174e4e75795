// Scaled dot-product attention for CPU adapters (lavapipe), flash style (online softmax; the
// Tq × Tk score matrix is never stored):
//   dst[b, i, h·D + d] = Σ_j softmax_j(scale · q_i · k_j) · v[b, j, h·D + d]
//   with q_i = q[b, i, q_off + h·D ..][..D], k_j, v_j likewise; only keys j ≤ i when CAUSAL.
// It writes what attention.wgsl's `partial` writes (FINAL = 1: dst; otherwise (m, l) in part_ml
// and the unnormalised accumulator in part_acc, merged by attention.wgsl's `combine`).
//
// One workgroup = one subgroup of LANES = 8 invocations (lavapipe's SIMD width) for one
// (batch, head, key split). Lane `lane` owns NQ queries: q_block + qi·LANES + lane, qi < NQ.
// The keys stream through in tiles of LANES: lane `lane` loads the K and V rows of key
// j0 + lane, and every lane reads key j0 + j's values with subgroupShuffle(·, j). Per tile and
// query: scores s_j (j < 8), tile max m', rescale the running sum l and the accumulator by
// exp(m − m'), add Σ_j exp(s_j − m')·v_j. f32 math throughout.
//
// Why this shape (docs/kernels.md): Mesa 22.3's llvmpipe turns every storage load or store
// inside a loop or branch into a loop over the 8 lanes (one scalar access per lane and
// component), uniform address or not; outside all control flow a uniform address is one scalar
// access. A shuffle with a constant lane is one vector permute. So inside the key loop each lane
// loads a different row (each per-lane load brings 8 useful rows) and the NQ queries of a lane
// reuse every shuffled value NQ times. Every loop but the key loop has a constant trip count
// equal to the length of an array it indexes, so Mesa unrolls it (a private array indexed by a
// loop counter would become gathers and scatters); the vec4s of a head-dim chunk are written
// out, so the loop iterations per tile stay few (lavapipe ends an invocation after 65535).
// Guards like `c < D4` fold away once the loops are unrolled. Each chunk's K (V) loads come
// right before its scores (P·V): they cut the straight-line code, whose length drives the
// compile time. Every buffer is accessed as vec4s (D, row widths and offsets multiples of 4).
// Queries past the end are clamped to the last one (their duplicate stores write equal values);
// keys past the end are clamped for loading and weigh 0. The module is created without wgpu's
// runtime checks (gpu::kernels::TRUSTED): its loop bounding would keep Mesa from unrolling.

alias T = f32;

const LANES: u32 = 8u;        // subgroup size = workgroup size = keys per tile
const MAX_NQ: u32 = 16u;      // queries per lane, at most
const CH: u32 = 8u;           // vec4s per head-dim chunk (written out in the helpers below)
const MAX_CHUNKS: u32 = 16u;  // head dim ≤ 4 · CH · MAX_CHUNKS = 512
const MASKED: f32 = -3.0e38;  // score of a masked key (finite: exp(m − m') stays defined)

override NQ: u32 = 8;         // queries per lane (≤ MAX_NQ)
override D4: u32 = 10;        // ⌈D/4⌉ (≤ CH · MAX_CHUNKS)
override CAUSAL: u32 = 0;
override FINAL: u32 = 1;

alias Chunk = array<vec4<f32>, CH>;
alias Head = array<Chunk, MAX_CHUNKS>;   // one head row (the chunks past D unused)
alias Keys8 = array<vec4<f32>, 2>;       // one value per key of a tile (keys 0..3, 4..7)

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

// Every buffer is read and written as vec4s: D and every row stride and column offset are
// multiples of 4 (the op picks another kernel otherwise).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<T>>;
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>;   // (S, B, Tq, H)
@group(0) @binding(6) var<storage, read_write> part_acc: array<vec4<f32>>;  // (S, B, Tq, H, D)
@group(0) @binding(7) var<storage, read> k4: array<vec4<T>>;
@group(0) @binding(8) var<storage, read> v4: array<vec4<T>>;
@group(0) @binding(9) var<storage, read> q4: array<vec4<T>>;

const Q: u32 = 0u;
const K: u32 = 1u;
const V: u32 = 2u;

// Elements 4c .. 4c + 3 of the row at `base` of q, k or v (`which`).
fn load4(which: u32, base: u32, c: u32) -> vec4<f32> {
    let i = base / 4u + c;
    if (which == Q) { return vec4<f32>(q4[i]); }
    if (which == K) { return vec4<f32>(k4[i]); }
    return vec4<f32>(v4[i]);
}

// The vec4s c .. c + CH − 1 (those below D4) of the row at `base` of q, k or v.
fn load_chunk(which: u32, base: u32, c: u32) -> Chunk {
    var r: Chunk;
    if (c < D4) { r[0] = load4(which, base, c); }
    if (c + 1u < D4) { r[1] = load4(which, base, c + 1u); }
    if (c + 2u < D4) { r[2] = load4(which, base, c + 2u); }
    if (c + 3u < D4) { r[3] = load4(which, base, c + 3u); }
    if (c + 4u < D4) { r[4] = load4(which, base, c + 4u); }
    if (c + 5u < D4) { r[5] = load4(which, base, c + 5u); }
    if (c + 6u < D4) { r[6] = load4(which, base, c + 6u); }
    if (c + 7u < D4) { r[7] = load4(which, base, c + 7u); }
    return r;
}

// s_j += qc · (key j's kc) for the tile's 8 keys; key j's kc is lane j's.
fn score8(s: Keys8, qc: vec4<f32>, kc: vec4<f32>) -> Keys8 {
    return Keys8(
        s[0] + vec4<f32>(dot(qc, subgroupShuffle(kc, 0u)), dot(qc, subgroupShuffle(kc, 1u)),
                         dot(qc, subgroupShuffle(kc, 2u)), dot(qc, subgroupShuffle(kc, 3u))),
        s[1] + vec4<f32>(dot(qc, subgroupShuffle(kc, 4u)), dot(qc, subgroupShuffle(kc, 5u)),
                         dot(qc, subgroupShuffle(kc, 6u)), dot(qc, subgroupShuffle(kc, 7u))));
}

// score8 over the vec4s c .. c + CH − 1 of a chunk (those below D4).
fn score_chunk(s: Keys8, qc: Chunk, kc: Chunk, c: u32) -> Keys8 {
    var r = s;
    if (c < D4) { r = score8(r, qc[0], kc[0]); }
    if (c + 1u < D4) { r = score8(r, qc[1], kc[1]); }
    if (c + 2u < D4) { r = score8(r, qc[2], kc[2]); }
    if (c + 3u < D4) { r = score8(r, qc[3], kc[3]); }
    if (c + 4u < D4) { r = score8(r, qc[4], kc[4]); }
    if (c + 5u < D4) { r = score8(r, qc[5], kc[5]); }
    if (c + 6u < D4) { r = score8(r, qc[6], kc[6]); }
    if (c + 7u < D4) { r = score8(r, qc[7], kc[7]); }
    return r;
}

// a · corr + Σ_j p_j · (key j's vc).
fn pv8(a: vec4<f32>, corr: f32, pj: Keys8, vc: vec4<f32>) -> vec4<f32> {
    let lo = (pj[0].x * subgroupShuffle(vc, 0u) + pj[0].y * subgroupShuffle(vc, 1u))
           + (pj[0].z * subgroupShuffle(vc, 2u) + pj[0].w * subgroupShuffle(vc, 3u));
    let hi = (pj[1].x * subgroupShuffle(vc, 4u) + pj[1].y * subgroupShuffle(vc, 5u))
           + (pj[1].z * subgroupShuffle(vc, 6u) + pj[1].w * subgroupShuffle(vc, 7u));
    return a * corr + (lo + hi);
}

// pv8 over the vec4s c .. c + CH − 1 of a chunk (those below D4).
fn pv_chunk(a: Chunk, corr: f32, pj: Keys8, vc: Chunk, c: u32) -> Chunk {
    var r = a;
    if (c < D4) { r[0] = pv8(a[0], corr, pj, vc[0]); }
    if (c + 1u < D4) { r[1] = pv8(a[1], corr, pj, vc[1]); }
    if (c + 2u < D4) { r[2] = pv8(a[2], corr, pj, vc[2]); }
    if (c + 3u < D4) { r[3] = pv8(a[3], corr, pj, vc[3]); }
    if (c + 4u < D4) { r[4] = pv8(a[4], corr, pj, vc[4]); }
    if (c + 5u < D4) { r[5] = pv8(a[5], corr, pj, vc[5]); }
    if (c + 6u < D4) { r[6] = pv8(a[6], corr, pj, vc[6]); }
    if (c + 7u < D4) { r[7] = pv8(a[7], corr, pj, vc[7]); }
    return r;
}

// Writes r as elements 4c .. 4c + 3 of the row at `base` of dst (FINAL) or part_acc.
fn store4(base: u32, c: u32, r: vec4<f32>) {
    let i = base / 4u + c;
    if (FINAL == 1u) { dst[i] = vec4<T>(r); } else { part_acc[i] = r; }
}

// The vec4s c .. c + CH − 1 of a chunk (those below D4), times `scale`, written at 4c .. of
// the row at `base`.
fn store_chunk(base: u32, c: u32, a: Chunk, scale: f32) {
    if (c < D4) { store4(base, c, a[0] * scale); }
    if (c + 1u < D4) { store4(base, c + 1u, a[1] * scale); }
    if (c + 2u < D4) { store4(base, c + 2u, a[2] * scale); }
    if (c + 3u < D4) { store4(base, c + 3u, a[3] * scale); }
    if (c + 4u < D4) { store4(base, c + 4u, a[4] * scale); }
    if (c + 5u < D4) { store4(base, c + 5u, a[5] * scale); }
    if (c + 6u < D4) { store4(base, c + 6u, a[6] * scale); }
    if (c + 7u < D4) { store4(base, c + 7u, a[7] * scale); }
}

@compute @workgroup_size(8)
fn partial(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(subgroup_invocation_id) lane: u32) {
    // Parameters read once (a uniform read inside a loop is a gather on lavapipe).
    let tq = p.tq;
    let tk = p.tk;
    let hd = p.d;
    let batch = p.batch;
    let q_rows = p.q_rows;
    let q_row0 = p.q_row0;
    let scale = p.scale;
    let h = wid.y;
    let b = wid.z % batch;
    let split = wid.z / batch;
    let q_block = wid.x * (LANES * NQ);

    var mine: array<u32, MAX_NQ>;   // query index of each of this lane's queries
    var qv: array<Head, MAX_NQ>;
    var acc: array<Head, MAX_NQ>;
    var m: array<f32, MAX_NQ>;
    var l: array<f32, MAX_NQ>;
    for (var qi = 0u; qi < MAX_NQ; qi++) {
        if (qi < NQ) {
            mine[qi] = q_row0 + min(q_block + qi * LANES + lane, q_rows - 1u);
            let base = (b * tq + mine[qi]) * p.q_stride + p.q_off + h * hd;
            for (var ch = 0u; ch < MAX_CHUNKS; ch++) {
                if (ch * CH < D4) { qv[qi][ch] = load_chunk(Q, base, ch * CH); }
            }
            m[qi] = MASKED;
            l[qi] = 0.0;
        }
    }

    let key_begin = split * p.split_keys;
    var key_end = min(tk, key_begin + p.split_keys);
    if (CAUSAL == 1u) {
        // The workgroup's last query + 1.
        key_end = min(key_end, q_row0 + min(q_block + LANES * NQ, q_rows));
    }
    let k_head = p.k_off + h * hd;
    let v_head = p.v_off + h * hd;
    let k_stride = p.k_stride;
    let v_stride = p.v_stride;
    let lanes0 = vec4<u32>(0u, 1u, 2u, 3u);
    let lanes1 = vec4<u32>(4u, 5u, 6u, 7u);
    for (var j0 = key_begin; j0 < key_end; j0 += LANES) {
        // This lane's key of the tile (clamped: keys past the end weigh 0 below).
        let key = min(j0 + lane, key_end - 1u);
        let kb = (b * tk + key) * k_stride + k_head;
        let vb = (b * tk + key) * v_stride + v_head;
        // Scores, a head-dim chunk at a time (each chunk's loads also end a block of straight-line
        // code: LLVM's instruction selection slows down sharply on very long blocks).
        var s: array<Keys8, MAX_NQ>;
        for (var ch = 0u; ch < MAX_CHUNKS; ch++) {
            if (ch * CH < D4) {
                let kt = load_chunk(K, kb, ch * CH);
                for (var qi = 0u; qi < MAX_NQ; qi++) {
                    if (qi < NQ) { s[qi] = score_chunk(s[qi], qv[qi][ch], kt, ch * CH); }
                }
            }
        }

        // Online softmax per query.
        let in0 = (lanes0 + j0) < vec4<u32>(key_end);
        let in1 = (lanes1 + j0) < vec4<u32>(key_end);
        var pr: array<Keys8, MAX_NQ>;
        var corr: array<f32, MAX_NQ>;
        for (var qi = 0u; qi < MAX_NQ; qi++) {
            if (qi < NQ) {
                var ok0 = in0;
                var ok1 = in1;
                if (CAUSAL == 1u) {
                    ok0 = ok0 & ((lanes0 + j0) <= vec4<u32>(mine[qi]));
                    ok1 = ok1 & ((lanes1 + j0) <= vec4<u32>(mine[qi]));
                }
                let s0 = select(vec4<f32>(MASKED), s[qi][0] * scale, ok0);
                let s1 = select(vec4<f32>(MASKED), s[qi][1] * scale, ok1);
                let t = max(s0, s1);
                let m_new = max(m[qi], max(max(t.x, t.y), max(t.z, t.w)));
                corr[qi] = exp(m[qi] - m_new);
                let p0 = select(vec4<f32>(0.0), exp(s0 - m_new), ok0);
                let p1 = select(vec4<f32>(0.0), exp(s1 - m_new), ok1);
                l[qi] = l[qi] * corr[qi] + dot(p0 + p1, vec4<f32>(1.0));
                m[qi] = m_new;
                pr[qi] = Keys8(p0, p1);
            }
        }

        // acc = acc · corr + P·V, a head-dim chunk at a time.
        for (var ch = 0u; ch < MAX_CHUNKS; ch++) {
            if (ch * CH < D4) {
                let vt = load_chunk(V, vb, ch * CH);
                for (var qi = 0u; qi < MAX_NQ; qi++) {
                    if (qi < NQ) {
                        acc[qi][ch] = pv_chunk(acc[qi][ch], corr[qi], pr[qi], vt, ch * CH);
                    }
                }
            }
        }
    }

    // Results.
    for (var qi = 0u; qi < MAX_NQ; qi++) {
        if (qi < NQ) {
            let inv = select(1.0 / l[qi], 1.0, FINAL == 0u);
            var base: u32;
            if (FINAL == 1u) {
                base = (b * tq + mine[qi]) * p.o_stride + h * hd;
            } else {
                let i_local = mine[qi] - q_row0;
                let slot = (split * batch * q_rows + b * q_rows + i_local) * p.heads + h;
                part_ml[slot] = vec2<f32>(m[qi], l[qi]);
                base = slot * hd;
            }
            for (var ch = 0u; ch < MAX_CHUNKS; ch++) {
                if (ch * CH < D4) { store_chunk(base, ch * CH, acc[qi][ch], inv); }
            }
        }
    }
}
