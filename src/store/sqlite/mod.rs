//! The embedded store: one SQLite file under the data dir, owned by one `wharf serve`.
//!
//! A [`SqliteStore`] is a cheap handle that sends commands to the writer thread in
//! [`engine`], which owns the only connection (see its docs for group commit and the in-memory
//! view). The file is in WAL mode; a lock on `wharf.db.lock` keeps a second server off the same
//! data dir (it fails at start with a clear error), and [`checkpoint`] copies the log into the
//! database off the commit path.
//!
//! [`Durability`] maps onto SQLite's `synchronous`: with [`Durability::Fsync`] (the default)
//! every commit is fsynced (`FULL`); with [`Durability::Os`] commits reach the OS and are
//! fsynced only at checkpoints (`NORMAL`), which survives `kill -9` of the server but not a
//! power cut.

use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::core::{Clock, Job, JobId, NewJob, QueueName, QueuePolicyPatch, Timestamp};
use crate::events::EventBus;
use crate::metrics::MetricsSnapshot;
use crate::store::{
    Acked, Canceled, DeadRedriveParams, Heartbeat, Inserted, JobAckParams, JobCompleteParams, JobFailParams,
    JobLeaseParams, JobListParams, JobPage, JobReleaseParams, LeaseHeartbeatParams, LeasedJob, PoolRecord, QueueInfo,
    Settled, Store, StoreError, StoreResult, TokenRecord, WorkerInfo,
};

mod checkpoint;
mod engine;
mod memory;
mod ready;
mod rows;
mod sql;

use engine::{Command, Engine};

/// Kept here too for callers that named it before it moved to [`crate::store`].
pub use crate::store::Durability;

/// How to open the embedded store.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file. `wharf serve` uses `<data-dir>/wharf.db`.
    pub path: PathBuf,
    /// When a commit counts as done. Defaults to [`Durability::Fsync`].
    pub durability: Durability,
    /// Operations that may wait for the writer before callers get [`StoreError::Busy`].
    /// Defaults to 65,536.
    pub queue_depth: usize,
    /// Most queues; creating one more is refused with [`StoreError::QueueLimit`]. Every queue
    /// costs memory and lines of `/metrics`, and queues are created by their first job, so
    /// without a bound a client could create them without end. Defaults to 1,000.
    pub max_queues: usize,
}

impl SqliteConfig {
    /// The defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig { path: path.into(), durability: Durability::Fsync, queue_depth: 65_536, max_queues: 1_000 }
    }
}

/// The database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the database.
    #[error("{0} is in use by another wharf server (one server owns an embedded store)")]
    Locked(PathBuf),
    /// The file is not a wharf database, or is damaged.
    #[error("{path} is not a usable wharf database: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The structure check found damage (a torn write, a truncated copy, flipped bits).
    #[error(
        "{path} is damaged ({first}); wharf will not run on it, to lose nothing silently: restore it from a backup, or salvage it with `sqlite3 {path} .recover`"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The first problem found.
        first: String,
    },
    /// The database was written by a newer wharf.
    #[error("{path} has schema version {found}, newer than this wharf understands ({known}); upgrade wharf")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// Any other failure to open.
    #[error("cannot open {path}: {source}")]
    Other {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    tx: SyncSender<Command>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Autoscaled pools' state: in memory, as this one node is always their leader and its
    /// worker processes do not outlive it.
    pools: Mutex<std::collections::BTreeMap<String, PoolRecord>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies migrations, rebuilds the in-memory view
    /// and starts the writer thread.
    pub fn open(config: SqliteConfig, clock: Arc<dyn Clock>, events: Arc<EventBus>) -> Result<Self, OpenError> {
        let path = config.path.clone();
        let classify = |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                OpenError::Locked(path.clone())
            }
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                OpenError::Corrupt { path: path.clone(), source }
            }
            _ => OpenError::Other { path: path.clone(), source },
        };
        // One server owns a data dir: an advisory lock on a file beside the database, held by
        // the writer thread for as long as it runs (the OS drops it if the process dies).
        let lock_path = PathBuf::from(format!("{}.lock", config.path.display()));
        let lock = std::fs::File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| {
            OpenError::Other { path: lock_path.clone(), source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)) }
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(config.path.clone())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(OpenError::Other {
                    path: lock_path,
                    source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                });
            }
        }
        let conn = Connection::open_with_flags(
            &config.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(classify)?;
        let synchronous = match config.durability {
            Durability::Fsync => "FULL",
            Durability::Os => "NORMAL",
        };
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0)).map_err(classify)?;
        let log_bytes = checkpoint::log_reserve_bytes(page_size.max(512) as u64);
        // Checkpoints run on their own thread (see `checkpoint`), never inside a commit, and the
        // log keeps the length reserved for it: SQLite cuts it back only past twice that. The
        // page cache is 8 MiB: the hot pages are the right edges of the table and its index,
        // and with a million jobs 32 MiB cost memory without a measurable gain.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {}; \
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8192; PRAGMA foreign_keys = OFF;",
            2 * log_bytes
        ))
        .map_err(classify)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(classify)?;
        conn.set_prepared_statement_cache_capacity(64);
        integrity_check(&conn, &config.path).map_err(|e| match e {
            Integrity::Sql(source) => classify(source),
            Integrity::Damaged(first) => OpenError::Damaged { path: config.path.clone(), first },
        })?;
        migrate(&conn, &config.path).map_err(|e| match e {
            MigrateError::Sql(source) => classify(source),
            MigrateError::TooNew(found) => {
                OpenError::TooNew { path: config.path.clone(), found, known: sql::MIGRATIONS.len() as i64 }
            }
        })?;
        // A speed-up, not a need: without the room the store works as before, so a full disk
        // is reported by the first commit that cannot be written, not here.
        match checkpoint::reserve_log(&config.path, log_bytes) {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                path = %config.path.display(),
                "little free space: the write-ahead log is not given room ahead, and commits are slower"
            ),
            Err(err) => tracing::warn!(
                path = %config.path.display(),
                error = %err,
                "cannot give the write-ahead log room ahead; commits are slower"
            ),
        }
        let checkpointer = checkpoint::Checkpointer::start(&config.path, synchronous).map_err(classify)?;
        let engine = Engine::new(conn, checkpointer, lock, clock, events, config.max_queues).map_err(classify)?;
        let (tx, rx) = mpsc::sync_channel(config.queue_depth);
        let thread =
            std::thread::Builder::new().name("wharf-store".into()).spawn(move || engine.run(rx)).map_err(|e| {
                OpenError::Other {
                    path: config.path.clone(),
                    source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                }
            })?;
        Ok(SqliteStore { tx, thread: Mutex::new(Some(thread)), pools: Mutex::default() })
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Command) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(command(reply)).map_err(|err| match err {
            TrySendError::Full(_) => StoreError::Busy,
            TrySendError::Disconnected(_) => StoreError::Unavailable("the store is closed".into()),
        })?;
        answer.await.map_err(|_| StoreError::Unavailable("the store stopped before answering".into()))?
    }
}

enum Integrity {
    Sql(rusqlite::Error),
    Damaged(String),
}

/// Checks every page's structure before anything is read (`PRAGMA quick_check`: about a second
/// per 200 MB when cached). A damaged file would otherwise load partly and lose jobs silently.
fn integrity_check(conn: &Connection, path: &std::path::Path) -> Result<(), Integrity> {
    let started = std::time::Instant::now();
    let mut stmt = conn.prepare("PRAGMA quick_check(1)").map_err(Integrity::Sql)?;
    let first: String = stmt.query_row([], |row| row.get(0)).map_err(Integrity::Sql)?;
    if first != "ok" {
        return Err(Integrity::Damaged(first));
    }
    tracing::debug!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "database structure checked");
    Ok(())
}

enum MigrateError {
    Sql(rusqlite::Error),
    TooNew(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(err: rusqlite::Error) -> Self {
        MigrateError::Sql(err)
    }
}

/// Applies the migrations the file has not seen yet, each in its own transaction.
fn migrate(conn: &Connection, path: &std::path::Path) -> Result<(), MigrateError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = sql::MIGRATIONS.len() as i64;
    if version > known {
        return Err(MigrateError::TooNew(version));
    }
    for (i, migration) in sql::MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let next = i as i64 + 1;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {migration}; PRAGMA user_version = {next}; COMMIT;"))
            .inspect_err(|_| {
                let _ = conn.execute_batch("ROLLBACK");
            })?;
        tracing::info!(path = %path.display(), version = next, "applied schema migration");
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn job_insert(&self, job: NewJob) -> StoreResult<Inserted> {
        let mut inserted = self.call(|reply| Command::Insert { jobs: vec![job], reply }).await?;
        inserted.pop().ok_or_else(|| StoreError::Unavailable("insert returned nothing".into()))
    }

    async fn job_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        self.call(|reply| Command::Insert { jobs, reply }).await
    }

    async fn job_get(&self, id: JobId) -> StoreResult<Job> {
        self.call(|reply| Command::Get { id, reply }).await
    }

    async fn job_list(&self, params: JobListParams) -> StoreResult<JobPage> {
        self.call(|reply| Command::List { params, reply }).await
    }

    async fn job_lease(&self, params: JobLeaseParams) -> StoreResult<Vec<LeasedJob>> {
        let deadline = Instant::now() + params.wait.min(Duration::from_secs(3_600));
        self.call(|reply| Command::Lease { params, deadline, reply }).await
    }

    async fn lease_heartbeat(&self, params: LeaseHeartbeatParams) -> StoreResult<Heartbeat> {
        self.call(|reply| Command::Heartbeat { params, reply }).await
    }

    async fn job_complete(&self, params: JobCompleteParams) -> StoreResult<Settled> {
        self.call(|reply| Command::Complete { params, reply }).await
    }

    async fn job_fail(&self, params: JobFailParams) -> StoreResult<Settled> {
        self.call(|reply| Command::Fail { params, reply }).await
    }

    async fn job_release(&self, params: JobReleaseParams) -> StoreResult<Settled> {
        self.call(|reply| Command::Release { params, reply }).await
    }

    async fn job_ack(&self, params: JobAckParams) -> StoreResult<Acked> {
        self.call(|reply| Command::Ack { params, reply }).await
    }

    async fn job_cancel(&self, id: JobId) -> StoreResult<Canceled> {
        self.call(|reply| Command::Cancel { id, reply }).await
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        self.call(|reply| Command::QueueList { reply }).await
    }

    async fn queue_get(&self, name: QueueName) -> StoreResult<QueueInfo> {
        self.call(|reply| Command::QueueGet { name, reply }).await
    }

    async fn queue_upsert(&self, name: QueueName, patch: QueuePolicyPatch) -> StoreResult<QueueInfo> {
        self.call(|reply| Command::QueueUpsert { name, patch, reply }).await
    }

    async fn queue_delete(&self, name: QueueName) -> StoreResult<()> {
        self.call(|reply| Command::QueueDelete { name, reply }).await
    }

    async fn token_insert(&self, token: TokenRecord) -> StoreResult<()> {
        self.call(|reply| Command::TokenInsert { token, reply }).await
    }

    async fn token_list(&self) -> StoreResult<Vec<TokenRecord>> {
        self.call(|reply| Command::TokenList { reply }).await
    }

    async fn token_delete(&self, id: String) -> StoreResult<bool> {
        self.call(|reply| Command::TokenDelete { id, reply }).await
    }

    async fn alarm_rule_put(&self, name: String, rule: String, at: Timestamp) -> StoreResult<bool> {
        self.call(|reply| Command::AlarmRulePut { name, rule, at, reply }).await
    }

    async fn alarm_delete(&self, name: String) -> StoreResult<bool> {
        self.call(|reply| Command::AlarmDelete { name, reply }).await
    }

    async fn alarm_state_put(&self, name: String, state: String, at: Timestamp) -> StoreResult<()> {
        self.call(|reply| Command::AlarmStatePut { name, state, at, reply }).await
    }

    async fn alarm_list(&self) -> StoreResult<Vec<crate::store::AlarmRecord>> {
        self.call(|reply| Command::AlarmList { reply }).await
    }

    async fn dead_redrive(&self, params: DeadRedriveParams) -> StoreResult<Vec<JobId>> {
        self.call(|reply| Command::Redrive { params, reply }).await
    }

    async fn jobs_prune(&self, limit: u32) -> StoreResult<u64> {
        self.call(|reply| Command::Prune { limit, reply }).await
    }

    async fn maintain(&self) -> StoreResult<()> {
        self.call(|reply| Command::Maintain { reply }).await
    }

    async fn worker_list(&self) -> StoreResult<Vec<WorkerInfo>> {
        self.call(|reply| Command::Workers { reply }).await
    }

    async fn pool_put(&self, record: PoolRecord) -> StoreResult<()> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).insert(record.name.clone(), record);
        Ok(())
    }

    async fn pool_list(&self) -> StoreResult<Vec<PoolRecord>> {
        Ok(self.pools.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect())
    }

    async fn worker_drain(&self, id: String, even_unseen: bool) -> StoreResult<()> {
        self.call(|reply| Command::WorkerDrain { id, even_unseen, reply }).await
    }

    async fn worker_leave(&self, id: String) -> StoreResult<bool> {
        self.call(|reply| Command::WorkerLeave { id, reply }).await
    }

    async fn metrics(&self) -> StoreResult<MetricsSnapshot> {
        self.call(|reply| Command::Metrics { reply }).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call(|reply| Command::Ping { reply }).await
    }

    async fn close(&self) {
        let (reply, answer) = oneshot::channel();
        // Blocking send: shutdown must get through even when the channel is full.
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(Command::Shutdown { reply }).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = answer.await;
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::time::Duration;

    use super::{SqliteConfig, SqliteStore};
    use crate::core::time::ManualClock;
    use crate::core::{JobState, LeaseToken, NewJob};
    use crate::events::{EventBus, RingLimits};
    use crate::store::conformance::{Harness, START, job, lease_params, store_conformance_suite};
    use crate::store::{JobCompleteParams, JobLeaseParams, LeaseHeartbeatParams, Store, StoreError};

    async fn harness() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wharf.db");
        let clock = ManualClock::new(START);
        let events = Arc::new(EventBus::new(RingLimits { max_events: 1024, ..RingLimits::default() }, 0));
        let open = move |clock: &ManualClock, events: Arc<EventBus>| -> Arc<dyn Store> {
            Arc::new(SqliteStore::open(SqliteConfig::new(&path), Arc::new(clock.clone()), events).expect("open store"))
        };
        let store = open(&clock, Arc::clone(&events));
        let reopen = move |clock: &ManualClock, events: Arc<EventBus>| {
            let store = open(clock, events);
            Box::pin(async move { store }) as futures_util::future::BoxFuture<'static, Arc<dyn Store>>
        };
        Harness { store, clock, events, reopen: Box::new(reopen), _guard: Box::new(dir) }
    }

    store_conformance_suite!(harness);

    fn bus() -> Arc<EventBus> {
        Arc::new(EventBus::new(RingLimits { max_events: 64, ..RingLimits::default() }, 0))
    }

    /// A store on `file` with one job leased; the job and its lease.
    async fn one_lease(file: &std::path::Path) -> (SqliteStore, crate::store::LeasedJob) {
        let store = SqliteStore::open(SqliteConfig::new(file), Arc::new(ManualClock::new(START)), bus()).unwrap();
        store.job_insert(NewJob { payload: "{}".into(), ..job("q", "k") }).await.unwrap();
        let leased = store.job_lease(lease_params("q", 1)).await.unwrap().pop().expect("one job");
        (store, leased)
    }

    /// Changes the job's row behind the store's back, as another program could.
    fn tamper(file: &std::path::Path, sql: &str, params: impl rusqlite::Params) {
        let conn = rusqlite::Connection::open(file).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(conn.execute(sql, params).unwrap(), 1);
    }

    #[tokio::test]
    async fn an_update_the_database_refuses_is_an_error_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.db");
        let (store, leased) = one_lease(&file).await;
        let id = leased.id;
        // The row's lease now has another secret than the one memory holds (and the worker
        // presents): memory's fencing check passes, the database's match does not.
        let other = leased.lease_token.secret() ^ 1;
        tamper(&file, "UPDATE jobs SET lease_secret = ?2 WHERE id = ?1", (id.raw(), other.to_be_bytes()));
        let before = store.job_get(id).await.unwrap();
        let complete = |token| store.job_complete(JobCompleteParams { id, lease_token: token, result: None });
        let refused = complete(leased.lease_token).await;
        assert!(
            matches!(&refused, Err(StoreError::Inconsistent(why)) if why.contains("changed 0 rows")),
            "{refused:?}"
        );
        assert_eq!(store.job_get(id).await.unwrap(), before, "nothing was committed");
        // Memory was rebuilt from the database, which is the authority: the token memory held
        // is stale now, and the one the row holds completes the job.
        assert_eq!(complete(leased.lease_token).await, Err(StoreError::StaleLease { id, state: JobState::Running }));
        let rows_token = LeaseToken::from_parts(leased.lease_token.raw(), other);
        assert_eq!(complete(rows_token).await.unwrap().state, JobState::Succeeded);
        store.close().await;
    }

    #[tokio::test]
    async fn a_lease_from_before_secrets_still_works_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.db");
        let (store, leased) = one_lease(&file).await;
        store.close().await;
        // As a lease taken before migration 0002 is stored: no secret.
        tamper(&file, "UPDATE jobs SET lease_secret = NULL WHERE id = ?1", [leased.id.raw()]);
        let store = SqliteStore::open(SqliteConfig::new(&file), Arc::new(ManualClock::new(START)), bus()).unwrap();
        let bare = LeaseToken::from_raw(leased.lease_token.raw());
        let id = leased.id;
        let beat =
            store.lease_heartbeat(LeaseHeartbeatParams { id, lease_token: bare, extend_ms: None, progress: None });
        assert!(beat.await.is_ok(), "the database matches a NULL secret with a token without one");
        let settled = store.job_complete(JobCompleteParams { id, lease_token: bare, result: None }).await.unwrap();
        assert_eq!(settled.state, JobState::Succeeded);
        store.close().await;
    }

    #[tokio::test]
    async fn the_log_keeps_its_reserved_room_and_what_a_crash_leaves_recovers_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.db");
        let log_len = |db: &std::path::Path| std::fs::metadata(format!("{}-wal", db.display())).unwrap().len();
        let reserved = super::checkpoint::log_reserve_bytes(4096);
        let store = SqliteStore::open(SqliteConfig::new(&file), Arc::new(ManualClock::new(START)), bus()).unwrap();
        assert!(log_len(&file) >= reserved, "the log is given its room at open");
        let mut ids = Vec::new();
        for n in 0..3 {
            let job = NewJob { payload: format!("{{\"n\":{n}}}"), ..job("q", "k") };
            ids.push(store.job_insert(job).await.unwrap().job.id);
        }
        // SQLite cuts the log to its size limit at the first commit of a log; the room stays.
        assert!(log_len(&file) >= reserved, "commits keep the log's room");

        // What a crash leaves on disk: the database and the log, its frames followed by zeros.
        let crashed = dir.path().join("crashed");
        std::fs::create_dir(&crashed).unwrap();
        let copy = crashed.join("wharf.db");
        std::fs::copy(&file, &copy).unwrap();
        std::fs::copy(format!("{}-wal", file.display()), format!("{}-wal", copy.display())).unwrap();
        let recovered = SqliteStore::open(SqliteConfig::new(&copy), Arc::new(ManualClock::new(START)), bus()).unwrap();
        for (n, id) in ids.into_iter().enumerate() {
            let job = recovered.job_get(id).await.expect("a committed job survives");
            assert_eq!(job.payload, format!("{{\"n\":{n}}}"));
        }
        recovered.close().await;
        store.close().await;
    }

    /// A shutdown behind a stream of writes: every write sent before it is done and on disk,
    /// the parked lease is answered, and what comes after is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_finishes_the_writes_before_it_and_answers_parked_leases() {
        use futures_util::FutureExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.db");
        let store = SqliteStore::open(SqliteConfig::new(&file), Arc::new(ManualClock::new(START)), bus()).unwrap();
        let params = JobLeaseParams { wait: Duration::from_secs(600), ..lease_params("elsewhere", 1) };
        // Each call, polled once, has sent its command to the writer: they queue up ahead of the
        // shutdown in the order made here.
        let mut parked = Box::pin(store.job_lease(params));
        assert!((&mut parked).now_or_never().is_none(), "a lease for an empty queue parks");
        let mut writes: Vec<_> = (0..400)
            .map(|n| Box::pin(store.job_insert(NewJob { payload: format!("{{\"n\":{n}}}"), ..job("q", "k") })))
            .collect();
        let early: Vec<_> = writes.iter_mut().map(|write| write.now_or_never()).collect();
        tokio::time::timeout(Duration::from_secs(60), store.close()).await.expect("the store closes");

        let parked = tokio::time::timeout(Duration::from_secs(60), parked).await.expect("the parked lease is answered");
        assert!(parked.is_ok_and(|jobs| jobs.is_empty()), "a parked lease is answered empty at shutdown");
        let mut ids = Vec::new();
        for (write, early) in writes.into_iter().zip(early) {
            let inserted = match early {
                Some(answer) => answer,
                None => write.await,
            };
            ids.push(inserted.expect("a write sent before the shutdown is done").job.id);
        }
        let late = store.job_insert(job("q", "k")).await;
        assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
        drop(store);
        let reopened = SqliteStore::open(SqliteConfig::new(&file), Arc::new(ManualClock::new(START)), bus()).unwrap();
        for (n, id) in ids.into_iter().enumerate() {
            let job = reopened.job_get(id).await.expect("a write done before the shutdown is on disk");
            assert_eq!(job.payload, format!("{{\"n\":{n}}}"));
        }
        reopened.close().await;
    }

    #[tokio::test]
    async fn a_second_server_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.db");
        let events = Arc::new(EventBus::new(RingLimits { max_events: 16, ..RingLimits::default() }, 0));
        let first = SqliteStore::open(SqliteConfig::new(&file), Arc::new(ManualClock::new(START)), Arc::clone(&events))
            .unwrap();
        let second = SqliteStore::open(SqliteConfig::new(&file), Arc::new(ManualClock::new(START)), events);
        let err = second.expect_err("the file is locked by the first store");
        assert!(err.to_string().contains("in use by another wharf server"), "{err}");
        first.close().await;
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.db");
        std::fs::write(&file, vec![0x42u8; 8192]).unwrap();
        let err = SqliteStore::open(
            SqliteConfig::new(&file),
            Arc::new(ManualClock::new(START)),
            Arc::new(EventBus::new(RingLimits { max_events: 16, ..RingLimits::default() }, 0)),
        )
        .expect_err("garbage is not a database");
        assert!(err.to_string().contains("not a usable wharf database"), "{err}");
    }

    /// A file written by the previous schema (state checks as `IN` lists) opens with its jobs,
    /// and the rebuilt table still refuses what the checks refuse.
    #[tokio::test]
    async fn a_database_of_the_previous_schema_is_upgraded_with_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.db");
        {
            let conn = rusqlite::Connection::open(&file).unwrap();
            for (i, migration) in super::sql::MIGRATIONS[..3].iter().enumerate() {
                conn.execute_batch(&format!("BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;", i + 1)).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO queues (name, lease_ms, max_attempts, backoff_base_ms, backoff_factor, backoff_cap_ms, \
                 retention_ms, created_at) VALUES ('q', 30000, 3, 1000, 2, 60000, 86400000, 0); \
                 INSERT INTO jobs (id, queue, kind, state, priority, run_at, payload, created_at, idempotency_key) \
                 VALUES (1048576, 'q', 'k', 'ready', 0, 0, '{\"n\":1}', 0, 'key-1'); \
                 INSERT INTO jobs (id, queue, kind, state, priority, run_at, payload, created_at, finished_at, result) \
                 VALUES (2097152, 'q', 'k', 'succeeded', 0, 0, '{}', 0, 5, '{\"ok\":true}');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(SqliteConfig::new(&file), Arc::new(ManualClock::new(START)), bus()).unwrap();
        let ready = store.job_get(crate::core::JobId::from_raw(1_048_576)).await.unwrap();
        assert_eq!((ready.state, ready.payload.as_str()), (JobState::Ready, "{\"n\":1}"));
        let done = store.job_get(crate::core::JobId::from_raw(2_097_152)).await.unwrap();
        assert_eq!((done.state, done.result.as_deref()), (JobState::Succeeded, Some("{\"ok\":true}")));
        drop(store);
        let conn = rusqlite::Connection::open(&file).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, super::sql::MIGRATIONS.len() as i64);
        let bogus = conn.execute(
            "INSERT INTO jobs (id, queue, kind, state, priority, run_at, payload, created_at) \
             VALUES (3145728, 'q', 'k', 'lost', 0, 0, '{}', 0)",
            [],
        );
        assert!(bogus.is_err(), "an unknown state is refused");
        let unfinished = conn.execute("UPDATE jobs SET state = 'dead' WHERE id = 1048576", []);
        assert!(unfinished.is_err(), "a terminal state needs finished_at");
        let key: Option<String> =
            conn.query_row("SELECT idempotency_key FROM jobs WHERE id = 1048576", [], |r| r.get(0)).unwrap();
        assert_eq!(key.as_deref(), Some("key-1"));
    }
}
