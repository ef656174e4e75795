//! The graph executor.
//!
//! A model builds a [`Graph`] once per (model, batch, size, dtype): named values (inputs, weights,
//! intermediates, outputs) and the compute dispatches between them, shape-checked as they are
//! added by the builders in `src/ops/`. [`Plan::new`] compiles it: intermediate buffers are
//! assigned by liveness (a buffer is reused once the tensor in it is dead), every pipeline and
//! bind group is created once, and [`Plan::run`] records the whole graph into one command
//! encoder. A plan is replayed with new inputs (`write_input`) without rebuilding anything.

mod exec;
pub mod flops;
mod liveness;
mod plan;

pub use exec::DispatchTime;
pub use liveness::{assign_buffers, BufferAssignment};
pub use plan::{Plan, PlanMemory};

use crate::error::{Error, Result};
use crate::gpu::tensor::numel;
use crate::gpu::{DType, KernelKey, Target, Tensor, TuneKey};

/// Handle to a value in a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) usize);

/// Where a value's storage comes from.
#[derive(Clone, Debug)]
pub enum ValueKind {
    /// Written by the caller before each run; a dedicated buffer.
    Input,
    /// Owned by the caller (weights): bound as is.
    Constant(Tensor),
    /// Produced by a dispatch; lives in a pooled buffer while it is needed.
    Intermediate,
    /// Another value's storage under a new shape (a free reshape); never itself an alias.
    Alias(ValueId),
}

#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub kind: ValueKind,
    /// Read back after a run: gets a dedicated buffer that is never reused.
    pub is_output: bool,
}

impl Value {
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn bytes(&self) -> u64 {
        self.dtype.buffer_bytes(self.numel())
    }

    /// Whether the value lives in the pooled (liveness-reused) buffers.
    pub fn is_pooled(&self) -> bool {
        matches!(self.kind, ValueKind::Intermediate) && !self.is_output
    }
}

/// One compute dispatch. Binding 0 is the `params` uniform; `buffers` gives the storage bindings
/// as (binding number, value): entry points of one shader file share binding numbers, so an entry
/// point may use, say, bindings 2 and 3 only.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// The diffusers-style node name (labels the GPU pass).
    pub label: String,
    pub kernel: KernelKey,
    /// Uniform bytes (a `#[repr(C)]` params struct).
    pub params: Vec<u8>,
    pub buffers: Vec<(u32, ValueId)>,
    pub workgroups: [u32; 3],
}

/// A tunable choice an op made while the graph was built ([`Graph::tuned`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TuneUse {
    pub key: TuneKey,
    /// The configuration it used (`None`: no decision existed, the op ran its default).
    pub decision: Option<String>,
}

/// A graph of values and dispatches, built once and compiled into a [`Plan`].
#[derive(Clone, Debug)]
pub struct Graph {
    /// Storage dtype of activations (f32 accumulation inside every kernel regardless).
    pub dtype: DType,
    /// What the ops shape their kernels for (variant, loop budget, limits).
    pub target: Target,
    pub(crate) values: Vec<Value>,
    pub(crate) dispatches: Vec<Dispatch>,
    /// Output names and their values.
    pub(crate) outputs: Vec<(String, ValueId)>,
    probes: bool,
    /// Tunable choices made by the ops, one per key (what the autotuner looks at).
    tuning: Vec<TuneUse>,
}

impl Graph {
    /// A graph for the conservative default [`Target`] (CPU-shaped kernels under the loop
    /// budget: runs on every adapter). Models use [`Graph::for_target`].
    pub fn new(dtype: DType) -> Self {
        Self::for_target(dtype, &Target::default())
    }

    /// A graph whose ops pick their kernels for `target` (usually `gpu.target`).
    pub fn for_target(dtype: DType, target: &Target) -> Self {
        Graph {
            dtype,
            target: target.clone(),
            values: Vec::new(),
            dispatches: Vec::new(),
            outputs: Vec::new(),
            probes: false,
            tuning: Vec::new(),
        }
    }

    fn add_value(&mut self, name: &str, shape: &[usize], dtype: DType, kind: ValueKind) -> ValueId {
        self.values.push(Value {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
            kind,
            is_output: false,
        });
        ValueId(self.values.len() - 1)
    }

    /// A caller-written input in the graph's dtype.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<ValueId> {
        self.input_with_dtype(name, shape, self.dtype)
    }

    /// A caller-written input with its own dtype (e.g. f32 scheduler scalars in an f16 graph).
    pub fn input_with_dtype(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<ValueId> {
        if self
            .find(name, |v| matches!(v.kind, ValueKind::Input))
            .is_some()
        {
            return Err(Error::shape(name, "an input of this name already exists"));
        }
        check_shape(name, shape)?;
        Ok(self.add_value(name, shape, dtype, ValueKind::Input))
    }

    /// A caller-owned tensor (a weight) bound as is.
    pub fn constant(&mut self, tensor: &Tensor) -> ValueId {
        let name = tensor.label.clone();
        self.add_value(
            &name,
            &tensor.shape.clone(),
            tensor.dtype,
            ValueKind::Constant(tensor.clone()),
        )
    }

    /// Mark `value` as an output readable after each run under `name` (a value may carry
    /// several output names).
    pub fn output(&mut self, name: &str, value: ValueId) -> Result<()> {
        if self.outputs.iter().any(|(n, _)| n == name) {
            return Err(Error::shape(name, "an output of this name already exists"));
        }
        let root = self.root(value);
        let v = self.value_mut(root)?;
        if !matches!(v.kind, ValueKind::Intermediate) {
            return Err(Error::shape(
                name,
                "only values computed by the graph can be outputs",
            ));
        }
        v.is_output = true;
        self.outputs.push((name.to_string(), value));
        Ok(())
    }

    /// Record `value` as output `probe.<name>` when the graph was made with probes (block
    /// boundaries that tests compare against goldens); otherwise nothing.
    pub fn probe(&mut self, name: &str, value: ValueId) -> Result<()> {
        if self.probes {
            self.output(&format!("probe.{name}"), value)?;
        }
        Ok(())
    }

    /// Make later [`Graph::probe`] calls record outputs.
    pub fn with_probes(mut self) -> Self {
        self.probes = true;
        self
    }

    /// Names of the outputs, in the order they were marked.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|(n, _)| n.as_str())
    }

    /// An intermediate value produced by a dispatch (used by op builders).
    pub fn intermediate(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<ValueId> {
        check_shape(name, shape)?;
        Ok(self.add_value(name, shape, dtype, ValueKind::Intermediate))
    }

    /// The same storage under another shape with as many elements (no copy, no dispatch).
    pub fn reshape(&mut self, value: ValueId, shape: &[usize]) -> Result<ValueId> {
        let v = self.value(value)?;
        if numel(shape) != v.numel() {
            return Err(Error::shape(
                &v.name,
                format!("cannot reshape {:?} to {shape:?}", v.shape),
            ));
        }
        let (name, dtype) = (v.name.clone(), v.dtype);
        let root = self.root(value);
        Ok(self.add_value(&name, shape, dtype, ValueKind::Alias(root)))
    }

    /// The value that owns `value`'s storage (itself unless it is an alias).
    pub fn root(&self, value: ValueId) -> ValueId {
        match self.values.get(value.0).map(|v| &v.kind) {
            Some(ValueKind::Alias(root)) => *root,
            _ => value,
        }
    }

    /// The configuration the target's tuning table holds for `key` (`None`: undecided, the op
    /// uses its default). Used by op builders of tunable kernels; the graph remembers the key
    /// and the answer so the autotuner can measure undecided keys at first use
    /// ([`crate::autotune`]).
    pub fn tuned(&mut self, key: TuneKey) -> Option<String> {
        let decision = self.target.tuning.decision(&key);
        if !self.tuning.iter().any(|u| u.key == key) {
            self.tuning.push(TuneUse {
                key,
                decision: decision.clone(),
            });
        }
        decision
    }

    /// The tunable choices made while the graph was built, in order of first use.
    pub fn tuning_uses(&self) -> &[TuneUse] {
        &self.tuning
    }

    /// Append a dispatch (used by op builders, which check shapes first).
    pub fn dispatch(&mut self, dispatch: Dispatch) -> Result<()> {
        if let Some((_, bad)) = dispatch
            .buffers
            .iter()
            .find(|(_, v)| v.0 >= self.values.len())
        {
            return Err(Error::shape(
                &dispatch.label,
                format!("unknown value id {}", bad.0),
            ));
        }
        self.dispatches.push(dispatch);
        Ok(())
    }

    pub fn value(&self, id: ValueId) -> Result<&Value> {
        self.values
            .get(id.0)
            .ok_or_else(|| Error::shape("graph", format!("unknown value id {}", id.0)))
    }

    fn value_mut(&mut self, id: ValueId) -> Result<&mut Value> {
        self.values
            .get_mut(id.0)
            .ok_or_else(|| Error::shape("graph", format!("unknown value id {}", id.0)))
    }

    /// Shape of a value.
    pub fn shape(&self, id: ValueId) -> Result<Vec<usize>> {
        Ok(self.value(id)?.shape.clone())
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    fn find(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Option<ValueId> {
        self.values
            .iter()
            .position(|v| v.name == name && pred(v))
            .map(ValueId)
    }

    /// The largest single value (what one storage binding must hold): (name, bytes).
    pub fn largest_value(&self) -> Option<(&str, u64)> {
        self.values
            .iter()
            .map(|v| (v.name.as_str(), v.bytes()))
            .max_by_key(|&(_, b)| b)
    }

    /// Liveness-based buffer assignment of the intermediates, without a GPU: the memory a plan
    /// of this graph would use.
    pub fn memory(&self) -> PlanMemory {
        PlanMemory::of(self, &assign_buffers(self))
    }
}

fn check_shape(name: &str, shape: &[usize]) -> Result<()> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(Error::shape(
            name,
            format!("shape {shape:?} has no elements"),
        ));
    }
    Ok(())
}
