//! Autoscaled pools: what each sees and asked for, and its backlog for KEDA.

use axum::Json;
use axum::extract::{Path, State};

use crate::api::{PoolListResponse, PoolMetricsView, PoolView, Problem};
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ProblemCode};

/// The pools the caller may see: those with a queue its token allows.
async fn visible(state: &AppState, caller: &Caller) -> Result<Vec<PoolView>, ApiError> {
    let mut pools = crate::scaler::autoscaler::views(&*state.store, &state.config.pools, state.clock.now()).await?;
    pools.retain(|p| p.queues.iter().any(|q| caller.sees(q)));
    Ok(pools)
}

async fn one(state: &AppState, caller: &Caller, name: &str) -> Result<PoolView, ApiError> {
    visible(state, caller).await?.into_iter().find(|p| p.name == name).ok_or_else(|| {
        ApiError::new(ProblemCode::PoolNotFound, format!("no pool is named {}", crate::core::validate::echo(name)))
    })
}

/// Every pool: backlog, desired and actual workers, busy and idle, the last decision.
#[utoipa::path(get, path = "/v1/pools", tag = "pools", responses((status = 200, body = PoolListResponse)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<PoolListResponse>, ApiError> {
    Ok(Json(PoolListResponse { pools: visible(&state, &caller).await? }))
}

/// One pool.
#[utoipa::path(
    get, path = "/v1/pools/{pool}", tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, body = PoolView), (status = 404, body = Problem))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(one(&state, &caller, &name).await?))
}

/// A pool's backlog in the shape KEDA's `metrics-api` scaler reads (`valueLocation: backlog`).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/metrics", tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, body = PoolMetricsView), (status = 404, body = Problem))
)]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<PoolMetricsView>, ApiError> {
    let pool = one(&state, &caller, &name).await?;
    Ok(Json(PoolMetricsView {
        pool: pool.name,
        backlog: pool.backlog,
        desired: pool.desired,
        target_backlog_per_worker: pool.target_backlog_per_worker,
    }))
}
