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
//! error: nothing half-applied survives.
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
use crate::core::state::{self, AfterFailure, CancelEffect, FailedAttempt};
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

/// Most commands applied in one transaction.
const MAX_BATCH: usize = 1_024;
/// Most scheduled jobs promoted, or leases expired, per transaction; the rest follow at once in
/// the next one, so a backlog of due work never stalls answers for long.
const MAX_MAINTENANCE: usize = 5_000;
/// The error message recorded when a lease runs out.
const LEASE_EXPIRED: &str = "lease expired";

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
    Redrive { params: DeadRedriveParams, reply: Reply<Vec<JobId>> },
    Prune { limit: u32, reply: Reply<u64> },
    Maintain { reply: Reply<()> },
    Metrics { reply: Reply<MetricsSnapshot> },
    Workers { reply: Reply<Vec<WorkerInfo>> },
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
            Command::Redrive { reply, .. } => drop(reply.send(Err(err))),
            Command::Prune { reply, .. } => drop(reply.send(Err(err))),
            Command::Maintain { reply } => drop(reply.send(Err(err))),
            Command::Metrics { reply } => drop(reply.send(Err(err))),
            Command::Workers { reply } => drop(reply.send(Err(err))),
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

/// The writer thread's state.
/// Most tokens a store keeps.
const MAX_TOKENS: i64 = 10_000;

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
        let outcome = (|| -> rusqlite::Result<()> {
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
            self.conn.prepare_cached("COMMIT")?.execute([]).map(drop)
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
            Err(err) => {
                let failure = store_error(&err);
                tracing::error!(error = %err, "store transaction failed; rolled back");
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

    fn apply(&mut self, cmd: Command, cx: &mut Batch) -> rusqlite::Result<()> {
        match cmd {
            Command::Insert { jobs, reply } => {
                let inserted = self.insert(jobs, cx)?;
                cx.answer(reply, inserted);
            }
            Command::Get { id, reply } => {
                let job = self.get(id)?;
                cx.answer(reply, job.ok_or(StoreError::JobNotFound(id)));
            }
            Command::List { params, reply } => {
                let page = self.list(params)?;
                cx.answer(reply, page);
            }
            Command::Lease { params, deadline, reply } => {
                let jobs = self.lease(&params, cx)?;
                if jobs.is_empty() && !self.stop_waiting && deadline > Instant::now() {
                    self.waiters.push(Waiter { params, deadline, reply });
                } else {
                    cx.answers.push(Pending::Leased { reply, jobs });
                }
            }
            Command::Heartbeat { params, reply } => {
                let beat = self.heartbeat(params, cx)?;
                cx.answer(reply, beat);
            }
            Command::Complete { params, reply } => {
                let settled = self.complete(params, cx)?;
                cx.answer(reply, settled);
            }
            Command::Fail { params, reply } => {
                let settled = self.fail(params, cx)?;
                cx.answer(reply, settled);
            }
            Command::Release { params, reply } => {
                let settled = self.release(params.id, params.lease_token, cx)?;
                cx.answer(reply, settled);
            }
            Command::Ack { params, reply } => {
                let mut acked = Acked::default();
                for item in params.complete {
                    acked.complete.push(self.complete(item, cx)?);
                }
                for item in params.fail {
                    acked.fail.push(self.fail(item, cx)?);
                }
                cx.answer(reply, Ok(acked));
            }
            Command::Cancel { id, reply } => {
                let canceled = self.cancel(id, cx)?;
                cx.answer(reply, canceled);
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
                let info = self.queue_upsert(name, &patch, cx)?;
                cx.answer(reply, info);
            }
            Command::QueueDelete { name, reply } => {
                let deleted = self.queue_delete(name)?;
                cx.answer(reply, deleted);
            }
            Command::TokenInsert { token, reply } => {
                let inserted = self.token_insert(&token)?;
                cx.answer(reply, inserted);
            }
            Command::TokenList { reply } => {
                let tokens = self.token_list()?;
                cx.answer(reply, Ok(tokens));
            }
            Command::TokenDelete { id, reply } => {
                let deleted = self.conn.prepare_cached(sql::TOKEN_DELETE)?.execute([id])? > 0;
                cx.answer(reply, Ok(deleted));
            }
            Command::Redrive { params, reply } => {
                let moved = self.redrive(params, cx)?;
                cx.answer(reply, moved);
            }
            Command::Prune { limit, reply } => {
                let pruned = self.prune(limit, cx)?;
                cx.answer(reply, Ok(pruned));
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
            // Taken out of the batch by `run`.
            Command::Shutdown { reply } => cx.answer(reply, Ok(())),
        }
        Ok(())
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
        let limit = i64::from(params.limit);
        let mut stmt = self.conn.prepare_cached(sql::JOB_LIST_STATE)?;
        // One index range per state, merged: newest first across states without a sort of the
        // whole queue.
        let mut jobs = Vec::new();
        for state in states {
            let rows = stmt
                .query_map(params![params.queue.as_str(), state.as_str(), before, params.kind, limit], rows::summary)?;
            for row in rows {
                jobs.push(row?);
            }
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
        jobs.truncate(params.limit as usize);
        let next_cursor = if jobs.len() == params.limit as usize { jobs.last().map(|j| j.id) } else { None };
        Ok(Ok(JobPage { jobs, next_cursor }))
    }

    fn lease(&mut self, params: &JobLeaseParams, cx: &mut Batch) -> rusqlite::Result<Vec<LeasedJob>> {
        let now = cx.now;
        let worker = self.mem.worker_seen(&params.worker_id, params.host.as_deref(), &params.queues, now);
        let queues: Vec<usize> = params.queues.iter().filter_map(|q| self.mem.queue_index(q.as_str())).collect();
        let mut room: Vec<u64> = queues.iter().map(|&i| self.mem.queues[i].startable(now)).collect();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < params.max as usize && bytes < params.max_bytes {
            // The best head across the asked queues: highest priority, then oldest.
            let mut best: Option<(usize, ReadyKey)> = None;
            for (pos, &i) in queues.iter().enumerate() {
                if room[pos] == 0 {
                    continue;
                }
                if let Some(&head) = self.mem.queues[i].ready.first()
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
            let (mut job, max_override, ready_at, version) =
                self.conn.prepare_cached(sql::JOB_LEASE_READ)?.query_row([key.id], |row| {
                    let max_attempts: Option<u32> = row.get(3)?;
                    Ok((
                        LeasedJob {
                            id: JobId::from_raw(key.id),
                            queue: self.mem.queues[q].name.clone(),
                            kind: row.get(0)?,
                            payload: row.get(1)?,
                            attempt: row.get::<_, u32>(2)? + 1,
                            max_attempts: 0,
                            timeout_ms: row.get::<_, Option<i64>>(4)?.map(|v| v.max(0) as u64),
                            metadata: rows::metadata_from(row.get(5)?),
                            priority: row.get(6)?,
                            lease_token: token,
                            lease_expires_at: expires_at,
                        },
                        max_attempts,
                        row.get::<_, i64>(7)?,
                        row.get::<_, i64>(8)? + 1,
                    ))
                })?;
            let changed = self.conn.prepare_cached(sql::JOB_LEASE)?.execute(params![
                key.id,
                token.raw(),
                expires_at.as_millis(),
                lease_ms as i64,
                params.worker_id,
                now.as_millis(),
                rows::secret_bytes(token),
            ])?;
            debug_assert_eq!(changed, 1, "the ready index and the rows agree");
            let queue = &mut self.mem.queues[q];
            job.max_attempts = max_override.unwrap_or(queue.policy.max_attempts);
            queue.count_move(Some(JobState::Ready), Some(JobState::Running));
            queue.counters.started += 1;
            queue.counters.wait.observe_ms(now.millis_since(Timestamp::from_millis(ready_at)));
            cx.event(queue, key.id, version, EventKind::State, JobState::Running, job.attempt);
            self.mem.insert_lease(
                key.id,
                Lease {
                    token: job.lease_token,
                    expires_at,
                    queue: q,
                    lease_ms,
                    started_at: now,
                    attempt: job.attempt,
                    max_attempts: max_override,
                    cancel_requested: false,
                    worker: Arc::clone(&worker),
                    version,
                    priority: job.priority,
                    ready_at,
                },
            );
            bytes += job.payload.len();
            out.push(job);
        }
        Ok(out)
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

    /// The lease if `token` holds job `id` now. Callers write with the lease's own token.
    fn fenced(&self, id: JobId, token: LeaseToken) -> rusqlite::Result<Result<Lease, StoreError>> {
        match self.mem.leases.get(&id.raw()) {
            Some(lease) if crate::core::lease::check_fence(JobState::Running, Some(lease.token), token).is_ok() => {
                Ok(Ok(lease.clone()))
            }
            Some(lease) if FailPoint::SkipFencing.active() => Ok(Ok(lease.clone())),
            _ => Ok(Err(self.fence_error(id)?)),
        }
    }

    fn heartbeat(&mut self, params: LeaseHeartbeatParams, cx: &mut Batch) -> rusqlite::Result<StoreResult<Heartbeat>> {
        let lease = match self.fenced(params.id, params.lease_token)? {
            Ok(lease) => lease,
            Err(err) => return Ok(Err(err)),
        };
        let expires_at = cx.now.plus_millis(params.extend_ms.unwrap_or(lease.lease_ms));
        let changed = self.conn.prepare_cached(sql::LEASE_HEARTBEAT)?.execute(params![
            params.id.raw(),
            expires_at.as_millis(),
            params.progress,
            lease.token.raw()
        ])?;
        debug_assert_eq!(changed, 1);
        self.mem.extend_lease(params.id.raw(), expires_at);
        if let Some(seen) = self.mem.workers.get_mut(&lease.worker) {
            seen.last_seen = cx.now;
        }
        if let Some(progress) = params.progress {
            let version = lease.version + 1;
            if let Some(held) = self.mem.leases.get_mut(&params.id.raw()) {
                held.version = version;
            }
            let queue = &self.mem.queues[lease.queue];
            cx.event(queue, params.id.raw(), version, EventKind::Progress, JobState::Running, lease.attempt).data =
                Some(progress);
        }
        Ok(Ok(Heartbeat { lease_expires_at: expires_at, cancel_requested: lease.cancel_requested }))
    }

    fn complete(&mut self, params: JobCompleteParams, cx: &mut Batch) -> rusqlite::Result<StoreResult<Settled>> {
        let lease = match self.fenced(params.id, params.lease_token)? {
            Ok(lease) => lease,
            Err(err) => return Ok(Err(err)),
        };
        let changed = self.conn.prepare_cached(sql::JOB_COMPLETE)?.execute(params![
            params.id.raw(),
            params.result,
            cx.now.as_millis(),
            lease.token.raw()
        ])?;
        debug_assert_eq!(changed, 1);
        let (version, attempt) = (lease.version + 1, lease.attempt);
        self.mem.remove_lease(params.id.raw());
        let queue = &mut self.mem.queues[lease.queue];
        debug_assert!(state::allowed(JobState::Running, JobState::Succeeded));
        queue.count_move(Some(JobState::Running), Some(JobState::Succeeded));
        queue.counters.succeeded += 1;
        queue.counters.run.observe_ms(cx.now.millis_since(lease.started_at));
        cx.event(queue, params.id.raw(), version, EventKind::State, JobState::Succeeded, attempt).data = params.result;
        cx.maybe_ready = true;
        Ok(Ok(Settled { state: JobState::Succeeded, run_at: None }))
    }

    fn fail(&mut self, params: JobFailParams, cx: &mut Batch) -> rusqlite::Result<StoreResult<Settled>> {
        let lease = match self.fenced(params.id, params.lease_token)? {
            Ok(lease) => lease,
            Err(err) => return Ok(Err(err)),
        };
        let settled = self.fail_attempt(params.id, &lease, params.error, params.retryable, params.retry_in_ms, cx)?;
        Ok(Ok(settled))
    }

    /// Ends a failed attempt under a lease that passed the fencing check (or ran out).
    fn fail_attempt(
        &mut self,
        id: JobId,
        lease: &Lease,
        error: String,
        retryable: bool,
        retry_in_ms: Option<u64>,
        cx: &mut Batch,
    ) -> rusqlite::Result<Settled> {
        let policy = &self.mem.queues[lease.queue].policy;
        let failed = FailedAttempt {
            attempt: lease.attempt,
            max_attempts: lease.max_attempts.unwrap_or(policy.max_attempts),
            retryable,
            cancel_requested: lease.cancel_requested,
            retry_in_ms,
        };
        let after = state::after_failure(failed, &policy.backoff, cx.now, &mut self.rng);
        let next = after.state(cx.now);
        debug_assert!(state::allowed(JobState::Running, next));
        let run_at = match after {
            AfterFailure::Retry { run_at } => Some(run_at),
            AfterFailure::Dead | AfterFailure::Canceled => None,
        };
        let finished_at = next.is_terminal().then_some(cx.now.as_millis());
        let changed = self.conn.prepare_cached(sql::JOB_FAIL)?.execute(params![
            id.raw(),
            next.as_str(),
            run_at.map(Timestamp::as_millis),
            finished_at,
            cx.now.as_millis(),
            error,
            lease.token.raw(),
        ])?;
        debug_assert_eq!(changed, 1);
        let (version, attempt, priority) = (lease.version + 1, lease.attempt, lease.priority);
        let row_run_at = run_at.map_or(lease.ready_at, Timestamp::as_millis);
        self.mem.remove_lease(id.raw());
        match next {
            JobState::Ready => {
                self.mem.queues[lease.queue].ready.insert(ReadyKey::new(
                    priority,
                    Timestamp::from_millis(row_run_at),
                    id.raw(),
                ));
            }
            JobState::Scheduled => drop(self.mem.scheduled.insert((row_run_at, id.raw()))),
            _ => {}
        }
        let queue = &mut self.mem.queues[lease.queue];
        queue.count_move(Some(JobState::Running), Some(next));
        queue.counters.failed += 1;
        queue.counters.run.observe_ms(cx.now.millis_since(lease.started_at));
        match after {
            AfterFailure::Retry { .. } => queue.counters.retried += 1,
            AfterFailure::Dead => queue.counters.dead += 1,
            AfterFailure::Canceled => queue.counters.canceled += 1,
        }
        if error == LEASE_EXPIRED {
            queue.counters.expired += 1;
        }
        let event = cx.event(queue, id.raw(), version, EventKind::State, next, attempt);
        event.error = Some(error);
        event.run_at = run_at;
        cx.maybe_ready = true;
        Ok(Settled { state: next, run_at })
    }

    fn release(&mut self, id: JobId, token: LeaseToken, cx: &mut Batch) -> rusqlite::Result<StoreResult<Settled>> {
        let lease = match self.fenced(id, token)? {
            Ok(lease) => lease,
            Err(err) => return Ok(Err(err)),
        };
        let next = state::after_release(lease.cancel_requested);
        let finished_at = next.is_terminal().then_some(cx.now.as_millis());
        let changed = self.conn.prepare_cached(sql::JOB_RELEASE)?.execute(params![
            id.raw(),
            next.as_str(),
            finished_at,
            lease.token.raw()
        ])?;
        debug_assert_eq!(changed, 1);
        let (version, attempt, priority, run_at) =
            (lease.version + 1, lease.attempt - 1, lease.priority, lease.ready_at);
        self.mem.remove_lease(id.raw());
        let queue = &mut self.mem.queues[lease.queue];
        if next == JobState::Ready {
            // Back to its old place in line: it was ready before this lease, and still is.
            queue.ready.insert(ReadyKey::new(priority, Timestamp::from_millis(run_at), id.raw()));
        } else {
            queue.counters.canceled += 1;
        }
        queue.count_move(Some(JobState::Running), Some(next));
        queue.counters.released += 1;
        cx.event(queue, id.raw(), version, EventKind::State, next, attempt);
        cx.maybe_ready = true;
        Ok(Ok(Settled { state: next, run_at: None }))
    }

    /// Releases leases whose caller went away before it got them; they were never worked on.
    fn release_orphans(&mut self, cx: &mut Batch) -> rusqlite::Result<()> {
        for (id, token) in std::mem::take(&mut self.orphans) {
            if let Err(err) = self.release(id, token, cx)? {
                tracing::debug!(job_id = %id, error = %err, "orphaned lease already settled");
            }
        }
        Ok(())
    }

    fn cancel(&mut self, id: JobId, cx: &mut Batch) -> rusqlite::Result<StoreResult<Canceled>> {
        if let Some(lease) = self.mem.leases.get_mut(&id.raw()) {
            if !lease.cancel_requested {
                // Not an event of its own: the worker learns it on its next heartbeat, and the
                // stream shows the job ending `canceled`.
                self.conn.prepare_cached(sql::JOB_CANCEL_REQUEST)?.execute([id.raw()])?;
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
                self.conn.prepare_cached(sql::JOB_CANCEL_NOW)?.execute(params![id.raw(), cx.now.as_millis()])?;
                let version = version + 1;
                let Some(q) = self.mem.queue_index(&queue_name) else {
                    return Err(rusqlite::Error::QueryReturnedNoRows);
                };
                if current == JobState::Ready {
                    self.mem.queues[q].ready.remove(&ReadyKey::new(priority, Timestamp::from_millis(run_at), id.raw()));
                } else {
                    self.mem.scheduled.remove(&(run_at, id.raw()));
                }
                let queue = &mut self.mem.queues[q];
                queue.count_move(Some(current), Some(JobState::Canceled));
                queue.counters.canceled += 1;
                cx.event(queue, id.raw(), version, EventKind::State, JobState::Canceled, attempt);
                Ok(Ok(Canceled { state: JobState::Canceled, cancel_requested: false }))
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

    fn redrive(&mut self, params: DeadRedriveParams, cx: &mut Batch) -> rusqlite::Result<StoreResult<Vec<JobId>>> {
        let Some(q) = self.mem.queue_index(params.queue.as_str()) else {
            return Ok(Err(StoreError::QueueNotFound(params.queue)));
        };
        let ids: Vec<i64> = match params.ids {
            None => {
                let mut stmt = self.conn.prepare_cached(sql::DEAD_OF_QUEUE)?;
                let ids = stmt.query_map([params.queue.as_str()], |row| row.get(0))?;
                ids.collect::<rusqlite::Result<_>>()?
            }
            Some(ids) => {
                // Check every id first, so a bad one changes nothing.
                let unique: BTreeSet<i64> = ids.iter().map(|id| id.raw()).collect();
                for &raw in &unique {
                    let id = JobId::from_raw(raw);
                    let found = self
                        .conn
                        .prepare_cached(sql::JOB_QUEUE_STATE)?
                        .query_row([raw], |row| Ok((row.get::<_, String>(0)?, rows::state(row, 1)?)))
                        .optional()?;
                    match found {
                        Some((queue, state)) if queue == params.queue.as_str() => {
                            if let Err(source) = state::redrive(state) {
                                return Ok(Err(StoreError::Illegal { id, source }));
                            }
                        }
                        _ => return Ok(Err(StoreError::JobNotFound(id))),
                    }
                }
                unique.into_iter().collect()
            }
        };
        let mut moved = Vec::with_capacity(ids.len());
        for raw in ids {
            let (priority, version): (i32, i64) = self
                .conn
                .prepare_cached(sql::DEAD_REDRIVE)?
                .query_row(params![raw, cx.now.as_millis()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            let queue = &mut self.mem.queues[q];
            queue.ready.insert(ReadyKey::new(priority, cx.now, raw));
            queue.count_move(Some(JobState::Dead), Some(JobState::Ready));
            cx.event(queue, raw, version, EventKind::State, JobState::Ready, 0);
            moved.push(JobId::from_raw(raw));
        }
        cx.maybe_ready |= !moved.is_empty();
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
    fn maintain(&mut self, cx: &mut Batch) -> rusqlite::Result<()> {
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
                    ))
                })
                .optional()?;
            let Some((queue_name, priority, run_at, attempt, version)) = promoted else { continue };
            self.conn.prepare_cached(sql::JOB_PROMOTE)?.execute([id])?;
            let version = version + 1;
            let Some(q) = self.mem.queue_index(&queue_name) else { continue };
            let queue = &mut self.mem.queues[q];
            queue.ready.insert(ReadyKey::new(priority, Timestamp::from_millis(run_at), id));
            queue.count_move(Some(JobState::Scheduled), Some(JobState::Ready));
            cx.event(queue, id, version, EventKind::State, JobState::Ready, attempt);
            cx.maybe_ready = true;
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
            let settled = self.fail_attempt(job, &lease, LEASE_EXPIRED.to_owned(), true, None, cx)?;
            tracing::info!(job_id = %job, queue = %self.mem.queues[lease.queue].name, attempt = lease.attempt,
                state = %settled.state, "lease expired");
        }
        Ok(())
    }

    /// Answers parked lease requests: with jobs if some became available, empty at their
    /// deadline or on shutdown; drops those whose caller has gone.
    fn serve_waiters(&mut self, cx: &mut Batch) -> rusqlite::Result<()> {
        if self.waiters.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let rate_limited = self.mem.queues.iter().any(|q| q.policy.rate.is_some());
        let try_lease = cx.maybe_ready || rate_limited;
        let mut kept = Vec::with_capacity(self.waiters.len());
        for waiter in std::mem::take(&mut self.waiters) {
            if waiter.reply.is_closed() {
                continue;
            }
            if try_lease {
                let jobs = self.lease(&waiter.params, cx)?;
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
                host: seen.host.clone(),
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
