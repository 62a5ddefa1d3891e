//! The HTTP API v1: thin handlers over the [`Store`], JSON in and out, problem JSON for errors.
//!
//! This is the only module that speaks HTTP. Handlers validate input with [`crate::core`],
//! call the store, and convert answers to the wire types of [`crate::api`]. [`app`] builds the
//! router from a state, so tests can drive it without a socket.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::core::Clock;
use crate::core::validate::echo;
use crate::events::EventBus;
use crate::store::Store;

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod gate;
pub mod openapi;
mod routes;
pub mod sse;
pub mod views;

use error::{ApiError, ProblemCode};
use routes::{alarms, hooks, jobs, ops, pools, queues, tokens, work};

/// What every handler can reach, behind one `Arc`: axum clones the state for every extractor
/// and layer of every request, and one reference count is cheaper than nine.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of a router over `shared`.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Committed changes, for progress streams.
    pub events: Arc<EventBus>,
    /// Limits and options.
    pub config: Arc<ServerConfig>,
    /// The time source for validation (`delay_ms`, `run_at`).
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the server shuts down: long polls and streams end early.
    pub shutdown: CancellationToken,
    /// Tokens and rate limits.
    pub auth: Arc<auth::Auth>,
    /// Whether this node runs the store's maintenance (always, on the embedded store).
    pub leading: Arc<std::sync::atomic::AtomicBool>,
    /// Each queue's recent figures.
    pub stats: Arc<crate::stats::Stats>,
}

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/queues/{queue}/jobs", post(jobs::enqueue).get(jobs::list))
        .route("/v1/queues/{queue}/jobs/batch", post(jobs::enqueue_batch))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/events", get(sse::job_events))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/heartbeat", post(work::heartbeat))
        .route("/v1/jobs/{id}/complete", post(work::complete))
        .route("/v1/jobs/{id}/fail", post(work::fail))
        .route("/v1/jobs/{id}/release", post(work::release))
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/{queue}", get(queues::get).put(queues::put).delete(queues::delete))
        .route("/v1/queues/{queue}/pause", post(queues::pause))
        .route("/v1/queues/{queue}/resume", post(queues::resume))
        .route("/v1/queues/{queue}/redrive", post(queues::redrive))
        .route("/v1/queues/{queue}/stats", get(queues::stats))
        .route("/v1/lease", post(work::lease))
        .route("/v1/ack", post(work::ack))
        .route("/v1/workers", get(work::workers))
        .route("/v1/workers/{id}", axum::routing::delete(work::leave))
        .route("/v1/workers/{id}/drain", post(work::drain))
        .route("/v1/pools", get(pools::list))
        .route("/v1/pools/{pool}", get(pools::get))
        .route("/v1/pools/{pool}/metrics", get(pools::metrics))
        .route("/v1/alarms", get(alarms::list))
        .route("/v1/alarms/{name}", get(alarms::get).put(alarms::put).delete(alarms::delete))
        .route("/v1/events", get(sse::all_events))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::assets))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/v1/hooks/{name}", post(hooks::receive))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/v1/whoami", get(tokens::whoami))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate::screen))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ProblemCode::NotFound, format!("no such path: {}", echo(uri.path())))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(ProblemCode::MethodNotAllowed, format!("{method} is not allowed on {}", echo(uri.path())))
}
