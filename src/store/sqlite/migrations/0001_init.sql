-- The initial schema. Times are milliseconds since the Unix epoch; JSON columns hold JSON text.

CREATE TABLE queues (
    name            TEXT PRIMARY KEY,
    lease_ms        INTEGER NOT NULL CHECK (lease_ms > 0),
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    backoff_base_ms INTEGER NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_factor  REAL    NOT NULL CHECK (backoff_factor >= 1),
    backoff_cap_ms  INTEGER NOT NULL CHECK (backoff_cap_ms >= 0),
    retention_ms    INTEGER NOT NULL CHECK (retention_ms > 0),
    concurrency     INTEGER CHECK (concurrency IS NULL OR concurrency >= 1),
    rate            REAL    CHECK (rate IS NULL OR rate > 0),
    paused          INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    created_at      INTEGER NOT NULL
);

CREATE TABLE jobs (
    -- The time-sortable job id: primary key, FIFO tie-break and listing cursor in one, so the
    -- table needs no second unique index.
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    state            TEXT    NOT NULL
        CHECK (state IN ('scheduled', 'ready', 'running', 'succeeded', 'dead', 'canceled')),
    priority         INTEGER NOT NULL,
    -- When the job became (or becomes) ready; orders FIFO within a priority.
    run_at           INTEGER NOT NULL,
    -- Leases taken, minus leases released.
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- The job's own limit; NULL follows the queue's policy.
    max_attempts     INTEGER CHECK (max_attempts IS NULL OR max_attempts >= 1),
    timeout_ms       INTEGER,
    idempotency_key  TEXT,
    payload          TEXT    NOT NULL,
    metadata         TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    lease_ms         INTEGER,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    progress         TEXT,
    result           TEXT,
    -- JSON array of {at, attempt, message}, one per failed attempt.
    errors           TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    -- Bumped on every change: the event id of the job's progress stream.
    version          INTEGER NOT NULL DEFAULT 1,
    -- A lease exists exactly while the job runs.
    CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- A job is finished exactly when its state is terminal.
    CHECK ((state IN ('succeeded', 'dead', 'canceled')) = (finished_at IS NOT NULL))
);

-- Listing a queue by state, newest first; counting per state at start; pruning.
CREATE INDEX jobs_by_queue_state ON jobs (queue, state, id);

-- Idempotent enqueue. Partial: jobs without a key cost nothing here.
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Small durable values; `id_reserved` bounds the ids handed out, so a clock that steps back
-- across a restart cannot repeat one.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
