-- Per plugin id: what the operator wants and what was last loaded.
CREATE TABLE plugins (
    id TEXT PRIMARY KEY NOT NULL,
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
    seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    plugin_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    config TEXT NOT NULL,
    actor TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX config_history_by_plugin ON config_history (plugin_id, seq);

-- What happened: loaded, swapped, failed, started, stopped, unloaded, config changed, ...
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
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
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, key)
);
