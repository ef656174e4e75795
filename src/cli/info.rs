//! `stipple info`: adapters, and the chosen one's features and key limits.

use stipple::gpu::adapter_summaries;
use stipple::{Gpu, GpuOptions};

pub fn run(options: &GpuOptions) -> anyhow::Result<()> {
    let adapters = adapter_summaries(options.backend.as_deref())?;
    println!(
        "Adapters{}:",
        options
            .backend
            .as_ref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default()
    );
    if adapters.is_empty() {
        println!("  (none)");
    }
    for a in &adapters {
        println!("  {a}");
    }
    let gpu = Gpu::new(options)?;
    let i = &gpu.info;
    println!(
        "\nChosen: {} ({:?}, {:?})",
        i.name, i.backend, i.device_type
    );
    println!(
        "Graphs built for: {} kernels, loop budget {}, shader checks {}{}",
        gpu.target.variant.name(),
        gpu.target
            .loop_budget
            .map_or("none".to_string(), |b| b.to_string()),
        gpu.kernels.checks().name(),
        gpu.kernels
            .shader_dir()
            .map(|d| format!("; shaders from {}", d.dir.display()))
            .unwrap_or_default()
    );
    println!("{}", autotune_line(&gpu));
    let yes_no = |f: wgpu::Features| {
        if gpu.features.contains(f) {
            "yes"
        } else {
            "no"
        }
    };
    println!("Features:");
    println!(
        "  shader-f16 (f16 storage):        {}",
        yes_no(wgpu::Features::SHADER_F16)
    );
    println!(
        "  timestamp-query:                 {}",
        yes_no(wgpu::Features::TIMESTAMP_QUERY)
    );
    println!(
        "  timestamp-query-inside-passes:   {}",
        yes_no(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    );
    println!(
        "  subgroups:                       {} (size {}..{})",
        yes_no(wgpu::Features::SUBGROUP),
        i.subgroup_min_size,
        i.subgroup_max_size
    );
    println!(
        "  pipeline-cache:                  {}",
        yes_no(wgpu::Features::PIPELINE_CACHE)
    );
    let l = &gpu.limits;
    let mib = |b: u64| format!("{} MiB", b >> 20);
    println!("Limits:");
    println!(
        "  max_storage_buffer_binding_size: {}",
        mib(l.max_storage_buffer_binding_size)
    );
    println!(
        "  max_buffer_size:                 {}",
        mib(l.max_buffer_size)
    );
    println!(
        "  max_compute_workgroup_storage:   {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    );
    println!(
        "  max_compute_invocations/group:   {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups/dim:      {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_storage_buffers_per_stage:   {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_uniform_buffer_binding_size: {} KiB",
        l.max_uniform_buffer_binding_size >> 10
    );
    Ok(())
}

/// Where the autotune cache is and what it holds for this adapter.
fn autotune_line(gpu: &Gpu) -> String {
    use stipple::autotune::cache;
    let tuner = &gpu.autotune;
    let in_use = gpu.target.tuning.len();
    match tuner.cache_path() {
        None if !tuner.measuring() => {
            "Autotune: off (default kernel configurations; --shaders turns it off)".into()
        }
        None => format!("Autotune: on, no cache directory ({in_use} decisions in use)"),
        Some(path) => {
            let held = match cache::summary(path, tuner.adapter_key()) {
                Some((mine, entries)) => format!(
                    "{mine} decisions for this adapter, driver and stipple version; {entries} {} \
                     in the file",
                    if entries == 1 { "entry" } else { "entries" }
                ),
                None if path.exists() => "unusable: ignored".into(),
                None => "no file yet".into(),
            };
            format!(
                "Autotune: on; cache {} ({held}); `stipple bench autotune` refreshes it",
                path.display()
            )
        }
    }
}
