//! wharf: durable background jobs with an HTTP API, progress streams and workers, in one binary.
//!
//! # Layout
//!
//! - [`core`]: the domain, pure — jobs, queues, leases and fencing, backoff, the state machine,
//!   validation. No I/O; everything else builds on it.
//! - [`store`]: the storage seam ([`store::Store`]) and the embedded SQLite store with group
//!   commit and an in-memory index of ready work.
//! - [`hooks`]: webhook ingress, pure — hook configuration, provider signature checks
//!   (Twilio, GitHub, Stripe, HMAC-SHA256), delivery ids and job payloads.
//! - [`events`]: the bus of committed job changes behind progress streams.
//! - [`metrics`]: the metrics catalogue and its Prometheus rendering.
//! - [`http`]: HTTP API v1 — thin handlers, problem JSON, SSE, the OpenAPI document.
//! - [`api`]: the wire format shared by the server and the client.
//! - [`maintenance`]: background services (retention pruning).
//! - [`alarms`]: alarm rules evaluated on the leader, and their webhooks.
//! - [`server`]: `wharf serve` wiring and ordered shutdown.
//! - [`client`]: a client of the public API; the CLI and bench use only it.
//! - [`cli`]: the command line.
//! - [`config`]: server configuration from flags, environment and file.
//! - [`tls`]: certificates for the server (reloaded on SIGHUP) and trusted roots for clients.
//! - [`logging`]: log output (pretty or JSON lines on standard error).
//!
//! The core never imports a store or the HTTP layer; a store never imports the server; the
//! client knows only the wire format.

pub mod alarms;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod events;
pub mod failpoint;
pub mod hooks;
pub mod http;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod scaler;
pub mod server;
pub mod stats;
pub mod store;
pub mod tls;
pub mod worker;
