//! WebGPU's default limits are the web build's design envelope (docs/web.md): 128 MiB per
//! storage binding, 256 MiB per buffer, 8 storage buffers per stage, 16 KiB workgroup storage,
//! 256 invocations per workgroup. A device created natively with exactly those limits
//! (`LimitsRequest::WebGpuDefault`) makes wgpu validate every pipeline, bind group and buffer
//! against them; the tiny pipeline (both kernel variants) and, on demand (`--ignored`), the
//! default model in weights/ at the CLI's defaults run inside them and give the image of a
//! normal device. A GPU-less check
//! reflects every shader variant with naga for what can be read statically.

mod common;

use common::golden::fixture;
use common::*;
use stipple::gpu::kernels::{shader_source, validate_wgsl, SHADERS};
use stipple::gpu::{LimitsRequest, Variant};
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::{DType, Gpu, GpuOptions};

/// WebGPU's defaults, as the spec (and `wgpu::Limits::default()`) state them.
const MAX_STORAGE_BINDING: u64 = 128 << 20;
const MAX_BUFFER: u64 = 256 << 20;
const MAX_STORAGE_BUFFERS_PER_STAGE: u32 = 8;
const MAX_WORKGROUP_STORAGE: u32 = 16 << 10;
const MAX_INVOCATIONS: u32 = 256;

/// A device at WebGPU's default limits on the test adapter (None: skipped, as `gpu()`).
fn webgpu_default_gpu() -> Option<Gpu> {
    gpu()?;
    let options = GpuOptions {
        limits: LimitsRequest::WebGpuDefault,
        ..gpu_options()
    };
    Some(Gpu::new(&options).expect("a device at WebGPU's default limits"))
}

fn with_variant(gpu: &Gpu, variant: Variant) -> Gpu {
    let mut g = gpu.clone();
    g.target = g.target.clone().with_variant(variant);
    g
}

#[test]
fn the_device_has_webgpu_default_limits() {
    let Some(gpu) = webgpu_default_gpu() else {
        return;
    };
    let l = &gpu.limits;
    assert_eq!(l.max_storage_buffer_binding_size, MAX_STORAGE_BINDING);
    assert_eq!(l.max_buffer_size, MAX_BUFFER);
    assert_eq!(
        l.max_storage_buffers_per_shader_stage,
        MAX_STORAGE_BUFFERS_PER_STAGE
    );
    assert_eq!(l.max_compute_workgroup_storage_size, MAX_WORKGROUP_STORAGE);
    assert_eq!(l.max_compute_invocations_per_workgroup, MAX_INVOCATIONS);
    assert_eq!(gpu.target.max_invocations_per_workgroup, MAX_INVOCATIONS);
}

fn tiny_options() -> GenerateOptions {
    GenerateOptions {
        prompt: "a green triangle".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        seed: 0,
        width: 24,
        height: 16,
        ..Default::default()
    }
}

fn generate(
    gpu: &Gpu,
    model: &std::path::Path,
    dtype: Option<DType>,
    o: &GenerateOptions,
) -> Vec<f32> {
    let mut pipe = Pipeline::load(gpu, model, dtype).expect("load");
    pipe.generate(o, |_, _| Progress::Continue)
        .expect("generate")
        .images
}

#[test]
fn tiny_pipeline_at_webgpu_default_limits_matches_a_normal_device() {
    let (Some(normal), Some(web)) = (gpu(), webgpu_default_gpu()) else {
        return;
    };
    let model = fixture("tiny-pipe");
    for variant in [Variant::Cpu, Variant::Gpu] {
        let want = generate(
            &with_variant(&normal, variant),
            &model,
            Some(DType::F32),
            &tiny_options(),
        );
        let got = generate(
            &with_variant(&web, variant),
            &model,
            Some(DType::F32),
            &tiny_options(),
        );
        let diff = max_abs_diff(&got, &want);
        eprintln!("tiny-pipe, {} kernels: WebGPU default limits vs adapter limits: max abs difference {diff:e}", variant.name());
        // Tile choices may differ under the smaller limits (f32 summation order only).
        assert!(
            diff <= 1e-5,
            "{} kernels: images differ by {diff}",
            variant.name()
        );
    }
}

/// Two full default-model runs (20 steps, CFG): minutes on lavapipe on a loaded machine, so run
/// on demand: `cargo test --release --test webgpu_limits -- --ignored --nocapture`.
#[test]
#[ignore = "two 20-step default-model runs: minutes on lavapipe"]
fn default_model_at_cli_defaults_within_webgpu_default_limits() {
    let (Some(normal), Some(web)) = (gpu(), webgpu_default_gpu()) else {
        return;
    };
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/stipple-emoji-64");
    // `stipple generate -p "a green triangle" --seed 0`: 20 steps, CFG 7.5, native size.
    let options = GenerateOptions {
        prompt: "a green triangle".into(),
        steps: 20,
        guidance_scale: 7.5,
        seed: 0,
        ..Default::default()
    };
    let want = generate(&normal, &model, None, &options);
    let got = generate(&web, &model, None, &options);
    let diff = max_abs_diff(&got, &want);
    eprintln!("default model: WebGPU default limits vs adapter limits: max abs difference {diff:e} ({} values)", got.len());
    assert!(diff <= 1.0 / 255.0, "images differ by {diff}");
}

/// What naga can read without specialising: storage buffers per entry point, and workgroup
/// size and workgroup memory where they are not `override` expressions (those are checked by
/// wgpu at pipeline creation on the WebGPU-limits device above, with the values ops choose).
#[test]
fn every_shader_variant_fits_webgpu_default_limits_statically() {
    let mut failures = Vec::new();
    let mut entry_points = 0;
    for (name, _) in SHADERS {
        for dtype in [DType::F32, DType::F16] {
            let source = shader_source(name, dtype).expect(name);
            let module = validate_wgsl(&source, name).expect(name);
            let info = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .expect(name);
            for (i, ep) in module.entry_points.iter().enumerate() {
                entry_points += 1;
                let at = format!("{name}.wgsl::{} ({})", ep.name, dtype.name());
                let uses = info.get_entry_point(i);
                let mut storage = 0;
                let mut workgroup_bytes = 0u64;
                let mut sized = true;
                for (handle, var) in module.global_variables.iter() {
                    if uses[handle].is_empty() {
                        continue;
                    }
                    match var.space {
                        naga::AddressSpace::Storage { .. } => storage += 1,
                        naga::AddressSpace::WorkGroup => {
                            match module.types[var.ty].inner.size(module.to_ctx()) {
                                0 => sized = false,
                                n => workgroup_bytes += n as u64,
                            }
                            if let naga::TypeInner::Array {
                                size: naga::ArraySize::Pending(_),
                                ..
                            } = module.types[var.ty].inner
                            {
                                sized = false;
                            }
                        }
                        _ => {}
                    }
                }
                if storage > MAX_STORAGE_BUFFERS_PER_STAGE {
                    failures.push(format!("{at}: {storage} storage buffers"));
                }
                if sized && workgroup_bytes > MAX_WORKGROUP_STORAGE as u64 {
                    failures.push(format!("{at}: {workgroup_bytes} bytes of workgroup memory"));
                }
                if ep.workgroup_size_overrides.is_none() {
                    let n: u32 = ep.workgroup_size.iter().product();
                    if n > MAX_INVOCATIONS {
                        failures.push(format!("{at}: {n} invocations per workgroup"));
                    }
                }
            }
        }
    }
    assert!(entry_points > 10, "only {entry_points} entry points found");
    assert!(
        failures.is_empty(),
        "over WebGPU's default limits:\n{}",
        failures.join("\n")
    );
}

/// Workgroup memory (bytes) and invocations of `shader::entry` specialised with `key`'s override
/// constants, as wgpu specialises a pipeline (naga's `process_overrides`).
fn specialised(key: &stipple::gpu::KernelKey) -> (u64, u32) {
    let at = format!("{}::{} {:?}", key.shader, key.entry, key.overrides);
    let source = shader_source(key.shader, key.dtype).expect(&at);
    let module = validate_wgsl(&source, key.shader).expect(&at);
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .expect(&at);
    let mut constants = naga::back::PipelineConstants::default();
    for &(name, value) in &key.overrides {
        constants.insert(name.to_string(), value as f64);
    }
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, key.entry)),
        &constants,
    )
    .expect(&at);
    let (i, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.name == key.entry)
        .expect(&at);
    let uses = info.get_entry_point(i);
    let bytes = module
        .global_variables
        .iter()
        .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
        .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()) as u64)
        .sum();
    (bytes, ep.workgroup_size.iter().product())
}

/// Every configuration an adapter may choose by measurement (the tiled GEMMs' tiles, the GPU
/// attention kernel's queries per workgroup and K/V tile), specialised as a pipeline would be:
/// the shader's workgroup memory and invocations are the figures the ops plan with, within
/// WebGPU's defaults (16 KiB, 256), in f32 and f16.
#[test]
fn every_tuning_candidate_fits_webgpu_default_limits() {
    use stipple::gpu::KernelKey;
    use stipple::ops::attention_tiled::CONFIGS;
    use stipple::ops::matmul_tiled::TILES;
    for dtype in [DType::F32, DType::F16] {
        for (shader, conv) in [("matmul_tiled", false), ("conv2d_tiled", true)] {
            let entry = if conv { "conv2d_tiled" } else { "linear_tiled" };
            for tile in TILES {
                let key = tile.apply(KernelKey::new(shader, entry, dtype));
                let (bytes, invocations) = specialised(&key);
                assert_eq!(
                    bytes as usize,
                    tile.workgroup_bytes(conv),
                    "{entry} {}",
                    tile.name
                );
                assert!(
                    bytes <= MAX_WORKGROUP_STORAGE as u64,
                    "{entry} {}",
                    tile.name
                );
                assert_eq!(invocations as usize, tile.invocations(), "{}", tile.name);
                assert!(invocations <= MAX_INVOCATIONS);
            }
        }
        for config in CONFIGS {
            for d in [3usize, 40, 64, 80, 160] {
                let d4 = d.div_ceil(4) as u32;
                let base = KernelKey::new("attention", "partial_tiled", dtype)
                    .with("CAUSAL", 0)
                    .with("FINAL", 1)
                    .with("D4", d4)
                    .with("ALIGNED", 0);
                let (bytes, invocations) = specialised(&config.apply(base, d));
                assert_eq!(
                    bytes as usize,
                    config.workgroup_bytes(d),
                    "{} d{d}",
                    config.name
                );
                assert!(
                    bytes <= MAX_WORKGROUP_STORAGE as u64,
                    "{} d{d}",
                    config.name
                );
                assert_eq!(invocations as usize, config.queries, "{}", config.name);
                assert!(invocations <= MAX_INVOCATIONS);
            }
        }
    }
}
