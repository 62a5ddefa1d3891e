-- What workers say about themselves, for the autoscaler and `GET /v1/workers`, and whether
-- one was asked to drain.
ALTER TABLE wharf.workers
    ADD COLUMN pid      integer,
    ADD COLUMN task_arn text,
    ADD COLUMN pod      text,
    ADD COLUMN capacity integer,
    ADD COLUMN draining boolean NOT NULL DEFAULT false;

-- Each autoscaled pool's state (desired count, cooldown clocks, last decision) as JSON, so a
-- new leader goes on where the last one stopped and every node shows the same pools.
CREATE TABLE wharf.pools (
    name       text   PRIMARY KEY,
    state      text   NOT NULL,
    updated_at bigint NOT NULL
);
