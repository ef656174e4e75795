// Concatenation along the last (channel) axis, NHWC or (rows, C):
//   dst[r, 0 .. ca]       = a[r, :]
//   dst[r, ca .. ca + cb] = b[r, :]          a (rows, ca), b (rows, cb) → dst (rows, ca + cb)
// (diffusers up blocks: torch.cat([hidden_states, res_hidden_states], dim=1) in NCHW)

alias T = f32;

override WG: u32 = 256;

struct Params {
    n: u32,   // output elements
    ca: u32,  // channels of a
    cb: u32,  // channels of b
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(WG)
fn concat_channels(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= p.n) { return; }
    let c_out = p.ca + p.cb;
    let row = i / c_out;
    let c = i % c_out;
    if (c < p.ca) {
        dst[i] = a[row * p.ca + c];
    } else {
        dst[i] = b[row * p.cb + (c - p.ca)];
    }
}
