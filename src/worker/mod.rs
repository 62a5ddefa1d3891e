//! The worker runtime: `wharf worker` and the library behind it.
//!
//! # Overview
//!
//! A worker leases jobs from a server over the public HTTP API (the same one any client
//! uses), runs each attempt with a [`Handler`] — a program ([`exec`]), an HTTP endpoint
//! ([`endpoint`]) or Rust functions ([`Handlers`]) — and reports the outcome. The runtime does
//! everything around the handler: long-polling for work, heartbeats that extend the lease and
//! carry progress, cancellation, timeouts, batched acknowledgements retried until the server
//! takes them, reconnecting with backoff while the server is away, a health endpoint, and
//! graceful shutdown.
//!
//! # State model
//!
//! ```text
//!  running ──SIGTERM──▶ draining ──jobs done──────────────▶ stopped
//!     │                    │ └──grace over / 2nd signal──▶ stopping: kill handlers,
//!     │                    │                                release their leases ──▶ stopped
//!     └─lease answer says "drain"─▶ (draining with no time limit until a signal)
//!   (leases nothing new from then on)
//! ```
//!
//! A worker tells the server where it runs and its capacity with each lease request, says it
//! is draining on SIGTERM, and leaves the server's list of workers when it stops.
//!
//! Each attempt ends in exactly one report: complete (the handler succeeded), fail (it failed,
//! timed out, or the job was canceled — the server then ends it `canceled`), release (the
//! worker is shutting down: the job is ready again at once and the attempt does not count),
//! or nothing at all when the lease is already gone.
//!
//! # Failure handling
//!
//! If the server is unreachable, leasing backs off (100 ms doubling to 5 s, with jitter) and
//! reports wait and retry; a report the server refuses as stale means the lease expired and
//! the job was handed to someone else, so the result is dropped (at-least-once delivery: the
//! job's id and attempt let handlers make their effects idempotent). If the worker is killed
//! outright, its leases expire on the server and the jobs are retried.

pub mod endpoint;
pub mod exec;
mod handler;
mod health;
mod presence;
mod reporter;
mod runtime;

use std::net::SocketAddr;
use std::time::Duration;

pub use handler::{Handler, HandlerError, Handlers, JobContext, Noop, Outcome, StopReason};
pub use runtime::{Shutdown, Worker};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The server's URL. Defaults to `http://127.0.0.1:7070`.
    pub server: String,
    /// Queues to take jobs from; the highest priority across them goes first.
    pub queues: Vec<String>,
    /// Attempts run at once. Defaults to 1 (one job at a time, like RabbitMQ's `prefetch=1`).
    pub concurrency: usize,
    /// This worker's id, shown by `wharf workers`. Defaults to `<host>-<pid>`.
    pub worker_id: String,
    /// Lease duration to ask for; defaults to the queue's policy (`None`).
    pub lease: Option<Duration>,
    /// Longest long poll for work. Defaults to 20 s.
    pub poll_wait: Duration,
    /// After SIGTERM, how long running jobs may go on before they are stopped and released.
    /// Defaults to 30 s (ECS allows up to 120 s between SIGTERM and SIGKILL).
    pub grace: Duration,
    /// Between asking a handler process to stop (SIGTERM) and killing it (SIGKILL). Defaults
    /// to 5 s.
    pub kill_grace: Duration,
    /// Timeout for attempts of jobs that set none. Defaults to none.
    pub default_timeout: Option<Duration>,
    /// Serve `GET /health` here. Defaults to none.
    pub health_addr: Option<SocketAddr>,
    /// The API token, when the server needs one (a `worker` token). Defaults to none.
    pub token: Option<crate::core::auth::Secret>,
    /// CA certificates to trust besides the system's (an https server with a private
    /// certificate). Defaults to none.
    pub ca_file: Option<std::path::PathBuf>,
}

impl WorkerConfig {
    /// The defaults for a worker of `queues` on `server`.
    pub fn new(server: &str, queues: Vec<String>) -> Self {
        WorkerConfig {
            server: server.to_owned(),
            queues,
            concurrency: 1,
            worker_id: default_worker_id(),
            lease: None,
            poll_wait: Duration::from_secs(20),
            grace: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            default_timeout: None,
            health_addr: None,
            token: None,
            ca_file: None,
        }
    }
}

/// This machine's host name, as the kernel reports it.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

fn default_worker_id() -> String {
    format!("{}-{}", host_name().unwrap_or_else(|| "worker".into()), std::process::id())
}
