// Sinusoidal timestep embedding (diffusers embeddings.get_timestep_embedding):
//   half = dim / 2,  freq_i = exp(-ln(max_period) · i / (half - shift)),  a_i = scale · t_b · freq_i
//   dst[b, :] = [sin(a_0..half), cos(a_0..half)]   or, with flip_sin_to_cos, [cos(..), sin(..)];
//   an odd dim gets a trailing zero.        t (B) → dst (B, dim)
// sin/cos are range-reduced by hand (Cody–Waite with 2π split in two): the builtins are only
// accurate near [-π, π] on many drivers, and timesteps reach 999.

alias T = f32;

override WG: u32 = 256;

struct Params {
    n: u32,            // B · dim
    dim: u32,
    flip_sin_to_cos: u32,
    shift: f32,        // downscale_freq_shift
    log_max_period: f32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> timesteps: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

const TWO_PI_HI: f32 = 6.28125;                 // exact in 8 bits
const TWO_PI_LO: f32 = 0.0019353071795864769;   // 2π − TWO_PI_HI
const INV_TWO_PI: f32 = 0.15915494309189535;

fn reduce_angle(a: f32) -> f32 {
    let k = round(a * INV_TWO_PI);
    return (a - k * TWO_PI_HI) - k * TWO_PI_LO;
}

@compute @workgroup_size(WG)
fn timestep_embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= p.n) { return; }
    let b = i / p.dim;
    let j = i % p.dim;
    let half = p.dim / 2u;
    if (j >= 2u * half) {
        dst[i] = T(0.0);
        return;
    }
    let k = j % half;
    let first_half = j < half;
    let freq = exp(-p.log_max_period * f32(k) / (f32(half) - p.shift));
    let a = reduce_angle(p.scale * timesteps[b] * freq);
    // Without flip: first half sin, second cos. With flip: first half cos, second sin.
    let use_sin = first_half != (p.flip_sin_to_cos != 0u);
    dst[i] = T(select(cos(a), sin(a), use_sin));
}
