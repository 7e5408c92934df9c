-- PostgreSQL mirror of migrations/2026-11-24-000001_init (same version, same tables and
-- columns; SERIAL for SQLite's INTEGER AUTOINCREMENT, BYTEA for BLOB, and the "C" collation on
-- the keys that are listed in order, so both backends sort them byte by byte).

-- Per plugin id: what the operator wants and what was last loaded.
CREATE TABLE plugins (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    desired_state TEXT NOT NULL DEFAULT 'running' CHECK (desired_state IN ('running', 'stopped')),
    config TEXT,
    config_version BIGINT NOT NULL DEFAULT 0,
    last_file TEXT,
    last_sha256 TEXT,
    last_version TEXT,
    updated_at_ms BIGINT NOT NULL
);

-- Every config a plugin was given, newest last.
CREATE TABLE config_history (
    seq SERIAL PRIMARY KEY NOT NULL,
    plugin_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    config TEXT NOT NULL,
    actor TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX config_history_by_plugin ON config_history (plugin_id, seq);

-- What happened: loaded, swapped, failed, started, stopped, unloaded, config changed, ...
CREATE TABLE events (
    seq SERIAL PRIMARY KEY NOT NULL,
    at_ms BIGINT NOT NULL,
    plugin_id TEXT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX events_by_plugin ON events (plugin_id, seq);

-- A key-value store per plugin, reached through the host handle.
CREATE TABLE kv (
    plugin_id TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, key)
);
