//! Group norm kernel (split reduction) vs the CPU reference: 32 groups and others, odd pixel
//! counts, batch > 1, fused SiLU, an SD-sized case, and data with a large mean (the variance must
//! not cancel); the statistics reduced with subgroup operations (GPU variant forced on this
//! adapter, which must have SUBGROUP: lavapipe does) over SD's channel counts and spatial sizes;
//! the input read from two tensors split on channels (groups straddling the split) with a
//! per-(batch, channel) addend, against the reference on the concatenated sum and against the
//! unfused graph (concat op / elementwise add, then the norm). Tolerances (absolute,
//! × max(1, output scale)): f32 1e-4, f16 4e-3 (outputs are O(1) after normalisation).

mod common;

use common::*;
use stipple::gpu::{Target, Variant};
use stipple::ops::group_norm::{self, GroupNorm, GroupNormInput, StatsKernel};
use stipple::ops::{concat, elementwise};
use stipple::{DType, Graph, Plan, Tensor};

/// One group-norm case: x (B, HW, C) given as [x₁ ‖ x₂] split at `c1` (None: one tensor),
/// plus a (B, C) addend when `add`.
#[derive(Clone, Copy, Debug)]
struct Case {
    b: usize,
    hw: usize,
    c: usize,
    groups: usize,
    c1: Option<usize>,
    add: bool,
    silu: bool,
    offset: f32,
}

fn case(b: usize, hw: usize, c: usize, groups: usize, silu: bool) -> Case {
    Case {
        b,
        hw,
        c,
        groups,
        c1: None,
        add: false,
        silu,
        offset: 0.0,
    }
}

/// The case's random inputs (as stored in `dtype`), γ, β and the CPU reference output.
struct Data {
    x1: Vec<f32>,
    x2: Vec<f32>,
    add: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    want: Vec<f32>,
}

fn data(k: Case, dtype: DType) -> Data {
    let Case { b, hw, c, .. } = k;
    let c1 = k.c1.unwrap_or(c);
    let mut rng = Rng::new((b * 31 + hw * 7 + c * 3 + c1) as u64);
    let mut random = |n: usize, scale: f32, offset: f32| -> Vec<f32> {
        let v: Vec<f32> = rng.vec(n, scale).iter().map(|x| x + offset).collect();
        quantize(&v, dtype)
    };
    let x1 = random(b * hw * c1, 2.0, k.offset);
    let x2 = random(b * hw * (c - c1), 1.5, k.offset);
    let add = if k.add {
        random(b * c, 1.0, 0.0)
    } else {
        Vec::new()
    };
    let gamma = random(c, 1.0, 0.0);
    let beta = random(c, 0.5, 0.0);
    // The reference normalises the concatenation plus the addend, summed in f32 (as the kernel
    // loads them).
    let mut x = if c1 < c {
        concat::reference(&x1, c1, &x2, c - c1)
    } else {
        x1.clone()
    };
    if k.add {
        for (i, v) in x.iter_mut().enumerate() {
            *v += add[(i / (hw * c)) * c + i % c];
        }
    }
    let want = group_norm::reference(&x, [b, hw, c], k.groups, 1e-5, &gamma, &beta, k.silu);
    Data {
        x1,
        x2,
        add,
        gamma,
        beta,
        want,
    }
}

/// Runs the norm of `k` on a graph for `target`: fused (`fused`: the two sources and the addend
/// read by the norm) or unfused (concat op and elementwise add first). Returns the output and
/// the (shader, entry) of every dispatch.
fn run(
    gpu: &stipple::Gpu,
    target: &Target,
    k: Case,
    d: &Data,
    dtype: DType,
    stats: Option<StatsKernel>,
    fused: bool,
) -> (Vec<f32>, Vec<(String, String)>) {
    let Case { b, hw, c, .. } = k;
    let c1 = k.c1.unwrap_or(c);
    let tensor = |name: &str, v: &[f32]| Tensor::from_f32(gpu, name, &[c], dtype, v).expect(name);
    let norm = GroupNorm {
        groups: k.groups,
        eps: 1e-5,
        weight: tensor("norm.weight", &d.gamma),
        bias: tensor("norm.bias", &d.beta),
    };
    let mut g = Graph::for_target(dtype, target);
    let mut inputs: Vec<(&str, &[f32])> = vec![("x1", &d.x1)];
    let x1 = g.input("x1", &[b, hw, 1, c1]).expect("x1");
    let x2 = (c1 < c).then(|| {
        inputs.push(("x2", &d.x2));
        g.input("x2", &[b, hw, 1, c - c1]).expect("x2")
    });
    let add = k.add.then(|| {
        inputs.push(("add", &d.add));
        g.input("add", &[b, c]).expect("add")
    });
    let input = if fused {
        GroupNormInput {
            x: x1,
            concat: x2,
            channel_add: add,
        }
    } else {
        let mut x = x1;
        if let Some(x2) = x2 {
            x = concat::concat_channels(&mut g, "cat", x, x2).expect("concat");
        }
        if let Some(add) = add {
            let a = g.reshape(add, &[b, 1, 1, c]).expect("reshape");
            x = elementwise::add(&mut g, "add", x, a).expect("add");
        }
        x.into()
    };
    let stats = stats.unwrap_or_else(|| StatsKernel::for_target(target));
    let y = group_norm::group_norm_with(&mut g, "norm", input, &norm, k.silu, stats).expect("norm");
    g.output("out", y).expect("output");
    let kernels = g
        .dispatches()
        .iter()
        .map(|d| (d.kernel.shader.to_string(), d.kernel.entry.to_string()))
        .collect();
    let plan = Plan::new(gpu, g).expect("plan");
    for (name, v) in inputs {
        plan.write_input(name, v).expect("write input");
    }
    plan.run().expect("run");
    (plan.read_output("out").expect("read"), kernels)
}

fn tolerance(dtype: DType, want: &[f32]) -> f32 {
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 };
    atol * max_abs(want).max(1.0)
}

/// Checks `k` against the reference on the default target (cpu kernels).
fn check(gpu: &stipple::Gpu, k: Case, dtype: DType) {
    check_on(gpu, &Target::default(), k, dtype, None);
}

fn check_on(
    gpu: &stipple::Gpu,
    target: &Target,
    k: Case,
    dtype: DType,
    stats: Option<StatsKernel>,
) -> Vec<(String, String)> {
    let d = data(k, dtype);
    let (got, kernels) = run(gpu, target, k, &d, dtype, stats, true);
    assert_close(
        &format!("group_norm {k:?} {} {kernels:?}", dtype.name()),
        &got,
        &d.want,
        tolerance(dtype, &d.want),
        0.0,
    );
    kernels
}

#[test]
fn group_norm_shapes() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(&gpu, case(1, 1, 32, 32, false), dtype);
        check(&gpu, case(2, 15, 64, 32, true), dtype);
        check(&gpu, case(1, 35, 12, 3, false), dtype);
        check(&gpu, case(3, 9, 8, 1, true), dtype);
        check(&gpu, case(2, 1000, 96, 32, true), dtype); // several chunks per group
    }
}

/// The CPU target's barrier-free statistics (`group_norm.wgsl`'s `*_serial` entries) are its default; both
/// reductions are checked on it, at shapes with one chunk, several (finalize runs, the last
/// chunk short) and more summaries than a workgroup holds (flat layout, clamped tail).
#[test]
fn group_norm_serial_and_workgroup_statistics_on_the_cpu_target() {
    let Some(gpu) = gpu() else { return };
    let cpu = Target::default();
    assert_eq!(StatsKernel::for_target(&cpu), StatsKernel::Serial);
    for dtype in dtypes(&gpu) {
        for k in [
            case(1, 1, 32, 32, false),
            case(2, 15, 64, 32, true),
            case(1, 35, 12, 3, false),
            case(3, 9, 8, 1, true),
            case(2, 1000, 96, 32, true), // 64 summaries: one full workgroup
            case(3, 300, 128, 32, false), // 96 summaries: a second, clamped workgroup
            case(1, 4099, 6, 2, true),   // 2730-pixel chunks: 2 per group, the last 1369
            case(1, 20000, 8, 2, false), // 2048-pixel chunks: 10 per group, the last 1568
        ] {
            for stats in [StatsKernel::Serial, StatsKernel::Workgroup] {
                let kernels = check_on(&gpu, &cpu, k, dtype, Some(stats));
                assert!(
                    kernels
                        .iter()
                        .any(|(shader, entry)| shader == stats.shader()
                            && entry == stats.entry("partial_stats")),
                    "{stats:?}: {kernels:?}"
                );
            }
        }
    }
}

#[test]
fn group_norm_large_mean_is_stable() {
    let Some(gpu) = gpu() else { return };
    let k = Case {
        offset: 300.0,
        ..case(2, 777, 64, 32, false)
    };
    check(&gpu, k, DType::F32);
    check_on(
        &gpu,
        &Target::default(),
        k,
        DType::F32,
        Some(StatsKernel::Workgroup),
    );
    if gpu.target.subgroups {
        let target = gpu.target.clone().with_variant(Variant::Gpu);
        check_on(&gpu, &target, k, DType::F32, Some(StatsKernel::Subgroup));
    }
}

#[test]
fn group_norm_sd_sized() {
    // SD1.5 first down block: (2, 64·64, 320), 32 groups, SiLU.
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(&gpu, case(2, 64 * 64, 320, 32, true), dtype);
    }
}

/// The GPU variant's statistics through subgroup operations (`group_norm_subgroup.wgsl`), forced
/// on this adapter: SD's channel counts (320 … 2560, 32 groups: 10 … 80 channels per group) at
/// their latent sizes (1 … 4096 pixels), odd channels per group (3, 5, 7, 15), 1×1 images,
/// batch > 1, several chunks per group (finalize runs), with and without SiLU, f32 and f16.
/// Asserts that the subgroup entries ran.
#[test]
fn group_norm_subgroup_gpu_variant() {
    let Some(gpu) = gpu() else { return };
    assert!(
        gpu.target.subgroups,
        "this adapter lacks SUBGROUP ({}): the subgroup path is untested",
        gpu.target
    );
    let target = gpu.target.clone().with_variant(Variant::Gpu);
    let cases = [
        case(2, 64 * 64, 320, 32, true),
        case(2, 32 * 32, 640, 32, false),
        case(1, 16 * 16, 1280, 32, true),
        case(2, 8 * 8, 2560, 32, true),
        case(2, 8 * 8, 1920, 32, false),
        case(3, 1, 320, 32, true),
        case(1, 1, 2560, 32, false),
        case(2, 37, 96, 32, true),
        case(1, 513, 15, 5, false),
        case(2, 3, 21, 7, true),
        case(1, 2000, 160, 32, true),
        case(4, 5, 32, 32, false),
    ];
    for dtype in dtypes(&gpu) {
        for &k in &cases {
            let kernels = check_on(&gpu, &target, k, dtype, None);
            let ran = |entry: &str| {
                kernels
                    .iter()
                    .any(|(s, e)| s == "group_norm_subgroup" && e == entry)
            };
            assert!(ran("partial_stats"), "{k:?}: {kernels:?}");
            // Several chunks per group: finalize merges them, also with subgroups.
            if k.hw * k.c / k.groups > 8192 {
                assert!(ran("finalize"), "{k:?}: {kernels:?}");
            }
            assert!(
                !kernels
                    .iter()
                    .any(|(s, e)| s == "group_norm" && e != "apply"),
                "{k:?}: {kernels:?}"
            );
        }
    }
}

/// The input read from two tensors split at C1 (diffusers' `torch.cat([hidden, skip], dim=1)`
/// in the UNet's up blocks, never concatenated in memory) and with a (B, C) addend (conv1's
/// output + time_emb_proj): groups straddling the split (1920 = 1280 + 640 in 32 groups of 60;
/// 48 = 32 + 16 in groups of 12), splits on group boundaries, one channel on one side, 1×1
/// images, batch > 1, several chunks; both statistics kernels and the cpu target, f32 and f16.
/// Against the reference on the concatenated sum (tolerances above), and against the unfused
/// graph (concat op, elementwise add, norm): bit for bit without the addend (the same values
/// in the same order), within 1e-6 in f32 with it (f32(x) + f32(add) is the add kernel's sum
/// too) and 2e-2 in f16 (the unfused graph rounds the sum to f16 before normalising; the fused
/// one does not).
#[test]
fn group_norm_reads_a_concatenation_and_a_channel_addend() {
    let Some(gpu) = gpu() else { return };
    let split = |b, hw, c, groups, c1, add, silu| Case {
        c1: Some(c1),
        add,
        ..case(b, hw, c, groups, silu)
    };
    let cases = [
        split(2, 8 * 8, 1920, 32, 1280, false, true),
        split(2, 4 * 4, 1920, 32, 1280, true, true),
        split(1, 16 * 16, 960, 32, 640, true, false),
        split(2, 3 * 5, 48, 4, 32, true, true),
        split(2, 7, 64, 4, 32, false, false),
        split(1, 1, 33, 3, 1, true, true),
        split(3, 1, 33, 3, 32, false, true),
        split(2, 1500, 30, 6, 17, true, true),
        Case {
            add: true,
            ..case(2, 9, 40, 8, true)
        },
    ];
    let gpu_target = gpu.target.clone().with_variant(Variant::Gpu);
    let mut targets = vec![
        (Target::default(), StatsKernel::Serial),
        (Target::default(), StatsKernel::Workgroup),
        (gpu_target.clone(), StatsKernel::Workgroup),
    ];
    if gpu.target.subgroups {
        targets.push((gpu_target, StatsKernel::Subgroup));
    }
    for dtype in dtypes(&gpu) {
        for &k in &cases {
            for (target, stats) in &targets {
                let d = data(k, dtype);
                let what = format!("{k:?} {} {stats:?} {}", dtype.name(), target.variant.name());
                let (fused, _) = run(&gpu, target, k, &d, dtype, Some(*stats), true);
                assert_close(&what, &fused, &d.want, tolerance(dtype, &d.want), 0.0);
                let (unfused, _) = run(&gpu, target, k, &d, dtype, Some(*stats), false);
                let diff = max_abs_diff(&fused, &unfused);
                let allowed = match (k.add, dtype) {
                    (false, _) => 0.0,
                    (true, DType::F32) => 1e-6,
                    (true, DType::F16) => 2e-2,
                };
                assert!(
                    diff <= allowed * max_abs(&d.want).max(1.0),
                    "{what}: fused vs unfused {diff}"
                );
            }
        }
    }
}

#[test]
fn group_norm_rejects_indivisible_channels_and_mismatched_inputs() {
    let Some(gpu) = gpu() else { return };
    let t = Tensor::from_f32(&gpu, "n.weight", &[10], DType::F32, &[1.0; 10]).expect("t");
    let mut g = stipple::Graph::new(DType::F32);
    let x = g.input("x", &[1, 4, 4, 10]).expect("input");
    let norm = GroupNorm {
        groups: 32,
        eps: 1e-5,
        weight: t.clone(),
        bias: t,
    };
    let err = group_norm::group_norm(&mut g, "conv_norm_out", x, &norm, false).unwrap_err();
    assert!(err.to_string().contains("conv_norm_out"), "{err}");

    let norm = GroupNorm { groups: 2, ..norm };
    let skip = g.input("skip", &[1, 4, 5, 6]).expect("skip");
    let input = GroupNormInput {
        x,
        concat: Some(skip),
        channel_add: None,
    };
    let err = group_norm::group_norm(&mut g, "up.norm1", input, &norm, true).unwrap_err();
    assert!(
        err.to_string().contains("up.norm1") && err.to_string().contains("[1, 4, 5, 6]"),
        "{err}"
    );
    let add = g.input("temb", &[1, 12]).expect("temb");
    let input = GroupNormInput {
        x,
        concat: None,
        channel_add: Some(add),
    };
    let err = group_norm::group_norm(&mut g, "norm2", input, &norm, true).unwrap_err();
    assert!(
        err.to_string().contains("norm2") && err.to_string().contains("[1, 12]"),
        "{err}"
    );
}

/// A device without SUBGROUP never compiles the subgroup shader: asking for it is an error
/// naming the shader and the feature (ops only pick it where `Target::subgroups` is true).
#[test]
fn subgroup_statistics_need_the_subgroup_feature() {
    let Some(gpu) = gpu() else { return };
    let mut without = gpu.clone();
    without.kernels = std::sync::Arc::new(stipple::gpu::Kernels::new(
        gpu.features - wgpu::Features::SUBGROUP,
    ));
    let t = Tensor::from_f32(&gpu, "n.weight", &[8], DType::F32, &[1.0; 8]).expect("t");
    let norm = GroupNorm {
        groups: 2,
        eps: 1e-5,
        weight: t.clone(),
        bias: t,
    };
    let mut g = Graph::for_target(DType::F32, &gpu.target.clone().with_variant(Variant::Gpu));
    let x = g.input("x", &[1, 4, 8]).expect("x");
    let y =
        group_norm::group_norm_with(&mut g, "norm", x.into(), &norm, true, StatsKernel::Subgroup)
            .expect("graph");
    g.output("out", y).expect("output");
    let err = match Plan::new(&without, g) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("compiled the subgroup shader without SUBGROUP"),
    };
    assert!(
        err.contains("group_norm_subgroup") && err.contains("SUBGROUP"),
        "{err}"
    );
}
