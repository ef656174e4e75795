//! Device faults become errors, not panics or hangs, and the library stays usable: a plan run
//! on a destroyed device (what a driver reset or a GPU hang looks like to wgpu) returns an
//! error, and a fresh `Gpu` and `Pipeline` work afterwards.

mod common;

use common::golden::fixture;
use common::*;
use stipple::ops::elementwise::{self, Activation};
use stipple::pipeline::{GenerateOptions, Pipeline, Progress};
use stipple::{DType, Gpu, GpuOptions, Graph, Plan};

#[test]
fn lost_device_is_an_error_and_a_new_device_works() {
    if gpu().is_none() {
        return;
    }
    // A private device: the shared test device must stay alive for the other tests.
    let doomed = Gpu::new(&GpuOptions::from_env()).expect("device");
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[1024]).expect("x");
    let y = elementwise::activation(&mut g, "act", x, Activation::Silu).expect("act");
    g.output("y", y).expect("out");
    let plan = Plan::new(&doomed, g).expect("plan");
    plan.write_input("x", &[1.0; 1024]).expect("write");
    doomed.device.destroy();
    let result = plan.run().and_then(|_| plan.read_output("y"));
    let err = result
        .expect_err("a destroyed device must not produce results")
        .to_string();
    eprintln!("after destroy: {err}");
    assert!(
        err.to_lowercase().contains("lost")
            || err.to_lowercase().contains("destroy")
            || err.contains("GPU"),
        "{err}"
    );

    // A new device and pipeline work.
    let fresh = Gpu::new(&GpuOptions::from_env()).expect("new device");
    let mut pipe = Pipeline::load(&fresh, &fixture("tiny-pipe"), None).expect("load");
    let opts = GenerateOptions {
        prompt: "an apple".into(),
        steps: 2,
        width: 24,
        height: 16,
        ..Default::default()
    };
    let out = pipe
        .generate(&opts, |_, _| Progress::Continue)
        .expect("generate after a lost device");
    assert!(out.images.iter().all(|v| v.is_finite()));
}
