//! `wharf serve`: wires the store, the event bus, the background services and the HTTP API,
//! and shuts them down in order.
//!
//! Shutdown: when `shutdown` resolves, the cancellation token ends long polls (answered empty)
//! and progress streams; axum stops accepting and finishes in-flight requests; the pruner stops;
//! last, the store finishes its pending writes and closes. Every request answered 2xx before the
//! process exits was durable when it was answered.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::core::Clock;
use crate::events::EventBus;
use crate::http::{self, AppState};
use crate::maintenance::pruner;
use crate::store::Store;

/// Serves the API on `listener` until `shutdown` resolves, then closes the store.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    clock: Arc<dyn Clock>,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    let state =
        AppState { store: Arc::clone(&store), events, config: Arc::clone(&config), clock, shutdown: token.clone() };
    let pruner = tokio::spawn(pruner::run(Arc::clone(&store), config.prune_interval, token.clone()));
    let stop = token.clone();
    let result = axum::serve(listener, http::app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            stop.cancel();
        })
        .await;
    token.cancel();
    let _ = pruner.await;
    store.close().await;
    tracing::info!("store closed");
    result
}
