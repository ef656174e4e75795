//! `stipple bench soak`: many generations in one process with varied sizes and schedulers,
//! checking that memory stays flat (plans are reused, buffers freed) and that equal settings
//! give bit-identical images.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::{GenerateOptions, Pipeline, Progress};
use crate::schedulers::SCHEDULER_NAMES;

#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub runs: usize,
    pub seconds: f64,
    /// Resident set size of the process (Linux /proc; 0 elsewhere) after the first round and at
    /// the end: every plan exists after one round, so growth after it is a leak.
    pub rss_after_first_round_bytes: u64,
    pub rss_end_bytes: u64,
    pub plan_bytes_after_first_round: u64,
    /// Plan memory at the end of the last complete round: the plan caches keep a few plans per
    /// kind, least recently used out, so mid-round they hold another mix of sizes (200 runs of
    /// 21-run rounds read 1.20 → 1.39 MiB at the very end, 1.20 → 1.20 at round ends).
    pub plan_bytes_end: u64,
    /// Runs whose settings were seen before, and how many of them reproduced the image exactly.
    pub repeated_runs: usize,
    pub identical_repeats: usize,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// FNV-1a over the image's bits: equal hashes mean identical images here.
fn image_hash(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ v.to_bits() as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `runs` generations cycling through `sizes` (width, height), the seven schedulers and two
/// seeds, `steps` steps each. `progress(run)` is called after each.
pub fn soak(
    pipe: &mut Pipeline,
    runs: usize,
    steps: usize,
    sizes: &[(usize, usize)],
    mut progress: impl FnMut(usize),
) -> Result<SoakReport> {
    if sizes.is_empty() || runs == 0 {
        return Err(Error::invalid(
            "soak",
            "needs at least one size and one run",
        ));
    }
    let round = sizes.len() * SCHEDULER_NAMES.len();
    let start = std::time::Instant::now();
    let mut seen: HashMap<(usize, usize, &str, u64), u64> = HashMap::new();
    let (mut repeated, mut identical) = (0, 0);
    let (mut rss_first, mut plans_first, mut plans_last_round) = (0, 0, 0);
    for run in 0..runs {
        let (width, height) = sizes[run % sizes.len()];
        let scheduler = SCHEDULER_NAMES[(run / sizes.len()) % SCHEDULER_NAMES.len()];
        let seed = (run / round % 2) as u64; // rounds 3, 4, … repeat rounds 1, 2
        let options = GenerateOptions {
            prompt: format!("a soak test with seed {seed}"),
            steps,
            guidance_scale: if scheduler == "lcm" { 1.0 } else { 5.0 },
            seed,
            width,
            height,
            scheduler: Some(scheduler.into()),
            ..Default::default()
        };
        let out = pipe.generate(&options, |_, _| Progress::Continue)?;
        let hash = image_hash(&out.images);
        if let Some(previous) = seen.insert((width, height, scheduler, seed), hash) {
            repeated += 1;
            identical += usize::from(previous == hash);
        }
        if run + 1 == round.min(runs) {
            rss_first = rss_bytes();
            plans_first = pipe.plan_bytes();
        }
        if (run + 1) % round == 0 || run + 1 == round.min(runs) {
            plans_last_round = pipe.plan_bytes();
        }
        progress(run + 1);
    }
    Ok(SoakReport {
        runs,
        seconds: start.elapsed().as_secs_f64(),
        rss_after_first_round_bytes: rss_first,
        rss_end_bytes: rss_bytes(),
        plan_bytes_after_first_round: plans_first,
        plan_bytes_end: plans_last_round,
        repeated_runs: repeated,
        identical_repeats: identical,
    })
}
