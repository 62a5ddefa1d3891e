//! Server configuration: flags, `WHARF_*` environment variables and an optional TOML file.
//!
//! A flag or environment variable wins over the file, which wins over the default. Every field
//! documents its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::Limits;
use crate::store::sqlite::Durability;

/// Everything `wharf serve` needs to know.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on. Defaults to `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Directory of the embedded store (`wharf.db` inside). Defaults to `./wharf-data`.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL instead of the embedded store. Defaults to none.
    pub database_url: Option<String>,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("wharf-data"),
            database_url: None,
            durability: Durability::Fsync,
            limits: Limits::default(),
            max_batch_body_bytes: 64 * 1024 * 1024,
            prune_interval: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
        }
    }
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
    /// `durability = "fsync"` or `"os"`.
    pub durability: Option<String>,
    /// `max_payload_bytes = 262144`.
    pub max_payload_bytes: Option<usize>,
    /// `max_batch = 10000`.
    pub max_batch: Option<usize>,
    /// `prune_interval = "60s"`.
    pub prune_interval: Option<String>,
    /// `body_read_timeout = "30s"`.
    pub body_read_timeout: Option<String>,
    /// `log_format = "json"` or `"pretty"`.
    pub log_format: Option<String>,
    /// Autoscaler pools (`[[pool]]`); read by the autoscaler.
    #[serde(default)]
    pub pool: Vec<toml::Table>,
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
