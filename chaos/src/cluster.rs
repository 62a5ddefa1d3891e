//! The processes under test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The handler every worker runs: it records the start and the end of every execution (with
/// the job, attempt, lease token, its own pid and its worker's pid, and a timestamp in ms),
/// works for a while so faults land mid-job (10–90 ms mostly, 2 s one time in ten, so some
/// outlast a drain's grace; `CHAOS_SLEEP` fixes it), and returns its attempt and token as the
/// result.
pub const HANDLER: &str = r#"#!/bin/sh
echo "start $WHARF_JOB_ID $WHARF_ATTEMPT $WHARF_LEASE_TOKEN $$ $PPID $(date +%s%3N)" >> "$CHAOS_EXECUTIONS"
if [ -n "$CHAOS_SLEEP" ]; then sleep "$CHAOS_SLEEP"
elif [ $(( $$ % 10 )) = 0 ]; then sleep 2
else sleep "0.0$(( $$ % 9 + 1 ))"; fi
wharf result "{\"attempt\": $WHARF_ATTEMPT, \"token\": \"$WHARF_LEASE_TOKEN\"}" || exit 1
echo "end $WHARF_JOB_ID $WHARF_ATTEMPT $WHARF_LEASE_TOKEN $$ $PPID $(date +%s%3N)" >> "$CHAOS_EXECUTIONS"
"#;

/// Milliseconds since the Unix epoch, as the handlers' `date +%s%3N` and the logs count.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Where a server keeps its jobs.
#[derive(Clone, Debug)]
pub enum Storage {
    /// The embedded store, in this directory.
    Embedded(PathBuf),
    /// A PostgreSQL database, which several servers (nodes) may share.
    Postgres(String),
}

/// One `wharf serve`.
#[derive(Debug)]
pub struct Server {
    wharf: PathBuf,
    dir: PathBuf,
    name: String,
    storage: Storage,
    env: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT`, the same across restarts.
    pub base: String,
    child: Option<Child>,
    starts: usize,
}

impl Server {
    /// Starts a server on a free port with its data in `dir/data`.
    pub async fn start(wharf: &Path, dir: &Path, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        Self::start_on(wharf, dir, "server", Storage::Embedded(dir.join("data")), env).await
    }

    /// Starts a server named `name` (its logs are `dir/NAME-N.log`) on a free port.
    pub async fn start_on(
        wharf: &Path,
        dir: &Path,
        name: &str,
        storage: Storage,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Server {
            wharf: wharf.to_owned(),
            dir: dir.to_owned(),
            name: name.to_owned(),
            storage,
            env,
            base: format!("http://127.0.0.1:{port}"),
            child: None,
            starts: 0,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("{}-{}.log", self.name, self.starts)))?;
        let mut command = Command::new(&self.wharf);
        command.arg("serve");
        match &self.storage {
            Storage::Embedded(data) => command.arg("--data-dir").arg(data),
            Storage::Postgres(url) => command.args(["--database-url", url]),
        };
        let child = command
            .args(["--listen", self.base.trim_start_matches("http://"), "--log-format", "json"])
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start wharf serve")?;
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(resp) = http.get(format!("{}/ready", self.base)).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("wharf serve ({}) exited with {status} at start; see {}", self.name, self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("wharf serve ({}) was not ready within 30 s", self.name)
    }

    /// SIGKILL, then a fresh start on the same data and port.
    pub async fn crash_and_restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.kill9().await;
        tokio::time::sleep(down_for).await;
        self.spawn().await
    }

    /// SIGKILL, then a fresh start on the same data and port with another environment.
    pub async fn crash_and_restart_with(&mut self, env: Vec<(String, String)>) -> anyhow::Result<()> {
        self.kill9().await;
        self.env = env;
        self.spawn().await
    }

    /// SIGKILL.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, and wait.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        }
    }
}

/// One `wharf worker`.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    /// Its process id, as the handlers see it in `$PPID`.
    pub pid: u32,
    /// Its log, JSON lines.
    pub log: PathBuf,
}

impl Worker {
    /// Starts a worker of queue `queue` running the recording handler, with extra environment
    /// for the handlers (`CHAOS_SLEEP`).
    pub fn start(
        wharf: &Path,
        dir: &Path,
        server: &str,
        queue: &str,
        concurrency: usize,
        n: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("worker-{n}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(wharf)
            .args(["worker", "--server", server, "--queue", queue, "--concurrency", &concurrency.to_string()])
            .args(["--exec", "exec ./handler.sh", "--grace", "1s", "--poll-wait", "1s", "--kill-grace", "200ms"])
            .args(["--worker-id", &format!("chaos-{n}"), "--log-format", "json"])
            .current_dir(dir)
            .env("CHAOS_EXECUTIONS", dir.join("executions.log"))
            .env("WHARF_LOG", "info")
            .envs(env.iter().map(|&(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start wharf worker")?;
        let pid = child.id().unwrap_or(0);
        Ok(Worker { child, pid, log })
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGKILL, and reap.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().and_then(Result::ok)
    }
}
