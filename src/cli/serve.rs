//! `wharf serve`: configuration, logging, signals.

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};

use super::ServeArgs;
use crate::config::{FileConfig, ServerConfig};
use crate::core::Clock;
use crate::core::time::{SystemClock, parse_duration};
use crate::events::{EventBus, RingLimits};
use crate::http::auth::Auth;
use crate::logging::LogFormat;
use crate::store::postgres::{Connector, DbClock, PgConfig, PgStore};
use crate::store::sqlite::{SqliteConfig, SqliteStore};
use crate::store::{Durability, Store};

/// Merges defaults, the config file, then flags and environment variables.
/// The admin token, from `WHARF_ADMIN_TOKEN` or the file named by `--admin-token-file`.
fn admin_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let from_env = std::env::var("WHARF_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let from_file = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the admin token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let token = match (from_env, from_file) {
        (Some(_), Some(_)) => bail!("give the admin token once: WHARF_ADMIN_TOKEN or --admin-token-file, not both"),
        (token, None) | (None, token) => token,
    };
    if let Some(token) = &token {
        if token.len() < 16 || token.len() > 512 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("the admin token must be 16 to 512 characters without spaces (try: openssl rand -hex 32)");
        }
        if crate::core::auth::token_id(token).is_some() {
            bail!("the admin token must not look like a minted token (wharf_…); choose another");
        }
    }
    Ok(token)
}

pub fn config(args: &ServeArgs) -> anyhow::Result<(ServerConfig, LogFormat)> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let mut config = ServerConfig::default();
    if let Some(listen) = args.listen.or(file.listen) {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir.clone().or(file.data_dir) {
        config.data_dir = dir;
    }
    config.database_url = args.database_url.clone().or(file.database_url);
    if let Some(n) = args.database_pool_size.or(file.database_pool_size) {
        if !(2..=1_000).contains(&n) {
            bail!("database pool size must be between 2 and 1000, not {n}");
        }
        config.database_pool_size = n;
    }
    config.database_ca_file = args.database_ca_file.clone().or(file.database_ca_file);
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
    if let Some(n) = args.event_buffer_bytes.or(file.event_buffer_bytes) {
        if !(1024 * 1024..=64 * 1024 * 1024 * 1024).contains(&n) {
            bail!("event buffer bytes must be between 1048576 and 68719476736, not {n}");
        }
        config.event_buffer_bytes = n;
    }
    if let Some(n) = args.max_queues.or(file.max_queues) {
        if !(1..=1_000_000).contains(&n) {
            bail!("max queues must be between 1 and 1000000, not {n}");
        }
        config.max_queues = n;
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
    let origins =
        if args.cors_origins.is_empty() { file.cors_origins.unwrap_or_default() } else { args.cors_origins.clone() };
    for origin in &origins {
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
        });
        if !valid {
            bail!("CORS origin {origin:?} is not an origin like https://dash.example.com (scheme and host, no path)");
        }
    }
    config.cors_origins = origins;
    config.insecure_no_auth = args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false);
    config.admin_token_file = args.admin_token_file.clone().or(file.admin_token_file);
    config.hooks = crate::hooks::load_all(file.hook, &|name| std::env::var(name).ok())?;
    config.pools = crate::scaler::config::load_all(file.pool)?;
    config.alarms = crate::alarms::load_all(file.alarm)?;
    config.tls = match (args.tls_cert.clone().or(file.tls_cert), args.tls_key.clone().or(file.tls_key)) {
        (Some(cert), Some(key)) => Some(crate::config::TlsFiles { cert, key }),
        (None, None) => None,
        _ => bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
    };
    for (name, flag, file_value, field) in [
        ("header read timeout", &args.header_read_timeout, &file.header_read_timeout, &mut config.header_read_timeout),
        ("write stall timeout", &args.write_stall_timeout, &file.write_stall_timeout, &mut config.write_stall_timeout),
    ] {
        if let Some(text) = flag.as_deref().or(file_value.as_deref()) {
            *field = parse_duration(text).map_err(|e| anyhow!("{name}: {e}"))?;
            if field.is_zero() {
                bail!("{name} must be above zero");
            }
        }
    }
    if let Some(n) = args.max_connections.or(file.max_connections) {
        if !(1..=1_000_000).contains(&n) {
            bail!("max connections must be between 1 and 1000000, not {n}");
        }
        config.max_connections = n;
    }
    if let Some(rate) = args.token_rate_limit.or(file.token_rate_limit) {
        if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
            bail!("token rate limit must be above 0 and at most 1000000 requests per second, not {rate}");
        }
        config.token_rate_limit = Some(rate);
    }
    let log_format = match args.log_format.as_deref().or(file.log_format.as_deref()) {
        Some(text) => text.parse().map_err(|e: String| anyhow!(e))?,
        None => LogFormat::default(),
    };
    Ok((config, log_format))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, log_format) = config(&args)?;
    crate::logging::init(log_format);
    let admin = admin_token(config.admin_token_file.as_deref())?;
    if admin.is_none() && !config.listen.ip().is_loopback() && !config.insecure_no_auth {
        bail!(
            "refusing to listen on {} without authentication: set an admin token (WHARF_ADMIN_TOKEN, or \
             --admin-token-file FILE; e.g. `export WHARF_ADMIN_TOKEN=$(openssl rand -hex 32)`), listen on \
             127.0.0.1, or pass --insecure-no-auth to let anyone who can reach it do anything",
            config.listen
        );
    }
    let files = raise_file_limit();
    // Each connection is a descriptor; leave a quarter for the store, logs and the rest.
    config.max_connections = config.max_connections.min((files as usize).saturating_mul(3) / 4).max(1);
    let tls = match &config.tls {
        Some(files) => {
            let slot = crate::tls::CertSlot::load(files.clone())?;
            crate::tls::reload_on_sighup(std::sync::Arc::clone(&slot));
            Some(slot)
        }
        None => None,
    };
    // Bind first: a busy port must not leave a new store behind.
    let listener = listen(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let ring = RingLimits { max_bytes: config.event_buffer_bytes, ..RingLimits::default() };
    let (store, events, clock, location): (Arc<dyn Store>, Arc<EventBus>, Arc<dyn Clock>, String) =
        match &config.database_url {
            Some(url) => {
                // Many nodes share this database: one clock (the database's), events numbered
                // by the database, maintenance by whichever node leads.
                let connector = Connector::new(url, config.database_ca_file.as_deref())?;
                let clock: Arc<dyn Clock> =
                    DbClock::start(&connector).await.map_err(|e| anyhow!("cannot reach PostgreSQL: {e}"))?;
                let events = Arc::new(EventBus::numbered(ring));
                let pg = PgConfig {
                    max_queues: config.max_queues,
                    pool_size: config.database_pool_size,
                    ca_file: config.database_ca_file.clone(),
                    ..PgConfig::new(url.clone())
                };
                let store = PgStore::open(pg, Arc::clone(&clock), Arc::clone(&events)).await?;
                (Arc::new(store), events, clock, redact_url(url))
            }
            None => {
                std::fs::create_dir_all(&config.data_dir)
                    .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
                let path = config.data_dir.join("wharf.db");
                let clock: Arc<dyn Clock> = Arc::new(SystemClock);
                let boot_micros = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0);
                let events = Arc::new(EventBus::new(ring, boot_micros));
                let sqlite = SqliteConfig {
                    durability: config.durability,
                    max_queues: config.max_queues,
                    ..SqliteConfig::new(&path)
                };
                let store = SqliteStore::open(sqlite, Arc::clone(&clock), Arc::clone(&events))?;
                (Arc::new(store), events, clock, path.display().to_string())
            }
        };
    let auth = match &admin {
        Some(admin) => {
            let tokens = store.token_list().await?;
            tracing::info!(
                tokens = tokens.len(),
                "authentication on: every call but /health, /ready and webhooks needs a token"
            );
            Auth::new(Some(admin), tokens, config.token_rate_limit)
        }
        None => {
            tracing::warn!("authentication off: anyone who can reach this address may do anything");
            Auth::new(None, Vec::new(), config.token_rate_limit)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        address = %format!("{scheme}://{local}"),
        store = %location,
        durability = ?config.durability,
        "wharf serve is listening"
    );
    // Local worker processes reach this server on the loopback when it listens everywhere.
    let reach = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::SocketAddr::from(([127, 0, 0, 1], local.port())),
        ip if ip.is_unspecified() => std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port())),
        _ => local,
    };
    let process_env = crate::scaler::process::ProcessEnv {
        server: format!("{scheme}://{reach}"),
        token: admin.as_deref().map(crate::core::auth::Secret::new),
        ca_file: config.tls.as_ref().map(|t| t.cert.clone()),
        node: format!("{:08x}", fastrand::u32(..)),
    };
    let providers = crate::scaler::autoscaler::providers(&config.pools, &process_env, &store).await?;
    let config = Arc::new(config);
    let parts = crate::server::Parts { store, events, clock, config, auth: Arc::new(auth), tls, providers };
    crate::server::serve(listener, parts, shutdown_signal()).await?;
    Ok(())
}

/// A database URL as logs may show it: without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Raises the open-files limit to its hard maximum: every connection, idle or streaming, is a
/// file descriptor, and the usual soft limit of 1,024 is far below what a server should hold.
/// Returns the limit in force.
fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1_024 };
    if soft < hard {
        if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(error = %err, soft, hard, "cannot raise the open-files limit");
            return soft;
        }
        return hard;
    }
    soft
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
