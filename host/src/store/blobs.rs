//! The store's part of plugin distribution (issue 16, `crate::distribute`): plugin libraries
//! stored content-addressed by SHA-256, and what is deployed under which file name. The store
//! only stores and serves; `crate::distribute` decides what to publish and fetch.
//!
//! A blob is written and read in chunks of at most `BLOB_CHUNK` bytes (rows of
//! `plugin_blob_chunks`), so neither side holds a whole library (tens of MB for the ML
//! plugins) in memory: one chunk at a time. Every write of a deployment records a change
//! (`plugin_deployed` / `plugin_removed`, subject the file name) in its own transaction and
//! deletes, in that transaction, the blobs no live deployment names (garbage collection). The
//! writes of distribution take one advisory lock on PostgreSQL, so a blob another host is about
//! to name again cannot be collected under it.

use std::io::Read;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde::Serialize;

use super::schema::{plugin_blob_chunks, plugin_blobs, plugin_files};
use super::{change_kind, now_ms, Conn, RecordChange, Store, StoreError, StoreResult};

/// The most bytes of a blob held in memory at once, by a writer or a reader.
pub const BLOB_CHUNK: usize = 4 << 20;

/// The advisory lock key of distribution's writes on PostgreSQL ("bkg-dist").
const PG_DISTRIBUTION_LOCK: i64 = 0x626b_672d_6469_7374;

/// What is deployed under a file name of the plugins folder (a removed file keeps the hash it
/// had, `removed` set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable)]
#[diesel(table_name = plugin_files)]
pub struct Deployment {
    pub file: String,
    pub sha256: String,
    pub removed: bool,
    pub origin: String,
    pub updated_at_ms: i64,
}

/// Why a deployment was not stored: reading the library failed, or the store did.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot read the library: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

trait DistributionLock {
    fn lock_distribution(&mut self) -> QueryResult<()>;
}

impl DistributionLock for PgConnection {
    fn lock_distribution(&mut self) -> QueryResult<()> {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(PG_DISTRIBUTION_LOCK)
            .execute(self)
            .map(drop)
    }
}

impl DistributionLock for SqliteConnection {
    /// One host owns a SQLite file: nobody to wait for.
    fn lock_distribution(&mut self) -> QueryResult<()> {
        Ok(())
    }
}

/// Delete the blobs (and their chunks) no live deployment names, inside the caller's
/// transaction.
macro_rules! collect_garbage {
    ($c:expr) => {{
        let named = || {
            plugin_files::table.filter(plugin_files::removed.eq(false)).select(plugin_files::sha256)
        };
        let chunks = diesel::delete(
            plugin_blob_chunks::table
                .filter(diesel::dsl::not(plugin_blob_chunks::sha256.eq_any(named()))),
        )
        .execute($c)?;
        let blobs = diesel::delete(
            plugin_blobs::table.filter(diesel::dsl::not(plugin_blobs::sha256.eq_any(named()))),
        )
        .execute($c)?;
        if blobs > 0 {
            tracing::info!(blobs, chunks, "deleted plugin blobs no deployment names");
        }
    }};
}

impl Store {
    /// What is deployed under `file`, if it ever was.
    pub fn deployment(&self, file: &str) -> StoreResult<Option<Deployment>> {
        Ok(on_conn!(&mut *self.conn(), c => plugin_files::table
            .find(file)
            .select(Deployment::as_select())
            .first(c)
            .optional())?)
    }

    /// Every deployment, removed ones too, by file name.
    pub fn deployments(&self) -> StoreResult<Vec<Deployment>> {
        Ok(on_conn!(&mut *self.conn(), c => plugin_files::table
            .order(plugin_files::file.asc())
            .select(Deployment::as_select())
            .load(c))?)
    }

    /// Deploy the library `bytes` (whose SHA-256 the caller computed: `sha256`) under `file`:
    /// its blob stored unless one of that hash is, the deployment written, a `plugin_deployed`
    /// change recorded and the blobs nothing names any more deleted, in one transaction.
    /// Deploying what is deployed already records nothing: false.
    pub fn deploy(
        &self,
        file: &str,
        sha256: &str,
        bytes: &mut dyn Read,
    ) -> Result<bool, DeployError> {
        let mut read_error = None;
        match self.deploy_inner(file, sha256, bytes, &mut read_error) {
            Ok(changed) => Ok(changed),
            Err(e) => Err(match read_error.take() {
                Some(io) => DeployError::Read(io),
                None => DeployError::Store(e),
            }),
        }
    }

    fn deploy_inner(
        &self,
        file: &str,
        sha256: &str,
        bytes: &mut dyn Read,
        read_error: &mut Option<std::io::Error>,
    ) -> StoreResult<bool> {
        let origin = &self.origin;
        Ok(on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<bool> {
            c.lock_distribution()?;
            let current: Option<Deployment> = plugin_files::table
                .find(file)
                .select(Deployment::as_select())
                .first(c)
                .optional()?;
            if current.as_ref().is_some_and(|d| !d.removed && d.sha256 == sha256) {
                return Ok(false);
            }
            let stored: Option<String> = plugin_blobs::table
                .find(sha256)
                .select(plugin_blobs::sha256)
                .first(c)
                .optional()?;
            let at = now_ms();
            if stored.is_none() {
                let (mut seq, mut size) = (0i64, 0i64);
                loop {
                    let mut chunk = Vec::new();
                    if let Err(e) = bytes.take(BLOB_CHUNK as u64).read_to_end(&mut chunk) {
                        *read_error = Some(e);
                        return Err(diesel::result::Error::RollbackTransaction);
                    }
                    if chunk.is_empty() {
                        break;
                    }
                    size += chunk.len() as i64;
                    diesel::insert_into(plugin_blob_chunks::table)
                        .values((
                            plugin_blob_chunks::sha256.eq(sha256),
                            plugin_blob_chunks::seq.eq(seq),
                            plugin_blob_chunks::data.eq(&chunk),
                        ))
                        .execute(c)?;
                    seq += 1;
                }
                diesel::insert_into(plugin_blobs::table)
                    .values((
                        plugin_blobs::sha256.eq(sha256),
                        plugin_blobs::size.eq(size),
                        plugin_blobs::chunks.eq(seq),
                        plugin_blobs::created_at_ms.eq(at),
                    ))
                    .execute(c)?;
            }
            diesel::insert_into(plugin_files::table)
                .values((
                    plugin_files::file.eq(file),
                    plugin_files::sha256.eq(sha256),
                    plugin_files::removed.eq(false),
                    plugin_files::origin.eq(origin),
                    plugin_files::updated_at_ms.eq(at),
                ))
                .on_conflict(plugin_files::file)
                .do_update()
                .set((
                    plugin_files::sha256.eq(sha256),
                    plugin_files::removed.eq(false),
                    plugin_files::origin.eq(origin),
                    plugin_files::updated_at_ms.eq(at),
                ))
                .execute(c)?;
            c.record_change(change_kind::PLUGIN_DEPLOYED, file, origin)?;
            collect_garbage!(c);
            Ok(true)
        }))?)
    }

    /// Mark the deployment under `file` removed (keeping its hash), record a
    /// `plugin_removed` change and delete the blobs nothing names any more, in one
    /// transaction. Nothing deployed there: false, nothing recorded.
    pub fn undeploy(&self, file: &str) -> StoreResult<bool> {
        let origin = &self.origin;
        Ok(on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<bool> {
            c.lock_distribution()?;
            let live: Option<bool> = plugin_files::table
                .find(file)
                .select(plugin_files::removed)
                .first(c)
                .optional()?;
            if live != Some(false) {
                return Ok(false);
            }
            diesel::update(plugin_files::table.find(file))
                .set((
                    plugin_files::removed.eq(true),
                    plugin_files::origin.eq(origin),
                    plugin_files::updated_at_ms.eq(now_ms()),
                ))
                .execute(c)?;
            c.record_change(change_kind::PLUGIN_REMOVED, file, origin)?;
            collect_garbage!(c);
            Ok(true)
        }))?)
    }

    /// The number of chunks of the blob `sha256`, if it is stored.
    pub fn blob_chunks(&self, sha256: &str) -> StoreResult<Option<i64>> {
        Ok(on_conn!(&mut *self.conn(), c => plugin_blobs::table
            .find(sha256)
            .select(plugin_blobs::chunks)
            .first(c)
            .optional())?)
    }

    /// Chunk `seq` (from 0) of the blob `sha256`: none when the blob is gone (collected after
    /// a newer deployment replaced it).
    pub fn blob_chunk(&self, sha256: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
        Ok(on_conn!(&mut *self.conn(), c => plugin_blob_chunks::table
            .find((sha256, seq))
            .select(plugin_blob_chunks::data)
            .first(c)
            .optional())?)
    }

    /// How many blobs are stored (for tests and metrics).
    pub fn blob_count(&self) -> StoreResult<i64> {
        Ok(on_conn!(&mut *self.conn(), c => plugin_blobs::table.count().get_result(c))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bkg.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn blobs_are_stored_once_in_chunks_and_collected_when_nothing_names_them() {
        let (_dir, store) = sqlite();
        let big: Vec<u8> = (0..BLOB_CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
        assert!(store.deploy("libx.so", "h1", &mut &big[..]).unwrap());
        // The same again: nothing changes, nothing recorded.
        let before = store.last_change().unwrap();
        assert!(!store.deploy("libx.so", "h1", &mut &big[..]).unwrap());
        assert_eq!(store.last_change().unwrap(), before);
        assert_eq!(store.blob_chunks("h1").unwrap(), Some(3));
        let mut read = Vec::new();
        for seq in 0..3 {
            read.extend(store.blob_chunk("h1", seq).unwrap().unwrap());
        }
        assert_eq!(read, big);
        // A second file naming the same blob shares it.
        assert!(store.deploy("liby.so", "h1", &mut &b"ignored"[..]).unwrap());
        assert_eq!(store.blob_count().unwrap(), 1);
        // A new version of x: h1 is still named by y.
        assert!(store.deploy("libx.so", "h2", &mut &b"v2"[..]).unwrap());
        assert_eq!(store.blob_count().unwrap(), 2);
        assert!(store.undeploy("liby.so").unwrap());
        assert!(!store.undeploy("liby.so").unwrap());
        assert_eq!(store.blob_chunks("h1").unwrap(), None, "h1 is named by nothing");
        assert_eq!(store.blob_chunk("h1", 0).unwrap(), None);
        let y = store.deployment("liby.so").unwrap().unwrap();
        assert!(y.removed);
        assert_eq!(y.sha256, "h1", "a removed file keeps the hash it had");
        let kinds: Vec<String> =
            store.changes_after(before, 100).unwrap().into_iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["plugin_deployed", "plugin_deployed", "plugin_removed"]);
        // Deployed again after its removal.
        assert!(store.deploy("liby.so", "h2", &mut &b"v2"[..]).unwrap());
        assert!(!store.deployment("liby.so").unwrap().unwrap().removed);
    }

    #[test]
    fn a_failed_read_stores_nothing() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let (_dir, store) = sqlite();
        let err = store.deploy("libx.so", "h1", &mut Broken).unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
        assert_eq!(store.deployment("libx.so").unwrap(), None);
        assert_eq!(store.blob_count().unwrap(), 0);
    }
}
