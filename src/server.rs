//! `wharf serve`: wires the store, the event bus, the background services and the HTTP API,
//! and shuts them down in order.
//!
//! Connections: HTTP/1.1 with keep-alive, served by hyper. Every input is bounded:
//!
//! - a client gets [`ServerConfig::header_read_timeout`] to send each request head, the first
//!   one included, so a connection that sends nothing (or trickles a head) is closed; heads are
//!   capped at hyper's 400 KB buffer;
//! - at most [`ServerConfig::max_connections`] connections are open; when a new one arrives at
//!   the cap, the oldest connection that has not yet sent a request makes room (it has nothing
//!   in flight), so a flood of idle connections cannot lock out working clients;
//! - a client that stops reading its answers (a full socket: an SSE reader that went away
//!   without closing, say) is disconnected after [`ServerConfig::write_stall_timeout`], so it
//!   holds no memory;
//! - running out of file descriptors pauses accepting briefly instead of stopping the server.
//!
//! Shutdown: when `shutdown` resolves, the cancellation token ends long polls (answered empty)
//! and progress streams; the server stops accepting and finishes in-flight requests (up to
//! [`DRAIN_TIMEOUT`]); the pruner stops; last, the store finishes its pending writes and closes.
//! Every request answered 2xx before the process exits was durable when it was answered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::core::Clock;
use crate::events::EventBus;
use crate::http::auth::Auth;
use crate::http::{self, AppState};
use crate::maintenance::pruner;
use crate::store::{Leadership, Store};
use crate::tls::CertSlot;

/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server is made of, besides its listener.
#[derive(Debug)]
pub struct Parts {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The bus its store publishes to.
    pub events: Arc<EventBus>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Limits and options.
    pub config: Arc<ServerConfig>,
    /// Tokens and rate limits.
    pub auth: Arc<Auth>,
    /// The certificate, when serving HTTPS.
    pub tls: Option<Arc<CertSlot>>,
    /// The providers of `config.pools`, in order.
    pub providers: Vec<Box<dyn crate::scaler::Provider>>,
}

/// Serves the API on `listener` until `shutdown` resolves, then closes the store.
pub async fn serve(
    listener: TcpListener,
    parts: Parts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Parts { store, events, clock, config, auth, tls, providers } = parts;
    let acceptor = match &tls {
        Some(slot) => Some(slot.acceptor().map_err(std::io::Error::other)?),
        None => None,
    };
    let token = CancellationToken::new();
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(store.leadership() == Leadership::Embedded));
    // Every node counts recent attempts (for `failure_rate`), so a new leader has the window.
    let rates = Arc::new(crate::stats::rates::Rates::default());
    tokio::spawn(crate::stats::rates::follow(
        Arc::clone(&events),
        Arc::clone(&rates),
        Arc::clone(&clock),
        token.clone(),
    ));
    let stats = Arc::new(crate::stats::Stats::new(Arc::clone(&rates)));
    tokio::spawn(crate::stats::sample(Arc::clone(&store), Arc::clone(&stats), Arc::clone(&clock), token.clone()));
    tokio::spawn(crate::alarms::run(
        Arc::clone(&store),
        Arc::new(config.alarms.clone()),
        rates,
        Arc::clone(&clock),
        Arc::clone(&leading),
        token.clone(),
    ));
    let state = AppState::new(crate::http::Shared {
        store: Arc::clone(&store),
        events,
        config: Arc::clone(&config),
        clock: Arc::clone(&clock),
        shutdown: token.clone(),
        auth,
        leading: Arc::clone(&leading),
        stats,
    });
    let pruner = tokio::spawn(pruner::run(Arc::clone(&store), config.prune_interval, token.clone()));
    // The pools' local workers finish their jobs while the server still answers them: the
    // listener closes only once the autoscaler has stopped them.
    let scaling = CancellationToken::new();
    let autoscaler = (!providers.is_empty()).then(|| {
        let pools = config.pools.iter().cloned().zip(providers).collect();
        let run =
            crate::scaler::autoscaler::run(Arc::clone(&store), pools, clock, Arc::clone(&leading), scaling.clone());
        tokio::spawn(run)
    });
    let shutdown = async move {
        shutdown.await;
        if let Some(autoscaler) = autoscaler {
            tracing::info!("stopping the pools' workers");
            scaling.cancel();
            let _ = autoscaler.await;
        }
    };
    let leader = (store.leadership() == Leadership::Shared)
        .then(|| tokio::spawn(crate::maintenance::leader::run(Arc::clone(&store), leading, token.clone())));
    let app = http::app(state);
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout).keep_alive(true);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = ConnectionSlots::new(config.max_connections);
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
        let Some(slot) = slots.take().await else {
            // Every connection is busy with requests: this one is closed unanswered.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = StallGuard::new(stream, config.write_stall_timeout);
        let used = slot.used.clone();
        let service =
            TowerToHyperService::new(app.clone().map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                used.store(true, Ordering::Release);
                req
            }));
        let (watcher, builder, acceptor) = (graceful.watcher(), Arc::clone(&builder), acceptor.clone());
        let handshake_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            let serve = async {
                // Errors here are a client going away mid-request: nothing to do.
                match acceptor {
                    None => drop(watcher.watch(builder.serve_connection(TokioIo::new(io), service)).await),
                    Some(acceptor) => {
                        // The handshake is part of the first request's time to arrive.
                        let Ok(Ok(tls)) = tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await else {
                            return;
                        };
                        drop(watcher.watch(builder.serve_connection(TokioIo::new(tls), service)).await);
                    }
                }
            };
            tokio::select! {
                () = serve => {}
                // Evicted before its first request: closing it loses nothing.
                () = slot.evicted.cancelled() => {}
            }
            drop(slot);
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    drop(listener);
    token.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still busy after the drain timeout; closing them");
    }
    let _ = pruner.await;
    if let Some(leader) = leader {
        let _ = leader.await;
    }
    store.close().await;
    tracing::info!("store closed");
    Ok(())
}

/// The connection cap, and the connections that could make room.
#[derive(Debug)]
struct ConnectionSlots {
    permits: Arc<Semaphore>,
    /// Connections that had not sent a request when last looked at, oldest first.
    fresh: Mutex<VecDeque<(Arc<AtomicBool>, CancellationToken)>>,
}

/// One open connection's place under the cap; dropping it frees the place.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    /// Set by its first request.
    used: Arc<AtomicBool>,
    /// Cancelled to close it to make room.
    evicted: CancellationToken,
}

impl ConnectionSlots {
    fn new(max: usize) -> Self {
        ConnectionSlots { permits: Arc::new(Semaphore::new(max.max(1))), fresh: Mutex::new(VecDeque::new()) }
    }

    /// A place for a new connection: a free one, or one made by closing the oldest connection
    /// that never sent a request. `None` when every connection is in use.
    async fn take(&self) -> Option<Slot> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                loop {
                    let next = self.fresh.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some((used, evict)) = next else { break };
                    if !used.load(Ordering::Acquire) && !evict.is_cancelled() {
                        evict.cancel();
                        break;
                    }
                }
                // The evicted connection's task frees its place as it ends.
                tokio::time::timeout(Duration::from_millis(100), Arc::clone(&self.permits).acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let slot = Slot { _permit: permit, used: Arc::new(AtomicBool::new(false)), evicted: CancellationToken::new() };
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        // Forget connections that have sent requests (or ended), so the list stays short.
        fresh.retain(|(used, evict)| !used.load(Ordering::Acquire) && !evict.is_cancelled());
        fresh.push_back((slot.used.clone(), slot.evicted.clone()));
        Some(slot)
    }
}

/// A socket whose writes may not stay blocked longer than a limit: a client that stops
/// reading (its receive window full) is cut off instead of holding the answer in memory.
#[derive(Debug)]
struct StallGuard {
    stream: TcpStream,
    limit: Duration,
    /// Running while a write waits for room.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(stream: TcpStream, limit: Duration) -> Self {
        StallGuard { stream, limit, stalled: None }
    }

    /// Called when a write could not proceed: times the stall, failing once it is too long.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading"))
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Pending => self.poll_stall(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.poll_stall(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
