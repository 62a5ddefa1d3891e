//! Enqueue, read, list and cancel jobs.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::api::{
    BatchEnqueueRequest, BatchEnqueueResponse, CancelResponse, EnqueueRequest, JobListQuery, JobListResponse,
    JobSummaryView, JobView, Problem,
};
use crate::core::{JobId, JobState, Timestamp};
use crate::http::AppState;
use crate::http::auth::{Caller, CallerRate};
use crate::http::error::{ApiError, ProblemCode};
use crate::http::extract::{ApiJson, ApiQuery, JobPath, QueuePath};
use crate::http::views;
use crate::store::JobListParams;

/// Enqueue one job.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "Queue name: 1–128 of A-Z a-z 0-9 . _ -")),
    request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Created and durable", body = JobSummaryView),
        (status = 200, description = "Idempotent hit: the job that holds the key", body = JobSummaryView),
        (status = 400, description = "Malformed body or queue name", body = Problem),
        (status = 413, description = "Payload over the limit", body = Problem),
        (status = 422, description = "A value out of range", body = Problem),
    )
)]
pub async fn enqueue(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(req): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, HeaderMap, Json<JobSummaryView>), ApiError> {
    let job = views::spec(req).validate(&queue, &state.config.limits, state.clock.now())?;
    let inserted = state.store.job_insert(job).await?;
    let status = if inserted.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", inserted.job.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((status, headers, Json(views::summary(&inserted.job))))
}

/// Enqueue many jobs in one transaction: all or none.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/jobs/batch", tag = "jobs",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = BatchEnqueueRequest,
    responses(
        (status = 201, description = "All created (or idempotent hits) and durable", body = BatchEnqueueResponse),
        (status = 400, description = "Malformed body", body = Problem),
        (status = 413, description = "A payload or the body over the limit", body = Problem),
        (status = 422, description = "A value out of range; nothing was enqueued", body = Problem),
    )
)]
pub async fn enqueue_batch(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    caller: Caller,
    Extension(CallerRate(rate)): Extension<CallerRate>,
    ApiJson(req): ApiJson<BatchEnqueueRequest>,
) -> Result<(StatusCode, Json<BatchEnqueueResponse>), ApiError> {
    // A batch costs one per job (see `auth::Requirement::per_job`).
    if let Err(after) = state.auth.charge(&caller, rate, req.jobs.len().max(1) as f64) {
        let mut limited = ApiError::new(
            ProblemCode::RateLimited,
            format!("{} jobs is over this token's rate limit; retry in {after}s", req.jobs.len()),
        );
        limited.retry_after_secs = Some(after);
        return Err(limited);
    }
    let limits = &state.config.limits;
    if req.jobs.len() > limits.max_batch {
        return Err(ApiError::new(
            ProblemCode::InvalidValue,
            format!("jobs: {} jobs is over the limit of {} per batch", req.jobs.len(), limits.max_batch),
        )
        .field("jobs"));
    }
    let now = state.clock.now();
    let jobs = req
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| views::spec(job).validate(&queue, limits, now).map_err(|e| e.within(&format!("jobs[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let inserted = state.store.job_insert_batch(jobs).await?;
    let created = inserted.iter().filter(|i| i.created).count();
    let ids = inserted.iter().map(|i| i.job.id.to_string()).collect();
    Ok((StatusCode::CREATED, Json(BatchEnqueueResponse { ids, created })))
}

/// One job, with its payload, progress, result and errors.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = Problem))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Json<JobView>, ApiError> {
    let job = state.store.job_get(id).await?;
    caller.check_queue(&job.queue)?;
    Ok(Json(views::job(job)))
}

/// The longest text an error filter may search for.
const MAX_ERROR_FILTER: usize = 256;

/// Jobs a filtered listing examines at most (per state on the embedded store): a filter that
/// matches little must not make one request read a whole queue.
const MAX_FILTER_SCAN: u32 = 2_000;

/// A queue's jobs, newest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "Queue name"), JobListQuery),
    responses((status = 200, body = JobListResponse), (status = 400, body = Problem), (status = 404, body = Problem))
)]
pub async fn list(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> Result<Json<JobListResponse>, ApiError> {
    let state_filter = query
        .state
        .map(|s| s.parse::<JobState>())
        .transpose()
        .map_err(|e| ApiError::invalid_request("state", e.to_string()))?;
    let limit = crate::core::validate::range("limit", query.limit.unwrap_or(100), 1, 1_000)?;
    let mut cursor = query.cursor.map(|c| crate::http::extract::job_id("cursor", &c)).transpose()?;
    let time = |field: &'static str, text: Option<String>| {
        text.map(|t| {
            Timestamp::parse_rfc3339(&t)
                .map_err(|why| crate::core::Invalid::new(field, format!("not an RFC 3339 time: {why}")))
        })
        .transpose()
    };
    // Ids grow with creation time, so a time range is a range of ids.
    let from = time("created_after", query.created_after)?.map(JobId::floor_at);
    if let Some(before) = time("created_before", query.created_before)?.map(JobId::floor_at) {
        cursor = Some(cursor.map_or(before, |c| c.min(before)));
    }
    let error = query.error.filter(|e| !e.is_empty());
    if error.as_ref().is_some_and(|e| e.chars().count() > MAX_ERROR_FILTER) {
        return Err(crate::core::Invalid::new("error", format!("must be at most {MAX_ERROR_FILTER} characters")).into());
    }
    let scan = (query.kind.is_some() || error.is_some()).then_some(MAX_FILTER_SCAN);
    let page = state
        .store
        .job_list(JobListParams {
            queue,
            state: state_filter,
            kind: query.kind,
            error,
            from,
            scan,
            limit: limit as u32,
            cursor,
        })
        .await?;
    Ok(Json(JobListResponse {
        jobs: page.jobs.iter().map(views::summary).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Cancel a job: at once if it is not running; a running job is told on its next heartbeat.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, body = CancelResponse),
        (status = 404, body = Problem),
        (status = 409, description = "The job already succeeded or is dead", body = Problem),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Json<CancelResponse>, ApiError> {
    if !caller.queues.is_all() {
        caller.check_queue(&state.store.job_get(id).await?.queue)?;
    }
    let canceled = state.store.job_cancel(id).await?;
    Ok(Json(CancelResponse {
        id: id.to_string(),
        state: canceled.state.as_str().to_owned(),
        cancel_requested: canceled.cancel_requested,
    }))
}
