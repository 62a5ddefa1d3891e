//! The PostgreSQL store: many `wharf serve` nodes on one database.
//!
//! # Overview
//!
//! PostgreSQL is the shared truth; a node holds nothing another node needs. Each operation is
//! one transaction on a pooled connection: decisions come from [`crate::core`], the SQL of
//! [`sql`] writes them, and row locks serialise the nodes (`FOR UPDATE SKIP LOCKED` hands each
//! ready job to one lease; a queue with a concurrency or rate limit is locked by the leases
//! that take from it, so the limit holds across nodes). Every write matches the lease the
//! caller presented, so fencing is the database's rule as much as ours.
//!
//! # Time, ids, events, leadership
//!
//! - **Time** comes from the clock the store is given: in `wharf serve`, a [`DbClock`] that
//!   keeps this node's clock corrected to the database's, so skewed nodes cannot expire leases
//!   early. Tests drive a manual clock.
//! - **Ids and lease sequences** are this millisecond's time bits over low bits from a
//!   database sequence: unique across nodes, in time order.
//! - **Events**: a transaction that changes jobs stores its events as one row of
//!   `wharf.events`; after the commit, the node's notifier announces its `seq`. Every node
//!   (this one included) listens, reads the rows in notification order — one global order —
//!   and publishes them on its own bus, so every node sees the same events in the same order
//!   with the same ids: a client that moves from node A to node C resumes with its
//!   `Last-Event-ID`. A notification carries a position, never a payload (progress can be
//!   256 KiB; a notification, 8,000 bytes).
//! - **Long polls** wait on this node for a notification of ready work on their queues, from
//!   any node, then try again.
//! - **Leadership**: one node at a time holds an advisory lock on a connection of its own and
//!   runs maintenance (promotion of due jobs, expiry of leases, pruning). If it dies, its
//!   connection closes, the lock is free, and another node takes it within a second or two.
//!
//! # Failure handling
//!
//! A database that cannot be reached fails the operation with [`StoreError::Unavailable`]
//! (503; nothing was acknowledged); the pool reconnects by itself. The event listener
//! reconnects with backoff and catches up from the last row it read. A transaction that fails
//! is rolled back whole.

mod batcher;
mod clock;
mod connect;
mod listener;
mod notifier;
mod sql;
mod vacuum;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

pub use clock::DbClock;
pub use connect::Connector;
use connect::describe;

use crate::core::backoff::Backoff;
use crate::core::state::{self, AfterFailure, CancelEffect, FailedAttempt, Reason};
use crate::core::{
    Clock, Invalid, Job, JobId, JobState, LeaseToken, NewJob, QueueName, QueuePolicy, QueuePolicyPatch, Timestamp,
};
use crate::events::{EventBus, EventKind, JobEvent};
use crate::metrics::{MetricsSnapshot, QueueCounters, QueueMetrics, StoreMetrics};
use crate::store::columns::{errors_from, metadata_from, metadata_to};
use crate::store::{
    Acked, Canceled, DeadRedriveParams, Heartbeat, Inserted, JobAckParams, JobCompleteParams, JobFailParams,
    JobLeaseParams, JobListParams, JobPage, JobReleaseParams, JobSummary, Leadership, LeaseHeartbeatParams, LeasedJob,
    PoolRecord, QueueBacklog, QueueInfo, Settled, Store, StoreError, StoreResult, TokenRecord, WORKER_TTL_MS,
    WorkerInfo, WorkerPresence,
};

/// How the PostgreSQL store is set up.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`, with `?sslmode=require` for TLS.
    pub url: String,
    /// Certificates to trust, besides the system's, for a TLS connection. Defaults to none.
    pub ca_file: Option<std::path::PathBuf>,
    /// Connections per node (the event listener, the notifier and the leader's lock take one
    /// more each). Defaults to 16.
    pub pool_size: usize,
    /// Most queues. Defaults to 1,000.
    pub max_queues: usize,
    /// How long the events of a transaction stay in `wharf.events` for nodes to read.
    /// Defaults to 10 minutes.
    pub event_retention: Duration,
}

impl PgConfig {
    /// The defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            ca_file: None,
            pool_size: 16,
            max_queues: 1_000,
            event_retention: Duration::from_secs(600),
        }
    }
}

/// The database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The URL is not a PostgreSQL URL.
    #[error("--database-url is not a usable PostgreSQL URL: {0}")]
    Url(String),
    /// The database cannot be reached or refused us.
    #[error("cannot reach PostgreSQL: {0}")]
    Connect(String),
    /// The CA file for TLS cannot be used.
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    /// The schema belongs to a newer wharf.
    #[error("the database's wharf schema is at version {found}, newer than this wharf knows ({known}); upgrade wharf")]
    TooNew {
        /// Its version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
}

/// The PostgreSQL store.
pub struct PgStore {
    shared: Arc<Shared>,
    config: PgConfig,
    /// Opens the connections outside the pool (the leader's).
    connector: Connector,
    /// Bumped when a notification says work became ready: long polls wait on it.
    ready: watch::Receiver<u64>,
    /// When this node last wrote each worker's row (at most once a second per worker), and
    /// whether the row said it is draining.
    workers_written: Mutex<HashMap<String, (Timestamp, bool)>>,
    /// The connection that asks for the leader lock, and whether it holds it: kept open between
    /// tries, so a follower does not connect anew every tick.
    leader: tokio::sync::Mutex<Option<(tokio_postgres::Client, bool)>>,
    /// Draws the secrets of lease tokens.
    secrets: Mutex<rand::rngs::StdRng>,
    rng: Mutex<fastrand::Rng>,
    /// Single enqueues on their way into a shared transaction.
    batched: tokio::sync::mpsc::UnboundedSender<batcher::Pending>,
    /// The leader's vacuum of the tables that churn.
    vacuum: vacuum::Vacuum,
    closed: CancellationToken,
}

/// What the store's operations and its background tasks (the insert batcher) share; opaque.
pub struct Shared {
    pool: Pool,
    clock: Arc<dyn Clock>,
    /// What this node counted since it started (`/metrics` counters are per node).
    counters: Mutex<HashMap<String, QueueCounters>>,
    /// Tells the other nodes (and this one) which events rows were committed.
    notify: tokio::sync::mpsc::UnboundedSender<i64>,
    /// This node's committed events rows, for its own listener.
    own: Arc<listener::OwnRows>,
    /// The block of unique numbers this node uses next: `(next, end)`.
    ids: tokio::sync::Mutex<(i64, i64)>,
    /// Policies of queues this node saw recently, so a single enqueue to a known queue can
    /// skip reading it: `(policy, when read)`.
    queues: Mutex<HashMap<String, (QueuePolicy, std::time::Instant)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// How long a cached queue policy is trusted.
const QUEUE_CACHE_TTL: Duration = Duration::from_secs(1);

impl std::ops::Deref for PgStore {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("pool_size", &self.config.pool_size).finish_non_exhaustive()
    }
}

/// One event as stored in `wharf.events`: a row holds a JSON array of them (written by a node)
/// or their [`StoredColumns`] (built by a statement in the database).
#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    job: i64,
    queue: String,
    version: u64,
    kind: u8,
    state: String,
    attempt: u32,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_at: Option<i64>,
}

impl StoredEvent {
    fn new(
        job: JobId,
        queue: &str,
        version: i64,
        kind: EventKind,
        state: JobState,
        attempt: u32,
        at: Timestamp,
    ) -> Self {
        StoredEvent {
            job: job.raw(),
            queue: queue.to_owned(),
            version: version.max(0) as u64,
            kind: match kind {
                EventKind::Created => 0,
                EventKind::State => 1,
                EventKind::Progress => 2,
            },
            state: state.as_str().to_owned(),
            attempt,
            at: at.as_millis(),
            data: None,
            error: None,
            run_at: None,
        }
    }

    /// The bus event, numbered `seq`.
    fn into_event(self, seq: u64) -> Option<JobEvent> {
        Some(JobEvent {
            seq,
            job_id: JobId::from_raw(self.job),
            queue: Arc::from(self.queue.as_str()),
            version: self.version,
            kind: match self.kind {
                0 => EventKind::Created,
                1 => EventKind::State,
                _ => EventKind::Progress,
            },
            state: self.state.parse().ok()?,
            attempt: self.attempt,
            at: Timestamp::from_millis(self.at),
            data: self.data,
            error: self.error,
            run_at: self.run_at.map(Timestamp::from_millis),
            superseded: false,
        })
    }
}

/// The events of one statement as the database builds them itself: one array per field (far
/// cheaper for it than an object per event), a field that all share given once.
#[derive(Debug, Deserialize)]
struct StoredColumns {
    kind: u8,
    at: i64,
    job: Vec<i64>,
    queue: Vec<String>,
    version: OneOrEach<u64>,
    state: OneOrEach<String>,
    attempt: OneOrEach<u32>,
    #[serde(default)]
    data: Option<Vec<Option<String>>>,
    #[serde(default)]
    run_at: Option<Vec<i64>>,
}

/// A field of [`StoredColumns`]: the same for every event, or one per event.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrEach<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> OneOrEach<T> {
    fn at(&self, i: usize) -> Option<T> {
        match self {
            OneOrEach::One(value) => Some(value.clone()),
            OneOrEach::Each(values) => values.get(i).cloned(),
        }
    }
}

impl StoredEvent {
    /// The events of a `wharf.events` row: a JSON array of events, or [`StoredColumns`].
    fn parse_row(text: &str) -> Result<Vec<StoredEvent>, String> {
        if !text.trim_start().starts_with('{') {
            return serde_json::from_str(text).map_err(|e| e.to_string());
        }
        let columns: StoredColumns = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let each = |i: usize| -> Option<StoredEvent> {
            Some(StoredEvent {
                job: *columns.job.get(i)?,
                queue: columns.queue.get(i)?.clone(),
                version: columns.version.at(i)?,
                kind: columns.kind,
                state: columns.state.at(i)?,
                attempt: columns.attempt.at(i)?,
                at: columns.at,
                data: match &columns.data {
                    Some(data) => data.get(i)?.clone(),
                    None => None,
                },
                error: None,
                run_at: match &columns.run_at {
                    Some(run_at) => Some(*run_at.get(i)?),
                    None => None,
                },
            })
        };
        (0..columns.job.len()).map(|i| each(i).ok_or_else(|| format!("event {i} lacks a field"))).collect()
    }
}

/// Unique numbers a node takes from the sequence at once (its increment).
const ID_BLOCK: i64 = 4096;

/// Events of one row of `wharf.events` are numbered `seq << EVENT_BITS | index`.
const EVENT_BITS: u32 = 16;

/// An id of `now` from a unique number: time order from the high bits, uniqueness across
/// nodes from the sequence in the low ones.
fn compose(now: Timestamp, unique: i64) -> i64 {
    JobId::floor_at(now).raw() | (unique & crate::core::id::SEQ_MASK)
}

/// Maps a database error to the store's.
fn db_error(err: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        if *db.code() == SqlState::DISK_FULL || *db.code() == SqlState::OUT_OF_MEMORY {
            return StoreError::Full;
        }
        if *db.code() == SqlState::TOO_MANY_CONNECTIONS {
            return StoreError::Busy;
        }
        return StoreError::Unavailable(format!("{}: {}", db.code().code(), db.message()));
    }
    StoreError::Unavailable(describe(err))
}

fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {}", describe(&err)))
}

/// A statement prepared once per connection (a plain `query` with text would prepare it on
/// every call: one more round trip each time).
macro_rules! prep {
    ($client:expr, $sql:expr) => {
        $client.prepare_cached($sql).await.map_err(|e| db_error(&e))?
    };
}

/// `?` on a database call inside an operation.
macro_rules! db {
    ($e:expr) => {
        $e.await.map_err(|e| db_error(&e))?
    };
}

fn job_state(text: &str) -> StoreResult<JobState> {
    text.parse().map_err(|_| StoreError::Unavailable(format!("unknown job state {text:?} in the database")))
}

fn queue_name(text: &str) -> StoreResult<QueueName> {
    QueueName::parse(text).map_err(|_| StoreError::Unavailable(format!("invalid queue name {text:?} in the database")))
}

fn summary(row: &tokio_postgres::Row) -> StoreResult<JobSummary> {
    Ok(JobSummary {
        id: JobId::from_raw(row.get(0)),
        queue: queue_name(row.get(1))?,
        kind: row.get(2),
        state: job_state(row.get(3))?,
        priority: row.get(4),
        run_at: Timestamp::from_millis(row.get(5)),
        attempt: row.get::<_, i32>(6).max(0) as u32,
        max_attempts: row.get::<_, Option<i32>>(7).map(|n| n.max(1) as u32),
        idempotency_key: row.get(8),
        created_at: Timestamp::from_millis(row.get(9)),
        finished_at: row.get::<_, Option<i64>>(10).map(Timestamp::from_millis),
    })
}

fn policy(row: &tokio_postgres::Row) -> QueuePolicy {
    QueuePolicy {
        lease_ms: row.get::<_, i64>(1).max(1) as u64,
        max_attempts: row.get::<_, i32>(2).max(1) as u32,
        backoff: Backoff {
            base_ms: row.get::<_, i64>(3).max(0) as u64,
            factor: row.get(4),
            cap_ms: row.get::<_, i64>(5).max(0) as u64,
        },
        retention_ms: row.get::<_, i64>(6).max(1) as u64,
        concurrency: row.get::<_, Option<i32>>(7).map(|n| n.max(1) as u32),
        rate: row.get(8),
        paused: row.get(9),
        max_ready: row.get::<_, Option<i64>>(10).map(|n| n.max(1) as u64),
    }
}

/// A job just inserted: its `created` event and what its enqueue answers.
fn fresh_job(id: JobId, job: &NewJob, run_at: Timestamp, now: Timestamp) -> (StoredEvent, Inserted) {
    let state = state::waiting_state(run_at, now);
    let mut event = StoredEvent::new(id, job.queue.as_str(), 1, EventKind::Created, state, 0, now);
    event.run_at = Some(run_at.as_millis());
    let summary = JobSummary {
        id,
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        state,
        priority: job.priority,
        run_at,
        attempt: 0,
        max_attempts: job.max_attempts,
        idempotency_key: job.idempotency_key.clone(),
        created_at: now,
        finished_at: None,
    };
    (event, Inserted { job: summary, created: true })
}

fn secret_bytes(token: LeaseToken) -> Option<Vec<u8>> {
    (token.secret() != 0).then(|| token.secret().to_be_bytes().to_vec())
}

/// How an attempt failed.
struct Failure {
    error: String,
    retryable: bool,
    retry_in_ms: Option<u64>,
    reason: Reason,
}

/// What a failed attempt decides on, read under the row's lock.
struct FailFacts {
    attempt: u32,
    max_attempts: u32,
    cancel_requested: bool,
    backoff: Backoff,
    queue: String,
    version: i64,
    started_at: Option<i64>,
}

impl FailFacts {
    /// From `JOB_FENCED_FOR_UPDATE` (offset 0) or `EXPIRED_LEASES` (offset 3).
    fn read(row: &tokio_postgres::Row, at: usize) -> Self {
        FailFacts {
            attempt: row.get::<_, i32>(at).max(0) as u32,
            max_attempts: row.get::<_, i32>(at + 1).max(1) as u32,
            cancel_requested: row.get(at + 2),
            backoff: Backoff {
                base_ms: row.get::<_, i64>(at + 3).max(0) as u64,
                factor: row.get(at + 4),
                cap_ms: row.get::<_, i64>(at + 5).max(0) as u64,
            },
            queue: row.get(at + 6),
            version: row.get(at + 7),
            started_at: row.get(at + 8),
        }
    }
}

/// Adds a value to one of a queue's counters.
type Count = fn(&mut QueueCounters, u64);

/// The changes of one transaction: its events, and what this node counts once it commits.
#[derive(Default)]
struct Changes {
    events: Vec<StoredEvent>,
    counted: Vec<(String, Count, u64)>,
}

impl Changes {
    fn count(&mut self, queue: &str, what: Count, value: u64) {
        self.counted.push((queue.to_owned(), what, value));
    }
}

impl PgStore {
    /// Connects, applies migrations under a lock (safe when several nodes start at once),
    /// and starts the event listener.
    pub async fn open(config: PgConfig, clock: Arc<dyn Clock>, events: Arc<EventBus>) -> Result<Self, PgOpenError> {
        let pg = Connector::new(&config.url, config.ca_file.as_deref())?;
        let pool = Pool::builder(pg.manager())
            .max_size(config.pool_size.max(2))
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PgOpenError::Connect(describe(&e)))?;
        let mut client = pool.get().await.map_err(|e| PgOpenError::Connect(describe(&e)))?;
        migrate(&mut client).await?;
        drop(client);
        let (ready_tx, ready) = watch::channel(0u64);
        let closed = CancellationToken::new();
        let own = Arc::new(listener::OwnRows::default());
        listener::start(pg.clone(), Arc::clone(&own), Arc::clone(&events), ready_tx, closed.clone())
            .await
            .map_err(|e| PgOpenError::Connect(describe(&e)))?;
        let notify = notifier::start(pg.clone(), closed.clone());
        let shared = Arc::new(Shared {
            pool,
            clock,
            counters: Mutex::new(HashMap::new()),
            notify,
            own,
            ids: tokio::sync::Mutex::new((0, 0)),
            queues: Mutex::new(HashMap::new()),
        });
        let batched = batcher::start(Arc::clone(&shared), closed.clone());
        Ok(PgStore {
            shared,
            config,
            connector: pg,
            ready,
            workers_written: Mutex::new(HashMap::new()),
            leader: tokio::sync::Mutex::new(None),
            secrets: Mutex::new(rand::SeedableRng::from_os_rng()),
            rng: Mutex::new(fastrand::Rng::new()),
            batched,
            vacuum: vacuum::Vacuum::new(),
            closed,
        })
    }
}

impl Shared {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// `n` numbers no other node will use: from blocks of [`ID_BLOCK`] that this node takes
    /// from the database's sequence, so most ids cost no round trip.
    async fn unique_numbers(&self, tx: &impl deadpool_postgres::GenericClient, n: usize) -> StoreResult<Vec<i64>> {
        let mut block = self.ids.lock().await;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if block.0 >= block.1 {
                let blocks = (n - out.len()).div_ceil(ID_BLOCK as usize).max(1) as i32;
                // On the caller's connection: taking another could wait on a pool that callers
                // like this one have emptied.
                let starts: Vec<i64> =
                    db!(tx.query(&prep!(tx, sql::NEXT_IDS), &[&blocks])).iter().map(|r| r.get(0)).collect();
                // Blocks need not be adjacent: use them one after another.
                for start in starts {
                    let take = (n - out.len()).min(ID_BLOCK as usize) as i64;
                    out.extend(start..start + take);
                    *block = (start + take, start + ID_BLOCK);
                }
                continue;
            }
            let take = ((n - out.len()) as i64).min(block.1 - block.0);
            out.extend(block.0..block.0 + take);
            block.0 += take;
        }
        Ok(out)
    }

    /// Writes the transaction's events (one row), commits, then has the row announced and
    /// counts what happened.
    async fn commit(&self, tx: deadpool_postgres::Transaction<'_>, changes: Changes) -> StoreResult<()> {
        let mut row = None;
        if !changes.events.is_empty() {
            let text = serde_json::to_string(&changes.events)
                .map_err(|e| StoreError::Unavailable(format!("cannot encode events: {e}")))?;
            let inserted = db!(tx.query_one(&prep!(tx, sql::EVENTS_INSERT), &[&self.now().as_millis(), &text]));
            row = Some((inserted.get::<_, i64>(0), text.len()));
        }
        db!(tx.commit());
        self.committed(row.map(|(seq, bytes)| (seq, changes.events, bytes)), changes.counted);
        Ok(())
    }

    /// After a commit: has its events row (`seq`, events, about how many bytes) announced,
    /// and counts what happened.
    fn committed(&self, row: Option<(i64, Vec<StoredEvent>, usize)>, counted: Vec<(String, Count, u64)>) {
        if let Some((seq, events, bytes)) = row {
            self.own.keep(seq, events, bytes);
            // Only a node that is shutting down has no notifier left.
            let _ = self.notify.send(seq);
        }
        if !counted.is_empty() {
            let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            for (queue, what, value) in counted {
                what(counters.entry(queue).or_default(), value);
            }
        }
    }

    /// A queue's policy as this node saw it in the last [`QUEUE_CACHE_TTL`].
    fn cached_policy(&self, name: &str) -> Option<QueuePolicy> {
        let cache = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(name).filter(|(_, at)| at.elapsed() < QUEUE_CACHE_TTL).map(|(p, _)| p.clone())
    }

    fn remember_policy(&self, name: &str, policy: Option<&QueuePolicy>) {
        let mut cache = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        match policy {
            Some(p) => drop(cache.insert(name.to_owned(), (p.clone(), std::time::Instant::now()))),
            None => drop(cache.remove(name)),
        }
        // Bounded like the queues themselves: forget stale entries once in a while.
        if cache.len() > 4_096 {
            cache.retain(|_, (_, at)| at.elapsed() < QUEUE_CACHE_TTL);
        }
    }
}

impl PgStore {
    /// Makes sure `name` exists, creating it with the default policy; refused past the limit.
    async fn ensure_queue(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        name: &QueueName,
    ) -> StoreResult<QueuePolicy> {
        if let Some(row) = db!(tx.query_opt(&prep!(tx, sql::QUEUE_GET), &[&name.as_str()])) {
            let policy = policy(&row);
            self.remember_policy(name.as_str(), Some(&policy));
            return Ok(policy);
        }
        self.create_queue(tx, name, &QueuePolicy::default()).await?;
        Ok(QueuePolicy::default())
    }

    async fn create_queue(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        name: &QueueName,
        p: &QueuePolicy,
    ) -> StoreResult<()> {
        db!(tx.execute(&prep!(tx, sql::QUEUE_CREATE_LOCK), &[]));
        if db!(tx.query_opt(&prep!(tx, sql::QUEUE_GET), &[&name.as_str()])).is_none() {
            let count: i64 = db!(tx.query_one(&prep!(tx, sql::QUEUE_COUNT), &[])).get(0);
            if count as usize >= self.config.max_queues {
                return Err(StoreError::QueueLimit { limit: self.config.max_queues });
            }
        }
        self.write_queue(tx, name, p).await
    }

    async fn write_queue(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        name: &QueueName,
        p: &QueuePolicy,
    ) -> StoreResult<()> {
        let concurrency = p.concurrency.map(|n| n as i32);
        let max_ready = p.max_ready.map(|n| n as i64);
        db!(tx.execute(
            &prep!(tx, sql::QUEUE_UPSERT),
            &[
                &name.as_str(),
                &(p.lease_ms as i64),
                &(p.max_attempts as i32),
                &(p.backoff.base_ms as i64),
                &p.backoff.factor,
                &(p.backoff.cap_ms as i64),
                &(p.retention_ms as i64),
                &concurrency,
                &p.rate,
                &p.paused,
                &max_ready,
                &self.now().as_millis(),
            ]
        ));
        Ok(())
    }

    /// The holder of `job`'s idempotency key, if any; a conflict for another kind or payload.
    async fn holder_of_key(tx: &deadpool_postgres::Transaction<'_>, job: &NewJob) -> StoreResult<Option<JobSummary>> {
        let Some(key) = &job.idempotency_key else { return Ok(None) };
        let Some(row) = db!(tx.query_opt(&prep!(tx, sql::JOB_BY_KEY), &[&job.queue.as_str(), key])) else {
            return Ok(None);
        };
        let holder = summary(&row)?;
        let payload: String = row.get(11);
        if holder.kind != job.kind || payload != job.payload {
            return Err(StoreError::IdempotencyConflict { existing: holder.id, key: key.clone() });
        }
        Ok(Some(holder))
    }

    async fn insert(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        // An id is this millisecond over a number from this node's block; two nodes whose
        // blocks share low bits could, in one millisecond, make the same one. The primary key
        // refuses the second; taking new numbers settles it.
        for _ in 0..3 {
            if let Some(inserted) = self.insert_once(&jobs).await? {
                return Ok(inserted);
            }
        }
        Err(StoreError::Busy)
    }

    /// One try at an insert; `None` when an id collided and it must be tried again.
    async fn insert_once(&self, jobs: &[NewJob]) -> StoreResult<Option<Vec<Inserted>>> {
        let Some(first) = jobs.first() else { return Ok(Some(Vec::new())) };
        let queue = first.queue.clone();
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        let now = self.now();
        let policy = self.ensure_queue(&tx, &queue).await?;
        // Repeats of a key within the batch must ask for the same job.
        let mut in_batch: HashMap<&str, (&str, &str)> = HashMap::new();
        for job in jobs {
            if let Some(key) = &job.idempotency_key {
                let first = in_batch.entry(key).or_insert((&job.kind, &job.payload));
                if *first != (job.kind.as_str(), job.payload.as_str()) {
                    return Err(StoreError::Invalid(Invalid::new(
                        "idempotency_key",
                        format!("{key:?} is used twice in the batch with different kinds or payloads"),
                    )));
                }
            }
        }
        if let Some(limit) = policy.max_ready {
            let waiting: i64 =
                db!(tx.query_one(&prep!(tx, sql::WAITING_UP_TO), &[&queue.as_str(), &(limit as i64 + 1)])).get(0);
            if waiting as u64 + jobs.len() as u64 > limit {
                return Err(StoreError::QueueFull { queue, limit });
            }
        }
        let numbers = self.unique_numbers(&tx, jobs.len()).await?;
        let ids: Vec<i64> = numbers.iter().map(|&n| compose(now, n)).collect();
        let run_ats: Vec<i64> = jobs.iter().map(|j| j.run_at.unwrap_or(now).as_millis()).collect();
        let states: Vec<&str> =
            run_ats.iter().map(|&at| state::waiting_state(Timestamp::from_millis(at), now).as_str()).collect();
        let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
        let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
        let max_attempts: Vec<Option<i32>> = jobs.iter().map(|j| j.max_attempts.map(|n| n as i32)).collect();
        let timeouts: Vec<Option<i64>> = jobs.iter().map(|j| j.timeout_ms.map(|ms| ms as i64)).collect();
        let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.idempotency_key.as_deref()).collect();
        let payloads: Vec<&str> = jobs.iter().map(|j| j.payload.as_str()).collect();
        let metadata: Vec<Option<String>> = jobs.iter().map(|j| metadata_to(&j.metadata)).collect();
        // All jobs in one statement; those whose key another job holds come back missing.
        let inserted = tx
            .query(
                sql::JOBS_INSERT,
                &[
                    &ids,
                    &queue.as_str(),
                    &kinds,
                    &states,
                    &priorities,
                    &run_ats,
                    &max_attempts,
                    &timeouts,
                    &keys,
                    &payloads,
                    &metadata,
                    &now.as_millis(),
                ],
            )
            .await;
        let created: HashSet<i64> = match inserted {
            Ok(rows) => rows.iter().map(|r| r.get::<_, i64>(0)).collect(),
            Err(err) if err.as_db_error().is_some_and(|e| e.constraint() == Some("jobs_pkey")) => return Ok(None),
            Err(err) => return Err(db_error(&err)),
        };
        let mut changes = Changes::default();
        let mut out = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let id = JobId::from_raw(ids[i]);
            if !created.contains(&id.raw()) {
                // Its key is held (or was taken by another node just now): a repeat, or a
                // conflict that refuses the whole batch.
                match Self::holder_of_key(&tx, job).await? {
                    Some(holder) => out.push(Inserted { job: holder, created: false }),
                    None => return Err(StoreError::Unavailable("a job was neither created nor found".into())),
                }
                continue;
            }
            let (event, inserted) = fresh_job(id, job, Timestamp::from_millis(run_ats[i]), now);
            changes.events.push(event);
            out.push(inserted);
        }
        changes.count(queue.as_str(), |c, n| c.enqueued += n, created.len() as u64);
        self.commit(tx, changes).await?;
        Ok(Some(out))
    }

    /// One try at leasing: what is ready now, within the queues' limits.
    async fn lease_once(&self, params: &JobLeaseParams) -> StoreResult<Vec<LeasedJob>> {
        if let Some(leased) = self.lease_unlimited(params).await? {
            return Ok(leased);
        }
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        let now = self.now();
        let names: Vec<&str> = params.queues.iter().map(QueueName::as_str).collect();
        // Room per queue: unlimited, or what its concurrency and rate leave (under its lock).
        let policies: HashMap<String, QueuePolicy> = db!(tx.query(&prep!(tx, sql::QUEUES_OF), &[&names]))
            .iter()
            .map(|r| (r.get::<_, String>(0), policy(r)))
            .collect();
        for (name, policy) in &policies {
            self.remember_policy(name, Some(policy));
        }
        let mut room: HashMap<String, u64> =
            policies.iter().filter(|(_, p)| !p.paused).map(|(q, _)| (q.clone(), u64::MAX)).collect();
        let mut buckets: HashMap<String, (f64, f64)> = HashMap::new();
        let limited = policies.values().any(|p| !p.paused && (p.concurrency.is_some() || p.rate.is_some()));
        let locked = if limited { db!(tx.query(&prep!(tx, sql::QUEUES_LOCK_LIMITED), &[&names])) } else { Vec::new() };
        for row in locked {
            let name: String = row.get(0);
            let mut left = u64::MAX;
            if let Some(limit) = row.get::<_, Option<i32>>(1) {
                let running: i64 =
                    db!(tx.query_one(&prep!(tx, sql::RUNNING_UP_TO), &[&name, &i64::from(limit)])).get(0);
                left = left.min((i64::from(limit) - running).max(0) as u64);
            }
            if let Some(rate) = row.get::<_, Option<f64>>(2) {
                let burst = rate.max(1.0);
                let tokens = row.get::<_, Option<f64>>(3).unwrap_or(burst);
                let since = row.get::<_, Option<i64>>(4).map_or(0, |at| now.millis_since(Timestamp::from_millis(at)));
                let tokens = (tokens + since as f64 / 1000.0 * rate).min(burst);
                left = left.min(tokens.max(0.0) as u64);
                buckets.insert(name.clone(), (tokens, rate));
            }
            room.insert(name, left);
        }
        // The best ready jobs of each queue, then the best across queues.
        let mut candidates: Vec<(i32, i64, i64, String, i32, i32)> = Vec::new();
        for queue in &params.queues {
            let left = room.get(queue.as_str()).copied().unwrap_or(0).min(u64::from(params.max));
            if left == 0 {
                continue;
            }
            for row in db!(tx.query(&prep!(tx, sql::READY_OF_QUEUE), &[&queue.as_str(), &(left as i64)])) {
                candidates.push((
                    row.get(1),
                    row.get(2),
                    row.get(0),
                    queue.as_str().to_owned(),
                    row.get(3),
                    row.get(4),
                ));
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        candidates.truncate(params.max as usize);
        // An answer is bounded by its payloads' bytes: the job that reaches the bound is the
        // last (the first always goes).
        let mut bytes = 0usize;
        let fits = candidates
            .iter()
            .enumerate()
            .take_while(|(i, c)| {
                let take = *i == 0 || bytes < params.max_bytes;
                bytes += c.4.max(0) as usize;
                take
            })
            .count();
        candidates.truncate(fits.max(1));
        if candidates.is_empty() {
            db!(tx.commit());
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = candidates.iter().map(|c| c.2).collect();
        let attempts: HashMap<i64, i32> = candidates.iter().map(|c| (c.2, c.5)).collect();
        let numbers = self.unique_numbers(&tx, ids.len()).await?;
        let transition = state::lease();
        let mut new_attempts = Vec::with_capacity(ids.len());
        let mut seqs = Vec::with_capacity(ids.len());
        let mut secrets = Vec::with_capacity(ids.len());
        let mut expiries = Vec::with_capacity(ids.len());
        let mut lease_mss = Vec::with_capacity(ids.len());
        let mut tokens = HashMap::new();
        for ((&id, unique), candidate) in ids.iter().zip(numbers).zip(&candidates) {
            let before = attempts.get(&id).copied().unwrap_or(0).max(0) as u32;
            let secret: u128 = self.secrets.lock().unwrap_or_else(|p| p.into_inner()).random::<u128>().max(1);
            let token = LeaseToken::from_parts(compose(now, unique), secret);
            let lease_ms = params.lease_ms.unwrap_or_else(|| policies.get(&candidate.3).map_or(30_000, |p| p.lease_ms));
            new_attempts.push(transition.attempt_after(before) as i32);
            seqs.push(token.raw());
            secrets.push(secret.to_be_bytes().to_vec());
            expiries.push(now.plus_millis(lease_ms).as_millis());
            lease_mss.push(lease_ms as i64);
            tokens.insert(id, token);
        }
        let rows = db!(tx.query(
            &prep!(tx, sql::JOBS_LEASE),
            &[&ids, &new_attempts, &seqs, &secrets, &expiries, &params.worker_id, &now.as_millis(), &lease_mss]
        ));
        let mut changes = Changes::default();
        let mut leased = Vec::with_capacity(rows.len());
        let mut taken: HashMap<String, u64> = HashMap::new();
        for row in rows {
            let id: i64 = row.get(0);
            let queue: String = row.get(1);
            let Some(token) = tokens.get(&id).copied() else { continue };
            let p = policies.get(&queue);
            let lease_ms = params.lease_ms.unwrap_or_else(|| p.map_or(30_000, |p| p.lease_ms));
            leased.push(Self::leased_row(&row, token, lease_ms, p, now, &mut changes)?);
            *taken.entry(queue).or_default() += 1;
        }
        // Hand them out best first, as chosen (an UPDATE returns rows in no set order).
        let rank: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        leased.sort_by_key(|job| rank.get(&job.id.raw()).copied().unwrap_or(usize::MAX));
        for (queue, n) in taken {
            if let Some((tokens, _)) = buckets.get(&queue) {
                db!(tx.execute(&prep!(tx, sql::QUEUE_RATE_TAKE), &[&queue, &(tokens - n as f64), &now.as_millis()]));
            }
        }
        self.commit(tx, changes).await?;
        Ok(leased)
    }

    /// A lease in one self-committing statement, when this node saw lately that none of the
    /// queues asked has a concurrency or rate limit (most leases); `None` sends the caller the
    /// full path, which reads the policies (and remembers them for next time).
    async fn lease_unlimited(&self, params: &JobLeaseParams) -> StoreResult<Option<Vec<LeasedJob>>> {
        let mut policies = HashMap::with_capacity(params.queues.len());
        for queue in &params.queues {
            match self.cached_policy(queue.as_str()) {
                Some(policy) if policy.concurrency.is_none() && policy.rate.is_none() => {
                    policies.insert(queue.as_str().to_owned(), policy);
                }
                _ => return Ok(None),
            }
        }
        let client = self.client().await?;
        let now = self.now();
        let max = params.max.max(1) as usize;
        // A token for each job the statement may take; the unused ones are never seen.
        let numbers = self.unique_numbers(&client, max).await?;
        let seqs: Vec<i64> = numbers.iter().map(|&n| compose(now, n)).collect();
        let secrets: Vec<u128> = {
            let mut rng = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
            (0..max).map(|_| rng.random::<u128>().max(1)).collect()
        };
        let secret_bytes: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_be_bytes().to_vec()).collect();
        let names: Vec<&str> = params.queues.iter().map(QueueName::as_str).collect();
        let transition = state::lease();
        let rows = db!(client.query(
            &prep!(client, sql::JOBS_LEASE_UNLIMITED_WITH_EVENTS),
            &[
                &names,
                &(max as i64),
                &(params.max_bytes.min(i64::MAX as usize) as i64),
                &seqs,
                &secret_bytes,
                &(transition.attempt_after(0) as i32),
                &params.lease_ms.map(|ms| ms as i64),
                &now.as_millis(),
                &params.worker_id,
            ]
        ));
        drop(client);
        let mut changes = Changes::default();
        let mut leased = Vec::with_capacity(rows.len());
        let mut seq = None;
        for row in rows {
            let id: i64 = row.get(0);
            let n = row.get::<_, i64>(11).max(1) as usize - 1;
            let lease_ms = row.get::<_, i64>(12).max(0) as u64;
            seq = row.get::<_, Option<i64>>(13);
            let (Some(&lease_seq), Some(&secret)) = (seqs.get(n), secrets.get(n)) else {
                return Err(StoreError::Inconsistent(format!("job {id}: leased under no token of ours")));
            };
            let token = LeaseToken::from_parts(lease_seq, secret);
            let policy = policies.get(row.get::<_, &str>(1));
            leased.push(Self::leased_row(&row, token, lease_ms, policy, now, &mut changes)?);
        }
        let bytes = changes.events.len() * batcher::EVENT_BYTES;
        self.committed(seq.map(|seq| (seq, changes.events, bytes)), changes.counted);
        Ok(Some(leased))
    }

    /// A job a lease took, from its returned row (`id, queue, kind, payload, attempt,
    /// max_attempts, priority, timeout_ms, metadata, run_at, version` first), with its event
    /// and counts added to `changes`.
    fn leased_row(
        row: &tokio_postgres::Row,
        token: LeaseToken,
        lease_ms: u64,
        policy: Option<&QueuePolicy>,
        now: Timestamp,
        changes: &mut Changes,
    ) -> StoreResult<LeasedJob> {
        let id = JobId::from_raw(row.get(0));
        let queue: &str = row.get(1);
        let attempt = row.get::<_, i32>(4).max(0) as u32;
        let ready_at = Timestamp::from_millis(row.get(9));
        changes.events.push(StoredEvent::new(
            id,
            queue,
            row.get(10),
            EventKind::State,
            JobState::Running,
            attempt,
            now,
        ));
        changes.count(queue, |c, n| c.started += n, 1);
        changes.count(queue, |c, n| c.wait.observe_ms(n), now.millis_since(ready_at));
        Ok(LeasedJob {
            id,
            queue: queue_name(queue)?,
            kind: row.get(2),
            payload: row.get(3),
            attempt,
            max_attempts: row
                .get::<_, Option<i32>>(5)
                .map(|n| n.max(1) as u32)
                .unwrap_or_else(|| policy.map_or(3, |p| p.max_attempts)),
            priority: row.get(6),
            lease_token: token,
            lease_expires_at: now.plus_millis(lease_ms),
            timeout_ms: row.get::<_, Option<i64>>(7).map(|v| v.max(0) as u64),
            metadata: metadata_from(row.get(8)),
        })
    }

    /// Records a worker's visit (at most once a second per worker from this node) and answers
    /// whether it was asked to drain, as its row said at the last visit written.
    async fn worker_seen(&self, params: &JobLeaseParams) -> bool {
        let now = self.now();
        {
            let mut written = self.workers_written.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(&(at, draining)) = written.get(&params.worker_id)
                && now.millis_since(at) < 1_000
            {
                return draining;
            }
            // Ids are the callers' choice: forget the ones gone quiet before they pile up.
            if written.len() >= 10_000 {
                written.retain(|_, (at, _)| now.millis_since(*at) < WORKER_TTL_MS);
            }
            let draining = written.get(&params.worker_id).is_some_and(|&(_, d)| d);
            written.insert(params.worker_id.clone(), (now, draining));
        }
        let queues = params.queues.iter().map(QueueName::as_str).collect::<Vec<_>>().join(",");
        let p = &params.presence;
        let pid = p.pid.map(|pid| pid.min(i32::MAX as u32) as i32);
        let capacity = p.capacity.map(|c| c.min(i32::MAX as u32) as i32);
        let visit = async {
            let client = self.client().await?;
            let row = db!(client.query_one(
                &prep!(client, sql::WORKER_SEEN),
                &[&params.worker_id, &p.host, &queues, &now.as_millis(), &pid, &p.task_arn, &p.pod, &capacity]
            ));
            Ok::<bool, StoreError>(row.get(0))
        };
        match visit.await {
            Ok(draining) => {
                let mut written = self.workers_written.lock().unwrap_or_else(|p| p.into_inner());
                written.insert(params.worker_id.clone(), (now, draining));
                draining
            }
            Err(err) => {
                tracing::debug!(error = %err, "could not record a worker's visit");
                false
            }
        }
    }

    /// Why a fenced update matched nothing: no such job, or a stale token.
    async fn fence_error<C: deadpool_postgres::GenericClient>(client: &C, id: JobId) -> StoreError {
        match client.query_opt(sql::JOB_STATE, &[&id.raw()]).await {
            Ok(None) => StoreError::JobNotFound(id),
            Ok(Some(row)) => match job_state(row.get(0)) {
                Ok(state) => StoreError::StaleLease { id, state },
                Err(err) => err,
            },
            Err(err) => db_error(&err),
        }
    }

    /// Ends a failed attempt of a job locked under its lease, as `core` decides.
    async fn fail_locked(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        id: JobId,
        token: LeaseToken,
        facts: FailFacts,
        failure: Failure,
        changes: &mut Changes,
    ) -> StoreResult<Settled> {
        let Failure { error, retryable, retry_in_ms, reason } = failure;
        let now = self.now();
        let failed = FailedAttempt {
            attempt: facts.attempt,
            max_attempts: facts.max_attempts,
            retryable,
            cancel_requested: facts.cancel_requested,
            retry_in_ms,
        };
        let after = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            state::after_failure(failed, &facts.backoff, now, &mut rng)
        };
        let transition = state::fail(after, now, reason);
        let run_at = match after {
            AfterFailure::Retry { run_at } => Some(run_at),
            AfterFailure::Dead | AfterFailure::Canceled => None,
        };
        let error = crate::core::validate::truncate_error(error);
        let finished_at = transition.finishes().then_some(now.as_millis());
        let changed = db!(tx.execute(
            &prep!(tx, sql::JOB_FAIL),
            &[
                &id.raw(),
                &token.raw(),
                &secret_bytes(token),
                &transition.to.as_str(),
                &run_at.map(Timestamp::as_millis),
                &finished_at,
                &now.as_millis(),
                &error,
            ]
        ));
        if changed != 1 {
            return Err(StoreError::Inconsistent(format!("job {id}: a locked lease changed under us")));
        }
        let mut event =
            StoredEvent::new(id, &facts.queue, facts.version + 1, EventKind::State, transition.to, facts.attempt, now);
        event.error = Some(error);
        event.run_at = run_at.map(Timestamp::as_millis);
        changes.events.push(event);
        changes.count(&facts.queue, |c, n| c.failed += n, 1);
        if let Some(started) = facts.started_at {
            changes.count(&facts.queue, |c, n| c.run.observe_ms(n), now.millis_since(Timestamp::from_millis(started)));
        }
        match after {
            AfterFailure::Retry { .. } => changes.count(&facts.queue, |c, n| c.retried += n, 1),
            AfterFailure::Dead => changes.count(&facts.queue, |c, n| c.dead += n, 1),
            AfterFailure::Canceled => changes.count(&facts.queue, |c, n| c.canceled += n, 1),
        }
        if reason == Reason::LeaseExpired {
            changes.count(&facts.queue, |c, n| c.expired += n, 1);
        }
        Ok(Settled { state: transition.to, run_at })
    }

    async fn fail_one(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        params: JobFailParams,
        changes: &mut Changes,
    ) -> StoreResult<Settled> {
        let token = params.lease_token;
        let Some(row) = db!(tx.query_opt(
            &prep!(tx, sql::JOB_FENCED_FOR_UPDATE),
            &[&params.id.raw(), &token.raw(), &secret_bytes(token)]
        )) else {
            return Err(Self::fence_error(tx, params.id).await);
        };
        let facts = FailFacts::read(&row, 0);
        let failure = Failure {
            error: params.error,
            retryable: params.retryable,
            retry_in_ms: params.retry_in_ms,
            reason: Reason::Failed,
        };
        self.fail_locked(tx, params.id, token, facts, failure, changes).await
    }

    async fn complete_many(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        items: &[JobCompleteParams],
        changes: &mut Changes,
    ) -> StoreResult<Vec<StoreResult<Settled>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let ids: Vec<i64> = items.iter().map(|c| c.id.raw()).collect();
        let seqs: Vec<i64> = items.iter().map(|c| c.lease_token.raw()).collect();
        let secrets: Vec<Option<Vec<u8>>> = items.iter().map(|c| secret_bytes(c.lease_token)).collect();
        let results: Vec<Option<String>> = items.iter().map(|c| c.result.clone()).collect();
        let rows = db!(tx.query(&prep!(tx, sql::JOBS_COMPLETE), &[&ids, &seqs, &secrets, &results, &now.as_millis()]));
        let done: HashSet<i64> = rows.iter().map(|row| Self::completed(row, now, changes)).collect();
        Ok(Self::settle_completions(tx, items, done).await)
    }

    /// Completions alone (no failures with them), in one statement that commits by itself:
    /// one round trip. The stale ones changed nothing and get their errors after.
    async fn complete_alone(&self, items: &[JobCompleteParams]) -> StoreResult<Vec<StoreResult<Settled>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let now = self.now();
        let ids: Vec<i64> = items.iter().map(|c| c.id.raw()).collect();
        let seqs: Vec<i64> = items.iter().map(|c| c.lease_token.raw()).collect();
        let secrets: Vec<Option<Vec<u8>>> = items.iter().map(|c| secret_bytes(c.lease_token)).collect();
        let results: Vec<Option<&str>> = items.iter().map(|c| c.result.as_deref()).collect();
        let rows = db!(client.query(
            &prep!(client, sql::JOBS_COMPLETE_WITH_EVENTS),
            &[&ids, &seqs, &secrets, &results, &now.as_millis()]
        ));
        let mut changes = Changes::default();
        let mut seq = None;
        let mut bytes = 0;
        let mut done = HashSet::with_capacity(rows.len());
        for row in &rows {
            done.insert(Self::completed(row, now, &mut changes));
            bytes += batcher::EVENT_BYTES + row.get::<_, Option<&str>>(5).map_or(0, str::len);
            seq = row.get::<_, Option<i64>>(6);
        }
        // As the statement orders them.
        changes.events.sort_by_key(|event| event.job);
        self.committed(seq.map(|seq| (seq, changes.events, bytes)), changes.counted);
        Ok(Self::settle_completions(&client, items, done).await)
    }

    /// The event and counts of a completed job from its returned row (`id, queue, attempt,
    /// version, started_at, result`); answers its id.
    fn completed(row: &tokio_postgres::Row, now: Timestamp, changes: &mut Changes) -> i64 {
        let id: i64 = row.get(0);
        let queue: String = row.get(1);
        let attempt = row.get::<_, i32>(2).max(0) as u32;
        let mut event = StoredEvent::new(
            JobId::from_raw(id),
            &queue,
            row.get(3),
            EventKind::State,
            state::complete().to,
            attempt,
            now,
        );
        event.data = row.get(5);
        changes.events.push(event);
        changes.count(&queue, |c, n| c.succeeded += n, 1);
        if let Some(started) = row.get::<_, Option<i64>>(4) {
            changes.count(&queue, |c, n| c.run.observe_ms(n), now.millis_since(Timestamp::from_millis(started)));
        }
        id
    }

    /// Each completion's answer: settled if it was among `done`, else why not.
    async fn settle_completions<C: deadpool_postgres::GenericClient>(
        client: &C,
        items: &[JobCompleteParams],
        done: HashSet<i64>,
    ) -> Vec<StoreResult<Settled>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if done.contains(&item.id.raw()) {
                out.push(Ok(Settled { state: JobState::Succeeded, run_at: None }));
            } else {
                out.push(Err(Self::fence_error(client, item.id).await));
            }
        }
        out
    }

    /// Promotes due jobs and expires run-out leases: one pass. The leader runs it.
    async fn maintain_once(&self) -> StoreResult<()> {
        let now = self.now();
        let mut client = self.client().await?;
        // Promotion.
        loop {
            let tx = db!(client.transaction());
            let due: Vec<i64> = db!(tx.query(&prep!(tx, sql::DUE_SCHEDULED), &[&now.as_millis(), &1_000i64]))
                .iter()
                .map(|r| r.get(0))
                .collect();
            if due.is_empty() {
                db!(tx.commit());
                break;
            }
            let transition = state::promote();
            let mut changes = Changes::default();
            for row in db!(tx.query(&prep!(tx, sql::JOBS_PROMOTE), &[&due])) {
                let queue: String = row.get(1);
                changes.events.push(StoredEvent::new(
                    JobId::from_raw(row.get(0)),
                    &queue,
                    row.get(3),
                    EventKind::State,
                    transition.to,
                    row.get::<_, i32>(2).max(0) as u32,
                    now,
                ));
            }
            self.commit(tx, changes).await?;
            if due.len() < 1_000 {
                break;
            }
        }
        // Expiry.
        loop {
            let tx = db!(client.transaction());
            let rows = db!(tx.query(&prep!(tx, sql::EXPIRED_LEASES), &[&now.as_millis(), &500i64]));
            if rows.is_empty() {
                db!(tx.commit());
                break;
            }
            let n = rows.len();
            let mut changes = Changes::default();
            for row in rows {
                let id = JobId::from_raw(row.get(0));
                let secret =
                    row.get::<_, Option<Vec<u8>>>(2).and_then(|b| b.try_into().ok()).map_or(0, u128::from_be_bytes);
                let token = LeaseToken::from_parts(row.get(1), secret);
                let facts = FailFacts::read(&row, 3);
                tracing::info!(job_id = %id, queue = %facts.queue, attempt = facts.attempt, "lease expired");
                let failure = Failure {
                    error: state::LEASE_EXPIRED_MESSAGE.to_owned(),
                    retryable: true,
                    retry_in_ms: None,
                    reason: Reason::LeaseExpired,
                };
                self.fail_locked(&tx, id, token, facts, failure, &mut changes).await?;
            }
            self.commit(tx, changes).await?;
            if n < 500 {
                break;
            }
        }
        Ok(())
    }

    async fn queue_info_all(&self, only: Option<&QueueName>) -> StoreResult<Vec<QueueInfo>> {
        let client = self.client().await?;
        let rows = match only {
            Some(name) => db!(client.query(&prep!(client, sql::QUEUE_GET), &[&name.as_str()])),
            None => db!(client.query(&prep!(client, sql::QUEUE_ALL), &[])),
        };
        let mut infos: Vec<QueueInfo> = rows
            .iter()
            .map(|r| {
                Ok(QueueInfo { name: queue_name(r.get(0))?, policy: policy(r), counts: [0; 6], oldest_ready_at: None })
            })
            .collect::<StoreResult<_>>()?;
        let index: HashMap<String, usize> =
            infos.iter().enumerate().map(|(i, q)| (q.name.as_str().to_owned(), i)).collect();
        let counts = match only {
            Some(name) => db!(client.query(&prep!(client, sql::COUNTS_OF_QUEUE), &[&name.as_str()]))
                .iter()
                .map(|r| (name.as_str().to_owned(), r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<Vec<_>>(),
            None => db!(client.query(&prep!(client, sql::COUNTS), &[]))
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2)))
                .collect(),
        };
        for (queue, state, n) in counts {
            if let (Some(&i), Ok(state)) = (index.get(&queue), state.parse::<JobState>()) {
                infos[i].counts[state.index()] = n.max(0) as u64;
            }
        }
        let names: Vec<&str> = infos.iter().map(|q| q.name.as_str()).collect();
        for row in db!(client.query(&prep!(client, sql::OLDEST_READY), &[&names])) {
            let queue: String = row.get(0);
            if let Some(&i) = index.get(&queue) {
                infos[i].oldest_ready_at = row.get::<_, Option<i64>>(1).map(Timestamp::from_millis);
            }
        }
        Ok(infos)
    }
}

/// Applies the migrations this build knows, once, whichever node gets there first.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), PgOpenError> {
    let fail = |e: tokio_postgres::Error| PgOpenError::Connect(describe(&e));
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&sql::MIGRATION_LOCK]).await.map_err(fail)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS wharf; \
         CREATE TABLE IF NOT EXISTS wharf.schema_version (version bigint NOT NULL); \
         INSERT INTO wharf.schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM wharf.schema_version)",
    )
    .await
    .map_err(fail)?;
    let found: i64 = tx.query_one("SELECT version FROM wharf.schema_version", &[]).await.map_err(fail)?.get(0);
    let known = sql::MIGRATIONS.len() as i64;
    if found > known {
        return Err(PgOpenError::TooNew { found, known });
    }
    for (i, migration) in sql::MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(migration).await.map_err(fail)?;
        tx.execute("UPDATE wharf.schema_version SET version = $1", &[&(i as i64 + 1)]).await.map_err(fail)?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    tx.commit().await.map_err(fail)?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn job_insert(&self, job: NewJob) -> StoreResult<Inserted> {
        // The common case — no idempotency key, a known queue without a waiting limit — shares
        // a transaction with the other single enqueues of the moment.
        let simple = job.idempotency_key.is_none()
            && self.cached_policy(job.queue.as_str()).is_some_and(|p| p.max_ready.is_none());
        if simple {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if self.batched.send(batcher::Pending { job: job.clone(), reply }).is_ok() {
                match answer.await {
                    Ok(Ok(Some(inserted))) => return Ok(inserted),
                    Ok(Err(err)) => return Err(err),
                    // Its queue went away meanwhile, or the batcher stopped: the full path.
                    Ok(Ok(None)) | Err(_) => {}
                }
            }
        }
        let mut inserted = self.insert(vec![job]).await?;
        inserted.pop().ok_or_else(|| StoreError::Unavailable("an insert returned nothing".into()))
    }

    async fn job_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        self.insert(jobs).await
    }

    async fn job_get(&self, id: JobId) -> StoreResult<Job> {
        let client = self.client().await?;
        let Some(row) = db!(client.query_opt(&prep!(client, sql::JOB_GET), &[&id.raw()])) else {
            return Err(StoreError::JobNotFound(id));
        };
        let queue = queue_name(row.get(1))?;
        let max_attempts = match row.get::<_, Option<i32>>(8) {
            Some(n) => n.max(1) as u32,
            None => db!(client.query_opt(&prep!(client, sql::QUEUE_GET), &[&queue.as_str()]))
                .map_or(3, |r| policy(&r).max_attempts),
        };
        let secret = row.get::<_, Option<Vec<u8>>>(23).and_then(|b| b.try_into().ok()).map_or(0, u128::from_be_bytes);
        Ok(Job {
            id,
            queue,
            kind: row.get(2),
            payload: row.get(3),
            priority: row.get(4),
            state: job_state(row.get(5))?,
            run_at: Timestamp::from_millis(row.get(6)),
            attempt: row.get::<_, i32>(7).max(0) as u32,
            max_attempts,
            timeout_ms: row.get::<_, Option<i64>>(9).map(|v| v.max(0) as u64),
            idempotency_key: row.get(10),
            metadata: metadata_from(row.get(11)),
            progress: row.get(12),
            result: row.get(13),
            errors: errors_from(row.get(14)),
            cancel_requested: row.get(15),
            lease_token: row.get::<_, Option<i64>>(16).map(|seq| LeaseToken::from_parts(seq, secret)),
            lease_expires_at: row.get::<_, Option<i64>>(17).map(Timestamp::from_millis),
            worker_id: row.get(18),
            created_at: Timestamp::from_millis(row.get(19)),
            started_at: row.get::<_, Option<i64>>(20).map(Timestamp::from_millis),
            finished_at: row.get::<_, Option<i64>>(21).map(Timestamp::from_millis),
            version: row.get::<_, i64>(22).max(0) as u64,
        })
    }

    async fn job_list(&self, params: JobListParams) -> StoreResult<JobPage> {
        let client = self.client().await?;
        if db!(client.query_opt(&prep!(client, sql::QUEUE_GET), &[&params.queue.as_str()])).is_none() {
            return Err(StoreError::QueueNotFound(params.queue));
        }
        let state = params.state.map(|s| s.as_str());
        let before = params.cursor.map_or(i64::MAX, JobId::raw);
        let mut from = params.from.map_or(0, JobId::raw);
        // A bounded scan stops at the `scan`-th job: the page covers the ids from there up.
        let mut scan_end = None;
        if let Some(scan) = params.scan.filter(|&n| n > 0) {
            let offset = i64::from(scan - 1);
            let end = db!(client.query_opt(
                &prep!(client, sql::JOB_LIST_SCAN_END),
                &[&params.queue.as_str(), &state, &before, &from, &offset]
            ));
            if let Some(end) = end {
                from = end.get(0);
                scan_end = Some(from);
            }
        }
        let limit = i64::from(params.limit) + 1;
        let rows = db!(client.query(
            &prep!(client, sql::JOB_LIST),
            &[&params.queue.as_str(), &state, &before, &params.kind, &limit, &params.error, &from]
        ));
        let mut jobs = rows.iter().map(summary).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if jobs.len() > params.limit as usize {
            jobs.truncate(params.limit as usize);
            jobs.last().map(|j| j.id)
        } else {
            scan_end.map(JobId::from_raw)
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn job_lease(&self, params: JobLeaseParams) -> StoreResult<Vec<LeasedJob>> {
        let deadline = tokio::time::Instant::now() + params.wait;
        let mut ready = self.ready.clone();
        loop {
            ready.borrow_and_update();
            // Checked on every try, so a drain asked on another node ends a long poll within a
            // second.
            if self.worker_seen(&params).await {
                return Err(StoreError::WorkerDraining(params.worker_id));
            }
            let leased = self.lease_once(&params).await?;
            if !leased.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(leased);
            }
            // Woken by ready work from any node; a quiet second re-checks anyway (a delayed
            // job promoted, a limit lifted).
            let nap = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = ready.changed() => {}
                () = tokio::time::sleep_until(nap) => {}
                () = self.closed.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    async fn lease_heartbeat(&self, params: LeaseHeartbeatParams) -> StoreResult<Heartbeat> {
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        let now = self.now();
        let token = params.lease_token;
        let extend = params.extend_ms.map(|ms| ms as i64);
        let Some(row) = db!(tx.query_opt(
            &prep!(tx, sql::LEASE_HEARTBEAT),
            &[&params.id.raw(), &token.raw(), &secret_bytes(token), &now.as_millis(), &extend, &params.progress]
        )) else {
            return Err(Self::fence_error(&tx, params.id).await);
        };
        let mut changes = Changes::default();
        let expires_at = Timestamp::from_millis(row.get(0));
        if let Some(progress) = params.progress {
            let queue: String = row.get(4);
            let attempt = row.get::<_, i32>(3).max(0) as u32;
            let mut event =
                StoredEvent::new(params.id, &queue, row.get(2), EventKind::Progress, JobState::Running, attempt, now);
            event.data = Some(progress);
            changes.events.push(event);
        }
        let cancel_requested = row.get(1);
        self.commit(tx, changes).await?;
        Ok(Heartbeat { lease_expires_at: expires_at, cancel_requested })
    }

    async fn job_complete(&self, params: JobCompleteParams) -> StoreResult<Settled> {
        let mut results = self.complete_alone(std::slice::from_ref(&params)).await?;
        results.pop().unwrap_or(Err(StoreError::JobNotFound(params.id)))
    }

    async fn job_fail(&self, params: JobFailParams) -> StoreResult<Settled> {
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        let mut changes = Changes::default();
        let settled = self.fail_one(&tx, params, &mut changes).await?;
        self.commit(tx, changes).await?;
        Ok(settled)
    }

    async fn job_release(&self, params: JobReleaseParams) -> StoreResult<Settled> {
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        let token = params.lease_token;
        let Some(row) = db!(tx.query_opt(
            &prep!(tx, sql::JOB_FENCED_FOR_UPDATE),
            &[&params.id.raw(), &token.raw(), &secret_bytes(token)]
        )) else {
            return Err(Self::fence_error(&tx, params.id).await);
        };
        let facts = FailFacts::read(&row, 0);
        let now = self.now();
        let transition = state::release(facts.cancel_requested);
        let attempt = transition.attempt_after(facts.attempt);
        let finished_at = transition.finishes().then_some(now.as_millis());
        let changed = db!(tx.execute(
            &prep!(tx, sql::JOB_RELEASE),
            &[
                &params.id.raw(),
                &token.raw(),
                &secret_bytes(token),
                &transition.to.as_str(),
                &(attempt as i32),
                &finished_at
            ]
        ));
        if changed != 1 {
            return Err(StoreError::Inconsistent(format!("job {}: a locked lease changed under us", params.id)));
        }
        let mut changes = Changes::default();
        changes.events.push(StoredEvent::new(
            params.id,
            &facts.queue,
            facts.version + 1,
            EventKind::State,
            transition.to,
            attempt,
            now,
        ));
        changes.count(&facts.queue, |c, n| c.released += n, 1);
        if transition.to == JobState::Canceled {
            changes.count(&facts.queue, |c, n| c.canceled += n, 1);
        }
        self.commit(tx, changes).await?;
        Ok(Settled { state: transition.to, run_at: None })
    }

    async fn job_ack(&self, params: JobAckParams) -> StoreResult<Acked> {
        if params.fail.is_empty() {
            return Ok(Acked { complete: self.complete_alone(&params.complete).await?, fail: Vec::new() });
        }
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        let mut changes = Changes::default();
        let complete = self.complete_many(&tx, &params.complete, &mut changes).await?;
        let mut fail = Vec::with_capacity(params.fail.len());
        for item in params.fail {
            // Each failure stands alone: a stale one must not undo the others.
            db!(tx.execute("SAVEPOINT item", &[]));
            match self.fail_one(&tx, item, &mut changes).await {
                Ok(settled) => {
                    db!(tx.execute("RELEASE SAVEPOINT item", &[]));
                    fail.push(Ok(settled));
                }
                Err(err @ (StoreError::StaleLease { .. } | StoreError::JobNotFound(_))) => {
                    db!(tx.execute("ROLLBACK TO SAVEPOINT item", &[]));
                    fail.push(Err(err));
                }
                Err(err) => return Err(err),
            }
        }
        self.commit(tx, changes).await?;
        Ok(Acked { complete, fail })
    }

    async fn job_cancel(&self, id: JobId) -> StoreResult<Canceled> {
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        let Some(row) = db!(tx.query_opt(&prep!(tx, sql::JOB_CANCEL_LOOKUP), &[&id.raw()])) else {
            return Err(StoreError::JobNotFound(id));
        };
        let queue: String = row.get(0);
        let current = job_state(row.get(1))?;
        let cancel_requested: bool = row.get(2);
        let version: i64 = row.get(3);
        let attempt = row.get::<_, i32>(4).max(0) as u32;
        let now = self.now();
        match state::cancel(current, cancel_requested) {
            Err(source) => Err(StoreError::Illegal { id, source }),
            Ok(CancelEffect::Unchanged) => Ok(Canceled { state: current, cancel_requested }),
            Ok(CancelEffect::Requested) => {
                db!(tx.execute(&prep!(tx, sql::JOB_CANCEL_REQUEST), &[&id.raw()]));
                db!(tx.commit());
                Ok(Canceled { state: JobState::Running, cancel_requested: true })
            }
            Ok(CancelEffect::CanceledNow) => {
                let transition =
                    state::cancel_now(current).map_err(|e| StoreError::Unavailable(format!("job {id}: {e}")))?;
                db!(tx.execute(&prep!(tx, sql::JOB_CANCEL_NOW), &[&id.raw(), &current.as_str(), &now.as_millis()]));
                let mut changes = Changes::default();
                changes.events.push(StoredEvent::new(
                    id,
                    &queue,
                    version + 1,
                    EventKind::State,
                    transition.to,
                    attempt,
                    now,
                ));
                changes.count(&queue, |c, n| c.canceled += n, 1);
                self.commit(tx, changes).await?;
                Ok(Canceled { state: JobState::Canceled, cancel_requested: false })
            }
        }
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        self.queue_info_all(None).await
    }

    async fn queue_get(&self, name: QueueName) -> StoreResult<QueueInfo> {
        let mut infos = self.queue_info_all(Some(&name)).await?;
        infos.pop().ok_or(StoreError::QueueNotFound(name))
    }

    async fn queue_upsert(&self, name: QueueName, patch: QueuePolicyPatch) -> StoreResult<QueueInfo> {
        {
            let mut client = self.client().await?;
            let tx = db!(client.transaction());
            let current = db!(tx.query_opt(&format!("{} FOR UPDATE", sql::QUEUE_GET), &[&name.as_str()]));
            let base = current.as_ref().map_or_else(QueuePolicy::default, policy);
            let next = base.apply(&patch)?;
            if current.is_some() {
                self.write_queue(&tx, &name, &next).await?;
            } else {
                self.create_queue(&tx, &name, &next).await?;
            }
            db!(tx.commit());
            self.remember_policy(name.as_str(), Some(&next));
        }
        // A resumed queue or a lifted limit may have work for parked long polls.
        self.queue_get(name).await
    }

    async fn queue_delete(&self, name: QueueName) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        if db!(tx.query_opt(&format!("{} FOR UPDATE", sql::QUEUE_GET), &[&name.as_str()])).is_none() {
            return Err(StoreError::QueueNotFound(name));
        }
        let mut holding = 0u64;
        for row in db!(tx.query(&prep!(tx, sql::COUNTS_OF_QUEUE), &[&name.as_str()])) {
            let state: String = row.get(0);
            if matches!(state.as_str(), "scheduled" | "ready" | "running" | "dead") {
                holding += row.get::<_, i64>(1).max(0) as u64;
            }
        }
        if holding > 0 {
            return Err(StoreError::QueueNotEmpty { queue: name, jobs: holding });
        }
        db!(tx.execute(&prep!(tx, sql::JOBS_OF_QUEUE_DELETE), &[&name.as_str()]));
        db!(tx.execute(&prep!(tx, sql::QUEUE_DELETE), &[&name.as_str()]));
        db!(tx.commit());
        self.remember_policy(name.as_str(), None);
        Ok(())
    }

    async fn dead_redrive(&self, params: DeadRedriveParams) -> StoreResult<Vec<JobId>> {
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        if db!(tx.query_opt(&prep!(tx, sql::QUEUE_GET), &[&params.queue.as_str()])).is_none() {
            return Err(StoreError::QueueNotFound(params.queue));
        }
        let ids: Option<Vec<i64>> = params.ids.as_ref().map(|ids| ids.iter().map(|id| id.raw()).collect());
        let rows = db!(tx.query(&prep!(tx, sql::DEAD_FOR_REDRIVE), &[&params.queue.as_str(), &ids]));
        let found: HashMap<i64, String> = rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1))).collect();
        if let Some(wanted) = &params.ids {
            for id in wanted {
                match found.get(&id.raw()) {
                    None => return Err(StoreError::JobNotFound(*id)),
                    Some(state) => {
                        state::redrive_now(job_state(state)?)
                            .map_err(|source| StoreError::Illegal { id: *id, source })?;
                    }
                }
            }
        }
        let now = self.now();
        let targets: Vec<i64> = found.keys().copied().collect();
        let transition = state::redrive_now(JobState::Dead).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let attempt = transition.attempt_after(0) as i32;
        let rows = db!(tx.query(&prep!(tx, sql::JOBS_REDRIVE), &[&targets, &attempt, &now.as_millis()]));
        let mut changes = Changes::default();
        let mut moved = Vec::with_capacity(rows.len());
        for row in rows {
            let id = JobId::from_raw(row.get(0));
            let mut event =
                StoredEvent::new(id, params.queue.as_str(), row.get(1), EventKind::State, JobState::Ready, 0, now);
            event.run_at = Some(now.as_millis());
            changes.events.push(event);
            moved.push(id);
        }
        moved.sort_unstable();
        self.commit(tx, changes).await?;
        Ok(moved)
    }

    async fn jobs_prune(&self, limit: u32) -> StoreResult<u64> {
        let now = self.now();
        let client = self.client().await?;
        let mut deleted = 0u64;
        for row in db!(client.query(&prep!(client, sql::QUEUE_ALL), &[])) {
            let name: String = row.get(0);
            let p = policy(&row);
            let cutoff = Timestamp::from_millis(now.as_millis().saturating_sub(p.retention_ms as i64));
            let bound = JobId::floor_at(cutoff).raw();
            for state in [JobState::Succeeded, JobState::Dead, JobState::Canceled] {
                let n = db!(client.execute(
                    &prep!(client, sql::JOBS_PRUNE),
                    &[&name, &state.as_str(), &bound, &cutoff.as_millis(), &i64::from(limit)]
                ));
                deleted += n;
            }
        }
        let horizon = now.as_millis().saturating_sub(self.config.event_retention.as_millis() as i64);
        db!(client.execute(&prep!(client, sql::EVENTS_PRUNE), &[&horizon]));
        db!(client.execute(
            &prep!(client, sql::WORKERS_PRUNE),
            &[&now.as_millis().saturating_sub(10 * WORKER_TTL_MS as i64)]
        ));
        Ok(deleted)
    }

    async fn maintain(&self) -> StoreResult<()> {
        self.maintain_once().await?;
        let client = self.client().await?;
        self.vacuum.check(&client, &self.connector).await;
        Ok(())
    }

    async fn worker_list(&self) -> StoreResult<Vec<WorkerInfo>> {
        let now = self.now();
        let client = self.client().await?;
        let since = now.as_millis().saturating_sub(WORKER_TTL_MS as i64);
        let rows = db!(client.query(&prep!(client, sql::WORKERS_RECENT), &[&since]));
        Ok(rows
            .iter()
            .map(|r| WorkerInfo {
                id: r.get(0),
                presence: WorkerPresence {
                    host: r.get(1),
                    pid: r.get::<_, Option<i32>>(5).map(|v| v.max(0) as u32),
                    task_arn: r.get(6),
                    pod: r.get(7),
                    capacity: r.get::<_, Option<i32>>(8).map(|v| v.max(0) as u32),
                },
                draining: r.get(9),
                queues: r.get::<_, String>(2).split(',').filter_map(|q| QueueName::parse(q).ok()).collect(),
                last_seen: Timestamp::from_millis(r.get(3)),
                running: r.get::<_, i64>(4).max(0) as u64,
            })
            .collect())
    }

    async fn queue_backlog(&self, queues: Vec<QueueName>) -> StoreResult<Vec<QueueBacklog>> {
        let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
        let client = self.client().await?;
        // Counted from the (queue, state) index: the cost follows the waiting and running jobs,
        // not the finished ones.
        let counts = db!(client.query(&prep!(client, sql::BACKLOG_COUNTS), &[&names]));
        let mut out: Vec<QueueBacklog> = db!(client.query(&prep!(client, sql::QUEUES_OF), &[&names]))
            .iter()
            .filter_map(|r| {
                let queue = QueueName::parse(r.get::<_, &str>(0)).ok()?;
                Some(QueueBacklog { queue, ready: 0, running: 0, policy: policy(r) })
            })
            .collect();
        for row in counts {
            let (queue, state, n): (&str, &str, i64) = (row.get(0), row.get(1), row.get(2));
            if let Some(q) = out.iter_mut().find(|q| q.queue.as_str() == queue) {
                match state {
                    "ready" => q.ready = n.max(0) as u64,
                    _ => q.running = n.max(0) as u64,
                }
            }
        }
        Ok(out)
    }

    async fn pool_put(&self, record: PoolRecord) -> StoreResult<()> {
        let client = self.client().await?;
        db!(client
            .execute(&prep!(client, sql::POOL_PUT), &[&record.name, &record.state, &record.updated_at.as_millis()]));
        Ok(())
    }

    async fn pool_list(&self) -> StoreResult<Vec<PoolRecord>> {
        let client = self.client().await?;
        Ok(db!(client.query(&prep!(client, sql::POOLS), &[]))
            .iter()
            .map(|r| PoolRecord { name: r.get(0), state: r.get(1), updated_at: Timestamp::from_millis(r.get(2)) })
            .collect())
    }

    async fn alarm_rule_put(&self, name: String, rule: String, at: Timestamp) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = db!(client.transaction());
        db!(tx.execute(&prep!(tx, sql::ALARM_CREATE_LOCK), &[]));
        let exists: i64 = db!(tx.query_one(&prep!(tx, sql::ALARM_RULE_EXISTS), &[&name])).get(0);
        if exists == 0 {
            let count: i64 = db!(tx.query_one(&prep!(tx, sql::ALARM_RULE_COUNT), &[])).get(0);
            if count as u64 >= crate::store::MAX_ALARMS {
                return Err(StoreError::Invalid(Invalid::new(
                    "name",
                    format!("there are already {} alarms; delete unused ones first", crate::store::MAX_ALARMS),
                )));
            }
        }
        db!(tx.execute(&prep!(tx, sql::ALARM_RULE_PUT), &[&name, &rule, &at.as_millis()]));
        db!(tx.commit());
        Ok(exists == 0)
    }

    async fn alarm_delete(&self, name: String) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(db!(client.execute(&prep!(client, sql::ALARM_DELETE), &[&name])) > 0)
    }

    async fn alarm_state_put(&self, name: String, state: String, at: Timestamp) -> StoreResult<()> {
        let client = self.client().await?;
        db!(client.execute(&prep!(client, sql::ALARM_STATE_PUT), &[&name, &state, &at.as_millis()]));
        Ok(())
    }

    async fn alarm_list(&self) -> StoreResult<Vec<crate::store::AlarmRecord>> {
        let client = self.client().await?;
        Ok(db!(client.query(&prep!(client, sql::ALARM_ALL), &[]))
            .iter()
            .map(|r| crate::store::AlarmRecord {
                name: r.get(0),
                rule: r.get(1),
                state: r.get(2),
                updated_at: Timestamp::from_millis(r.get(3)),
            })
            .collect())
    }

    async fn worker_drain(&self, id: String, even_unseen: bool) -> StoreResult<()> {
        let now = self.now();
        let client = self.client().await?;
        if even_unseen {
            db!(client.execute(&prep!(client, sql::WORKER_DRAIN_UNSEEN), &[&id, &now.as_millis()]));
        } else {
            let since = now.as_millis().saturating_sub(WORKER_TTL_MS as i64);
            if db!(client.execute(&prep!(client, sql::WORKER_DRAIN), &[&id, &since])) == 0 {
                return Err(StoreError::WorkerNotFound(id));
            }
        }
        // This node's next look at the worker reads the row again.
        self.workers_written.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        Ok(())
    }

    async fn worker_leave(&self, id: String) -> StoreResult<bool> {
        let client = self.client().await?;
        let gone = db!(client.execute(&prep!(client, sql::WORKER_LEAVE), &[&id])) > 0;
        self.workers_written.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        Ok(gone)
    }

    async fn metrics(&self) -> StoreResult<MetricsSnapshot> {
        let infos = self.queue_info_all(None).await?;
        let workers = self.worker_list().await?.len() as u64;
        let now = self.now();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let queues = infos
            .into_iter()
            .map(|q| QueueMetrics {
                counters: counters.get(q.name.as_str()).cloned().unwrap_or_default(),
                queue: q.name.as_str().to_owned(),
                jobs: q.counts,
                oldest_ready_age_seconds: q.oldest_ready_at.map_or(0.0, |at| now.millis_since(at) as f64 / 1000.0),
                paused: q.policy.paused,
            })
            .collect();
        let client = self.client().await?;
        let size: i64 = db!(client.query_one(&prep!(client, sql::SCHEMA_SIZE), &[])).get(0);
        let store = StoreMetrics { size_bytes: size.max(0) as u64, ..StoreMetrics::default() };
        Ok(MetricsSnapshot { queues, workers_connected: workers, store })
    }

    async fn queue_counters(&self) -> StoreResult<Vec<(String, QueueCounters)>> {
        // This node's totals, in memory: no count over the jobs table.
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Ok(counters.iter().map(|(queue, c)| (queue.clone(), c.clone())).collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        db!(client.query_one("SELECT 1", &[]));
        Ok(())
    }

    async fn token_insert(&self, token: TokenRecord) -> StoreResult<()> {
        let client = self.client().await?;
        let count: i64 = db!(client.query_one(&prep!(client, sql::TOKEN_COUNT), &[])).get(0);
        if count >= 10_000 {
            return Err(StoreError::Invalid(Invalid::new(
                "tokens",
                "there are already 10000 tokens; revoke unused ones first",
            )));
        }
        let queues =
            (!token.queues.is_all()).then(|| serde_json::to_string(token.queues.as_slice()).unwrap_or_default());
        db!(client.execute(
            &prep!(client, sql::TOKEN_INSERT),
            &[
                &token.id,
                &token.name,
                &token.role.as_str(),
                &queues,
                &token.rate,
                &token.hash.as_slice(),
                &token.created_at.as_millis()
            ]
        ));
        Ok(())
    }

    async fn token_list(&self) -> StoreResult<Vec<TokenRecord>> {
        let client = self.client().await?;
        let rows = db!(client.query(&prep!(client, sql::TOKEN_ALL), &[]));
        rows.iter()
            .map(|r| {
                let corrupt = |what: &str| StoreError::Unavailable(format!("unreadable token {what} in the database"));
                let patterns: Vec<String> = match r.get::<_, Option<String>>(3) {
                    Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("queues"))?,
                    None => Vec::new(),
                };
                let hash: Vec<u8> = r.get(5);
                Ok(TokenRecord {
                    id: r.get(0),
                    name: r.get(1),
                    role: r.get::<_, String>(2).parse().map_err(|_| corrupt("role"))?,
                    queues: crate::core::auth::QueuePatterns::parse(&patterns).map_err(|_| corrupt("queues"))?,
                    rate: r.get(4),
                    hash: hash.try_into().map_err(|_| corrupt("hash"))?,
                    created_at: Timestamp::from_millis(r.get(6)),
                })
            })
            .collect()
    }

    async fn token_delete(&self, id: String) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(db!(client.execute(&prep!(client, sql::TOKEN_DELETE), &[&id])) > 0)
    }

    fn leadership(&self) -> Leadership {
        Leadership::Shared
    }

    async fn leader_try(&self) -> StoreResult<bool> {
        let mut held = self.leader.lock().await;
        if let Some((client, leading)) = held.as_ref() {
            if client.is_closed() {
                if *leading {
                    tracing::warn!("lost the leader's connection; maintenance moves to whichever node takes the lock");
                }
                *held = None;
            } else if *leading {
                return Ok(true);
            }
        }
        if held.is_none() {
            let (client, connection) = self.connector.connect().await.map_err(|e| db_error(&e))?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the database goes away; the lock goes with it.
                let _ = connection.await;
            });
            *held = Some((client, false));
        }
        let Some((client, leading)) = held.as_mut() else { return Ok(false) };
        let won: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&sql::LEADER_LOCK])
            .await
            .map_err(|e| db_error(&e))?
            .get(0);
        if won {
            tracing::info!("this node leads: it runs maintenance");
            *leading = true;
        }
        Ok(won)
    }

    async fn close(&self) {
        self.closed.cancel();
        *self.leader.lock().await = None;
        self.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{PgConfig, PgStore};
    use crate::core::time::ManualClock;
    use crate::events::{EventBus, RingLimits};
    use crate::store::Store;
    use crate::store::conformance::{Harness, START, store_conformance_suite};

    async fn harness() -> Harness {
        let url = wharf_testkit::postgres::server().fresh_database().await;
        let clock = ManualClock::new(START);
        let events = Arc::new(EventBus::numbered(RingLimits::default()));
        let open = move |clock: &ManualClock, events: Arc<EventBus>| {
            let (url, clock) = (url.clone(), Arc::new(clock.clone()));
            Box::pin(async move {
                let store = PgStore::open(PgConfig::new(url), clock, events).await.expect("open the store");
                Arc::new(store) as Arc<dyn Store>
            }) as futures_util::future::BoxFuture<'static, Arc<dyn Store>>
        };
        let store = open(&clock, Arc::clone(&events)).await;
        Harness { store, clock, events, reopen: Box::new(open), _guard: Box::new(()) }
    }

    store_conformance_suite!(harness);

    #[test]
    fn an_events_row_reads_as_objects_or_as_columns_and_a_short_column_is_refused() {
        use super::StoredEvent;
        let objects = r#"[{"job":1,"queue":"q","version":2,"kind":1,"state":"running","attempt":1,"at":9}]"#;
        let columns = r#"{"kind":1,"at":9,"state":"running","job":[1,2],"queue":["q","r"],"version":[2,5],
            "attempt":[1,3],"data":[null,"{}"]}"#;
        let read = |text: &str| -> Vec<String> {
            StoredEvent::parse_row(text).unwrap().iter().map(|e| serde_json::to_string(e).unwrap()).collect()
        };
        assert_eq!(
            read(objects),
            vec![r#"{"job":1,"queue":"q","version":2,"kind":1,"state":"running","attempt":1,"at":9}"#]
        );
        assert_eq!(
            read(columns),
            vec![
                r#"{"job":1,"queue":"q","version":2,"kind":1,"state":"running","attempt":1,"at":9}"#,
                r#"{"job":2,"queue":"r","version":5,"kind":1,"state":"running","attempt":3,"at":9,"data":"{}"}"#,
            ]
        );
        let short = r#"{"kind":1,"at":9,"state":"running","job":[1,2],"queue":["q"],"version":1,"attempt":1}"#;
        assert!(StoredEvent::parse_row(short).is_err());
    }

    use std::collections::HashSet;
    use std::time::Duration;

    use crate::core::{JobState, NewJob, QueueName, QueuePolicyPatch};
    use crate::store::{JobLeaseParams, LeasedJob};

    /// Two stores (two nodes) on one database, sharing a clock.
    async fn two_nodes() -> (Arc<dyn Store>, Arc<dyn Store>, ManualClock) {
        let url = wharf_testkit::postgres::server().fresh_database().await;
        let clock = ManualClock::new(START);
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let events = Arc::new(EventBus::numbered(RingLimits::default()));
            let store = PgStore::open(PgConfig::new(url.clone()), Arc::new(clock.clone()), events).await.unwrap();
            nodes.push(Arc::new(store) as Arc<dyn Store>);
        }
        let b = nodes.pop().unwrap();
        let a = nodes.pop().unwrap();
        (a, b, clock)
    }

    fn job(queue: &str) -> NewJob {
        NewJob {
            queue: QueueName::parse(queue).unwrap(),
            kind: "k".into(),
            payload: "null".into(),
            priority: 0,
            run_at: None,
            max_attempts: None,
            timeout_ms: None,
            idempotency_key: None,
            metadata: Default::default(),
        }
    }

    fn ask(worker: &str, max: u32) -> JobLeaseParams {
        JobLeaseParams {
            worker_id: worker.into(),
            presence: crate::store::WorkerPresence::default(),
            queues: vec![QueueName::parse("q").unwrap()],
            max,
            wait: Duration::ZERO,
            lease_ms: None,
            max_bytes: usize::MAX,
        }
    }

    #[tokio::test]
    async fn two_nodes_leasing_one_queue_at_once_never_hand_a_job_out_twice() {
        let (a, b, _) = two_nodes().await;
        a.job_insert_batch((0..300).map(|_| job("q")).collect()).await.unwrap();
        let mut tasks = Vec::new();
        for (i, node) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut got: Vec<LeasedJob> = Vec::new();
                loop {
                    let batch = node.job_lease(ask(&format!("w{i}"), 7)).await.unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch);
                }
            }));
        }
        let mut seen = HashSet::new();
        for task in tasks {
            for leased in task.await.unwrap() {
                assert!(seen.insert(leased.id), "job {} was handed out twice", leased.id);
            }
        }
        assert_eq!(seen.len(), 300, "every job was handed out");
    }

    #[tokio::test]
    async fn a_concurrency_limit_holds_across_nodes() {
        let (a, b, _) = two_nodes().await;
        let limit = QueuePolicyPatch { concurrency: Some(Some(3)), ..Default::default() };
        a.queue_upsert(QueueName::parse("q").unwrap(), limit).await.unwrap();
        a.job_insert_batch((0..20).map(|_| job("q")).collect()).await.unwrap();
        let (ra, rb) = tokio::join!(a.job_lease(ask("wa", 10)), b.job_lease(ask("wb", 10)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.len() + rb.len(), 3, "3 running in all, not 3 per node");
        let (more_a, more_b) = tokio::join!(a.job_lease(ask("wa", 10)), b.job_lease(ask("wb", 10)));
        assert!(more_a.unwrap().is_empty() && more_b.unwrap().is_empty());
        let running = a.queue_get(QueueName::parse("q").unwrap()).await.unwrap().counts[JobState::Running.index()];
        assert_eq!(running, 3);
    }

    #[tokio::test]
    async fn an_expired_lease_is_reaped_once_when_two_nodes_maintain() {
        let (a, b, clock) = two_nodes().await;
        let id = a.job_insert(job("q")).await.unwrap().job.id;
        a.job_lease(ask("w", 1)).await.unwrap();
        clock.advance(Duration::from_secs(31));
        let (ma, mb) = tokio::join!(a.maintain(), b.maintain());
        ma.unwrap();
        mb.unwrap();
        let reaped = b.job_get(id).await.unwrap();
        assert_eq!(reaped.errors.len(), 1, "one expiry recorded: {:?}", reaped.errors);
        assert_eq!((reaped.state, reaped.attempt), (JobState::Scheduled, 1));
    }

    #[tokio::test]
    async fn one_node_at_a_time_leads_and_another_takes_over() {
        let (a, b, _) = two_nodes().await;
        assert!(a.leader_try().await.unwrap());
        assert!(!b.leader_try().await.unwrap(), "the lock is held");
        assert!(a.leader_try().await.unwrap(), "the leader keeps it");
        a.close().await;
        // The lock goes with the closed connection; the server notices within moments.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !b.leader_try().await.unwrap() {
            assert!(tokio::time::Instant::now() < deadline, "nobody took over");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A store on a fresh database, and a plain connection to that database.
    async fn store_and_client() -> (PgStore, tokio_postgres::Client) {
        let url = wharf_testkit::postgres::server().fresh_database().await;
        let events = Arc::new(EventBus::numbered(RingLimits::default()));
        let store = PgStore::open(PgConfig::new(url.clone()), Arc::new(ManualClock::new(START)), events).await.unwrap();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        (store, client)
    }

    /// Statistics taken while a queue held no ready job go stale the moment a burst arrives.
    /// The lease must still walk `jobs_ready` in its order and stop at the first entry, not
    /// read and sort every ready job of the queue. (With a second index on ready jobs, a
    /// 100,000-job burst after an idle spell once got that plan: 60 ms a lease.)
    #[tokio::test]
    async fn the_lease_plan_takes_the_first_ready_entry_even_with_statistics_of_an_idle_queue() {
        let (store, client) = store_and_client().await;
        // The queue's history, 50,000 finished jobs, and statistics taken while none was ready.
        client
            .batch_execute(
                "INSERT INTO wharf.jobs (id, queue, kind, state, priority, run_at, payload, created_at, finished_at) \
                 SELECT g, 'q', 'k', 'succeeded', 0, 0, 'null', 0, 0 FROM generate_series(1, 50000) AS g",
            )
            .await
            .unwrap();
        client.batch_execute("ANALYZE wharf.jobs").await.unwrap();
        // A burst of ready jobs, and a vacuum since (which sizes the indexes, not the rows).
        for _ in 0..20 {
            store.job_insert_batch((0..1_000).map(|_| job("q")).collect()).await.unwrap();
        }
        client.batch_execute("VACUUM wharf.jobs").await.unwrap();
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {}", super::sql::READY_OF_QUEUE), &[&"q", &1i64])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using jobs_ready on jobs") && !plan.contains("Sort"), "{plan}");
        store.close().await;
    }

    /// Leases leave dead rows (and dead `jobs_ready` entries that later leases walk over);
    /// the leader's maintenance vacuums them away without waiting for autovacuum's next visit.
    #[tokio::test]
    async fn maintenance_vacuums_the_jobs_table_once_leases_leave_dead_rows() {
        let (store, client) = store_and_client().await;
        let vacuums = async || -> i64 {
            let sql = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'wharf.jobs'::regclass";
            client.query_one(sql, &[]).await.unwrap().get(0)
        };
        assert_eq!(vacuums().await, 0);
        store.job_insert_batch((0..3_000).map(|_| job("q")).collect()).await.unwrap();
        let mut leased = 0;
        while leased < 3_000 {
            leased += store.job_lease(ask("w", 1_000)).await.unwrap().len();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while vacuums().await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the jobs table was never vacuumed");
            store.maintain().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store.close().await;
    }

    /// A node publishes its own committed events from memory and the others' as read from the
    /// database: both must give every node the same events, with the same numbers.
    #[tokio::test]
    async fn every_node_sees_the_same_events_whichever_node_wrote_them() {
        let url = wharf_testkit::postgres::server().fresh_database().await;
        let clock = ManualClock::new(START);
        let (mut stores, mut buses) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let events = Arc::new(EventBus::numbered(RingLimits::default()));
            let store = PgStore::open(PgConfig::new(url.clone()), Arc::new(clock.clone()), Arc::clone(&events));
            stores.push(store.await.unwrap());
            buses.push(events);
        }
        let mut subscriptions: Vec<_> = buses.iter().map(|bus| bus.subscribe(|_| false).1).collect();
        let (a, b) = (&stores[0], &stores[1]);
        // Single enqueues (the first creates the queue, the next are gathered), a batch, a
        // lease, and completions with and without a result, from both nodes.
        for store in [a, b, a, b] {
            store.job_insert(job("q")).await.unwrap();
        }
        b.job_insert_batch((0..3).map(|_| job("q")).collect()).await.unwrap();
        let leased = a.job_lease(ask("w", 2)).await.unwrap();
        assert_eq!(leased.len(), 2);
        let done = |j: &LeasedJob, result: Option<&str>| crate::store::JobCompleteParams {
            id: j.id,
            lease_token: j.lease_token,
            result: result.map(str::to_owned),
        };
        b.job_complete(done(&leased[0], None)).await.unwrap();
        let acked = a
            .job_ack(crate::store::JobAckParams {
                complete: vec![done(&leased[1], Some(r#"{"pages":3}"#))],
                fail: Vec::new(),
            })
            .await
            .unwrap();
        assert!(acked.complete.iter().all(Result::is_ok));
        let expected = 4 + 3 + 2 + 2;
        let mut seen: Vec<Vec<crate::events::JobEvent>> = vec![Vec::new(), Vec::new()];
        for (subscription, seen) in subscriptions.iter_mut().zip(&mut seen) {
            while seen.len() < expected {
                let event = tokio::time::timeout(Duration::from_secs(10), subscription.next(|_| true))
                    .await
                    .expect("every event reaches every node")
                    .unwrap();
                seen.push((*event).clone());
            }
        }
        assert_eq!(seen[0], seen[1]);
        for store in stores {
            store.close().await;
        }
    }
}
