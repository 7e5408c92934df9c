-- Issue 16, change propagation: every change an operator makes that the other hosts on this
-- database must apply is a row here, written in the transaction of the change; its id is the
-- version. The writer also sends `pg_notify('bkg_changes', id)` in that transaction (delivered
-- at commit) and every host's `sync` listener applies the rows after the last one it applied.
-- kind: config | desired_state | isolation | kv | model; subject: the plugin id (the model's
-- repo for `model`); origin: the writing host's id (each host skips its own).
CREATE TABLE changes (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    origin TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
