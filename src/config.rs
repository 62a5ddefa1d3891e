//! Server configuration: flags, `WHARF_*` environment variables and an optional TOML file.
//!
//! A flag or environment variable wins over the file, which wins over the default. Every field
//! documents its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::Limits;
use crate::store::Durability;

/// Everything `wharf serve` needs to know.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on. Defaults to `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Directory of the embedded store (`wharf.db` inside). Defaults to `./wharf-data`.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL instead of the embedded store. Defaults to none.
    pub database_url: Option<String>,
    /// Pooled connections per node to PostgreSQL. Defaults to 16.
    pub database_pool_size: usize,
    /// Extra CA certificates for TLS to PostgreSQL. Defaults to none.
    pub database_ca_file: Option<PathBuf>,
    /// When a commit counts as done. Defaults to `fsync`.
    pub durability: Durability,
    /// Payload and batch limits. Defaults to 256 KiB payloads and 10,000 jobs per batch.
    pub limits: Limits,
    /// Largest body of a batch enqueue, acknowledgement or redrive. Defaults to 64 MiB.
    pub max_batch_body_bytes: usize,
    /// How often finished jobs past retention are deleted. Defaults to 60 s.
    pub prune_interval: Duration,
    /// Longest time a client may take to send a request body (against slow-body attacks).
    /// Defaults to 30 s.
    pub body_read_timeout: Duration,
    /// How long a client may take to send a request head, the first one included (and how
    /// long an idle connection stays open). Defaults to 30 s.
    pub header_read_timeout: Duration,
    /// Longest a write to a client may stay blocked (the client stopped reading) before the
    /// connection is closed. Defaults to 30 s.
    pub write_stall_timeout: Duration,
    /// Most open connections; at the cap, connections that have not sent a request make room.
    /// Defaults to 10,000 (lowered to three quarters of the open-files limit if that is less).
    pub max_connections: usize,
    /// Most queues. Defaults to 1,000.
    pub max_queues: usize,
    /// Most bytes of recent events kept for progress streams to replay (`Last-Event-ID`).
    /// Defaults to 64 MiB.
    pub event_buffer_bytes: usize,
    /// Most payload bytes in one lease answer; a worker asking for many jobs of large
    /// payloads gets fewer. Defaults to 16 MiB.
    pub max_lease_answer_bytes: usize,
    /// Requests per second each token may send when it sets no rate of its own (a batch counts
    /// its jobs). Defaults to no limit.
    pub token_rate_limit: Option<f64>,
    /// Serve without authentication on a non-loopback address. Defaults to false.
    pub insecure_no_auth: bool,
    /// A file holding the admin token (the token is never kept in the configuration itself).
    /// Defaults to none (`WHARF_ADMIN_TOKEN`, or no authentication).
    pub admin_token_file: Option<PathBuf>,
    /// Webhook ingress endpoints (`[[hook]]` in the config file). Defaults to none.
    pub hooks: Vec<crate::hooks::Hook>,
    /// TLS certificate and key files; `None` serves plain HTTP. Defaults to none.
    pub tls: Option<TlsFiles>,
    /// Autoscaled worker pools (`[[pool]]` in the config file). Defaults to none.
    pub pools: Vec<crate::scaler::config::PoolConfig>,
    /// Alarm rules (`[[alarm]]` in the config file); more can be set through the API.
    /// Defaults to none.
    pub alarms: Vec<crate::core::alarm::AlarmRule>,
    /// Browser origins allowed to call the API from their pages (`https://dash.example.com`):
    /// their CORS preflights are answered. Defaults to none: CORS off.
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("wharf-data"),
            database_url: None,
            database_pool_size: 16,
            database_ca_file: None,
            durability: Durability::Fsync,
            limits: Limits::default(),
            max_batch_body_bytes: 64 * 1024 * 1024,
            prune_interval: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            hooks: Vec::new(),
            pools: Vec::new(),
            alarms: Vec::new(),
            tls: None,
            token_rate_limit: None,
            insecure_no_auth: false,
            admin_token_file: None,
            max_lease_answer_bytes: 16 * 1024 * 1024,
            max_queues: 1_000,
            header_read_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            event_buffer_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The certificate chain and private key of a TLS server, as PEM files; reread on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The config file's keys; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen = "0.0.0.0:7070"`.
    pub listen: Option<SocketAddr>,
    /// `data_dir = "/var/lib/wharf"`.
    pub data_dir: Option<PathBuf>,
    /// `database_url = "postgres://…"`.
    pub database_url: Option<String>,
    /// `database_pool_size = 16`.
    pub database_pool_size: Option<usize>,
    /// `database_ca_file = "/etc/ssl/rds-bundle.pem"`.
    pub database_ca_file: Option<PathBuf>,
    /// `durability = "fsync"` or `"os"`.
    pub durability: Option<String>,
    /// `max_payload_bytes = 262144`.
    pub max_payload_bytes: Option<usize>,
    /// `max_batch = 10000`.
    pub max_batch: Option<usize>,
    /// `max_queues = 1000`.
    pub max_queues: Option<usize>,
    /// `event_buffer_bytes = 67108864`.
    pub event_buffer_bytes: Option<usize>,
    /// `prune_interval = "60s"`.
    pub prune_interval: Option<String>,
    /// `body_read_timeout = "30s"`.
    pub body_read_timeout: Option<String>,
    /// `header_read_timeout = "30s"`.
    pub header_read_timeout: Option<String>,
    /// `write_stall_timeout = "30s"`.
    pub write_stall_timeout: Option<String>,
    /// `max_connections = 10000`.
    pub max_connections: Option<usize>,
    /// `log_format = "json"` or `"pretty"`.
    pub log_format: Option<String>,
    /// `token_rate_limit = 1000.0`.
    pub token_rate_limit: Option<f64>,
    /// `admin_token_file = "/run/secrets/wharf-admin"`.
    pub admin_token_file: Option<PathBuf>,
    /// `insecure_no_auth = true`.
    pub insecure_no_auth: Option<bool>,
    /// `cors_origins = ["https://dash.example.com"]`.
    pub cors_origins: Option<Vec<String>>,
    /// Webhook ingress endpoints (`[[hook]]`).
    #[serde(default)]
    pub hook: Vec<crate::hooks::HookFile>,
    /// `tls_cert = "/etc/wharf/cert.pem"`.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key = "/etc/wharf/key.pem"`.
    pub tls_key: Option<PathBuf>,
    /// Autoscaled worker pools (`[[pool]]`).
    #[serde(default)]
    pub pool: Vec<toml::Table>,
    /// Alarm rules (`[[alarm]]`).
    #[serde(default)]
    pub alarm: Vec<toml::Table>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}
