//! The in-memory view of the embedded store: what is ready, what is scheduled, who holds which
//! lease, and per-queue counts.
//!
//! It is an index over the database, never the authority: it is built from the database at
//! start (and rebuilt after a failed commit), and every change to it mirrors a row change made
//! in the same transaction. It lets a lease pick the next job in O(log n) without a query, and
//! lets fencing checks and lease expiry run without touching the disk.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::core::validate::MAX_PRIORITY;
use crate::core::{JobState, LeaseToken, QueueName, QueuePolicy, Timestamp};
use crate::metrics::QueueCounters;
use crate::store::WorkerPresence;

use super::ready::ReadySet;

/// Orders ready jobs: highest priority first, then earliest ready time, then lowest id.
///
/// Sixteen bytes, since a million ready jobs are a million keys: the high word holds the
/// priority level (`MAX_PRIORITY - priority`, 21 bits, so the highest priority sorts first)
/// over the ready time (43 bits of milliseconds: until the year 2248; a ready job's time is
/// never in the future), the low word the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ReadyKey {
    hi: u64,
    lo: u64,
}

const TIME_BITS: u32 = 43;
const TIME_MAX: i64 = (1 << TIME_BITS) - 1;
const LEVEL_MAX: u64 = 2 * MAX_PRIORITY as u64;

impl ReadyKey {
    pub fn new(priority: i32, run_at: Timestamp, id: i64) -> Self {
        // Both are validated on the way in; the clamps only keep a damaged row's key in range.
        let level = (MAX_PRIORITY - i64::from(priority).clamp(-MAX_PRIORITY, MAX_PRIORITY)) as u64;
        let time = run_at.as_millis().clamp(0, TIME_MAX) as u64;
        ReadyKey { hi: level << TIME_BITS | time, lo: id.max(0) as u64 }
    }

    /// The job's id.
    pub fn id(self) -> i64 {
        self.lo as i64
    }

    /// When it became ready.
    pub fn run_at(self) -> i64 {
        (self.hi & TIME_MAX as u64) as i64
    }

    fn level(self) -> u64 {
        self.hi >> TIME_BITS
    }

    /// The first key of the level after this one's, if any.
    fn next_level(self) -> Option<ReadyKey> {
        (self.level() < LEVEL_MAX).then(|| ReadyKey { hi: (self.level() + 1) << TIME_BITS, lo: 0 })
    }
}

/// A token bucket for a queue's `rate`: holds up to `max(rate, 1)` starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct TokenBucket {
    tokens: f64,
    updated: Timestamp,
}

impl TokenBucket {
    fn full(rate: f64, now: Timestamp) -> Self {
        TokenBucket { tokens: rate.max(1.0), updated: now }
    }

    fn refill(&mut self, rate: f64, now: Timestamp) {
        let elapsed = now.millis_since(self.updated) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.updated = now;
    }

    /// Milliseconds until one start is allowed, zero if one is allowed now.
    fn wait_ms(&self, rate: f64) -> u64 {
        if self.tokens >= 1.0 { 0 } else { ((1.0 - self.tokens) / rate * 1000.0).ceil() as u64 }
    }
}

/// One queue in memory.
#[derive(Debug)]
pub(super) struct QueueMem {
    pub name: QueueName,
    /// The name shared with events without copying.
    pub shared_name: Arc<str>,
    pub policy: QueuePolicy,
    pub ready: ReadySet,
    /// Jobs per state, indexed by `JobState::index`.
    pub counts: [u64; 6],
    pub counters: QueueCounters,
    bucket: Option<TokenBucket>,
}

impl QueueMem {
    pub fn new(name: QueueName, policy: QueuePolicy) -> Self {
        QueueMem {
            shared_name: Arc::from(name.as_str()),
            name,
            policy,
            ready: ReadySet::new(),
            counts: [0; 6],
            counters: QueueCounters::default(),
            bucket: None,
        }
    }

    /// Moves one job's count from `from` to `to` (either may be absent: created or deleted).
    pub fn count_move(&mut self, from: Option<JobState>, to: Option<JobState>) {
        if let Some(from) = from {
            debug_assert!(self.counts[from.index()] > 0, "count of {from} would go negative");
            self.counts[from.index()] = self.counts[from.index()].saturating_sub(1);
        }
        if let Some(to) = to {
            self.counts[to.index()] += 1;
        }
    }

    /// How many more jobs this queue may start now, ignoring what is ready: zero while paused,
    /// at its concurrency limit, or out of rate tokens.
    pub fn startable(&mut self, now: Timestamp) -> u64 {
        if self.policy.paused {
            return 0;
        }
        let mut room = u64::MAX;
        if let Some(limit) = self.policy.concurrency {
            room = u64::from(limit).saturating_sub(self.counts[JobState::Running.index()]);
        }
        if let Some(rate) = self.policy.rate {
            let bucket = self.bucket.get_or_insert_with(|| TokenBucket::full(rate, now));
            bucket.refill(rate, now);
            room = room.min(bucket.tokens.max(0.0) as u64);
        }
        room
    }

    /// Records one start against the rate limit.
    pub fn take_start(&mut self) {
        if let Some(bucket) = &mut self.bucket {
            bucket.tokens -= 1.0;
        }
    }

    /// When a start may next be allowed by the rate limit, if that is what holds work back.
    pub fn rate_wait_ms(&self) -> Option<u64> {
        match (self.policy.rate, &self.bucket) {
            (Some(rate), Some(bucket)) if !self.ready.is_empty() && !self.policy.paused => Some(bucket.wait_ms(rate)),
            _ => None,
        }
    }

    /// Forgets the rate bucket, after the policy's rate changed.
    pub fn reset_rate(&mut self) {
        self.bucket = None;
    }

    /// The earliest ready time among ready jobs: the first key of each priority level.
    pub fn oldest_ready_at(&self) -> Option<Timestamp> {
        let mut oldest: Option<i64> = None;
        let mut cursor = self.ready.first();
        while let Some(first) = cursor {
            oldest = Some(oldest.map_or(first.run_at(), |o| o.min(first.run_at())));
            // Jump to the next priority level.
            cursor = first.next_level().and_then(|next| self.ready.first_from(next));
        }
        oldest.map(Timestamp::from_millis)
    }
}

/// What the store remembers of a worker.
#[derive(Clone, Debug)]
pub(super) struct WorkerSeen {
    pub presence: WorkerPresence,
    pub queues: Vec<QueueName>,
    pub last_seen: Timestamp,
    pub draining: bool,
}

/// A lease held in memory: enough to fence, extend and expire it without a query.
#[derive(Clone, Debug)]
pub(super) struct Lease {
    pub token: LeaseToken,
    pub expires_at: Timestamp,
    pub queue: usize,
    pub lease_ms: u64,
    pub started_at: Timestamp,
    pub attempt: u32,
    /// The job's own limit; `None` follows the queue's policy.
    pub max_attempts: Option<u32>,
    pub cancel_requested: bool,
    /// The worker holding it.
    pub worker: Arc<str>,
    /// The row's version now: the writer is the only one changing it, so it tracks it here
    /// instead of reading it back.
    pub version: i64,
    pub priority: i32,
    /// When the job became ready before this lease: its place in line if released.
    pub ready_at: i64,
}

/// The whole in-memory view.
#[derive(Debug, Default)]
pub(super) struct Memory {
    pub queues: Vec<QueueMem>,
    pub by_name: HashMap<String, usize>,
    /// Scheduled jobs by `(run_at, id)`, with their queue.
    pub scheduled: BTreeSet<(i64, i64)>,
    /// Running jobs by id.
    pub leases: HashMap<i64, Lease>,
    /// Lease expiries by `(expires_at, id)`.
    pub expiries: BTreeSet<(i64, i64)>,
    /// Workers by id.
    pub workers: HashMap<Arc<str>, WorkerSeen>,
}

impl Memory {
    pub fn queue_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn add_queue(&mut self, queue: QueueMem) -> usize {
        let index = self.queues.len();
        self.by_name.insert(queue.name.as_str().to_owned(), index);
        self.queues.push(queue);
        index
    }

    /// Removes queue `index`; the queues after it move down one place, and the leases that
    /// point at them follow.
    pub fn remove_queue(&mut self, index: usize) {
        self.queues.remove(index);
        self.by_name = self.queues.iter().enumerate().map(|(i, q)| (q.name.as_str().to_owned(), i)).collect();
        for lease in self.leases.values_mut() {
            debug_assert_ne!(lease.queue, index, "a queue with running jobs is not removed");
            if lease.queue > index {
                lease.queue -= 1;
            }
        }
    }

    pub fn insert_lease(&mut self, id: i64, lease: Lease) {
        self.expiries.insert((lease.expires_at.as_millis(), id));
        self.leases.insert(id, lease);
    }

    pub fn remove_lease(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.expiries.remove(&(lease.expires_at.as_millis(), id));
        Some(lease)
    }

    pub fn extend_lease(&mut self, id: i64, expires_at: Timestamp) {
        if let Some(lease) = self.leases.get_mut(&id) {
            self.expiries.remove(&(lease.expires_at.as_millis(), id));
            lease.expires_at = expires_at;
            self.expiries.insert((expires_at.as_millis(), id));
        }
    }

    /// The next time something is due by the logical clock: a scheduled job, a lease expiry or a
    /// rate-limited queue with ready work.
    pub fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        let scheduled = self.scheduled.first().map(|&(at, _)| Timestamp::from_millis(at));
        let expiry = self.expiries.first().map(|&(at, _)| Timestamp::from_millis(at));
        let rate = self.queues.iter().filter_map(QueueMem::rate_wait_ms).min().map(|ms| now.plus_millis(ms.max(1)));
        [scheduled, expiry, rate].into_iter().flatten().min()
    }

    /// Forgets workers not seen within the TTL; returns how many remain.
    pub fn workers_connected(&mut self, now: Timestamp) -> u64 {
        let horizon = Timestamp::from_millis(now.as_millis() - crate::store::WORKER_TTL_MS as i64);
        if self.workers.values().any(|seen| seen.last_seen < horizon) {
            // A worker busy with long jobs asks for no work, but its leases' heartbeats say it
            // is there.
            let holding: std::collections::HashSet<&str> = self.leases.values().map(|l| &*l.worker).collect();
            self.workers.retain(|id, seen| seen.last_seen >= horizon || holding.contains(&**id));
        }
        self.workers.len() as u64
    }

    /// Records a lease request from a worker; returns its shared id for the leases it gets.
    pub fn worker_seen(
        &mut self,
        id: &str,
        presence: &WorkerPresence,
        queues: &[QueueName],
        now: Timestamp,
    ) -> Arc<str> {
        if let Some((key, _)) = self.workers.get_key_value(id) {
            let key = Arc::clone(key);
            let seen = self.workers.get_mut(&key).expect("just found");
            seen.last_seen = now;
            if seen.queues.as_slice() != queues {
                seen.queues = queues.to_vec();
            }
            if seen.presence != *presence {
                seen.presence = presence.clone();
            }
            return key;
        }
        let key: Arc<str> = Arc::from(id);
        self.workers.insert(
            Arc::clone(&key),
            WorkerSeen { presence: presence.clone(), queues: queues.to_vec(), last_seen: now, draining: false },
        );
        key
    }

    /// Whether the worker was asked to drain.
    pub fn worker_draining(&self, id: &str) -> bool {
        self.workers.get(id).is_some_and(|seen| seen.draining)
    }

    /// Marks a worker draining; false if it was not known (and `even_unseen` did not add it).
    pub fn worker_drain(&mut self, id: &str, even_unseen: bool, now: Timestamp) -> bool {
        if let Some(seen) = self.workers.get_mut(id) {
            seen.draining = true;
            return true;
        }
        if even_unseen {
            let seen =
                WorkerSeen { presence: WorkerPresence::default(), queues: Vec::new(), last_seen: now, draining: true };
            self.workers.insert(Arc::from(id), seen);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueMem {
        QueueMem::new(QueueName::parse("q").unwrap(), QueuePolicy::default())
    }

    #[test]
    fn ready_order_is_priority_then_fifo() {
        let mut q = queue();
        q.ready.insert(ReadyKey::new(0, Timestamp::from_millis(10), 3));
        q.ready.insert(ReadyKey::new(5, Timestamp::from_millis(30), 2));
        q.ready.insert(ReadyKey::new(0, Timestamp::from_millis(5), 4));
        let order: Vec<i64> = q.ready.iter().map(|k| k.id()).collect();
        assert_eq!(order, vec![2, 4, 3]);
        assert_eq!(q.oldest_ready_at(), Some(Timestamp::from_millis(5)));
        // The lowest and highest priorities are levels too.
        q.ready.insert(ReadyKey::new(-(MAX_PRIORITY as i32), Timestamp::from_millis(1), 9));
        q.ready.insert(ReadyKey::new(MAX_PRIORITY as i32, Timestamp::from_millis(50), 8));
        assert_eq!(q.ready.first().map(|k| k.id()), Some(8));
        assert_eq!(q.ready.last().map(|k| k.id()), Some(9));
        assert_eq!(q.oldest_ready_at(), Some(Timestamp::from_millis(1)));
    }

    proptest::proptest! {
        /// Packed keys sort as (highest priority, earliest time, lowest id) would.
        #[test]
        fn packed_keys_sort_as_their_parts(
            a in (-MAX_PRIORITY..=MAX_PRIORITY, 0i64..=TIME_MAX, 0i64..i64::MAX),
            b in (-MAX_PRIORITY..=MAX_PRIORITY, 0i64..=TIME_MAX, 0i64..i64::MAX),
        ) {
            let key = |(p, t, id): (i64, i64, i64)| ReadyKey::new(p as i32, Timestamp::from_millis(t), id);
            let (ka, kb) = (key(a), key(b));
            proptest::prop_assert_eq!(ka.cmp(&kb), (-a.0, a.1, a.2).cmp(&(-b.0, b.1, b.2)));
            proptest::prop_assert_eq!((ka.id(), ka.run_at()), (a.2, a.1));
        }
    }

    #[test]
    fn concurrency_and_rate_limit_starts() {
        let now = Timestamp::from_millis(0);
        let mut q = queue();
        q.policy.concurrency = Some(2);
        q.counts[JobState::Running.index()] = 1;
        assert_eq!(q.startable(now), 1);
        q.policy.concurrency = None;
        q.policy.rate = Some(2.0);
        assert_eq!(q.startable(now), 2);
        q.take_start();
        q.take_start();
        assert_eq!(q.startable(now), 0);
        q.ready.insert(ReadyKey::new(0, now, 1));
        assert_eq!(q.rate_wait_ms(), Some(500));
        assert_eq!(q.startable(Timestamp::from_millis(500)), 1);
        q.policy.paused = true;
        assert_eq!(q.startable(Timestamp::from_millis(5_000)), 0);
    }
}
