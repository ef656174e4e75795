//! Linear layer kernel vs the CPU reference: odd sizes, sizes off every tile, fused bias /
//! activation / residual, batch > 1, an SD-sized projection, both entries (CPU and GPU targets); f32 and f16.
//! Tolerances: f32 atol 1e-4·scale (sums of up to 7600 products); f16 (inputs rounded to f16
//! for the reference, output stored in f16) 4e-3·scale.

mod common;

use common::*;
use stipple::gpu::Target;
use stipple::ops::elementwise::Activation;
use stipple::ops::matmul::{self, LinearOptions, LinearWeight};
use stipple::ops::{matmul_subgroup, WeightLayout};
use stipple::DType;

struct Case {
    batch: usize,
    rows: usize,
    k: usize,
    n: usize,
    bias: bool,
    act: Activation,
    residual: bool,
}

/// A case: batch, rows per batch, K, N, bias, activation, residual.
fn case(
    batch: usize,
    rows: usize,
    k: usize,
    n: usize,
    bias: bool,
    act: Activation,
    residual: bool,
) -> Case {
    Case {
        batch,
        rows,
        k,
        n,
        bias,
        act,
        residual,
    }
}

/// Every case in f32 and f16 (seeds from `seed`) and each of `layouts` through `target`,
/// which must pick `shader`.
fn check_all(
    gpu: &stipple::Gpu,
    target: &Target,
    cases: &[Case],
    seed: u64,
    (shader, layouts): (&str, &[WeightLayout]),
) {
    for_each_variant(gpu, cases, layouts, seed, |c, variant, seed| {
        check_for(gpu, target, c, variant, seed, shader)
    });
}

fn check(case: &Case, dtype: DType, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let packed = (dtype, WeightLayout::Packed);
    check_for(&gpu, &Target::default(), case, packed, seed, "matmul");
}

/// `case` in a graph built for `target`, which must pick the kernel of `shader` (a test of
/// another kernel would pass silently otherwise).
fn check_for(
    gpu: &stipple::Gpu,
    target: &Target,
    case: &Case,
    (dtype, layout): (DType, WeightLayout),
    seed: u64,
    shader: &str,
) {
    let mut rng = Rng::new(seed);
    let &Case {
        batch,
        rows,
        k,
        n,
        bias,
        act,
        residual,
    } = case;
    let x = quantize(&rng.vec(batch * rows * k, 1.0), dtype);
    let w = quantize(&rng.vec(n * k, 1.0 / (k as f32).sqrt()), dtype);
    let b = quantize(&rng.vec(n, 0.5), dtype);
    let r = quantize(&rng.vec(batch * rows * n, 1.0), dtype);
    let bias_data = bias.then_some(&b[..]);
    let weight = LinearWeight::upload_laid_out(gpu, "proj", &w, bias_data, [n, k], dtype, layout)
        .expect("upload");
    let want = matmul::reference(
        &x,
        &w,
        bias.then_some(&b[..]),
        residual.then_some(&r[..]),
        act,
        n,
        k,
    );
    let (xs, rs) = ([batch, rows, k], [batch, rows, n]);
    let inputs: Vec<(&str, &[usize], &[f32])> = vec![("x", &xs, &x), ("r", &rs, &r)];
    let got = run_graph_for(gpu, target, dtype, &inputs, |g, ids| {
        let opts = LinearOptions {
            activation: act,
            residual: residual.then_some(ids[1]),
        };
        let y = matmul::linear(g, "proj", ids[0], &weight, opts)?;
        assert_eq!(g.dispatches()[0].kernel.shader, shader, "kernel picked");
        Ok(y)
    });
    let scale = max_abs(&want).max(1.0);
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * scale;
    let label = format!(
        "{shader} {layout:?} B{batch} M{rows} K{k} N{n} bias={bias} {act:?} residual={residual} {}",
        dtype.name()
    );
    assert_close(&label, &got, &want, atol, 0.0);
}

#[test]
fn linear_small_and_odd_shapes() {
    let cases = [
        Case {
            batch: 1,
            rows: 1,
            k: 1,
            n: 1,
            bias: false,
            act: Activation::Identity,
            residual: false,
        },
        Case {
            batch: 1,
            rows: 3,
            k: 5,
            n: 7,
            bias: true,
            act: Activation::Identity,
            residual: false,
        },
        Case {
            batch: 2,
            rows: 17,
            k: 33,
            n: 9,
            bias: true,
            act: Activation::Silu,
            residual: false,
        },
        Case {
            batch: 3,
            rows: 31,
            k: 64,
            n: 65,
            bias: false,
            act: Activation::Gelu,
            residual: true,
        },
        Case {
            batch: 2,
            rows: 77,
            k: 48,
            n: 130,
            bias: true,
            act: Activation::QuickGelu,
            residual: true,
        },
        Case {
            batch: 1,
            rows: 64,
            k: 64,
            n: 64,
            bias: true,
            act: Activation::Silu,
            residual: true,
        },
    ];
    let gpu = match gpu() {
        Some(g) => g,
        None => return,
    };
    for dtype in dtypes(&gpu) {
        for (i, case) in cases.iter().enumerate() {
            check(case, dtype, i as u64);
        }
    }
}

#[test]
fn linear_sd_sized() {
    // SD1.5 attention projection at the 32×32 level, batch 2: (2, 1024, 640) · (640, 640)ᵀ.
    let case = Case {
        batch: 2,
        rows: 1024,
        k: 640,
        n: 640,
        bias: true,
        act: Activation::Identity,
        residual: true,
    };
    let gpu = match gpu() {
        Some(g) => g,
        None => return,
    };
    for dtype in dtypes(&gpu) {
        check(&case, dtype, 99);
    }
}

#[test]
fn linear_rejects_mismatched_features() {
    let Some(gpu) = gpu() else { return };
    let weight =
        LinearWeight::upload(&gpu, "proj", &[0.0; 12], None, 3, 4, DType::F32).expect("upload");
    let mut g = stipple::Graph::new(DType::F32);
    let x = g.input("x", &[2, 5]).expect("input");
    let err = matmul::linear(
        &mut g,
        "down_blocks.0.proj",
        x,
        &weight,
        LinearOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("down_blocks.0.proj"), "{err}");
    assert!(LinearWeight::upload(&gpu, "bad", &[0.0; 11], None, 3, 4, DType::F32).is_err());
}

/// Both entries (`linear_rows` for CPU targets, `linear` for GPU targets) against the reference,
/// at odd shapes, a text-encoder-like shape (154 rows, partial last row block) and a K past the
/// `linear_rows` loop limit (falls back to `linear`).
#[test]
fn linear_both_variants() {
    use stipple::gpu::Variant;
    let Some(gpu) = gpu() else { return };
    let shapes = [
        (1, 1, 1),
        (5, 3, 7),
        (37, 33, 9),
        (154, 96, 200),
        (66, 130, 65),
        (3, 7600, 9),
    ];
    for dtype in dtypes(&gpu) {
        for variant in [Variant::Cpu, Variant::Gpu] {
            for (i, &(m, k, n)) in shapes.iter().enumerate() {
                let mut rng = Rng::new(500 + i as u64);
                let x = quantize(&rng.vec(m * k, 1.0), dtype);
                let w = quantize(&rng.vec(n * k, 1.0 / (k as f32).sqrt()), dtype);
                let b = quantize(&rng.vec(n, 0.5), dtype);
                let weight =
                    LinearWeight::upload(&gpu, "proj", &w, Some(&b), n, k, dtype).expect("upload");
                let want = matmul::reference(&x, &w, Some(&b), None, Activation::QuickGelu, n, k);
                let target = gpu.target.clone().with_variant(variant);
                let mut g = stipple::Graph::for_target(dtype, &target);
                let xi = g.input("x", &[m, k]).expect("input");
                let opts = LinearOptions {
                    activation: Activation::QuickGelu,
                    residual: None,
                };
                let y = matmul::linear(&mut g, "proj", xi, &weight, opts).expect("linear");
                g.output("out", y).expect("output");
                let plan = stipple::Plan::new(&gpu, g).expect("plan");
                plan.write_input("x", &x).expect("write");
                plan.run().expect("run");
                let got = plan.read_output("out").expect("read");
                let scale = max_abs(&want).max(1.0);
                let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * scale;
                let label = format!("linear {variant:?} M{m} K{k} N{n} {}", dtype.name());
                assert_close(&label, &got, &want, atol, 0.0);
            }
        }
    }
}

/// The value of override constant `name` in a dispatch's kernel key.
fn override_of(key: &stipple::gpu::KernelKey, name: &str) -> Option<u32> {
    key.overrides
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
}

/// The GPU variant's workgroup-memory kernel (`matmul_tiled::linear_tiled`), forced on this
/// adapter, in every tile configuration an adapter may choose (`matmul_tiled::TILES`: 128 × 64
/// and 64 × 64 / 64 × 32 output tiles, K in steps of 16 or 8), against the reference: single
/// elements, odd M/N/K, N not a multiple of 8, K not a multiple of 8 or 16, shapes one past a
/// tile in each dimension of each configuration, several tiles in both, every fusion; f32 and
/// f16. Tolerances as in `check`. The graph must dispatch the tiled kernel in the configuration
/// the target decided (a test of another kernel would pass silently otherwise).
#[test]
fn linear_tiled_gpu_variant() {
    use stipple::gpu::Variant;
    use stipple::ops::matmul_tiled::TILES;
    let Some(gpu) = gpu() else { return };
    // (M, K, N, bias, activation, residual)
    let shapes = [
        (1, 1, 1, false, Activation::Identity, false),
        (3, 5, 7, true, Activation::Silu, false),
        (129, 17, 65, true, Activation::Gelu, true),
        (128, 16, 64, false, Activation::Identity, true),
        (65, 9, 33, true, Activation::Identity, false),
        (77, 33, 130, true, Activation::QuickGelu, false),
        (260, 48, 136, true, Activation::GeluTanh, true),
        (2, 300, 9, false, Activation::Identity, false),
    ];
    for (tile, dtype) in TILES
        .iter()
        .flat_map(|t| dtypes(&gpu).into_iter().map(move |d| (t, d)))
    {
        let target = gpu
            .target
            .clone()
            .with_variant(Variant::Gpu)
            .with_config("linear_tiled", tile.name);
        for (i, &(m, k, n, bias, act, residual)) in shapes.iter().enumerate() {
            let mut rng = Rng::new(700 + i as u64);
            let x = quantize(&rng.vec(m * k, 1.0), dtype);
            let w = quantize(&rng.vec(n * k, 1.0 / (k as f32).sqrt()), dtype);
            let b = quantize(&rng.vec(n, 0.5), dtype);
            let r = quantize(&rng.vec(m * n, 1.0), dtype);
            let weight =
                LinearWeight::upload(&gpu, "proj", &w, bias.then_some(&b[..]), n, k, dtype)
                    .expect("upload");
            let want = matmul::reference(
                &x,
                &w,
                bias.then_some(&b[..]),
                residual.then_some(&r[..]),
                act,
                n,
                k,
            );
            let mut g = stipple::Graph::for_target(dtype, &target);
            let xi = g.input("x", &[m, k]).expect("input");
            let ri = g.input("r", &[m, n]).expect("input");
            let opts = LinearOptions {
                activation: act,
                residual: residual.then_some(ri),
            };
            let y = matmul::linear(&mut g, "proj", xi, &weight, opts).expect("linear");
            let kernel = &g.dispatches()[0].kernel;
            assert_eq!(kernel.shader, "matmul_tiled");
            assert_eq!(
                override_of(kernel, "BM"),
                Some(tile.rows as u32),
                "{}",
                tile.name
            );
            assert_eq!(override_of(kernel, "BN4"), Some(tile.cols as u32 / 4));
            assert_eq!(override_of(kernel, "BK"), Some(tile.k_step as u32));
            assert_eq!(
                override_of(kernel, "TM"),
                Some(tile.rows_per_invocation as u32)
            );
            let wg = g.dispatches()[0].workgroups;
            assert_eq!(wg[1] as usize, m.div_ceil(tile.rows), "{}", tile.name);
            g.output("out", y).expect("output");
            let plan = stipple::Plan::new(&gpu, g).expect("plan");
            plan.write_input("x", &x).expect("write");
            plan.write_input("r", &r).expect("write");
            plan.run().expect("run");
            let got = plan.read_output("out").expect("read");
            let scale = max_abs(&want).max(1.0);
            let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * scale;
            let label = format!(
                "linear_tiled {} M{m} K{k} N{n} bias={bias} {act:?} residual={residual} {}",
                tile.name,
                dtype.name()
            );
            assert_close(&label, &got, &want, atol, 0.0);
        }
    }
}

/// The CPU variant's subgroup kernel (`matmul_subgroup::linear_subgroup`: lanes own 4 or 8
/// rows × 32 columns, K read as vec4) against the reference: M from 8 to 1000 (one lane's rows,
/// partial row blocks of 32 and 64, both sides of the 4/8 rows-per-lane switch at 256), K from 4
/// to 7600 in multiples of 4, N from 1 to 300 (N < 8, not a multiple of 4 or 8, one past a
/// 32-column block), every fused activation, bias and residual on and off, batch > 1; f32 and
/// f16. Tolerances as in `check`.
#[test]
fn linear_subgroup_cpu_variant() {
    let Some(gpu) = gpu() else { return };
    let Some(target) = subgroup_target(&gpu) else {
        return;
    };
    let cases = [
        case(1, 8, 4, 1, false, Activation::Identity, false),
        case(1, 9, 8, 3, true, Activation::Silu, true),
        case(1, 33, 36, 7, true, Activation::Gelu, false),
        case(2, 17, 64, 8, false, Activation::GeluTanh, true),
        case(1, 65, 68, 33, true, Activation::QuickGelu, true),
        case(2, 77, 300, 65, true, Activation::Identity, false),
        case(1, 154, 96, 130, false, Activation::Silu, true),
        case(1, 255, 20, 9, true, Activation::Gelu, true),
        case(1, 256, 20, 9, true, Activation::GeluTanh, false),
        case(3, 100, 32, 300, true, Activation::QuickGelu, true),
        case(1, 1000, 12, 40, false, Activation::Identity, true),
        case(1, 11, 7600, 24, true, Activation::Identity, false),
    ];
    check_all(&gpu, &target, &cases, 900, ("matmul_subgroup", BOTH));
}

/// Which kernel a CPU-variant graph picks: for a Packed weight the subgroup kernel from 8 rows
/// on when K is a multiple of 4 and the adapter has subgroups of 8, the register-blocked
/// kernels otherwise (fewer rows, K not a multiple of 4, no subgroups); for a Blocked weight
/// the subgroup kernel at any row count, or an error.
#[test]
fn linear_subgroup_selection() {
    let Some(gpu) = gpu() else { return };
    let Some(target) = subgroup_target(&gpu) else {
        return;
    };
    let picked = |target: &Target, m: usize, k: usize, layout| {
        let weight = LinearWeight::upload_laid_out(
            &gpu,
            "proj",
            &vec![0.0; 8 * k],
            None,
            [8, k],
            DType::F32,
            layout,
        )
        .expect("upload");
        let mut g = stipple::Graph::for_target(DType::F32, target);
        let x = g.input("x", &[m, k]).expect("input");
        matmul::linear(&mut g, "proj", x, &weight, LinearOptions::default())?;
        let d = &g.dispatches()[0];
        Ok::<_, stipple::Error>(format!("{}::{}", d.kernel.shader, d.kernel.entry))
    };
    let (packed, blocked) = (WeightLayout::Packed, WeightLayout::Blocked);
    let subgroup = "matmul_subgroup::linear_subgroup";
    assert_eq!(picked(&target, 8, 4, packed).unwrap(), subgroup);
    assert_eq!(picked(&target, 7, 4, packed).unwrap(), "matmul::linear");
    assert_eq!(picked(&target, 8, 6, packed).unwrap(), "matmul::linear");
    // A Blocked weight is the subgroup kernel's alone, whatever the rows; a target that cannot
    // run it is an error naming the layer, not a wrong read.
    assert_eq!(picked(&target, 2, 4, blocked).unwrap(), subgroup);
    let gpu_variant = target.clone().with_variant(stipple::gpu::Variant::Gpu);
    let err = picked(&gpu_variant, 8, 4, blocked).unwrap_err().to_string();
    assert!(
        err.contains("proj") && err.contains("subgroup kernel"),
        "{err}"
    );
    let without = Target {
        subgroups: false,
        subgroup_min_size: 0,
        ..target.clone()
    };
    assert_eq!(picked(&without, 8, 4, packed).unwrap(), "matmul::linear");
    assert!(picked(&without, 8, 4, blocked).is_err());
    let narrow = Target {
        subgroup_min_size: 4,
        ..target
    };
    assert_eq!(picked(&narrow, 8, 4, packed).unwrap(), "matmul::linear");
}

/// A reduction that brings one invocation exactly to the loop budget (K/4 main-loop iterations
/// plus the stores' loops) is computed in full; one vec4 more is rejected with an error naming
/// the layer, not silently truncated (the register-blocked kernels' limit is lower still).
#[test]
fn linear_subgroup_at_the_loop_budget() {
    let Some(gpu) = gpu() else { return };
    let Some(target) = subgroup_target(&gpu) else {
        return;
    };
    let (m, n) = (8, 8);
    let stores = matmul_subgroup::linear_iterations(m, 0);
    let k = 4 * (target.loop_budget() - stores);
    assert_eq!(
        matmul_subgroup::linear_iterations(m, k),
        target.loop_budget()
    );
    let c = case(1, m, k, n, true, Activation::Identity, true);
    check_all(&gpu, &target, &[c], 950, ("matmul_subgroup", BOTH));
    let k = k + 4;
    let weight = LinearWeight::upload(&gpu, "proj", &vec![0.0; n * k], None, n, k, DType::F32)
        .expect("upload");
    let mut g = stipple::Graph::for_target(DType::F32, &target);
    let x = g.input("x", &[m, k]).expect("input");
    let err = matmul::linear(&mut g, "text.fc1", x, &weight, LinearOptions::default())
        .expect_err("past the loop budget");
    assert!(err.to_string().contains("text.fc1"), "{err}");
}
