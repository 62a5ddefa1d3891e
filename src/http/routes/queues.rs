//! Queues: counts, recent figures, policy, pause and resume, redrive of dead jobs.

use axum::Json;
use axum::extract::State;

use crate::api::{
    Problem, QueueListResponse, QueuePolicyRequest, QueueStatsResponse, QueueView, RedriveRequest, RedriveResponse,
};
use crate::core::QueuePolicyPatch;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, OptionalJson, QueuePath, job_id};
use crate::http::views;
use crate::store::DeadRedriveParams;

/// Every queue with its counts and policy.
#[utoipa::path(get, path = "/v1/queues", tag = "queues", responses((status = 200, body = QueueListResponse)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<QueueListResponse>, ApiError> {
    let queues = state.store.queue_list().await?;
    let now = state.clock.now();
    let visible = queues.into_iter().filter(|q| caller.sees(q.name.as_str()));
    Ok(Json(QueueListResponse { queues: visible.map(|q| with_recent(&state, views::queue(q), now)).collect() }))
}

/// Minutes shown in a queue's `recent`.
const RECENT_MINUTES: usize = 15;

fn with_recent(state: &AppState, mut view: QueueView, now: crate::core::Timestamp) -> QueueView {
    view.recent = views::recent(&state.stats.rates.series(&view.name, 60, RECENT_MINUTES, now));
    view
}

/// One queue.
#[utoipa::path(
    get, path = "/v1/queues/{queue}", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView), (status = 404, body = Problem))
)]
pub async fn get(State(state): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<QueueView>, ApiError> {
    let view = views::queue(state.store.queue_get(queue).await?);
    Ok(Json(with_recent(&state, view, state.clock.now())))
}

/// A queue's figures over the last hour, a point per 10 seconds in which anything happened:
/// attempts that succeeded and failed, and wait and run-time percentiles.
#[utoipa::path(
    get, path = "/v1/queues/{queue}/stats", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueStatsResponse), (status = 404, body = Problem))
)]
pub async fn stats(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueStatsResponse>, ApiError> {
    let info = state.store.queue_get(queue).await?;
    let points = state.stats.points(info.name.as_str(), state.clock.now());
    Ok(Json(views::queue_stats(info.name.as_str(), &points)))
}

/// Create a queue or change its policy: each field given replaces the current value.
#[utoipa::path(
    put, path = "/v1/queues/{queue}", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = QueuePolicyRequest,
    responses((status = 200, body = QueueView), (status = 400, body = Problem), (status = 422, body = Problem))
)]
pub async fn put(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(req): ApiJson<QueuePolicyRequest>,
) -> Result<Json<QueueView>, ApiError> {
    let patch = QueuePolicyPatch {
        lease_ms: req.lease_ms,
        max_attempts: req.max_attempts,
        backoff_base_ms: req.backoff_base_ms,
        backoff_factor: req.backoff_factor,
        backoff_cap_ms: req.backoff_cap_ms,
        retention_ms: req.retention_ms,
        concurrency: req.concurrency,
        rate: req.rate,
        paused: req.paused,
        max_ready: req.max_ready,
    };
    Ok(Json(views::queue(state.store.queue_upsert(queue, patch).await?)))
}

/// Delete a queue that holds no scheduled, ready, running or dead job; its finished jobs go
/// with it.
#[utoipa::path(
    delete, path = "/v1/queues/{queue}", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem),
        (status = 409, description = "The queue still holds jobs", body = Problem),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<axum::http::StatusCode, ApiError> {
    state.store.queue_delete(queue).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn set_paused(state: AppState, queue: crate::core::QueueName, paused: bool) -> Result<Json<QueueView>, ApiError> {
    // Pausing names an existing queue; a typo should not create an empty paused one.
    state.store.queue_get(queue.clone()).await?;
    let patch = QueuePolicyPatch { paused: Some(paused), ..QueuePolicyPatch::default() };
    Ok(Json(views::queue(state.store.queue_upsert(queue, patch).await?)))
}

/// Stop handing out the queue's jobs; enqueue still works and running jobs go on.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/pause", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView), (status = 404, body = Problem))
)]
pub async fn pause(State(state): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<QueueView>, ApiError> {
    set_paused(state, queue, true).await
}

/// Hand out the queue's jobs again.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/resume", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView), (status = 404, body = Problem))
)]
pub async fn resume(State(state): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<QueueView>, ApiError> {
    set_paused(state, queue, false).await
}

/// Send dead jobs back to `ready` with their attempts reset: the ids given, or all.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/redrive", tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = RedriveRequest, description = "Optional: leave the body out to redrive every dead job"),
    responses(
        (status = 200, body = RedriveResponse),
        (status = 404, description = "Unknown queue, or an id that is not a job of this queue", body = Problem),
        (status = 409, description = "An id that is not dead; nothing was redriven", body = Problem),
    )
)]
pub async fn redrive(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    OptionalJson(req): OptionalJson<RedriveRequest>,
) -> Result<Json<RedriveResponse>, ApiError> {
    let ids = req
        .ids
        .map(|ids| {
            ids.iter().enumerate().map(|(i, id)| job_id(&format!("ids[{i}]"), id)).collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let moved = state.store.dead_redrive(DeadRedriveParams { queue, ids }).await?;
    Ok(Json(RedriveResponse { redriven: moved.len(), ids: moved.iter().map(ToString::to_string).collect() }))
}
