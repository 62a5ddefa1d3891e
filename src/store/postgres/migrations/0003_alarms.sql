-- Alarm rules set through the API (`rule`, JSON as written; NULL for a rule the config file
-- declares) and every rule's last state as the leader wrote it (`state`, JSON: per queue
-- firing or not, the transitions not yet delivered to webhooks, recent history), so every node
-- shows the same alarms and a new leader neither forgets a transition nor sends one twice.
CREATE TABLE wharf.alarms (
    name       text   PRIMARY KEY,
    rule       text,
    state      text,
    updated_at bigint NOT NULL
);
