//! Runs a program per attempt: `wharf worker --exec 'python3 render.py'`.
//!
//! # The contract with the program
//!
//! - The command runs under `/bin/sh -c`, in a process group of its own, with the job's
//!   payload (JSON) on standard input.
//! - Its environment carries `WHARF_JOB_ID`, `WHARF_QUEUE`, `WHARF_KIND`, `WHARF_ATTEMPT`,
//!   `WHARF_MAX_ATTEMPTS`, `WHARF_SERVER`, `WHARF_LEASE_TOKEN`, `TRACEPARENT` (when the job's
//!   metadata has one), and `WHARF_SOCKET`, through which the helpers `wharf progress` and
//!   `wharf result` (on the `PATH` the program gets) reach this worker.
//! - Exit 0: success; the result is what `wharf result` last set, or none. Exit
//!   [`PERMANENT_FAILURE`] (100): the job fails for good (dead now). Any other exit, or death
//!   by a signal: the attempt failed and is retried. The tail of standard error becomes the
//!   error message.
//! - Every line the program writes goes to the worker's log with the job's id, queue and kind.
//! - Timeout or cancellation: the group gets SIGTERM, then SIGKILL after the kill grace. At
//!   shutdown, once the grace period is over, the group is killed at once. When the program
//!   exits, anything it left running in its group is killed too.
//! - If the worker itself is killed outright (SIGKILL, out of memory), the kernel kills its
//!   direct child, the shell. Write `exec ./handler.sh` (or `exec python3 …`) so the handler
//!   *is* that child; in a container the runtime kills everything anyway. The job's lease then
//!   expires and it is retried.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument as _;

use super::handler::{Handler, JobContext, Outcome, StopReason};
use crate::api::Json;

/// The exit code that fails a job for good.
pub const PERMANENT_FAILURE: i32 = 100;
/// Bytes of standard error kept for the error message.
const STDERR_TAIL: usize = 4_096;
/// Longest line logged; the rest of a longer line is dropped.
const MAX_LOG_LINE: usize = 4_096;
/// Largest message a helper may send (a result).
const MAX_HELPER_MESSAGE: u64 = 64 * 1024 * 1024;

/// The program handler.
#[derive(Debug)]
pub struct Exec {
    command: String,
    kill_grace: Duration,
    socket: PathBuf,
    jobs: Arc<Mutex<HashMap<String, Registered>>>,
    _dir: SocketDir,
    path_env: Option<std::ffi::OsString>,
}

#[derive(Debug)]
struct Registered {
    ctx: JobContext,
    result: Option<Json>,
}

/// The private directory of the helper socket, removed with the handler.
#[derive(Debug)]
struct SocketDir(PathBuf);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Exec {
    /// A handler running `command` under `sh -c`; starts the helper socket.
    pub fn new(command: &str, kill_grace: Duration) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("wharf-worker-{}-{:08x}", std::process::id(), fastrand::u32(..)));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("helper.sock");
        let listener = UnixListener::bind(&socket)?;
        let jobs: Arc<Mutex<HashMap<String, Registered>>> = Arc::default();
        tokio::spawn(accept(listener, Arc::clone(&jobs)));
        // Handlers find `wharf progress` and `wharf result` next to this worker's binary.
        let path_env = std::env::current_exe().ok().and_then(|exe| {
            let dir = exe.parent()?.to_owned();
            let mut paths = vec![dir];
            paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
            std::env::join_paths(paths).ok()
        });
        Ok(Exec { command: command.to_owned(), kill_grace, socket, jobs, _dir: SocketDir(dir), path_env })
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registered>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Handler for Exec {
    async fn run(&self, job: JobContext) -> Outcome {
        // By lease, not by job: after a pause, one worker may hold a stale lease and a fresh
        // one of the same job at once.
        self.jobs().insert(job.lease_token.clone(), Registered { ctx: job.clone(), result: None });
        let outcome = self.run_process(&job).await;
        let result = self.jobs().remove(&job.lease_token).and_then(|r| r.result);
        match outcome {
            Ok(Exit::Success) => Outcome::Done(result),
            Ok(Exit::Permanent(message)) => Outcome::Fail(message),
            Ok(Exit::Retry(message)) => Outcome::Retry { error: message, after: None },
            Err(err) => Outcome::Retry { error: format!("cannot run the handler: {err}"), after: None },
        }
    }
}

enum Exit {
    Success,
    Permanent(String),
    Retry(String),
}

impl Exec {
    async fn run_process(&self, job: &JobContext) -> std::io::Result<Exit> {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&self.command)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("WHARF_JOB_ID", &job.id)
            .env("WHARF_QUEUE", &job.queue)
            .env("WHARF_KIND", &job.kind)
            .env("WHARF_ATTEMPT", job.attempt.to_string())
            .env("WHARF_MAX_ATTEMPTS", job.max_attempts.to_string())
            .env("WHARF_SERVER", &job.server)
            .env("WHARF_LEASE_TOKEN", &job.lease_token)
            .env("WHARF_SOCKET", &self.socket)
            // The handler reports through the worker, not the API: it needs no token.
            .env_remove("WHARF_TOKEN")
            .env_remove("WHARF_ADMIN_TOKEN");
        if let Some(path) = &self.path_env {
            command.env("PATH", path);
        }
        if let Some(traceparent) = job.metadata.get("traceparent") {
            command.env("TRACEPARENT", traceparent);
        }
        // If this worker dies without stopping its handlers (SIGKILL, OOM), the kernel kills
        // the handler's shell too, instead of leaving it running unsupervised.
        #[cfg(target_os = "linux")]
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec; it only calls prctl(2),
        // which is async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let mut child = command.spawn()?;
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        if let Some(mut stdin) = child.stdin.take() {
            let payload = job.payload.get().as_bytes().to_vec();
            // A handler that never reads its input must not block: write in the background,
            // and a closed pipe is not an error.
            tokio::spawn(async move {
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            });
        }
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        // The readers log inside the job's span, so every line carries its id, queue and kind.
        let span = tracing::Span::current();
        let stdout =
            child.stdout.take().map(|out| tokio::spawn(log_lines(out, "stdout", None).instrument(span.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(log_lines(err, "stderr", Some(Arc::clone(&tail))).instrument(span)));

        let status = tokio::select! {
            status = child.wait() => status?,
            () = job.cancelled() => {
                let immediately = job.stop_reason() == Some(StopReason::Shutdown);
                stop_group(&mut child, group, if immediately { Duration::ZERO } else { self.kill_grace }).await?
            }
        };
        // Whatever the program left running in its group goes with it; that also closes the
        // pipes those processes held, so the log readers reach the end.
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        for reader in [stdout, stderr].into_iter().flatten() {
            if tokio::time::timeout(Duration::from_secs(2), reader).await.is_err() {
                tracing::warn!("a process outside the handler's group still holds its output open");
            }
        }
        let tail = {
            let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            let bytes: Vec<u8> = tail.iter().copied().collect();
            String::from_utf8_lossy(&bytes).trim().to_owned()
        };
        let with_tail = |what: String| if tail.is_empty() { what } else { format!("{what}: {tail}") };
        Ok(match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(0), _) => Exit::Success,
            (Some(PERMANENT_FAILURE), _) => Exit::Permanent(with_tail(format!("exit code {PERMANENT_FAILURE}"))),
            (Some(code), _) => Exit::Retry(with_tail(format!("exit code {code}"))),
            (None, Some(signal)) => {
                let name =
                    Signal::try_from(signal).map(|s| s.as_str().to_owned()).unwrap_or_else(|_| signal.to_string());
                Exit::Retry(with_tail(format!("killed by {name}")))
            }
            (None, None) => Exit::Retry(with_tail("ended without an exit code".to_owned())),
        })
    }
}

/// SIGTERM to the group, then SIGKILL after `grace` (at once when `grace` is zero).
async fn stop_group(
    child: &mut tokio::process::Child,
    group: Option<Pid>,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let Some(group) = group else { return child.wait().await };
    if !grace.is_zero() {
        let _ = killpg(group, Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return status;
        }
        tracing::warn!(grace_ms = grace.as_millis() as u64, "the handler ignored SIGTERM; killing it");
    }
    let _ = killpg(group, Signal::SIGKILL);
    child.wait().await
}

/// Logs each line of `stream` with the job's span; keeps the last bytes in `tail` if given.
async fn log_lines(stream: impl AsyncRead + Unpin, name: &'static str, tail: Option<Arc<Mutex<VecDeque<u8>>>>) {
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // Read one line, keeping at most MAX_LOG_LINE bytes of it.
        let mut truncated = false;
        loop {
            let chunk = match reader.fill_buf().await {
                Ok([]) => break,
                Ok(chunk) => chunk,
                Err(_) => return,
            };
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (chunk.len(), false),
            };
            let room = MAX_LOG_LINE.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..take.min(room)]);
            truncated |= take > room;
            if let Some(tail) = &tail {
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                for &b in &chunk[..take] {
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(b);
                }
            }
            reader.consume(take);
            if done {
                break;
            }
        }
        if line.is_empty() && !truncated {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if truncated {
            tracing::info!(stream = name, truncated = true, "{text}");
        } else {
            tracing::info!(stream = name, "{text}");
        }
    }
}

/// What `wharf progress` and `wharf result` send over the socket, one JSON line.
#[derive(Debug, Serialize, Deserialize)]
pub struct HelperMessage {
    /// The job (`WHARF_JOB_ID`).
    pub job_id: String,
    /// The lease (`WHARF_LEASE_TOKEN`).
    pub lease_token: String,
    /// `progress` or `result`.
    pub op: String,
    /// The value, JSON.
    pub value: Json,
}

/// The worker's answer, one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct HelperAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn accept(listener: UnixListener, jobs: Arc<Mutex<HashMap<String, Registered>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let jobs = Arc::clone(&jobs);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let answer = match BufReader::new(read.take(MAX_HELPER_MESSAGE)).read_line(&mut line).await {
                Ok(_) => handle(&jobs, &line),
                Err(err) => Err(format!("unreadable message: {err}")),
            };
            let answer = HelperAnswer { error: answer.err() };
            let mut text = serde_json::to_string(&answer).unwrap_or_default();
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
}

fn handle(jobs: &Mutex<HashMap<String, Registered>>, line: &str) -> Result<(), String> {
    let message: HelperMessage = serde_json::from_str(line).map_err(|e| format!("malformed message: {e}"))?;
    let mut jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
    let job = jobs
        .get_mut(&message.lease_token)
        .filter(|job| job.ctx.id == message.job_id)
        .ok_or_else(|| format!("job {} is not running on this worker under this lease", message.job_id))?;
    match message.op.as_str() {
        "progress" => {
            job.ctx.progress_raw(message.value);
            Ok(())
        }
        "result" => {
            job.result = Some(message.value);
            Ok(())
        }
        other => Err(format!("unknown operation {other:?}")),
    }
}

/// Sends `value` as the current job's progress or result to the worker that runs it; used by
/// `wharf progress` and `wharf result` inside a handler.
pub async fn tell_worker(op: &str, value: Json) -> Result<(), String> {
    let socket =
        std::env::var_os("WHARF_SOCKET").ok_or("not running inside a wharf worker (WHARF_SOCKET is not set)")?;
    let job_id = std::env::var("WHARF_JOB_ID").map_err(|_| "WHARF_JOB_ID is not set")?;
    let lease_token = std::env::var("WHARF_LEASE_TOKEN").map_err(|_| "WHARF_LEASE_TOKEN is not set")?;
    let mut stream = UnixStream::connect(Path::new(&socket))
        .await
        .map_err(|e| format!("cannot reach the worker at {}: {e}", Path::new(&socket).display()))?;
    let mut text = serde_json::to_string(&HelperMessage { job_id, lease_token, op: op.to_owned(), value })
        .map_err(|e| e.to_string())?;
    text.push('\n');
    stream.write_all(text.as_bytes()).await.map_err(|e| format!("cannot talk to the worker: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).await.map_err(|e| format!("no answer from the worker: {e}"))?;
    let answer: HelperAnswer =
        serde_json::from_str(&answer).map_err(|e| format!("unreadable answer from the worker: {e}"))?;
    match answer.error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Parses a helper's value argument: JSON, `@FILE`, or `-` for standard input.
pub fn read_value(arg: &str) -> Result<Json, String> {
    let text = match arg {
        "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            text
        }
        _ => match arg.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?,
            None => arg.to_owned(),
        },
    };
    RawValue::from_string(text.trim().to_owned()).map_err(|e| format!("not valid JSON: {e}"))
}
