//! The ordered set of a queue's ready jobs, packed for memory.
//!
//! A `BTreeSet` splits a full node in half when keys arrive in increasing order, which is how
//! ready jobs arrive (each enqueue is later than the last), so its leaves stay about half
//! full: some 36 bytes a key. Here the keys live in sorted runs of up to [`RUN`] keys; a key
//! past the end of the last full run starts a new one instead of splitting it, so a queue
//! filled in order costs little more than its 16-byte keys, and leasing from the front empties
//! and frees the first run.

use std::collections::VecDeque;

use super::memory::ReadyKey;

/// Keys per run: 4 KiB of keys, so an insert or removal inside a run moves at most that much.
const RUN: usize = 256;

/// Sorted, non-empty runs, each wholly before the next.
#[derive(Debug, Default)]
pub(super) struct ReadySet {
    runs: VecDeque<VecDeque<ReadyKey>>,
}

impl ReadySet {
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.runs.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn first(&self) -> Option<ReadyKey> {
        self.runs.front().and_then(|run| run.front().copied())
    }

    #[cfg(test)]
    pub fn last(&self) -> Option<ReadyKey> {
        self.runs.back().and_then(|run| run.back().copied())
    }

    /// The first key not less than `key`.
    pub fn first_from(&self, key: ReadyKey) -> Option<ReadyKey> {
        let run = self.runs.get(self.run_for(key))?;
        run.get(run.partition_point(|k| *k < key)).copied()
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = ReadyKey> + '_ {
        self.runs.iter().flatten().copied()
    }

    /// Adds `key`; false if it was there already.
    pub fn insert(&mut self, key: ReadyKey) -> bool {
        let last_run = self.runs.len().saturating_sub(1);
        let i = self.run_for(key).min(last_run);
        let Some(run) = self.runs.get_mut(i) else {
            self.runs.push_back(Self::run_of(key));
            return true;
        };
        let Err(pos) = run.binary_search(&key) else { return false };
        if run.len() < RUN {
            run.insert(pos, key);
        } else if i == last_run && pos == run.len() {
            self.runs.push_back(Self::run_of(key));
        } else {
            // Split the full run in two and put the key in the half it belongs to.
            let mut upper = run.split_off(RUN / 2);
            upper.reserve_exact(RUN - upper.len());
            if pos <= RUN / 2 {
                run.insert(pos, key);
            } else {
                upper.insert(pos - RUN / 2, key);
            }
            self.runs.insert(i + 1, upper);
        }
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &ReadyKey) -> bool {
        let i = self.run_for(*key);
        let Some(run) = self.runs.get_mut(i) else { return false };
        let Ok(pos) = run.binary_search(key) else { return false };
        run.remove(pos);
        if run.is_empty() {
            self.runs.remove(i);
        } else if let Some(next_len) = self.runs.get(i + 1).map(VecDeque::len)
            && self.runs[i].len() + next_len <= RUN / 2
        {
            // Keep sparse runs from piling up after scattered removals.
            if let Some(mut next) = self.runs.remove(i + 1) {
                self.runs[i].append(&mut next);
            }
        }
        true
    }

    /// The index of the first run whose last key is not less than `key` (`runs.len()` if none).
    fn run_for(&self, key: ReadyKey) -> usize {
        self.runs.partition_point(|run| run.back().is_some_and(|last| *last < key))
    }

    fn run_of(key: ReadyKey) -> VecDeque<ReadyKey> {
        let mut run = VecDeque::with_capacity(RUN);
        run.push_back(key);
        run
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::core::Timestamp;

    fn key(priority: i32, at: i64, id: i64) -> ReadyKey {
        ReadyKey::new(priority, Timestamp::from_millis(at), id)
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(i32, i64, i64),
        Remove(i32, i64, i64),
        PopFirst,
        FirstFrom(i32, i64, i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct values, so inserts collide and removals hit.
        let k = (-1i32..=1, 0i64..40, 0i64..400);
        prop_oneof![
            4 => k.clone().prop_map(|(p, t, id)| Op::Insert(p, t, id)),
            2 => k.clone().prop_map(|(p, t, id)| Op::Remove(p, t, id)),
            2 => Just(Op::PopFirst),
            1 => k.prop_map(|(p, t, id)| Op::FirstFrom(p, t, id)),
        ]
    }

    proptest! {
        /// Every operation answers as a `BTreeSet` does, and the runs stay sorted and non-empty.
        #[test]
        fn behaves_as_an_ordered_set(ops in proptest::collection::vec(op(), 1..3_000)) {
            let (mut set, mut model) = (ReadySet::new(), BTreeSet::new());
            for op in ops {
                match op {
                    Op::Insert(p, t, id) => prop_assert_eq!(set.insert(key(p, t, id)), model.insert(key(p, t, id))),
                    Op::Remove(p, t, id) => prop_assert_eq!(set.remove(&key(p, t, id)), model.remove(&key(p, t, id))),
                    Op::PopFirst => {
                        let first = set.first();
                        prop_assert_eq!(first, model.first().copied());
                        if let Some(first) = first {
                            prop_assert!(set.remove(&first));
                            model.remove(&first);
                        }
                    }
                    Op::FirstFrom(p, t, id) => {
                        prop_assert_eq!(set.first_from(key(p, t, id)), model.range(key(p, t, id)..).next().copied());
                    }
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.last(), model.last().copied());
                prop_assert!(set.runs.iter().all(|run| !run.is_empty() && run.len() <= RUN));
            }
            prop_assert!(set.iter().eq(model.iter().copied()));
        }
    }

    #[test]
    fn keys_arriving_in_order_fill_whole_runs() {
        let mut set = ReadySet::new();
        for id in 0..10 * RUN as i64 {
            assert!(set.insert(key(0, id, id)));
        }
        assert_eq!(set.runs.len(), 10);
        assert!(set.runs.iter().all(|run| run.len() == RUN));
        // Leasing from the front frees each run once it is empty.
        for id in 0..RUN as i64 {
            assert!(set.remove(&key(0, id, id)));
        }
        assert_eq!(set.runs.len(), 9);
        assert_eq!(set.first(), Some(key(0, RUN as i64, RUN as i64)));
    }
}
