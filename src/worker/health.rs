//! `GET /health` of a worker, for ECS and Kubernetes health checks.
//!
//! Answers at once from memory (no call to the server): the worker's state, its running jobs,
//! and how long ago it last reached the server. A worker that cannot reach the server is still
//! healthy — restarting it would not bring the server back — so the status is 200 until the
//! worker has stopped; orchestrators that want more can read `last_contact_ms`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use super::WorkerConfig;
use super::runtime::Status;

/// The health answer.
#[derive(Debug, Serialize)]
struct Health {
    /// `running`, `draining`, `stopping` or `stopped`.
    state: &'static str,
    worker_id: String,
    queues: Vec<String>,
    running_jobs: usize,
    concurrency: usize,
    server: String,
    /// Milliseconds since the server last answered; absent before the first answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_contact_ms: Option<u64>,
}

/// Binds `addr` and serves `/health` until the returned task is aborted.
pub(super) async fn serve(
    addr: SocketAddr,
    status: Arc<Status>,
    config: WorkerConfig,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} for the health endpoint: {e}")))?;
    tracing::info!(address = %listener.local_addr()?, "health endpoint listening");
    let app = Router::new().route("/health", get(health)).with_state((status, Arc::new(config)));
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "health endpoint failed");
        }
    }))
}

async fn health(State((status, config)): State<(Arc<Status>, Arc<WorkerConfig>)>) -> Json<Health> {
    Json(Health {
        state: status.phase().as_str(),
        worker_id: config.worker_id.clone(),
        queues: config.queues.clone(),
        running_jobs: status.running.load(Ordering::Acquire),
        concurrency: config.concurrency,
        server: config.server.clone(),
        last_contact_ms: status.since_contact().map(|d| d.as_millis() as u64),
    })
}
