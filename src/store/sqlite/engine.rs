//! The writer thread: one SQLite connection, the in-memory view, and group commit.
//!
//! # Overview
//!
//! Every operation arrives as a [`Command`] on a channel. The thread takes whatever commands are
//! waiting (up to [`MAX_BATCH`]), applies them all in one transaction, runs maintenance that is
//! due (promote scheduled jobs, expire leases), hands newly ready jobs to parked long-poll
//! leases, commits — one fsync for the whole batch — and only then answers. Under load a batch
//! holds hundreds of operations, so durability costs one fsync per batch, not per job; no answer
//! ever leaves before its change is on disk.
//!
//! # State model
//!
//! The database is authoritative. [`Memory`] is an index over it that changes in step with the
//! rows inside the same transaction. If a transaction fails (disk full, I/O error), it is rolled
//! back, the memory is rebuilt from the database, and every operation in the batch gets the
//! error: nothing half-applied survives. The same happens when the two are found to disagree.
//!
//! # Transitions and fencing
//!
//! The writer decides nothing about a job's lifecycle. Every state change is a
//! [`Transition`] from `core::state` (`lease`, `complete`, `fail`, `release`, `promote`,
//! `cancel_now`, `redrive_now`), and `Engine::apply_transition` is the one place that writes
//! one: it refuses a transition that does not leave the state the row is in, binds the new
//! state, attempt count and version as values (the SQL does no arithmetic), moves the queue's
//! counts and counters, and records the event. Fencing is checked twice: in memory against the
//! lease the writer holds, then by the database, since every update of a leased job matches the
//! token the caller presented, sequence and secret. An update meant for one row that changes
//! another number means memory and database disagree: the transaction is rolled back, memory is
//! rebuilt, and every operation in it gets [`StoreError::Inconsistent`], logged at error level.
//!
//! # Timing
//!
//! The thread sleeps until the next command or the next deadline: the earliest scheduled job,
//! lease expiry, long-poll timeout or rate-limit refill. Deadlines of the job lifecycle follow
//! the injected [`Clock`]; long-poll timeouts follow the real monotonic clock, since a client
//! waits in real time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::memory::{Lease, Memory, QueueMem, ReadyKey};
use super::{rows, sql};
use crate::core::state::{self, AfterFailure, CancelEffect, FailedAttempt, LEASE_EXPIRED_MESSAGE, Reason, Transition};
use crate::core::{
    Clock, IdGenerator, Job, JobId, JobState, LeaseToken, NewJob, QueueName, QueuePolicy, QueuePolicyPatch, Timestamp,
};
use crate::events::{EventBus, EventKind, JobEvent};
use crate::failpoint::FailPoint;
use crate::metrics::{MetricsSnapshot, QueueMetrics};
use crate::store::{
    Acked, Canceled, DeadRedriveParams, Heartbeat, Inserted, JobAckParams, JobCompleteParams, JobFailParams,
    JobLeaseParams, JobListParams, JobPage, JobReleaseParams, JobSummary, LeaseHeartbeatParams, LeasedJob, QueueInfo,
    Settled, StoreError, StoreResult, TokenRecord, WorkerInfo,
};
use crate::store::{AlarmRecord, MAX_ALARMS};

/// Most commands applied in one transaction.
const MAX_BATCH: usize = 1_024;
/// Most scheduled jobs promoted, or leases expired, per transaction; the rest follow at once in
/// the next one, so a backlog of due work never stalls answers for long.
const MAX_MAINTENANCE: usize = 5_000;
type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One operation for the writer thread.
pub(super) enum Command {
    Insert { jobs: Vec<NewJob>, reply: Reply<Vec<Inserted>> },
    Get { id: JobId, reply: Reply<Job> },
    List { params: JobListParams, reply: Reply<JobPage> },
    Lease { params: JobLeaseParams, deadline: Instant, reply: Reply<Vec<LeasedJob>> },
    Heartbeat { params: LeaseHeartbeatParams, reply: Reply<Heartbeat> },
    Complete { params: JobCompleteParams, reply: Reply<Settled> },
    Fail { params: JobFailParams, reply: Reply<Settled> },
    Release { params: JobReleaseParams, reply: Reply<Settled> },
    Ack { params: JobAckParams, reply: Reply<Acked> },
    Cancel { id: JobId, reply: Reply<Canceled> },
    QueueList { reply: Reply<Vec<QueueInfo>> },
    QueueGet { name: QueueName, reply: Reply<QueueInfo> },
    QueueUpsert { name: QueueName, patch: QueuePolicyPatch, reply: Reply<QueueInfo> },
    QueueDelete { name: QueueName, reply: Reply<()> },
    TokenInsert { token: TokenRecord, reply: Reply<()> },
    TokenList { reply: Reply<Vec<TokenRecord>> },
    TokenDelete { id: String, reply: Reply<bool> },
    AlarmRulePut { name: String, rule: String, at: Timestamp, reply: Reply<bool> },
    AlarmDelete { name: String, reply: Reply<bool> },
    AlarmStatePut { name: String, state: String, at: Timestamp, reply: Reply<()> },
    AlarmList { reply: Reply<Vec<AlarmRecord>> },
    Redrive { params: DeadRedriveParams, reply: Reply<Vec<JobId>> },
    Prune { limit: u32, reply: Reply<u64> },
    Maintain { reply: Reply<()> },
    Metrics { reply: Reply<MetricsSnapshot> },
    Workers { reply: Reply<Vec<WorkerInfo>> },
    WorkerDrain { id: String, even_unseen: bool, reply: Reply<()> },
    WorkerLeave { id: String, reply: Reply<bool> },
    Ping { reply: Reply<()> },
    Shutdown { reply: Reply<()> },
}

impl Command {
    /// Answers with `err` without applying.
    fn reject(self, err: StoreError) {
        // A send error only means the caller stopped waiting.
        match self {
            Command::Insert { reply, .. } => drop(reply.send(Err(err))),
            Command::Get { reply, .. } => drop(reply.send(Err(err))),
            Command::List { reply, .. } => drop(reply.send(Err(err))),
            Command::Lease { reply, .. } => drop(reply.send(Err(err))),
            Command::Heartbeat { reply, .. } => drop(reply.send(Err(err))),
            Command::Complete { reply, .. } => drop(reply.send(Err(err))),
            Command::Fail { reply, .. } => drop(reply.send(Err(err))),
            Command::Release { reply, .. } => drop(reply.send(Err(err))),
            Command::Ack { reply, .. } => drop(reply.send(Err(err))),
            Command::Cancel { reply, .. } => drop(reply.send(Err(err))),
            Command::QueueList { reply } => drop(reply.send(Err(err))),
            Command::QueueGet { reply, .. } => drop(reply.send(Err(err))),
            Command::QueueUpsert { reply, .. } => drop(reply.send(Err(err))),
            Command::QueueDelete { reply, .. } => drop(reply.send(Err(err))),
            Command::TokenInsert { reply, .. } => drop(reply.send(Err(err))),
            Command::TokenList { reply } => drop(reply.send(Err(err))),
            Command::TokenDelete { reply, .. } => drop(reply.send(Err(err))),
            Command::AlarmRulePut { reply, .. } | Command::AlarmDelete { reply, .. } => drop(reply.send(Err(err))),
            Command::AlarmStatePut { reply, .. } => drop(reply.send(Err(err))),
            Command::AlarmList { reply } => drop(reply.send(Err(err))),
            Command::Redrive { reply, .. } => drop(reply.send(Err(err))),
            Command::Prune { reply, .. } => drop(reply.send(Err(err))),
            Command::Maintain { reply } => drop(reply.send(Err(err))),
            Command::Metrics { reply } => drop(reply.send(Err(err))),
            Command::Workers { reply } => drop(reply.send(Err(err))),
            Command::WorkerDrain { reply, .. } => drop(reply.send(Err(err))),
            Command::WorkerLeave { reply, .. } => drop(reply.send(Err(err))),
            Command::Ping { reply } => drop(reply.send(Err(err))),
            Command::Shutdown { reply } => drop(reply.send(Err(err))),
        }
    }
}

/// An answer held back until the transaction commits.
enum Pending {
    /// Delivers the result, or the commit's error instead.
    Answer(Box<dyn FnOnce(Option<StoreError>) + Send>),
    /// Leased jobs: if the caller has gone, the leases are released again.
    Leased { reply: Reply<Vec<LeasedJob>>, jobs: Vec<LeasedJob> },
}

/// A lease request waiting for work.
struct Waiter {
    params: JobLeaseParams,
    deadline: Instant,
    reply: Reply<Vec<LeasedJob>>,
}

/// Everything one transaction produces besides row changes.
struct Batch {
    now: Timestamp,
    answers: Vec<Pending>,
    events: Vec<JobEvent>,
    /// Something happened that may let a parked lease proceed.
    maybe_ready: bool,
}

impl Batch {
    fn answer<T: Send + 'static>(&mut self, reply: Reply<T>, result: StoreResult<T>) {
        self.answers.push(Pending::Answer(Box::new(move |failure| {
            let _ = reply.send(match failure {
                Some(err) => Err(err),
                None => result,
            });
        })));
    }

    /// Queues the answer to an operation; if the operation abandons the transaction, its reply
    /// waits for the transaction's error like every other in it.
    fn settle<T: Send + 'static, E: Into<Abort>>(
        &mut self,
        reply: Reply<T>,
        outcome: Result<StoreResult<T>, E>,
    ) -> Tx<()> {
        match outcome {
            Ok(result) => {
                self.answer(reply, result);
                Ok(())
            }
            Err(abort) => {
                // Never sent: a rolled-back transaction answers everyone with its own error.
                self.answer(reply, Err(StoreError::Unavailable("rolled back".into())));
                Err(abort.into())
            }
        }
    }

    fn event(
        &mut self,
        queue: &QueueMem,
        id: i64,
        version: i64,
        kind: EventKind,
        state: JobState,
        attempt: u32,
    ) -> &mut JobEvent {
        self.events.push(JobEvent {
            seq: 0,
            job_id: JobId::from_raw(id),
            queue: Arc::clone(&queue.shared_name),
            version: version.max(0) as u64,
            kind,
            state,
            attempt,
            at: self.now,
            data: None,
            error: None,
            run_at: None,
            superseded: false,
        });
        // Just pushed, so the vector is not empty.
        let last = self.events.len() - 1;
        &mut self.events[last]
    }
}

/// Maps a database error to what callers are told.
pub(super) fn store_error(err: &rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full,
        _ => StoreError::Unavailable(err.to_string()),
    }
}

/// Why a transaction is abandoned: it is rolled back, memory is rebuilt from the database, and
/// every operation in it is answered with the error.
#[derive(Debug)]
enum Abort {
    /// SQLite failed: I/O, a full disk.
    Sql(rusqlite::Error),
    /// Memory and the database disagree, or the writer asked for a change the row cannot take.
    Inconsistent(String),
}

impl From<rusqlite::Error> for Abort {
    fn from(err: rusqlite::Error) -> Self {
        Abort::Sql(err)
    }
}

impl Abort {
    /// An inconsistency about job `id`.
    fn inconsistent(id: i64, what: impl std::fmt::Display) -> Self {
        Abort::Inconsistent(format!("job {}: {what}", JobId::from_raw(id)))
    }

    /// What callers are told.
    fn store_error(&self) -> StoreError {
        match self {
            Abort::Sql(err) => store_error(err),
            Abort::Inconsistent(what) => StoreError::Inconsistent(what.clone()),
        }
    }
}

/// A step of a transaction: an `Err` abandons the whole transaction.
type Tx<T> = Result<T, Abort>;

/// An update meant for exactly one row. Any other count means the row is not in the state, or
/// not under the lease, that memory holds: memory and database disagree.
fn expect_one(changed: usize, id: i64, what: impl std::fmt::Display) -> Tx<()> {
    if changed == 1 {
        Ok(())
    } else {
        Err(Abort::inconsistent(id, format_args!("{what} changed {changed} rows, not 1")))
    }
}

/// A job row as the writer knows it just before a transition: from memory (a lease, the ready or
/// scheduled index) or read in the same transaction.
#[derive(Clone, Copy, Debug)]
struct RowNow {
    id: i64,
    /// Its queue's index in memory.
    queue: usize,
    state: JobState,
    attempt: u32,
    version: i64,
}

impl RowNow {
    /// A running job, as its lease in memory has it.
    fn leased(id: JobId, lease: &Lease) -> Self {
        RowNow {
            id: id.raw(),
            queue: lease.queue,
            state: JobState::Running,
            attempt: lease.attempt,
            version: lease.version,
        }
    }
}

/// What a transition writes besides the state, attempt count, version and finish time: one kind
/// per statement, each for the reasons it fits.
enum RowChange<'a> {
    /// A lease starts: its token, expiry, duration and worker (`JOB_LEASE`).
    Lease { token: LeaseToken, expires_at: Timestamp, lease_ms: u64, worker: &'a str },
    /// An attempt succeeded with this result (`JOB_COMPLETE`).
    Complete { result: Option<String> },
    /// An attempt failed, by report or expiry: its message, and when it runs again if it does
    /// (`JOB_FAIL`).
    Fail { error: String, run_at: Option<Timestamp> },
    /// A lease is given back (`JOB_RELEASE`).
    Release,
    /// A scheduled job's time came (`JOB_STATE_SET`).
    Promote,
    /// A waiting job is canceled (`JOB_STATE_SET`).
    Cancel,
    /// A dead job goes back to ready now (`DEAD_REDRIVE`).
    Redrive,
}

impl RowChange<'_> {
    /// The statement that writes this change for a transition of `reason`; `None` if the two do
    /// not belong together.
    fn statement(&self, reason: Reason) -> Option<&'static str> {
        match (self, reason) {
            (RowChange::Lease { .. }, Reason::Leased) => Some(sql::JOB_LEASE),
            (RowChange::Complete { .. }, Reason::Completed) => Some(sql::JOB_COMPLETE),
            (RowChange::Fail { .. }, Reason::Failed | Reason::LeaseExpired) => Some(sql::JOB_FAIL),
            (RowChange::Release, Reason::Released) => Some(sql::JOB_RELEASE),
            (RowChange::Promote, Reason::Promoted) | (RowChange::Cancel, Reason::Canceled) => Some(sql::JOB_STATE_SET),
            (RowChange::Redrive, Reason::Redriven) => Some(sql::DEAD_REDRIVE),
            _ => None,
        }
    }
}

/// What a transition left the row with.
#[derive(Clone, Copy, Debug)]
struct Applied {
    attempt: u32,
    version: i64,
}

/// A lease that passed the fencing check in memory, and the token the row must hold too.
struct Fenced {
    lease: Lease,
    /// The token the caller presented.
    token: LeaseToken,
}

/// A failed attempt, as reported or as an expired lease makes it.
struct Failure {
    error: String,
    retryable: bool,
    retry_in_ms: Option<u64>,
    /// `Failed` or `LeaseExpired`.
    reason: Reason,
}

/// Most tokens a store keeps.
const MAX_TOKENS: i64 = 10_000;

/// The writer thread's state.
pub(super) struct Engine {
    conn: Connection,
    checkpointer: Checkpointer,
    /// The data dir's lock, released when the thread ends.
    _lock: std::fs::File,
    mem: Memory,
    ids: IdGenerator,
    /// Draws the secret of every lease token: a ChaCha generator seeded from the OS, cheap
    /// enough for the lease path and unpredictable to anyone who sees tokens.
    secrets: rand::rngs::StdRng,
    clock: Arc<dyn Clock>,
    rng: fastrand::Rng,
    events: Arc<EventBus>,
    waiters: Vec<Waiter>,
    /// Leases whose caller went away before the answer: released in the next transaction.
    orphans: Vec<(JobId, LeaseToken)>,
    /// Set on shutdown: lease requests answer at once instead of parking.
    stop_waiting: bool,
    /// Ids up to this one are reserved in the database.
    id_reserved: i64,
    /// Transactions, operations and commit times, for `/metrics`.
    stats: crate::metrics::StoreMetrics,
    /// Most queues (see `SqliteConfig::max_queues`).
    max_queues: usize,
}

impl Engine {
    pub(super) fn new(
        conn: Connection,
        checkpointer: Checkpointer,
        lock: std::fs::File,
        clock: Arc<dyn Clock>,
        events: Arc<EventBus>,
        max_queues: usize,
    ) -> rusqlite::Result<Self> {
        let (mem, reserved) = load(&conn)?;
        Ok(Engine {
            conn,
            checkpointer,
            _lock: lock,
            mem,
            ids: IdGenerator::resume_after(reserved),
            secrets: rand::SeedableRng::from_os_rng(),
            id_reserved: reserved,
            clock,
            rng: fastrand::Rng::new(),
            events,
            waiters: Vec::new(),
            orphans: Vec::new(),
            stop_waiting: false,
            stats: crate::metrics::StoreMetrics::default(),
            max_queues,
        })
    }

    /// Runs until shut down or until every handle is dropped.
    pub(super) fn run(mut self, rx: Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut shutdown: Option<Reply<()>> = None;
        loop {
            if self.orphans.is_empty() {
                let first = match self.sleep_for() {
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(wait) => rx.recv_timeout(wait),
                };
                match first {
                    Ok(cmd) => batch.push(cmd),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if let Some(pos) = batch.iter().position(|c| matches!(c, Command::Shutdown { .. })) {
                // Apply what came before the shutdown; what follows it is refused.
                for late in batch.drain(pos + 1..) {
                    late.reject(StoreError::Unavailable("the store is shutting down".into()));
                }
                if let Some(Command::Shutdown { reply }) = batch.pop() {
                    shutdown = Some(reply);
                }
                self.stop_waiting = true;
            }
            self.process(&mut batch);
            if self.checkpointer.behind() {
                // Rare: bounded stall instead of an unbounded log.
                match self.conn.execute_batch("PRAGMA wal_checkpoint(RESTART)") {
                    Ok(()) => self.checkpointer.caught_up(),
                    Err(err) => tracing::warn!(error = %err, "writer checkpoint failed"),
                }
            }
            if let Some(reply) = shutdown {
                while let Ok(late) = rx.try_recv() {
                    late.reject(StoreError::Unavailable("the store is shutting down".into()));
                }
                self.checkpointer.stop();
                if let Err(err) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;") {
                    tracing::warn!(error = %err, "final checkpoint failed; the log is replayed at next start");
                }
                let _ = reply.send(Ok(()));
                return;
            }
        }
    }

    /// How long to sleep before something is due; `None` when nothing is.
    fn sleep_for(&self) -> Option<Duration> {
        let now = self.clock.now();
        let logical = self.mem.next_due(now).map(|due| Duration::from_millis(due.millis_since(now)));
        let real_now = Instant::now();
        let waiter = self.waiters.iter().map(|w| w.deadline.saturating_duration_since(real_now)).min();
        match (logical, waiter) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn process(&mut self, batch: &mut Vec<Command>) {
        let mut cx = Batch { now: self.clock.now(), answers: Vec::new(), events: Vec::new(), maybe_ready: false };
        // Counters describe committed work only: restored if the transaction fails.
        let counters: Vec<_> =
            self.mem.queues.iter().map(|q| (Arc::clone(&q.shared_name), q.counters.clone())).collect();
        let operations = batch.len() as u64;
        // Every job with an id up to here was committed by an earlier transaction.
        let durable_ids = self.ids.last();
        let mut commit_started = None;
        let mut commands = batch.drain(..);
        let outcome = (|| -> Tx<()> {
            self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            for cmd in commands.by_ref() {
                self.apply(cmd, &mut cx)?;
            }
            self.release_orphans(&mut cx)?;
            self.maintain(&mut cx)?;
            self.serve_waiters(&mut cx)?;
            self.answer_leases_early(&mut cx, durable_ids);
            if self.ids.last() > self.id_reserved {
                let reserve = self.ids.last().max(JobId::floor_at(cx.now.plus_millis(1_000)).raw());
                self.conn.prepare_cached(sql::META_ID_RESERVED_SET)?.execute([reserve])?;
                self.id_reserved = reserve;
            }
            if FailPoint::AckBeforeCommit.active() {
                let mut leases = Vec::new();
                for pending in std::mem::take(&mut cx.answers) {
                    match pending {
                        Pending::Answer(deliver) => deliver(None),
                        leased => leases.push(leased),
                    }
                }
                cx.answers = leases;
            }
            if FailPoint::SlowCommit.active() {
                std::thread::sleep(Duration::from_millis(500));
            }
            commit_started = Some(Instant::now());
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                self.stats.transactions += 1;
                self.checkpointer.committed();
                self.stats.operations += operations;
                if let Some(started) = commit_started {
                    self.stats.commit.observe_seconds(started.elapsed().as_secs_f64());
                }
                self.events.publish(cx.events.drain(..));
                for pending in cx.answers {
                    match pending {
                        Pending::Answer(deliver) => deliver(None),
                        Pending::Leased { reply, jobs } => {
                            if let Err(Ok(jobs)) = reply.send(Ok(jobs)) {
                                self.orphans.extend(jobs.iter().map(|j| (j.id, j.lease_token)));
                            }
                        }
                    }
                }
            }
            Err(abort) => {
                let failure = abort.store_error();
                match &abort {
                    Abort::Sql(err) => tracing::error!(error = %err, "store transaction failed; rolled back"),
                    Abort::Inconsistent(what) => tracing::error!(
                        problem = %what,
                        "the store's memory and database disagree; rolled back, rebuilding memory from the database"
                    ),
                }
                for cmd in commands {
                    cmd.reject(failure.clone());
                }
                let _ = self.conn.execute_batch("ROLLBACK");
                self.reload(counters);
                for pending in cx.answers {
                    match pending {
                        Pending::Answer(deliver) => deliver(Some(failure.clone())),
                        Pending::Leased { reply, .. } => drop(reply.send(Err(failure.clone()))),
                    }
                }
            }
        }
    }

    /// Answers lease requests before the commit when every job they hand out already exists on
    /// disk. Only the enqueue must be durable before a worker may act on a job; the lease itself
    /// need not be: if this transaction fails, the job is ready again and the worker's calls
    /// with its token are refused as stale, so the worker stops — the same as a lease that
    /// expired. Jobs enqueued in this very transaction wait for the commit.
    fn answer_leases_early(&mut self, cx: &mut Batch, durable_ids: i64) {
        let mut later = Vec::with_capacity(cx.answers.len());
        for pending in std::mem::take(&mut cx.answers) {
            match pending {
                Pending::Leased { reply, jobs } if jobs.iter().all(|j| j.id.raw() <= durable_ids) => {
                    if let Err(Ok(jobs)) = reply.send(Ok(jobs)) {
                        self.orphans.extend(jobs.iter().map(|j| (j.id, j.lease_token)));
                    }
                }
                other => later.push(other),
            }
        }
        cx.answers = later;
    }

    /// Rebuilds memory from the database after a rollback, keeping the since-start counters as
    /// they were before the failed transaction.
    fn reload(&mut self, counters: Vec<(Arc<str>, crate::metrics::QueueCounters)>) {
        match load(&self.conn) {
            Ok((mut mem, reserved)) => {
                for (name, saved) in counters {
                    if let Some(i) = mem.queue_index(&name) {
                        mem.queues[i].counters = saved;
                    }
                }
                mem.workers = std::mem::take(&mut self.mem.workers);
                self.mem = mem;
                self.ids = IdGenerator::resume_after(reserved.max(self.ids.last()));
                self.id_reserved = reserved;
            }
            Err(err) => tracing::error!(error = %err, "store reload failed; memory may be stale until restart"),
        }
    }

    fn apply(&mut self, cmd: Command, cx: &mut Batch) -> Tx<()> {
        match cmd {
            Command::Insert { jobs, reply } => {
                let inserted = self.insert(jobs, cx);
                cx.settle(reply, inserted)?;
            }
            Command::Get { id, reply } => {
                let job = self.get(id).map(|job| job.ok_or(StoreError::JobNotFound(id)));
                cx.settle(reply, job)?;
            }
            Command::List { params, reply } => {
                let page = self.list(params);
                cx.settle(reply, page)?;
            }
            Command::Lease { reply, params, .. } if self.mem.worker_draining(&params.worker_id) => {
                cx.answer(reply, Err(StoreError::WorkerDraining(params.worker_id)));
            }
            Command::Lease { params, deadline, reply } => match self.lease(&params, cx) {
                Ok(jobs) if jobs.is_empty() && !self.stop_waiting && deadline > Instant::now() => {
                    self.waiters.push(Waiter { params, deadline, reply });
                }
                Ok(jobs) => cx.answers.push(Pending::Leased { reply, jobs }),
                Err(abort) => {
                    // Answered with the transaction's error, like every other operation in it.
                    cx.answers.push(Pending::Leased { reply, jobs: Vec::new() });
                    return Err(abort);
                }
            },
            Command::Heartbeat { params, reply } => {
                let beat = self.heartbeat(params, cx);
                cx.settle(reply, beat)?;
            }
            Command::Complete { params, reply } => {
                let settled = self.complete(params, cx);
                cx.settle(reply, settled)?;
            }
            Command::Fail { params, reply } => {
                let settled = self.fail(params, cx);
                cx.settle(reply, settled)?;
            }
            Command::Release { params, reply } => {
                let settled = self.release(params.id, params.lease_token, cx);
                cx.settle(reply, settled)?;
            }
            Command::Ack { params, reply } => {
                let acked = self.ack(params, cx);
                cx.settle(reply, acked)?;
            }
            Command::Cancel { id, reply } => {
                let canceled = self.cancel(id, cx);
                cx.settle(reply, canceled)?;
            }
            Command::QueueList { reply } => {
                let infos = (0..self.mem.queues.len()).map(|i| self.queue_info(i)).collect();
                cx.answer(reply, Ok(infos));
            }
            Command::QueueGet { name, reply } => {
                let info = match self.mem.queue_index(name.as_str()) {
                    Some(i) => Ok(self.queue_info(i)),
                    None => Err(StoreError::QueueNotFound(name)),
                };
                cx.answer(reply, info);
            }
            Command::QueueUpsert { name, patch, reply } => {
                let info = self.queue_upsert(name, &patch, cx);
                cx.settle(reply, info)?;
            }
            Command::QueueDelete { name, reply } => {
                let deleted = self.queue_delete(name);
                cx.settle(reply, deleted)?;
            }
            Command::TokenInsert { token, reply } => {
                let inserted = self.token_insert(&token);
                cx.settle(reply, inserted)?;
            }
            Command::TokenList { reply } => {
                let tokens = self.token_list().map(Ok);
                cx.settle(reply, tokens)?;
            }
            Command::TokenDelete { id, reply } => {
                let deleted = self.conn.prepare_cached(sql::TOKEN_DELETE).and_then(|mut s| s.execute([id]));
                cx.settle(reply, deleted.map(|n| Ok(n > 0)))?;
            }
            Command::AlarmRulePut { name, rule, at, reply } => {
                let put = self.alarm_rule_put(&name, &rule, at);
                cx.settle(reply, put)?;
            }
            Command::AlarmDelete { name, reply } => {
                let deleted = self.conn.prepare_cached(sql::ALARM_DELETE).and_then(|mut s| s.execute([name]));
                cx.settle(reply, deleted.map(|n| Ok(n > 0)))?;
            }
            Command::AlarmStatePut { name, state, at, reply } => {
                let put = self
                    .conn
                    .prepare_cached(sql::ALARM_STATE_PUT)
                    .and_then(|mut s| s.execute(params![name, state, at.as_millis()]));
                cx.settle(reply, put.map(|_| Ok(())))?;
            }
            Command::AlarmList { reply } => {
                let alarms = self.alarm_list().map(Ok);
                cx.settle(reply, alarms)?;
            }
            Command::Redrive { params, reply } => {
                let moved = self.redrive(params, cx);
                cx.settle(reply, moved)?;
            }
            Command::Prune { limit, reply } => {
                let pruned = self.prune(limit, cx).map(Ok);
                cx.settle(reply, pruned)?;
            }
            Command::Maintain { reply } | Command::Ping { reply } => cx.answer(reply, Ok(())),
            Command::Metrics { reply } => {
                let snapshot = self.metrics(cx.now);
                cx.answer(reply, Ok(snapshot));
            }
            Command::Workers { reply } => {
                let workers = self.workers(cx.now);
                cx.answer(reply, Ok(workers));
            }
            Command::WorkerDrain { id, even_unseen, reply } => {
                let known = self.mem.worker_drain(&id, even_unseen, cx.now);
                if known || even_unseen {
                    // Its parked lease requests end now rather than at their deadline.
                    let (ended, kept) =
                        std::mem::take(&mut self.waiters).into_iter().partition(|w| w.params.worker_id == id);
                    self.waiters = kept;
                    for waiter in ended {
                        cx.answer(waiter.reply, Err(StoreError::WorkerDraining(id.clone())));
                    }
                    cx.answer(reply, Ok(()));
                } else {
                    cx.answer(reply, Err(StoreError::WorkerNotFound(id)));
                }
            }
            Command::WorkerLeave { id, reply } => {
                let known = self.mem.workers.remove(id.as_str()).is_some();
                cx.answer(reply, Ok(known));
            }
            // Taken out of the batch by `run`.
            Command::Shutdown { reply } => cx.answer(reply, Ok(())),
        }
        Ok(())
    }

    /// Many completions and failures: each item succeeds or fails alone.
    fn ack(&mut self, params: JobAckParams, cx: &mut Batch) -> Tx<StoreResult<Acked>> {
        let mut acked = Acked::default();
        for item in params.complete {
            acked.complete.push(self.complete(item, cx)?);
        }
        for item in params.fail {
            acked.fail.push(self.fail(item, cx)?);
        }
        Ok(Ok(acked))
    }

    /// The queue's index, creating it with the default policy on first use.
    fn ensure_queue(&mut self, name: &QueueName, cx: &Batch) -> rusqlite::Result<StoreResult<usize>> {
        if let Some(i) = self.mem.queue_index(name.as_str()) {
            return Ok(Ok(i));
        }
        if self.mem.queues.len() >= self.max_queues {
            return Ok(Err(StoreError::QueueLimit { limit: self.max_queues }));
        }
        let policy = QueuePolicy::default();
        write_queue(&self.conn, name, &policy, cx.now)?;
        Ok(Ok(self.mem.add_queue(QueueMem::new(name.clone(), policy))))
    }

    fn token_insert(&self, token: &TokenRecord) -> rusqlite::Result<StoreResult<()>> {
        let count: i64 = self.conn.prepare_cached(sql::TOKEN_COUNT)?.query_row([], |row| row.get(0))?;
        if count >= MAX_TOKENS {
            return Ok(Err(StoreError::Invalid(crate::core::Invalid::new(
                "tokens",
                format!("there are already {MAX_TOKENS} tokens; revoke unused ones first"),
            ))));
        }
        let queues =
            (!token.queues.is_all()).then(|| serde_json::to_string(token.queues.as_slice()).unwrap_or_default());
        self.conn.prepare_cached(sql::TOKEN_INSERT)?.execute(params![
            token.id,
            token.name,
            token.role.as_str(),
            queues,
            token.rate,
            token.hash.as_slice(),
            token.created_at.as_millis(),
        ])?;
        Ok(Ok(()))
    }

    fn alarm_rule_put(&self, name: &str, rule: &str, at: Timestamp) -> rusqlite::Result<StoreResult<bool>> {
        let exists: i64 = self.conn.prepare_cached(sql::ALARM_RULE_EXISTS)?.query_row([name], |row| row.get(0))?;
        if exists == 0 {
            let count: i64 = self.conn.prepare_cached(sql::ALARM_RULE_COUNT)?.query_row([], |row| row.get(0))?;
            if count as u64 >= MAX_ALARMS {
                return Ok(Err(StoreError::Invalid(crate::core::Invalid::new(
                    "name",
                    format!("there are already {MAX_ALARMS} alarms; delete unused ones first"),
                ))));
            }
        }
        self.conn.prepare_cached(sql::ALARM_RULE_PUT)?.execute(params![name, rule, at.as_millis()])?;
        Ok(Ok(exists == 0))
    }

    fn alarm_list(&self) -> rusqlite::Result<Vec<AlarmRecord>> {
        let mut stmt = self.conn.prepare_cached(sql::ALARM_ALL)?;
        let rows = stmt.query_map([], |row| {
            Ok(AlarmRecord {
                name: row.get(0)?,
                rule: row.get(1)?,
                state: row.get(2)?,
                updated_at: Timestamp::from_millis(row.get(3)?),
            })
        })?;
        rows.collect()
    }

    fn token_list(&self) -> rusqlite::Result<Vec<TokenRecord>> {
        let mut stmt = self.conn.prepare_cached(sql::TOKEN_ALL)?;
        let rows = stmt.query_map([], rows::token)?;
        rows.collect()
    }

    fn queue_delete(&mut self, name: QueueName) -> rusqlite::Result<StoreResult<()>> {
        let Some(i) = self.mem.queue_index(name.as_str()) else {
            return Ok(Err(StoreError::QueueNotFound(name)));
        };
        let counts = &self.mem.queues[i].counts;
        let holding: u64 = [JobState::Scheduled, JobState::Ready, JobState::Running, JobState::Dead]
            .iter()
            .map(|s| counts[s.index()])
            .sum();
        if holding > 0 {
            return Ok(Err(StoreError::QueueNotEmpty { queue: name, jobs: holding }));
        }
        self.conn.prepare_cached(sql::JOBS_OF_QUEUE_DELETE)?.execute([name.as_str()])?;
        self.conn.prepare_cached(sql::QUEUE_DELETE)?.execute([name.as_str()])?;
        self.mem.remove_queue(i);
        Ok(Ok(()))
    }

    /// The job that holds `job`'s idempotency key, if any; a conflict if it was asked for with
    /// another kind or payload.
    fn holder_of_key(&self, job: &NewJob) -> rusqlite::Result<StoreResult<Option<JobSummary>>> {
        let Some(key) = &job.idempotency_key else { return Ok(Ok(None)) };
        let existing = self
            .conn
            .prepare_cached(sql::JOB_BY_KEY)?
            .query_row(params![job.queue.as_str(), key], |row| Ok((rows::summary(row)?, row.get::<_, String>(11)?)))
            .optional()?;
        Ok(match existing {
            Some((summary, payload)) if summary.kind != job.kind || payload != job.payload => {
                Err(StoreError::IdempotencyConflict { existing: summary.id, key: key.clone() })
            }
            existing => Ok(existing.map(|(summary, _)| summary)),
        })
    }

    fn insert(&mut self, jobs: Vec<NewJob>, cx: &mut Batch) -> rusqlite::Result<StoreResult<Vec<Inserted>>> {
        // A conflict refuses the whole batch, so look before changing anything: at the keys
        // already stored, and at repeats of a key within the batch.
        let mut in_batch: std::collections::HashMap<(&str, &str), (&str, &str)> = std::collections::HashMap::new();
        for job in &jobs {
            if let Err(conflict) = self.holder_of_key(job)? {
                return Ok(Err(conflict));
            }
            if let Some(key) = &job.idempotency_key {
                let first = in_batch.entry((job.queue.as_str(), key)).or_insert((&job.kind, &job.payload));
                if *first != (job.kind.as_str(), job.payload.as_str()) {
                    // Both are new: no job holds the key yet, so there is no id to name.
                    return Ok(Err(StoreError::Invalid(crate::core::Invalid::new(
                        "idempotency_key",
                        format!("{key:?} is used twice in the batch with different kinds or payloads"),
                    ))));
                }
            }
        }
        drop(in_batch);
        // A queue at its `max_ready` takes no more: the whole command is refused.
        if let Some(first) = jobs.first()
            && let Some(i) = self.mem.queue_index(first.queue.as_str())
        {
            let queue = &self.mem.queues[i];
            if let Some(limit) = queue.policy.max_ready {
                let waiting = queue.counts[JobState::Ready.index()] + queue.counts[JobState::Scheduled.index()];
                if waiting + jobs.len() as u64 > limit {
                    return Ok(Err(StoreError::QueueFull { queue: first.queue.clone(), limit }));
                }
            }
        }
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            // Jobs of one command share a queue, so a refusal comes before anything is written.
            let q = match self.ensure_queue(&job.queue, cx)? {
                Ok(q) => q,
                Err(refused) => return Ok(Err(refused)),
            };
            if let Ok(Some(existing)) = self.holder_of_key(&job)? {
                out.push(Inserted { job: existing, created: false });
                continue;
            }
            let id = self.ids.job_id(cx.now);
            let run_at = job.run_at.unwrap_or(cx.now);
            let state = state::waiting_state(run_at, cx.now);
            self.conn.prepare_cached(sql::JOB_INSERT)?.execute(params![
                id.raw(),
                job.queue.as_str(),
                job.kind,
                state.as_str(),
                job.priority,
                run_at.as_millis(),
                job.max_attempts,
                job.timeout_ms.map(|ms| ms as i64),
                job.idempotency_key,
                job.payload,
                rows::metadata_to(&job.metadata),
                cx.now.as_millis(),
            ])?;
            if state == JobState::Ready {
                self.mem.queues[q].ready.insert(ReadyKey::new(job.priority, run_at, id.raw()));
                cx.maybe_ready = true;
            } else {
                self.mem.scheduled.insert((run_at.as_millis(), id.raw()));
            }
            let queue = &mut self.mem.queues[q];
            queue.count_move(None, Some(state));
            queue.counters.enqueued += 1;
            cx.event(queue, id.raw(), 1, EventKind::Created, state, 0).run_at = Some(run_at);
            out.push(Inserted {
                job: JobSummary {
                    id,
                    queue: job.queue,
                    kind: job.kind,
                    state,
                    priority: job.priority,
                    run_at,
                    attempt: 0,
                    max_attempts: job.max_attempts,
                    idempotency_key: job.idempotency_key,
                    created_at: cx.now,
                    finished_at: None,
                },
                created: true,
            });
        }
        Ok(Ok(out))
    }

    fn get(&self, id: JobId) -> rusqlite::Result<Option<Job>> {
        let mem = &self.mem;
        let max_attempts = |queue: &QueueName| {
            mem.queue_index(queue.as_str())
                .map_or(QueuePolicy::default().max_attempts, |i| mem.queues[i].policy.max_attempts)
        };
        self.conn.prepare_cached(sql::JOB_GET)?.query_row([id.raw()], |row| rows::job(row, max_attempts)).optional()
    }

    fn list(&self, params: JobListParams) -> rusqlite::Result<StoreResult<JobPage>> {
        if self.mem.queue_index(params.queue.as_str()).is_none() {
            return Ok(Err(StoreError::QueueNotFound(params.queue)));
        }
        let states: Vec<JobState> = match params.state {
            Some(state) => vec![state],
            None => JobState::ALL.to_vec(),
        };
        let before = params.cursor.map_or(i64::MAX, JobId::raw);
        let from = params.from.map_or(0, JobId::raw);
        let limit = i64::from(params.limit);
        let mut stmt = self.conn.prepare_cached(sql::JOB_LIST_STATE)?;
        let mut scan_end = self.conn.prepare_cached(sql::JOB_LIST_SCAN_END)?;
        // One index range per state, merged: newest first across states without a sort of the
        // whole queue. A bounded scan of a state stops at its `scan`-th job: every id from the
        // highest of those ends up was examined in every state.
        let mut jobs = Vec::new();
        let mut examined_down_to: Option<i64> = None;
        for state in states {
            let mut lowest = from;
            if let Some(scan) = params.scan.filter(|&n| n > 0) {
                let end: Option<i64> = scan_end
                    .query_row(params![params.queue.as_str(), state.as_str(), before, from, scan - 1], |r| r.get(0))
                    .optional()?;
                if let Some(end) = end {
                    lowest = end;
                    examined_down_to = Some(examined_down_to.map_or(end, |e| e.max(end)));
                }
            }
            let rows = stmt.query_map(
                params![params.queue.as_str(), state.as_str(), before, params.kind, limit, params.error, lowest],
                rows::summary,
            )?;
            for row in rows {
                jobs.push(row?);
            }
        }
        if let Some(cut) = examined_down_to {
            jobs.retain(|j| j.id.raw() >= cut);
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
        jobs.truncate(params.limit as usize);
        let next_cursor = if jobs.len() == params.limit as usize {
            jobs.last().map(|j| j.id)
        } else {
            examined_down_to.map(JobId::from_raw)
        };
        Ok(Ok(JobPage { jobs, next_cursor }))
    }

    fn lease(&mut self, params: &JobLeaseParams, cx: &mut Batch) -> Tx<Vec<LeasedJob>> {
        let now = cx.now;
        let worker = self.mem.worker_seen(&params.worker_id, &params.presence, &params.queues, now);
        let queues: Vec<usize> = params.queues.iter().filter_map(|q| self.mem.queue_index(q.as_str())).collect();
        let mut room: Vec<u64> = queues.iter().map(|&i| self.mem.queues[i].startable(now)).collect();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < params.max as usize && (out.is_empty() || bytes < params.max_bytes) {
            // The best head across the asked queues: highest priority, then oldest.
            let mut best: Option<(usize, ReadyKey)> = None;
            for (pos, &i) in queues.iter().enumerate() {
                if room[pos] == 0 {
                    continue;
                }
                if let Some(head) = self.mem.queues[i].ready.first()
                    && best.is_none_or(|(_, b)| head < b)
                {
                    best = Some((pos, head));
                }
            }
            let Some((pos, key)) = best else { break };
            room[pos] -= 1;
            let q = queues[pos];
            let queue = &mut self.mem.queues[q];
            queue.ready.remove(&key);
            queue.take_start();
            let lease_ms = params.lease_ms.unwrap_or(queue.policy.lease_ms);
            let token = self.ids.lease_token(now, self.secrets.random::<u128>().max(1));
            let expires_at = now.plus_millis(lease_ms);
            let read = self
                .conn
                .prepare_cached(sql::JOB_LEASE_READ)?
                .query_row([key.id()], |row| {
                    let job = LeasedJob {
                        id: JobId::from_raw(key.id()),
                        queue: self.mem.queues[q].name.clone(),
                        kind: row.get(0)?,
                        payload: row.get(1)?,
                        // Both set below: the count by the transition, the limit by the policy.
                        attempt: 0,
                        max_attempts: 0,
                        timeout_ms: row.get::<_, Option<i64>>(4)?.map(|v| v.max(0) as u64),
                        metadata: rows::metadata_from(row.get(5)?),
                        priority: row.get(6)?,
                        lease_token: token,
                        lease_expires_at: expires_at,
                    };
                    let now = RowNow {
                        id: key.id(),
                        queue: q,
                        state: rows::state(row, 9)?,
                        attempt: row.get(2)?,
                        version: row.get(8)?,
                    };
                    Ok((job, now, row.get::<_, Option<u32>>(3)?, row.get::<_, i64>(7)?))
                })
                .optional()?;
            let Some((mut job, row, max_override, ready_at)) = read else {
                return Err(Abort::inconsistent(key.id(), "the ready index holds a job the database does not have"));
            };
            let change = RowChange::Lease { token, expires_at, lease_ms, worker: &params.worker_id };
            let applied = self.apply_transition(row, None, state::lease(), change, cx)?;
            let queue = &mut self.mem.queues[q];
            job.attempt = applied.attempt;
            job.max_attempts = max_override.unwrap_or(queue.policy.max_attempts);
            queue.counters.wait.observe_ms(now.millis_since(Timestamp::from_millis(ready_at)));
            self.mem.insert_lease(
                key.id(),
                Lease {
                    token,
                    expires_at,
                    queue: q,
                    lease_ms,
                    started_at: now,
                    attempt: applied.attempt,
                    max_attempts: max_override,
                    cancel_requested: false,
                    worker: Arc::clone(&worker),
                    version: applied.version,
                    priority: job.priority,
                    ready_at,
                },
            );
            bytes += job.payload.len();
            out.push(job);
        }
        Ok(out)
    }

    /// Applies one transition decided in `core::state` to job `row`: the one place a job's state
    /// changes once it exists. It refuses a transition that does not leave the state the row is
    /// in, and one of a leased job without the caller's token (or of another job with one). It
    /// binds what the transition decided — the new state, the attempt count after it, the next
    /// version, the finish time — so the SQL computes none of it, and the statement matches the
    /// row's state and, under a lease, the token `fence` the caller presented: exactly one row
    /// must change. Then it moves the queue's counts, tallies its counters and records the
    /// event. Memory's indexes (ready, scheduled, leases) stay with the caller, which knows
    /// where the job goes.
    fn apply_transition(
        &mut self,
        row: RowNow,
        fence: Option<LeaseToken>,
        t: Transition,
        change: RowChange<'_>,
        cx: &mut Batch,
    ) -> Tx<Applied> {
        if t.from != row.state {
            return Err(Abort::inconsistent(
                row.id,
                format_args!("{:?} leaves {}, but the job is {}", t.reason, t.from, row.state),
            ));
        }
        if fence.is_some() != (t.from == JobState::Running) {
            return Err(Abort::inconsistent(
                row.id,
                format_args!("{:?} from {} must be fenced exactly when the job runs under a lease", t.reason, t.from),
            ));
        }
        let Some(statement) = change.statement(t.reason) else {
            return Err(Abort::inconsistent(row.id, format_args!("no statement writes {:?} this way", t.reason)));
        };
        if row.queue >= self.mem.queues.len() {
            return Err(Abort::inconsistent(row.id, "its queue is not in memory"));
        }
        let applied = Applied { attempt: t.attempt_after(row.attempt), version: row.version + 1 };
        let changed = {
            let mut stmt = self.conn.prepare_cached(statement)?;
            stmt.raw_bind_parameter(":id", row.id)?;
            stmt.raw_bind_parameter(":from", t.from.as_str())?;
            stmt.raw_bind_parameter(":to", t.to.as_str())?;
            stmt.raw_bind_parameter(":attempt", applied.attempt)?;
            stmt.raw_bind_parameter(":version", applied.version)?;
            stmt.raw_bind_parameter(":finished_at", t.finishes().then_some(cx.now.as_millis()))?;
            if let Some(token) = fence {
                stmt.raw_bind_parameter(":fence_seq", token.raw())?;
                stmt.raw_bind_parameter(":fence_secret", rows::secret_bytes(token))?;
            }
            match &change {
                RowChange::Lease { token, expires_at, lease_ms, worker } => {
                    stmt.raw_bind_parameter(":token", token.raw())?;
                    stmt.raw_bind_parameter(":secret", rows::secret_bytes(*token))?;
                    stmt.raw_bind_parameter(":expires_at", expires_at.as_millis())?;
                    stmt.raw_bind_parameter(":lease_ms", *lease_ms as i64)?;
                    stmt.raw_bind_parameter(":worker", *worker)?;
                    stmt.raw_bind_parameter(":now", cx.now.as_millis())?;
                }
                RowChange::Complete { result } => stmt.raw_bind_parameter(":result", result.as_deref())?,
                RowChange::Fail { error, run_at } => {
                    stmt.raw_bind_parameter(":run_at", run_at.map(Timestamp::as_millis))?;
                    stmt.raw_bind_parameter(":error", error.as_str())?;
                    stmt.raw_bind_parameter(":now", cx.now.as_millis())?;
                }
                RowChange::Redrive => stmt.raw_bind_parameter(":now", cx.now.as_millis())?,
                RowChange::Release | RowChange::Promote | RowChange::Cancel => {}
            }
            stmt.raw_execute()?
        };
        expect_one(changed, row.id, format_args!("{:?} from {}", t.reason, t.from))?;
        let queue = &mut self.mem.queues[row.queue];
        queue.count_move(Some(t.from), Some(t.to));
        queue.counters.record(t);
        let event = cx.event(queue, row.id, applied.version, EventKind::State, t.to, applied.attempt);
        match change {
            RowChange::Complete { result } => event.data = result,
            RowChange::Fail { error, run_at } => {
                event.error = Some(error);
                event.run_at = run_at;
            }
            _ => {}
        }
        // A job left running (a slot under a concurrency limit is free) or became ready.
        cx.maybe_ready |= t.from == JobState::Running || t.to == JobState::Ready;
        Ok(applied)
    }

    /// The error for a fencing check that failed: the job is unknown, or the token is stale.
    fn fence_error(&self, id: JobId) -> rusqlite::Result<StoreError> {
        let state =
            self.conn.prepare_cached(sql::JOB_STATE)?.query_row([id.raw()], |row| rows::state(row, 0)).optional()?;
        Ok(match state {
            None => StoreError::JobNotFound(id),
            Some(state) => StoreError::StaleLease { id, state },
        })
    }

    /// The lease if `presented` holds job `id` now, with the token its row must hold too.
    fn fenced(&self, id: JobId, presented: LeaseToken) -> rusqlite::Result<StoreResult<Fenced>> {
        match self.mem.leases.get(&id.raw()) {
            Some(lease) if crate::core::lease::check_fence(JobState::Running, Some(lease.token), presented).is_ok() => {
                Ok(Ok(Fenced { lease: lease.clone(), token: presented }))
            }
            // Fencing switched off on purpose, in the database as in memory: the row is matched
            // with the token it holds.
            Some(lease) if FailPoint::SkipFencing.active() => {
                Ok(Ok(Fenced { lease: lease.clone(), token: lease.token }))
            }
            _ => Ok(Err(self.fence_error(id)?)),
        }
    }

    fn heartbeat(&mut self, params: LeaseHeartbeatParams, cx: &mut Batch) -> Tx<StoreResult<Heartbeat>> {
        let Fenced { lease, token } = match self.fenced(params.id, params.lease_token)? {
            Ok(fenced) => fenced,
            Err(err) => return Ok(Err(err)),
        };
        let expires_at = cx.now.plus_millis(params.extend_ms.unwrap_or(lease.lease_ms));
        // Only progress is an event, so only progress moves the version.
        let version = lease.version + i64::from(params.progress.is_some());
        let changed = self.conn.prepare_cached(sql::LEASE_HEARTBEAT)?.execute(params![
            params.id.raw(),
            expires_at.as_millis(),
            params.progress,
            version,
            token.raw(),
            rows::secret_bytes(token),
        ])?;
        expect_one(changed, params.id.raw(), "the heartbeat")?;
        self.mem.extend_lease(params.id.raw(), expires_at);
        if let Some(seen) = self.mem.workers.get_mut(&lease.worker) {
            seen.last_seen = cx.now;
        }
        if let Some(progress) = params.progress {
            if let Some(held) = self.mem.leases.get_mut(&params.id.raw()) {
                held.version = version;
            }
            let queue = &self.mem.queues[lease.queue];
            cx.event(queue, params.id.raw(), version, EventKind::Progress, JobState::Running, lease.attempt).data =
                Some(progress);
        }
        Ok(Ok(Heartbeat { lease_expires_at: expires_at, cancel_requested: lease.cancel_requested }))
    }

    fn complete(&mut self, params: JobCompleteParams, cx: &mut Batch) -> Tx<StoreResult<Settled>> {
        let Fenced { lease, token } = match self.fenced(params.id, params.lease_token)? {
            Ok(fenced) => fenced,
            Err(err) => return Ok(Err(err)),
        };
        let change = RowChange::Complete { result: params.result };
        let t = state::complete();
        self.apply_transition(RowNow::leased(params.id, &lease), Some(token), t, change, cx)?;
        self.mem.remove_lease(params.id.raw());
        self.mem.queues[lease.queue].counters.run.observe_ms(cx.now.millis_since(lease.started_at));
        Ok(Ok(Settled { state: t.to, run_at: None }))
    }

    fn fail(&mut self, params: JobFailParams, cx: &mut Batch) -> Tx<StoreResult<Settled>> {
        let fenced = match self.fenced(params.id, params.lease_token)? {
            Ok(fenced) => fenced,
            Err(err) => return Ok(Err(err)),
        };
        let failure = Failure {
            error: params.error,
            retryable: params.retryable,
            retry_in_ms: params.retry_in_ms,
            reason: Reason::Failed,
        };
        Ok(Ok(self.fail_attempt(params.id, &fenced, failure, cx)?))
    }

    /// Ends a failed attempt under a lease that passed the fencing check (or ran out).
    fn fail_attempt(&mut self, id: JobId, fenced: &Fenced, failure: Failure, cx: &mut Batch) -> Tx<Settled> {
        let lease = &fenced.lease;
        let policy = &self.mem.queues[lease.queue].policy;
        let failed = FailedAttempt {
            attempt: lease.attempt,
            max_attempts: lease.max_attempts.unwrap_or(policy.max_attempts),
            retryable: failure.retryable,
            cancel_requested: lease.cancel_requested,
            retry_in_ms: failure.retry_in_ms,
        };
        let after = state::after_failure(failed, &policy.backoff, cx.now, &mut self.rng);
        let t = state::fail(after, cx.now, failure.reason);
        let run_at = match after {
            AfterFailure::Retry { run_at } => Some(run_at),
            AfterFailure::Dead | AfterFailure::Canceled => None,
        };
        let change = RowChange::Fail { error: failure.error, run_at };
        self.apply_transition(RowNow::leased(id, lease), Some(fenced.token), t, change, cx)?;
        let row_run_at = run_at.map_or(lease.ready_at, Timestamp::as_millis);
        self.mem.remove_lease(id.raw());
        match t.to {
            JobState::Ready => {
                self.mem.queues[lease.queue].ready.insert(ReadyKey::new(
                    lease.priority,
                    Timestamp::from_millis(row_run_at),
                    id.raw(),
                ));
            }
            JobState::Scheduled => drop(self.mem.scheduled.insert((row_run_at, id.raw()))),
            _ => {}
        }
        self.mem.queues[lease.queue].counters.run.observe_ms(cx.now.millis_since(lease.started_at));
        Ok(Settled { state: t.to, run_at })
    }

    fn release(&mut self, id: JobId, presented: LeaseToken, cx: &mut Batch) -> Tx<StoreResult<Settled>> {
        let Fenced { lease, token } = match self.fenced(id, presented)? {
            Ok(fenced) => fenced,
            Err(err) => return Ok(Err(err)),
        };
        let t = state::release(lease.cancel_requested);
        self.apply_transition(RowNow::leased(id, &lease), Some(token), t, RowChange::Release, cx)?;
        self.mem.remove_lease(id.raw());
        if t.to == JobState::Ready {
            // Back to its old place in line: it was ready before this lease, and still is.
            let key = ReadyKey::new(lease.priority, Timestamp::from_millis(lease.ready_at), id.raw());
            self.mem.queues[lease.queue].ready.insert(key);
        }
        Ok(Ok(Settled { state: t.to, run_at: None }))
    }

    /// Releases leases whose caller went away before it got them; they were never worked on.
    fn release_orphans(&mut self, cx: &mut Batch) -> Tx<()> {
        for (id, token) in std::mem::take(&mut self.orphans) {
            if let Err(err) = self.release(id, token, cx)? {
                tracing::debug!(job_id = %id, error = %err, "orphaned lease already settled");
            }
        }
        Ok(())
    }

    fn cancel(&mut self, id: JobId, cx: &mut Batch) -> Tx<StoreResult<Canceled>> {
        if let Some(lease) = self.mem.leases.get_mut(&id.raw()) {
            if !lease.cancel_requested {
                // Not an event of its own: the worker learns it on its next heartbeat, and the
                // stream shows the job ending `canceled`.
                let changed = self.conn.prepare_cached(sql::JOB_CANCEL_REQUEST)?.execute([id.raw()])?;
                expect_one(changed, id.raw(), "the cancel request")?;
                lease.cancel_requested = true;
            }
            return Ok(Ok(Canceled { state: JobState::Running, cancel_requested: true }));
        }
        let found = self
            .conn
            .prepare_cached(sql::JOB_CANCEL_LOOKUP)?
            .query_row([id.raw()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    rows::state(row, 1)?,
                    row.get::<_, bool>(2)?,
                    row.get::<_, i32>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, u32>(5)?,
                    row.get::<_, i64>(6)?,
                ))
            })
            .optional()?;
        let Some((queue_name, current, cancel_requested, priority, run_at, attempt, version)) = found else {
            return Ok(Err(StoreError::JobNotFound(id)));
        };
        match state::cancel(current, cancel_requested) {
            Err(source) => Ok(Err(StoreError::Illegal { id, source })),
            Ok(CancelEffect::Unchanged) | Ok(CancelEffect::Requested) => {
                Ok(Ok(Canceled { state: current, cancel_requested }))
            }
            Ok(CancelEffect::CanceledNow) => {
                let Some(q) = self.mem.queue_index(&queue_name) else {
                    return Err(Abort::inconsistent(id.raw(), format_args!("its queue {queue_name} is not in memory")));
                };
                let t = state::cancel_now(current).map_err(|refused| Abort::inconsistent(id.raw(), refused))?;
                let row = RowNow { id: id.raw(), queue: q, state: current, attempt, version };
                self.apply_transition(row, None, t, RowChange::Cancel, cx)?;
                if current == JobState::Ready {
                    self.mem.queues[q].ready.remove(&ReadyKey::new(priority, Timestamp::from_millis(run_at), id.raw()));
                } else {
                    self.mem.scheduled.remove(&(run_at, id.raw()));
                }
                Ok(Ok(Canceled { state: t.to, cancel_requested: false }))
            }
        }
    }

    fn queue_info(&self, i: usize) -> QueueInfo {
        let q = &self.mem.queues[i];
        QueueInfo {
            name: q.name.clone(),
            policy: q.policy.clone(),
            counts: q.counts,
            oldest_ready_at: q.oldest_ready_at(),
        }
    }

    fn queue_upsert(
        &mut self,
        name: QueueName,
        patch: &QueuePolicyPatch,
        cx: &mut Batch,
    ) -> rusqlite::Result<StoreResult<QueueInfo>> {
        let existing = self.mem.queue_index(name.as_str());
        let current = existing.map_or_else(QueuePolicy::default, |i| self.mem.queues[i].policy.clone());
        let next = match current.apply(patch) {
            Ok(next) => next,
            Err(invalid) => return Ok(Err(StoreError::Invalid(invalid))),
        };
        if existing.is_none() && self.mem.queues.len() >= self.max_queues {
            return Ok(Err(StoreError::QueueLimit { limit: self.max_queues }));
        }
        write_queue(&self.conn, &name, &next, cx.now)?;
        let i = match existing {
            Some(i) => i,
            None => self.mem.add_queue(QueueMem::new(name, next.clone())),
        };
        let queue = &mut self.mem.queues[i];
        if queue.policy.rate != next.rate {
            queue.reset_rate();
        }
        queue.policy = next;
        cx.maybe_ready = true;
        Ok(Ok(self.queue_info(i)))
    }

    fn redrive(&mut self, params: DeadRedriveParams, cx: &mut Batch) -> Tx<StoreResult<Vec<JobId>>> {
        let Some(q) = self.mem.queue_index(params.queue.as_str()) else {
            return Ok(Err(StoreError::QueueNotFound(params.queue)));
        };
        // Each job as it is, with its priority, and its transition: all decided before anything
        // changes, so a bad id changes nothing.
        let read = |row: &rusqlite::Row<'_>, at: usize| -> rusqlite::Result<(RowNow, i32)> {
            let now = RowNow {
                id: row.get(at)?,
                queue: q,
                state: rows::state(row, at + 1)?,
                attempt: row.get(at + 2)?,
                version: row.get(at + 3)?,
            };
            Ok((now, row.get(at + 4)?))
        };
        let decide = |(row, priority): (RowNow, i32)| match state::redrive_now(row.state) {
            Ok(t) => Ok((row, priority, t)),
            Err(source) => Err(StoreError::Illegal { id: JobId::from_raw(row.id), source }),
        };
        let mut moves = Vec::new();
        match params.ids {
            None => {
                let mut stmt = self.conn.prepare_cached(sql::DEAD_OF_QUEUE)?;
                for job in stmt.query_map([params.queue.as_str()], |row| read(row, 0))? {
                    match decide(job?) {
                        Ok(change) => moves.push(change),
                        Err(refused) => return Ok(Err(refused)),
                    }
                }
            }
            Some(ids) => {
                let unique: BTreeSet<i64> = ids.iter().map(|id| id.raw()).collect();
                for raw in unique {
                    let job = self
                        .conn
                        .prepare_cached(sql::JOB_REDRIVE_READ)?
                        .query_row([raw], |row| Ok((row.get::<_, String>(0)?, read(row, 1)?)))
                        .optional()?;
                    let decided = match job {
                        Some((queue, job)) if queue == params.queue.as_str() => decide(job),
                        _ => Err(StoreError::JobNotFound(JobId::from_raw(raw))),
                    };
                    match decided {
                        Ok(change) => moves.push(change),
                        Err(refused) => return Ok(Err(refused)),
                    }
                }
            }
        }
        let mut moved = Vec::with_capacity(moves.len());
        for (row, priority, t) in moves {
            self.apply_transition(row, None, t, RowChange::Redrive, cx)?;
            self.mem.queues[q].ready.insert(ReadyKey::new(priority, cx.now, row.id));
            moved.push(JobId::from_raw(row.id));
        }
        Ok(Ok(moved))
    }

    fn prune(&mut self, limit: u32, cx: &mut Batch) -> rusqlite::Result<u64> {
        let mut left = u64::from(limit);
        let mut pruned = 0;
        for queue in &mut self.mem.queues {
            let cutoff = Timestamp::from_millis(cx.now.as_millis().saturating_sub(queue.policy.retention_ms as i64));
            for state in [JobState::Succeeded, JobState::Dead, JobState::Canceled] {
                if left == 0 || queue.counts[state.index()] == 0 {
                    continue;
                }
                let deleted = self.conn.prepare_cached(sql::JOBS_PRUNE)?.execute(params![
                    queue.name.as_str(),
                    state.as_str(),
                    JobId::floor_at(cutoff).raw(),
                    cutoff.as_millis(),
                    left as i64,
                ])? as u64;
                for _ in 0..deleted {
                    queue.count_move(Some(state), None);
                }
                left -= deleted;
                pruned += deleted;
            }
        }
        Ok(pruned)
    }

    /// Promotes due scheduled jobs and expires overdue leases.
    fn maintain(&mut self, cx: &mut Batch) -> Tx<()> {
        let now = cx.now.as_millis();
        for _ in 0..MAX_MAINTENANCE {
            let Some(&(at, id)) = self.mem.scheduled.first() else { break };
            if at > now {
                break;
            }
            self.mem.scheduled.pop_first();
            let promoted = self
                .conn
                .prepare_cached(sql::JOB_PROMOTE_READ)?
                .query_row([id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i32>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, i64>(4)?,
                        rows::state(row, 5)?,
                    ))
                })
                .optional()?;
            let Some((queue_name, priority, run_at, attempt, version, state)) = promoted else {
                return Err(Abort::inconsistent(id, "the scheduled index holds a job the database does not have"));
            };
            let Some(q) = self.mem.queue_index(&queue_name) else {
                return Err(Abort::inconsistent(id, format_args!("its queue {queue_name} is not in memory")));
            };
            let row = RowNow { id, queue: q, state, attempt, version };
            self.apply_transition(row, None, state::promote(), RowChange::Promote, cx)?;
            self.mem.queues[q].ready.insert(ReadyKey::new(priority, Timestamp::from_millis(run_at), id));
        }
        for _ in 0..MAX_MAINTENANCE {
            let Some(&(at, id)) = self.mem.expiries.first() else { break };
            if at > now {
                break;
            }
            let Some(lease) = self.mem.leases.get(&id).cloned() else {
                self.mem.expiries.pop_first();
                continue;
            };
            let job = JobId::from_raw(id);
            let (queue, attempt) = (lease.queue, lease.attempt);
            // The writer presents the lease it holds: the one that ran out.
            let fenced = Fenced { token: lease.token, lease };
            let failure = Failure {
                error: LEASE_EXPIRED_MESSAGE.to_owned(),
                retryable: true,
                retry_in_ms: None,
                reason: Reason::LeaseExpired,
            };
            let settled = self.fail_attempt(job, &fenced, failure, cx)?;
            tracing::info!(job_id = %job, queue = %self.mem.queues[queue].name, attempt,
                state = %settled.state, "lease expired");
        }
        Ok(())
    }

    /// Answers parked lease requests: with jobs if some became available, empty at their
    /// deadline or on shutdown; drops those whose caller has gone.
    fn serve_waiters(&mut self, cx: &mut Batch) -> Tx<()> {
        if self.waiters.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let rate_limited = self.mem.queues.iter().any(|q| q.policy.rate.is_some());
        let try_lease = cx.maybe_ready || rate_limited;
        let mut kept = Vec::with_capacity(self.waiters.len());
        let mut waiting = std::mem::take(&mut self.waiters).into_iter();
        while let Some(waiter) = waiting.next() {
            if waiter.reply.is_closed() {
                continue;
            }
            if try_lease {
                let jobs = match self.lease(&waiter.params, cx) {
                    Ok(jobs) => jobs,
                    Err(abort) => {
                        // This one gets the transaction's error; the others go on waiting.
                        cx.answers.push(Pending::Leased { reply: waiter.reply, jobs: Vec::new() });
                        self.waiters = kept.into_iter().chain(waiting).collect();
                        return Err(abort);
                    }
                };
                if !jobs.is_empty() {
                    cx.answers.push(Pending::Leased { reply: waiter.reply, jobs });
                    continue;
                }
            }
            if waiter.deadline <= now || self.stop_waiting {
                cx.answers.push(Pending::Leased { reply: waiter.reply, jobs: Vec::new() });
            } else {
                kept.push(waiter);
            }
        }
        self.waiters = kept;
        Ok(())
    }

    fn workers(&mut self, now: Timestamp) -> Vec<WorkerInfo> {
        self.mem.workers_connected(now);
        let mut running: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for lease in self.mem.leases.values() {
            *running.entry(&*lease.worker).or_default() += 1;
        }
        let mut workers: Vec<WorkerInfo> = self
            .mem
            .workers
            .iter()
            .map(|(id, seen)| WorkerInfo {
                id: id.to_string(),
                presence: seen.presence.clone(),
                draining: seen.draining,
                queues: seen.queues.clone(),
                running: running.get(&**id).copied().unwrap_or(0),
                last_seen: seen.last_seen,
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        workers
    }

    fn metrics(&mut self, now: Timestamp) -> MetricsSnapshot {
        let queues = self
            .mem
            .queues
            .iter()
            .map(|q| QueueMetrics {
                queue: q.name.as_str().to_owned(),
                jobs: q.counts,
                oldest_ready_age_seconds: q.oldest_ready_at().map_or(0.0, |at| now.millis_since(at) as f64 / 1000.0),
                paused: q.policy.paused,
                counters: q.counters.clone(),
            })
            .collect();
        let mut store = self.stats.clone();
        store.size_bytes = self
            .conn
            .path()
            .map(|db| {
                let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                size(db.to_owned()) + size(format!("{db}-wal"))
            })
            .unwrap_or(0);
        MetricsSnapshot { queues, workers_connected: self.mem.workers_connected(now), store }
    }
}

fn write_queue(conn: &Connection, name: &QueueName, p: &QueuePolicy, now: Timestamp) -> rusqlite::Result<()> {
    conn.prepare_cached(sql::QUEUE_UPSERT)?.execute(params![
        name.as_str(),
        p.lease_ms as i64,
        p.max_attempts,
        p.backoff.base_ms as i64,
        p.backoff.factor,
        p.backoff.cap_ms as i64,
        p.retention_ms as i64,
        p.concurrency,
        p.rate,
        p.paused,
        now.as_millis(),
        p.max_ready.map(|n| n as i64),
    ])?;
    Ok(())
}

/// Builds the in-memory view from the database, and reads where id generation resumes.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<(Memory, i64)> {
    let mut mem = Memory::default();
    {
        let mut stmt = conn.prepare(sql::QUEUE_ALL)?;
        let queues = stmt.query_map([], |row| {
            let name = rows::queue_name(row, 0)?;
            let policy = QueuePolicy {
                lease_ms: row.get::<_, i64>(1)?.max(1) as u64,
                max_attempts: row.get(2)?,
                backoff: crate::core::Backoff {
                    base_ms: row.get::<_, i64>(3)?.max(0) as u64,
                    factor: row.get(4)?,
                    cap_ms: row.get::<_, i64>(5)?.max(0) as u64,
                },
                retention_ms: row.get::<_, i64>(6)?.max(1) as u64,
                concurrency: row.get(7)?,
                rate: row.get(8)?,
                paused: row.get(9)?,
                max_ready: row.get::<_, Option<i64>>(10)?.map(|n| n.max(1) as u64),
            };
            Ok(QueueMem::new(name, policy))
        })?;
        for queue in queues {
            mem.add_queue(queue?);
        }
    }
    {
        let mut stmt = conn.prepare(sql::COUNT_BY_QUEUE_STATE)?;
        let counts =
            stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, rows::state(row, 1)?, row.get::<_, i64>(2)?)))?;
        for count in counts {
            let (queue, state, n) = count?;
            if let Some(i) = mem.queue_index(&queue) {
                mem.queues[i].counts[state.index()] = n.max(0) as u64;
            }
        }
    }
    for i in 0..mem.queues.len() {
        let name = mem.queues[i].name.as_str().to_owned();
        let mut stmt = conn.prepare(sql::READY_OF_QUEUE)?;
        let ready = stmt.query_map([&name], |row| {
            Ok(ReadyKey::new(row.get(1)?, Timestamp::from_millis(row.get(2)?), row.get(0)?))
        })?;
        // Rows come in id order, which for jobs of one priority that became ready when they
        // were created is the set's own: each key extends the last run and the runs come out
        // full, without holding every key twice (a sorted copy of 10,000,000 keys is 160 MB
        // that the allocator keeps once freed).
        for key in ready {
            mem.queues[i].ready.insert(key?);
        }
        let mut stmt = conn.prepare(sql::SCHEDULED_OF_QUEUE)?;
        let scheduled = stmt.query_map([&name], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(0)?)))?;
        for entry in scheduled {
            mem.scheduled.insert(entry?);
        }
        let mut stmt = conn.prepare(sql::RUNNING_OF_QUEUE)?;
        let running = stmt.query_map([&name], |row| {
            let lease_ms: Option<i64> = row.get(3)?;
            Ok((
                row.get::<_, i64>(0)?,
                Lease {
                    token: rows::lease_token(row, 1, 12)?.unwrap_or(LeaseToken::from_raw(0)),
                    expires_at: Timestamp::from_millis(row.get(2)?),
                    queue: i,
                    lease_ms: lease_ms.map_or(30_000, |ms| ms.max(1) as u64),
                    started_at: Timestamp::from_millis(row.get::<_, Option<i64>>(4)?.unwrap_or(0)),
                    attempt: row.get(5)?,
                    max_attempts: row.get(6)?,
                    cancel_requested: row.get(7)?,
                    version: row.get(8)?,
                    priority: row.get(9)?,
                    ready_at: row.get(10)?,
                    worker: Arc::from(row.get::<_, String>(11)?),
                },
            ))
        })?;
        for entry in running {
            let (id, lease) = entry?;
            mem.insert_lease(id, lease);
        }
    }
    let reserved: i64 = conn.query_row(sql::META_ID_RESERVED_GET, [], |row| row.get(0))?;
    Ok((mem, reserved))
}
