//! The worker protocol: lease, heartbeat, complete, fail, release, and batched acknowledgement.

use axum::Json;
use axum::extract::{Path, State};

use crate::api::{
    AckItemResult, AckRequest, AckResponse, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse,
    LeaseRequest, LeaseResponse, Problem, ReleaseRequest, SettledView, WorkerListResponse, WorkerView,
};
use crate::core::validate::{self, MAX_DELAY_MS, MAX_LEASE_BATCH, MAX_LEASE_MS, MAX_WAIT_MS, MIN_LEASE_MS};
use crate::core::{Invalid, JobId, QueueName};
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ProblemCode};
use crate::http::extract::{ApiJson, JobPath, job_id, lease_token};
use crate::http::views;
use crate::store::{
    JobAckParams, JobCompleteParams, JobFailParams, JobLeaseParams, JobReleaseParams, LeaseHeartbeatParams, Settled,
    StoreError, WorkerInfo, WorkerPresence,
};

/// Most queues one lease request may name.
const MAX_LEASE_QUEUES: usize = 32;

/// Ask for work: up to `max` jobs, waiting up to `wait_ms` for the first.
#[utoipa::path(
    post, path = "/v1/lease", tag = "workers",
    request_body = LeaseRequest,
    responses((status = 200, body = LeaseResponse), (status = 400, body = Problem), (status = 422, body = Problem))
)]
pub async fn lease(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    // Each job's `lease_ms` counts from here, before any long poll.
    let received = state.clock.now();
    let worker_id = validate::name("worker_id", req.worker_id)?;
    if req.queues.is_empty() || req.queues.len() > MAX_LEASE_QUEUES {
        return Err(Invalid::new("queues", format!("must name 1 to {MAX_LEASE_QUEUES} queues")).into());
    }
    let queues = req
        .queues
        .iter()
        .enumerate()
        .map(|(i, q)| QueueName::parse(q).map_err(|e| ApiError::invalid_request(format!("queues[{i}]"), e.reason)))
        .collect::<Result<Vec<_>, _>>()?;
    for queue in &queues {
        caller.check_queue(queue)?;
    }
    let max = validate::range("max", req.max.unwrap_or(1), 1, MAX_LEASE_BATCH)? as u32;
    let wait_ms = validate::range("wait_ms", req.wait_ms.unwrap_or(0), 0, MAX_WAIT_MS)?;
    let lease_ms = req.lease_ms.map(|ms| validate::range("lease_ms", ms, MIN_LEASE_MS, MAX_LEASE_MS)).transpose()?;
    let presence = WorkerPresence {
        host: req.host.map(|h| validate::name("host", h)).transpose()?,
        pid: req.pid.map(|pid| validate::range("pid", pid, 1, i32::MAX as u64)).transpose()?.map(|p| p as u32),
        task_arn: req.task_arn.map(|t| validate::name("task_arn", t)).transpose()?,
        pod: req.pod.map(|p| validate::name("pod", p)).transpose()?,
        capacity: req.capacity.map(|c| validate::range("capacity", c, 1, 10_000)).transpose()?.map(|c| c as u32),
    };
    let params = JobLeaseParams {
        worker_id,
        presence,
        queues,
        max,
        wait: std::time::Duration::from_millis(wait_ms),
        lease_ms,
        max_bytes: state.config.max_lease_answer_bytes,
    };
    // A parked long poll must not hold up shutdown: answer empty. The store sees the caller gone
    // and drops the request; if it had just leased jobs to it, it releases them.
    let leased = tokio::select! {
        leased = state.store.job_lease(params) => leased,
        () = state.shutdown.cancelled() => Ok(Vec::new()),
    };
    let (jobs, drain) = match leased {
        Ok(jobs) => (jobs, false),
        Err(StoreError::WorkerDraining(_)) => (Vec::new(), true),
        Err(err) => return Err(err.into()),
    };
    Ok(Json(LeaseResponse { jobs: jobs.into_iter().map(|job| views::leased(job, received)).collect(), drain }))
}

/// Workers that asked for work in the last minute.
#[utoipa::path(get, path = "/v1/workers", tag = "workers", responses((status = 200, body = WorkerListResponse)))]
pub async fn workers(State(state): State<AppState>, caller: Caller) -> Result<Json<WorkerListResponse>, ApiError> {
    let workers = state.store.worker_list().await?;
    Ok(Json(WorkerListResponse {
        workers: workers
            .into_iter()
            // A token limited to some queues sees the workers of those queues.
            .filter(|w| w.queues.iter().any(|q| caller.sees(q.as_str())) || caller.queues.is_all())
            .map(views::worker)
            .collect(),
    }))
}

/// The worker `id`, if the caller may see it: it asks for a queue the caller may use (a
/// worker that has not asked for any yet, only an unrestricted caller).
async fn worker_of(state: &AppState, caller: &Caller, id: &str) -> Result<Option<WorkerInfo>, ApiError> {
    let worker = state.store.worker_list().await?.into_iter().find(|w| w.id == id);
    match worker {
        Some(w) if w.queues.iter().any(|q| caller.sees(q.as_str())) || caller.queues.is_all() => Ok(Some(w)),
        Some(_) => Err(ApiError::new(ProblemCode::Forbidden, "this token may not act on this worker's queues")),
        None => Ok(None),
    }
}

/// Ask one worker to drain: it leases nothing new (its parked lease request ends at once,
/// answered `drain: true`) and stops once the jobs it holds are done.
#[utoipa::path(
    post, path = "/v1/workers/{id}/drain", tag = "workers",
    params(("id" = String, Path, description = "Worker id")),
    responses((status = 200, body = WorkerView), (status = 404, body = Problem))
)]
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    if worker_of(&state, &caller, &id).await?.is_none() {
        return Err(StoreError::WorkerNotFound(id).into());
    }
    state.store.worker_drain(id.clone(), false).await?;
    match worker_of(&state, &caller, &id).await? {
        Some(worker) => Ok(Json(views::worker(worker))),
        None => Err(StoreError::WorkerNotFound(id).into()),
    }
}

/// A worker that stops says so, and leaves `GET /v1/workers` at once.
#[utoipa::path(
    delete, path = "/v1/workers/{id}", tag = "workers",
    params(("id" = String, Path, description = "Worker id")),
    responses((status = 204), (status = 404, body = Problem))
)]
pub async fn leave(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    if worker_of(&state, &caller, &id).await?.is_none() || !state.store.worker_leave(id.clone()).await? {
        return Err(StoreError::WorkerNotFound(id).into());
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Extend a lease and report progress; learn whether the job was canceled.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/heartbeat", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, body = HeartbeatResponse),
        (status = 404, body = Problem),
        (status = 409, description = "Stale lease token: the lease expired or the job was leased again", body = Problem),
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    JobPath(id): JobPath,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let received = state.clock.now();
    let lease_token = lease_token("lease_token", &req.lease_token)?;
    let extend_ms = req.extend_ms.map(|ms| validate::range("extend_ms", ms, MIN_LEASE_MS, MAX_LEASE_MS)).transpose()?;
    let progress = req.progress.map(views::text);
    if let Some(progress) = &progress {
        validate::json_size("progress", progress, &state.config.limits)?;
    }
    let beat = state.store.lease_heartbeat(LeaseHeartbeatParams { id, lease_token, extend_ms, progress }).await?;
    Ok(Json(HeartbeatResponse {
        lease_expires_at: beat.lease_expires_at.to_rfc3339(),
        lease_ms: Some(beat.lease_expires_at.millis_since(received)),
        cancel_requested: beat.cancel_requested,
    }))
}

fn settled(id: JobId, settled: Settled) -> SettledView {
    SettledView {
        id: id.to_string(),
        state: settled.state.as_str().to_owned(),
        run_at: settled.run_at.map(|t| t.to_rfc3339()),
    }
}

fn complete_params(
    state: &AppState,
    id: JobId,
    token: &str,
    result: Option<crate::api::Json>,
    field: &str,
) -> Result<JobCompleteParams, ApiError> {
    let lease_token = lease_token(&format!("{field}lease_token"), token)?;
    let result = result.map(views::text);
    if let Some(result) = &result {
        validate::json_size(&format!("{field}result"), result, &state.config.limits)?;
    }
    Ok(JobCompleteParams { id, lease_token, result })
}

fn fail_params(
    id: JobId,
    token: &str,
    error: String,
    retryable: Option<bool>,
    retry_in_ms: Option<i64>,
    field: &str,
) -> Result<JobFailParams, ApiError> {
    let lease_token = lease_token(&format!("{field}lease_token"), token)?;
    let retry_in_ms =
        retry_in_ms.map(|ms| validate::range(&format!("{field}retry_in_ms"), ms, 0, MAX_DELAY_MS)).transpose()?;
    Ok(JobFailParams {
        id,
        lease_token,
        error: validate::truncate_error(error),
        retryable: retryable.unwrap_or(true),
        retry_in_ms,
    })
}

/// Record a successful attempt.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/complete", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = CompleteRequest,
    responses((status = 200, body = SettledView), (status = 404, body = Problem), (status = 409, body = Problem))
)]
pub async fn complete(
    State(state): State<AppState>,
    JobPath(id): JobPath,
    ApiJson(req): ApiJson<CompleteRequest>,
) -> Result<Json<SettledView>, ApiError> {
    let params = complete_params(&state, id, &req.lease_token, req.result, "")?;
    Ok(Json(settled(id, state.store.job_complete(params).await?)))
}

/// Record a failed attempt: it is retried with backoff, or dead when attempts run out or
/// `retryable` is false.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/fail", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = FailRequest,
    responses((status = 200, body = SettledView), (status = 404, body = Problem), (status = 409, body = Problem))
)]
pub async fn fail(
    State(state): State<AppState>,
    JobPath(id): JobPath,
    ApiJson(req): ApiJson<FailRequest>,
) -> Result<Json<SettledView>, ApiError> {
    let params = fail_params(id, &req.lease_token, req.error, req.retryable, req.retry_in_ms, "")?;
    Ok(Json(settled(id, state.store.job_fail(params).await?)))
}

/// Give a lease back (shutdown): the job is ready again at once; the attempt does not count.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/release", tag = "workers",
    params(("id" = String, Path, description = "Job id")),
    request_body = ReleaseRequest,
    responses((status = 200, body = SettledView), (status = 404, body = Problem), (status = 409, body = Problem))
)]
pub async fn release(
    State(state): State<AppState>,
    JobPath(id): JobPath,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Json<SettledView>, ApiError> {
    let lease_token = lease_token("lease_token", &req.lease_token)?;
    Ok(Json(settled(id, state.store.job_release(JobReleaseParams { id, lease_token }).await?)))
}

fn item(id: JobId, outcome: Result<Settled, StoreError>) -> AckItemResult {
    match outcome {
        Ok(s) => AckItemResult { id: id.to_string(), state: Some(s.state.as_str().to_owned()), error: None },
        Err(err) => AckItemResult { id: id.to_string(), state: None, error: Some(ApiError::from(err).problem()) },
    }
}

/// Many completions and failures in one durable transaction; each item stands alone (a stale
/// token refuses that item only).
#[utoipa::path(
    post, path = "/v1/ack", tag = "workers",
    request_body = AckRequest,
    responses((status = 200, body = AckResponse), (status = 400, body = Problem), (status = 413, body = Problem))
)]
pub async fn ack(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let total = req.complete.len() + req.fail.len();
    if total > state.config.limits.max_batch {
        return Err(Invalid::new(
            "complete",
            format!("{total} items is over the limit of {}", state.config.limits.max_batch),
        )
        .into());
    }
    let mut params = JobAckParams::default();
    for (i, c) in req.complete.into_iter().enumerate() {
        let field = format!("complete[{i}].");
        let id = job_id(&format!("{field}id"), &c.id)?;
        params.complete.push(complete_params(&state, id, &c.lease_token, c.result, &field)?);
    }
    for (i, f) in req.fail.into_iter().enumerate() {
        let field = format!("fail[{i}].");
        let id = job_id(&format!("{field}id"), &f.id)?;
        params.fail.push(fail_params(id, &f.lease_token, f.error, f.retryable, f.retry_in_ms, &field)?);
    }
    let complete_ids: Vec<JobId> = params.complete.iter().map(|c| c.id).collect();
    let fail_ids: Vec<JobId> = params.fail.iter().map(|f| f.id).collect();
    let acked = state.store.job_ack(params).await?;
    Ok(Json(AckResponse {
        complete: complete_ids.into_iter().zip(acked.complete).map(|(id, r)| item(id, r)).collect(),
        fail: fail_ids.into_iter().zip(acked.fail).map(|(id, r)| item(id, r)).collect(),
    }))
}
