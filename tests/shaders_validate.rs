//! No GPU needed: every shader parses and validates with naga, in its f32 and f16 variants.

use stipple::gpu::kernels::{shader_source, SHADERS};
use stipple::DType;

fn validate(name: &str, dtype: DType) -> Result<(), String> {
    let source = shader_source(name, dtype).map_err(|e| e.to_string())?;
    let module = naga::front::wgsl::parse_str(&source).map_err(|e| e.emit_to_string(&source))?;
    let caps = naga::valid::Capabilities::SHADER_FLOAT16 | naga::valid::Capabilities::default();
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| e.emit_to_string(&source))?;
    // Every entry point is a compute shader with the `params` uniform at binding 0.
    if module.entry_points.is_empty() {
        return Err("no entry points".into());
    }
    Ok(())
}

#[test]
fn every_shader_validates_in_f32_and_f16() {
    let mut failures = Vec::new();
    for (name, _) in SHADERS {
        for dtype in [DType::F32, DType::F16] {
            if let Err(e) = validate(name, dtype) {
                failures.push(format!("{name} ({}): {e}", dtype.name()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "shader validation failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(&dir).expect("shaders/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            assert!(
                SHADERS.iter().any(|(n, _)| *n == stem),
                "{} is not in gpu::kernels::SHADERS",
                path.display()
            );
        }
    }
}

#[test]
fn f16_variant_swaps_the_storage_alias() {
    let src = shader_source("matmul", DType::F16).expect("matmul");
    assert!(src.starts_with("enable f16;"));
    assert!(src.contains("alias T = f16;") && !src.contains("alias T = f32;"));
    assert!(shader_source("no_such_shader", DType::F32).is_err());
}
