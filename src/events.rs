//! The event bus: every committed change to a job, in order, for progress streams.
//!
//! A store publishes events only after the change is committed, so a subscriber never sees a
//! change that could still be lost. Each event gets a position (`seq`) on the bus.
//!
//! # One buffer, bounded by bytes
//!
//! The bus is a ring of recent events and nothing else: a subscriber is a position in it, and
//! reads the events after its position when it is ready for them (a stream reads when its
//! client does). So memory is the ring alone, whatever the number of subscribers and however
//! slowly they read, and the ring is bounded by bytes (progress and results carry up to the
//! payload limit each) as well as by count. A subscriber whose position falls out of the ring
//! is told it lagged, and resynchronises (a job's stream sends a fresh snapshot).
//!
//! # Large progress coalesces
//!
//! When a job reports progress again before anything else happened to it, and the earlier
//! progress event carries more than [`COALESCE_OVER`] bytes, that event is superseded: it keeps
//! its place and version (so a stream can tell it was only intermediate progress) but drops its
//! data. A job that floods large progress therefore holds one event's worth of bytes, and does
//! not push other jobs' events out of the ring; small progress (a percentage, a stage) is kept
//! whole, so a client that reconnects is replayed every value.
//!
//! Publishing and reading take the same lock, so a reader sees every event after its position
//! exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::sync::watch;

use crate::core::{JobId, JobState, Timestamp};

/// What happened to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// It was enqueued.
    Created,
    /// Its state changed (including a new attempt of `running`).
    State,
    /// Its worker reported progress.
    Progress,
}

impl EventKind {
    /// The SSE event name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::State => "state",
            EventKind::Progress => "progress",
        }
    }
}

/// One committed change to one job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    /// Position on the bus, strictly increasing; assigned by [`EventBus::publish`].
    pub seq: u64,
    /// The job.
    pub job_id: JobId,
    /// Its queue.
    pub queue: Arc<str>,
    /// The job's version after this change; the SSE event id on a job's own stream.
    pub version: u64,
    /// What happened.
    pub kind: EventKind,
    /// The job's state after the change.
    pub state: JobState,
    /// The job's attempt after the change.
    pub attempt: u32,
    /// When it happened.
    pub at: Timestamp,
    /// JSON text: the progress for a progress event, the result when it succeeded.
    pub data: Option<String>,
    /// The error of a failed attempt, when this change came from one.
    pub error: Option<String>,
    /// When the next attempt may start, when it went to `scheduled`.
    pub run_at: Option<Timestamp>,
    /// A progress event replaced by a later one of the same job: its data is gone, and readers
    /// pass over it.
    pub superseded: bool,
}

impl JobEvent {
    /// Bytes it holds, roughly: what the ring's byte bound counts.
    fn size(&self) -> usize {
        EVENT_OVERHEAD + self.data.as_ref().map_or(0, String::len) + self.error.as_ref().map_or(0, String::len)
    }
}

/// Progress data larger than this is superseded by the job's next progress.
pub const COALESCE_OVER: usize = 1024;

/// Bytes counted for an event besides its data and error.
const EVENT_OVERHEAD: usize = 160;

/// How much the bus keeps for replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLimits {
    /// Most events. Defaults to 65,536.
    pub max_events: usize,
    /// Most bytes of events. Defaults to 64 MiB.
    pub max_bytes: usize,
}

impl Default for RingLimits {
    fn default() -> Self {
        RingLimits { max_events: 65_536, max_bytes: 64 * 1024 * 1024 }
    }
}

/// Recent events in a ring, and a signal that tells readers the ring has grown.
#[derive(Debug)]
pub struct EventBus {
    ring: Mutex<Ring>,
    /// The `seq` the next event will get; readers wait on its changes.
    tip: watch::Sender<u64>,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<JobEvent>>,
    /// The position of `events[0]` (or of the next event, when empty). Positions are this
    /// bus's own; an event's `seq` is its id for clients, the same as its position unless the
    /// store numbers events itself (see [`EventBus::numbered`]).
    first_seq: u64,
    next_seq: u64,
    /// Position of each event by its `seq`, when the store numbers events.
    by_seq: Option<HashMap<u64, u64>>,
    /// The largest `seq` published, when the store numbers events.
    max_seen: u64,
    bytes: usize,
    limits: RingLimits,
    /// Each job's latest event in the ring, if it is a progress event: the one a new progress
    /// event of that job supersedes.
    last_progress: HashMap<JobId, u64>,
}

impl Ring {
    fn get(&self, seq: u64) -> Option<&Arc<JobEvent>> {
        self.events.get(usize::try_from(seq.checked_sub(self.first_seq)?).ok()?)
    }

    fn push(&mut self, event: Arc<JobEvent>) {
        let (job, seq) = (event.job_id, self.next_seq);
        self.next_seq += 1;
        if let Some(by_seq) = &mut self.by_seq {
            by_seq.insert(event.seq, seq);
            self.max_seen = self.max_seen.max(event.seq);
        }
        if event.kind == EventKind::Progress {
            if let Some(previous) = self.last_progress.insert(job, seq)
                && let Some(index) = previous.checked_sub(self.first_seq).and_then(|i| usize::try_from(i).ok())
                && let Some(slot) = self.events.get_mut(index)
                && slot.data.as_ref().is_some_and(|d| d.len() > COALESCE_OVER)
            {
                let thin = JobEvent { data: None, superseded: true, ..JobEvent::clone(slot) };
                self.bytes = self.bytes - slot.size() + thin.size();
                *slot = Arc::new(thin);
            }
        } else {
            self.last_progress.remove(&job);
        }
        self.bytes += event.size();
        self.events.push_back(event);
        while self.events.len() > self.limits.max_events
            || (self.bytes > self.limits.max_bytes && self.events.len() > 1)
        {
            let Some(old) = self.events.pop_front() else { break };
            self.bytes -= old.size();
            if self.last_progress.get(&old.job_id) == Some(&self.first_seq) {
                self.last_progress.remove(&old.job_id);
            }
            if let Some(by_seq) = &mut self.by_seq {
                by_seq.remove(&old.seq);
            }
            self.first_seq += 1;
        }
    }
}

/// A subscriber fell behind: the events after its position left the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lagged: {missed} events left the ring before they were read")]
pub struct Lagged {
    /// How many events it missed.
    pub missed: u64,
}

/// A reader's position on the bus.
#[derive(Debug)]
pub struct Subscription {
    bus: Arc<EventBus>,
    /// The `seq` of the next event to read.
    next: u64,
    tip: watch::Receiver<u64>,
    /// A `Last-Event-ID` this bus has not received yet (another node published it first), and
    /// until when to wait for it; see [`EventBus::subscribe_after`].
    awaiting: Option<(u64, tokio::time::Instant)>,
}

/// How long a reader waits for an event id it does not hold yet and that is newer than any it
/// holds: another node delivered it, so it is committed and on its way here.
const AWAIT_NEWER: Duration = Duration::from_secs(5);
/// How long for an unknown id no newer than those held: ids are assigned before commit, so one
/// can arrive after a larger one; past this it was lost from the ring.
const AWAIT_OLDER: Duration = Duration::from_millis(500);

impl Subscription {
    /// The next event after this position that `keep` selects, waiting until one is
    /// published. Superseded progress is passed over. After a [`Lagged`], reading goes on
    /// from the oldest event the ring still holds.
    pub async fn next(&mut self, keep: impl Fn(&JobEvent) -> bool) -> Result<Arc<JobEvent>, Lagged> {
        loop {
            if let Some(found) = self.scan(&keep) {
                return found;
            }
            // Woken by the next publish (or the end of a wait for an awaited id); the bus
            // outlives its subscribers, so this never errs while one exists.
            let changed = self.tip.changed();
            match self.awaiting {
                Some((_, deadline)) => {
                    let _ = tokio::time::timeout_at(deadline, changed).await;
                }
                None => {
                    if changed.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// The next event `keep` selects among those already published, without waiting: for a
    /// reader that drains the bus now and then instead of waking for every event.
    pub fn try_next(&mut self, keep: impl Fn(&JobEvent) -> bool) -> Result<Option<Arc<JobEvent>>, Lagged> {
        self.scan(&keep).transpose()
    }

    /// Reads the ring from this position: the next selected event or a lag, or `None` when
    /// the reader must wait for more.
    fn scan(&mut self, keep: &impl Fn(&JobEvent) -> bool) -> Option<Result<Arc<JobEvent>, Lagged>> {
        let ring = self.bus.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((want, deadline)) = self.awaiting {
            // Events before the awaited one were delivered with it elsewhere: every node
            // receives events in the same (commit) order.
            let from = self.next.max(ring.first_seq);
            if let Some(at) = (from..ring.next_seq).find(|&p| ring.get(p).is_some_and(|e| e.seq == want)) {
                self.next = at + 1;
                self.awaiting = None;
            } else if tokio::time::Instant::now() >= deadline {
                // Never came: replay from where this reader started, as a lag.
                self.awaiting = None;
                self.next = self.next.max(ring.first_seq);
                return Some(Err(Lagged { missed: 0 }));
            }
        }
        if self.awaiting.is_none() {
            if self.next < ring.first_seq {
                let missed = ring.first_seq - self.next;
                self.next = ring.first_seq;
                return Some(Err(Lagged { missed }));
            }
            while self.next < ring.next_seq {
                let event = ring.get(self.next).cloned();
                self.next += 1;
                if let Some(event) = event
                    && !event.superseded
                    && keep(&event)
                {
                    return Some(Ok(event));
                }
            }
        }
        self.tip.mark_unchanged();
        None
    }

    /// The position: the `seq` of the next event to read.
    pub fn position(&self) -> u64 {
        self.next
    }
}

impl EventBus {
    /// A bus that keeps what `limits` allow; sequence numbers start at `first_seq` (the boot
    /// time in microseconds, so ids of an earlier run are smaller than any of this one).
    pub fn new(limits: RingLimits, first_seq: u64) -> Self {
        Self::with_numbering(limits, first_seq, None)
    }

    /// A bus whose events come numbered by the store ([`EventBus::publish_numbered`]), the
    /// same numbers on every node that shares the store.
    pub fn numbered(limits: RingLimits) -> Self {
        Self::with_numbering(limits, 1, Some(HashMap::new()))
    }

    fn with_numbering(limits: RingLimits, first_seq: u64, by_seq: Option<HashMap<u64, u64>>) -> Self {
        let (tip, _) = watch::channel(first_seq);
        EventBus {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                first_seq,
                next_seq: first_seq,
                by_seq,
                max_seen: 0,
                bytes: 0,
                limits,
                last_progress: HashMap::new(),
            }),
            tip,
        }
    }

    /// Publishes events that carry their own `seq` (a numbered bus), in the order given.
    pub fn publish_numbered(&self, events: impl IntoIterator<Item = JobEvent>) {
        let next = {
            let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for event in events {
                ring.push(Arc::new(event));
            }
            ring.next_seq
        };
        self.tip.send_replace(next);
    }

    /// Publishes committed events in order.
    pub fn publish(&self, events: impl IntoIterator<Item = JobEvent>) {
        let next = {
            let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for mut event in events {
                event.seq = ring.next_seq;
                ring.push(Arc::new(event));
            }
            ring.next_seq
        };
        self.tip.send_replace(next);
    }

    /// A reader positioned after every event published so far, with the retained events that
    /// `keep` selects (for a stream that replays some history before it goes live). Nothing
    /// published after the copy is missed, and nothing is in both.
    pub fn subscribe(self: &Arc<Self>, keep: impl Fn(&JobEvent) -> bool) -> (Vec<Arc<JobEvent>>, Subscription) {
        let ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let past = ring.events.iter().filter(|e| keep(e)).cloned().collect();
        let subscription =
            Subscription { bus: Arc::clone(self), next: ring.next_seq, tip: self.tip.subscribe(), awaiting: None };
        (past, subscription)
    }

    /// A reader positioned just after event `seq` (a `Last-Event-ID`); its first read reports
    /// [`Lagged`] if the ring no longer holds what followed.
    pub fn subscribe_after(self: &Arc<Self>, seq: u64) -> Subscription {
        let ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (next, awaiting) = match &ring.by_seq {
            None => (seq.saturating_add(1).min(ring.next_seq), None),
            Some(by_seq) => match by_seq.get(&seq) {
                Some(&position) => (position + 1, None),
                // An id this bus does not hold: one another node received first (wait for
                // it), or one it no longer holds (the wait ends in a lag, and reading goes on
                // from the oldest event held).
                None => {
                    let wait = if seq > ring.max_seen { AWAIT_NEWER } else { AWAIT_OLDER };
                    (ring.first_seq, Some((seq, tokio::time::Instant::now() + wait)))
                }
            },
        };
        Subscription { bus: Arc::clone(self), next, tip: self.tip.subscribe(), awaiting }
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).next_seq
    }

    /// Bytes the ring holds now.
    pub fn retained_bytes(&self) -> usize {
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, version: u64) -> JobEvent {
        JobEvent {
            seq: 0,
            job_id: JobId::from_raw(id),
            queue: Arc::from("q"),
            version,
            kind: EventKind::State,
            state: JobState::Ready,
            attempt: 0,
            at: Timestamp::from_millis(0),
            data: None,
            error: None,
            run_at: None,
            superseded: false,
        }
    }

    fn progress(id: i64, version: u64, bytes: usize) -> JobEvent {
        JobEvent { kind: EventKind::Progress, data: Some("x".repeat(bytes)), ..event(id, version) }
    }

    fn bus(max_events: usize, max_bytes: usize, first_seq: u64) -> Arc<EventBus> {
        Arc::new(EventBus::new(RingLimits { max_events, max_bytes }, first_seq))
    }

    #[tokio::test]
    async fn a_subscriber_sees_the_past_then_the_live_events_without_gap_or_overlap() {
        let bus = bus(4, usize::MAX, 100);
        bus.publish([event(1, 1), event(2, 1)]);
        let (past, mut live) = bus.subscribe(|e| e.job_id == JobId::from_raw(1));
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].seq, 100);
        bus.publish([event(1, 2)]);
        let next = live.next(|_| true).await.unwrap();
        assert_eq!((next.seq, next.version), (102, 2));
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_next_publish() {
        let bus = bus(16, usize::MAX, 0);
        let (_, mut sub) = bus.subscribe(|_| true);
        let reader = tokio::spawn(async move { sub.next(|e| e.job_id == JobId::from_raw(2)).await });
        tokio::task::yield_now().await;
        bus.publish([event(1, 1)]);
        bus.publish([event(2, 1)]);
        let got = reader.await.unwrap().unwrap();
        assert_eq!((got.job_id, got.seq), (JobId::from_raw(2), 1));
    }

    #[test]
    fn the_ring_keeps_only_the_most_recent_events() {
        let bus = bus(2, usize::MAX, 0);
        bus.publish((1..=5).map(|v| event(1, v)));
        let (past, _) = bus.subscribe(|_| true);
        let versions: Vec<u64> = past.iter().map(|e| e.version).collect();
        assert_eq!(versions, vec![4, 5]);
        assert_eq!(bus.next_seq(), 5);
    }

    #[test]
    fn the_ring_is_bounded_by_bytes() {
        let bus = bus(1_000_000, 1_000_000, 0);
        // Different jobs, so nothing coalesces: only the byte bound holds the ring.
        bus.publish((0..1_000).map(|i| progress(i, 1, 100_000)));
        assert!(bus.retained_bytes() <= 1_000_000, "{}", bus.retained_bytes());
        let (past, _) = bus.subscribe(|_| true);
        assert_eq!(past.last().map(|e| e.job_id), Some(JobId::from_raw(999)), "the newest are kept");
    }

    #[tokio::test]
    async fn repeated_progress_of_one_job_holds_one_events_bytes() {
        let bus = bus(1_000_000, usize::MAX, 0);
        let (_, mut sub) = bus.subscribe(|_| true);
        bus.publish((1..=1_000).map(|v| progress(7, v, 250_000)));
        assert!(bus.retained_bytes() < 250_000 + 1_000 * EVENT_OVERHEAD * 2, "{}", bus.retained_bytes());
        // A reader that was behind passes over the superseded ones to the latest.
        let got = sub.next(|_| true).await.unwrap();
        assert_eq!((got.version, got.data.as_ref().map(String::len)), (1_000, Some(250_000)));
        // Anything else that happens to the job ends the run: that progress stays. Small
        // progress is never superseded.
        bus.publish([event(7, 1_001), progress(7, 1_002, 10), progress(7, 1_003, 10)]);
        let (past, _) = bus.subscribe(|e| !e.superseded);
        assert_eq!(past.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1_000, 1_001, 1_002, 1_003]);
    }

    #[tokio::test]
    async fn a_reader_that_fell_out_of_the_ring_is_told_and_goes_on() {
        let bus = bus(3, usize::MAX, 10);
        let mut sub = bus.subscribe_after(9);
        bus.publish((1..=5).map(|v| event(1, v)));
        assert_eq!(sub.next(|_| true).await, Err(Lagged { missed: 2 }));
        assert_eq!(sub.next(|_| true).await.map(|e| e.version), Ok(3));
    }

    #[tokio::test]
    async fn a_store_numbered_id_not_received_yet_is_waited_for_and_one_long_gone_is_a_lag() {
        let numbered = |seq: u64| JobEvent { seq, ..event(seq as i64, 1) };
        let bus = Arc::new(EventBus::numbered(RingLimits::default()));
        bus.publish_numbered([numbered(10), numbered(11)]);
        // Another node delivered 13 already; this one has not received it yet.
        let mut ahead = bus.subscribe_after(13);
        bus.publish_numbered([numbered(12), numbered(13), numbered(14)]);
        assert_eq!(ahead.next(|_| true).await.map(|e| e.seq), Ok(14), "goes on right after 13");
        // An id older than everything held: after a short wait, a lag, then all that is held.
        let mut behind = bus.subscribe_after(5);
        assert_eq!(behind.next(|_| true).await, Err(Lagged { missed: 0 }));
        assert_eq!(behind.next(|_| true).await.map(|e| e.seq), Ok(10));
    }
}
