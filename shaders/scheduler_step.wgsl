// One scheduler step of the GPU denoising loop (src/ops/scheduler_step.rs, docs/gpu-loop.md).
// Per latent element i (n per buffer, NHWC):
//   m       = u + g·(t − u)       u = unet_out[i], t = unet_out[n + i]   (CFG; else m = unet_out[i])
//   v[s]    = state[s·n + i]       s < slots: 0 sample x, 1 noise, 2.. history
//   v[8]    = m
//   out[o]  = Σ_k coef[o][k] · v[k]                                      o < outputs
//   then, all reads done:  state[dst[o]·n + i] = out[o]   (dst 8: x0[i], the preview x̂₀)
//   unet_in[r·n + i] = T(out[unet_src] · unet_scale)     r < unet_copies (next UNet input, ×2 for CFG)
// `to_decoder`: z[i] = T(state[i] · z_scale + z_shift)  (x / scaling_factor + shift_factor, the
// VAE decoder's input). Coefficients are the CPU's f64 ones cast to f32; zero terms are skipped,
// so an unread buffer may hold anything.

alias T = f32;

override WG: u32 = 256;

const MODEL: u32 = 8u;     // v index of the model output
const PREVIEW: u32 = 8u;   // dst index of the preview buffer

struct Params {
    n: u32,            // latent values per buffer
    outputs: u32,      // combinations this step (≤ 8)
    cfg: u32,          // 1: unet_out holds [uncond, text] halves
    guidance: f32,
    read_model: u32,   // 0: no UNet output this dispatch (the loop's first input)
    unet_copies: u32,  // copies of the next UNet input to write (0: none)
    unet_src: u32,     // which output feeds the next UNet input
    unet_scale: f32,   // scale_model_input of the next step
    slots: u32,        // state buffers read (2 + history)
    z_scale: f32,
    z_shift: f32,
    _pad: u32,
    dst: array<vec4<u32>, 2>,    // destination of each output
    coef: array<vec4<f32>, 24>,  // 8 outputs × 12 sources (0..7 slots, 8 model output)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> unet_out: array<T>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read_write> unet_in: array<T>;
@group(0) @binding(4) var<storage, read_write> x0: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<T>;

fn coefficient(o: u32, k: u32) -> f32 {
    return p.coef[o * 3u + k / 4u][k % 4u];
}

@compute @workgroup_size(WG)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= p.n) { return; }
    var v: array<f32, 9>;
    for (var s = 0u; s < p.slots; s++) {
        v[s] = state[s * p.n + i];
    }
    if (p.read_model == 1u) {
        let u = f32(unet_out[i]);
        if (p.cfg == 1u) {
            let t = f32(unet_out[p.n + i]);
            v[MODEL] = u + p.guidance * (t - u);
        } else {
            v[MODEL] = u;
        }
    }
    var out: array<f32, 8>;
    for (var o = 0u; o < p.outputs; o++) {
        var acc = 0.0;
        for (var k = 0u; k < 9u; k++) {
            let c = coefficient(o, k);
            if (c != 0.0) {
                acc += c * v[k];
            }
        }
        out[o] = acc;
    }
    for (var o = 0u; o < p.outputs; o++) {
        let d = p.dst[o / 4u][o % 4u];
        if (d == PREVIEW) {
            x0[i] = out[o];
        } else {
            state[d * p.n + i] = out[o];
        }
    }
    if (p.unet_copies > 0u) {
        let next = T(out[p.unet_src] * p.unet_scale);
        for (var r = 0u; r < p.unet_copies; r++) {
            unet_in[r * p.n + i] = next;
        }
    }
}

@compute @workgroup_size(WG)
fn to_decoder(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= p.n) { return; }
    z[i] = T(state[i] * p.z_scale + p.z_shift);
}
