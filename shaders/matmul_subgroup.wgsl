// Linear layer for CPU adapters (lavapipe), with fused bias, activation and residual:
//   dst[m, n] = act( Σ_k src[m, k] · w[k, n] + bias[n] ) + residual[m, n]
//   src (M, K) row-major, read as vec4 (K a multiple of 4); dst (M, N); w (K, NP) as vec4
//   (NP = N rounded up to 8, zero columns), laid out (params.blocked) as
//     Packed:  w[k, n] at k·NP + n, the layout of matmul.wgsl;
//     Blocked: columns in blocks of 32, block b = columns 32b.. a (K, width_b) matrix of its
//              own (width_b = min(32, NP − 32b)) at 32b·K: w[k, n] at 32b·K + k·width_b + n − 32b.
//   act (override ACT): 0 none, 1 SiLU, 2 GELU (erf), 3 GELU (tanh), 4 quick-GELU x·σ(1.702x).
//   Bias/residual are read when the params say so; otherwise the op binds `src` in their place.
//
// Shaped for llvmpipe (docs/kernels.md, "Subgroup GEMM"): inside a loop every storage load
// becomes a loop over the 8 SIMD lanes, whether its address is uniform or not, so what counts
// is how many useful values each load brings. A workgroup is one subgroup of 8 lanes and
// computes ROWS·8 rows × 32 columns:
//   - each lane owns ROWS rows (4 or 8) × 32 columns: 8 chunks of 4 columns, ROWS·32
//     accumulators as vec4s (Tile = 4 rows × 4 columns);
//   - per step of 4 k, a lane loads one vec4 (4 k values) of each of its rows, and one vec4 of
//     each of the 4 weight rows k..k+3 at its own chunk (lane c: columns c0 + 4c..c0 + 4c + 3);
//     subgroupBroadcast hands every lane the weights of every chunk (8 lanes × 4 vec4 = the
//     4 × 32 weights of the step), so no lane loads a weight another lane loads.
// Needs subgroups of at least 8 invocations (one workgroup = one subgroup).
// Loop iterations per invocation: K/4 + 8·(1 + 4·ROWS) (the ops keep this under the loop budget).

alias T = f32;

override ACT: u32 = 0;
override ROWS: u32 = 8u;   // rows per lane: 4 or 8

const CHUNKS: u32 = 8u;    // 4-column chunks per lane (one per lane of the subgroup)

struct Params {
    m: u32,
    n: u32,
    k: u32,
    np4: u32,          // NP / 4: vec4 columns of w
    has_bias: u32,
    has_residual: u32,
    blocked: u32,      // 1: w is in the Blocked layout
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> residual: array<T>;
@group(0) @binding(5) var<storage, read_write> dst: array<T>;

// Four vec4s: a tile of 4 rows × 4 columns, 4 rows × 4 k of src, or 4 k × 4 columns of w.
struct Quad {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// t += s · w: 4 rows × 4 columns over 4 k (s: rows × k, w: k × columns).
fn fma_quad(t: Quad, s: Quad, w: Quad) -> Quad {
    var o = t;
    o.r0 += s.r0.x * w.r0; o.r0 += s.r0.y * w.r1; o.r0 += s.r0.z * w.r2; o.r0 += s.r0.w * w.r3;
    o.r1 += s.r1.x * w.r0; o.r1 += s.r1.y * w.r1; o.r1 += s.r1.z * w.r2; o.r1 += s.r1.w * w.r3;
    o.r2 += s.r2.x * w.r0; o.r2 += s.r2.y * w.r1; o.r2 += s.r2.z * w.r2; o.r2 += s.r2.w * w.r3;
    o.r3 += s.r3.x * w.r0; o.r3 += s.r3.y * w.r1; o.r3 += s.r3.z * w.r2; o.r3 += s.r3.w * w.r3;
    return o;
}

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

// Columns 4·c4 .. 4·c4 + 3 of one row (those < N, rows < M): epilogue and store.
fn store4(row: u32, c4: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    let out_row = row * p.n;
    for (var j = 0u; j < 4u; j++) {
        let col = c4 * 4u + j;
        if (col < p.n) {
            var x = v[j];
            if (p.has_bias != 0u) { x += f32(bias[col]); }
            x = activate(x);
            if (p.has_residual != 0u) { x += f32(residual[out_row + col]); }
            dst[out_row + col] = T(x);
        }
    }
}

fn store_quad(row0: u32, c4: u32, t: Quad) {
    store4(row0, c4, t.r0);
    store4(row0 + 1u, c4, t.r1);
    store4(row0 + 2u, c4, t.r2);
    store4(row0 + 3u, c4, t.r3);
}

// 4 k values of 4 rows at vec4 index k4 (row offsets x0..x3 in vec4s).
fn load_rows(x0: u32, x1: u32, x2: u32, x3: u32, k4: u32) -> Quad {
    return Quad(vec4<f32>(src[x0 + k4]), vec4<f32>(src[x1 + k4]),
                vec4<f32>(src[x2 + k4]), vec4<f32>(src[x3 + k4]));
}

// The weights of chunk c (4 k × 4 columns) from the lanes' loads l0..l3 (k row 0..3, lane c).
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

// Workgroup (x, y + 65535·z) = (column block of 32, row block of 8·ROWS rows); rows beyond
// 65535 workgroups spill into z.
@compute @workgroup_size(8)
fn linear_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(subgroup_invocation_id) lane: u32) {
    let row0 = (wid.y + wid.z * 65535u) * (8u * ROWS) + lane * ROWS;   // this lane's rows
    let c0 = wid.x * CHUNKS;                                             // first vec4 column
    // Rows past M re-read the last row and are not stored.
    let last = p.m - 1u;
    let k4s = p.k / 4u;
    let x0 = min(row0, last) * k4s;
    let x1 = min(row0 + 1u, last) * k4s;
    let x2 = min(row0 + 2u, last) * k4s;
    let x3 = min(row0 + 3u, last) * k4s;
    let x4 = min(row0 + 4u, last) * k4s;
    let x5 = min(row0 + 5u, last) * k4s;
    let x6 = min(row0 + 6u, last) * k4s;
    let x7 = min(row0 + 7u, last) * k4s;
    // This lane's weight column and the vec4s between k rows: NP/4 (Packed), or the width of
    // this workgroup's block, whose (K, width) matrix starts at c0·K vec4s (Blocked). Columns
    // past NP re-read the last one and are not stored.
    let blocked = p.blocked != 0u;
    let ws = select(p.np4, min(CHUNKS, p.np4 - c0), blocked);
    var wi = select(min(c0 + lane, p.np4 - 1u), c0 * p.k + min(lane, ws - 1u), blocked);

    // Chunk c's accumulators: rows 0..3 in a_c, rows 4..7 in b_c (ROWS = 8).
    var a0 = Quad(); var a1 = Quad(); var a2 = Quad(); var a3 = Quad();
    var a4 = Quad(); var a5 = Quad(); var a6 = Quad(); var a7 = Quad();
    var b0 = Quad(); var b1 = Quad(); var b2 = Quad(); var b3 = Quad();
    var b4 = Quad(); var b5 = Quad(); var b6 = Quad(); var b7 = Quad();
    for (var k4 = 0u; k4 < k4s; k4++) {
        let lo = load_rows(x0, x1, x2, x3, k4);          // (4 rows, 4 k)
        var hi = Quad();
        if (ROWS == 8u) { hi = load_rows(x4, x5, x6, x7, k4); }
        let l0 = vec4<f32>(w[wi]);                        // (4 k, 4 columns) of chunk `lane`
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
    // Store chunk 0, then shift the chunks down: one store call in the code instead of eight
    // (eight inlined copies of the epilogue made lavapipe's compile take seconds).
    for (var c = 0u; c < CHUNKS; c++) {
        if (c0 + c < p.np4) {
            store_quad(row0, c0 + c, a0);
            if (ROWS == 8u) { store_quad(row0 + 4u, c0 + c, b0); }
        }
        a0 = a1; a1 = a2; a2 = a3; a3 = a4; a4 = a5; a5 = a6; a6 = a7;
        b0 = b1; b1 = b2; b2 = b3; b3 = b4; b4 = b5; b5 = b6; b6 = b7;
    }
}
