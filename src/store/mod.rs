//! The storage seam: one [`Store`] trait, with two implementations: embedded SQLite for one
//! node, and PostgreSQL for any number of nodes sharing one database.
//!
//! A store is the authority on jobs and queues, and it answers only after a change is durable
//! ([`Durability`]). It decides nothing about the job lifecycle (`docs/state_machine.md`)
//! itself: every change of a job's state is a [`Transition`](crate::core::state::Transition)
//! built by [`crate::core::state`] — which states, what becomes of the attempt count, and why —
//! and the store writes exactly that. It refuses a transition that does not leave the state the
//! job is in, applies the attempt change as a value, and fences every change of a leased job on
//! the token the caller presented, sequence and secret alike. A store that keeps state in two
//! places (memory and a database) checks in both, and reports a disagreement between them as
//! [`StoreError::Inconsistent`], never as a silent no-op. Methods are named noun-first
//! (`job_lease`, `lease_heartbeat`, `dead_redrive`) so they group by entity, and take one params
//! struct each.
//!
//! A store never imports the HTTP layer; it publishes committed changes on the
//! [`EventBus`](crate::events::EventBus) it was given.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::core::state::IllegalTransition;
use crate::core::{
    Invalid, Job, JobId, JobState, LeaseToken, NewJob, QueueName, QueuePolicy, QueuePolicyPatch, Timestamp,
};
use crate::metrics::{MetricsSnapshot, QueueCounters};

mod columns;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod conformance;

/// Why a store refused or failed an operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No job has this id (or it was pruned).
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// No queue has this name.
    #[error("queue {0} not found")]
    QueueNotFound(QueueName),
    /// The lease token is not the job's current one: its lease expired or it was leased again.
    #[error("stale lease token for job {id}: the job is {state} under another lease or none")]
    StaleLease {
        /// The job.
        id: JobId,
        /// Its state now.
        state: JobState,
    },
    /// The job's state does not allow the operation.
    #[error("job {id}: {source}")]
    Illegal {
        /// The job.
        id: JobId,
        /// The refused transition.
        source: IllegalTransition,
    },
    /// The idempotency key is held by a job of another kind or payload: the same key was
    /// reused for a different request.
    #[error("idempotency key {key:?} is held by job {existing} with a different kind or payload")]
    IdempotencyConflict {
        /// The job that holds the key.
        existing: JobId,
        /// The key.
        key: String,
    },
    /// The queue still holds jobs that are waiting, running or dead.
    #[error(
        "queue {queue} still holds {jobs} scheduled, ready, running or dead jobs; finish, cancel or redrive them first"
    )]
    QueueNotEmpty {
        /// The queue.
        queue: QueueName,
        /// How many jobs it holds.
        jobs: u64,
    },
    /// Creating the queue would pass the limit of queues.
    #[error("there are already {limit} queues, the most this server keeps; delete unused ones first")]
    QueueLimit {
        /// The limit.
        limit: usize,
    },
    /// The queue holds its most waiting jobs (`max_ready`); enqueue again once workers drain it.
    #[error("queue {queue} is full: it holds its limit of {limit} waiting jobs (max_ready)")]
    QueueFull {
        /// The queue.
        queue: QueueName,
        /// Its limit.
        limit: u64,
    },
    /// A value is out of range.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The worker was asked to drain: it gets no more jobs.
    #[error("worker {0} is draining: it leases nothing new")]
    WorkerDraining(String),
    /// No worker has this id (none asked for work within the last minute).
    #[error("worker {0} not found")]
    WorkerNotFound(String),
    /// Too many operations are waiting; try again shortly.
    #[error("the store is overloaded; retry shortly")]
    Busy,
    /// The disk is full; nothing was written.
    #[error("the disk is full; nothing was written")]
    Full,
    /// The store cannot be reached or failed to write; nothing was written.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store's memory and its database disagree — an update meant for one row changed
    /// another number, say a row whose lease is not the one memory holds. A bug or outside
    /// interference, never the caller's doing: the transaction was rolled back, nothing was
    /// written, and the store rebuilt its memory from the database.
    #[error("the store's memory and database disagree: {0}")]
    Inconsistent(String),
}

/// When a store counts a change as durable, and so when it may answer. Every store offers both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Every acknowledged change survives power loss. The default.
    #[default]
    Fsync,
    /// Every acknowledged change survives a crash of wharf, not of the machine.
    Os,
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// An API token as stored: its hash, never the token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    /// Its public id (the `<id>` of `wharf_<id>_<secret>`).
    pub id: String,
    /// A name for people.
    pub name: Option<String>,
    /// What it may do.
    pub role: crate::core::auth::Role,
    /// Which queues it may act on.
    pub queues: crate::core::auth::QueuePatterns,
    /// Requests per second it may send; `None` follows the server's default.
    pub rate: Option<f64>,
    /// SHA-256 of the whole token.
    pub hash: [u8; 32],
    /// When it was created.
    pub created_at: Timestamp,
}

/// A job without its payload, progress, result and errors: what listings and enqueue return.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSummary {
    /// Its identity.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Its type.
    pub kind: String,
    /// Its state.
    pub state: JobState,
    /// Its priority.
    pub priority: i32,
    /// When it became or becomes ready.
    pub run_at: Timestamp,
    /// Attempts so far.
    pub attempt: u32,
    /// Its override of the queue's attempt limit, if any.
    pub max_attempts: Option<u32>,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
}

/// The outcome of one enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct Inserted {
    /// The job: new, or the one already holding the idempotency key.
    pub job: JobSummary,
    /// False when the idempotency key matched an existing job and nothing was created.
    pub created: bool,
}

/// Which jobs to list, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct JobListParams {
    /// The queue.
    pub queue: QueueName,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs with a failed attempt whose error contains this text (case-insensitive).
    pub error: Option<String>,
    /// At most this many (1–1000).
    pub limit: u32,
    /// Only this one and newer ones (a creation-time bound: [`JobId::floor_at`]).
    pub from: Option<JobId>,
    /// Examine at most this many jobs (of each state, where a store keeps a range per state),
    /// so a filter that matches little cannot make one call read a whole queue: the page may
    /// then hold fewer than `limit` jobs and a `next_cursor` to go on from. `None`: no bound.
    pub scan: Option<u32>,
    /// Only jobs older than this one (the previous page's `next_cursor`).
    pub cursor: Option<JobId>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// A worker's request for work.
#[derive(Clone, Debug, PartialEq)]
pub struct JobLeaseParams {
    /// Who asks; recorded on the jobs it gets.
    pub worker_id: String,
    /// Where the worker runs and how many jobs it runs at once, for `GET /v1/workers` and
    /// the autoscaler.
    pub presence: WorkerPresence,
    /// Queues to take from; the highest priority across them goes first.
    pub queues: Vec<QueueName>,
    /// Most jobs to take.
    pub max: u32,
    /// How long to wait for a job when none is ready (long poll); zero answers at once.
    pub wait: Duration,
    /// Lease duration, overriding the queue's.
    pub lease_ms: Option<u64>,
    /// Most payload bytes in one answer: jobs are handed out until their payloads reach this
    /// (the first one always goes), so `max` jobs of large payloads cannot make an answer of
    /// hundreds of megabytes.
    pub max_bytes: usize,
}

/// A job handed to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct LeasedJob {
    /// Its identity.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Its type.
    pub kind: String,
    /// Its payload, as JSON text.
    pub payload: String,
    /// This attempt (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Its priority.
    pub priority: i32,
    /// The fencing token to present with every call about this job.
    pub lease_token: LeaseToken,
    /// When the lease runs out unless extended.
    pub lease_expires_at: Timestamp,
    /// How long the attempt may run.
    pub timeout_ms: Option<u64>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A heartbeat: extends the lease and optionally reports progress.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseHeartbeatParams {
    /// The job.
    pub id: JobId,
    /// The lease's token.
    pub lease_token: LeaseToken,
    /// New lease duration from now; defaults to the lease's own duration.
    pub extend_ms: Option<u64>,
    /// Progress as JSON text.
    pub progress: Option<String>,
}

/// What a heartbeat tells the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The new expiry.
    pub lease_expires_at: Timestamp,
    /// The job should stop: a cancel was requested.
    pub cancel_requested: bool,
}

/// A successful attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct JobCompleteParams {
    /// The job.
    pub id: JobId,
    /// The lease's token.
    pub lease_token: LeaseToken,
    /// The result, as JSON text.
    pub result: Option<String>,
}

/// A failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct JobFailParams {
    /// The job.
    pub id: JobId,
    /// The lease's token.
    pub lease_token: LeaseToken,
    /// What went wrong.
    pub error: String,
    /// False makes the job dead at once.
    pub retryable: bool,
    /// Retry after this delay instead of the backoff.
    pub retry_in_ms: Option<u64>,
}

/// Where a job went after a completion, failure or release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// Its new state.
    pub state: JobState,
    /// When it runs again, if it was scheduled.
    pub run_at: Option<Timestamp>,
}

/// A lease given back without counting the attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct JobReleaseParams {
    /// The job.
    pub id: JobId,
    /// The lease's token.
    pub lease_token: LeaseToken,
}

/// Many completions and failures, committed together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobAckParams {
    /// Successful attempts.
    pub complete: Vec<JobCompleteParams>,
    /// Failed attempts.
    pub fail: Vec<JobFailParams>,
}

/// The outcome of each item of an acknowledgement, in request order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Acked {
    /// One per completion.
    pub complete: Vec<StoreResult<Settled>>,
    /// One per failure.
    pub fail: Vec<StoreResult<Settled>>,
}

/// What the autoscaler reads of a queue: its waiting work and what holds it back.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueBacklog {
    /// The queue.
    pub queue: QueueName,
    /// Jobs ready to run.
    pub ready: u64,
    /// Jobs running.
    pub running: u64,
    /// Its policy (paused, concurrency and rate limits).
    pub policy: QueuePolicy,
}

/// An autoscaled pool's state as the leader last wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolRecord {
    /// The pool's name.
    pub name: String,
    /// Its state, as JSON (the autoscaler's own format).
    pub state: String,
    /// When it was written.
    pub updated_at: Timestamp,
}

/// An alarm's row: its rule when set through the API, and the state the leader last wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmRecord {
    /// The alarm's name.
    pub name: String,
    /// The rule as set through the API (JSON, the API's shape); `None` for a rule only the
    /// config file declares.
    pub rule: Option<String>,
    /// Its state, as JSON (the alarm evaluator's own format); `None` before the first.
    pub state: Option<String>,
    /// When either was last written.
    pub updated_at: Timestamp,
}

/// Most alarm rules set through the API.
pub const MAX_ALARMS: u64 = 1_000;

/// A queue's policy and counts.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueInfo {
    /// Its name.
    pub name: QueueName,
    /// Its policy.
    pub policy: QueuePolicy,
    /// Jobs per state, indexed by [`JobState::index`].
    pub counts: [u64; 6],
    /// When the oldest ready job became ready.
    pub oldest_ready_at: Option<Timestamp>,
}

/// What a worker says about itself with each lease request: where it runs, so a scaling
/// provider can map it to its process, ECS task or pod, and how many jobs it runs at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerPresence {
    /// Its host name.
    pub host: Option<String>,
    /// Its process id on that host.
    pub pid: Option<u32>,
    /// The ECS task it runs in.
    pub task_arn: Option<String>,
    /// The Kubernetes pod it runs in.
    pub pod: Option<String>,
    /// Jobs it runs at once (its `--concurrency`).
    pub capacity: Option<u32>,
}

/// A worker that asked for work recently.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    /// Its id.
    pub id: String,
    /// Where it runs and its capacity, as it said.
    pub presence: WorkerPresence,
    /// Asked to drain (by an operator, the autoscaler or itself on SIGTERM): it leases nothing
    /// new and stops once its running jobs end.
    pub draining: bool,
    /// The queues it last asked for.
    pub queues: Vec<QueueName>,
    /// Jobs it holds leases on now.
    pub running: u64,
    /// When it last asked for work or sent a heartbeat.
    pub last_seen: Timestamp,
}

/// How long a worker counts as connected after it was last seen.
pub const WORKER_TTL_MS: u64 = 60_000;

/// Dead jobs to send back.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadRedriveParams {
    /// The queue.
    pub queue: QueueName,
    /// These jobs, each of which must be dead in this queue; all dead jobs when `None`.
    pub ids: Option<Vec<JobId>>,
}

/// What a cancel did.
#[derive(Clone, Debug, PartialEq)]
pub struct Canceled {
    /// The job's state now: `canceled`, or still `running` with a cancel requested.
    pub state: JobState,
    /// A running job was flagged; it ends `canceled` when its worker stops.
    pub cancel_requested: bool,
}

/// Who runs a store's maintenance (promotion of due jobs, lease expiry, pruning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// One server owns the store and maintains it itself, at exact deadlines.
    Embedded,
    /// Many servers share the store; the one that holds the leader lock
    /// ([`Store::leader_try`]) runs maintenance.
    Shared,
}

/// The storage seam. Every method answers only after its change is durable.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Enqueues one job; a second enqueue with the same `(queue, idempotency_key)` returns the
    /// first job and creates nothing. Creates the queue with defaults if it does not exist.
    async fn job_insert(&self, job: NewJob) -> StoreResult<Inserted>;

    /// Enqueues many jobs in one transaction: all or none.
    async fn job_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>>;

    /// One job, whole.
    async fn job_get(&self, id: JobId) -> StoreResult<Job>;

    /// A page of a queue's jobs, newest first.
    async fn job_list(&self, params: JobListParams) -> StoreResult<JobPage>;

    /// Leases up to `max` ready jobs, waiting up to `wait` for the first one.
    async fn job_lease(&self, params: JobLeaseParams) -> StoreResult<Vec<LeasedJob>>;

    /// Extends a lease and records progress.
    async fn lease_heartbeat(&self, params: LeaseHeartbeatParams) -> StoreResult<Heartbeat>;

    /// Records a successful attempt.
    async fn job_complete(&self, params: JobCompleteParams) -> StoreResult<Settled>;

    /// Records a failed attempt: retried with backoff, or dead.
    async fn job_fail(&self, params: JobFailParams) -> StoreResult<Settled>;

    /// Gives a lease back: the job is ready again at once and the attempt does not count.
    async fn job_release(&self, params: JobReleaseParams) -> StoreResult<Settled>;

    /// Many completions and failures in one transaction; each item succeeds or fails alone.
    async fn job_ack(&self, params: JobAckParams) -> StoreResult<Acked>;

    /// Cancels a job: at once if not running, on its next heartbeat if running.
    async fn job_cancel(&self, id: JobId) -> StoreResult<Canceled>;

    /// Every queue.
    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>>;

    /// One queue.
    async fn queue_get(&self, name: QueueName) -> StoreResult<QueueInfo>;

    /// Creates a queue or changes its policy.
    async fn queue_upsert(&self, name: QueueName, patch: QueuePolicyPatch) -> StoreResult<QueueInfo>;

    /// Deletes a queue that holds no waiting, running or dead job, with its finished jobs.
    async fn queue_delete(&self, name: QueueName) -> StoreResult<()>;

    /// Stores a new token (its hash).
    async fn token_insert(&self, token: TokenRecord) -> StoreResult<()>;

    /// Every token, oldest first.
    async fn token_list(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Deletes a token; false if there was none with this id.
    async fn token_delete(&self, id: String) -> StoreResult<bool>;

    /// Whether this store maintains itself or needs a leader to.
    fn leadership(&self) -> Leadership {
        Leadership::Embedded
    }

    /// Takes (or keeps) the leader lock of a shared store; true while this node holds it.
    /// An embedded store is always its own leader.
    async fn leader_try(&self) -> StoreResult<bool> {
        Ok(true)
    }

    /// Sends dead jobs back to `ready` with their attempts reset; returns the jobs moved.
    async fn dead_redrive(&self, params: DeadRedriveParams) -> StoreResult<Vec<JobId>>;

    /// Deletes up to `limit` finished jobs past their queue's retention; returns how many.
    async fn jobs_prune(&self, limit: u32) -> StoreResult<u64>;

    /// Promotes due jobs and expires overdue leases now. Stores also do this on their own; this
    /// is for tests that move a manual clock.
    async fn maintain(&self) -> StoreResult<()>;

    /// Workers seen within [`WORKER_TTL_MS`], by id.
    async fn worker_list(&self) -> StoreResult<Vec<WorkerInfo>>;

    /// Ready and running jobs, and the policy, of each of `queues` that exists.
    async fn queue_backlog(&self, queues: Vec<QueueName>) -> StoreResult<Vec<QueueBacklog>> {
        Ok(self
            .queue_list()
            .await?
            .into_iter()
            .filter(|q| queues.contains(&q.name))
            .map(|q| QueueBacklog {
                ready: q.counts[JobState::Ready.index()],
                running: q.counts[JobState::Running.index()],
                queue: q.name,
                policy: q.policy,
            })
            .collect())
    }

    /// Stores an autoscaled pool's state, replacing the last.
    async fn pool_put(&self, record: PoolRecord) -> StoreResult<()>;

    /// Every autoscaled pool's last state, by name.
    async fn pool_list(&self) -> StoreResult<Vec<PoolRecord>>;

    /// Sets an alarm rule (JSON), keeping the alarm's state; true when it is new. Refuses a
    /// new one past [`MAX_ALARMS`] with [`StoreError::Invalid`].
    async fn alarm_rule_put(&self, name: String, rule: String, at: Timestamp) -> StoreResult<bool>;

    /// Forgets an alarm: its rule and its state; false if there was neither.
    async fn alarm_delete(&self, name: String) -> StoreResult<bool>;

    /// Stores an alarm's state (JSON), keeping its rule.
    async fn alarm_state_put(&self, name: String, state: String, at: Timestamp) -> StoreResult<()>;

    /// Every alarm row, by name.
    async fn alarm_list(&self) -> StoreResult<Vec<AlarmRecord>>;

    /// Asks a worker to drain: its lease requests, parked ones included, end with
    /// [`StoreError::WorkerDraining`] from now on. A worker not seen yet is remembered as
    /// draining when `even_unseen` (one just started by a scaling provider), else
    /// [`StoreError::WorkerNotFound`].
    async fn worker_drain(&self, id: String, even_unseen: bool) -> StoreResult<()>;

    /// Forgets a worker at once (it stopped); false if it was not known. Leases it still
    /// holds run out as usual.
    async fn worker_leave(&self, id: String) -> StoreResult<bool>;

    /// Counts and totals for `/metrics`.
    async fn metrics(&self) -> StoreResult<MetricsSnapshot>;

    /// Each queue's running totals alone (what the latency charts read every few seconds):
    /// a store whose totals are in memory answers without the counting `metrics` does.
    async fn queue_counters(&self) -> StoreResult<Vec<(String, QueueCounters)>> {
        Ok(self.metrics().await?.queues.into_iter().map(|q| (q.queue, q.counters)).collect())
    }

    /// Succeeds if the store can serve requests.
    async fn ping(&self) -> StoreResult<()>;

    /// Answers parked lease requests, finishes pending writes and closes the store.
    async fn close(&self);
}
