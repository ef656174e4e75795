//! Profile tables: GPU time of profiled dispatches grouped by kernel (`shader::entry`) or by
//! diffusers module (the node label's module path cut at a depth), with dispatch counts,
//! milliseconds, share of the total and GFLOP/s (FLOPs counted from the graph).

use std::collections::BTreeMap;

use serde::Serialize;

/// One dispatch of a profiled run, with what the graph says about it.
#[derive(Clone, Debug, Serialize)]
pub struct ProfiledDispatch {
    /// The plan's model (`unet`, `text_encoder_2`, …).
    pub model: String,
    /// The node name (diffusers module path).
    pub label: String,
    /// `shader::entry`.
    pub kernel: String,
    /// From the start of the profile (trace time).
    pub start_seconds: f64,
    pub seconds: f64,
    pub flops: u64,
    /// `binding:[shape]` of the bound values.
    pub shapes: String,
}

/// A group of dispatches.
#[derive(Clone, Debug, Serialize)]
pub struct ShareRow {
    pub name: String,
    pub dispatches: usize,
    pub ms: f64,
    /// Of the summed dispatch times of the profile.
    pub share: f64,
    pub flops: u64,
    pub gflops: f64,
}

/// `label`'s module path at `depth`: each depth is one named part with its index
/// (`down_blocks.1`, then `attentions.0`, …); the roots `decoder`, `encoder`, `text_model` and
/// `text_model.encoder` are kept but not counted, and a query-chunk suffix `[a..b]` is dropped.
/// Depth 1: `down_blocks.1`, `mid_block`, `conv_in`; depth 2: `up_blocks.2.attentions.0`.
pub fn module_of(label: &str, depth: usize) -> String {
    let label = match label.rfind('[') {
        Some(i) if label.ends_with(']') => &label[..i],
        _ => label,
    };
    let segs: Vec<&str> = label.split('.').collect();
    let mut out = Vec::new();
    let mut named = 0;
    let mut i = 0;
    while i < segs.len() {
        let s = segs[i];
        let root = (i == 0 && matches!(s, "decoder" | "encoder" | "text_model"))
            || (i == 1 && segs[0] == "text_model" && s == "encoder");
        if !root {
            if named == depth {
                break;
            }
            named += 1;
        }
        out.push(s);
        i += 1;
        while i < segs.len() && segs[i].parse::<usize>().is_ok() {
            out.push(segs[i]);
            i += 1;
        }
    }
    out.join(".")
}

fn group(
    dispatches: &[ProfiledDispatch],
    key: impl Fn(&ProfiledDispatch) -> String,
) -> Vec<ShareRow> {
    let total: f64 = dispatches.iter().map(|d| d.seconds).sum();
    let mut groups: BTreeMap<String, (usize, f64, u64)> = BTreeMap::new();
    for d in dispatches {
        let e = groups.entry(key(d)).or_default();
        e.0 += 1;
        e.1 += d.seconds;
        e.2 += d.flops;
    }
    let mut rows: Vec<ShareRow> = groups
        .into_iter()
        .map(|(name, (dispatches, seconds, flops))| ShareRow {
            name,
            dispatches,
            ms: seconds * 1e3,
            share: seconds / total.max(1e-12),
            flops,
            gflops: if seconds > 0.0 {
                flops as f64 / seconds / 1e9
            } else {
                0.0
            },
        })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

/// Several models in one profile: group names get a `model: ` prefix.
fn prefixed(dispatches: &[ProfiledDispatch], name: String, d: &ProfiledDispatch) -> String {
    let several = dispatches.iter().any(|x| x.model != dispatches[0].model);
    if several {
        format!("{}: {name}", d.model)
    } else {
        name
    }
}

/// Time by kernel, slowest first.
pub fn by_kernel(dispatches: &[ProfiledDispatch]) -> Vec<ShareRow> {
    group(dispatches, |d| prefixed(dispatches, d.kernel.clone(), d))
}

/// Time by module at `depth` ([`module_of`] of [`node_of`]), slowest first.
pub fn by_module(dispatches: &[ProfiledDispatch], depth: usize) -> Vec<ShareRow> {
    group(dispatches, |d| {
        prefixed(dispatches, module_of(node_of(d), depth), d)
    })
}

/// The node a dispatch belongs to: its label without a trailing `.{entry}` that ops with
/// several dispatches append (`norm1.partial_stats`, `attn1.attention.combine` → `norm1`,
/// `attn1.attention`).
pub fn node_of(d: &ProfiledDispatch) -> &str {
    let label = d.label.split('[').next().unwrap_or(&d.label);
    let entry = d.kernel.rsplit("::").next().unwrap_or("");
    label
        .strip_suffix(entry)
        .and_then(|l| l.strip_suffix('.'))
        .unwrap_or(label)
}

/// A table as text: `what` names the first column.
pub fn format_table(what: &str, rows: &[ShareRow]) -> String {
    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(what.len());
    let mut s = format!(
        "{what:<width$} {:>10} {:>11} {:>7} {:>9}\n",
        "dispatches", "ms", "share", "GFLOP/s"
    );
    for r in rows {
        s += &format!(
            "{:<width$} {:>10} {:>11.2} {:>6.1}% {:>9.2}\n",
            r.name,
            r.dispatches,
            r.ms,
            100.0 * r.share,
            r.gflops
        );
    }
    s
}

/// The dispatches of collected runs ([`crate::gpu::collector::Collector::take`]) on one
/// timeline: each run at its GPU start time, or right after the previous run where clocks of
/// two submissions disagree (so times never go backwards).
pub fn from_runs(runs: &[crate::gpu::collector::TimedRun]) -> Vec<ProfiledDispatch> {
    let t0 = runs.first().map_or(0.0, |r| r.start_seconds);
    let mut end = 0.0f64;
    let mut out = Vec::new();
    for run in runs {
        let mut t = (run.start_seconds - t0).max(end);
        for (info, &s) in run.steps.iter().zip(&run.seconds) {
            out.push(ProfiledDispatch {
                model: run.model.to_string(),
                label: info.label.clone(),
                kernel: info.kernel.clone(),
                start_seconds: t,
                seconds: s,
                flops: info.flops,
                shapes: info.shapes.clone(),
            });
            t += s;
        }
        end = t;
    }
    out
}

/// The summary `generate --profile` prints: per model (in order of first appearance), its
/// runs' GPU time by kernel and by module at `depth`, summed over the runs.
pub fn format_model_summary(
    dispatches: &[ProfiledDispatch],
    runs: &[(String, usize)],
    depth: usize,
) -> String {
    let mut models: Vec<&str> = Vec::new();
    for d in dispatches {
        if !models.contains(&d.model.as_str()) {
            models.push(&d.model);
        }
    }
    let mut s = String::new();
    for model in models {
        let own: Vec<ProfiledDispatch> = dispatches
            .iter()
            .filter(|d| d.model == model)
            .cloned()
            .collect();
        let seconds: f64 = own.iter().map(|d| d.seconds).sum();
        let count = runs.iter().find(|(m, _)| m == model).map_or(0, |r| r.1);
        s += &format!(
            "\n{model}: {count} run{}, {:.1} ms of GPU time in {} dispatches\n",
            if count == 1 { "" } else { "s" },
            seconds * 1e3,
            own.len()
        );
        s += &format_table("kernel", &by_kernel(&own));
        s += "\n";
        s += &format_table(&format!("module (depth {depth})"), &by_module(&own, depth));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::module_of;

    #[test]
    fn module_paths() {
        let l = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q+to_k+to_v";
        assert_eq!(module_of(l, 1), "down_blocks.1");
        assert_eq!(module_of(l, 2), "down_blocks.1.attentions.0");
        assert_eq!(module_of("mid_block.resnets.0.conv1", 1), "mid_block");
        assert_eq!(module_of("conv_in", 3), "conv_in");
        assert_eq!(
            module_of("up_blocks.2.attentions.0.proj_in", 2),
            "up_blocks.2.attentions.0"
        );
        assert_eq!(
            module_of("decoder.up_blocks.0.resnets.0.norm2.partial_stats", 1),
            "decoder.up_blocks.0"
        );
        assert_eq!(
            module_of("text_model.encoder.layers.3.mlp.fc1", 1),
            "text_model.encoder.layers.3"
        );
        assert_eq!(
            module_of("mid_block.attentions.0.attn[64..128]", 9),
            "mid_block.attentions.0.attn"
        );
    }
}
