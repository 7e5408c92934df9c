-- Retention of `changes` and `events` (host/src/store/retention.rs).
-- Where each running host's change listener is: the last version it applied, and when it last
-- said so. A change is pruned only once every host seen within the retention has applied it.
-- A host stopped cleanly deletes its row; a crashed one's row stops counting after the
-- retention and is deleted by the next prune.
CREATE TABLE sync_hosts (
    origin TEXT PRIMARY KEY NOT NULL,
    applied BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL
);
-- The highest change id ever pruned (ids have gaps, so the oldest row left does not tell): a
-- host whose last applied version is below it may have missed a change and reloads in full.
CREATE TABLE changes_pruned (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);
INSERT INTO changes_pruned (id, pruned_through) VALUES (1, 0);
-- Events are pruned by age oldest first.
CREATE INDEX events_by_at ON events (at_ms);
