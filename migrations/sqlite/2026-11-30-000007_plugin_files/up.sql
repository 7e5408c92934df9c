-- Issue 16, plugin distribution: the same tables as on PostgreSQL (see
-- migrations/postgres/2026-11-30-000007_plugin_files). On SQLite one host owns the file and
-- nothing is distributed: the tables stay empty and only keep the two backends' store code one.
CREATE TABLE plugin_blobs (
    sha256 TEXT PRIMARY KEY NOT NULL,
    size BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE plugin_blob_chunks (
    sha256 TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (sha256, seq)
);
CREATE TABLE plugin_files (
    file TEXT PRIMARY KEY NOT NULL,
    sha256 TEXT NOT NULL,
    removed BOOLEAN NOT NULL DEFAULT FALSE,
    origin TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
