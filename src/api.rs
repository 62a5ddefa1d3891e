//! The wire format of HTTP API v1: every request and response body.
//!
//! The server ([`crate::http`]) and the client library ([`crate::client`]) share these types,
//! so they cannot drift apart, and `/v1/openapi.json` is generated from them. Core types stay
//! free of serde; conversions live next to the handlers that need them.
//!
//! JSON values a user owns (payload, progress, result) travel as raw JSON text and are never
//! re-encoded. Timestamps are RFC 3339 strings in UTC. Ids and lease tokens are opaque strings.
//! Request bodies refuse unknown fields, so a misspelt option is an error, not a silent default.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// A JSON value owned by the user, kept as text.
pub type Json = Box<RawValue>;

/// Integers as JSON Schema counts them: `3` and `3.0` alike (some JSON encoders write every
/// number as a float); `3.5` is refused.
mod int {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }

    fn exact<E: Error>(n: Number) -> Result<i64, E> {
        match n {
            Number::Int(i) => Ok(i),
            Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
            Number::Float(f) => Err(E::custom(format!("invalid value: {f}, expected an integer"))),
        }
    }

    pub fn opt<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
        Option::<Number>::deserialize(de)?.map(exact).transpose()
    }

    pub fn opt_opt<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Option<i64>>, D::Error> {
        Ok(Some(Option::<Number>::deserialize(de)?.map(exact).transpose()?))
    }
}

/// An RFC 9457 problem: every error answer has this body, as `application/problem+json`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Problem {
    /// A URI naming the kind of problem; see `docs/problems.md`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, in one line.
    pub detail: String,
    /// A stable snake_case name clients can match on, e.g. `stale_lease`.
    pub code: String,
    /// The request field at fault, as a path (`priority`, `jobs[3].payload`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The job the problem is about, when one exists: the job holding an idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// `POST /v1/queues/{queue}/jobs`: one job.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The job type, e.g. `render_pdf` (1–256 characters).
    #[schema(min_length = 1, max_length = 256)]
    pub kind: String,
    /// Any JSON value (at most 256 KiB by default); `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = serde_json::Value)]
    pub payload: Option<Json>,
    /// Higher runs first; -1,000,000 to 1,000,000; default 0.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i64>,
    /// Run no sooner than this many milliseconds from now (up to one year).
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31_536_000_000_i64)]
    pub delay_ms: Option<i64>,
    /// Run no sooner than this RFC 3339 time (exclusive with `delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// Attempts allowed, overriding the queue's policy (1–1000).
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000)]
    pub max_attempts: Option<i64>,
    /// How long one attempt may run before the worker kills it, in milliseconds.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604_800_000)]
    pub timeout_ms: Option<i64>,
    /// A second enqueue with the same key on the same queue returns the first job (200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// A string map carried to the worker: correlation ids, `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v1/queues/{queue}/jobs/batch`: many jobs in one transaction.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchEnqueueRequest {
    /// The jobs (at most 10,000 by default).
    #[schema(max_items = 10_000)]
    pub jobs: Vec<EnqueueRequest>,
}

/// The answer to a batch enqueue.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchEnqueueResponse {
    /// The job ids, in request order (an idempotent hit gives the existing job's id).
    pub ids: Vec<String>,
    /// How many jobs were created (the rest were idempotent hits).
    pub created: usize,
}

/// A job without its payload, progress, result and errors.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobSummaryView {
    /// Its id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub kind: String,
    /// `scheduled`, `ready`, `running`, `succeeded`, `dead` or `canceled`.
    pub state: String,
    /// Its priority.
    pub priority: i32,
    /// When it became (or becomes) ready.
    pub run_at: String,
    /// Attempts so far.
    pub attempt: u32,
    /// Its own attempt limit, if it overrides the queue's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Its idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When it was enqueued.
    pub created_at: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// One failed attempt.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptErrorView {
    /// When it failed.
    pub at: String,
    /// Which attempt.
    pub attempt: u32,
    /// What went wrong.
    pub message: String,
}

/// A whole job.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Its id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub kind: String,
    /// Its state.
    pub state: String,
    /// Its payload.
    #[schema(value_type = serde_json::Value)]
    pub payload: Json,
    /// Its priority.
    pub priority: i32,
    /// When it became (or becomes) ready.
    pub run_at: String,
    /// Attempts so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Its idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// The latest progress reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub progress: Option<Json>,
    /// The result of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Json>,
    /// One entry per failed attempt, oldest first.
    pub errors: Vec<AttemptErrorView>,
    /// A cancel was requested while it ran.
    pub cancel_requested: bool,
    /// When the current lease expires, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    /// The worker that holds (or last held) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// When it was enqueued.
    pub created_at: String,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Bumped on every change; the event id on its progress stream.
    pub version: u64,
}

/// `GET /v1/queues/{queue}/jobs`: one page, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobListResponse {
    /// The jobs.
    pub jobs: Vec<JobSummaryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/queues/{queue}/jobs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^(scheduled|ready|running|succeeded|dead|canceled)$")]
    pub state: Option<String>,
    /// Only jobs of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only jobs with a failed attempt whose error contains this text (case-insensitive, at
    /// most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(max_length = 256)]
    pub error: Option<String>,
    /// Only jobs created at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub created_before: Option<String>,
    /// Page size, 1–1000; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1_000)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub cursor: Option<String>,
}

/// `POST /v1/lease`: a worker asks for work.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Who asks (1–256 characters); shown on the jobs it holds.
    #[schema(min_length = 1, max_length = 256)]
    pub worker_id: String,
    /// Queues to take from (1–32); the highest priority across them goes first.
    #[schema(min_items = 1, max_items = 32)]
    pub queues: Vec<String>,
    /// Most jobs to take, 1–1000; default 1.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000)]
    pub max: Option<i64>,
    /// Wait up to this long for a job when none is ready (long poll), 0–60,000 ms; default 0.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 60_000)]
    pub wait_ms: Option<i64>,
    /// Lease duration, overriding the queue's (100 ms – 12 h).
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 43_200_000)]
    pub lease_ms: Option<i64>,
    /// Where the worker runs, shown by `GET /v1/workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub host: Option<String>,
    /// Its process id on `host`.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    pub pid: Option<i64>,
    /// The ECS task it runs in (its ARN), so the autoscaler can tell busy tasks from idle ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub task_arn: Option<String>,
    /// The Kubernetes pod it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub pod: Option<String>,
    /// Jobs it runs at once (its `--concurrency`), 1–10,000.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub capacity: Option<i64>,
}

/// A job handed to a worker.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LeasedJobView {
    /// Its id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub kind: String,
    /// Its payload.
    #[schema(value_type = serde_json::Value)]
    pub payload: Json,
    /// This attempt, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Its priority.
    pub priority: i32,
    /// Present with every heartbeat, completion, failure and release of this attempt.
    pub lease_token: String,
    /// When the lease runs out unless extended.
    pub lease_expires_at: String,
    /// Milliseconds from the server's receipt of the lease request until the lease runs out.
    /// Counted from when it sent the request, on its own clock, a worker errs early by the
    /// request's trip, never late, whatever the two hosts' wall clocks say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// How long this attempt may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
}

/// The answer to a lease request.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseResponse {
    /// The jobs leased; empty when none was ready within `wait_ms`.
    pub jobs: Vec<LeasedJobView>,
    /// The worker was asked to drain (by an operator or the autoscaler): it gets no more jobs
    /// and should stop once the jobs it holds are done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
}

/// `POST /v1/jobs/{id}/heartbeat`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The lease's token.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub lease_token: String,
    /// Extend the lease to this many milliseconds from now; default the lease's own duration.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 43_200_000)]
    pub extend_ms: Option<i64>,
    /// Progress to record and stream: any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub progress: Option<Json>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// The new expiry.
    pub lease_expires_at: String,
    /// Milliseconds from the server's receipt of the heartbeat until the lease runs out (see
    /// the lease's `lease_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Stop the handler: the job was canceled.
    pub cancel_requested: bool,
}

/// `POST /v1/jobs/{id}/complete`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The lease's token.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub lease_token: String,
    /// The result: any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Json>,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// The lease's token.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub lease_token: String,
    /// What went wrong (kept up to 8 KiB, the end if longer).
    pub error: String,
    /// False makes the job dead now, whatever attempts are left; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Retry after this many milliseconds instead of the backoff.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31_536_000_000_i64)]
    pub retry_in_ms: Option<i64>,
}

/// `POST /v1/jobs/{id}/release`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The lease's token.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub lease_token: String,
}

/// Where a job went after a completion, failure or release.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SettledView {
    /// The job.
    pub id: String,
    /// Its new state.
    pub state: String,
    /// When it runs again, if it was scheduled for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
}

/// A completion inside `POST /v1/ack`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckComplete {
    /// The job.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub id: String,
    /// The lease's token.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub lease_token: String,
    /// The result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Json>,
}

/// A failure inside `POST /v1/ack`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckFail {
    /// The job.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub id: String,
    /// The lease's token.
    #[schema(pattern = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$")]
    pub lease_token: String,
    /// What went wrong.
    pub error: String,
    /// False makes the job dead now; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Retry after this many milliseconds instead of the backoff.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31_536_000_000_i64)]
    pub retry_in_ms: Option<i64>,
}

/// `POST /v1/ack`: many completions and failures in one transaction.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Successful attempts.
    #[serde(default)]
    pub complete: Vec<AckComplete>,
    /// Failed attempts.
    #[serde(default)]
    pub fail: Vec<AckFail>,
}

/// The outcome of one item of an acknowledgement.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AckItemResult {
    /// The job.
    pub id: String,
    /// Its new state, when the item was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the item was refused (e.g. `stale_lease`); other items are unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// The answer to `POST /v1/ack`, item by item in request order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AckResponse {
    /// One per completion.
    pub complete: Vec<AckItemResult>,
    /// One per failure.
    pub fail: Vec<AckItemResult>,
}

/// The answer to a cancel.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    /// The job.
    pub id: String,
    /// `canceled`, or `running` while its worker is told to stop.
    pub state: String,
    /// The job was running and is flagged: it ends `canceled` when the worker stops it.
    pub cancel_requested: bool,
}

/// Jobs per state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct StateCounts {
    /// Waiting for their time.
    pub scheduled: u64,
    /// Ready to lease.
    pub ready: u64,
    /// Leased.
    pub running: u64,
    /// Finished successfully.
    pub succeeded: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Canceled.
    pub canceled: u64,
}

/// Retry backoff: exponential with full jitter.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BackoffView {
    /// Upper bound of the first retry's delay.
    pub base_ms: u64,
    /// Growth per attempt.
    pub factor: f64,
    /// Largest delay.
    pub cap_ms: u64,
}

/// A queue's policy.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// Lease duration.
    pub lease_ms: u64,
    /// Attempts before a job is dead.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: BackoffView,
    /// How long finished jobs are kept.
    pub retention_ms: u64,
    /// Most jobs running at once, if limited.
    pub concurrency: Option<u32>,
    /// Most jobs started per second, if limited.
    pub rate: Option<f64>,
    /// Hands out no jobs while true.
    pub paused: bool,
    /// Most jobs waiting (ready or scheduled) before enqueues are refused with 429, if limited.
    #[serde(default)]
    pub max_ready: Option<u64>,
}

/// A queue with its counts and policy.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// Jobs per state.
    pub counts: StateCounts,
    /// When the oldest ready job became ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ready_at: Option<String>,
    /// Its policy.
    pub policy: PolicyView,
    /// Attempts that succeeded and failed per minute over the last 15 minutes; in listings and
    /// `GET /v1/queues/{queue}`, absent when none ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentView>,
}

/// A queue's attempts per minute, oldest first, the current minute last.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RecentView {
    /// Attempts that succeeded, per minute.
    pub succeeded: Vec<u64>,
    /// Attempts that failed, per minute (retried or not).
    pub failed: Vec<u64>,
}

/// `GET /v1/queues/{queue}/stats`: the last hour, a point per `step_ms` in which anything
/// happened, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueStatsResponse {
    /// The queue.
    pub queue: String,
    /// The time each point covers, in milliseconds.
    pub step_ms: u64,
    /// The points, oldest first; steps with no activity are left out.
    pub points: Vec<StatsPointView>,
}

/// One step of a queue's statistics.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsPointView {
    /// When the step starts.
    pub at: String,
    /// Attempts that succeeded in it.
    pub succeeded: u64,
    /// Attempts that failed in it.
    pub failed: u64,
    /// Time from ready to leased of the jobs leased in it, as seen by the answering node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<PercentilesView>,
    /// Time from leased to the end of the attempts that ended in it, as seen by the answering
    /// node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<PercentilesView>,
}

/// Latency percentiles, in milliseconds, estimated from histogram buckets.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct PercentilesView {
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
}

/// `GET /v1/queues`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueListResponse {
    /// Every queue, by name.
    pub queues: Vec<QueueView>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// `PUT /v1/queues/{queue}`: creates the queue or changes the fields given.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePolicyRequest {
    /// Lease duration, 100 ms – 12 h.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 43_200_000)]
    pub lease_ms: Option<i64>,
    /// Attempts before a job is dead, 1–1000.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000)]
    pub max_attempts: Option<i64>,
    /// Backoff base.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 604_800_000)]
    pub backoff_base_ms: Option<i64>,
    /// Backoff growth per attempt, 1–10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10)]
    pub backoff_factor: Option<f64>,
    /// Backoff cap.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 604_800_000)]
    pub backoff_cap_ms: Option<i64>,
    /// How long finished jobs are kept, 1 s – 10 years.
    #[serde(default, deserialize_with = "int::opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1_000, maximum = 315_360_000_000_i64)]
    pub retention_ms: Option<i64>,
    /// Most jobs running at once; `null` removes the limit.
    #[serde(default, deserialize_with = "int::opt_opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub concurrency: Option<Option<i64>>,
    /// Most jobs started per second; `null` removes the limit.
    #[serde(default, deserialize_with = "double_option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1_000_000)]
    pub rate: Option<Option<f64>>,
    /// Pause or resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Most jobs waiting (ready or scheduled) before enqueues are refused with 429; `null`
    /// removes the limit.
    #[serde(default, deserialize_with = "int::opt_opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    pub max_ready: Option<Option<i64>>,
}

/// `POST /v1/queues/{queue}/redrive`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// These dead jobs; every dead job of the queue when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// The answer to a redrive.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RedriveResponse {
    /// How many jobs went back to `ready`.
    pub redriven: usize,
    /// Which.
    pub ids: Vec<String>,
}

/// The data of one event on a progress stream.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobEventView {
    /// The job.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// `created`, `state` or `progress`.
    pub event: String,
    /// The job's state after the change.
    pub state: String,
    /// Its attempt after the change.
    pub attempt: u32,
    /// The job's version after the change.
    pub version: u64,
    /// When it happened.
    pub at: String,
    /// The progress reported, on `progress` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub progress: Option<Json>,
    /// The result, on the `state` event of a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Json>,
    /// The error of the failed attempt that caused this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt may start, after a retry was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
}

/// A worker that asked for work in the last minute.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    /// Its id.
    pub id: String,
    /// Where it runs, as it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its process id on `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The ECS task it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    /// The Kubernetes pod it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The queues it asks for.
    pub queues: Vec<String>,
    /// Jobs it holds leases on now.
    pub running: u64,
    /// Jobs it runs at once, as it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// `running` (leasing), or `draining` (asked to stop: it leases nothing new and stops once
    /// its jobs are done).
    pub state: String,
    /// When it last asked for work or sent a heartbeat.
    pub last_seen: String,
}

/// `GET /v1/workers`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerListResponse {
    /// Workers seen in the last minute, by id.
    pub workers: Vec<WorkerView>,
}

/// An autoscaled pool: what it sees and what it asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    /// Its name.
    pub name: String,
    /// What starts and stops its workers: `process`, `ecs` or `kubernetes`.
    pub provider: String,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// Fewest workers.
    pub min: u32,
    /// Most workers.
    pub max: u32,
    /// Jobs of backlog one worker carries.
    pub target_backlog_per_worker: u32,
    /// After a scale-out, no scale-in for this long.
    pub scale_out_cooldown_ms: u64,
    /// Scale in only after needing fewer workers for this long.
    pub scale_in_cooldown_ms: u64,
    /// Jobs for its workers: ready to start now (not paused, not held back by a rate or
    /// concurrency limit) plus running.
    pub backlog: u64,
    /// Workers it asks for.
    pub desired: u32,
    /// Workers its provider runs (not counting those draining).
    pub actual: u32,
    /// Workers on its queues holding a job.
    pub busy: u32,
    /// Workers on its queues holding none.
    pub idle: u32,
    /// Workers asked to stop, finishing their jobs.
    pub draining: u32,
    /// Why it asks for `desired` now: `first_job`, `backlog`, `minimum`, `surplus`, `steady`,
    /// `cooldown` or `busy`.
    pub reason: String,
    /// The last decision that changed `desired`, with its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<PoolDecisionView>,
    /// The provider's last error, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the leader last looked at it; absent before it first did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A scaling decision and what it was based on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolDecisionView {
    /// When.
    pub at: String,
    /// Workers asked for before.
    pub from: u32,
    /// Workers asked for.
    pub desired: u32,
    /// Workers the backlog needed, within `[min, max]`.
    pub needed: u32,
    /// Why (see the pool's `reason`).
    pub reason: String,
    /// The backlog seen.
    pub backlog: u64,
    /// Busy workers seen.
    pub busy: u32,
}

/// `GET /v1/pools`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolListResponse {
    /// Every pool, by name.
    pub pools: Vec<PoolView>,
}

/// `GET /v1/pools/{pool}/metrics`: the backlog as KEDA's `metrics-api` scaler reads it
/// (`valueLocation: backlog`, `targetValue`: the jobs one worker should carry).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolMetricsView {
    /// The pool.
    pub pool: String,
    /// Ready-to-start plus running jobs of its queues.
    pub backlog: u64,
    /// Workers wharf's own policy would ask for.
    pub desired: u32,
    /// Its `target_backlog_per_worker`.
    pub target_backlog_per_worker: u32,
}

/// `PUT /v1/alarms/{name}`: an alarm rule, the same fields as `[[alarm]]` in the config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlarmRuleBody {
    /// A queue name, or `*` for each queue separately.
    pub queue: String,
    /// `figure op number`, e.g. `dead > 0`. Figures: `ready`, `scheduled`, `running`, `dead`,
    /// `oldest_ready_age_s`, `failure_rate` (failed ÷ finished attempts over `window`),
    /// `workers` (connected workers leasing from the queue); ops `>` `>=` `<` `<=` `==` `!=`.
    pub when: String,
    /// How long the condition must hold before the alarm fires, e.g. `2m` (default `0s`).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// The window of `failure_rate`, at most `1h` (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Webhook URLs told of every transition (a Slack or Mattermost incoming webhook, or any
    /// receiver of JSON).
    #[serde(default)]
    pub notify: Vec<String>,
}

/// One queue's state under an alarm rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlarmQueueView {
    /// The queue.
    pub queue: String,
    /// `ok` or `firing`.
    pub state: String,
    /// The figure's latest value.
    pub value: f64,
    /// When it entered `state`.
    pub since: String,
}

/// A transition of an alarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlarmTransitionView {
    /// When.
    pub at: String,
    /// For which queue.
    pub queue: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The value that caused it.
    pub value: f64,
}

/// An alarm: its rule and its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlarmView {
    /// Its name.
    pub name: String,
    /// `config` (the config file declares it) or `api` (set with `PUT /v1/alarms/{name}`).
    pub source: String,
    /// A queue name, or `*`.
    pub queue: String,
    /// Its condition.
    pub when: String,
    /// How long the condition must hold before it fires, in milliseconds.
    pub for_ms: u64,
    /// The window of rates, in milliseconds.
    pub window_ms: u64,
    /// Its webhooks, each shown as scheme and host only: the rest of a webhook URL is often
    /// its secret.
    pub notify: Vec<String>,
    /// `firing` when it fires for any queue, else `ok`.
    pub state: String,
    /// The figure's latest value (the largest across queues, for `*`).
    pub value: f64,
    /// When it entered `state`: the earliest firing queue's time, or the latest change.
    pub since: Option<String>,
    /// Each queue's state (one entry for a rule on one queue).
    pub queues: Vec<AlarmQueueView>,
    /// Its latest transitions, newest first.
    pub history: Vec<AlarmTransitionView>,
    /// Transitions not yet accepted by every webhook (retried with backoff).
    pub undelivered: u32,
}

/// `GET /v1/alarms`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AlarmListResponse {
    /// Every alarm, by name.
    pub alarms: Vec<AlarmView>,
}

/// The body of a webhook POST: one transition of an alarm for one queue. `text` makes it a
/// valid Slack or Mattermost incoming-webhook message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlarmNotification {
    /// The alarm's name.
    pub alarm: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The queue.
    pub queue: String,
    /// The figure's value at the transition.
    pub value: f64,
    /// The condition's number.
    pub threshold: f64,
    /// When the transition happened.
    pub at: String,
    /// A line for people.
    pub text: String,
    /// Unique per transition, the same on every retry: a receiver can drop repeats.
    pub id: String,
}

/// `POST /v1/tokens`: a new token.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// `reader`, `producer`, `worker` or `admin`.
    pub role: String,
    /// Queue patterns it may act on (`pdf*`); every queue when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// A name for people, e.g. the service that uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests per second it may send (a batch counts its jobs); the server's default when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 1_000_000)]
    pub rate: Option<f64>,
}

/// The answer to `GET /v1/whoami`: who the presented token is and what it may do, so a
/// client (the dashboard) offers only what will be allowed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmIResponse {
    /// The token's id; `admin` for the admin token; `anonymous` when authentication is off.
    pub id: String,
    /// Its role.
    pub role: String,
    /// Its queue patterns; absent for every queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// What it may do, on the queues it sees: `read`, `enqueue`, `cancel`, `work`, `manage`,
    /// `tokens`.
    pub may: Vec<String>,
}

/// A token as listed: everything but the token itself.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Its id: `wharf_<id>_…`.
    pub id: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its role.
    pub role: String,
    /// Its queue patterns; absent for every queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// Its rate limit, requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// When it was created.
    pub created_at: String,
}

/// The answer to `POST /v1/tokens`: the only time the token is shown.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// The token: send it as `Authorization: Bearer TOKEN`. It is not stored and cannot be
    /// shown again.
    pub token: String,
    /// The rest.
    #[serde(flatten)]
    pub view: TokenView,
}

/// `GET /v1/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenListResponse {
    /// Every token, oldest first.
    pub tokens: Vec<TokenView>,
}

/// The answer to a webhook delivery.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HookAccepted {
    /// The job the delivery became.
    pub id: String,
    /// True when this delivery was seen before: no new job.
    pub repeat: bool,
}

/// `GET /health`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
}
