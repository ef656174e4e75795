//! Goldens written by tools/golden/models_golden.py: safetensors files of NCHW f32 tensors (and
//! i64 token ids), compared against plan outputs probe by probe.

use std::path::{Path, PathBuf};

use stipple::Plan;

pub fn fixture(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(model)
}

pub struct Golden {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Golden {
    pub fn open(path: PathBuf) -> Golden {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Golden { path, bytes }
    }

    fn tensors(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }

    pub fn names(&self) -> Vec<String> {
        self.tensors()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// An f32 tensor: (shape, values) as stored (NCHW for images).
    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self.tensors();
        let view = t
            .tensor(name)
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", self.path.display()));
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        (
            view.shape().to_vec(),
            bytemuck::pod_collect_to_vec(view.data()),
        )
    }

    /// An f32 tensor in stipple's layout: 4-D NCHW becomes NHWC; others unchanged.
    pub fn nhwc(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, data) = self.f32(name);
        match shape.as_slice() {
            &[n, c, h, w] => (vec![n, h, w, c], nchw_to_nhwc(&data, [n, c, h, w])),
            _ => (shape, data),
        }
    }

    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let t = self.tensors();
        let view = t
            .tensor(name)
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", self.path.display()));
        assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name}");
        (
            view.shape().to_vec(),
            bytemuck::pod_collect_to_vec(view.data()),
        )
    }
}

pub fn nchw_to_nhwc(x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..h * w {
                y[(b * h * w + i) * c + ch] = x[(b * c + ch) * h * w + i];
            }
        }
    }
    y
}

/// Compare plan outputs with goldens, in order, reporting every pair and failing at the first
/// that exceeds `tol` × max(1, max |golden|): the first divergent probe localises a bug.
pub fn compare_outputs(
    what: &str,
    plan: &Plan,
    golden: &Golden,
    pairs: &[(&str, &str)],
    tol: f32,
) -> Vec<(String, f32)> {
    let mut report = Vec::new();
    let mut first_bad = None;
    for &(output, golden_name) in pairs {
        let got = plan
            .read_output(output)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (_, want) = golden.nhwc(golden_name);
        assert_eq!(
            got.len(),
            want.len(),
            "{what}: {output} has {} values, golden {golden_name} {}",
            got.len(),
            want.len()
        );
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(
                0.0f32,
                |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) },
            );
        let rel = err / scale;
        eprintln!(
            "{what}: {output:<28} max abs err {err:.3e} (scale {scale:.2}, relative {rel:.3e})"
        );
        if rel > tol && first_bad.is_none() {
            first_bad = Some(format!("{output} (relative error {rel:.3e} > {tol:.1e})"));
        }
        report.push((output.to_string(), rel));
    }
    if let Some(bad) = first_bad {
        panic!("{what}: first divergent output: {bad}");
    }
    report
}
