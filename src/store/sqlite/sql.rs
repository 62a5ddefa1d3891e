//! Every SQL statement of the embedded store, each with what it is for.
//!
//! Statements are prepared once per connection through rusqlite's statement cache. They decide
//! nothing about a job's lifecycle: the writer decides (with `core::state`) and the statements
//! store what it decided.
//!
//! The statements that change a job's state take named parameters, bound in one place,
//! `Engine::apply_transition`. Each sets `state = :to`, `attempt = :attempt`,
//! `version = :version` and `finished_at = :finished_at` — values, never arithmetic — and
//! matches `id = :id AND state = :from`. Those of a leased job also match the token the caller
//! presented: `lease_token = :fence_seq AND lease_secret IS :fence_secret` (`IS`, so a lease
//! taken before secrets existed, with a NULL secret, matches a token without one). The fencing
//! check in memory has already passed, so an update that changes no row is not a refusal but a
//! disagreement between memory and database, which the writer reports loudly. The other
//! statements take positional parameters (`?1` …).

/// Versioned schema migrations, applied in order at open; `PRAGMA user_version` records how many
/// have run.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_hardening.sql"),
    include_str!("migrations/0003_alarms.sql"),
    include_str!("migrations/0004_checks_without_lists.sql"),
];

/// The columns of a [`JobSummary`](crate::store::JobSummary), in `rows::summary` order.
macro_rules! summary_columns {
    () => {
        "id, queue, kind, state, priority, run_at, attempt, max_attempts, idempotency_key, created_at, finished_at"
    };
}

/// All queues with their policies, at start.
pub(super) const QUEUE_ALL: &str = "SELECT name, lease_ms, max_attempts, backoff_base_ms, backoff_factor, \
     backoff_cap_ms, retention_ms, concurrency, rate, paused, max_ready FROM queues ORDER BY name";

/// Creates a queue or replaces its policy.
pub(super) const QUEUE_UPSERT: &str = "INSERT INTO queues (name, lease_ms, max_attempts, backoff_base_ms, \
     backoff_factor, backoff_cap_ms, retention_ms, concurrency, rate, paused, created_at, max_ready) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (name) DO UPDATE SET lease_ms = excluded.lease_ms, max_attempts = excluded.max_attempts, \
     backoff_base_ms = excluded.backoff_base_ms, backoff_factor = excluded.backoff_factor, \
     backoff_cap_ms = excluded.backoff_cap_ms, retention_ms = excluded.retention_ms, \
     concurrency = excluded.concurrency, rate = excluded.rate, paused = excluded.paused, \
     max_ready = excluded.max_ready";

/// Deletes a queue's jobs, before the queue itself (only finished ones remain by then).
pub(super) const JOBS_OF_QUEUE_DELETE: &str = "DELETE FROM jobs WHERE queue = ?1";

/// Deletes a queue.
pub(super) const QUEUE_DELETE: &str = "DELETE FROM queues WHERE name = ?1";

/// Jobs per queue and state, at start. Served by the `(queue, state, id)` index alone.
pub(super) const COUNT_BY_QUEUE_STATE: &str = "SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state";

/// Ready jobs of a queue, at start, to rebuild its ready index.
pub(super) const READY_OF_QUEUE: &str = "SELECT id, priority, run_at FROM jobs WHERE queue = ?1 AND state = 'ready'";

/// Scheduled jobs of a queue, at start.
pub(super) const SCHEDULED_OF_QUEUE: &str = "SELECT id, run_at FROM jobs WHERE queue = ?1 AND state = 'scheduled'";

/// Running jobs of a queue with their leases, at start.
pub(super) const RUNNING_OF_QUEUE: &str = "SELECT id, lease_token, lease_expires_at, lease_ms, started_at, attempt, \
     max_attempts, cancel_requested, version, priority, run_at, COALESCE(worker_id, ''), lease_secret \
     FROM jobs WHERE queue = ?1 AND state = 'running'";

/// Where id generation resumes: past the reservation and past every stored id.
pub(super) const META_ID_RESERVED_GET: &str = "SELECT MAX(COALESCE((SELECT value FROM meta WHERE key = 'id_reserved'), 0), \
     COALESCE((SELECT MAX(id) FROM jobs), 0))";

/// Reserves ids and lease tokens up to `?1`: written when generation passes the previous
/// reservation, about once a second under load, so a clock that steps back across a restart
/// cannot repeat an id or a token.
pub(super) const META_ID_RESERVED_SET: &str =
    "INSERT INTO meta (key, value) VALUES ('id_reserved', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Stores a token.
pub(super) const TOKEN_INSERT: &str =
    "INSERT INTO tokens (id, name, role, queues, rate, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Every token, oldest first.
pub(super) const TOKEN_ALL: &str =
    "SELECT id, name, role, queues, rate, hash, created_at FROM tokens ORDER BY created_at, id";

/// How many tokens exist.
pub(super) const TOKEN_COUNT: &str = "SELECT COUNT(*) FROM tokens";

/// Revokes a token.
pub(super) const TOKEN_DELETE: &str = "DELETE FROM tokens WHERE id = ?1";

/// How many alarm rules were set through the API.
pub(super) const ALARM_RULE_COUNT: &str = "SELECT COUNT(*) FROM alarms WHERE rule IS NOT NULL";
/// Whether an alarm rule of this name was set through the API.
pub(super) const ALARM_RULE_EXISTS: &str = "SELECT COUNT(*) FROM alarms WHERE name = ?1 AND rule IS NOT NULL";
/// Sets an alarm rule, keeping its state.
pub(super) const ALARM_RULE_PUT: &str = "INSERT INTO alarms (name, rule, updated_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET rule = excluded.rule, updated_at = excluded.updated_at";
/// Forgets an alarm rule and its state.
pub(super) const ALARM_DELETE: &str = "DELETE FROM alarms WHERE name = ?1";
/// Stores an alarm's state, keeping its rule.
pub(super) const ALARM_STATE_PUT: &str = "INSERT INTO alarms (name, state, updated_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";
/// Every alarm row.
pub(super) const ALARM_ALL: &str = "SELECT name, rule, state, updated_at FROM alarms ORDER BY name";

/// Enqueue.
pub(super) const JOB_INSERT: &str = "INSERT INTO jobs (id, queue, kind, state, priority, run_at, max_attempts, \
     timeout_ms, idempotency_key, payload, metadata, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// The job holding an idempotency key in a queue (partial unique index), with its payload: a
/// repeat must ask for the same kind and payload to be a repeat.
pub(super) const JOB_BY_KEY: &str =
    concat!("SELECT ", summary_columns!(), ", payload FROM jobs WHERE queue = ?1 AND idempotency_key = ?2");

/// A whole job.
pub(super) const JOB_GET: &str = "SELECT id, queue, kind, payload, priority, state, run_at, attempt, max_attempts, \
     timeout_ms, idempotency_key, metadata, progress, result, errors, cancel_requested, lease_token, \
     lease_expires_at, worker_id, created_at, started_at, finished_at, version, lease_secret FROM jobs WHERE id = ?1";

/// A job's state, to tell "unknown job" from "stale token" after a fencing check fails.
pub(super) const JOB_STATE: &str = "SELECT state FROM jobs WHERE id = ?1";

/// A page of one state of a queue, newest first.
pub(super) const JOB_LIST_STATE: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM jobs WHERE queue = ?1 AND state = ?2 AND id < ?3 AND (?4 IS NULL OR kind = ?4) \
     AND (?6 IS NULL OR instr(lower(errors), lower(?6)) > 0) AND id >= ?7 ORDER BY id DESC LIMIT ?5"
);

/// The id of the `?5`-th newest job of a queue in a state below `?3` and at least `?4` (`?5`
/// counted from 0): where a bounded scan of a listing stops.
pub(super) const JOB_LIST_SCAN_END: &str =
    "SELECT id FROM jobs WHERE queue = ?1 AND state = ?2 AND id < ?3 AND id >= ?4 ORDER BY id DESC LIMIT 1 OFFSET ?5";

/// What a lease hands the worker, read just before the lease is written, with the state the
/// lease must leave (the ready index says `ready`; the transition checks).
pub(super) const JOB_LEASE_READ: &str = "SELECT kind, payload, attempt, max_attempts, timeout_ms, metadata, priority, \
     run_at, version, state FROM jobs WHERE id = ?1";

/// Takes a ready job: the lease, with its new token. (No `RETURNING` on the hot paths: SQLite
/// collects returned rows in a temporary table, which costs more than the statement itself. The
/// writer knows every value it would return.)
pub(super) const JOB_LEASE: &str = "UPDATE jobs SET state = :to, attempt = :attempt, version = :version, \
     finished_at = :finished_at, lease_token = :token, lease_secret = :secret, lease_expires_at = :expires_at, \
     lease_ms = :lease_ms, worker_id = :worker, started_at = :now WHERE id = :id AND state = :from";

/// Extends a lease under the presented token, recording progress when given (only progress is
/// an event, so the writer moves the version only then).
pub(super) const LEASE_HEARTBEAT: &str = "UPDATE jobs SET lease_expires_at = ?2, progress = COALESCE(?3, progress), \
     version = ?4 WHERE id = ?1 AND state = 'running' AND lease_token = ?5 AND lease_secret IS ?6";

/// A successful attempt.
pub(super) const JOB_COMPLETE: &str = "UPDATE jobs SET state = :to, attempt = :attempt, version = :version, \
     finished_at = :finished_at, result = :result, lease_token = NULL, lease_secret = NULL, lease_expires_at = NULL \
     WHERE id = :id AND state = :from AND lease_token = :fence_seq AND lease_secret IS :fence_secret";

/// A failed attempt (by report or lease expiry): appends to `errors` for the attempt that failed
/// (a failure keeps the count), then retry at `:run_at`, dead or canceled.
pub(super) const JOB_FAIL: &str = "UPDATE jobs SET state = :to, attempt = :attempt, version = :version, \
     finished_at = :finished_at, run_at = COALESCE(:run_at, run_at), \
     lease_token = NULL, lease_secret = NULL, lease_expires_at = NULL, \
     errors = json_insert(COALESCE(errors, '[]'), '$[#]', json_object('at', :now, 'attempt', :attempt, 'message', :error)) \
     WHERE id = :id AND state = :from AND lease_token = :fence_seq AND lease_secret IS :fence_secret";

/// A released lease: the attempt count the writer gives back is bound like any other.
pub(super) const JOB_RELEASE: &str = "UPDATE jobs SET state = :to, attempt = :attempt, version = :version, \
     finished_at = :finished_at, lease_token = NULL, lease_secret = NULL, lease_expires_at = NULL \
     WHERE id = :id AND state = :from AND lease_token = :fence_seq AND lease_secret IS :fence_secret";

/// A change of state alone, of a job not under a lease: a scheduled job promoted, a waiting job
/// canceled.
pub(super) const JOB_STATE_SET: &str = "UPDATE jobs SET state = :to, attempt = :attempt, version = :version, \
     finished_at = :finished_at WHERE id = :id AND state = :from";

/// What a cancel needs to decide.
pub(super) const JOB_CANCEL_LOOKUP: &str =
    "SELECT queue, state, cancel_requested, priority, run_at, attempt, version FROM jobs WHERE id = ?1";

/// Flags a running job for cancellation. Not an event (the stream shows the job ending
/// `canceled`), so the version stays.
pub(super) const JOB_CANCEL_REQUEST: &str = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'";

/// A scheduled job, before promotion, with the state promotion must leave (the scheduled index
/// says `scheduled`; the transition checks).
pub(super) const JOB_PROMOTE_READ: &str =
    "SELECT queue, priority, run_at, attempt, version, state FROM jobs WHERE id = ?1";

/// Dead jobs of a queue, for redrive of all: `id, state, attempt, version, priority`.
pub(super) const DEAD_OF_QUEUE: &str =
    "SELECT id, state, attempt, version, priority FROM jobs WHERE queue = ?1 AND state = 'dead' ORDER BY id";

/// A job's queue, then what redrive needs (as `DEAD_OF_QUEUE`), for redrive of listed ids.
pub(super) const JOB_REDRIVE_READ: &str = "SELECT queue, id, state, attempt, version, priority FROM jobs WHERE id = ?1";

/// Redrive: dead → ready now, with the attempt count the writer resets; errors kept as history.
pub(super) const DEAD_REDRIVE: &str = "UPDATE jobs SET state = :to, attempt = :attempt, version = :version, \
     finished_at = :finished_at, run_at = :now, cancel_requested = 0 WHERE id = :id AND state = :from";

/// Deletes finished jobs past retention. `id < ?3` bounds the index scan to jobs created before
/// the cutoff (a job cannot finish before it is created), so a queue full of recent jobs costs
/// nothing to check.
pub(super) const JOBS_PRUNE: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = ?1 AND \
     state = ?2 AND id < ?3 AND finished_at < ?4 LIMIT ?5)";
