//! Compiling a [`Graph`] into a [`Plan`]: buffers by liveness, pipelines and bind groups once.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use super::liveness::{assign_buffers, BufferAssignment};
use super::{Graph, ValueKind};
use crate::error::{Error, Result};
use crate::gpu::tensor::{check_binding_size, TENSOR_USAGE};
use crate::gpu::{Gpu, Tensor};

/// Bytes a plan holds on the GPU, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanMemory {
    /// Pooled intermediate buffers (reused by liveness).
    pub pooled: u64,
    /// Dedicated input and output buffers.
    pub io: u64,
    /// Caller-owned weights bound by the plan (not allocated by it).
    pub weights: u64,
    /// What the intermediates would take without reuse (sum of their sizes).
    pub unshared: u64,
    /// The most bytes of intermediates alive at one dispatch: no reuse pools less than this
    /// (`pooled` / `live_bound` is what the assignment loses).
    pub live_bound: u64,
}

impl PlanMemory {
    pub(crate) fn of(graph: &Graph, assignment: &BufferAssignment) -> Self {
        let mut m = PlanMemory {
            pooled: assignment.pooled_bytes(),
            live_bound: assignment.live_bound,
            ..Default::default()
        };
        for v in &graph.values {
            match (&v.kind, v.is_output) {
                (ValueKind::Constant(t), _) => m.weights += t.bytes(),
                (ValueKind::Input, _) | (ValueKind::Intermediate, true) => m.io += v.bytes(),
                (ValueKind::Intermediate, false) => m.unshared += v.bytes(),
                (ValueKind::Alias(_), _) => {}
            }
        }
        m
    }

    /// Activation peak: pooled intermediates plus inputs and outputs.
    pub fn activation_peak(&self) -> u64 {
        self.pooled + self.io
    }
}

/// One recorded dispatch of a plan.
pub(crate) struct Step {
    pub label: String,
    /// `shader::entry`, for grouping profiles by kernel.
    pub kernel: String,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

/// A compiled graph, ready to run any number of times.
pub struct Plan {
    pub(crate) gpu: Gpu,
    pub(crate) steps: Vec<Step>,
    /// Storage of every value (pooled values share buffers).
    pub(crate) storage: Vec<Option<Arc<wgpu::Buffer>>>,
    pub(crate) graph: Graph,
    pub(crate) inputs: HashMap<String, usize>,
    pub(crate) outputs: HashMap<String, usize>,
    memory: PlanMemory,
    /// What profiles show of each dispatch ([`Plan::step_info`]), built on first use.
    pub(crate) step_info: std::sync::OnceLock<Arc<[crate::gpu::collector::StepInfo]>>,
    /// Keeps the params buffer alive for the bind groups.
    _params: Option<wgpu::Buffer>,
}

impl Plan {
    pub fn new(gpu: &Gpu, graph: Graph) -> Result<Plan> {
        gpu.scoped("building plan", || Self::build(gpu, graph))?
    }

    fn build(gpu: &Gpu, graph: Graph) -> Result<Plan> {
        if let Some(v) = graph
            .values
            .iter()
            .find(|v| matches!(&v.kind, ValueKind::Constant(t) if t.placeholder))
        {
            return Err(Error::invalid(
                "graph",
                format!("{} is a placeholder weight: this graph can be planned (Graph::memory) but not run", v.name),
            ));
        }
        for v in &graph.values {
            check_binding_size(gpu, &v.name, v.bytes())?;
        }
        let assignment = assign_buffers(&graph);
        let new_buffer = |label: &str, size: u64| {
            Arc::new(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            }))
        };
        let slots: Vec<Arc<wgpu::Buffer>> = assignment
            .slot_bytes
            .iter()
            .enumerate()
            .map(|(i, &size)| new_buffer(&format!("pool.{i}"), size))
            .collect();

        let mut storage = Vec::with_capacity(graph.values.len());
        let (mut inputs, mut outputs) = (HashMap::new(), HashMap::new());
        for (i, v) in graph.values.iter().enumerate() {
            storage.push(match &v.kind {
                ValueKind::Constant(t) => Some(t.buffer.clone()),
                ValueKind::Input => {
                    inputs.insert(v.name.clone(), i);
                    Some(new_buffer(&v.name, v.bytes()))
                }
                ValueKind::Intermediate if v.is_output => Some(new_buffer(&v.name, v.bytes())),
                ValueKind::Intermediate => assignment.slot_of[i].map(|s| slots[s].clone()),
                ValueKind::Alias(_) => None,
            });
        }
        for (i, v) in graph.values.iter().enumerate() {
            if let ValueKind::Alias(root) = v.kind {
                storage[i] = storage[root.0].clone();
            }
        }

        for (name, id) in &graph.outputs {
            outputs.insert(name.clone(), id.0);
        }

        // All dispatch params in one uniform buffer, each at an aligned offset.
        let align = gpu.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let mut params = Vec::new();
        let mut offsets = Vec::with_capacity(graph.dispatches.len());
        for d in &graph.dispatches {
            if d.params.is_empty() {
                return Err(Error::shape(&d.label, "dispatch without params"));
            }
            params.resize(params.len().next_multiple_of(align), 0);
            offsets.push(params.len() as u64);
            params.extend_from_slice(&d.params);
            params.resize(params.len().next_multiple_of(16), 0);
        }
        let params_buffer = (!params.is_empty()).then(|| {
            wgpu::util::DeviceExt::create_buffer_init(
                &gpu.device,
                &wgpu::util::BufferInitDescriptor {
                    label: Some("plan params"),
                    contents: &params,
                    usage: wgpu::BufferUsages::UNIFORM,
                },
            )
        });

        let max_groups = gpu.limits.max_compute_workgroups_per_dimension;
        let mut steps = Vec::with_capacity(graph.dispatches.len());
        for (d, &offset) in graph.dispatches.iter().zip(&offsets) {
            if let Some(&g) = d.workgroups.iter().find(|&&g| g > max_groups) {
                return Err(Error::Limit {
                    what: format!("dispatch {}", d.label),
                    needed: g as u64,
                    limit: "max_compute_workgroups_per_dimension",
                    max: max_groups as u64,
                    hint: String::new(),
                });
            }
            let pipeline = gpu.kernels.pipeline(gpu, &d.kernel)?;
            let layout = pipeline.get_bind_group_layout(0);
            let Some(params_buffer) = params_buffer.as_ref() else {
                return Err(Error::shape(&d.label, "dispatch without params"));
            };
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: params_buffer,
                    offset,
                    size: NonZeroU64::new((d.params.len() as u64).next_multiple_of(16)),
                }),
            }];
            for &(binding, id) in &d.buffers {
                let value = &graph.values[id.0];
                let buffer = storage[id.0].as_ref().ok_or_else(|| {
                    Error::shape(&d.label, format!("value {} has no storage", value.name))
                })?;
                entries.push(wgpu::BindGroupEntry {
                    binding,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: 0,
                        size: NonZeroU64::new(value.bytes()),
                    }),
                });
            }
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&d.label),
                layout: &layout,
                entries: &entries,
            });
            steps.push(Step {
                label: d.label.clone(),
                kernel: format!("{}::{}", d.kernel.shader, d.kernel.entry),
                pipeline,
                bind_group,
                workgroups: d.workgroups,
            });
        }

        let memory = PlanMemory::of(&graph, &assignment);
        Ok(Plan {
            gpu: gpu.clone(),
            steps,
            storage,
            graph,
            inputs,
            outputs,
            memory,
            step_info: std::sync::OnceLock::new(),
            _params: params_buffer,
        })
    }

    /// GPU memory this plan uses (see [`PlanMemory`]).
    pub fn memory(&self) -> PlanMemory {
        self.memory
    }

    /// Number of dispatches recorded per run.
    pub fn dispatch_count(&self) -> usize {
        self.steps.len()
    }

    /// The node names of the recorded dispatches, in order.
    pub fn dispatch_labels(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.label.as_str())
    }

    pub fn input_names(&self) -> impl Iterator<Item = &str> {
        self.inputs.keys().map(String::as_str)
    }

    fn value_tensor(&self, index: usize) -> Result<Tensor> {
        let v = &self.graph.values[index];
        let buffer = self.storage[index]
            .clone()
            .ok_or_else(|| Error::shape(&v.name, "value has no storage"))?;
        Ok(Tensor {
            buffer,
            shape: v.shape.clone(),
            dtype: v.dtype,
            label: v.name.clone(),
            placeholder: false,
        })
    }

    /// The dedicated buffer behind an input, e.g. to fill it with a GPU copy.
    pub fn input_tensor(&self, name: &str) -> Result<Tensor> {
        let &i = self.inputs.get(name).ok_or_else(|| Error::UnknownName {
            kind: "plan input",
            name: name.into(),
        })?;
        self.value_tensor(i)
    }

    /// The dedicated buffer behind an output, valid after a run until the next one.
    pub fn output_tensor(&self, name: &str) -> Result<Tensor> {
        let &i = self.outputs.get(name).ok_or_else(|| Error::UnknownName {
            kind: "plan output",
            name: name.into(),
        })?;
        self.value_tensor(i)
    }

    /// Write an input for the next run (converted to the input's dtype).
    pub fn write_input(&self, name: &str, data: &[f32]) -> Result<()> {
        self.input_tensor(name)?.write_f32(&self.gpu, data)
    }

    /// Read an output back after a run (blocks until the GPU is done; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_output(&self, name: &str) -> Result<Vec<f32>> {
        pollster::block_on(self.read_output_async(name))
    }

    /// Read an output back after a run, once the GPU is done.
    pub async fn read_output_async(&self, name: &str) -> Result<Vec<f32>> {
        self.output_tensor(name)?.to_f32_async(&self.gpu).await
    }
}
