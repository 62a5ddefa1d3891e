//! Liveness, readiness, metrics and the API description.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::api::{HealthResponse, Problem};
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;

/// Liveness: answers without touching the store.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".to_owned() })
}

/// Readiness: answers 200 only when the store serves requests.
#[utoipa::path(
    get, path = "/ready", tag = "operations",
    responses((status = 200, body = HealthResponse), (status = 503, body = Problem))
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    state.store.ping().await?;
    Ok(Json(HealthResponse { status: "ready".to_owned() }))
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let mut snapshot = state.store.metrics().await?;
    // A token limited to some queues sees the series of those queues.
    snapshot.queues.retain(|q| caller.sees(&q.queue));
    let leading = state.leading.load(std::sync::atomic::Ordering::Relaxed);
    let mut pools = crate::scaler::autoscaler::views(&*state.store, &state.config.pools, state.clock.now()).await?;
    pools.retain(|p| p.queues.iter().any(|q| caller.sees(q)));
    let rendered = crate::metrics::with_leader(crate::metrics::render(snapshot), leading);
    let mut alarms = crate::alarms::views(&*state.store, &state.config.alarms).await?;
    alarms.retain_mut(|a| crate::alarms::visible_queues(a, |q| caller.sees(q)));
    let rendered = crate::metrics::with_pools(rendered, &pools);
    let mut response = crate::metrics::with_alarms(rendered, &alarms).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}

/// This API's OpenAPI 3.1 document, generated from the handlers and wire types.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi() -> Response {
    let body = serde_json::to_string(&crate::http::openapi::document()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
