//! A small least-recently-used map for built plans: a long-running process (a server asked for
//! many sizes and batches) keeps at most `capacity` plans of each kind, so GPU memory held by
//! activations stays bounded. Rebuilding an evicted plan costs a graph build and bind groups
//! (milliseconds to seconds), never a reload of weights.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::Index;

/// Plans kept per kind unless set otherwise: enough for CFG and non-CFG batches at two sizes,
/// and for the tile shapes of one tiled decode.
pub const DEFAULT_CAPACITY: usize = 4;

pub struct Lru<K, V> {
    entries: HashMap<K, (V, Cell<u64>)>,
    clock: Cell<u64>,
    /// Most entries kept (at least 1).
    pub capacity: usize,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Lru {
            entries: HashMap::new(),
            clock: Cell::new(0),
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Insert `value`, first dropping the least recently used entries beyond `capacity − 1`.
    pub fn insert(&mut self, key: K, value: V) {
        if !self.entries.contains_key(&key) {
            self.trim_to(self.capacity.max(1) - 1);
        }
        self.entries.insert(key, (value, Cell::new(self.tick())));
    }

    /// Drop the least recently used entries beyond `capacity` (after lowering it).
    pub fn trim(&mut self) {
        self.trim_to(self.capacity.max(1));
    }

    fn trim_to(&mut self, keep: usize) {
        while self.entries.len() > keep {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| used.get())
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(v, _)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn tick(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }
}

/// Looking an entry up marks it used.
impl<K: Eq + Hash + Clone, V> Index<&K> for Lru<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        let (value, used) = &self.entries[key];
        used.set(self.tick());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used() {
        let mut lru: Lru<u32, &str> = Lru {
            capacity: 2,
            ..Default::default()
        };
        lru.insert(1, "a");
        lru.insert(2, "b");
        assert_eq!(lru[&1], "a"); // 1 is now newer than 2
        lru.insert(3, "c");
        assert!(lru.contains_key(&1) && lru.contains_key(&3) && !lru.contains_key(&2));
        lru.insert(3, "c2"); // replacing does not evict
        assert_eq!((lru.len(), lru[&3]), (2, "c2"));
        lru.capacity = 1;
        lru.trim();
        assert!(lru.len() == 1 && lru.contains_key(&3));
        lru.capacity = 0; // treated as 1
        lru.insert(4, "d");
        assert!(lru.len() == 1 && lru.contains_key(&4));
        lru.clear();
        assert!(lru.is_empty());
    }
}
