-- Issue 16, change propagation: the same table as on PostgreSQL (see
-- migrations/postgres/2026-11-30-000006_changes). On SQLite one host owns the file, so nothing
-- listens: the rows only keep the two backends' store code one.
CREATE TABLE changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    origin TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
