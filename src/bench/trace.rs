//! Chrome trace-event JSON of profiled dispatches (`--trace FILE`): one complete event
//! (`"ph": "X"`) per dispatch, timestamps and durations in µs from the GPU timestamps, args
//! kernel, module, shapes and FLOPs. Perfetto (ui.perfetto.dev) and chrome://tracing open it.

use std::path::Path;

use serde_json::{json, Value};

use super::tables::{module_of, node_of, ProfiledDispatch};
use crate::error::{Error, Result};

/// `{"traceEvents": [...]}` for `dispatches` (modules at `depth`, see [`module_of`]).
pub fn chrome_trace(dispatches: &[ProfiledDispatch], depth: usize) -> Value {
    let events: Vec<Value> = dispatches
        .iter()
        .map(|d| {
            json!({
                "name": d.label,
                "cat": d.model,
                "ph": "X",
                "ts": d.start_seconds * 1e6,
                "dur": d.seconds * 1e6,
                "pid": 1,
                "tid": 1,
                "args": {
                    "kernel": d.kernel,
                    "module": module_of(node_of(d), depth),
                    "shapes": d.shapes,
                    "flops": d.flops,
                },
            })
        })
        .collect();
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

/// Write the trace to `path` with the atomic output writer (`-` = standard output).
pub fn write_trace(path: &Path, dispatches: &[ProfiledDispatch], depth: usize) -> Result<()> {
    let text = serde_json::to_string(&chrome_trace(dispatches, depth))
        .map_err(|e| Error::invalid("trace", e.to_string()))?;
    crate::output_file::write_output_bytes(path, text.as_bytes())
}
