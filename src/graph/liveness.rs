//! Liveness-based buffer assignment for a graph's intermediates.
//!
//! Walk the dispatches in order. A pooled value is born at the first dispatch that binds it and
//! dies after the last one. At birth it takes the smallest free buffer that is large enough,
//! else grows the largest free buffer, else opens a new one. All values born at a dispatch are
//! placed before any value dying there is freed, so a dispatch never reads and writes one buffer.

use super::Graph;

/// Which pooled buffer each value uses, and the pooled buffers' sizes.
#[derive(Clone, Debug, Default)]
pub struct BufferAssignment {
    /// `slot_of[value] = Some(slot)` for pooled values.
    pub slot_of: Vec<Option<usize>>,
    /// Bytes of each pooled buffer.
    pub slot_bytes: Vec<u64>,
}

impl BufferAssignment {
    pub fn pooled_bytes(&self) -> u64 {
        self.slot_bytes.iter().sum()
    }
}

pub fn assign_buffers(graph: &Graph) -> BufferAssignment {
    let n = graph.values.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (i, d) in graph.dispatches.iter().enumerate() {
        for &(_, b) in &d.buffers {
            let b = graph.root(b);
            first[b.0] = first[b.0].min(i);
            last[b.0] = last[b.0].max(i);
        }
    }
    let mut born_at: Vec<Vec<usize>> = vec![Vec::new(); graph.dispatches.len()];
    let mut dies_at: Vec<Vec<usize>> = vec![Vec::new(); graph.dispatches.len()];
    for (v, value) in graph.values.iter().enumerate() {
        if value.is_pooled() && first[v] != usize::MAX {
            born_at[first[v]].push(v);
            dies_at[last[v]].push(v);
        }
    }

    let mut out = BufferAssignment {
        slot_of: vec![None; n],
        slot_bytes: Vec::new(),
    };
    let mut free: Vec<usize> = Vec::new();
    for i in 0..graph.dispatches.len() {
        for &v in &born_at[i] {
            let need = graph.values[v].bytes();
            let fitting = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| out.slot_bytes[s] >= need)
                .min_by_key(|(_, &s)| out.slot_bytes[s])
                .map(|(pos, _)| pos);
            let largest = free
                .iter()
                .enumerate()
                .max_by_key(|(_, &s)| out.slot_bytes[s])
                .map(|(pos, _)| pos);
            let slot = match fitting.or(largest) {
                Some(pos) => free.swap_remove(pos),
                None => {
                    out.slot_bytes.push(0);
                    out.slot_bytes.len() - 1
                }
            };
            out.slot_bytes[slot] = out.slot_bytes[slot].max(need);
            out.slot_of[v] = Some(slot);
        }
        for &v in &dies_at[i] {
            if let Some(slot) = out.slot_of[v] {
                free.push(slot);
            }
        }
    }
    out
}
