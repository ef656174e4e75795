//! Flash attention kernels vs the CPU reference: head dims 3 to 160 (odd and off the vec4) and
//! every head dim stipple uses (40, 80, 160 for SD1.x; 64 for SD2.x, SDXL and CLIP; 512 for the
//! VAE), query and key counts 1 to 4000+ (partial tiles, partial query blocks), cross-attention
//! (77 keys), causal masking, fused-QKV column offsets, batch > 1, key splits (forced with a
//! small loop budget, and at the default budget's boundary), query chunks, and the 4096 × 4096 ×
//! 8 heads × 40 self-attention of SD1.5's first level checked on sampled rows. Every case runs
//! every kernel that supports its head dim on this adapter: one query per invocation, the
//! subgroup-lanes kernel (lavapipe's) and the workgroup-memory tiled kernel (the GPU variant,
//! forced here). Tolerances (absolute, × max(1, output scale)): f32 1e-4, f16 5e-3 (inputs
//! rounded to f16 for the reference; f32 math inside the kernels).

mod common;

use common::*;
use stipple::gpu::{Target, Variant};
use stipple::ops::attention::{self, AttentionKernel, AttentionOptions, HeadsOf};
use stipple::DType;

/// The kernels that can run head dim `d` on this adapter.
fn kernels(gpu: &stipple::Gpu, d: usize) -> Vec<AttentionKernel> {
    [
        AttentionKernel::OneQuery,
        AttentionKernel::Tiled,
        AttentionKernel::Lanes,
    ]
    .into_iter()
    .filter(|k| k.runs_on(&gpu.target, d))
    .collect()
}

struct Case {
    batch: usize,
    tq: usize,
    tk: usize,
    heads: usize,
    d: usize,
    causal: bool,
}

fn atol(dtype: DType) -> f32 {
    if dtype == DType::F32 {
        1e-4
    } else {
        5e-3
    }
}

fn check(gpu: &stipple::Gpu, c: &Case, dtype: DType, seed: u64, sample_rows: Option<usize>) {
    check_kernels(gpu, c, dtype, seed, sample_rows, &kernels(gpu, c.d), None);
}

/// `check` for the given kernels, with the graph's loop budget replaced by `budget` (a small one
/// splits the keys of short sequences).
fn check_kernels(
    gpu: &stipple::Gpu,
    c: &Case,
    dtype: DType,
    seed: u64,
    sample_rows: Option<usize>,
    kernels: &[AttentionKernel],
    budget: Option<usize>,
) {
    let target = Target::default();
    let what = format!(" budget {budget:?}");
    check_on(
        gpu,
        &target,
        kernels,
        c,
        dtype,
        seed,
        sample_rows,
        budget,
        &what,
    );
}

/// `check` with graphs built for `target` (loop budget replaced by `budget` when given), running
/// `kernels`; `what` ends the failure label.
#[allow(clippy::too_many_arguments)]
fn check_on(
    gpu: &stipple::Gpu,
    target: &Target,
    kernels: &[AttentionKernel],
    c: &Case,
    dtype: DType,
    seed: u64,
    sample_rows: Option<usize>,
    budget: Option<usize>,
    what: &str,
) {
    let mut rng = Rng::new(seed);
    let w = c.heads * c.d;
    let q = quantize(&rng.vec(c.batch * c.tq * w, 1.5), dtype);
    let k = quantize(&rng.vec(c.batch * c.tk * w, 1.5), dtype);
    let v = quantize(&rng.vec(c.batch * c.tk * w, 1.0), dtype);
    let (qs, ks) = ([c.batch, c.tq, w], [c.batch, c.tk, w]);
    let inputs: Vec<(&str, &[usize], &[f32])> =
        vec![("q", &qs, &q), ("k", &ks, &k), ("v", &ks, &v)];
    let opts = AttentionOptions {
        heads: c.heads,
        head_dim: c.d,
        scale: None,
        causal: c.causal,
    };
    let rows: Vec<(usize, usize)> = match sample_rows {
        None => (0..c.batch)
            .flat_map(|b| (0..c.tq).map(move |i| (b, i)))
            .collect(),
        Some(n) => {
            let mut r: Vec<(usize, usize)> = (0..n)
                .map(|_| {
                    (
                        (rng.next_u64() as usize) % c.batch,
                        (rng.next_u64() as usize) % c.tq,
                    )
                })
                .collect();
            r.extend([(0, 0), (c.batch - 1, c.tq - 1)]);
            r
        }
    };
    let scale = 1.0 / (c.d as f32).sqrt();
    let want = attention::reference_rows(
        &q,
        &k,
        &v,
        [c.tq, c.tk],
        c.heads,
        c.d,
        scale,
        c.causal,
        &rows,
    );
    for &kernel in kernels {
        let got = run_graph_for(gpu, target, dtype, &inputs, |g, ids| {
            if budget.is_some() {
                g.target.loop_budget = budget;
            }
            attention::attention_with(
                g,
                "attn1",
                ids[0].into(),
                ids[1].into(),
                ids[2].into(),
                opts,
                kernel,
                32 << 20,
            )
        });
        let got_rows: Vec<f32> = rows
            .iter()
            .flat_map(|&(b, i)| got[(b * c.tq + i) * w..][..w].to_vec())
            .collect();
        let label = format!(
            "attention {kernel:?} B{} Tq{} Tk{} H{} D{} causal={} {}{what}",
            c.batch,
            c.tq,
            c.tk,
            c.heads,
            c.d,
            c.causal,
            dtype.name()
        );
        assert_close(
            &label,
            &got_rows,
            &want,
            atol(dtype) * max_abs(&want).max(1.0),
            0.0,
        );
    }
}

#[test]
fn attention_head_dims_and_key_counts() {
    let Some(gpu) = gpu() else { return };
    let cases = [
        Case {
            batch: 1,
            tq: 1,
            tk: 1,
            heads: 1,
            d: 8,
            causal: false,
        },
        Case {
            batch: 2,
            tq: 5,
            tk: 3,
            heads: 2,
            d: 3,
            causal: false,
        },
        Case {
            batch: 1,
            tq: 70,
            tk: 300,
            heads: 3,
            d: 12,
            causal: false,
        },
        Case {
            batch: 2,
            tq: 65,
            tk: 65,
            heads: 2,
            d: 40,
            causal: false,
        },
        Case {
            batch: 1,
            tq: 33,
            tk: 129,
            heads: 2,
            d: 64,
            causal: false,
        },
        Case {
            batch: 1,
            tq: 20,
            tk: 50,
            heads: 1,
            d: 80,
            causal: false,
        },
        Case {
            batch: 2,
            tq: 9,
            tk: 40,
            heads: 2,
            d: 160,
            causal: false,
        },
        Case {
            batch: 1,
            tq: 17,
            tk: 17,
            heads: 1,
            d: 157,
            causal: false,
        },
    ];
    for dtype in dtypes(&gpu) {
        for (i, c) in cases.iter().enumerate() {
            check(&gpu, c, dtype, 100 + i as u64, None);
        }
    }
}

#[test]
fn cross_attention_77_keys() {
    // SD1.5 cross-attention at the 16×16 level: 256 queries, 77 text tokens, 8 heads × 80.
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(
            &gpu,
            &Case {
                batch: 2,
                tq: 256,
                tk: 77,
                heads: 8,
                d: 80,
                causal: false,
            },
            dtype,
            7,
            None,
        );
    }
}

#[test]
fn causal_mask_as_in_clip() {
    let Some(gpu) = gpu() else { return };
    for dtype in dtypes(&gpu) {
        check(
            &gpu,
            &Case {
                batch: 2,
                tq: 77,
                tk: 77,
                heads: 12,
                d: 64,
                causal: true,
            },
            dtype,
            8,
            None,
        );
        check(
            &gpu,
            &Case {
                batch: 1,
                tq: 130,
                tk: 130,
                heads: 1,
                d: 8,
                causal: true,
            },
            dtype,
            9,
            None,
        );
    }
}

#[test]
fn many_keys_split_across_invocations() {
    // Past stipple::ops::LOOP_BUDGET the keys are split and the partial results combined.
    let Some(gpu) = gpu() else { return };
    assert!(attention::keys_per_split(160) < 1500 && attention::keys_per_split(40) < 4096);
    let budget = stipple::ops::LOOP_BUDGET;
    for kernel in kernels(&gpu, 160) {
        assert!(kernel.keys_per_split(160, budget) < 3000, "{kernel:?}");
    }
    for dtype in dtypes(&gpu) {
        // The SD VAE's mid-block attention: one head of 512.
        check(
            &gpu,
            &Case {
                batch: 1,
                tq: 70,
                tk: 300,
                heads: 1,
                d: 512,
                causal: false,
            },
            dtype,
            13,
            None,
        );
        check(
            &gpu,
            &Case {
                batch: 2,
                tq: 40,
                tk: 3000,
                heads: 2,
                d: 160,
                causal: false,
            },
            dtype,
            11,
            None,
        );
        check(
            &gpu,
            &Case {
                batch: 1,
                tq: 1500,
                tk: 1500,
                heads: 1,
                d: 160,
                causal: true,
            },
            dtype,
            12,
            Some(40),
        );
    }
}

#[test]
fn query_chunks_bound_the_partials() {
    // 300 queries × 1600 keys × D 160: a loop budget of 4000 splits the keys (≤ 144 keys per
    // split for every kernel) and a tiny partial limit chunks the queries: chunks of 64 with one
    // partial/combine pair each.
    let Some(gpu) = gpu() else { return };
    let (tq, tk, h, d) = (300, 1600, 2, 160);
    let mut rng = Rng::new(21);
    let q = rng.vec(tq * h * d, 1.5);
    let k = rng.vec(tk * h * d, 1.5);
    let v = rng.vec(tk * h * d, 1.0);
    let (qs, ks) = ([1, tq, h * d], [1, tk, h * d]);
    let inputs: Vec<(&str, &[usize], &[f32])> =
        vec![("q", &qs, &q), ("k", &ks, &k), ("v", &ks, &v)];
    let opts = AttentionOptions {
        heads: h,
        head_dim: d,
        scale: None,
        causal: false,
    };
    let rows: Vec<(usize, usize)> = (0..tq)
        .step_by(7)
        .map(|i| (0, i))
        .chain([(0, tq - 1)])
        .collect();
    let want = attention::reference_rows(
        &q,
        &k,
        &v,
        [tq, tk],
        h,
        d,
        1.0 / (d as f32).sqrt(),
        false,
        &rows,
    );
    for kernel in kernels(&gpu, d) {
        let mut dispatches = 0;
        let got = run_graph(&gpu, DType::F32, &inputs, |g, ids| {
            g.target.loop_budget = Some(4000);
            let y = attention::attention_with(
                g,
                "attn",
                ids[0].into(),
                ids[1].into(),
                ids[2].into(),
                opts,
                kernel,
                64 * 1024,
            )?;
            dispatches = g.dispatches().len();
            Ok(y)
        });
        assert!(
            dispatches >= 8,
            "{kernel:?}: expected several query chunks, got {dispatches} dispatches"
        );
        let got_rows: Vec<f32> = rows
            .iter()
            .flat_map(|&(_, i)| got[i * h * d..][..h * d].to_vec())
            .collect();
        assert_close(
            &format!("chunked attention {kernel:?}"),
            &got_rows,
            &want,
            1e-4,
            0.0,
        );
    }
}

#[test]
fn fused_qkv_offsets() {
    // q, k, v as column slices of one (B, T, 3·H·D) tensor, as a fused projection writes them:
    // offsets and strides multiples of 4 (vec4 loads) and not.
    let Some(gpu) = gpu() else { return };
    for (b, t, h, d) in [(2, 19, 2, 24), (1, 23, 3, 13)] {
        let w = h * d;
        let mut rng = Rng::new(5 + d as u64);
        let qkv = rng.vec(b * t * 3 * w, 1.0);
        let split = |part: usize| -> Vec<f32> {
            qkv.chunks(3 * w)
                .flat_map(|row| row[part * w..(part + 1) * w].to_vec())
                .collect()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let shape = [b, t, 3 * w];
        let opts = AttentionOptions {
            heads: h,
            head_dim: d,
            scale: Some(0.3),
            causal: false,
        };
        let rows: Vec<(usize, usize)> =
            (0..b).flat_map(|bb| (0..t).map(move |i| (bb, i))).collect();
        let want = attention::reference_rows(&q, &k, &v, [t, t], h, d, 0.3, false, &rows);
        for kernel in kernels(&gpu, d) {
            let got = run_graph(&gpu, DType::F32, &[("qkv", &shape, &qkv)], |g, ids| {
                let part = |offset| HeadsOf {
                    value: ids[0],
                    offset,
                };
                attention::attention_with(
                    g,
                    "attn",
                    part(0),
                    part(w),
                    part(2 * w),
                    opts,
                    kernel,
                    32 << 20,
                )
            });
            assert_close(
                &format!("attention with fused qkv, {kernel:?} D{d}"),
                &got,
                &want,
                1e-4,
                0.0,
            );
        }
    }
}

#[test]
fn lanes_kernel_at_every_sd_head_dim() {
    // The head dims stipple runs (SD1.x 40/80/160, SD2.x/SDXL/CLIP 64, the VAE's 512) through the
    // subgroup-lanes kernel, f32 and f16: a lone query over 1001 keys, 130 queries (a partial
    // block of queries) over 77 (a partial key tile), 7 × 7.
    let Some(gpu) = gpu() else { return };
    if !AttentionKernel::Lanes.runs_on(&gpu.target, 64) {
        eprintln!("skipping: this adapter cannot run the lanes kernel");
        return;
    }
    for dtype in dtypes(&gpu) {
        for d in [40, 64, 80, 160, 512] {
            for (batch, tq, tk, heads) in [(1, 1, 1001, 1), (2, 130, 77, 2), (1, 7, 7, 3)] {
                let c = Case {
                    batch,
                    tq,
                    tk,
                    heads,
                    d,
                    causal: false,
                };
                check_kernels(
                    &gpu,
                    &c,
                    dtype,
                    d as u64,
                    None,
                    &[AttentionKernel::Lanes],
                    None,
                );
            }
        }
    }
}

#[test]
fn lanes_kernel_key_splits() {
    // Key splits merged by `combine` (a small loop budget: 16 keys per split at D 40), with
    // causal masking (queries whose splits are all masked weigh 0), odd sizes and f16; then
    // the default budget at its boundary: one split of exactly keys_per_split keys, and one key
    // more (two splits).
    let Some(gpu) = gpu() else { return };
    let lanes = AttentionKernel::Lanes;
    if !lanes.runs_on(&gpu.target, 64) {
        eprintln!("skipping: this adapter cannot run the lanes kernel");
        return;
    }
    let budget = 770;
    assert_eq!(lanes.keys_per_split(40, budget), 16);
    for dtype in dtypes(&gpu) {
        for (tq, tk, d, causal) in [
            (300, 200, 40, false),
            (77, 77, 64, true),
            (33, 70, 12, true),
        ] {
            let c = Case {
                batch: 2,
                tq,
                tk,
                heads: 2,
                d,
                causal,
            };
            check_kernels(&gpu, &c, dtype, tk as u64, None, &[lanes], Some(budget));
        }
    }
    let full = stipple::ops::LOOP_BUDGET;
    for d in [40, 160, 512] {
        let keys = lanes.keys_per_split(d, full);
        assert!(keys >= 800, "D{d}: only {keys} keys per split");
        for tk in [keys, keys + 1] {
            let c = Case {
                batch: 1,
                tq: 9,
                tk,
                heads: 1,
                d,
                causal: false,
            };
            check_kernels(&gpu, &c, DType::F32, 3, None, &[lanes], Some(full));
        }
    }
}

#[test]
fn self_attention_4096_tokens_8_heads() {
    // SD1.5 64×64 level: 4096 queries × 4096 keys, 8 heads of 40, batch 1, f32. Nothing of size
    // queries × keys is allocated: the plan's total memory is asserted below.
    let Some(gpu) = gpu() else { return };
    let c = Case {
        batch: 1,
        tq: 4096,
        tk: 4096,
        heads: 8,
        d: 40,
        causal: false,
    };
    check(&gpu, &c, DType::F32, 4096, Some(24));
    let mut g = stipple::Graph::new(DType::F32);
    let q = g.input("q", &[1, 4096, 320]).expect("q");
    let opts = AttentionOptions {
        heads: 8,
        head_dim: 40,
        scale: None,
        causal: false,
    };
    let o = attention::attention(&mut g, "attn1", q.into(), q.into(), q.into(), opts)
        .expect("attention");
    g.output("out", o).expect("output");
    let m = g.memory();
    let scores_bytes = 4096u64 * 4096 * 8 * 4;
    assert!(
        m.activation_peak() + m.pooled < scores_bytes / 16,
        "plan holds {m:?}"
    );
}

#[test]
fn attention_rejects_bad_shapes() {
    let mut g = stipple::Graph::new(DType::F32);
    let q = g.input("q", &[1, 4, 64]).expect("q");
    let k = g.input("k", &[2, 4, 64]).expect("k");
    let opts = AttentionOptions {
        heads: 2,
        head_dim: 32,
        scale: None,
        causal: false,
    };
    assert!(attention::attention(&mut g, "a", q.into(), k.into(), k.into(), opts).is_err());
    let big = AttentionOptions {
        heads: 1,
        head_dim: 600,
        scale: None,
        causal: false,
    };
    let q2 = g.input("q2", &[1, 4, 600]).expect("q2");
    let err =
        attention::attention(&mut g, "attn2", q2.into(), q2.into(), q2.into(), big).unwrap_err();
    assert!(err.to_string().contains("head_dim 600"), "{err}");
}

#[test]
fn the_target_picks_the_kernel() {
    // Graphs for a CPU target with subgroups of at least 8 lanes use the lanes kernel (every
    // head dim up to 512) for ops of at least LANES_MIN_FLOPS, without them the one-query
    // kernel; for a GPU target the tiled one (and the one-query kernel past head dim 160);
    // forcing the GPU variant keeps the CPU adapter's loop budget, so long key ranges still
    // split.
    let build = |target: &Target, d: usize, keys: usize| {
        let mut g = stipple::Graph::for_target(DType::F32, target);
        let q = g.input("q", &[1, keys, d]).expect("q");
        let opts = AttentionOptions {
            heads: 1,
            head_dim: d,
            scale: None,
            causal: false,
        };
        attention::attention(&mut g, "attn", q.into(), q.into(), q.into(), opts).expect("attn");
        g.dispatches()
            .iter()
            .map(|d| format!("{}::{}", d.kernel.shader, d.kernel.entry))
            .collect::<Vec<_>>()
    };
    let cpu = Target::default();
    assert_eq!(cpu.variant, Variant::Cpu);
    assert_eq!(build(&cpu, 40, 64), ["attention::partial"]);
    assert_eq!(build(&cpu, 512, 64), ["attention::partial"]);
    let lavapipe = Target {
        subgroups: true,
        subgroup_min_size: 8,
        ..cpu.clone()
    };
    // Ops of at least LANES_MIN_FLOPS (640 keys: 4·640²·40 = 66 MFLOP); smaller ones keep the
    // one-query kernel, whose pipeline compiles in a fraction of the lanes kernel's time.
    for d in [40, 64, 80, 160, 512] {
        assert_eq!(build(&lavapipe, d, 640), ["attention_lanes::partial"]);
    }
    let small_keys = 64;
    for d in [40, 512] {
        let flops = (4 * small_keys * small_keys * d) as f64;
        assert!(flops < attention::LANES_MIN_FLOPS, "{flops} FLOPs");
        assert_eq!(build(&lavapipe, d, small_keys), ["attention::partial"]);
    }
    assert_eq!(
        build(&lavapipe, 40, 8192),
        ["attention_lanes::partial", "attention::combine"]
    );
    let narrow = Target {
        subgroup_min_size: 4,
        ..lavapipe.clone()
    };
    assert_eq!(build(&narrow, 40, 64), ["attention::partial"]);
    // This adapter: lavapipe (a CPU adapter with subgroups of 8) gets the lanes kernel.
    if let Some(gpu) = gpu() {
        if gpu.target.variant == Variant::Cpu && gpu.target.subgroup_min_size >= 8 {
            assert_eq!(
                AttentionKernel::for_target(&gpu.target, 40),
                AttentionKernel::Lanes
            );
            assert_eq!(build(&gpu.target, 40, 640), ["attention_lanes::partial"]);
        }
    }
    let forced = cpu.clone().with_variant(Variant::Gpu);
    assert_eq!(build(&forced, 40, 64), ["attention::partial_tiled"]);
    assert_eq!(build(&forced, 512, 64), ["attention::partial"]);
    assert_eq!(
        build(&forced, 40, 8192),
        ["attention::partial_tiled", "attention::combine"]
    );
    let unbudgeted = Target {
        loop_budget: None,
        ..forced
    };
    assert_eq!(build(&unbudgeted, 40, 8192), ["attention::partial_tiled"]);
}

#[test]
fn forced_gpu_variant_runs_on_this_adapter() {
    // The whole op through `attention()` on a GPU-variant graph (STIPPLE_FORCE_VARIANT=gpu does
    // the same for every graph of a process).
    let Some(gpu) = gpu() else { return };
    let target = gpu.target.clone().with_variant(Variant::Gpu);
    let (b, t, h, d) = (2, 50, 2, 24);
    let mut rng = Rng::new(31);
    let q = rng.vec(b * t * h * d, 1.0);
    let mut g = stipple::Graph::for_target(DType::F32, &target);
    let x = g.input("q", &[b, t, h * d]).expect("q");
    let opts = AttentionOptions {
        heads: h,
        head_dim: d,
        scale: None,
        causal: true,
    };
    let y = attention::attention(&mut g, "attn", x.into(), x.into(), x.into(), opts).expect("attn");
    assert!(g
        .dispatches()
        .iter()
        .any(|d| d.kernel.entry == "partial_tiled"));
    g.output("out", y).expect("output");
    let plan = stipple::Plan::new(&gpu, g).expect("plan");
    plan.write_input("q", &q).expect("write");
    plan.run().expect("run");
    let got = plan.read_output("out").expect("read");
    let rows: Vec<(usize, usize)> = (0..b).flat_map(|bb| (0..t).map(move |i| (bb, i))).collect();
    let scale = 1.0 / (d as f32).sqrt();
    let want = attention::reference_rows(&q, &q, &q, [t, t], h, d, scale, true, &rows);
    assert_close("forced GPU variant", &got, &want, 1e-4, 0.0);
}

/// Every configuration an adapter may choose for the GPU attention kernel
/// (`attention_tiled::CONFIGS`: 64 or 128 queries per workgroup, K/V tiles of up to 32 or 16
/// keys), through `attention()` on a GPU-variant graph forced on this adapter, against the
/// reference: head dims 3 to 160 (odd, off the vec4, the tile capped by 16 KiB at 80 and 160),
/// key counts off every tile, 77 cross-attention keys, causal masking, query counts one past a
/// workgroup of each size, batch > 1, and keys split across invocations under the loop budget
/// (merged by `combine`); f32 and f16 (tolerances as in `check`). Each graph must dispatch the
/// configuration its target decided (override constants WG and KV_TILE).
#[test]
fn tiled_attention_every_config() {
    use stipple::ops::attention_tiled::CONFIGS;
    let Some(gpu) = gpu() else { return };
    let case = |batch, tq, tk, heads, d, causal| Case {
        batch,
        tq,
        tk,
        heads,
        d,
        causal,
    };
    let cases = [
        case(1, 65, 45, 2, 40, false),
        case(2, 129, 77, 1, 80, false),
        case(1, 33, 17, 3, 3, false),
        case(1, 70, 70, 2, 64, true),
        case(1, 20, 50, 1, 160, false),
        case(1, 8, 3000, 1, 40, false),
    ];
    for config in CONFIGS {
        let target = gpu
            .target
            .clone()
            .with_variant(Variant::Gpu)
            .with_config("partial_tiled", config.name);
        for (i, c) in cases.iter().enumerate() {
            // The graph dispatches the forced configuration: override constants and grid.
            let mut g = stipple::Graph::for_target(DType::F32, &target);
            let w = c.heads * c.d;
            let qi = g.input("q", &[c.batch, c.tq, w]).expect("q");
            let ki = g.input("k", &[c.batch, c.tk, w]).expect("k");
            let opts = AttentionOptions {
                heads: c.heads,
                head_dim: c.d,
                scale: None,
                causal: c.causal,
            };
            attention::attention(&mut g, "attn", qi.into(), ki.into(), ki.into(), opts)
                .expect("attn");
            let partial = &g.dispatches()[0];
            assert_eq!(partial.kernel.entry, "partial_tiled");
            let o = |name: &str| {
                let found = partial.kernel.overrides.iter().find(|(n, _)| *n == name);
                found.map(|&(_, v)| v as usize)
            };
            assert_eq!(o("WG"), Some(config.queries), "{}", config.name);
            assert_eq!(o("KV_TILE"), Some(config.keys(c.d)), "{}", config.name);
            assert_eq!(
                partial.workgroups[0] as usize,
                c.tq.div_ceil(config.queries)
            );
            let tiled = [AttentionKernel::Tiled];
            let what = format!(" {}", config.name);
            for dtype in dtypes(&gpu) {
                check_on(
                    &gpu,
                    &target,
                    &tiled,
                    c,
                    dtype,
                    900 + i as u64,
                    None,
                    None,
                    &what,
                );
            }
        }
    }
}
