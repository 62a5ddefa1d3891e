//! The event bus: every committed change to a job, in order, for progress streams.
//!
//! A store publishes events only after the change is committed, so a subscriber never sees a
//! change that could still be lost. The bus keeps the most recent events in a ring, so a client
//! that reconnects with `Last-Event-ID` can be replayed what it missed; when the ring no longer
//! holds them the stream sends a fresh snapshot instead (see [`crate::http::sse`]).
//!
//! Subscribing and publishing take the same lock, so a subscriber that copies the ring and then
//! listens to the channel sees every event exactly once, with no gap between the two.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

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
}

/// Recent events in a ring, plus a channel to the live subscribers.
#[derive(Debug)]
pub struct EventBus {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<JobEvent>>,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<JobEvent>>,
    capacity: usize,
    next_seq: u64,
}

/// Events kept for replay by default.
pub const DEFAULT_RING_CAPACITY: usize = 65_536;

impl EventBus {
    /// A bus that keeps the last `capacity` events; sequence numbers start at `first_seq` (the
    /// boot time in microseconds, so ids of an earlier run are smaller than any of this one).
    pub fn new(capacity: usize, first_seq: u64) -> Self {
        let (live, _) = broadcast::channel(capacity.max(16));
        EventBus {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                next_seq: first_seq,
            }),
            live,
        }
    }

    /// Publishes committed events in order.
    pub fn publish(&self, events: impl IntoIterator<Item = JobEvent>) {
        let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for mut event in events {
            event.seq = ring.next_seq;
            ring.next_seq += 1;
            let event = Arc::new(event);
            if ring.events.len() == ring.capacity {
                ring.events.pop_front();
            }
            ring.events.push_back(Arc::clone(&event));
            // An error only means nobody is listening right now.
            let _ = self.live.send(event);
        }
    }

    /// Subscribes to live events, and returns the retained events that `keep` selects.
    /// Nothing published after the copy is missed by the receiver, and nothing is in both.
    pub fn subscribe(
        &self,
        keep: impl Fn(&JobEvent) -> bool,
    ) -> (Vec<Arc<JobEvent>>, broadcast::Receiver<Arc<JobEvent>>) {
        let ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let past = ring.events.iter().filter(|e| keep(e)).cloned().collect();
        (past, self.live.subscribe())
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).next_seq
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
        }
    }

    #[tokio::test]
    async fn a_subscriber_sees_the_past_then_the_live_events_without_gap_or_overlap() {
        let bus = EventBus::new(4, 100);
        bus.publish([event(1, 1), event(2, 1)]);
        let (past, mut live) = bus.subscribe(|e| e.job_id == JobId::from_raw(1));
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].seq, 100);
        bus.publish([event(1, 2)]);
        let next = live.recv().await.unwrap();
        assert_eq!((next.seq, next.version), (102, 2));
    }

    #[test]
    fn the_ring_keeps_only_the_most_recent_events() {
        let bus = EventBus::new(2, 0);
        bus.publish((1..=5).map(|v| event(1, v)));
        let (past, _) = bus.subscribe(|_| true);
        let versions: Vec<u64> = past.iter().map(|e| e.version).collect();
        assert_eq!(versions, vec![4, 5]);
        assert_eq!(bus.next_seq(), 5);
    }
}
