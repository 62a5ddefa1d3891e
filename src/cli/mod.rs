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

use crate::store::Durability;

pub mod bench;
mod commands;
mod output;
pub mod scale;

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
    /// Show, change or delete a queue: its policy, pause, resume.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Stop handing out a queue's jobs (same as `wharf queue pause`).
    Pause(QueueArg),
    /// Hand out a paused queue's jobs again (same as `wharf queue resume`).
    Resume(QueueArg),
    /// List the workers connected in the last minute, or ask one to drain.
    Workers(WorkersArgs),
    /// List the autoscaled pools: backlog, desired and actual workers, last decision.
    Pools(ClientArgs),
    /// List the alarms: firing or ok per queue, value, since when, undelivered webhooks.
    Alarms(ClientArgs),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Measure a running server: enqueue, batch enqueue, end to end, pickup latency.
    Bench(bench::BenchArgs),
    /// Try a pool's autoscaling: replay an arrival trace in virtual time.
    #[command(subcommand)]
    Scale(scale::ScaleCommand),
}

/// `wharf workers [drain ID]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkersArgs {
    /// What to do; without one, list the workers.
    #[command(subcommand)]
    pub action: Option<WorkersAction>,
    /// How to reach the server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What `wharf workers` can do besides listing.
#[derive(Debug, Subcommand)]
pub enum WorkersAction {
    /// Ask a worker to drain: it leases nothing new and stops once its running jobs are done.
    Drain {
        /// The worker's id, as `wharf workers` lists it.
        id: String,
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
    },
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
    /// The API token, when the server needs one.
    #[arg(long, env = "WHARF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's, for an https:// server
    /// with a private certificate.
    #[arg(long, env = "WHARF_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The client these arguments describe.
    pub fn client(&self) -> Result<crate::client::Client, crate::client::ClientError> {
        let options = crate::client::ClientOptions { token: self.token.clone(), ca_file: self.ca_file.clone() };
        crate::client::Client::with_options(&self.server, &options)
    }
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
    /// PostgreSQL at this URL instead of the embedded store, e.g.
    /// postgres://wharf:secret@db:5432/wharf: any number of nodes may share it. Add
    /// ?sslmode=require for TLS (the certificate is verified).
    #[arg(long, env = "WHARF_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections each node keeps to PostgreSQL, besides one each for events, notifications
    /// and the leader lock [default: 16].
    #[arg(long, env = "WHARF_DATABASE_POOL_SIZE", requires = "database_url")]
    pub database_pool_size: Option<usize>,
    /// A PEM file of CA certificates to trust, besides the system's, for PostgreSQL over TLS
    /// (a cloud provider's bundle, say).
    #[arg(long, env = "WHARF_DATABASE_CA_FILE", requires = "database_url")]
    pub database_ca_file: Option<PathBuf>,
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
    /// Bytes of recent events kept for progress streams to replay [default: 67108864].
    #[arg(long, env = "WHARF_EVENT_BUFFER_BYTES")]
    pub event_buffer_bytes: Option<usize>,
    /// Most queues this server keeps [default: 1000].
    #[arg(long, env = "WHARF_MAX_QUEUES")]
    pub max_queues: Option<usize>,
    /// Most jobs per batch enqueue or acknowledgement [default: 10000].
    #[arg(long, env = "WHARF_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// How often to delete finished jobs past retention, e.g. 60s [default: 60s].
    #[arg(long, env = "WHARF_PRUNE_INTERVAL")]
    pub prune_interval: Option<String>,
    /// Longest time a client may take to send a request body, e.g. 30s [default: 30s].
    #[arg(long, env = "WHARF_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<String>,
    /// Longest time a client may take to send a request head (and an idle connection stays
    /// open), e.g. 30s [default: 30s].
    #[arg(long, env = "WHARF_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// Longest a client may leave an answer unread before its connection is closed, e.g. 30s
    /// [default: 30s].
    #[arg(long, env = "WHARF_WRITE_STALL_TIMEOUT")]
    pub write_stall_timeout: Option<String>,
    /// Most open connections [default: 10000].
    #[arg(long, env = "WHARF_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Log format: pretty or json [default: pretty].
    #[arg(long, env = "WHARF_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); reread on SIGHUP [default: plain HTTP].
    #[arg(long, env = "WHARF_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "WHARF_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A file holding the admin token (or set WHARF_ADMIN_TOKEN). With one, every call but
    /// /health, /ready and webhooks needs a token [default: none: no authentication, and only
    /// a loopback address may be listened on].
    #[arg(long, env = "WHARF_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address (anyone who can reach it may do
    /// anything).
    #[arg(long, env = "WHARF_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Requests per second a token may send unless it has its own rate; a batch counts its
    /// jobs [default: no limit].
    #[arg(long, env = "WHARF_TOKEN_RATE_LIMIT")]
    pub token_rate_limit: Option<f64>,
    /// A browser origin allowed to call the API from its pages, e.g. https://dash.example.com
    /// (repeatable, or comma-separated) [default: none, CORS off].
    #[arg(long = "cors-origin", env = "WHARF_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
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
    /// Only jobs with a failed attempt whose error contains this text (case-insensitive).
    #[arg(long)]
    pub error: Option<String>,
    /// Only jobs created at or after this time (RFC 3339).
    #[arg(long)]
    pub created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339).
    #[arg(long)]
    pub created_before: Option<String>,
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
    /// Only jobs whose errors contain this text (case-insensitive).
    #[arg(long)]
    pub error: Option<String>,
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

/// `wharf token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create(TokenCreateArgs),
    /// List tokens: ids, names, roles and queues.
    List(ClientArgs),
    /// Revoke a token at once.
    Revoke(TokenRevokeArgs),
}

/// `wharf token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// reader, producer, worker or admin.
    #[arg(long)]
    pub role: String,
    /// Queue patterns it may act on, e.g. 'pdf*' (repeatable, or comma-separated) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<String>,
    /// A name for people, e.g. the service that uses it.
    #[arg(long)]
    pub name: Option<String>,
    /// Requests per second it may send [default: the server's].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `wharf token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id.
    pub id: String,
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
    /// Delete a queue that holds no scheduled, ready, running or dead job.
    Delete(QueueArg),
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
    /// Most jobs waiting (ready or scheduled) before enqueues are refused, or `none`.
    #[arg(long)]
    pub max_ready: Option<String>,
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
        Command::Scale(command) => scale::run(command).map(|()| 0),
        Command::Enqueue(args) => commands::enqueue(args).await,
        Command::Job(args) => commands::job(args).await,
        Command::Jobs(args) => commands::jobs(args).await,
        Command::Queues(args) => commands::queues(args).await,
        Command::Workers(WorkersArgs { action: None, client }) => commands::workers(client).await,
        Command::Workers(WorkersArgs { action: Some(WorkersAction::Drain { id, client }), .. }) => {
            commands::worker_drain(client, &id).await
        }
        Command::Pools(args) => commands::pools(args).await,
        Command::Alarms(args) => commands::alarms(args).await,
        Command::Dead(args) => commands::dead(args).await,
        Command::Redrive(args) => commands::redrive(args).await,
        Command::Cancel(args) => commands::cancel(args).await,
        Command::Token(TokenCommand::Create(args)) => commands::token_create(args).await,
        Command::Token(TokenCommand::List(args)) => commands::token_list(args).await,
        Command::Token(TokenCommand::Revoke(args)) => commands::token_revoke(args).await,
        Command::Queue(QueueCommand::Show(args)) => commands::queue_show(args).await,
        Command::Queue(QueueCommand::Set(args)) => commands::queue_set(args).await,
        Command::Queue(QueueCommand::Delete(args)) => commands::queue_delete(args).await,
        Command::Queue(QueueCommand::Pause(args)) | Command::Pause(args) => commands::pause(args, true).await,
        Command::Queue(QueueCommand::Resume(args)) | Command::Resume(args) => commands::pause(args, false).await,
    }
}
