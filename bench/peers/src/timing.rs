//! Wall-clock timing to completion, the same way for both libraries.

use std::time::Instant;

use burn::prelude::*;
use stipple::bench::cases::Case;
use stipple::graph::Plan;
use stipple::Gpu;

use crate::burn_cases::PeerCase;

/// A plan of `case` with its inputs written.
pub fn stipple_plan(gpu: &Gpu, case: &Case) -> stipple::Result<Plan> {
    let plan = Plan::new(gpu, case.graph.clone())?;
    for (name, data) in &case.inputs {
        plan.write_input(name, data)?;
    }
    Ok(plan)
}

/// Seconds from recording to completion of one run.
pub fn stipple_once(gpu: &Gpu, plan: &Plan) -> stipple::Result<f64> {
    let start = Instant::now();
    plan.run()?;
    gpu.wait("peers benchmark")?;
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds from queueing burn's op to the device's completion of it.
pub fn burn_once(device: &Device, case: &PeerCase) -> f64 {
    let start = Instant::now();
    let y = (case.run)();
    device.sync().expect("burn device sync");
    let secs = start.elapsed().as_secs_f64();
    drop(y);
    secs
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
