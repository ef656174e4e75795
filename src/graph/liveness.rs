//! Liveness-based buffer assignment for a graph's intermediates.
//!
//! A pooled value lives from the first dispatch that binds it to the last, both included. Values
//! share a pooled buffer (a slot) when their lifetimes are disjoint, so a dispatch never reads and
//! writes one buffer; a slot is as large as its largest value. The sum of the slots is what a plan
//! allocates. It can never be less than the live bound: the most bytes alive at one dispatch.
//!
//! Two greedy assignments are made and the smaller kept:
//! - **by size** (the "greedy by size for shared objects" of on-device inference runtimes):
//!   values largest first, each into the smallest slot whose values it does not overlap, else a
//!   new slot. Slots are sized by their first, largest value, so later values never grow them;
//! - **in dispatch order**: at birth a value takes the smallest free slot that is large enough,
//!   else grows the largest free slot, else opens a new one.
//!
//! In dispatch order was the only assignment until 2026-12-07: the SD1.5 UNet's activation peak
//! at 512² (batch 2, f32, inputs and outputs included) was 1.41× its bound, the SDXL UNet's at
//! 1024² 1.51×. By size wins on both (1.20× and 1.22×: 227 → 193 and 652 → 527 MiB) and on the
//! CLIP text encoder (5.0 → 4.1 MiB, 1.13×); the VAE decoders tie (1.03×). Both are kept: taking the smaller costs
//! nothing at plan build. Closer to the bound needs offsets inside shared buffers rather than
//! whole buffers per slot (`stipple bench memory` prints both figures).

use super::Graph;

/// Which pooled buffer each value uses, and the pooled buffers' sizes.
#[derive(Clone, Debug, Default)]
pub struct BufferAssignment {
    /// `slot_of[value] = Some(slot)` for pooled values.
    pub slot_of: Vec<Option<usize>>,
    /// Bytes of each pooled buffer.
    pub slot_bytes: Vec<u64>,
    /// The most bytes of pooled values alive at one dispatch: no assignment pools less.
    pub live_bound: u64,
}

impl BufferAssignment {
    pub fn pooled_bytes(&self) -> u64 {
        self.slot_bytes.iter().sum()
    }
}

/// A pooled value's lifetime: dispatches `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lifetime {
    pub value: usize,
    pub first: usize,
    pub last: usize,
    pub bytes: u64,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Lifetimes of the graph's pooled values that some dispatch binds (aliases count for their
/// root), in value order.
pub(crate) fn lifetimes(graph: &Graph) -> Vec<Lifetime> {
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
    graph
        .values
        .iter()
        .enumerate()
        .filter(|&(v, value)| value.is_pooled() && first[v] != usize::MAX)
        .map(|(v, value)| Lifetime {
            value: v,
            first: first[v],
            last: last[v],
            bytes: value.bytes(),
        })
        .collect()
}

fn live_bound_of(lifetimes: &[Lifetime], dispatches: usize) -> u64 {
    // Bytes born at each dispatch minus bytes dead after the previous one, summed as we go.
    let mut delta = vec![0i128; dispatches + 1];
    for l in lifetimes {
        delta[l.first] += i128::from(l.bytes);
        delta[l.last + 1] -= i128::from(l.bytes);
    }
    let mut alive = 0i128;
    let mut most = 0i128;
    for d in &delta[..dispatches] {
        alive += d;
        most = most.max(alive);
    }
    most as u64
}

pub fn assign_buffers(graph: &Graph) -> BufferAssignment {
    let lifetimes = lifetimes(graph);
    let by_size = assign_by_size(&lifetimes);
    let in_order = assign_in_order(&lifetimes, graph.dispatches.len());
    let best = if by_size.1.iter().sum::<u64>() <= in_order.1.iter().sum::<u64>() {
        by_size
    } else {
        in_order
    };
    let mut out = BufferAssignment {
        slot_of: vec![None; graph.values.len()],
        slot_bytes: best.1,
        live_bound: live_bound_of(&lifetimes, graph.dispatches.len()),
    };
    for (l, slot) in lifetimes.iter().zip(best.0) {
        out.slot_of[l.value] = Some(slot);
    }
    out
}

/// Slot of each lifetime (same order) and the slots' bytes.
type Slots = (Vec<usize>, Vec<u64>);

/// Largest first, each into the smallest slot it does not overlap (see the module docs).
fn assign_by_size(lifetimes: &[Lifetime]) -> Slots {
    let mut order: Vec<usize> = (0..lifetimes.len()).collect();
    // Ties by birth, so that equal sizes keep a deterministic, dispatch-like order.
    order.sort_by_key(|&i| (std::cmp::Reverse(lifetimes[i].bytes), lifetimes[i].first));
    let mut slot_of = vec![0; lifetimes.len()];
    let mut slot_bytes: Vec<u64> = Vec::new();
    // Each slot's lifetimes, sorted by `first` and pairwise disjoint.
    let mut occupants: Vec<Vec<Lifetime>> = Vec::new();
    for i in order {
        let l = lifetimes[i];
        let fits = |slot: &Vec<Lifetime>| {
            // The neighbours of l's place in birth order are the only candidates for overlap.
            let at = slot.partition_point(|o| o.first < l.first);
            let before = at.checked_sub(1).map(|p| &slot[p]);
            let after = slot.get(at);
            !before.is_some_and(|o| o.overlaps(&l)) && !after.is_some_and(|o| o.overlaps(&l))
        };
        let slot = (0..slot_bytes.len())
            .filter(|&s| fits(&occupants[s]))
            .min_by_key(|&s| slot_bytes[s]);
        let slot = slot.unwrap_or_else(|| {
            slot_bytes.push(l.bytes);
            occupants.push(Vec::new());
            slot_bytes.len() - 1
        });
        let at = occupants[slot].partition_point(|o| o.first < l.first);
        occupants[slot].insert(at, l);
        slot_bytes[slot] = slot_bytes[slot].max(l.bytes);
        slot_of[i] = slot;
    }
    (slot_of, slot_bytes)
}

/// In dispatch order, reusing freed slots (see the module docs). All values born at a dispatch
/// are placed before any value dying there is freed.
fn assign_in_order(lifetimes: &[Lifetime], dispatches: usize) -> Slots {
    let mut born_at: Vec<Vec<usize>> = vec![Vec::new(); dispatches];
    let mut dies_at: Vec<Vec<usize>> = vec![Vec::new(); dispatches];
    for (i, l) in lifetimes.iter().enumerate() {
        born_at[l.first].push(i);
        dies_at[l.last].push(i);
    }
    let mut slot_of = vec![0; lifetimes.len()];
    let mut slot_bytes: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for d in 0..dispatches {
        for &i in &born_at[d] {
            let need = lifetimes[i].bytes;
            let fitting = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slot_bytes[s] >= need)
                .min_by_key(|(_, &s)| slot_bytes[s])
                .map(|(pos, _)| pos);
            let largest = free
                .iter()
                .enumerate()
                .max_by_key(|(_, &s)| slot_bytes[s])
                .map(|(pos, _)| pos);
            let slot = match fitting.or(largest) {
                Some(pos) => free.swap_remove(pos),
                None => {
                    slot_bytes.push(0);
                    slot_bytes.len() - 1
                }
            };
            slot_bytes[slot] = slot_bytes[slot].max(need);
            slot_of[i] = slot;
        }
        for &i in &dies_at[d] {
            free.push(slot_of[i]);
        }
    }
    (slot_of, slot_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random lifetimes over `dispatches` dispatches (a small LCG: no test dependency).
    fn random_lifetimes(seed: u64, count: usize, dispatches: usize) -> Vec<Lifetime> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = |below: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % below
        };
        (0..count)
            .map(|value| {
                let first = next(dispatches);
                let last = (first + next(12)).min(dispatches - 1);
                // Sizes over three orders of magnitude, some equal.
                let bytes = 4 << next(10);
                Lifetime {
                    value,
                    first,
                    last,
                    bytes: bytes as u64 + 4 * next(3) as u64,
                }
            })
            .collect()
    }

    fn l(value: usize, first: usize, last: usize, bytes: u64) -> Lifetime {
        Lifetime {
            value,
            first,
            last,
            bytes,
        }
    }

    /// Every lifetime has a slot at least its size, and no two lifetimes in one slot overlap.
    fn assert_valid(lifetimes: &[Lifetime], (slot_of, slot_bytes): &Slots) {
        assert_eq!(slot_of.len(), lifetimes.len());
        for (i, a) in lifetimes.iter().enumerate() {
            assert!(slot_bytes[slot_of[i]] >= a.bytes, "{a:?} in a smaller slot");
            for (j, b) in lifetimes.iter().enumerate().skip(i + 1) {
                assert!(
                    slot_of[i] != slot_of[j] || !a.overlaps(b),
                    "{a:?} and {b:?} share slot {}",
                    slot_of[i]
                );
            }
        }
    }

    #[test]
    fn both_assignments_are_valid_and_never_below_the_live_bound() {
        for seed in 0..200 {
            let dispatches = 1 + (seed as usize * 7) % 60;
            let lifetimes = random_lifetimes(seed, 1 + (seed as usize * 13) % 90, dispatches);
            let bound = live_bound_of(&lifetimes, dispatches);
            for slots in [
                assign_by_size(&lifetimes),
                assign_in_order(&lifetimes, dispatches),
            ] {
                assert_valid(&lifetimes, &slots);
                assert!(slots.1.iter().sum::<u64>() >= bound, "seed {seed}");
            }
        }
    }

    #[test]
    fn live_bound_counts_values_alive_at_one_dispatch() {
        // 0..=1 (10 B) and 1..=2 (20 B) meet at dispatch 1; 3..=3 (25 B) is alone.
        let lifetimes = [l(0, 0, 1, 10), l(1, 1, 2, 20), l(2, 3, 3, 25)];
        assert_eq!(live_bound_of(&lifetimes, 4), 30);
        // A value dying at a dispatch and one born there overlap: they never share a slot.
        let (slot_of, _) = assign_by_size(&[l(0, 0, 1, 8), l(1, 1, 2, 8)]);
        assert_ne!(slot_of[0], slot_of[1]);
    }

    #[test]
    fn by_size_keeps_large_slots_for_large_values() {
        // In dispatch order, a small value born when only a large slot is free takes it, and the
        // large value born beside it opens a second large slot: 100 + 100. By size, the two large
        // values share a slot and the small one gets its own: 100 + 4, the live bound.
        let lifetimes = [l(0, 0, 1, 100), l(1, 2, 3, 4), l(2, 2, 3, 100)];
        let in_order: u64 = assign_in_order(&lifetimes, 4).1.iter().sum();
        let by_size: u64 = assign_by_size(&lifetimes).1.iter().sum();
        assert_eq!(live_bound_of(&lifetimes, 4), 104);
        assert_eq!(by_size, 104);
        assert_eq!(in_order, 200);
    }
}
