// Layer normalisation over the last axis (diffusers/transformers nn.LayerNorm):
//   mean = Σ_c x[r, c] / C,  var = Σ_c (x[r, c] − mean)² / C
//   dst[r, c] = (x[r, c] − mean) / √(var + eps) · gamma[c] + beta[c]       src, dst (rows, C)
// Two passes over the row (mean, then centred variance) for accuracy.
// Entry `layer_norm` (GPU targets): one workgroup per row, barrier-tree sums.
// Entry `layer_norm_rows` (CPU targets): one invocation per row, WG rows per workgroup, no
// barriers (each barrier is a coroutine switch per invocation on lavapipe); 3·C loop iterations.

alias T = f32;

override WG: u32 = 128;

struct Params {
    rows: u32,
    c: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read> beta: array<T>;
@group(0) @binding(4) var<storage, read_write> dst: array<T>;

var<workgroup> scratch: array<f32, WG>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    workgroupBarrier();
    scratch[lid] = value;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) { scratch[lid] += scratch[lid + stride]; }
    }
    workgroupBarrier();
    return scratch[0];
}

@compute @workgroup_size(WG)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) { return; }   // uniform per workgroup: barriers stay in uniform control flow
    let base = row * p.c;
    var sum = 0.0;
    for (var c = lid; c < p.c; c += WG) { sum += f32(src[base + c]); }
    let mean = workgroup_sum(lid, sum) / f32(p.c);
    var sq = 0.0;
    for (var c = lid; c < p.c; c += WG) {
        let d = f32(src[base + c]) - mean;
        sq += d * d;
    }
    let rstd = inverseSqrt(workgroup_sum(lid, sq) / f32(p.c) + p.eps);
    for (var c = lid; c < p.c; c += WG) {
        dst[base + c] = T((f32(src[base + c]) - mean) * rstd * f32(gamma[c]) + f32(beta[c]));
    }
}

@compute @workgroup_size(WG)
fn layer_norm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let row = (wid.y * nwg.x + wid.x) * WG + lid;
    if (row >= p.rows) { return; }
    let base = row * p.c;
    var sum = 0.0;
    for (var c = 0u; c < p.c; c++) { sum += f32(src[base + c]); }
    let mean = sum / f32(p.c);
    var sq = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let d = f32(src[base + c]) - mean;
        sq += d * d;
    }
    let rstd = inverseSqrt(sq / f32(p.c) + p.eps);
    for (var c = 0u; c < p.c; c++) {
        dst[base + c] = T((f32(src[base + c]) - mean) * rstd * f32(gamma[c]) + f32(beta[c]));
    }
}
