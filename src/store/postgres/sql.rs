//! Every SQL statement of the PostgreSQL store, each with what it is for.
//!
//! Decisions (which state a failed attempt leads to, the attempt count after a change) are made
//! in Rust by [`crate::core::state`] and bound as parameters; the SQL writes them. Every update
//! of a leased job matches the lease the caller presented (`lease_seq` and `lease_secret`), so
//! the database itself enforces fencing, on every node. Row locks (`FOR UPDATE`, with `SKIP
//! LOCKED` where a worker only wants *some* job) serialise the nodes; nothing relies on a
//! node's memory.

/// Versioned schema migrations, applied in order at start under an advisory lock.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_workers_pools.sql"),
    include_str!("migrations/0003_alarms.sql"),
];

/// The advisory lock key of migrations (any constant; "wharf" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x0077_6861_7266;
/// The advisory lock key of the leader: the node that holds it runs maintenance.
pub(super) const LEADER_LOCK: i64 = 0x0077_6861_7267;

/// The channel that carries the `seq` of each committed row of `wharf.events`.
pub(super) const EVENTS_CHANNEL: &str = "wharf_events";

/// The columns of a [`JobSummary`](crate::store::JobSummary), in `row_summary` order.
macro_rules! summary_columns {
    () => {
        "id, queue, kind, state, priority, run_at, attempt, max_attempts, idempotency_key, created_at, finished_at"
    };
}

/// The database's clock, to correct the nodes' clocks to one time.
pub(super) const DB_NOW: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Starts of `$1` blocks of unique numbers (the sequence counts in blocks) for ids and lease
/// sequences.
pub(super) const NEXT_IDS: &str = "SELECT nextval('wharf.id_seq') FROM generate_series(1, $1::int)";

/// A queue's policy.
pub(super) const QUEUE_GET: &str = "SELECT name, lease_ms, max_attempts, backoff_base_ms, backoff_factor, \
     backoff_cap_ms, retention_ms, concurrency, rate, paused, max_ready FROM wharf.queues WHERE name = $1";

/// Every queue's policy.
pub(super) const QUEUE_ALL: &str = "SELECT name, lease_ms, max_attempts, backoff_base_ms, backoff_factor, \
     backoff_cap_ms, retention_ms, concurrency, rate, paused, max_ready FROM wharf.queues ORDER BY name";

/// How many queues exist, under the lock that creating one takes.
pub(super) const QUEUE_COUNT: &str = "SELECT count(*) FROM wharf.queues";

/// Serialises the creation of queues across nodes, so the limit on their number holds.
pub(super) const QUEUE_CREATE_LOCK: &str = "SELECT pg_advisory_xact_lock(7768617268)";

/// Creates a queue or replaces its policy.
pub(super) const QUEUE_UPSERT: &str = "INSERT INTO wharf.queues (name, lease_ms, max_attempts, backoff_base_ms, \
     backoff_factor, backoff_cap_ms, retention_ms, concurrency, rate, paused, max_ready, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (name) DO UPDATE SET lease_ms = excluded.lease_ms, max_attempts = excluded.max_attempts, \
     backoff_base_ms = excluded.backoff_base_ms, backoff_factor = excluded.backoff_factor, \
     backoff_cap_ms = excluded.backoff_cap_ms, retention_ms = excluded.retention_ms, \
     concurrency = excluded.concurrency, rate = excluded.rate, paused = excluded.paused, \
     max_ready = excluded.max_ready, \
     rate_tokens = CASE WHEN wharf.queues.rate IS DISTINCT FROM excluded.rate THEN NULL ELSE wharf.queues.rate_tokens END";

/// Locks the limited queues of a lease request, so their limits hold across nodes: two nodes
/// leasing from one queue with a concurrency limit take turns.
pub(super) const QUEUES_LOCK_LIMITED: &str = "SELECT name, concurrency, rate, rate_tokens, rate_at FROM wharf.queues \
     WHERE name = ANY($1) AND NOT paused AND (concurrency IS NOT NULL OR rate IS NOT NULL) ORDER BY name FOR UPDATE";

/// The policies of the queues among `$1`.
pub(super) const QUEUES_OF: &str = "SELECT name, lease_ms, max_attempts, backoff_base_ms, backoff_factor, \
     backoff_cap_ms, retention_ms, concurrency, rate, paused, max_ready FROM wharf.queues WHERE name = ANY($1)";

/// Running jobs of a queue, counted up to `$2` (the limit): cheap however many there are.
pub(super) const RUNNING_UP_TO: &str =
    "SELECT count(*) FROM (SELECT 1 FROM wharf.jobs WHERE queue = $1 AND state = 'running' LIMIT $2) AS r";

/// Waiting jobs of a queue, counted up to `$2`: enough to compare with `max_ready`.
pub(super) const WAITING_UP_TO: &str = "SELECT count(*) FROM (SELECT 1 FROM wharf.jobs WHERE queue = $1 \
     AND state IN ('ready', 'scheduled') LIMIT $2) AS w";

/// Stores a queue's rate bucket after a lease took starts from it.
pub(super) const QUEUE_RATE_TAKE: &str = "UPDATE wharf.queues SET rate_tokens = $2, rate_at = $3 WHERE name = $1";

/// The best ready jobs of one queue, locked; jobs another node is taking are skipped, not
/// waited for. Served by `jobs_ready` in index order.
pub(super) const READY_OF_QUEUE: &str = "SELECT id, priority, run_at, octet_length(payload), attempt FROM wharf.jobs WHERE queue = $1 \
     AND state = 'ready' ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED";

/// Takes locked ready jobs: the lease. Each row gets its own attempt, sequence and secret.
pub(super) const JOBS_LEASE: &str = "UPDATE wharf.jobs AS j SET state = 'running', attempt = t.attempt, \
     lease_seq = t.seq, lease_secret = t.secret, lease_expires_at = t.expires_at, lease_ms = t.lease_ms, \
     worker_id = $6, started_at = $7, version = j.version + 1 \
     FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bytea[], $5::bigint[], $8::bigint[]) \
          AS t(id, attempt, seq, secret, expires_at, lease_ms) \
     WHERE j.id = t.id AND j.state = 'ready' \
     RETURNING j.id, j.queue, j.kind, j.payload, j.attempt, j.max_attempts, j.priority, j.timeout_ms, \
               j.metadata, j.run_at, j.version";

/// The lease of a worker whose queues have no concurrency or rate limit, with its events, in
/// one statement: run outside a transaction block, it commits by itself in one round trip.
/// The best ready jobs of each queue are locked (skipping those another node is taking); the
/// best `$2` across queues are taken while their payloads stay under `$3` bytes (the one that
/// reaches it is the last; the first always goes), found again by row address (a TID scan,
/// whatever the plan), and each gets the `n`th (from 1) of the lease sequences `$4` and
/// secrets `$5` made in Rust; `$6` is the attempt change. A queue that became limited is
/// skipped here until the node's cached policy expires (a second); the full path serves it
/// then. Answers the jobs best first, each with the `seq` of the events row; the events are
/// built as `StoredColumns`.
pub(super) const JOBS_LEASE_UNLIMITED_WITH_EVENTS: &str = "WITH picked AS ( \
       SELECT c.ctid AS row_at, c.id, c.priority, c.run_at, q.lease_ms AS policy_lease_ms, c.bytes \
       FROM wharf.queues q CROSS JOIN LATERAL ( \
         SELECT j.ctid, j.id, j.priority, j.run_at, octet_length(j.payload) AS bytes FROM wharf.jobs j \
         WHERE j.queue = q.name AND j.state = 'ready' ORDER BY j.priority DESC, j.run_at, j.id LIMIT $2 \
         FOR UPDATE SKIP LOCKED) AS c \
       WHERE q.name = ANY($1) AND NOT q.paused AND q.concurrency IS NULL AND q.rate IS NULL), \
   ranked AS (SELECT p.*, row_number() OVER w AS n, sum(p.bytes) OVER w AS running FROM picked p \
       WINDOW w AS (ORDER BY p.priority DESC, p.run_at, p.id)), \
   chosen AS (SELECT array_agg(row_at ORDER BY n) AS rows, array_agg(policy_lease_ms ORDER BY n) AS lease_mss \
       FROM ranked WHERE n <= $2 AND (n = 1 OR running - bytes < $3)), \
   upd AS (UPDATE wharf.jobs AS j SET state = 'running', attempt = j.attempt + $6, \
       lease_seq = ($4::bigint[])[array_position(c.rows, j.ctid)], \
       lease_secret = ($5::bytea[])[array_position(c.rows, j.ctid)], \
       lease_ms = COALESCE($7, c.lease_mss[array_position(c.rows, j.ctid)]), \
       lease_expires_at = $8 + COALESCE($7, c.lease_mss[array_position(c.rows, j.ctid)]), \
       worker_id = $9, started_at = $8, version = j.version + 1 \
     FROM chosen c WHERE j.ctid = ANY(ARRAY(SELECT unnest(rows) FROM chosen)) AND j.state = 'ready' \
     RETURNING j.id, j.queue, j.kind, j.payload, j.attempt, j.max_attempts, j.priority, j.timeout_ms, \
               j.metadata, j.run_at, j.version, j.lease_ms, \
               array_position($4::bigint[], j.lease_seq)::bigint AS n), \
   ev AS (INSERT INTO wharf.events (at, events) \
     SELECT $8, json_build_object('kind', 1, 'at', $8, 'state', 'running', 'job', array_agg(id ORDER BY n), \
            'queue', array_agg(queue ORDER BY n), 'version', array_agg(version ORDER BY n), \
            'attempt', array_agg(attempt ORDER BY n))::text \
     FROM upd HAVING count(*) > 0 RETURNING seq) \
   SELECT id, queue, kind, payload, attempt, max_attempts, priority, timeout_ms, metadata, run_at, version, \
          n, lease_ms, (SELECT seq FROM ev) FROM upd ORDER BY n";

/// Enqueues jobs of one queue in one statement; a job whose idempotency key another holds is
/// skipped (not returned), and the caller reads the holder.
pub(super) const JOBS_INSERT: &str = "INSERT INTO wharf.jobs (id, queue, kind, state, priority, run_at, \
     max_attempts, timeout_ms, idempotency_key, payload, metadata, created_at) \
     SELECT t.id, $2, t.kind, t.state, t.priority, t.run_at, t.max_attempts, t.timeout_ms, t.key, t.payload, \
            t.metadata, $12 \
     FROM unnest($1::bigint[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::int[], $8::bigint[], \
                 $9::text[], $10::text[], $11::text[]) \
          AS t(id, kind, state, priority, run_at, max_attempts, timeout_ms, key, payload, metadata) \
     ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id";

/// Enqueues plain jobs (no idempotency key) of any queues that exist, and records their
/// `created` events, in one statement: the single enqueues a node gathers. Run outside a
/// transaction block, it commits by itself in one round trip. A job whose queue is gone is
/// skipped. Answers the ids inserted and the `seq` of the events row (none when nothing was
/// inserted); the events are built as `StoredColumns`.
pub(super) const JOBS_INSERT_PLAIN_WITH_EVENTS: &str = "WITH ins AS (INSERT INTO wharf.jobs (id, queue, kind, \
       state, priority, run_at, max_attempts, timeout_ms, payload, metadata, created_at) \
     SELECT t.id, t.queue, t.kind, t.state, t.priority, t.run_at, t.max_attempts, t.timeout_ms, t.payload, \
            t.metadata, $11 \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::int[], \
                 $8::bigint[], $9::text[], $10::text[]) \
          AS t(id, queue, kind, state, priority, run_at, max_attempts, timeout_ms, payload, metadata) \
     WHERE EXISTS (SELECT 1 FROM wharf.queues q WHERE q.name = t.queue) RETURNING id, queue, state, run_at), \
   ev AS (INSERT INTO wharf.events (at, events) \
     SELECT $11, json_build_object('kind', 0, 'at', $11, 'version', 1, 'attempt', 0, \
            'job', array_agg(id ORDER BY id), 'queue', array_agg(queue ORDER BY id), \
            'state', array_agg(state ORDER BY id), 'run_at', array_agg(run_at ORDER BY id))::text \
     FROM ins HAVING count(*) > 0 RETURNING seq) \
   SELECT (SELECT array_agg(id) FROM ins), (SELECT seq FROM ev)";

/// The job holding an idempotency key, with its payload.
pub(super) const JOB_BY_KEY: &str =
    concat!("SELECT ", summary_columns!(), ", payload FROM wharf.jobs WHERE queue = $1 AND idempotency_key = $2");

/// A whole job.
pub(super) const JOB_GET: &str = "SELECT id, queue, kind, payload, priority, state, run_at, attempt, max_attempts, \
     timeout_ms, idempotency_key, metadata, progress, result, errors, cancel_requested, lease_seq, \
     lease_expires_at, worker_id, created_at, started_at, finished_at, version, lease_secret \
     FROM wharf.jobs WHERE id = $1";

/// A job's state, to tell "unknown job" from "stale token" after a fenced update matched
/// nothing.
pub(super) const JOB_STATE: &str = "SELECT state FROM wharf.jobs WHERE id = $1";

/// A page of a queue's jobs, newest first, optionally of one state and kind.
pub(super) const JOB_LIST: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM wharf.jobs WHERE queue = $1 AND ($2::text IS NULL OR state = $2) AND id < $3 \
     AND ($4::text IS NULL OR kind = $4) \
     AND ($6::text IS NULL OR strpos(lower(errors), lower($6)) > 0) AND id >= $7 ORDER BY id DESC LIMIT $5"
);

/// The id of the `$5`-th newest job of a queue (of a state, if given) below `$3` and at least
/// `$4` (`$5` counted from 0): where a bounded scan of a listing stops.
pub(super) const JOB_LIST_SCAN_END: &str = "SELECT id FROM wharf.jobs WHERE queue = $1 \
     AND ($2::text IS NULL OR state = $2) AND id < $3 AND id >= $4 ORDER BY id DESC LIMIT 1 OFFSET $5";

/// Extends a lease the caller holds, recording progress when given (only progress is an
/// event, so only progress bumps the version).
pub(super) const LEASE_HEARTBEAT: &str = "UPDATE wharf.jobs SET lease_expires_at = $4 + COALESCE($5, lease_ms), \
     progress = COALESCE($6, progress), version = version + (CASE WHEN $6::text IS NULL THEN 0 ELSE 1 END) \
     WHERE id = $1 AND state = 'running' AND lease_seq = $2 AND lease_secret IS NOT DISTINCT FROM $3 \
     RETURNING lease_expires_at, cancel_requested, version, attempt, queue";

/// A running job under the presented lease, locked, with what a failure or release decides on.
pub(super) const JOB_FENCED_FOR_UPDATE: &str = "SELECT j.attempt, COALESCE(j.max_attempts, q.max_attempts), \
     j.cancel_requested, q.backoff_base_ms, q.backoff_factor, q.backoff_cap_ms, j.queue, j.version, j.started_at \
     FROM wharf.jobs j JOIN wharf.queues q ON q.name = j.queue \
     WHERE j.id = $1 AND j.state = 'running' AND j.lease_seq = $2 AND j.lease_secret IS NOT DISTINCT FROM $3 \
     FOR UPDATE OF j";

/// Many successful attempts at once (an acknowledgement); the rows not returned were stale.
pub(super) const JOBS_COMPLETE: &str = "UPDATE wharf.jobs AS j SET state = 'succeeded', result = t.result, \
     finished_at = $5, lease_seq = NULL, lease_secret = NULL, lease_expires_at = NULL, version = j.version + 1 \
     FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::text[]) AS t(id, seq, secret, result) \
     WHERE j.id = ANY($1) AND j.id = t.id AND j.state = 'running' AND j.lease_seq = t.seq \
       AND j.lease_secret IS NOT DISTINCT FROM t.secret \
     RETURNING j.id, j.queue, j.attempt, j.version, j.started_at, j.result";

/// Successful attempts with their events, in one statement that commits by itself: an
/// acknowledgement of completions only. The rows not
/// returned were stale; the events row's `seq` comes with each.
pub(super) const JOBS_COMPLETE_WITH_EVENTS: &str = "WITH upd AS (UPDATE wharf.jobs AS j SET state = 'succeeded', \
       result = t.result, finished_at = $5, lease_seq = NULL, lease_secret = NULL, lease_expires_at = NULL, \
       version = j.version + 1 \
     FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::text[]) AS t(id, seq, secret, result) \
     WHERE j.id = ANY($1) AND j.id = t.id AND j.state = 'running' AND j.lease_seq = t.seq \
       AND j.lease_secret IS NOT DISTINCT FROM t.secret \
     RETURNING j.id, j.queue, j.attempt, j.version, j.started_at, j.result), \
   ev AS (INSERT INTO wharf.events (at, events) \
     SELECT $5, json_build_object('kind', 1, 'at', $5, 'state', 'succeeded', 'job', array_agg(id ORDER BY id), \
            'queue', array_agg(queue ORDER BY id), 'version', array_agg(version ORDER BY id), \
            'attempt', array_agg(attempt ORDER BY id), 'data', array_agg(result ORDER BY id))::text \
     FROM upd HAVING count(*) > 0 RETURNING seq) \
   SELECT id, queue, attempt, version, started_at, result, (SELECT seq FROM ev) FROM upd ORDER BY id";

/// A failed attempt (by report or lease expiry) of a locked job: retry, dead or canceled as
/// decided. The lease is matched again, so a fencing mistake cannot slip through.
pub(super) const JOB_FAIL: &str = "UPDATE wharf.jobs SET state = $4, run_at = COALESCE($5, run_at), \
     finished_at = $6, lease_seq = NULL, lease_secret = NULL, lease_expires_at = NULL, \
     errors = (COALESCE(errors, '[]')::jsonb || jsonb_build_array(jsonb_build_object('at', $7::bigint, \
         'attempt', attempt, 'message', $8::text)))::text, \
     version = version + 1 \
     WHERE id = $1 AND state = 'running' AND lease_seq = $2 AND lease_secret IS NOT DISTINCT FROM $3";

/// A released lease: ready again (or canceled), with the attempt count decided in Rust.
pub(super) const JOB_RELEASE: &str = "UPDATE wharf.jobs SET state = $4, attempt = $5, finished_at = $6, \
     lease_seq = NULL, lease_secret = NULL, lease_expires_at = NULL, version = version + 1 \
     WHERE id = $1 AND state = 'running' AND lease_seq = $2 AND lease_secret IS NOT DISTINCT FROM $3";

/// What a cancel decides on, locked.
pub(super) const JOB_CANCEL_LOOKUP: &str =
    "SELECT queue, state, cancel_requested, version, attempt FROM wharf.jobs WHERE id = $1 FOR UPDATE";

/// Cancels a waiting job.
pub(super) const JOB_CANCEL_NOW: &str = "UPDATE wharf.jobs SET state = 'canceled', finished_at = $3, \
     version = version + 1 WHERE id = $1 AND state = $2";

/// Flags a running job for cancellation (not an event: the stream shows it ending canceled).
pub(super) const JOB_CANCEL_REQUEST: &str =
    "UPDATE wharf.jobs SET cancel_requested = true WHERE id = $1 AND state = 'running'";

/// Due scheduled jobs, locked (another leader, briefly two during a failover, skips them).
pub(super) const DUE_SCHEDULED: &str = "SELECT id FROM wharf.jobs WHERE state = 'scheduled' AND run_at <= $1 \
     ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED";

/// Promotes locked due jobs.
pub(super) const JOBS_PROMOTE: &str = "UPDATE wharf.jobs SET state = 'ready', version = version + 1 \
     WHERE id = ANY($1) AND state = 'scheduled' RETURNING id, queue, attempt, version, run_at";

/// Leases that ran out, locked, with what the failure decides on.
pub(super) const EXPIRED_LEASES: &str = "SELECT j.id, j.lease_seq, j.lease_secret, j.attempt, \
     COALESCE(j.max_attempts, q.max_attempts), j.cancel_requested, q.backoff_base_ms, q.backoff_factor, \
     q.backoff_cap_ms, j.queue, j.version, j.started_at \
     FROM wharf.jobs j JOIN wharf.queues q ON q.name = j.queue \
     WHERE j.state = 'running' AND j.lease_expires_at <= $1 ORDER BY j.lease_expires_at LIMIT $2 \
     FOR UPDATE OF j SKIP LOCKED";

/// Dead jobs of a queue, locked, for redrive (all, or the ids given).
pub(super) const DEAD_FOR_REDRIVE: &str = "SELECT id, state, queue, version FROM wharf.jobs \
     WHERE queue = $1 AND ($2::bigint[] IS NULL AND state = 'dead' OR id = ANY($2)) ORDER BY id FOR UPDATE";

/// Redrive: dead → ready, attempts as decided (reset), errors kept as history.
pub(super) const JOBS_REDRIVE: &str = "UPDATE wharf.jobs SET state = 'ready', attempt = $2, run_at = $3, \
     finished_at = NULL, cancel_requested = false, version = version + 1 \
     WHERE id = ANY($1) AND state = 'dead' RETURNING id, version";

/// Counts per queue and state. An index-only scan of `jobs_by_queue_state`.
pub(super) const COUNTS: &str = "SELECT queue, state, count(*) FROM wharf.jobs GROUP BY queue, state";

/// Counts of one queue.
pub(super) const COUNTS_OF_QUEUE: &str = "SELECT state, count(*) FROM wharf.jobs WHERE queue = $1 GROUP BY state";

/// When the oldest ready job of each queue became ready.
/// For each queue of `$1`, the oldest over the first entry of each priority in `jobs_ready`
/// (a skip scan: one index probe per priority in use, however many jobs are ready).
pub(super) const OLDEST_READY: &str = "SELECT q.name, (WITH RECURSIVE p(priority, run_at) AS ( \
       (SELECT priority, run_at FROM wharf.jobs WHERE queue = q.name AND state = 'ready' \
        ORDER BY priority DESC, run_at, id LIMIT 1) \
       UNION ALL \
       SELECT n.priority, n.run_at FROM p CROSS JOIN LATERAL (SELECT j.priority, j.run_at FROM wharf.jobs j \
         WHERE j.queue = q.name AND j.state = 'ready' AND j.priority < p.priority \
         ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1) AS n) \
     SELECT min(run_at) FROM p) \
     FROM unnest($1::text[]) AS q(name)";

/// Deletes finished jobs of one queue and state past retention, a bounded number at a time.
pub(super) const JOBS_PRUNE: &str = "DELETE FROM wharf.jobs WHERE id IN (SELECT id FROM wharf.jobs \
     WHERE queue = $1 AND state = $2 AND id < $3 AND finished_at < $4 LIMIT $5)";

/// Deletes a queue's jobs, then the queue, once nothing waits, runs or lies dead in it.
pub(super) const JOBS_OF_QUEUE_DELETE: &str = "DELETE FROM wharf.jobs WHERE queue = $1";
pub(super) const QUEUE_DELETE: &str = "DELETE FROM wharf.queues WHERE name = $1";

/// Records the events of a transaction; the notification carries the row's `seq`.
pub(super) const EVENTS_INSERT: &str = "INSERT INTO wharf.events (at, events) VALUES ($1, $2) RETURNING seq";
/// Tells every node which events rows were committed (`$1`: their `seq`s, comma-separated).
pub(super) const EVENTS_NOTIFY: &str = "SELECT pg_notify('wharf_events', $1)";
/// Events rows by their `seq`.
pub(super) const EVENTS_BY_SEQ: &str = "SELECT seq, events FROM wharf.events WHERE seq = ANY($1)";
/// Events rows after a `seq`, to catch up after a lost connection.
pub(super) const EVENTS_AFTER: &str = "SELECT seq, events FROM wharf.events WHERE seq > $1 ORDER BY seq LIMIT 10000";
/// The newest events row.
pub(super) const EVENTS_LAST: &str = "SELECT COALESCE(max(seq), 0) FROM wharf.events";
/// Dead and live rows of the tables that churn, as the statistics collector last counted.
pub(super) const TABLES_DEAD_ROWS: &str = "SELECT relname::text, n_dead_tup, n_live_tup FROM pg_stat_user_tables \
     WHERE schemaname = 'wharf' AND relname IN ('jobs', 'events')";
/// Bytes wharf's tables take on disk, with their indexes and TOAST.
pub(super) const SCHEMA_SIZE: &str = "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'wharf' AND c.relkind = 'r'";
/// Forgets events older than the replay window.
pub(super) const EVENTS_PRUNE: &str = "DELETE FROM wharf.events WHERE at < $1";

/// A worker seen by this node; answers whether it was asked to drain.
pub(super) const WORKER_SEEN: &str = "INSERT INTO wharf.workers \
     (id, host, queues, last_seen, pid, task_arn, pod, capacity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (id) DO UPDATE SET host = excluded.host, queues = excluded.queues, \
     last_seen = GREATEST(wharf.workers.last_seen, excluded.last_seen), pid = excluded.pid, \
     task_arn = excluded.task_arn, pod = excluded.pod, capacity = excluded.capacity \
     RETURNING draining";
/// Workers seen recently or holding a lease (busy with long jobs, asking for no work), with
/// the jobs each holds.
pub(super) const WORKERS_RECENT: &str = "SELECT w.id, w.host, w.queues, w.last_seen, \
     (SELECT count(*) FROM wharf.jobs j WHERE j.state = 'running' AND j.worker_id = w.id), \
     w.pid, w.task_arn, w.pod, w.capacity, w.draining \
     FROM wharf.workers w WHERE w.last_seen >= $1 \
     OR EXISTS (SELECT 1 FROM wharf.jobs j WHERE j.state = 'running' AND j.worker_id = w.id) ORDER BY w.id";
/// Asks a worker seen since `$2` to drain.
pub(super) const WORKER_DRAIN: &str = "UPDATE wharf.workers SET draining = true WHERE id = $1 AND last_seen >= $2";
/// Asks a worker to drain, remembering it if it was never seen (just started).
pub(super) const WORKER_DRAIN_UNSEEN: &str = "INSERT INTO wharf.workers (id, queues, last_seen, draining) \
     VALUES ($1, '', $2, true) ON CONFLICT (id) DO UPDATE SET draining = true";
/// Forgets a worker that stopped.
pub(super) const WORKER_LEAVE: &str = "DELETE FROM wharf.workers WHERE id = $1";
/// Ready and running jobs of some queues, for the autoscaler.
pub(super) const BACKLOG_COUNTS: &str = "SELECT queue, state, count(*) FROM wharf.jobs \
     WHERE queue = ANY($1) AND state IN ('ready', 'running') GROUP BY queue, state";
/// Stores a pool's scaling state.
pub(super) const POOL_PUT: &str = "INSERT INTO wharf.pools (name, state, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";
/// Every pool's scaling state.
pub(super) const POOLS: &str = "SELECT name, state, updated_at FROM wharf.pools ORDER BY name";
/// Forgets workers not seen for long.
pub(super) const WORKERS_PRUNE: &str = "DELETE FROM wharf.workers w WHERE w.last_seen < $1 \
     AND NOT EXISTS (SELECT 1 FROM wharf.jobs j WHERE j.state = 'running' AND j.worker_id = w.id)";

/// Serialises the creation of alarm rules across nodes, so the limit on their number holds.
pub(super) const ALARM_CREATE_LOCK: &str = "SELECT pg_advisory_xact_lock(7768617269)";
/// How many alarm rules were set through the API.
pub(super) const ALARM_RULE_COUNT: &str = "SELECT count(*) FROM wharf.alarms WHERE rule IS NOT NULL";
/// Whether an alarm rule of this name was set through the API.
pub(super) const ALARM_RULE_EXISTS: &str = "SELECT count(*) FROM wharf.alarms WHERE name = $1 AND rule IS NOT NULL";
/// Sets an alarm rule, keeping its state.
pub(super) const ALARM_RULE_PUT: &str = "INSERT INTO wharf.alarms (name, rule, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET rule = excluded.rule, updated_at = excluded.updated_at";
/// Forgets an alarm rule and its state.
pub(super) const ALARM_DELETE: &str = "DELETE FROM wharf.alarms WHERE name = $1";
/// Stores an alarm's state, keeping its rule.
pub(super) const ALARM_STATE_PUT: &str = "INSERT INTO wharf.alarms (name, state, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";
/// Every alarm row.
pub(super) const ALARM_ALL: &str = "SELECT name, rule, state, updated_at FROM wharf.alarms ORDER BY name";

/// Stores a token.
pub(super) const TOKEN_INSERT: &str =
    "INSERT INTO wharf.tokens (id, name, role, queues, rate, hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// Every token, oldest first.
pub(super) const TOKEN_ALL: &str =
    "SELECT id, name, role, queues, rate, hash, created_at FROM wharf.tokens ORDER BY created_at, id";
/// How many tokens exist.
pub(super) const TOKEN_COUNT: &str = "SELECT count(*) FROM wharf.tokens";
/// Revokes a token.
pub(super) const TOKEN_DELETE: &str = "DELETE FROM wharf.tokens WHERE id = $1";
