//! Conversions between core types and the wire types of [`crate::api`].

use serde_json::value::RawValue;

use crate::api::{
    AttemptErrorView, BackoffView, EnqueueRequest, JobEventView, JobSummaryView, JobView, Json, LeasedJobView,
    PercentilesView, PolicyView, QueueStatsResponse, QueueView, RecentView, StateCounts, StatsPointView, WorkerView,
};
use crate::core::validate::JobSpec;
use crate::core::{Job, JobState, Timestamp};
use crate::events::JobEvent;
use crate::stats::rates::Attempts;
use crate::stats::{Point, Quantiles};
use crate::store::{JobSummary, LeasedJob, QueueInfo, WorkerInfo};

/// JSON text from the store as a raw value. The store only holds JSON that was validated on
/// the way in, so the fallback (the text as a JSON string) only shows on a damaged row.
pub fn raw(text: String) -> Json {
    RawValue::from_string(text).unwrap_or_else(|err| {
        let quoted = serde_json::to_string(&err.to_string()).unwrap_or_else(|_| "null".to_owned());
        RawValue::from_string(quoted).unwrap_or_else(|_| RawValue::NULL.to_owned())
    })
}

/// A raw value's text, without copying.
pub fn text(value: Json) -> String {
    Box::<str>::from(value).into_string()
}

fn time(ts: Timestamp) -> String {
    ts.to_rfc3339()
}

/// An enqueue request as an unvalidated job spec.
pub fn spec(req: EnqueueRequest) -> JobSpec {
    JobSpec {
        kind: req.kind,
        payload: req.payload.map(text),
        priority: req.priority,
        delay_ms: req.delay_ms,
        run_at: req.run_at,
        max_attempts: req.max_attempts,
        timeout_ms: req.timeout_ms,
        idempotency_key: req.idempotency_key,
        metadata: req.metadata,
    }
}

pub fn summary(job: &JobSummary) -> JobSummaryView {
    JobSummaryView {
        id: job.id.to_string(),
        queue: job.queue.to_string(),
        kind: job.kind.clone(),
        state: job.state.as_str().to_owned(),
        priority: job.priority,
        run_at: time(job.run_at),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        idempotency_key: job.idempotency_key.clone(),
        created_at: time(job.created_at),
        finished_at: job.finished_at.map(time),
    }
}

pub fn job(job: Job) -> JobView {
    JobView {
        id: job.id.to_string(),
        queue: job.queue.to_string(),
        kind: job.kind,
        state: job.state.as_str().to_owned(),
        payload: raw(job.payload),
        priority: job.priority,
        run_at: time(job.run_at),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        timeout_ms: job.timeout_ms,
        idempotency_key: job.idempotency_key,
        metadata: job.metadata,
        progress: job.progress.map(raw),
        result: job.result.map(raw),
        errors: job
            .errors
            .into_iter()
            .map(|e| AttemptErrorView { at: time(e.at), attempt: e.attempt, message: e.message })
            .collect(),
        cancel_requested: job.cancel_requested,
        lease_expires_at: job.lease_expires_at.map(time),
        worker_id: job.worker_id,
        created_at: time(job.created_at),
        started_at: job.started_at.map(time),
        finished_at: job.finished_at.map(time),
        version: job.version,
    }
}

/// A leased job, its `lease_ms` counted from `received` (when the request arrived, by the
/// store's clock).
pub fn leased(job: LeasedJob, received: Timestamp) -> LeasedJobView {
    LeasedJobView {
        id: job.id.to_string(),
        queue: job.queue.to_string(),
        kind: job.kind,
        payload: raw(job.payload),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        priority: job.priority,
        lease_token: job.lease_token.to_string(),
        lease_expires_at: time(job.lease_expires_at),
        lease_ms: Some(job.lease_expires_at.millis_since(received)),
        timeout_ms: job.timeout_ms,
        metadata: job.metadata,
    }
}

pub fn counts(counts: &[u64; 6]) -> StateCounts {
    StateCounts {
        scheduled: counts[JobState::Scheduled.index()],
        ready: counts[JobState::Ready.index()],
        running: counts[JobState::Running.index()],
        succeeded: counts[JobState::Succeeded.index()],
        dead: counts[JobState::Dead.index()],
        canceled: counts[JobState::Canceled.index()],
    }
}

pub fn queue(info: QueueInfo) -> QueueView {
    let p = info.policy;
    QueueView {
        name: info.name.to_string(),
        counts: counts(&info.counts),
        oldest_ready_at: info.oldest_ready_at.map(time),
        policy: PolicyView {
            lease_ms: p.lease_ms,
            max_attempts: p.max_attempts,
            backoff: BackoffView { base_ms: p.backoff.base_ms, factor: p.backoff.factor, cap_ms: p.backoff.cap_ms },
            retention_ms: p.retention_ms,
            concurrency: p.concurrency,
            rate: p.rate,
            paused: p.paused,
            max_ready: p.max_ready,
        },
        recent: None,
    }
}

/// Minutes of a queue's attempts, or `None` when none ended in them.
pub fn recent(minutes: &[Attempts]) -> Option<RecentView> {
    minutes.iter().any(|m| *m != Attempts::default()).then(|| RecentView {
        succeeded: minutes.iter().map(|m| m.succeeded).collect(),
        failed: minutes.iter().map(|m| m.failed).collect(),
    })
}

pub fn queue_stats(queue: &str, points: &[Point]) -> QueueStatsResponse {
    let ms = |q: Quantiles| {
        // Two decimals of a millisecond: finer than the buckets resolve.
        let round = |s: f64| (s * 100_000.0).round() / 100.0;
        PercentilesView { p50: round(q.p50), p95: round(q.p95), p99: round(q.p99) }
    };
    QueueStatsResponse {
        queue: queue.to_owned(),
        step_ms: crate::stats::STEP.as_millis() as u64,
        points: points
            .iter()
            .map(|p| StatsPointView {
                at: time(p.at),
                succeeded: p.attempts.succeeded,
                failed: p.attempts.failed,
                wait_ms: p.wait.map(ms),
                run_ms: p.run.map(ms),
            })
            .collect(),
    }
}

pub fn event(e: &JobEvent) -> JobEventView {
    let (progress, result) = match (e.kind, e.state) {
        (crate::events::EventKind::Progress, _) => (e.data.clone().map(raw), None),
        (_, JobState::Succeeded) => (None, e.data.clone().map(raw)),
        _ => (None, None),
    };
    JobEventView {
        id: e.job_id.to_string(),
        queue: e.queue.to_string(),
        event: e.kind.as_str().to_owned(),
        state: e.state.as_str().to_owned(),
        attempt: e.attempt,
        version: e.version,
        at: time(e.at),
        progress,
        result,
        error: e.error.clone(),
        run_at: e.run_at.map(time),
    }
}

/// A worker as `GET /v1/workers` shows it.
pub fn worker(w: WorkerInfo) -> WorkerView {
    WorkerView {
        id: w.id,
        host: w.presence.host,
        pid: w.presence.pid,
        task_arn: w.presence.task_arn,
        pod: w.presence.pod,
        queues: w.queues.iter().map(ToString::to_string).collect(),
        running: w.running,
        capacity: w.presence.capacity,
        state: if w.draining { "draining" } else { "running" }.to_owned(),
        last_seen: w.last_seen.to_rfc3339(),
    }
}
