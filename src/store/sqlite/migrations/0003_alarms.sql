-- Alarm rules set through the API (`rule`, JSON as written; NULL for a rule the config file
-- declares) and every rule's last state (`state`, JSON: per queue firing or not, the
-- transitions not yet delivered to webhooks, recent history), so a restart neither forgets a
-- rule nor sends a transition twice.
CREATE TABLE alarms (
    name       TEXT    PRIMARY KEY,
    rule       TEXT,
    state      TEXT,
    updated_at INTEGER NOT NULL
);
