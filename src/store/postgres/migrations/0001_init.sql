-- wharf's schema on PostgreSQL. Everything lives in the `wharf` schema, so wharf can share a
-- database with an application. Times are milliseconds since the Unix epoch (bigint), as on
-- the embedded store, taken from the nodes' clocks corrected to the database's.

CREATE TABLE wharf.queues (
    name           text    PRIMARY KEY,
    lease_ms       bigint  NOT NULL,
    max_attempts   integer NOT NULL,
    backoff_base_ms bigint NOT NULL,
    backoff_factor double precision NOT NULL,
    backoff_cap_ms bigint  NOT NULL,
    retention_ms   bigint  NOT NULL,
    concurrency    integer,
    rate           double precision,
    paused         boolean NOT NULL DEFAULT false,
    max_ready      bigint  CHECK (max_ready IS NULL OR max_ready >= 1),
    -- The queue's rate limit as a token bucket shared by every node: tokens left at
    -- `rate_at`. Updated under the row's lock by the lease that takes a start.
    rate_tokens    double precision,
    rate_at        bigint,
    created_at     bigint  NOT NULL
);

CREATE TABLE wharf.jobs (
    id               bigint  PRIMARY KEY,
    queue            text    NOT NULL,
    kind             text    NOT NULL,
    state            text    NOT NULL
        CHECK (state IN ('scheduled', 'ready', 'running', 'succeeded', 'dead', 'canceled')),
    priority         integer NOT NULL,
    -- When the job became (or becomes) ready; orders FIFO within a priority.
    run_at           bigint  NOT NULL,
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer CHECK (max_attempts IS NULL OR max_attempts >= 1),
    timeout_ms       bigint,
    idempotency_key  text,
    payload          text    NOT NULL,
    metadata         text,
    -- The lease: its fencing sequence and its 128-bit secret, present exactly while running.
    lease_seq        bigint,
    lease_secret     bytea   CHECK (lease_secret IS NULL OR length(lease_secret) = 16),
    lease_expires_at bigint,
    lease_ms         bigint,
    worker_id        text,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress         text,
    result           text,
    -- JSON array of {at, attempt, message}, one per failed attempt.
    errors           text,
    created_at       bigint  NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    -- Bumped on every change: the event id of the job's progress stream, on every node.
    version          bigint  NOT NULL DEFAULT 1,
    CHECK ((state = 'running') = (lease_seq IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((state IN ('succeeded', 'dead', 'canceled')) = (finished_at IS NOT NULL))
);

-- Every job changes row several times in seconds: vacuum early, so the dead versions it
-- leaves (and their index entries, which leases would wade through) do not pile up.
ALTER TABLE wharf.jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);

-- The lease query: the best ready job of a queue, by priority then FIFO. Partial, so the
-- millions of finished jobs cost nothing here. It is the only index on ready jobs alone: with
-- a second one (say on run_at, for the oldest ready job), statistics taken while a queue was
-- empty led the planner to read and sort every ready job of the queue for each lease (60 ms
-- at 100,000 ready) instead of taking the first entry of this one.
CREATE INDEX jobs_ready ON wharf.jobs (queue, priority DESC, run_at, id) WHERE state = 'ready';
-- Promotion of due jobs.
CREATE INDEX jobs_scheduled ON wharf.jobs (run_at) WHERE state = 'scheduled';
-- Expiry of leases.
CREATE INDEX jobs_expiry ON wharf.jobs (lease_expires_at) WHERE state = 'running';
-- Listing by state, newest first; counts per state (running jobs per queue for concurrency
-- limits too); pruning.
CREATE INDEX jobs_by_queue_state ON wharf.jobs (queue, state, id);
-- Idempotent enqueue.
CREATE UNIQUE INDEX jobs_by_idempotency_key ON wharf.jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Job ids and lease sequences: the low bits of every id come from here, so two nodes never
-- make the same one. Each call hands a node a block of 4,096 numbers.
CREATE SEQUENCE wharf.id_seq INCREMENT BY 4096;

-- The events of each committed transaction, in one row: what progress streams on every node
-- replay. A notification on channel `wharf_events` carries the row's `seq`; nodes read the
-- rows in notification (commit) order, so they all see events in the same order.
CREATE TABLE wharf.events (
    seq    bigserial PRIMARY KEY,
    at     bigint NOT NULL,
    -- JSON array of the transaction's events.
    events text   NOT NULL
);

-- Workers seen, from every node.
CREATE TABLE wharf.workers (
    id        text   PRIMARY KEY,
    host      text,
    queues    text   NOT NULL,
    last_seen bigint NOT NULL
);

-- API tokens: only the SHA-256 of each token.
CREATE TABLE wharf.tokens (
    id         text    PRIMARY KEY,
    name       text,
    role       text    NOT NULL CHECK (role IN ('reader', 'producer', 'worker', 'admin')),
    queues     text,
    rate       double precision CHECK (rate IS NULL OR rate > 0),
    hash       bytea   NOT NULL CHECK (length(hash) = 32),
    created_at bigint  NOT NULL
);
