//! `wharf serve`: wires the store, the event bus, the background services and the HTTP API,
//! and shuts them down in order.
//!
//! Connections: HTTP/1.1 with keep-alive (and HTTP/2 with prior knowledge), served by hyper
//! with a header read timeout, so a client that trickles its request head (slowloris) or opens
//! a connection and sends nothing is dropped after [`HEADER_READ_TIMEOUT`]; request heads are
//! capped at hyper's 400 KB buffer. Running out of file descriptors pauses accepting briefly
//! instead of stopping the server.
//!
//! Shutdown: when `shutdown` resolves, the cancellation token ends long polls (answered empty)
//! and progress streams; the server stops accepting and finishes in-flight requests (up to
//! [`DRAIN_TIMEOUT`]); the pruner stops; last, the store finishes its pending writes and closes.
//! Every request answered 2xx before the process exits was durable when it was answered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::core::Clock;
use crate::events::EventBus;
use crate::http::{self, AppState};
use crate::maintenance::pruner;
use crate::store::Store;

/// How long a client may take to send a request head (and an idle connection may stay open
/// before its next one).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    let app = http::app(state);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, or a connection reset before accept: keep serving.
                tracing::warn!(error = %err, "accept failed; pausing briefly");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are a client going away mid-request: nothing to do.
            let _ = connection.await;
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    drop(listener);
    token.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still busy after the drain timeout; closing them");
    }
    let _ = pruner.await;
    store.close().await;
    tracing::info!("store closed");
    Ok(())
}
