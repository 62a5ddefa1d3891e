//! The command line: `wharf serve`, the client commands, and `wharf bench`.
//!
//! Client commands print tables for people and, with `--json`, the API's JSON for scripts.
//! Every failure is one line on stderr starting `error:`.
//!
//! Exit codes ([`EXIT_CODES`], printed by `--help`): 0 success; 1 failure (the server refused,
//! or could not be reached); 2 usage error; `wharf job ID --follow` exits 3 when the job ended
//! `dead` or `canceled`. A closed pipe (`wharf jobs q | head -1`) ends a command quietly with 0.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::store::sqlite::Durability;

pub mod bench;
mod commands;
mod output;

pub use output::is_broken_pipe;
pub mod serve;
pub mod worker;

/// Exit code of `wharf job --follow` when the job did not succeed.
pub const EXIT_JOB_FAILED: u8 = 3;

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES: &str = "Exit codes:
  0  success (also when the reader of a pipe stops early, as with `| head`)
  1  failure: the server refused the request or could not be reached
  2  usage error: a flag or argument is wrong
  3  `wharf job ID --follow`: the job ended dead or canceled";

/// wharf: durable background jobs with an HTTP API, progress streams and workers, in one binary.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about, max_term_width = 100, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: durable queue, HTTP API, progress streams, metrics.
    Serve(ServeArgs),
    /// Run jobs: lease from queues and run a program, an HTTP endpoint or a built-in handler.
    Worker(worker::WorkerArgs),
    /// Inside a handler run by `wharf worker --exec`: report the job's progress.
    Progress(worker::ProgressArgs),
    /// Inside a handler run by `wharf worker --exec`: set the job's result.
    Result(worker::ResultArgs),
    /// Enqueue a job.
    Enqueue(EnqueueArgs),
    /// Show a job; with --follow, stream its progress until it finishes.
    Job(JobArgs),
    /// List a queue's jobs, newest first.
    Jobs(JobsArgs),
    /// List queues with their counts.
    Queues(ClientArgs),
    /// List a queue's dead jobs (its dead-letter queue).
    Dead(DeadArgs),
    /// Send dead jobs back to ready, attempts reset.
    Redrive(RedriveArgs),
    /// Cancel a job.
    Cancel(CancelArgs),
    /// Show or change a queue: its policy, pause, resume.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Stop handing out a queue's jobs (same as `wharf queue pause`).
    Pause(QueueArg),
    /// Hand out a paused queue's jobs again (same as `wharf queue resume`).
    Resume(QueueArg),
    /// List the workers connected in the last minute.
    Workers(ClientArgs),
    /// Measure a running server: enqueue, batch enqueue, end to end, pickup latency.
    Bench(bench::BenchArgs),
}

/// How to reach the server, and how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "WHARF_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `wharf serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "WHARF_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Directory of the embedded store [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA_DIR", conflicts_with = "database_url")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL at this URL instead of the embedded store. Hidden until that store ships: it
    /// is refused with an error today.
    #[arg(long, env = "WHARF_DATABASE_URL", hide = true)]
    pub database_url: Option<String>,
    /// A TOML config file; flags and WHARF_* variables override it.
    #[arg(long, env = "WHARF_CONFIG")]
    pub config: Option<PathBuf>,
    /// When a change counts as durable: fsync (survives power loss) or os (survives a crash of
    /// wharf) [default: fsync].
    #[arg(long, env = "WHARF_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Largest payload, progress or result, in bytes [default: 262144].
    #[arg(long, env = "WHARF_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Most jobs per batch enqueue or acknowledgement [default: 10000].
    #[arg(long, env = "WHARF_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// How often to delete finished jobs past retention, e.g. 60s [default: 60s].
    #[arg(long, env = "WHARF_PRUNE_INTERVAL")]
    pub prune_interval: Option<String>,
    /// Longest time a client may take to send a request body, e.g. 30s [default: 30s].
    #[arg(long, env = "WHARF_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<String>,
    /// Log format: pretty or json [default: pretty].
    #[arg(long, env = "WHARF_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// `wharf enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue.
    pub queue: String,
    /// The job type.
    pub kind: String,
    /// The payload: JSON, @FILE for a file's contents, or - (or @-) for standard input.
    #[arg(long)]
    pub payload: Option<String>,
    /// Higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Run after this delay, e.g. 500ms, 30s, 5m.
    #[arg(long, conflicts_with = "run_at")]
    pub delay: Option<String>,
    /// Run at this RFC 3339 time.
    #[arg(long)]
    pub run_at: Option<String>,
    /// Deduplicate: a second enqueue with this key returns the first job.
    #[arg(long)]
    pub key: Option<String>,
    /// Attempts allowed, overriding the queue's.
    #[arg(long)]
    pub max_attempts: Option<i64>,
    /// How long one attempt may run, e.g. 10m.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Metadata entries, KEY=VALUE, repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Print only the job id (for scripts: `id=$(wharf enqueue -q …)`).
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `wharf job`.
#[derive(Debug, Args)]
#[command(after_help = "Exit codes with --follow: 0 when the job succeeded, 3 when it ended dead or canceled, \
1 when the server could not be reached for 30s. On a terminal, progress shows as a bar; piped, as one \
line per event.")]
pub struct JobArgs {
    /// The job id.
    pub id: String,
    /// Stream progress until the job finishes.
    #[arg(long, short)]
    pub follow: bool,
    /// With --follow: how long to keep reconnecting to a server that went away.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub reconnect_for: String,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `wharf jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The queue.
    pub queue: String,
    /// Only jobs in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Page size (1–1000).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Continue after this cursor (printed under a full page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `wharf dead`.
#[derive(Debug, Args)]
pub struct DeadArgs {
    /// The queue.
    pub queue: String,
    /// Page size (1–1000).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `wharf redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The queue.
    pub queue: String,
    /// Only these dead jobs (repeatable); all dead jobs of the queue when absent.
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `wharf cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job id.
    pub id: String,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A command about one queue.
#[derive(Debug, Args)]
pub struct QueueArg {
    /// The queue.
    pub queue: String,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `wharf queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Show a queue: counts per state and policy.
    Show(QueueArg),
    /// Create a queue or change its policy; only the flags given change.
    Set(QueueSetArgs),
    /// Stop handing out the queue's jobs; enqueues are still accepted.
    Pause(QueueArg),
    /// Hand out the queue's jobs again.
    Resume(QueueArg),
}

/// `wharf queue set`.
#[derive(Debug, Args)]
pub struct QueueSetArgs {
    /// The queue.
    pub queue: String,
    /// How long a worker holds a job before it counts as lost, e.g. 2m (100ms–12h).
    #[arg(long)]
    pub lease: Option<String>,
    /// Attempts before a job is dead (1–1000).
    #[arg(long)]
    pub max_attempts: Option<i64>,
    /// Upper bound of the first retry's delay, e.g. 1s.
    #[arg(long)]
    pub backoff_base: Option<String>,
    /// Growth of the retry delay per attempt (1–10).
    #[arg(long)]
    pub backoff_factor: Option<f64>,
    /// Longest retry delay, e.g. 1h.
    #[arg(long)]
    pub backoff_cap: Option<String>,
    /// How long finished jobs are kept, e.g. 7d.
    #[arg(long)]
    pub retention: Option<String>,
    /// Most jobs running at once across all workers, or `none`.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Most jobs started per second, or `none`.
    #[arg(long)]
    pub rate: Option<String>,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await.map(|()| 0),
        Command::Worker(args) => worker::run(args).await.map(|()| 0),
        Command::Progress(args) => worker::progress(args).await.map(|()| 0),
        Command::Result(args) => worker::result(args).await.map(|()| 0),
        Command::Bench(args) => bench::run(args).await.map(|()| 0),
        Command::Enqueue(args) => commands::enqueue(args).await,
        Command::Job(args) => commands::job(args).await,
        Command::Jobs(args) => commands::jobs(args).await,
        Command::Queues(args) => commands::queues(args).await,
        Command::Workers(args) => commands::workers(args).await,
        Command::Dead(args) => commands::dead(args).await,
        Command::Redrive(args) => commands::redrive(args).await,
        Command::Cancel(args) => commands::cancel(args).await,
        Command::Queue(QueueCommand::Show(args)) => commands::queue_show(args).await,
        Command::Queue(QueueCommand::Set(args)) => commands::queue_set(args).await,
        Command::Queue(QueueCommand::Pause(args)) | Command::Pause(args) => commands::pause(args, true).await,
        Command::Queue(QueueCommand::Resume(args)) | Command::Resume(args) => commands::pause(args, false).await,
    }
}
