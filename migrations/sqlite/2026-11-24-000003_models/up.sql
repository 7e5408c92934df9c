-- The model registry: one installed model per repo id, in <models-dir>/<repo>/.
CREATE TABLE models (
    repo TEXT PRIMARY KEY NOT NULL,
    revision TEXT NOT NULL,
    commit_sha TEXT,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    -- JSON: [{"name": ..., "size": ..., "sha256": ...}]
    files TEXT NOT NULL,
    total_bytes BIGINT NOT NULL,
    plugin_id TEXT,
    installed_at_ms BIGINT NOT NULL
);
