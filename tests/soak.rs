//! A short soak: 63 generations on the tiny model in one process (3 sizes × 7 schedulers × 3
//! rounds): plan memory stays flat after the first round and repeated settings reproduce their
//! images bit for bit. (`stipple bench soak --runs 200` is the documented long version.)

mod common;

use common::golden::fixture;
use common::*;
use stipple::pipeline::Pipeline;

#[test]
fn repeated_generations_are_identical_and_memory_is_flat() {
    let Some(gpu) = gpu() else { return };
    let mut pipe = Pipeline::load(&gpu, &fixture("tiny-pipe"), None).expect("load");
    let sizes = [(24, 16), (16, 16), (32, 24)];
    let report = stipple::bench::soak::soak(&mut pipe, 63, 2, &sizes, |_| {}).expect("soak");
    eprintln!("{report:?}");
    assert_eq!(report.repeated_runs, 21);
    assert_eq!(report.identical_repeats, report.repeated_runs);
    assert_eq!(report.plan_bytes_end, report.plan_bytes_after_first_round);
}
