//! Jobs and their states.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::id::{JobId, LeaseToken};
use super::queue::QueueName;
use super::time::Timestamp;

/// Where a job is in its lifecycle; see `docs/state_machine.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Waiting for its time: a delayed job, or a failed attempt waiting out its backoff.
    Scheduled,
    /// Can be leased now.
    Ready,
    /// Leased to a worker, under a lease that expires unless extended.
    Running,
    /// Finished: the handler succeeded.
    Succeeded,
    /// Finished: attempts exhausted or a non-retryable failure. This is the dead-letter queue.
    Dead,
    /// Finished: canceled before or while running.
    Canceled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Ready,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Canceled,
    ];

    /// The lowercase name used on the wire and in the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Canceled => "canceled",
        }
    }

    /// True for the states a job never leaves on its own (only redrive leaves `dead`).
    pub const fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Canceled)
    }

    /// A dense index, for per-state arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not a state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?} (expected one of scheduled, ready, running, succeeded, dead, canceled)")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.chars().take(super::validate::MAX_ECHO_LEN).collect()))
    }
}

/// One failed attempt, as recorded on the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptError {
    /// When the attempt failed.
    pub at: Timestamp,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// What the worker (or the server, for an expired lease) said went wrong.
    pub message: String,
}

/// A validated job, ready to be inserted.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The queue it goes on.
    pub queue: QueueName,
    /// The job type, e.g. `render_pdf`.
    pub kind: String,
    /// The payload, as JSON text.
    pub payload: String,
    /// Higher runs first.
    pub priority: i32,
    /// When it may run; `None` means now.
    pub run_at: Option<Timestamp>,
    /// Overrides the queue's `max_attempts`.
    pub max_attempts: Option<u32>,
    /// How long one attempt may run before the worker kills it.
    pub timeout_ms: Option<u64>,
    /// Deduplicates enqueues per queue within the retention window.
    pub idempotency_key: Option<String>,
    /// Free-form string map: correlation ids, `traceparent`.
    pub metadata: BTreeMap<String, String>,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Its identity.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Its type.
    pub kind: String,
    /// Its payload, as JSON text.
    pub payload: String,
    /// Higher runs first.
    pub priority: i32,
    /// Where it is in its lifecycle.
    pub state: JobState,
    /// When it became (or becomes) ready.
    pub run_at: Timestamp,
    /// How many times it has been leased, not counting released leases.
    pub attempt: u32,
    /// Attempts allowed: the job's override or its queue's policy.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout_ms: Option<u64>,
    /// Its idempotency key, if enqueued with one.
    pub idempotency_key: Option<String>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// The latest progress reported, as JSON text.
    pub progress: Option<String>,
    /// The result of the successful attempt, as JSON text.
    pub result: Option<String>,
    /// One entry per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// A cancel was asked for while it ran; the worker learns it on its next heartbeat.
    pub cancel_requested: bool,
    /// The current lease's token, while running.
    pub lease_token: Option<LeaseToken>,
    /// When the current lease expires, while running.
    pub lease_expires_at: Option<Timestamp>,
    /// The worker holding the lease, while running (and the last one after).
    pub worker_id: Option<String>,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When its latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// Bumped on every change; the id of its events on the progress stream.
    pub version: u64,
}
