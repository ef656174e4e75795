//! The graph executor: liveness-based buffer reuse keeps a chain's peak far below the sum of its
//! tensors, a plan replays with new inputs (and new per-run scalars) without rebuilding, outputs
//! are never overwritten by reused buffers, and misuse gives named errors.

mod common;

use common::*;
use stipple::ops::elementwise::{self, Activation};
use stipple::{DType, Graph, Plan};

#[test]
fn chain_reuses_buffers() {
    // 40 ops on a 1 MiB tensor: without reuse 40 MiB of intermediates; with reuse 2 buffers.
    let n = 256 * 1024;
    let mut g = Graph::new(DType::F32);
    let mut x = g.input("x", &[n]).expect("x");
    for i in 0..40 {
        x = elementwise::activation(&mut g, &format!("act{i}"), x, Activation::Silu).expect("op");
    }
    g.output("y", x).expect("out");
    let m = g.memory();
    let tensor = 4 * n as u64;
    assert_eq!(m.unshared, 39 * tensor);
    assert!(
        m.pooled <= 2 * tensor,
        "pooled {} bytes for a chain of 1 MiB tensors",
        m.pooled
    );
    assert!(m.activation_peak() <= 4 * tensor);

    if let Some(gpu) = gpu() {
        let plan = Plan::new(&gpu, g).expect("plan");
        assert_eq!(plan.memory(), m);
        let data = Rng::new(1).vec(n, 3.0);
        plan.write_input("x", &data).expect("write");
        plan.run().expect("run");
        let got = plan.read_output("y").expect("read");
        let want = (0..40).fold(data, |v, _| {
            elementwise::reference::unary(&v, Activation::Silu, 1.0, 0.0)
        });
        assert_close("40 × silu", &got, &want, 1e-5, 1e-5);
    }
}

#[test]
fn diamond_keeps_values_alive_until_last_use() {
    // a = silu(x); b = gelu(a); c = a + b: `a` must survive `b`'s dispatch.
    let Some(gpu) = gpu() else { return };
    let n = 1000;
    let x = Rng::new(2).vec(n, 2.0);
    let got = run_graph(&gpu, DType::F32, &[("x", &[n], &x)], |g, ids| {
        let a = elementwise::activation(g, "a", ids[0], Activation::Silu)?;
        let b = elementwise::activation(g, "b", a, Activation::Gelu)?;
        let b2 = elementwise::scale(g, "b2", b, 2.0)?;
        elementwise::add(g, "c", a, b2)
    });
    let a = elementwise::reference::unary(&x, Activation::Silu, 1.0, 0.0);
    let b = elementwise::reference::unary(&a, Activation::Gelu, 2.0, 0.0);
    let want: Vec<f32> = a.iter().zip(&b).map(|(p, q)| p + q).collect();
    assert_close("diamond", &got, &want, 1e-5, 1e-5);
}

#[test]
fn replay_with_new_inputs_and_scalars() {
    // y = silu(x) · s with s a per-run scalar input (like a scheduler coefficient).
    let Some(gpu) = gpu() else { return };
    let n = 4099;
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[n]).expect("x");
    let s = g.input("s", &[1]).expect("s");
    let a = elementwise::activation(&mut g, "a", x, Activation::Silu).expect("a");
    let y = elementwise::mul(&mut g, "y", a, s).expect("y");
    g.output("y", y).expect("out");
    let plan = Plan::new(&gpu, g).expect("plan");
    let dispatches = plan.dispatch_count();
    for run in 0..3 {
        let data = Rng::new(run).vec(n, 2.0);
        let scale = run as f32 + 0.5;
        plan.write_input("x", &data).expect("x");
        plan.write_input("s", &[scale]).expect("s");
        plan.run().expect("run");
        let want = elementwise::reference::unary(&data, Activation::Silu, scale, 0.0);
        assert_close(
            &format!("replay {run}"),
            &plan.read_output("y").expect("read"),
            &want,
            1e-5,
            1e-5,
        );
        assert_eq!(plan.dispatch_count(), dispatches);
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[4]).expect("x");
    assert!(g
        .input("x", &[4])
        .unwrap_err()
        .to_string()
        .contains("\"x\""));
    assert!(g
        .input("empty", &[0, 3])
        .unwrap_err()
        .to_string()
        .contains("empty"));
    assert!(g.output("y", x).is_err(), "an input cannot be an output");
    let y = elementwise::activation(&mut g, "a", x, Activation::Silu).expect("a");
    g.output("y", y).expect("out");
    if let Some(gpu) = gpu() {
        let plan = Plan::new(&gpu, g).expect("plan");
        let err = plan.write_input("nope", &[1.0]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = plan.write_input("x", &[1.0; 3]).unwrap_err().to_string();
        assert!(err.contains('3') && err.contains('4'), "{err}");
        assert!(plan
            .read_output("missing")
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}

#[test]
fn oversized_tensor_is_a_limit_error() {
    let Some(gpu) = gpu() else { return };
    let max = gpu.limits.max_storage_buffer_binding_size as usize;
    let mut g = Graph::new(DType::F32);
    let x = g.input("huge_latents", &[max / 4 + 16]).expect("x");
    let y = elementwise::activation(&mut g, "a", x, Activation::Silu).expect("a");
    g.output("y", y).expect("out");
    let err = Plan::new(&gpu, g).err().expect("must fail").to_string();
    assert!(
        err.contains("huge_latents") && err.contains("max_storage_buffer_binding_size"),
        "{err}"
    );
}
