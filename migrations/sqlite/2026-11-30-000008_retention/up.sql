-- Retention of `changes` and `events`: the same tables as on PostgreSQL (see
-- migrations/postgres/2026-11-30-000008_retention). On SQLite no listener runs, so
-- `sync_hosts` stays empty and changes are pruned by age alone.
CREATE TABLE sync_hosts (
    origin TEXT PRIMARY KEY NOT NULL,
    applied BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL
);
CREATE TABLE changes_pruned (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);
INSERT INTO changes_pruned (id, pruned_through) VALUES (1, 0);
CREATE INDEX events_by_at ON events (at_ms);
