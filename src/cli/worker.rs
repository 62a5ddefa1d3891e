//! `wharf worker`, and the helpers a handler program calls: `wharf progress`, `wharf result`.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;

use crate::core::QueueName;
use crate::core::time::parse_duration;
use crate::worker::endpoint::Endpoint;
use crate::worker::exec::{Exec, read_value, tell_worker};
use crate::worker::{Noop, Shutdown, Worker, WorkerConfig};

/// `wharf worker`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("handler").required(true).args(["exec", "http", "builtin"]))]
pub struct WorkerArgs {
    /// The server's URL.
    #[arg(long, env = "WHARF_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// A queue to take jobs from (repeatable, or comma-separated).
    #[arg(long = "queue", env = "WHARF_QUEUE", value_delimiter = ',', required = true)]
    pub queues: Vec<String>,
    /// Jobs run at once (1 = one at a time).
    #[arg(long, env = "WHARF_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// Run this command per job, under `sh -c`, with the payload on stdin.
    #[arg(long, env = "WHARF_EXEC")]
    pub exec: Option<String>,
    /// POST each job to this URL.
    #[arg(long, env = "WHARF_HTTP")]
    pub http: Option<String>,
    /// A built-in Rust handler: `noop` succeeds at once (for benchmarks).
    #[arg(long, value_parser = ["noop"])]
    pub builtin: Option<String>,
    /// This worker's id [default: <host>-<pid>].
    #[arg(long, env = "WHARF_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Lease duration to ask for, e.g. 60s [default: the queue's].
    #[arg(long, env = "WHARF_LEASE")]
    pub lease: Option<String>,
    /// Longest long poll for work.
    #[arg(long, env = "WHARF_POLL_WAIT", default_value = "20s")]
    pub poll_wait: String,
    /// After SIGTERM, how long running jobs may finish before they are stopped and released.
    #[arg(long, env = "WHARF_GRACE", default_value = "30s")]
    pub grace: String,
    /// Between SIGTERM and SIGKILL when a handler is timed out or canceled.
    #[arg(long, env = "WHARF_KILL_GRACE", default_value = "5s")]
    pub kill_grace: String,
    /// Timeout for attempts of jobs that set none [default: none].
    #[arg(long, env = "WHARF_TIMEOUT")]
    pub timeout: Option<String>,
    /// Serve GET /health on this address, e.g. 0.0.0.0:3001.
    #[arg(long, env = "WHARF_HEALTH_ADDR")]
    pub health_addr: Option<std::net::SocketAddr>,
    /// The API token, when the server needs one (a worker token).
    #[arg(long, env = "WHARF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (an https server with a
    /// private certificate).
    #[arg(long, env = "WHARF_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Log format: pretty or json.
    #[arg(long, env = "WHARF_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    parse_duration(text).map_err(|e| anyhow!("{flag}: {e}"))
}

/// A worker started by `wharf serve` for a pool (`WHARF_PARENT_PID` names the server) drains
/// when that server is gone, instead of outliving it unseen.
fn drain_when_parent_exits(shutdown: &Shutdown) {
    let Some(parent) = std::env::var("WHARF_PARENT_PID").ok().and_then(|p| p.parse::<i32>().ok()) else {
        return;
    };
    let drain = shutdown.drain.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = drain.cancelled() => return,
            }
            if nix::unistd::getppid().as_raw() != parent {
                tracing::warn!(parent, "the server that started this worker is gone; draining");
                drain.cancel();
                return;
            }
        }
    });
}

/// Builds the configuration from the flags, refusing bad values with one line each.
pub fn config(args: &WorkerArgs) -> anyhow::Result<WorkerConfig> {
    for queue in &args.queues {
        QueueName::parse(queue).map_err(|e| anyhow!("--queue: {}", e.reason))?;
    }
    if !(1..=10_000).contains(&args.concurrency) {
        bail!("--concurrency must be between 1 and 10000, not {}", args.concurrency);
    }
    let mut config = WorkerConfig::new(&args.server, args.queues.clone());
    config.concurrency = args.concurrency;
    if let Some(id) = &args.worker_id {
        if id.is_empty() || id.chars().count() > 256 {
            bail!("--worker-id must be 1 to 256 characters");
        }
        config.worker_id = id.clone();
    }
    config.lease = args.lease.as_deref().map(|l| duration("--lease", l)).transpose()?;
    config.poll_wait = duration("--poll-wait", &args.poll_wait)?.min(Duration::from_secs(60));
    config.grace = duration("--grace", &args.grace)?;
    config.kill_grace = duration("--kill-grace", &args.kill_grace)?;
    config.default_timeout = args.timeout.as_deref().map(|t| duration("--timeout", t)).transpose()?;
    config.health_addr = args.health_addr;
    config.token = args.token.clone().map(crate::core::auth::Secret::new);
    config.ca_file = args.ca_file.clone();
    Ok(config)
}

/// Runs the worker until SIGTERM/SIGINT.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let log_format: crate::logging::LogFormat = args.log_format.parse().map_err(|e| anyhow!("--log-format: {e}"))?;
    let config = config(&args)?;
    crate::logging::init(log_format);
    let shutdown = Shutdown::on_signals();
    drain_when_parent_exits(&shutdown);
    let worker = if let Some(command) = &args.exec {
        let exec = Exec::new(command, config.kill_grace).context("cannot start the handler's helper socket")?;
        Worker::new(config, exec)?
    } else if let Some(url) = &args.http {
        Worker::new(config, Endpoint::new(url).map_err(|e| anyhow!(e))?)?
    } else {
        Worker::new(config, Noop)?
    };
    worker.run(shutdown).await.context("the worker failed")?;
    Ok(())
}

/// `wharf progress`: reports the running job's progress to its worker.
#[derive(Debug, Args)]
pub struct ProgressArgs {
    /// Percent done, 0–100.
    pub percent: Option<f64>,
    /// The stage the job is in, e.g. embedding.
    #[arg(long)]
    pub stage: Option<String>,
    /// A message for people.
    #[arg(long)]
    pub message: Option<String>,
    /// Any JSON instead: a value, @FILE, or - for standard input.
    #[arg(long, conflicts_with_all = ["percent", "stage", "message"])]
    pub json: Option<String>,
}

/// `wharf result`: sets the running job's result, stored when the handler exits 0.
#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The result: JSON, @FILE, or - for standard input.
    pub value: String,
}

pub async fn progress(args: ProgressArgs) -> anyhow::Result<()> {
    let value = match args.json {
        Some(json) => read_value(&json).map_err(|e| anyhow!("--json: {e}"))?,
        None => {
            if args.percent.is_none() && args.stage.is_none() && args.message.is_none() {
                bail!("give a percent, --stage, --message or --json");
            }
            if let Some(p) = args.percent
                && !(0.0..=100.0).contains(&p)
            {
                bail!("percent must be between 0 and 100, not {p}");
            }
            let mut object = serde_json::Map::new();
            if let Some(p) = args.percent {
                object.insert("percent".into(), serde_json::json!(p));
            }
            if let Some(stage) = args.stage {
                object.insert("stage".into(), stage.into());
            }
            if let Some(message) = args.message {
                object.insert("message".into(), message.into());
            }
            serde_json::value::to_raw_value(&object)?
        }
    };
    tell_worker("progress", value).await.map_err(|e| anyhow!(e))
}

pub async fn result(args: ResultArgs) -> anyhow::Result<()> {
    let value = read_value(&args.value).map_err(|e| anyhow!("result: {e}"))?;
    tell_worker("result", value).await.map_err(|e| anyhow!(e))
}
