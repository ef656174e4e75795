//! Linear layer kernel vs the CPU reference: odd sizes, sizes off every tile, fused bias /
//! activation / residual, batch > 1, an SD-sized projection, both entries (CPU and GPU targets); f32 and f16.
//! Tolerances: f32 atol 1e-4·scale (sums of up to 7600 products); f16 (inputs rounded to f16
//! for the reference, output stored in f16) 4e-3·scale.

mod common;

use common::*;
use stipple::ops::elementwise::Activation;
use stipple::ops::matmul::{self, LinearOptions, LinearWeight};
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

fn check(case: &Case, dtype: DType, seed: u64) {
    let Some(gpu) = gpu() else { return };
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
    let weight = LinearWeight::upload(&gpu, "proj", &w, bias.then_some(&b[..]), n, k, dtype)
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
    let got = run_graph(&gpu, dtype, &inputs, |g, ids| {
        let opts = LinearOptions {
            activation: act,
            residual: residual.then_some(ids[1]),
        };
        matmul::linear(g, "proj", ids[0], &weight, opts)
    });
    let scale = max_abs(&want).max(1.0);
    let atol = if dtype == DType::F32 { 1e-4 } else { 4e-3 } * scale;
    let label = format!(
        "linear B{batch} M{rows} K{k} N{n} bias={bias} {act:?} residual={residual} {}",
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
