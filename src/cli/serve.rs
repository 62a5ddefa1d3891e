//! `wharf serve`: configuration, logging, signals.

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};

use super::ServeArgs;
use crate::config::{FileConfig, ServerConfig};
use crate::core::time::{SystemClock, parse_duration};
use crate::events::{DEFAULT_RING_CAPACITY, EventBus};
use crate::logging::LogFormat;
use crate::store::Store;
use crate::store::sqlite::{Durability, SqliteConfig, SqliteStore};

/// Merges defaults, the config file, then flags and environment variables.
pub fn config(args: &ServeArgs) -> anyhow::Result<(ServerConfig, LogFormat)> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    if !file.pool.is_empty() {
        tracing::warn!(
            pools = file.pool.len(),
            "the config file declares [[pool]] entries; this build has no autoscaler and ignores them"
        );
    }
    let mut config = ServerConfig::default();
    if let Some(listen) = args.listen.or(file.listen) {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir.clone().or(file.data_dir) {
        config.data_dir = dir;
    }
    config.database_url = args.database_url.clone().or(file.database_url);
    config.durability = match (args.durability, file.durability.as_deref()) {
        (Some(d), _) => d,
        (None, Some("fsync")) | (None, None) => Durability::Fsync,
        (None, Some("os")) => Durability::Os,
        (None, Some(other)) => bail!("config file: durability {other:?} is not fsync or os"),
    };
    if let Some(n) = args.max_payload_bytes.or(file.max_payload_bytes) {
        if !(1..=64 * 1024 * 1024).contains(&n) {
            bail!("max payload bytes must be between 1 and 67108864, not {n}");
        }
        config.limits.max_payload_bytes = n;
    }
    if let Some(n) = args.max_batch.or(file.max_batch) {
        if !(1..=100_000).contains(&n) {
            bail!("max batch must be between 1 and 100000, not {n}");
        }
        config.limits.max_batch = n;
    }
    if let Some(text) = args.prune_interval.as_deref().or(file.prune_interval.as_deref()) {
        config.prune_interval = parse_duration(text).map_err(|e| anyhow!("prune interval: {e}"))?;
        if config.prune_interval.is_zero() {
            bail!("prune interval must be above zero");
        }
    }
    if let Some(text) = args.body_read_timeout.as_deref().or(file.body_read_timeout.as_deref()) {
        config.body_read_timeout = parse_duration(text).map_err(|e| anyhow!("body read timeout: {e}"))?;
        if config.body_read_timeout.is_zero() {
            bail!("body read timeout must be above zero");
        }
    }
    let log_format = match args.log_format.as_deref().or(file.log_format.as_deref()) {
        Some(text) => text.parse().map_err(|e: String| anyhow!(e))?,
        None => LogFormat::default(),
    };
    Ok((config, log_format))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, log_format) = config(&args)?;
    crate::logging::init(log_format);
    if config.database_url.is_some() {
        bail!("the PostgreSQL store is not part of this build yet; run on the embedded store with --data-dir");
    }
    raise_file_limit();
    // Bind first: a busy port must not leave a new store behind.
    let listener = listen(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    let path = config.data_dir.join("wharf.db");
    let clock = Arc::new(SystemClock);
    let boot_micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let events = Arc::new(EventBus::new(DEFAULT_RING_CAPACITY, boot_micros));
    let sqlite = SqliteConfig { durability: config.durability, ..SqliteConfig::new(&path) };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(sqlite, clock.clone(), Arc::clone(&events))?);
    tracing::info!(
        address = %format!("http://{local}"),
        store = %path.display(),
        durability = ?config.durability,
        "wharf serve is listening"
    );
    let config = Arc::new(config);
    crate::server::serve(listener, store, events, clock, config, shutdown_signal()).await?;
    Ok(())
}

/// Raises the open-files limit to its hard maximum: every connection, idle or streaming, is a
/// file descriptor, and the usual soft limit of 1,024 is far below what a server should hold.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %err, soft, hard, "cannot raise the open-files limit");
    }
}

/// Binds with `SO_REUSEADDR`, so a restarted server gets its port back at once even while
/// connections of the previous process linger in TIME_WAIT.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
