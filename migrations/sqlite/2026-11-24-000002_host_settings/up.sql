-- Host-wide settings, such as the hash of the bootstrap admin key.
CREATE TABLE host_settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
