//! Merging LoRA deltas into the packed GPU weights, and restoring the base weights.
//!
//! Every Linear / Conv2d weight a model loaded is a recorded [`Target`] (see
//! [`super::targets`]). A LoRA change then, per target it touches (now or before):
//!
//! ```text
//! W_part = base (re-read from the memory-mapped weights) + Σ_lora scale·up·down   (out, in·kh·kw)
//! packed = pack(W_part₀ ‖ W_part₁ ‖ …)                      as the loader packed it
//! tensor.write(packed)                                      same buffer: plans stay valid
//! ```
//!
//! Nothing else is re-read or re-uploaded, and every error (unmatched key, shape mismatch) is
//! found before the first buffer is written.

use super::names::{ModuleTable, Unresolved};
use super::targets::{Packing, Target, Targets};
use super::{Component, Format, LoraFile, LoraModule};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::{conv2d, matmul};
use crate::weights::Weights;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Error unless `up · down` has the shape (torch layout) of the module's weight.
pub fn check_fits(m: &LoraModule, shape: &[usize]) -> std::result::Result<(), String> {
    let out = shape.first().copied().unwrap_or(0);
    let numel: usize = shape.iter().product();
    let r = m.rank();
    if m.up_shape[0] != out || m.up.len() != out * r || m.down.len() * out != r * numel {
        return Err(format!(
            "up {:?} · down {:?} does not make the module's weight {shape:?}",
            m.up_shape, m.down_shape
        ));
    }
    Ok(())
}

/// `w += scale · up · down` for `w` in torch layout (out, in·kh·kw); shapes as [`check_fits`].
pub fn add_delta(w: &mut [f32], m: &LoraModule, scale: f32) {
    let r = m.rank();
    let rest = m.down.len() / r.max(1);
    for (o, row) in w.chunks_exact_mut(rest).enumerate() {
        for k in 0..r {
            let u = scale * m.up[o * r + k];
            for (x, &v) in row.iter_mut().zip(&m.down[k * rest..(k + 1) * rest]) {
                *x += u * v;
            }
        }
    }
}

/// What one LoRA did.
#[derive(Clone, Debug)]
pub struct LoraReport {
    pub path: PathBuf,
    pub format: Format,
    pub scale: f32,
    /// Modules changed, per component.
    pub modules: BTreeMap<Component, usize>,
    /// Keys that matched no module (only with `lenient`), with why.
    pub unmatched: Vec<String>,
}

impl LoraReport {
    /// Modules changed in all components.
    pub fn touched(&self) -> usize {
        self.modules.values().sum()
    }

    /// `x.safetensors (kohya, scale 0.8): 12 modules (unet 10, text_encoder 2)`.
    pub fn summary(&self) -> String {
        let per: Vec<String> = self
            .modules
            .iter()
            .map(|(c, n)| format!("{} {n}", c.folder()))
            .collect();
        let mut s = format!(
            "{} ({}, scale {}): {} modules ({})",
            self.path.display(),
            self.format.name(),
            self.scale,
            self.touched(),
            per.join(", ")
        );
        if !self.unmatched.is_empty() {
            s += &format!(", {} keys matched nothing", self.unmatched.len());
        }
        s
    }
}

/// Opens a component's base weights again (with the tensor names its model loaded).
pub type BaseWeights = Box<dyn Fn() -> Result<Weights> + Send + Sync>;

/// Per model: its targets, where its base weights are, and its module names.
#[derive(Default)]
pub struct LoraState {
    unet: Targets,
    text_encoder: Targets,
    text_encoder_2: Targets,
    /// How to reopen the weights each component was loaded from.
    bases: BTreeMap<Component, BaseWeights>,
    /// The prefix of a component's names in its weights, when it shares them with other
    /// components (a single file's `unet.`, `text_encoder.`): stripped to get module names.
    prefixes: BTreeMap<Component, String>,
    /// Weights currently holding a delta (restored to base when no LoRA touches them).
    applied: BTreeSet<(Component, String)>,
}

impl std::fmt::Debug for LoraState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraState")
            .field("unet", &self.unet.len())
            .field("text_encoder", &self.text_encoder.len())
            .field("text_encoder_2", &self.text_encoder_2.len())
            .field("bases", &self.bases.keys().collect::<Vec<_>>())
            .field("applied", &self.applied.len())
            .finish()
    }
}

impl LoraState {
    /// The targets to pass to the component's loading [`Ctx`](crate::models::Ctx).
    pub fn targets(&self, c: Component) -> &Targets {
        match c {
            Component::Unet => &self.unet,
            Component::TextEncoder => &self.text_encoder,
            Component::TextEncoder2 => &self.text_encoder_2,
        }
    }

    /// Where the component's base weights are read back from (what `Weights::open` takes).
    pub fn set_base(&mut self, c: Component, weights: impl Into<PathBuf>) {
        let path: PathBuf = weights.into();
        self.set_base_with(c, Box::new(move || Weights::open(&path)));
    }

    /// The component's base weights come from `open` (e.g. a single-file checkpoint whose
    /// tensor names a loader converts): it must give the tensors the model loaded, by the
    /// same names.
    pub fn set_base_with(&mut self, c: Component, open: BaseWeights) {
        self.bases.insert(c, open);
    }

    /// The component was loaded from `weights.pp(prefix)` of weights holding several
    /// components (single files: `unet`, `text_encoder`, …): its weight names start with
    /// `prefix.`, which is not part of the module names LoRA files use.
    pub fn set_prefix(&mut self, c: Component, prefix: &str) {
        self.prefixes.insert(c, format!("{prefix}."));
    }

    /// A recorded weight name without the component's prefix.
    fn module_weight<'n>(&self, c: Component, weight: &'n str) -> &'n str {
        self.prefixes
            .get(&c)
            .and_then(|p| weight.strip_prefix(p.as_str()))
            .unwrap_or(weight)
    }

    /// Whether any LoRA delta is in the GPU weights.
    pub fn is_active(&self) -> bool {
        !self.applied.is_empty()
    }

    /// Makes the GPU weights `base + Σ deltas of loras` (an empty list restores the base).
    /// A module no file matches is an error naming the file and key, unless `lenient` (then it
    /// is listed in the report). On error nothing has changed.
    pub fn apply(
        &mut self,
        gpu: &Gpu,
        loras: &[(LoraFile, f32)],
        lenient: bool,
    ) -> Result<Vec<LoraReport>> {
        // 1. index each component's targets by weight name; module tables.
        let mut targets: BTreeMap<Component, Vec<Target>> = BTreeMap::new();
        let mut parts: HashMap<(Component, String), Vec<usize>> = HashMap::new();
        let mut tables: BTreeMap<Component, ModuleTable> = BTreeMap::new();
        for c in Component::ALL {
            let list = self.targets(c).snapshot();
            for t in &list {
                for p in &t.parts {
                    let name = self.module_weight(c, &p.weight).to_string();
                    parts.insert((c, name), p.shape.clone());
                }
            }
            let modules: Vec<&str> = list
                .iter()
                .flat_map(|t| &t.parts)
                .filter_map(|p| self.module_weight(c, &p.weight).strip_suffix(".weight"))
                .collect();
            tables.insert(c, ModuleTable::new(c, modules));
            targets.insert(c, list);
        }

        // 2. resolve and check every module; deltas are only computed while repacking (one
        //    target at a time, so host memory stays at one weight, not the whole model).
        let mut deltas: Deltas = BTreeMap::new();
        let mut reports = Vec::with_capacity(loras.len());
        for (file, multiplier) in loras {
            let mut report = LoraReport {
                path: file.path.clone(),
                format: file.format,
                scale: *multiplier,
                modules: BTreeMap::new(),
                unmatched: Vec::new(),
            };
            for m in &file.modules {
                let err = |message: String| Error::Weight {
                    file: file.path.clone(),
                    tensor: m.key.clone(),
                    message,
                };
                let module = match tables[&m.component].resolve(&m.module) {
                    Ok(module) => module,
                    Err(why) => {
                        let message = unresolved_message(m.component, &why, &targets);
                        if lenient {
                            report.unmatched.push(format!("{}: {message}", m.key));
                            continue;
                        }
                        return Err(err(message));
                    }
                };
                let key = (m.component, format!("{module}.weight"));
                check_fits(m, &parts[&key]).map_err(err)?;
                deltas
                    .entry(key)
                    .or_default()
                    .push((m, m.scale(*multiplier)));
                *report.modules.entry(m.component).or_default() += 1;
            }
            reports.push(report);
        }

        // 3. rewrite every target holding a weight changed now or before.
        let touched: BTreeSet<&(Component, String)> =
            deltas.keys().chain(self.applied.iter()).collect();
        for (c, list) in &targets {
            let dirty: Vec<&Target> = list
                .iter()
                .filter(|t| {
                    t.parts.iter().any(|p| {
                        touched.contains(&(*c, self.module_weight(*c, &p.weight).to_string()))
                    })
                })
                .collect();
            if dirty.is_empty() {
                continue;
            }
            let open = self.bases.get(c).ok_or_else(|| {
                Error::invalid(
                    "LoRA",
                    format!("no base weights recorded for the {}", c.folder()),
                )
            })?;
            let base = open()?;
            let strip = |w: &str| self.module_weight(*c, w).to_string();
            for t in dirty {
                let packed = repack(&base, *c, t, &deltas, &strip)?;
                t.tensor.write_f32(gpu, &packed)?;
            }
        }
        self.applied = deltas.into_keys().collect();
        Ok(reports)
    }
}

/// Per weight, the modules adding to it and their scales.
type Deltas<'f> = BTreeMap<(Component, String), Vec<(&'f LoraModule, f32)>>;

/// The packed data of `t`: base weights read from `base` plus their deltas (keyed by the
/// weight's name without its component prefix, `module_weight`).
fn repack(
    base: &Weights,
    c: Component,
    t: &Target,
    deltas: &Deltas,
    module_weight: &dyn Fn(&str) -> String,
) -> Result<Vec<f32>> {
    let mut w = Vec::new();
    let mut out = 0;
    for p in &t.parts {
        let (shape, mut data) = base.root().get_any(&p.weight)?;
        if shape != p.shape {
            return Err(Error::Weight {
                file: base.path().to_path_buf(),
                tensor: p.weight.clone(),
                message: format!(
                    "shape {shape:?} differs from the {:?} loaded (was the file changed?)",
                    p.shape
                ),
            });
        }
        for (m, scale) in deltas
            .get(&(c, module_weight(&p.weight)))
            .into_iter()
            .flatten()
        {
            add_delta(&mut data, m, *scale);
        }
        out += shape[0];
        w.extend(data);
    }
    // A split layer's tensor holds only its rows (output features / channels) of the stack.
    Ok(match t.packing {
        Packing::Linear {
            in_features,
            rows,
            layout,
        } => {
            let (r0, r1) = rows.unwrap_or((0, out));
            let w = &w[r0 * in_features..r1 * in_features];
            matmul::pack_weight_laid_out(w, r1 - r0, in_features, layout)
        }
        Packing::Conv {
            shape: shape @ [_, _, kh, kw],
            rows,
            inputs,
            layout,
        } => {
            let (part, [n, c]) = conv_part(&w, shape, rows, inputs);
            conv2d::pack_weight_laid_out(&part, [n, c, kh, kw], layout)
        }
    })
}

/// Output channels `rows` and input channels `inputs` (all when None) of a torch-layout
/// (COUT, CIN, KH, KW) weight: the part a split or concatenation-input Conv2d's tensor holds,
/// (N, C, KH, KW), and [N, C].
fn conv_part(
    w: &[f32],
    [cout, cin, kh, kw]: [usize; 4],
    rows: Option<(usize, usize)>,
    inputs: Option<(usize, usize)>,
) -> (Vec<f32>, [usize; 2]) {
    let (c0, c1) = rows.unwrap_or((0, cout));
    let (i0, i1) = inputs.unwrap_or((0, cin));
    let (taps, per_co) = (kh * kw, cin * kh * kw);
    let part = w[c0 * per_co..c1 * per_co]
        .chunks_exact(per_co)
        .flat_map(|co| &co[i0 * taps..i1 * taps])
        .copied()
        .collect();
    (part, [c1 - c0, i1 - i0])
}

fn unresolved_message(
    c: Component,
    why: &Unresolved,
    targets: &BTreeMap<Component, Vec<Target>>,
) -> String {
    match why {
        Unresolved::Ambiguous(modules) => format!(
            "ambiguous: names several {} modules ({})",
            c.folder(),
            modules.join(", ")
        ),
        Unresolved::NotFound if targets[&c].is_empty() => format!(
            "targets the {}, which this model does not have (or no LoRA-able layer of it)",
            c.folder()
        ),
        Unresolved::NotFound => format!(
            "matches no Linear or Conv2d module of the {} (pass --lora-lenient to skip such keys)",
            c.folder()
        ),
    }
}

/// Reads each `(path, scale)` LoRA file.
pub fn read_all<P: AsRef<Path>>(loras: &[(P, f32)]) -> Result<Vec<(LoraFile, f32)>> {
    loras
        .iter()
        .map(|(p, s)| {
            if !s.is_finite() {
                return Err(Error::invalid(
                    "LoRA scale",
                    format!("{s} for {}", p.as_ref().display()),
                ));
            }
            Ok((LoraFile::open(p)?, *s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::ModuleKey;

    fn module(
        down_shape: Vec<usize>,
        down: Vec<f32>,
        up_shape: Vec<usize>,
        up: Vec<f32>,
    ) -> LoraModule {
        LoraModule {
            key: "k".into(),
            component: Component::Unet,
            module: ModuleKey::Dotted("m".into()),
            down_shape,
            down,
            up_shape,
            up,
            alpha: None,
        }
    }

    fn delta(m: &LoraModule, scale: f32, shape: &[usize]) -> Result<Vec<f32>, String> {
        check_fits(m, shape)?;
        let mut w = vec![0.0; shape.iter().product()];
        add_delta(&mut w, m, scale);
        Ok(w)
    }

    #[test]
    fn linear_delta_is_scaled_up_times_down() {
        // up (3, 2), down (2, 4)
        let up = vec![1.0, 2.0, 0.0, 1.0, -1.0, 0.5];
        let down = vec![1.0, 0.0, 2.0, -1.0, 0.0, 1.0, 1.0, 3.0];
        let m = module(vec![2, 4], down.clone(), vec![3, 2], up.clone());
        let d = delta(&m, 0.5, &[3, 4]).expect("fits");
        for o in 0..3 {
            for j in 0..4 {
                let want: f32 = (0..2).map(|k| up[o * 2 + k] * down[k * 4 + j]).sum::<f32>() * 0.5;
                assert_eq!(d[o * 4 + j], want, "({o}, {j})");
            }
        }
    }

    #[test]
    fn conv3x3_delta_keeps_torch_layout() {
        // LoCon: down (1, 2, 3, 3), up (2, 1, 1, 1) → ΔW (2, 2, 3, 3) = up[o]·down[ci, ky, kx].
        let down: Vec<f32> = (0..18).map(|i| i as f32).collect();
        let m = module(
            vec![1, 2, 3, 3],
            down.clone(),
            vec![2, 1, 1, 1],
            vec![1.0, -2.0],
        );
        let d = delta(&m, 1.0, &[2, 2, 3, 3]).expect("fits");
        assert_eq!(&d[..18], &down[..]);
        assert_eq!(d[18 + 5], -2.0 * 5.0);
    }

    #[test]
    fn conv_part_takes_output_and_input_ranges() {
        // (cout 5, cin 4, 3, 2): value = index.
        let shape = [5, 4, 3, 2];
        let w: Vec<f32> = (0..5 * 4 * 6).map(|i| i as f32).collect();
        let (whole, dims) = conv_part(&w, shape, None, None);
        assert_eq!((whole, dims), (w.clone(), [5, 4]));
        let (part, dims) = conv_part(&w, shape, Some((1, 3)), Some((1, 4)));
        assert_eq!(dims, [2, 3]);
        let want: Vec<f32> = (1..3)
            .flat_map(|co| {
                (1..4).flat_map(move |ci| (0..6).map(move |t| (co * 24 + ci * 6 + t) as f32))
            })
            .collect();
        assert_eq!(part, want);
    }

    #[test]
    fn mismatched_shapes_are_reported() {
        let m = module(vec![2, 4], vec![0.0; 8], vec![3, 2], vec![0.0; 6]);
        assert!(check_fits(&m, &[3, 5])
            .expect_err("in differs")
            .contains("[3, 5]"));
        assert!(check_fits(&m, &[4, 4]).is_err());
        assert!(check_fits(&m, &[3, 4]).is_ok());
        assert!(check_fits(&m, &[3, 4, 1, 1]).is_ok());
    }

    #[test]
    fn summary_counts_modules() {
        let r = LoraReport {
            path: "x.safetensors".into(),
            format: Format::Kohya,
            scale: 0.8,
            modules: [(Component::Unet, 10), (Component::TextEncoder, 2)].into(),
            unmatched: Vec::new(),
        };
        assert_eq!(
            r.summary(),
            "x.safetensors (kohya, scale 0.8): 12 modules (unet 10, text_encoder 2)"
        );
    }
}
