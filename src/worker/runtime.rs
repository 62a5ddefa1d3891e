//! The loop of a worker: lease, run, heartbeat, report, drain.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::handler::{Handler, JobContext, Outcome, StopReason};
use super::reporter::{Report, ReportKind, Reporter, retry};
use super::{WorkerConfig, health};
use crate::api::{HeartbeatRequest, LeaseRequest, LeasedJobView};
use crate::client::{Client, ClientError};

/// The two stages of a stop: `drain` on the first SIGTERM/SIGINT (lease nothing new, let
/// running jobs finish within the grace period), `now` on the second (stop them at once).
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Stop leasing; finish running jobs within the grace period.
    pub drain: CancellationToken,
    /// Stop running jobs now and release their leases.
    pub now: CancellationToken,
}

impl Shutdown {
    /// Listens for SIGTERM and SIGINT: the first drains, the second stops at once.
    pub fn on_signals() -> Self {
        let shutdown = Shutdown::default();
        let stages = shutdown.clone();
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("draining: leasing nothing new; a second signal stops running jobs now");
            stages.drain.cancel();
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping running jobs now");
            stages.now.cancel();
        });
        shutdown
    }
}

/// Where a worker is in its life; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// Leasing and running jobs.
    Running,
    /// Leasing nothing new; running jobs finish within the grace period.
    Draining,
    /// Stopping the jobs still running and releasing their leases.
    Stopping,
    /// Done.
    Stopped,
}

impl Phase {
    const ALL: [Phase; 4] = [Phase::Running, Phase::Draining, Phase::Stopping, Phase::Stopped];

    /// As the health endpoint names it.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }
}

/// The worker's state, for its health endpoint.
#[derive(Debug)]
pub(super) struct Status {
    /// A [`Phase`], as its discriminant.
    phase: AtomicU8,
    pub(super) running: AtomicUsize,
    /// Leases a stopping worker could not give back.
    unreleased: AtomicUsize,
    last_contact: Mutex<Option<Instant>>,
    server_reachable: std::sync::atomic::AtomicBool,
}

impl Status {
    fn new() -> Self {
        Status {
            phase: AtomicU8::new(Phase::Running as u8),
            running: AtomicUsize::new(0),
            unreleased: AtomicUsize::new(0),
            last_contact: Mutex::new(None),
            server_reachable: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    pub(super) fn phase(&self) -> Phase {
        let stored = self.phase.load(Ordering::Acquire);
        // Only `set` stores, and it stores a phase.
        Phase::ALL.into_iter().find(|p| *p as u8 == stored).unwrap_or(Phase::Stopped)
    }

    pub(super) fn contact(&self, reached: bool) {
        let was = self.server_reachable.swap(reached, Ordering::AcqRel);
        if reached {
            let first = self.last_contact.lock().unwrap_or_else(|p| p.into_inner()).replace(Instant::now()).is_none();
            if first {
                tracing::info!("connected to the server");
            } else if !was {
                tracing::info!("reached the server again");
            }
        }
    }

    pub(super) fn since_contact(&self) -> Option<Duration> {
        self.last_contact.lock().unwrap_or_else(|p| p.into_inner()).map(|at| at.elapsed())
    }
}

/// A worker: a configuration, a handler and a client of the server.
pub struct Worker {
    config: WorkerConfig,
    handler: Arc<dyn Handler>,
    client: Client,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker running `handler` for the queues of `config`.
    pub fn new(config: WorkerConfig, handler: impl Handler) -> Result<Self, ClientError> {
        let options = crate::client::ClientOptions {
            token: config.token.as_ref().map(|t| t.expose_str().to_owned()),
            ca_file: config.ca_file.clone(),
        };
        let client = Client::with_options(&config.server, &options)?;
        Ok(Worker { config, handler: Arc::new(handler), client })
    }

    /// Runs until `shutdown` (or the server asking it to drain) has drained or stopped
    /// every job.
    pub async fn run(self, shutdown: Shutdown) -> std::io::Result<()> {
        let Worker { config, handler, client } = self;
        let status = Arc::new(Status::new());
        let health = match config.health_addr {
            Some(addr) => Some(health::serve(addr, Arc::clone(&status), config.clone()).await?),
            None => None,
        };
        let contact = {
            let status = Arc::clone(&status);
            move |reached: bool| status.contact(reached)
        };
        let (reporter, reporter_task) = Reporter::start(client.clone(), contact.clone());
        let presence = super::presence::detect().await;
        tracing::info!(
            worker_id = %config.worker_id, server = %config.server, queues = ?config.queues,
            concurrency = config.concurrency, host = ?presence.host, task_arn = ?presence.task_arn, pod = ?presence.pod,
            "worker started"
        );
        let request = LeaseRequest {
            worker_id: config.worker_id.clone(),
            queues: config.queues.clone(),
            max: None,
            wait_ms: Some(config.poll_wait.as_millis() as i64),
            lease_ms: config.lease.map(|d| d.as_millis() as i64),
            host: presence.host,
            pid: Some(i64::from(std::process::id())),
            task_arn: presence.task_arn,
            pod: presence.pod,
            capacity: Some(config.concurrency.max(1) as i64),
        };
        let mut lease = Leasing {
            config: &config,
            handler,
            client: &client,
            reporter: reporter.clone(),
            status: Arc::clone(&status),
            stop_all: CancellationToken::new(),
            jobs: JoinSet::new(),
            protection: super::presence::TaskProtection::from_env(),
        };
        let asked = lease.run(request, &shutdown).await?;
        if !asked {
            // Shown as draining to the autoscaler and `wharf workers` until it is gone.
            let client = client.clone();
            let id = config.worker_id.clone();
            tokio::spawn(async move { tokio::time::timeout(STOP_WAIT, client.worker_drain(&id)).await });
        }
        lease.drain(asked, &shutdown).await;
        if let Some(protection) = &mut lease.protection {
            protection.set(false).await;
        }
        // The reporter ends once every handle is gone, after sending what it holds.
        drop(lease);
        drop(reporter);
        let _ = reporter_task.await;
        // Gone from the list of workers at once, not a minute later.
        let _ = tokio::time::timeout(STOP_WAIT, client.worker_leave(&config.worker_id)).await;
        status.set(Phase::Stopped);
        if let Some(health) = health {
            health.abort();
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// The running part of a worker: leases jobs into free slots and runs them.
struct Leasing<'a> {
    config: &'a WorkerConfig,
    handler: Arc<dyn Handler>,
    client: &'a Client,
    reporter: Reporter,
    status: Arc<Status>,
    /// Stops every running attempt (and releases its lease).
    stop_all: CancellationToken,
    jobs: JoinSet<()>,
    /// The ECS task's scale-in protection: on while any job runs.
    protection: Option<super::presence::TaskProtection>,
}

impl Leasing<'_> {
    /// Leases into free slots until a signal (false) or the server (true) says to drain.
    async fn run(&mut self, mut request: LeaseRequest, shutdown: &Shutdown) -> std::io::Result<bool> {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut rng = fastrand::Rng::new();
        let mut failed_tries = 0u32;
        loop {
            // Reap finished attempts so the set does not grow.
            while self.jobs.try_join_next().is_some() {}
            let first = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => permit.map_err(std::io::Error::other)?,
                () = shutdown.drain.cancelled() => return Ok(false),
            };
            let mut permits = vec![first];
            while let Ok(more) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(more);
            }
            if let Some(protection) = &mut self.protection
                && permits.len() == self.config.concurrency.max(1)
            {
                // Idle: a scale-in may stop this task.
                protection.set(false).await;
            }
            request.max = Some(permits.len() as i64);
            // Dropping the request on shutdown closes the connection; the server sees the
            // caller gone and hands any job it had just picked back out.
            let sent = tokio::time::Instant::now();
            let answer = tokio::select! {
                answer = self.client.lease(&request) => answer,
                () = shutdown.drain.cancelled() => return Ok(false),
            };
            match answer {
                Ok(answer) => {
                    self.status.contact(true);
                    failed_tries = 0;
                    if let Some(protection) = &mut self.protection
                        && !answer.jobs.is_empty()
                    {
                        // Protected before the first job starts, so a scale-in passes it by.
                        protection.set(true).await;
                    }
                    for job in answer.jobs {
                        let Some(permit) = permits.pop() else { break };
                        self.start(job, permit, sent);
                    }
                    if answer.drain {
                        tracing::info!("the server asked this worker to drain");
                        return Ok(true);
                    }
                }
                Err(ClientError::Api { status: code, problem }) if code < 500 => {
                    self.status.contact(true);
                    tracing::error!(code = %problem.code, detail = %problem.detail, "the server refused the lease request");
                    sleep_or(&shutdown.drain, Duration::from_secs(5)).await;
                }
                Err(err) => {
                    self.status.contact(false);
                    failed_tries = failed_tries.saturating_add(1);
                    let pause = super::reporter::RECONNECT.delay_ms(failed_tries, &mut rng);
                    tracing::warn!(error = %err, retry_in_ms = pause, "cannot reach the server; retrying");
                    sleep_or(&shutdown.drain, Duration::from_millis(pause)).await;
                }
            }
        }
    }

    /// Runs one leased job in the slot `permit` holds.
    fn start(&mut self, job: LeasedJobView, permit: tokio::sync::OwnedSemaphorePermit, sent: tokio::time::Instant) {
        let attempt = Attempt {
            handler: Arc::clone(&self.handler),
            client: self.client.clone(),
            reporter: self.reporter.clone(),
            config: self.config.clone(),
            status: Arc::clone(&self.status),
            stop_all: self.stop_all.clone(),
            sent,
        };
        let span =
            tracing::info_span!("job", job_id = %job.id, queue = %job.queue, kind = %job.kind, attempt = job.attempt);
        self.jobs.spawn(
            async move {
                attempt.run(job).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Lets running jobs finish: without a time limit when the server asked (`asked`), else
    /// within the grace period (which a signal during an asked drain starts too). Past it, or
    /// on a second signal, stops them and releases their leases.
    async fn drain(&mut self, asked: bool, shutdown: &Shutdown) {
        self.status.set(Phase::Draining);
        let running = self.status.running.load(Ordering::Acquire);
        tracing::info!(running, grace_ms = self.config.grace.as_millis() as u64, asked, "draining");
        let grace = async {
            if asked {
                shutdown.drain.cancelled().await;
            }
            tokio::time::sleep(self.config.grace).await;
        };
        let jobs = &mut self.jobs;
        let drained = async { while jobs.join_next().await.is_some() {} };
        tokio::pin!(drained);
        let finished = tokio::select! {
            () = &mut drained => true,
            () = grace => {
                tracing::warn!(running = self.status.running.load(Ordering::Acquire), "grace period over: stopping running jobs and releasing them");
                false
            }
            () = shutdown.now.cancelled() => false,
        };
        self.status.set(Phase::Stopping);
        self.stop_all.cancel();
        // Stopped handlers release their leases. Reports that go through land however long
        // they take; a server that cannot be reached gets a second, then the leases left
        // run out on the server instead.
        self.reporter.give_up_by(tokio::time::Instant::now() + STOP_WAIT);
        if !finished {
            drained.await;
        }
        let unreleased = self.status.unreleased.load(Ordering::Acquire);
        if unreleased > 0 {
            tracing::warn!(
                unreleased,
                "could not release every lease in time; the server hands those jobs out again when their leases run out"
            );
        }
    }
}

async fn sleep_or(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = stop.cancelled() => {}
    }
}

/// Everything one attempt needs.
struct Attempt {
    handler: Arc<dyn Handler>,
    client: Client,
    reporter: Reporter,
    config: WorkerConfig,
    status: Arc<Status>,
    stop_all: CancellationToken,
    /// When the lease request was sent: the lease's time counts from here.
    sent: tokio::time::Instant,
}

/// How long a stopping worker keeps trying to reach a server that does not answer.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// Least time between two heartbeats sent for progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

impl Attempt {
    async fn run(self, job: LeasedJobView) {
        // A lease that ran out before its attempt could start (this worker was paused, say)
        // belongs to nobody now: the server will hand the job out again, so running it here
        // would only duplicate the work.
        let now = tokio::time::Instant::now();
        let lease_left = lease_end(self.sent, job.lease_ms, &job.lease_expires_at, wall_now())
            .saturating_duration_since(now)
            .as_millis() as u64;
        if lease_left == 0 {
            tracing::warn!("the lease ran out before the attempt could start; leaving the job to its next lease");
            return;
        }
        self.status.running.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let (progress, progress_rx) = watch::channel(None);
        let ctx = JobContext {
            id: job.id.clone(),
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            payload: job.payload.clone(),
            metadata: job.metadata.clone(),
            timeout: job.timeout_ms.map(Duration::from_millis).or(self.config.default_timeout),
            lease_token: job.lease_token.clone(),
            server: self.config.server.clone(),
            progress,
            cancel: CancellationToken::new(),
            stop: Arc::new(Mutex::new(None)),
        };
        let (outcome, lease_until) = self.supervise(&ctx, progress_rx, now, lease_left).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let Some(report) = report_for(&ctx, outcome) {
            self.settle(report, lease_until, elapsed_ms).await;
        } else {
            tracing::warn!(elapsed_ms, "lease lost; the outcome is not reported");
        }
        self.status.running.fetch_sub(1, Ordering::AcqRel);
    }

    /// Runs the handler to its outcome while keeping the lease: heartbeats at a third of the
    /// lease (sooner to carry progress), the timeout, cancellation and shutdown. Returns the
    /// outcome and until when the lease is known to hold.
    async fn supervise(
        &self,
        ctx: &JobContext,
        mut progress_rx: watch::Receiver<Option<crate::api::Json>>,
        now: tokio::time::Instant,
        lease_left: u64,
    ) -> (Outcome, tokio::time::Instant) {
        // Heartbeat at a third of the lease, so two can be lost before it runs out.
        let beat_every = Duration::from_millis((lease_left / 3).clamp(50, 10_000));
        // Until when an outcome is worth reporting: past it the server has the job back.
        let mut lease_until = now + Duration::from_millis(lease_left);
        let run = self.handler.run(ctx.clone());
        tokio::pin!(run);
        let deadline = ctx.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut next_beat = tokio::time::Instant::now() + beat_every;
        let mut last_beat = tokio::time::Instant::now();
        let mut unsent_progress = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                () = tokio::time::sleep_until(next_beat) => {
                    let progress = unsent_progress.then(|| progress_rx.borrow_and_update().clone()).flatten();
                    unsent_progress = false;
                    if let Some(until) = self.beat(ctx, progress).await {
                        lease_until = until;
                    }
                    last_beat = tokio::time::Instant::now();
                    next_beat = last_beat + beat_every;
                }
                changed = progress_rx.changed(), if !unsent_progress => {
                    if changed.is_ok() {
                        unsent_progress = true;
                        next_beat = next_beat.min(last_beat + PROGRESS_EVERY);
                    }
                }
                () = sleep_until_opt(deadline), if !ctx.is_cancelled() => {
                    tracing::warn!(timeout_ms = ctx.timeout.map_or(0, |t| t.as_millis() as u64), "attempt timed out; stopping it");
                    ctx.stop_with(StopReason::TimedOut);
                }
                () = self.stop_all.cancelled(), if !ctx.is_cancelled() => ctx.stop_with(StopReason::Shutdown),
            }
        };
        // Progress reported just before the end still reaches watchers.
        if unsent_progress || progress_rx.has_changed().unwrap_or(false) {
            let progress = progress_rx.borrow_and_update().clone();
            if progress.is_some()
                && ctx.stop_reason() != Some(StopReason::LeaseLost)
                && let Some(until) = self.beat(ctx, progress).await
            {
                lease_until = until;
            }
        }
        (outcome, lease_until)
    }

    /// Sends `report` while the lease holds (until `lease_until`), and logs the outcome.
    async fn settle(&self, report: Report, lease_until: tokio::time::Instant, elapsed_ms: u64) {
        let kind = report.kind();
        // Why an attempt failed goes into its log line too, not only to the server.
        let error = match &report {
            Report::Fail { error, .. } => Some(error.clone()),
            _ => None,
        };
        let fallback = match &report {
            Report::Complete { id, lease_token, .. } => Some((id.clone(), lease_token.clone())),
            _ => None,
        };
        match self.reporter.send(report, lease_until).await {
            // `outcome` and `recorded` are for programs that read the log: the server
            // acknowledged this outcome, and the job is now in `state`.
            Ok(state) => match &error {
                Some(error) => tracing::info!(
                    elapsed_ms,
                    outcome = kind.code(),
                    recorded = true,
                    state = %state,
                    error = %error,
                    "attempt {kind}"
                ),
                None => {
                    tracing::info!(elapsed_ms, outcome = kind.code(), recorded = true, state = %state, "attempt {kind}")
                }
            },
            Err(refusal) if fallback.is_some() && refused_content(&refusal) => {
                // The server will not store this result (too large, say); the lease is
                // still ours, so fail the job for good with the reason rather than leave
                // it to a lease expiry. Retrying would produce the same result.
                let (id, lease_token) = fallback.unwrap_or_default();
                let error = format!("the result could not be stored: {}", refusal.detail);
                let failed = Report::Fail { id, lease_token, error, retryable: false, retry_in_ms: None };
                match self.reporter.send(failed, lease_until).await {
                    Ok(state) => {
                        tracing::warn!(elapsed_ms, state = %state, "result too large; attempt failed for good")
                    }
                    Err(why) => {
                        tracing::warn!(elapsed_ms, reason = %why, "result too large, and the failure was not recorded")
                    }
                }
            }
            Err(why) => {
                if kind == ReportKind::Released {
                    self.status.unreleased.fetch_add(1, Ordering::AcqRel);
                }
                tracing::warn!(
                    elapsed_ms,
                    outcome = kind.code(),
                    recorded = false,
                    reason = %why,
                    "attempt {kind}, but the server did not record it"
                )
            }
        }
    }

    /// Extends the lease, carrying `progress`; learns of cancellation and of a lost lease.
    /// Returns the lease's new end when the server extended it.
    async fn beat(&self, ctx: &JobContext, progress: Option<crate::api::Json>) -> Option<tokio::time::Instant> {
        let request = HeartbeatRequest { lease_token: ctx.lease_token.clone(), extend_ms: None, progress };
        let contact = |reached: bool| self.status.contact(reached);
        let sent = tokio::time::Instant::now();
        // One quick retry only: the next beat is a third of a lease away.
        let beat = tokio::time::timeout(
            Duration::from_secs(5),
            retry(&contact, None, None, || self.client.heartbeat(&ctx.id, &request)),
        );
        let answer = tokio::select! {
            answer = beat => answer,
            // A stopping worker does not hold its attempts up for a heartbeat.
            () = self.stop_all.cancelled() => return None,
        };
        match answer {
            Ok(Ok(beat)) => {
                if beat.cancel_requested {
                    tracing::info!("the job was canceled; stopping it");
                    ctx.stop_with(StopReason::Canceled);
                }
                Some(lease_end(sent, beat.lease_ms, &beat.lease_expires_at, wall_now()))
            }
            Ok(Err(why)) => {
                tracing::warn!(reason = %why, "heartbeat refused: the lease is gone; stopping the attempt");
                ctx.stop_with(StopReason::LeaseLost);
                None
            }
            Err(_) => {
                tracing::warn!("heartbeat timed out; will try again");
                None
            }
        }
    }
}

/// What to tell the server about an attempt that ended with `outcome`; `None` when its lease
/// was lost (the server has handed the job out again).
fn report_for(ctx: &JobContext, outcome: Outcome) -> Option<Report> {
    let (id, lease_token) = (ctx.id.clone(), ctx.lease_token.clone());
    match (ctx.stop_reason(), outcome) {
        (Some(StopReason::LeaseLost), _) => None,
        (_, Outcome::Done(result)) => Some(Report::Complete { id, lease_token, result }),
        (Some(StopReason::Shutdown), _) => Some(Report::Release { id, lease_token }),
        (Some(StopReason::Canceled), _) => Some(Report::Fail {
            id,
            lease_token,
            error: "canceled on request".into(),
            retryable: true,
            retry_in_ms: None,
        }),
        (Some(StopReason::TimedOut), outcome) => {
            let timeout = ctx.timeout.unwrap_or_default();
            let detail = match outcome {
                Outcome::Retry { error, .. } | Outcome::Fail(error) if !error.is_empty() => format!(": {error}"),
                _ => String::new(),
            };
            Some(Report::Fail {
                id,
                lease_token,
                error: format!("timed out after {}{detail}", humantime::format_duration(timeout)),
                retryable: true,
                retry_in_ms: None,
            })
        }
        (None, Outcome::Retry { error, after }) => Some(Report::Fail {
            id,
            lease_token,
            error,
            retryable: true,
            retry_in_ms: after.map(|d| d.as_millis() as u64),
        }),
        (None, Outcome::Fail(error)) => {
            Some(Report::Fail { id, lease_token, error, retryable: false, retry_in_ms: None })
        }
    }
}

/// When a lease ends on this worker's monotonic clock: `lease_ms` (from the server's receipt of
/// the request to the lease's end) after the request was `sent`. That errs early by the
/// request's trip, never late, and needs no wall clock: a host whose clock is off keeps its
/// leases, and an answer that waited in a paused worker's socket is seen to be stale. Only
/// from a server that does not send `lease_ms` is the expiry compared with this host's wall
/// clock `now` (30 s if unreadable).
fn lease_end(
    sent: tokio::time::Instant,
    lease_ms: Option<u64>,
    expires_at: &str,
    now: crate::core::Timestamp,
) -> tokio::time::Instant {
    let left = lease_ms.unwrap_or_else(|| {
        crate::core::Timestamp::parse_rfc3339(expires_at).map(|at| at.millis_since(now)).unwrap_or(30_000)
    });
    sent + Duration::from_millis(left)
}

fn wall_now() -> crate::core::Timestamp {
    crate::core::Clock::now(&crate::core::time::SystemClock)
}

/// True when the server refused a report for what it carried, not because the lease is gone.
fn refused_content(refusal: &super::reporter::Refusal) -> bool {
    matches!(
        refusal.code.as_deref(),
        Some("payload_too_large" | "body_too_large" | "invalid_request" | "invalid_value")
    )
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::{lease_end, report_for};
    use crate::core::Timestamp;
    use crate::worker::handler::{JobContext, Outcome, StopReason};
    use crate::worker::reporter::Report;

    fn ctx(stopped: Option<StopReason>) -> JobContext {
        JobContext {
            id: "j".into(),
            queue: "q".into(),
            kind: "k".into(),
            attempt: 1,
            max_attempts: 3,
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            metadata: Default::default(),
            timeout: Some(Duration::from_secs(2)),
            lease_token: "t".into(),
            server: "http://127.0.0.1:1".into(),
            progress: tokio::sync::watch::channel(None).0,
            cancel: CancellationToken::new(),
            stop: Arc::new(Mutex::new(stopped)),
        }
    }

    #[test]
    fn each_ending_of_an_attempt_gets_its_report() {
        let fail = || Outcome::Fail("boom".into());
        // A lost lease reports nothing: the job is someone else's now.
        assert!(report_for(&ctx(Some(StopReason::LeaseLost)), Outcome::Done(None)).is_none());
        // A handler that finished before a shutdown took effect completes; otherwise it releases.
        assert!(matches!(
            report_for(&ctx(Some(StopReason::Shutdown)), Outcome::Done(None)),
            Some(Report::Complete { .. })
        ));
        assert!(matches!(report_for(&ctx(Some(StopReason::Shutdown)), fail()), Some(Report::Release { .. })));
        let Some(Report::Fail { error, retryable: true, .. }) = report_for(&ctx(Some(StopReason::TimedOut)), fail())
        else {
            panic!("a timeout is a retryable failure");
        };
        assert_eq!(error, "timed out after 2s: boom");
        assert!(matches!(
            report_for(&ctx(Some(StopReason::Canceled)), fail()),
            Some(Report::Fail { retryable: true, .. })
        ));
        assert!(matches!(report_for(&ctx(None), fail()), Some(Report::Fail { retryable: false, .. })));
        let retry = Outcome::Retry { error: "busy".into(), after: Some(Duration::from_millis(1_500)) };
        assert!(matches!(
            report_for(&ctx(None), retry),
            Some(Report::Fail { retryable: true, retry_in_ms: Some(1_500), .. })
        ));
    }

    #[tokio::test]
    async fn a_lease_is_timed_by_this_host_whatever_its_wall_clock_says() {
        let sent = tokio::time::Instant::now();
        let expires_at = "2026-01-01T00:00:30Z";
        let server_now = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        // This host's clock runs ten minutes ahead of the server's: by its wall clock the
        // lease ran out long ago, but the server said 30 s were left from the request.
        let ahead = server_now.plus_millis(600_000);
        assert_eq!(lease_end(sent, Some(30_000), expires_at, ahead), sent + Duration::from_secs(30));
        // Without `lease_ms` (an older server) only the wall clocks can be compared.
        assert_eq!(lease_end(sent, None, expires_at, server_now), sent + Duration::from_secs(30));
        assert_eq!(lease_end(sent, None, expires_at, ahead), sent);
        assert_eq!(lease_end(sent, None, "not a time", ahead), sent + Duration::from_secs(30));
    }
}
