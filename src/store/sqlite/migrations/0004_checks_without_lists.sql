-- The same jobs table with its state checks written as comparisons. SQLite evaluates
-- `state IN (a, b, c, …)` (more than two values) through a temporary b-tree built on every
-- insert and on every update of `state`: two per write, a sixth of an enqueue's instructions.
-- A CHECK cannot be altered in place, so the table is rebuilt (SQLite's documented procedure:
-- create, copy, drop, rename, index again); the rows and ids are unchanged.
CREATE TABLE jobs_new (
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    state            TEXT    NOT NULL
        CHECK (state = 'scheduled' OR state = 'ready' OR state = 'running'
            OR state = 'succeeded' OR state = 'dead' OR state = 'canceled'),
    priority         INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     INTEGER CHECK (max_attempts IS NULL OR max_attempts >= 1),
    timeout_ms       INTEGER,
    idempotency_key  TEXT,
    payload          TEXT    NOT NULL,
    metadata         TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    lease_ms         INTEGER,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested = 0 OR cancel_requested = 1),
    progress         TEXT,
    result           TEXT,
    errors           TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    version          INTEGER NOT NULL DEFAULT 1,
    lease_secret     BLOB CHECK (lease_secret IS NULL OR length(lease_secret) = 16),
    CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((state = 'succeeded' OR state = 'dead' OR state = 'canceled') = (finished_at IS NOT NULL))
);

INSERT INTO jobs_new SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_by_queue_state ON jobs (queue, state, id);
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
