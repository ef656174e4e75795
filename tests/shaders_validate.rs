//! No GPU needed: every shader parses and validates with naga, in its f32 and f16 variants
//! (every kernel variant: the attention kernels for CPUs and GPUs live in their own entry points
//! and files, all validated here); a shader directory (`--shaders DIR`) is validated when loaded,
//! with errors pointing at file:line.

use stipple::gpu::kernels::{
    shader_source, validate_wgsl, web_shader_source, ShaderDir, SHADERS, SUBGROUP_SHADERS,
};
use stipple::DType;

fn validate(name: &str, dtype: DType) -> Result<(), String> {
    let source = shader_source(name, dtype).map_err(|e| e.to_string())?;
    let module = validate_wgsl(&source, &format!("shaders/{name}.wgsl"))?;
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

#[test]
fn attention_variants_have_their_entry_points() {
    let entries = |name: &str| -> Vec<String> {
        let src = shader_source(name, DType::F16).expect(name);
        let module = validate_wgsl(&src, name).expect(name);
        module.entry_points.iter().map(|e| e.name.clone()).collect()
    };
    let names = entries("attention");
    for e in ["partial", "partial_tiled", "combine"] {
        assert!(names.iter().any(|n| n == e), "attention.wgsl lacks {e}");
    }
    // The lavapipe kernel (subgroups) lives in its own file; it shares attention.wgsl's combine.
    assert_eq!(entries("attention_lanes"), ["partial"]);
}

/// The shaders that use subgroup operations (lavapipe's GEMMs and attention, group norm's GPU
/// statistics): their entries validate in f32 and f16 with naga's SUBGROUP capability and fail
/// without it (so they really use subgroup operations, and a device without SUBGROUP must never
/// compile them); the web build's source starts with `enable subgroups;` (browsers require it)
/// on the first line, which naga, natively, rejects: natively the prelude leaves it out. Shaders
/// without subgroup operations get no such directive, on the web or natively.
#[test]
fn subgroup_shaders_validate_with_the_capability_and_carry_the_web_directive() {
    let expected: [(&str, &[&str]); 4] = [
        ("attention_lanes", &["partial"]),
        ("conv2d_subgroup", &["conv2d_subgroup"]),
        ("group_norm_subgroup", &["partial_stats", "finalize"]),
        ("matmul_subgroup", &["linear_subgroup"]),
    ];
    assert_eq!(SUBGROUP_SHADERS, expected.map(|(name, _)| name));
    for dtype in [DType::F32, DType::F16] {
        for (shader, want_entries) in expected {
            let native = shader_source(shader, dtype).expect("source");
            let native_first = native.lines().next().unwrap_or_default();
            assert!(!native_first.contains("enable subgroups"), "{native_first}");
            let module = validate_wgsl(&native, shader).expect("validates");
            let entries: Vec<&str> = module
                .entry_points
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            assert_eq!(entries, want_entries, "{shader} {}", dtype.name());

            let parsed = naga::front::wgsl::parse_str(&native).expect("parses");
            let without =
                naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16;
            let err = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), without)
                .validate(&parsed)
                .expect_err("subgroup operations need the SUBGROUP capability");
            assert!(format!("{err:?}").contains("SUBGROUP"), "{shader}: {err:?}");

            let web = web_shader_source(shader, dtype).expect("web source");
            let first = web.lines().next().unwrap_or_default();
            assert!(first.contains("enable subgroups;"), "{shader}: {first}");
            assert_eq!(
                first.contains("enable f16;"),
                dtype == DType::F16,
                "{shader}: {first}"
            );
            assert_eq!(web.lines().count(), native.lines().count());
            assert!(naga::front::wgsl::parse_str(&web).is_err());
        }

        for (name, _) in SHADERS
            .iter()
            .filter(|(n, _)| !SUBGROUP_SHADERS.contains(n))
        {
            let web = web_shader_source(name, dtype).expect(name);
            assert_eq!(web, shader_source(name, dtype).expect(name), "{name}");
        }
    }
}

/// A fresh directory under the target dir's tmp (removed first).
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn shader_dir_loads_edited_copies() {
    let dir = scratch("shaders_ok");
    let src = shader_source("attention", DType::F32).expect("attention");
    std::fs::write(
        dir.join("attention.wgsl"),
        src.replace("TILE_KEYS: u32 = 32u", "TILE_KEYS: u32 = 16u"),
    )
    .expect("write");
    std::fs::write(dir.join("notes.txt"), "not a shader").expect("write");
    let loaded = ShaderDir::load(&dir).expect("load");
    assert_eq!(loaded.names().collect::<Vec<_>>(), ["attention"]);
}

#[test]
fn shader_dir_errors_name_file_and_line() {
    // A type error on a known line: the message starts with path:line:column.
    let dir = scratch("shaders_bad");
    let src = shader_source("softmax", DType::F32).expect("softmax");
    let mut lines: Vec<String> = src.lines().map(String::from).collect();
    let at = lines
        .iter()
        .position(|l| l.contains("alias T = f32;"))
        .expect("alias line");
    lines.insert(at + 1, "const BROKEN: u32 = 1.5;".into());
    let path = dir.join("softmax.wgsl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    let err = ShaderDir::load(&dir).unwrap_err().to_string();
    let want = format!("{}:{}:", path.display(), at + 2);
    assert!(err.contains(&want), "expected {want} in: {err}");

    // A syntax error.
    std::fs::write(&path, src.replacen("fn ", "fn fn ", 1)).expect("write");
    let err = ShaderDir::load(&dir).unwrap_err().to_string();
    assert!(err.contains("softmax.wgsl:"), "{err}");

    // A name that is no shader, and an empty directory.
    std::fs::remove_file(&path).expect("rm");
    std::fs::write(dir.join("atention.wgsl"), &src).expect("write");
    let err = ShaderDir::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("atention.wgsl") && err.contains("not the name"),
        "{err}"
    );
    let empty = scratch("shaders_empty");
    let err = ShaderDir::load(&empty).unwrap_err().to_string();
    assert!(err.contains("no .wgsl files"), "{err}");
    let err = ShaderDir::load(&empty.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
}
