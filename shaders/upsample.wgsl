// Nearest-neighbour 2× upsampling, NHWC:
//   dst[b, y, x, c] = src[b, y / 2, x / 2, c]     src (B, H, W, C) → dst (B, 2H, 2W, C)
// (diffusers Upsample2D: F.interpolate(scale_factor=2.0, mode="nearest"))

alias T = f32;

override WG: u32 = 256;

struct Params {
    n: u32,  // output elements
    h: u32,  // input height
    w: u32,  // input width
    c: u32,  // channels
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(WG)
fn upsample_nearest2x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= p.n) { return; }
    let c = i % p.c;
    let pixel = i / p.c;
    let ow = 2u * p.w;
    let ox = pixel % ow;
    let oy = (pixel / ow) % (2u * p.h);
    let b = pixel / (ow * 2u * p.h);
    dst[i] = src[((b * p.h + oy / 2u) * p.w + ox / 2u) * p.c + c];
}
