-- Issue 16, plugin distribution: the plugin libraries deployed to every host on this database,
-- content-addressed by SHA-256. A blob is stored once per hash, in chunks of at most 4 MiB (so
-- neither a writer nor a reader holds a whole library of tens of MB in memory), and is
-- deleted in the transaction that leaves no deployment naming it.
CREATE TABLE plugin_blobs (
    sha256 TEXT PRIMARY KEY NOT NULL,
    size BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE plugin_blob_chunks (
    sha256 TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (sha256, seq)
);
-- What is deployed under which file name of the plugins folder. A removed file keeps its row
-- (removed = TRUE, the hash it had): a host started later deletes its copy of that version
-- instead of publishing it again.
CREATE TABLE plugin_files (
    file TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    sha256 TEXT NOT NULL,
    removed BOOLEAN NOT NULL DEFAULT FALSE,
    origin TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
