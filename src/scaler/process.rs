//! The `process` provider: a pool of local worker processes that `wharf serve` starts and
//! stops itself.
//!
//! Each process gets `WHARF_SERVER` (this server), `WHARF_WORKER_ID` (`POOL-NODE-N`, so its
//! lease requests map back to the process), `WHARF_PARENT_PID` (a `wharf worker` drains when
//! the server that started it is gone) and, when the server has them, `WHARF_TOKEN` and
//! `WHARF_CA_FILE`. Scale-in never signals a process: it asks idle workers to drain through the
//! store (their parked lease request ends with `drain: true`), and a worker that took a job in
//! the meantime finishes it before it exits. A `command` that never asks for work under its
//! `WHARF_WORKER_ID` (not a `wharf worker`) gets SIGTERM instead, ten seconds later. A process
//! that exits unasked is replaced on the next tick.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{Fleet, Provider};
use crate::store::{Store, WorkerInfo};

/// What every started process gets besides its id.
#[derive(Clone, Debug, Default)]
pub struct ProcessEnv {
    /// `WHARF_SERVER`: this server's URL.
    pub server: String,
    /// `WHARF_TOKEN`, when the server needs one.
    pub token: Option<crate::core::auth::Secret>,
    /// `WHARF_CA_FILE`, when the server serves HTTPS with its own certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// Tells this node's processes from another node's in worker ids.
    pub node: String,
}

/// One started process.
#[derive(Debug)]
struct Started {
    id: String,
    child: Child,
    /// Asked to drain: on its way out, no longer counted.
    draining: bool,
    /// When it was asked, and whether it has been sent SIGTERM since (see [`UNSEEN_DRAIN`]).
    drain_asked: Option<(tokio::time::Instant, bool)>,
}

/// How long a process asked to drain may stay out of the list of workers before it gets
/// SIGTERM instead: a `command` that is not `wharf worker`, or that leases under an id of its
/// own, never sees a drain asked through the store.
const UNSEEN_DRAIN: Duration = Duration::from_secs(10);

/// Local worker processes.
#[derive(Debug)]
pub struct Processes {
    pool: String,
    command: Vec<String>,
    env: ProcessEnv,
    store: Arc<dyn Store>,
    started: Vec<Started>,
    next: u64,
}

/// How long a stopping server lets its processes finish their jobs before it stops them.
pub const STOP_WAIT: Duration = Duration::from_secs(30);

impl Processes {
    /// A pool of `command` processes.
    pub fn new(pool: &str, command: Vec<String>, env: ProcessEnv, store: Arc<dyn Store>) -> Self {
        Processes { pool: pool.to_owned(), command, env, store, started: Vec::new(), next: 1 }
    }

    /// Forgets processes that exited; says which exited unasked.
    fn reap(&mut self) {
        let pool = &self.pool;
        self.started.retain_mut(|p| match p.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) if p.draining => {
                tracing::info!(pool = %pool, worker_id = %p.id, %status, "worker process drained and exited");
                false
            }
            Ok(Some(status)) => {
                tracing::warn!(pool = %pool, worker_id = %p.id, %status, "worker process exited unasked; starting another");
                false
            }
            Err(err) => {
                tracing::warn!(pool = %pool, worker_id = %p.id, error = %err, "cannot check a worker process");
                true
            }
        });
    }

    fn start_one(&mut self) -> std::io::Result<()> {
        let id = format!("{}-{}-{}", self.pool, self.env.node, self.next);
        self.next += 1;
        let mut command = Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env("WHARF_SERVER", &self.env.server)
            .env("WHARF_WORKER_ID", &id)
            .env("WHARF_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(false);
        if let Some(token) = &self.env.token {
            command.env("WHARF_TOKEN", token.expose_str());
        }
        if let Some(ca) = &self.env.ca_file {
            command.env("WHARF_CA_FILE", ca);
        }
        let child = command.spawn()?;
        tracing::info!(pool = %self.pool, worker_id = %id, pid = child.id(), "started a worker process");
        self.started.push(Started { id, child, draining: false, drain_asked: None });
        Ok(())
    }

    /// Asks `p`'s worker to drain.
    async fn drain(store: &dyn Store, pool: &str, p: &mut Started) {
        match store.worker_drain(p.id.clone(), true).await {
            Ok(()) => {
                p.draining = true;
                p.drain_asked = Some((tokio::time::Instant::now(), false));
                tracing::info!(pool = %pool, worker_id = %p.id, "asked an idle worker to drain");
            }
            Err(err) => tracing::warn!(pool = %pool, worker_id = %p.id, error = %err, "cannot ask a worker to drain"),
        }
    }

    /// Sends SIGTERM to processes asked to drain long ago that never appeared as workers.
    fn signal_unseen(&mut self, workers: &[WorkerInfo]) {
        for p in &mut self.started {
            let Some((asked, false)) = p.drain_asked else { continue };
            // Asking to drain lists a worker not seen yet; one that asked for work names queues.
            let asked_for_work = workers.iter().any(|w| w.id == p.id && !w.queues.is_empty());
            if asked.elapsed() < UNSEEN_DRAIN || asked_for_work {
                continue;
            }
            if let Some(pid) = p.child.id().and_then(|pid| i32::try_from(pid).ok()) {
                tracing::info!(pool = %self.pool, worker_id = %p.id, pid, "a process that never asked for work as this worker: stopping it with SIGTERM");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
            p.drain_asked = Some((asked, true));
        }
    }

    fn counts(&self) -> Fleet {
        let draining = self.started.iter().filter(|p| p.draining).count() as u32;
        Fleet { actual: self.started.len() as u32 - draining, draining }
    }
}

#[async_trait::async_trait]
impl Provider for Processes {
    async fn apply(&mut self, desired: u32, workers: &[WorkerInfo]) -> anyhow::Result<Fleet> {
        self.reap();
        self.signal_unseen(workers);
        let live = self.counts().actual;
        for _ in live..desired {
            if let Err(err) = self.start_one() {
                anyhow::bail!("cannot start {:?}: {err}", self.command[0]);
            }
        }
        if live > desired {
            // Idle first: a worker that holds no job, or has not asked for one yet.
            let running = |id: &str| workers.iter().find(|w| w.id == id).map_or(0, |w| w.running);
            let mut surplus = live - desired;
            let store = Arc::clone(&self.store);
            for p in self.started.iter_mut().rev() {
                if surplus == 0 {
                    break;
                }
                if !p.draining && running(&p.id) == 0 {
                    Self::drain(&*store, &self.pool, p).await;
                    surplus -= 1;
                }
            }
        }
        Ok(self.counts())
    }

    fn owns(&self, worker: &WorkerInfo) -> bool {
        self.started.iter().any(|p| p.id == worker.id)
    }

    async fn release(&mut self) {
        self.reap();
        let store = Arc::clone(&self.store);
        for p in self.started.iter_mut().filter(|p| !p.draining) {
            Self::drain(&*store, &self.pool, p).await;
        }
    }

    async fn stop(&mut self) {
        self.release().await;
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while !self.started.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.reap();
        }
        // Still running past the wait: a signal stops their jobs, which release their leases.
        for p in &mut self.started {
            tracing::warn!(pool = %self.pool, worker_id = %p.id, "worker process still running; stopping it");
            if let Some(pid) = p.child.id().and_then(|pid| i32::try_from(pid).ok()) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        for p in &mut self.started {
            if tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await.is_err() {
                let _ = p.child.start_kill();
            }
        }
        self.started.clear();
    }
}
