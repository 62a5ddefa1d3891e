-- The secret half of a lease token: 128 random bits (16 bytes, big-endian), so a token cannot
-- be computed from public fields. NULL for leases taken before this migration (their tokens
-- have no secret) and whenever the job is not running.
ALTER TABLE jobs ADD COLUMN lease_secret BLOB CHECK (lease_secret IS NULL OR length(lease_secret) = 16);

-- Most jobs a queue may hold waiting (ready or scheduled) before enqueues are refused; NULL
-- for no limit.
ALTER TABLE queues ADD COLUMN max_ready INTEGER CHECK (max_ready IS NULL OR max_ready >= 1);

-- API tokens: only the SHA-256 of each token is kept; the token itself is shown once.
CREATE TABLE tokens (
    id         TEXT    PRIMARY KEY,
    name       TEXT,
    role       TEXT    NOT NULL CHECK (role IN ('reader', 'producer', 'worker', 'admin')),
    -- JSON array of queue patterns; NULL for every queue.
    queues     TEXT,
    -- Requests per second; NULL for the server's default.
    rate       REAL    CHECK (rate IS NULL OR rate > 0),
    hash       BLOB    NOT NULL CHECK (length(hash) = 32),
    created_at INTEGER NOT NULL
);
