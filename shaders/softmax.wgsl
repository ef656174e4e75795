// Softmax over the last axis, with a scale on the logits:
//   dst[r, c] = exp(s·x[r, c] − max_c s·x[r, c]) / Σ_c exp(s·x[r, c] − max)     src, dst (rows, C)
// One workgroup per row: max, then sum of exponentials, then the normalised write. f32 math.

alias T = f32;

override WG: u32 = 128;

struct Params {
    rows: u32,
    c: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

var<workgroup> scratch: array<f32, WG>;

fn workgroup_reduce(lid: u32, value: f32, is_max: bool) -> f32 {
    workgroupBarrier();
    scratch[lid] = value;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            let other = scratch[lid + stride];
            scratch[lid] = select(scratch[lid] + other, max(scratch[lid], other), is_max);
        }
    }
    workgroupBarrier();
    return scratch[0];
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) { return; }   // uniform per workgroup
    let base = row * p.c;
    var m = -3.0e38;
    for (var c = lid; c < p.c; c += WG) { m = max(m, p.scale * f32(src[base + c])); }
    let row_max = workgroup_reduce(lid, m, true);
    var sum = 0.0;
    for (var c = lid; c < p.c; c += WG) { sum += exp(p.scale * f32(src[base + c]) - row_max); }
    let inv = 1.0 / workgroup_reduce(lid, sum, false);
    for (var c = lid; c < p.c; c += WG) {
        dst[base + c] = T(exp(p.scale * f32(src[base + c]) - row_max) * inv);
    }
}
