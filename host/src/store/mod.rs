//! The store: the only module that knows SQL. One implementation of every store function for
//! both backends: SQLite (bundled libsqlite3, WAL; the default, a file in the data dir) and
//! PostgreSQL (`--database-url postgres://...`, libpq).
//!
//! `Conn` is one connection of either backend, and every function's query is written once
//! inside `on_conn!`, which compiles it for each backend: diesel's query builder checks it
//! against `schema.rs` for both. (diesel's `MultiConnection` derive would hide the `match`, but
//! its backend has no `ON CONFLICT`, which the upserts here need.) The migrations live in
//! `migrations/sqlite/` (SQLite, the versions of before) and `migrations/postgres/` (the same versions for
//! PostgreSQL), both embedded, applied at start under a lock so that hosts starting together
//! do not race: `BEGIN IMMEDIATE` on SQLite, `pg_advisory_xact_lock` on PostgreSQL.

mod schema;
#[cfg(test)]
pub(crate) mod test_pg;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde::Serialize;

use crate::isolation::{IsolationMode, IsolationSetting, ProcessLimits};
use schema::{changes, config_history, events, host_settings, kv, models, plugins};

/// One database connection, of either backend, or none: PostgreSQL found unreachable (the
/// reason; `link.rs` reconnects).
enum Conn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
    Down(String),
}

/// Run `$body` with `$c` bound to the backend's own connection: the same source, compiled
/// once per backend. On PostgreSQL, an error that means the connection is gone marks it down
/// and returns `StoreError::Unavailable` from the calling function; while it is down, the
/// calling function returns that at once (so it must return a `StoreResult`).
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            conn => {
                let conn: &mut Conn = conn;
                match conn {
                    Conn::Sqlite($c) => $body,
                    Conn::Pg($c) => {
                        let result = $body;
                        if let Err(e) = &result {
                            if let Some(why) = $crate::store::link::MaybeBroken::broken(e) {
                                *conn = Conn::Down(why.clone());
                                return Err(StoreError::Unavailable(why));
                            }
                        }
                        result
                    }
                    Conn::Down(why) => return Err(StoreError::Unavailable(why.clone())),
                }
            }
        }
    };
}

mod link;
pub use link::DbHealth;
mod blobs;
pub use blobs::{DeployError, Deployment, BLOB_CHUNK};
mod retention;
pub use retention::{Pruned, Pruner, Retention, PRUNE_BATCH};

/// Create the record of a plugin id if it has none (inside the caller's transaction).
macro_rules! ensure_plugin {
    ($c:expr, $id:expr) => {
        diesel::insert_into(plugins::table)
            .values((plugins::id.eq($id), plugins::updated_at_ms.eq(now_ms())))
            .on_conflict_do_nothing()
            .execute($c)
    };
}

/// The PostgreSQL channel every recorded change is announced on (`pg_notify`, payload the
/// change's id), delivered to listeners at commit: see `crate::sync`.
pub const CHANGES_CHANNEL: &str = "bkg_changes";

/// Writing a row of `changes` and announcing it, per backend: PostgreSQL notifies
/// `CHANGES_CHANNEL` in the same transaction; SQLite has one host and nobody to tell.
trait RecordChange {
    fn record_change(&mut self, kind: &str, subject: &str, origin: &str) -> QueryResult<i64>;
}

impl RecordChange for PgConnection {
    fn record_change(&mut self, kind: &str, subject: &str, origin: &str) -> QueryResult<i64> {
        let id: i64 = diesel::insert_into(changes::table)
            .values((
                changes::kind.eq(kind),
                changes::subject.eq(subject),
                changes::origin.eq(origin),
                changes::at_ms.eq(now_ms()),
            ))
            .returning(changes::id)
            .get_result(self)?;
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(CHANGES_CHANNEL)
            .bind::<diesel::sql_types::Text, _>(id.to_string())
            .execute(self)?;
        Ok(id)
    }
}

impl RecordChange for SqliteConnection {
    fn record_change(&mut self, kind: &str, subject: &str, origin: &str) -> QueryResult<i64> {
        diesel::insert_into(changes::table)
            .values((
                changes::kind.eq(kind),
                changes::subject.eq(subject),
                changes::origin.eq(origin),
                changes::at_ms.eq(now_ms()),
            ))
            .execute(self)?;
        let last = diesel::dsl::sql::<diesel::sql_types::BigInt>("last_insert_rowid()");
        diesel::select(last).get_result(self)
    }
}

/// What kind of state a recorded change is about (`changes.kind`): `crate::sync` dispatches
/// each to the state's owner.
pub mod change_kind {
    /// A plugin's config (subject: the plugin id).
    pub const CONFIG: &str = "config";
    /// A plugin's desired state, running or stopped (subject: the plugin id).
    pub const DESIRED_STATE: &str = "desired_state";
    /// A plugin's isolation mode or limits (subject: the plugin id).
    pub const ISOLATION: &str = "isolation";
    /// A key-value write of a plugin whose writes are shared state, the auth provider's keys
    /// (subject: the plugin id; see `Store::record_kv_changes_of`).
    pub const KV: &str = "kv";
    /// A model installed or replaced (subject: the repo id).
    pub const MODEL: &str = "model";
    /// A plugin library deployed under a file name (subject: the file name; `crate::distribute`).
    pub const PLUGIN_DEPLOYED: &str = "plugin_deployed";
    /// A deployed plugin library removed (subject: the file name).
    pub const PLUGIN_REMOVED: &str = "plugin_removed";
}

/// One recorded change: `id` is the database's version after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable)]
#[diesel(table_name = changes)]
pub struct Change {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub origin: String,
    pub at_ms: i64,
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// The advisory lock key hosts take around the migration run on PostgreSQL ("bkg-migr").
const PG_MIGRATION_LOCK: i64 = 0x626b_672d_6d69_6772;

/// Where the store lives: `--database-url` / `BKG_DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (a path, `sqlite://PATH` or `sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`, as libpq takes it).
    Postgres(String),
}

impl Database {
    /// Parse `--database-url`: `postgres://...`/`postgresql://...`, `sqlite://PATH`,
    /// `sqlite:PATH`, or a plain file path.
    pub fn parse(text: &str) -> Result<Database, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the database URL is empty: give a SQLite file path, sqlite://PATH or \
                 postgres://USER@HOST:PORT/DATABASE"
                .into());
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Database::Postgres(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(format!("the database URL {text:?} names no SQLite file"));
            }
            return Ok(Database::Sqlite(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
                return Err(format!(
                    "the database URL scheme {scheme:?} is not supported: give a SQLite file \
                     path, sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
                ));
            }
        }
        Ok(Database::Sqlite(PathBuf::from(text)))
    }

    /// The password in a PostgreSQL URL (`user:password@` or `password=`), if any.
    fn password(&self) -> Option<&str> {
        let Database::Postgres(url) = self else { return None };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let in_userinfo = authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty());
        let in_query = url
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("password=")))
            .filter(|p| !p.is_empty());
        in_userinfo.or(in_query)
    }

    /// Hide any password in `text` (an error message, the URL itself).
    fn scrub(&self, text: &str) -> String {
        match self.password() {
            Some(p) => text.replace(p, "***"),
            None => text.to_string(),
        }
    }
}

/// The URL or path with any password elided: safe to log and to show in errors.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&self.scrub(url)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {message}")]
    Open { path: String, message: String },
    #[error("cannot migrate the database: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("stored value is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored {what} {value:?} is not one this build knows")]
    Invalid { what: &'static str, value: String },
    /// PostgreSQL is unreachable (the reason); the call did not run. The store reconnects by
    /// itself (`link.rs`).
    #[error("the database is unreachable ({0}); the host reconnects by itself: retry shortly")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What the operator wants for a plugin id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

impl DesiredState {
    fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

/// The stored record of a plugin id.
#[derive(Debug, Clone, Serialize)]
pub struct PluginRecord {
    pub id: String,
    pub desired_state: DesiredState,
    pub config: Option<serde_json::Value>,
    pub config_version: i64,
    pub last_file: Option<String>,
    pub last_sha256: Option<String>,
    pub last_version: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = plugins)]
struct PluginRow {
    id: String,
    desired_state: String,
    config: Option<String>,
    config_version: i64,
    last_file: Option<String>,
    last_sha256: Option<String>,
    last_version: Option<String>,
}

/// One stored config of a plugin.
#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = config_history)]
pub struct ConfigEntry {
    pub version: i64,
    #[serde(skip)]
    pub config: String,
    pub actor: String,
    pub at_ms: i64,
}

/// One line of the event log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub seq: i32,
    pub at_ms: i64,
    pub plugin: Option<String>,
    pub kind: String,
    pub actor: String,
    pub details: serde_json::Value,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = events)]
struct EventRow {
    seq: i32,
    at_ms: i64,
    plugin_id: Option<String>,
    kind: String,
    actor: String,
    details: String,
}

/// One file of an installed model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelFile {
    /// Path inside the model folder, `/`-separated.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// An installed model: the registry row, and the manifest (`.bkg-model.json`) in its folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct InstalledModel {
    /// Hub repo id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub repo: String,
    pub revision: String,
    /// The commit the hub resolved the revision to (none for models not from a hub).
    pub commit: Option<String>,
    /// The model's folder relative to the models folder (the repo id).
    #[serde(default)]
    pub path: String,
    /// `hub:<endpoint>` or where else the files came from (e.g. `pypi:<package>`).
    pub source: String,
    pub files: Vec<ModelFile>,
    #[serde(default)]
    pub total_bytes: u64,
    /// The plugin the download was made for, if any.
    #[serde(default)]
    pub plugin: Option<String>,
    pub installed_at_ms: i64,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = models, primary_key(repo), treat_none_as_null = true)]
struct ModelRow {
    repo: String,
    revision: String,
    commit_sha: Option<String>,
    path: String,
    source: String,
    files: String,
    total_bytes: i64,
    plugin_id: Option<String>,
    installed_at_ms: i64,
}

impl ModelRow {
    fn into_model(self) -> StoreResult<InstalledModel> {
        Ok(InstalledModel {
            repo: self.repo,
            revision: self.revision,
            commit: self.commit_sha,
            path: self.path,
            source: self.source,
            files: serde_json::from_str(&self.files)?,
            total_bytes: self.total_bytes.max(0) as u64,
            plugin: self.plugin_id,
            installed_at_ms: self.installed_at_ms,
        })
    }
}

fn now_ms() -> i64 {
    crate::clock::now_ms() as i64
}

/// The database. Cheap to share behind an `Arc`; one connection, used by one caller at a time.
pub struct Store {
    conn: Mutex<Conn>,
    /// The connection's state (up, or down and when to reconnect): `link.rs`.
    link: link::Link,
    /// This store's (this host process's) id, written as the origin of the changes it records.
    origin: String,
    /// Plugins whose key-value writes are recorded as changes (the auth provider's keys).
    kv_changes_of: std::sync::RwLock<Vec<String>>,
}

impl Store {
    /// Open (or create) a SQLite database file: `connect` with `Database::Sqlite`.
    pub fn open(path: &Path) -> StoreResult<Store> {
        Store::connect(&Database::Sqlite(path.to_path_buf()))
    }

    /// Connect to the database (creating a SQLite file if needed) and apply pending
    /// migrations under a lock, so that hosts starting together on one database do not race.
    pub fn connect(db: &Database) -> StoreResult<Store> {
        let open_err = |message: String| StoreError::Open {
            path: db.to_string(),
            message: db.scrub(message.trim_end()),
        };
        let mut conn = match db {
            Database::Sqlite(path) => {
                let url = path.to_string_lossy().into_owned();
                let mut c =
                    SqliteConnection::establish(&url).map_err(|e| open_err(e.to_string()))?;
                // The busy timeout first: a host starting next to another waits for its lock.
                for pragma in [
                    "PRAGMA busy_timeout = 5000",
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = FULL",
                    "PRAGMA foreign_keys = ON",
                ] {
                    diesel::sql_query(pragma)
                        .execute(&mut c)
                        .map_err(|e| open_err(e.to_string()))?;
                }
                Conn::Sqlite(c)
            }
            Database::Postgres(url) => Conn::Pg(
                PgConnection::establish(&link::with_connect_timeout(url))
                    .map_err(|e| open_err(e.to_string()))?,
            ),
        };
        Self::migrate(&mut conn).map_err(|e| match e {
            StoreError::Migrate(m) => StoreError::Migrate(db.scrub(&m)),
            StoreError::Db(e) => StoreError::Migrate(db.scrub(&e.to_string())),
            other => other,
        })?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| StoreError::Open {
            path: db.to_string(),
            message: format!("no random host id: {e}"),
        })?;
        let origin = id.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Store {
            conn: Mutex::new(conn),
            link: link::Link::new(db),
            origin,
            kv_changes_of: Default::default(),
        })
    }

    /// Apply pending migrations, holding the database's lock for the whole run: SQLite's write
    /// lock (`BEGIN IMMEDIATE`), PostgreSQL's advisory lock `PG_MIGRATION_LOCK` (released at
    /// commit). A second host waits, then finds nothing pending.
    fn migrate(conn: &mut Conn) -> StoreResult<()> {
        let failed =
            |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migrate(e.to_string());
        match conn {
            Conn::Sqlite(c) => c.immediate_transaction(|c| -> StoreResult<()> {
                c.run_pending_migrations(SQLITE_MIGRATIONS).map_err(failed)?;
                Ok(())
            }),
            Conn::Pg(c) => c.transaction(|c| -> StoreResult<()> {
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<diesel::sql_types::BigInt, _>(PG_MIGRATION_LOCK)
                    .execute(c)?;
                c.run_pending_migrations(PG_MIGRATIONS).map_err(failed)?;
                Ok(())
            }),
            Conn::Down(why) => Err(StoreError::Unavailable(why.clone())),
        }
    }

    /// The id this store writes as the origin of its changes (random per host process).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Record `plugin`'s key-value writes as changes (`change_kind::KV`), so that hosts
    /// sharing the database can drop what they cached of it (the auth provider's keys).
    pub fn record_kv_changes_of(&self, plugin: &str) {
        let mut of = self.kv_changes_of.write().unwrap_or_else(|p| p.into_inner());
        if !of.iter().any(|p| p == plugin) {
            of.push(plugin.to_string());
        }
    }

    fn kv_changes(&self, plugin: &str) -> bool {
        self.kv_changes_of.read().unwrap_or_else(|p| p.into_inner()).iter().any(|p| p == plugin)
    }

    /// The newest change's id, or the highest one pruned if that is higher (every change
    /// pruned: `retention.rs`), 0 with none: the database's version.
    pub fn last_change(&self) -> StoreResult<i64> {
        let max: Option<i64> = on_conn!(&mut *self.conn(), c => changes::table
            .select(diesel::dsl::max(changes::id))
            .first(c))?;
        Ok(max.unwrap_or(0).max(self.changes_pruned_through()?))
    }

    /// The ids of the changes in `after+1..=through` (for the gaps a start may have to wait
    /// for: ids taken by transactions that had not committed when the version was read).
    pub fn change_ids_between(&self, after: i64, through: i64) -> StoreResult<Vec<i64>> {
        Ok(on_conn!(&mut *self.conn(), c => changes::table
            .filter(changes::id.gt(after))
            .filter(changes::id.le(through))
            .order(changes::id.asc())
            .select(changes::id)
            .load(c))?)
    }

    /// The changes among `ids` (ids skipped when read: a change whose transaction committed
    /// after a later one's), oldest first.
    pub fn changes_in(&self, ids: &[i64]) -> StoreResult<Vec<Change>> {
        let mut found = Vec::new();
        for ids in ids.chunks(1000) {
            found.extend(on_conn!(&mut *self.conn(), c => changes::table
                .filter(changes::id.eq_any(ids))
                .order(changes::id.asc())
                .select(Change::as_select())
                .load(c))?);
        }
        Ok(found)
    }

    /// Every plugin id the store holds a record of, sorted.
    pub fn plugin_ids(&self) -> StoreResult<Vec<String>> {
        Ok(on_conn!(&mut *self.conn(), c => plugins::table
            .select(plugins::id)
            .order(plugins::id.asc())
            .load(c))?)
    }

    /// The changes after version `after`, oldest first, at most `limit`.
    pub fn changes_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Change>> {
        Ok(on_conn!(&mut *self.conn(), c => changes::table
            .filter(changes::id.gt(after))
            .order(changes::id.asc())
            .limit(limit)
            .select(Change::as_select())
            .load(c))?)
    }

    pub fn plugin(&self, id: &str) -> StoreResult<Option<PluginRecord>> {
        let row = on_conn!(&mut *self.conn(), c => plugins::table
            .find(id)
            .select(PluginRow::as_select())
            .first(c)
            .optional())?;
        row.map(|r| {
            Ok(PluginRecord {
                id: r.id,
                desired_state: if r.desired_state == "stopped" {
                    DesiredState::Stopped
                } else {
                    DesiredState::Running
                },
                config: r.config.as_deref().map(serde_json::from_str).transpose()?,
                config_version: r.config_version,
                last_file: r.last_file,
                last_sha256: r.last_sha256,
                last_version: r.last_version,
            })
        })
        .transpose()
    }

    pub fn set_desired_state(&self, id: &str, state: DesiredState) -> StoreResult<()> {
        let origin = &self.origin;
        on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<()> {
            ensure_plugin!(c, id)?;
            let before: String =
                plugins::table.find(id).select(plugins::desired_state).first(c)?;
            diesel::update(plugins::table.find(id))
                .set((
                    plugins::desired_state.eq(state.as_str()),
                    plugins::updated_at_ms.eq(now_ms()),
                ))
                .execute(c)?;
            // The same state again (a host applying another's change) is no change.
            if before != state.as_str() {
                c.record_change(change_kind::DESIRED_STATE, id, origin)?;
            }
            Ok(())
        }))?;
        Ok(())
    }

    /// What the operator chose about where the plugin id's code runs: the mode (`None` for an
    /// id the operator never set: its library's suggestion applies, else `in_process`) and the
    /// limits of its child process. A stored value this build does not know is an error rather
    /// than a silent default.
    pub fn isolation(&self, id: &str) -> StoreResult<IsolationSetting> {
        type Row = (String, bool, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let stored: Option<Row> = on_conn!(&mut *self.conn(), c => plugins::table
            .find(id)
            .select((
                plugins::isolation,
                plugins::isolation_by_operator,
                plugins::limit_memory_mb,
                plugins::limit_open_files,
                plugins::limit_processes,
                plugins::limit_call_deadline_ms,
            ))
            .first(c)
            .optional())?;
        let Some((mode, by_operator, memory_mb, open_files, processes, deadline)) = stored else {
            return Ok(IsolationSetting::default());
        };
        let limit = |what: &'static str, v: Option<i64>| -> StoreResult<Option<u64>> {
            v.map(|v| {
                u64::try_from(v).map_err(|_| StoreError::Invalid { what, value: v.to_string() })
            })
            .transpose()
        };
        let mode = match by_operator {
            false => None,
            true => Some(
                IsolationMode::parse(&mode)
                    .ok_or(StoreError::Invalid { what: "isolation mode", value: mode })?,
            ),
        };
        Ok(IsolationSetting {
            mode,
            limits: ProcessLimits {
                memory_mb: limit("memory limit", memory_mb)?,
                open_files: limit("open files limit", open_files)?,
                processes: limit("processes limit", processes)?,
                call_deadline_ms: limit("call deadline", deadline)?,
            },
        })
    }

    /// Store what the operator chose about where the plugin id's code runs (creating its
    /// record like the desired state). `mode: None` forgets the operator's mode.
    pub fn set_isolation(&self, id: &str, setting: &IsolationSetting) -> StoreResult<()> {
        let db = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let limits = &setting.limits;
        let origin = &self.origin;
        let columns = (
            plugins::isolation,
            plugins::isolation_by_operator,
            plugins::limit_memory_mb,
            plugins::limit_open_files,
            plugins::limit_processes,
            plugins::limit_call_deadline_ms,
        );
        type Row = (String, bool, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let after: Row = (
            setting.mode.unwrap_or_default().as_str().to_string(),
            setting.mode.is_some(),
            db(limits.memory_mb),
            db(limits.open_files),
            db(limits.processes),
            db(limits.call_deadline_ms),
        );
        on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<()> {
            ensure_plugin!(c, id)?;
            let before: Row = plugins::table.find(id).select(columns).first(c)?;
            // The same setting again (a host applying another's change) is no change.
            if before != after {
                c.record_change(change_kind::ISOLATION, id, origin)?;
            }
            diesel::update(plugins::table.find(id))
                .set((
                    plugins::isolation.eq(setting.mode.unwrap_or_default().as_str()),
                    plugins::isolation_by_operator.eq(setting.mode.is_some()),
                    plugins::limit_memory_mb.eq(db(limits.memory_mb)),
                    plugins::limit_open_files.eq(db(limits.open_files)),
                    plugins::limit_processes.eq(db(limits.processes)),
                    plugins::limit_call_deadline_ms.eq(db(limits.call_deadline_ms)),
                    plugins::updated_at_ms.eq(now_ms()),
                ))
                .execute(c)?;
            Ok(())
        }))?;
        Ok(())
    }

    pub fn record_loaded(
        &self,
        id: &str,
        file: &str,
        sha256: &str,
        version: &str,
    ) -> StoreResult<()> {
        on_conn!(&mut *self.conn(), c => c.transaction(|c| {
            ensure_plugin!(c, id)?;
            diesel::update(plugins::table.find(id))
                .set((
                    plugins::last_file.eq(file),
                    plugins::last_sha256.eq(sha256),
                    plugins::last_version.eq(version),
                    plugins::updated_at_ms.eq(now_ms()),
                ))
                .execute(c)
        }))?;
        Ok(())
    }

    /// Store a new config for a plugin, with its history entry and an event, in one
    /// transaction: a crash leaves either the old config or the new one, never half of it.
    pub fn set_config(
        &self,
        id: &str,
        config: &serde_json::Value,
        actor: &str,
    ) -> StoreResult<i64> {
        let text = serde_json::to_string(config)?;
        let origin = &self.origin;
        let version = on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<i64> {
            ensure_plugin!(c, id)?;
            let current: i64 = plugins::table.find(id).select(plugins::config_version).first(c)?;
            let version = current + 1;
            let at = now_ms();
            diesel::update(plugins::table.find(id))
                .set((
                    plugins::config.eq(&text),
                    plugins::config_version.eq(version),
                    plugins::updated_at_ms.eq(at),
                ))
                .execute(c)?;
            diesel::insert_into(config_history::table)
                .values((
                    config_history::plugin_id.eq(id),
                    config_history::version.eq(version),
                    config_history::config.eq(&text),
                    config_history::actor.eq(actor),
                    config_history::at_ms.eq(at),
                ))
                .execute(c)?;
            diesel::insert_into(events::table)
                .values((
                    events::at_ms.eq(at),
                    events::plugin_id.eq(id),
                    events::kind.eq("config_changed"),
                    events::actor.eq(actor),
                    events::details.eq(serde_json::json!({ "version": version }).to_string()),
                ))
                .execute(c)?;
            c.record_change(change_kind::CONFIG, id, origin)?;
            Ok(version)
        }))?;
        Ok(version)
    }

    /// The newest configs of a plugin, newest first.
    pub fn config_history(
        &self,
        id: &str,
        limit: i64,
    ) -> StoreResult<Vec<(ConfigEntry, serde_json::Value)>> {
        let rows: Vec<ConfigEntry> = on_conn!(&mut *self.conn(), c => config_history::table
            .filter(config_history::plugin_id.eq(id))
            .order(config_history::seq.desc())
            .limit(limit)
            .select(ConfigEntry::as_select())
            .load(c))?;
        rows.into_iter()
            .map(|r| {
                let value = serde_json::from_str(&r.config)?;
                Ok((r, value))
            })
            .collect()
    }

    /// Append to the event log.
    pub fn add_event(
        &self,
        plugin: Option<&str>,
        kind: &str,
        actor: &str,
        details: serde_json::Value,
    ) -> StoreResult<()> {
        let details = details.to_string();
        on_conn!(&mut *self.conn(), c => diesel::insert_into(events::table)
            .values((
                events::at_ms.eq(now_ms()),
                events::plugin_id.eq(plugin),
                events::kind.eq(kind),
                events::actor.eq(actor),
                events::details.eq(&details),
            ))
            .execute(c))?;
        Ok(())
    }

    /// Record an installed model (replacing the row of an earlier install of the same repo).
    pub fn put_model(&self, m: &InstalledModel) -> StoreResult<()> {
        let row = ModelRow {
            repo: m.repo.clone(),
            revision: m.revision.clone(),
            commit_sha: m.commit.clone(),
            path: m.path.clone(),
            source: m.source.clone(),
            files: serde_json::to_string(&m.files)?,
            total_bytes: i64::try_from(m.total_bytes).unwrap_or(i64::MAX),
            plugin_id: m.plugin.clone(),
            installed_at_ms: m.installed_at_ms,
        };
        let origin = &self.origin;
        on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<()> {
            diesel::insert_into(models::table)
                .values(&row)
                .on_conflict(models::repo)
                .do_update()
                .set(&row)
                .execute(c)?;
            c.record_change(change_kind::MODEL, &row.repo, origin)?;
            Ok(())
        }))?;
        Ok(())
    }

    /// Every installed model, by repo id.
    pub fn models(&self) -> StoreResult<Vec<InstalledModel>> {
        let rows: Vec<ModelRow> = on_conn!(&mut *self.conn(), c => models::table
            .select(ModelRow::as_select())
            .order(models::repo.asc())
            .load(c))?;
        rows.into_iter().map(ModelRow::into_model).collect()
    }

    pub fn model(&self, repo: &str) -> StoreResult<Option<InstalledModel>> {
        let row: Option<ModelRow> = on_conn!(&mut *self.conn(), c => models::table
            .find(repo)
            .select(ModelRow::as_select())
            .first(c)
            .optional())?;
        row.map(ModelRow::into_model).transpose()
    }

    /// The newest events (optionally of one plugin), newest first.
    pub fn events(&self, plugin: Option<&str>, limit: i64) -> StoreResult<Vec<Event>> {
        self.events_before(plugin, None, limit)
    }

    /// The newest events with a `seq` below `before` (a page after the one that ended at
    /// `before`; none: the newest), optionally of one plugin, newest first. Pages of events
    /// pruned meanwhile (`retention.rs`) just end.
    pub fn events_before(
        &self,
        plugin: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Event>> {
        let rows: Vec<EventRow> = on_conn!(&mut *self.conn(), c => {
            let mut query = events::table.select(EventRow::as_select()).into_boxed();
            if let Some(p) = plugin {
                query = query.filter(events::plugin_id.eq(p));
            }
            if let Some(before) = before {
                let before = i32::try_from(before.max(0)).unwrap_or(i32::MAX);
                query = query.filter(events::seq.lt(before));
            }
            query.order(events::seq.desc()).limit(limit).load(c)
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(Event {
                    seq: r.seq,
                    at_ms: r.at_ms,
                    plugin: r.plugin_id,
                    kind: r.kind,
                    actor: r.actor,
                    details: serde_json::from_str(&r.details)?,
                })
            })
            .collect()
    }

    /// A host-wide setting.
    pub fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(on_conn!(&mut *self.conn(), c => host_settings::table
            .find(key)
            .select(host_settings::value)
            .first(c)
            .optional())?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let at = now_ms();
        on_conn!(&mut *self.conn(), c => diesel::insert_into(host_settings::table)
            .values((
                host_settings::key.eq(key),
                host_settings::value.eq(value),
                host_settings::updated_at_ms.eq(at),
            ))
            .on_conflict(host_settings::key)
            .do_update()
            .set((host_settings::value.eq(value), host_settings::updated_at_ms.eq(at)))
            .execute(c))?;
        Ok(())
    }

    pub fn kv_get(&self, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(on_conn!(&mut *self.conn(), c => kv::table
            .find((plugin, key))
            .select(kv::value)
            .first(c)
            .optional())?)
    }

    pub fn kv_put(&self, plugin: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        let at = now_ms();
        let record = self.kv_changes(plugin).then_some(self.origin.as_str());
        macro_rules! put {
            ($c:expr) => {
                diesel::insert_into(kv::table)
                    .values((
                        kv::plugin_id.eq(plugin),
                        kv::key.eq(key),
                        kv::value.eq(value),
                        kv::updated_at_ms.eq(at),
                    ))
                    .on_conflict((kv::plugin_id, kv::key))
                    .do_update()
                    .set((kv::value.eq(value), kv::updated_at_ms.eq(at)))
                    .execute($c)
            };
        }
        // Only a plugin whose writes are shared state pays for a transaction and a change.
        match record {
            None => on_conn!(&mut *self.conn(), c => put!(c).map(drop))?,
            Some(origin) => on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<()> {
                put!(c)?;
                c.record_change(change_kind::KV, plugin, origin)?;
                Ok(())
            }))?,
        }
        Ok(())
    }

    /// Delete a key; true if it existed.
    pub fn kv_delete(&self, plugin: &str, key: &str) -> StoreResult<bool> {
        let record = self.kv_changes(plugin).then_some(self.origin.as_str());
        let n = on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<usize> {
            let n = diesel::delete(kv::table.find((plugin, key))).execute(c)?;
            if let (Some(origin), true) = (record, n > 0) {
                c.record_change(change_kind::KV, plugin, origin)?;
            }
            Ok(n)
        }))?;
        Ok(n > 0)
    }

    /// Keys of a plugin starting with `prefix`, sorted (byte order on both backends).
    pub fn kv_keys(&self, plugin: &str, prefix: &str) -> StoreResult<Vec<String>> {
        let pattern =
            format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        Ok(on_conn!(&mut *self.conn(), c => kv::table
            .filter(kv::plugin_id.eq(plugin))
            .filter(kv::key.like(&pattern).escape('\\'))
            .order(kv::key.asc())
            .select(kv::key)
            .load(c))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database of one backend (a SQLite file in a temp dir, or a new database of the
    /// test binary's PostgreSQL cluster), opened as often as a test likes.
    struct Db {
        db: Database,
        _dir: Option<tempfile::TempDir>,
    }

    impl Db {
        fn sqlite() -> Db {
            let dir = tempfile::tempdir().unwrap();
            Db { db: Database::Sqlite(dir.path().join("bkg.db")), _dir: Some(dir) }
        }

        fn postgres() -> Db {
            Db { db: Database::Postgres(test_pg::shared().create_database()), _dir: None }
        }

        fn open(&self) -> Store {
            Store::connect(&self.db).unwrap()
        }
    }

    /// Every store test, once per backend: `store::tests::sqlite::<name>` and
    /// `store::tests::postgres::<name>` (a real PostgreSQL; missing, the test fails).
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(#[test]
                fn $name() {
                    super::$name(super::Db::sqlite())
                })*
            }
            mod postgres {
                $(#[test]
                fn $name() {
                    super::$name(super::Db::postgres())
                })*
            }
        };
    }

    on_both_backends!(
        desired_state_and_config_survive_reopening,
        isolation_defaults_to_in_process_and_survives_reopening,
        isolation_limits_survive_reopening,
        isolation_column_refuses_unknown_modes,
        isolation_migration_reverts,
        events_filter_and_order,
        models_replace_by_repo,
        settings_upsert,
        kv_is_per_plugin,
        kv_keys_sort_byte_by_byte,
        stores_opened_together_migrate_once,
        changes_are_recorded_once_per_change_in_order,
    );

    fn desired_state_and_config_survive_reopening(db: Db) {
        {
            let s = db.open();
            s.set_desired_state("echo", DesiredState::Stopped).unwrap();
            assert_eq!(s.set_config("echo", &serde_json::json!({"a": 1}), "test").unwrap(), 1);
            assert_eq!(s.set_config("echo", &serde_json::json!({"a": 2}), "test").unwrap(), 2);
            s.record_loaded("echo", "/p/echo.so", "abc", "1.0.0").unwrap();
        }
        let s = db.open();
        let r = s.plugin("echo").unwrap().unwrap();
        assert_eq!(r.desired_state, DesiredState::Stopped);
        assert_eq!(r.config, Some(serde_json::json!({"a": 2})));
        assert_eq!(r.config_version, 2);
        assert_eq!(r.last_version.as_deref(), Some("1.0.0"));
        let history = s.config_history("echo", 10).unwrap();
        assert_eq!(history.iter().map(|(e, _)| e.version).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(history[1].1, serde_json::json!({"a": 1}));
        assert!(s.plugin("ghost").unwrap().is_none());
    }

    fn operator(mode: IsolationMode) -> IsolationSetting {
        IsolationSetting { mode: Some(mode), limits: ProcessLimits::default() }
    }

    fn isolation_defaults_to_in_process_and_survives_reopening(db: Db) {
        {
            let s = db.open();
            assert_eq!(s.isolation("echo").unwrap(), IsolationSetting::default());
            s.set_desired_state("echo", DesiredState::Stopped).unwrap();
            // A record without the operator's choice: no mode (the file's suggestion applies).
            assert_eq!(s.isolation("echo").unwrap().mode, None);
            s.set_isolation("echo", &operator(IsolationMode::Process)).unwrap();
            // A plugin id with no record yet gets one, like the desired state.
            s.set_isolation("fresh", &operator(IsolationMode::Process)).unwrap();
        }
        let s = db.open();
        assert_eq!(s.isolation("echo").unwrap(), operator(IsolationMode::Process));
        assert_eq!(s.isolation("fresh").unwrap(), operator(IsolationMode::Process));
        assert_eq!(s.isolation("ghost").unwrap(), IsolationSetting::default());
        // The rest of the record is untouched by the mode.
        assert_eq!(s.plugin("echo").unwrap().unwrap().desired_state, DesiredState::Stopped);
        // The operator's in_process is a choice too (it wins over a library's suggestion).
        s.set_isolation("echo", &operator(IsolationMode::InProcess)).unwrap();
        assert_eq!(s.isolation("echo").unwrap().mode, Some(IsolationMode::InProcess));
        s.set_isolation("echo", &IsolationSetting::default()).unwrap();
        assert_eq!(s.isolation("echo").unwrap().mode, None);
    }

    fn isolation_limits_survive_reopening(db: Db) {
        let limits = ProcessLimits {
            memory_mb: Some(512),
            open_files: None,
            processes: Some(64),
            call_deadline_ms: Some(30_000),
        };
        {
            let s = db.open();
            let setting = IsolationSetting { mode: Some(IsolationMode::Process), limits };
            s.set_isolation("echo", &setting).unwrap();
        }
        let s = db.open();
        assert_eq!(s.isolation("echo").unwrap().limits, limits);
        let cleared = IsolationSetting { mode: Some(IsolationMode::Process), ..Default::default() };
        s.set_isolation("echo", &cleared).unwrap();
        assert_eq!(s.isolation("echo").unwrap(), cleared);
    }

    fn isolation_column_refuses_unknown_modes(db: Db) {
        let s = db.open();
        s.set_isolation("echo", &operator(IsolationMode::Process)).unwrap();
        let refused = (|| -> StoreResult<usize> {
            Ok(on_conn!(&mut *s.conn(), c => diesel::update(plugins::table.find("echo"))
                .set(plugins::isolation.eq("sandbox"))
                .execute(c))?)
        })();
        assert!(refused.is_err(), "the CHECK constraint let 'sandbox' in");
        assert_eq!(s.isolation("echo").unwrap().mode, Some(IsolationMode::Process));
    }

    /// Reverting 000005 forgets who chose; applying it again counts a stored `process` as the
    /// operator's (before it only an operator could store it) and `in_process` as the default.
    fn isolation_migration_reverts(db: Db) {
        let s = db.open();
        s.set_isolation("echo", &operator(IsolationMode::Process)).unwrap();
        s.set_isolation("other", &operator(IsolationMode::InProcess)).unwrap();
        let mut conn = s.conn();
        let (reverted, column_gone) = match &mut *conn {
            // The migrations after it first (000006: the changes table).
            Conn::Sqlite(c) => (
                revert_to("20261130000005", || {
                    c.revert_last_migration(SQLITE_MIGRATIONS).unwrap().to_string()
                }),
                plugins::table.select(plugins::isolation_by_operator).load::<bool>(c).is_err(),
            ),
            Conn::Pg(c) => (
                revert_to("20261130000005", || {
                    c.revert_last_migration(PG_MIGRATIONS).unwrap().to_string()
                }),
                plugins::table.select(plugins::isolation_by_operator).load::<bool>(c).is_err(),
            ),
            Conn::Down(why) => panic!("the test database is unreachable: {why}"),
        };
        assert_eq!(reverted.to_string(), "20261130000005");
        assert!(column_gone);
        Store::migrate(&mut conn).unwrap();
        drop(conn);
        assert_eq!(s.isolation("echo").unwrap(), operator(IsolationMode::Process));
        assert_eq!(s.isolation("other").unwrap(), IsolationSetting::default());
    }

    /// Revert migrations, newest first, through `version`; the last one reverted.
    fn revert_to(version: &str, mut revert_last: impl FnMut() -> String) -> String {
        loop {
            let reverted = revert_last();
            if reverted == version {
                return reverted;
            }
        }
    }

    /// Issue 16: every change other hosts must apply is one row of `changes`, in order, with
    /// this store's origin; writing what the store already holds records nothing (so a host
    /// applying another's change does not echo it back).
    fn changes_are_recorded_once_per_change_in_order(db: Db) {
        let s = db.open();
        let other = db.open();
        assert_ne!(s.origin(), other.origin());
        assert_eq!(s.last_change().unwrap(), 0);
        s.set_config("echo", &serde_json::json!({"a": 1}), "test").unwrap();
        s.set_desired_state("echo", DesiredState::Stopped).unwrap();
        other.set_desired_state("echo", DesiredState::Stopped).unwrap();
        s.set_isolation("echo", &operator(IsolationMode::Process)).unwrap();
        other.set_isolation("echo", &operator(IsolationMode::Process)).unwrap();
        // The auth provider's key-value writes only.
        s.kv_put("apikeys", "key/1", b"x").unwrap();
        s.record_kv_changes_of("apikeys");
        s.kv_put("apikeys", "key/1", b"y").unwrap();
        s.kv_put("other", "k", b"z").unwrap();
        assert!(s.kv_delete("apikeys", "key/1").unwrap());
        assert!(!s.kv_delete("apikeys", "key/1").unwrap());
        other.set_desired_state("echo", DesiredState::Running).unwrap();
        let changes = s.changes_after(0, 100).unwrap();
        let seen: Vec<(&str, &str, bool)> = changes
            .iter()
            .map(|c| (c.kind.as_str(), c.subject.as_str(), c.origin == s.origin()))
            .collect();
        assert_eq!(
            seen,
            [
                (change_kind::CONFIG, "echo", true),
                (change_kind::DESIRED_STATE, "echo", true),
                (change_kind::ISOLATION, "echo", true),
                (change_kind::KV, "apikeys", true),
                (change_kind::KV, "apikeys", true),
                (change_kind::DESIRED_STATE, "echo", false),
            ]
        );
        assert!(changes.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(s.last_change().unwrap(), changes[5].id);
        assert_eq!(other.changes_after(changes[3].id, 100).unwrap(), changes[4..]);
        assert_eq!(s.changes_after(0, 2).unwrap(), changes[..2]);
    }

    fn events_filter_and_order(db: Db) {
        let s = db.open();
        s.add_event(Some("echo"), "loaded", "watcher", serde_json::json!({"generation": 1}))
            .unwrap();
        s.add_event(Some("slow"), "loaded", "watcher", serde_json::json!({})).unwrap();
        s.add_event(None, "host_started", "host", serde_json::json!({})).unwrap();
        let all = s.events(None, 10).unwrap();
        assert_eq!(
            all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["host_started", "loaded", "loaded"]
        );
        let echo = s.events(Some("echo"), 10).unwrap();
        assert_eq!(echo.len(), 1);
        assert_eq!(echo[0].details["generation"], 1);
        assert_eq!(s.events(None, 1).unwrap().len(), 1);
    }

    fn models_replace_by_repo(db: Db) {
        let s = db.open();
        let mut m = InstalledModel {
            repo: "org/name".into(),
            revision: "main".into(),
            commit: Some("c1".into()),
            path: "org/name".into(),
            source: "hub:http://x".into(),
            files: vec![ModelFile { name: "a.bin".into(), size: 3, sha256: "ab".into() }],
            total_bytes: 3,
            plugin: Some("candle".into()),
            installed_at_ms: 1,
        };
        s.put_model(&m).unwrap();
        m.revision = "v2".into();
        m.commit = None;
        s.put_model(&m).unwrap();
        assert_eq!(s.models().unwrap(), vec![m.clone()]);
        assert_eq!(s.model("org/name").unwrap(), Some(m));
        assert_eq!(s.model("org/other").unwrap(), None);
    }

    fn settings_upsert(db: Db) {
        let s = db.open();
        assert_eq!(s.setting("a").unwrap(), None);
        s.set_setting("a", "1").unwrap();
        s.set_setting("a", "2").unwrap();
        assert_eq!(s.setting("a").unwrap().as_deref(), Some("2"));
    }

    fn kv_is_per_plugin(db: Db) {
        let s = db.open();
        s.kv_put("a", "k1", b"one").unwrap();
        s.kv_put("a", "k1", b"uno").unwrap();
        s.kv_put("a", "k_2", b"two").unwrap();
        s.kv_put("a", "kx", b"x").unwrap();
        s.kv_put("b", "k1", b"other").unwrap();
        assert_eq!(s.kv_get("a", "k1").unwrap().as_deref(), Some(&b"uno"[..]));
        assert_eq!(s.kv_get("b", "k1").unwrap().as_deref(), Some(&b"other"[..]));
        assert_eq!(s.kv_keys("a", "k_").unwrap(), ["k_2"]);
        assert_eq!(s.kv_keys("a", "").unwrap(), ["k1", "k_2", "kx"]);
        assert!(s.kv_delete("a", "k1").unwrap());
        assert!(!s.kv_delete("a", "k1").unwrap());
        assert!(s.kv_get("a", "k1").unwrap().is_none());
    }

    /// PostgreSQL sorts text by the database's locale unless told otherwise; the store's keys
    /// use the "C" collation there, so both backends list keys byte by byte.
    fn kv_keys_sort_byte_by_byte(db: Db) {
        let s = db.open();
        for key in ["b", "B", "a-2", "a_1", "a1", "A", "_z"] {
            s.kv_put("p", key, b"v").unwrap();
        }
        assert_eq!(s.kv_keys("p", "").unwrap(), ["A", "B", "_z", "a-2", "a1", "a_1", "b"]);
        for (n, repo) in ["org/b", "Org/a", "org/a-x"].into_iter().enumerate() {
            let m = InstalledModel {
                repo: repo.into(),
                revision: "main".into(),
                commit: None,
                path: repo.into(),
                source: "test".into(),
                files: vec![],
                total_bytes: 0,
                plugin: None,
                installed_at_ms: n as i64,
            };
            s.put_model(&m).unwrap();
        }
        let repos: Vec<String> = s.models().unwrap().into_iter().map(|m| m.repo).collect();
        assert_eq!(repos, ["Org/a", "org/a-x", "org/b"]);
    }

    /// Hosts starting together on one fresh database: every store opens (none trips over
    /// another's half-made schema) and each migration is recorded once.
    fn stores_opened_together_migrate_once(db: Db) {
        const HOSTS: usize = 6;
        let barrier = std::sync::Barrier::new(HOSTS);
        let stores: Vec<Store> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..HOSTS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        Store::connect(&db.db)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        let expected: Vec<String> = match &db.db {
            Database::Sqlite(_) => migration_names(&SQLITE_MIGRATIONS),
            Database::Postgres(_) => migration_names(&PG_MIGRATIONS),
        }
        .into_iter()
        .map(|name| name.split('_').next().unwrap().replace('-', ""))
        .collect();
        #[derive(QueryableByName)]
        struct Version {
            #[diesel(sql_type = diesel::sql_types::Text)]
            version: String,
        }
        let applied: Vec<String> = (|| -> StoreResult<Vec<Version>> {
            Ok(on_conn!(&mut *stores[0].conn(), c => diesel::sql_query(
                "SELECT version FROM __diesel_schema_migrations ORDER BY version"
            )
            .load::<Version>(c))?)
        })()
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
        assert_eq!(applied, expected);
        // Every store works on the one schema.
        for (n, s) in stores.iter().enumerate() {
            s.kv_put("p", &format!("host{n}"), b"up").unwrap();
        }
        assert_eq!(stores[0].kv_keys("p", "host").unwrap().len(), HOSTS);
    }

    /// Both backends run the same migrations: a version added to one folder must be mirrored
    /// in the other (`migrations/sqlite/`, `migrations/postgres/`).
    #[test]
    fn migrations_of_both_backends_have_the_same_versions() {
        let sqlite = migration_names(&SQLITE_MIGRATIONS);
        assert_eq!(sqlite, migration_names(&PG_MIGRATIONS));
        assert!(sqlite.len() >= 4, "{sqlite:?}");
    }

    /// The folder names of embedded migrations, in order (`2026-11-24-000001_init`, ...).
    fn migration_names(m: &EmbeddedMigrations) -> Vec<String> {
        use diesel::migration::MigrationSource;
        MigrationSource::<diesel::sqlite::Sqlite>::migrations(m)
            .unwrap()
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    }

    /// A database file made by the build before the PostgreSQL backend (see
    /// host/tests/db-fixtures/README.md) opens with every row intact and its migrations
    /// recognised as applied.
    #[test]
    fn sqlite_database_of_the_previous_version_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bkg.db");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/db-fixtures/bkg-20261130000004.db");
        std::fs::copy(&fixture, &path).unwrap();
        let s = Store::open(&path).unwrap();
        let echo = s.plugin("echo").unwrap().unwrap();
        assert_eq!(echo.desired_state, DesiredState::Stopped);
        assert_eq!(echo.config, Some(serde_json::json!({"greeting": "hi"})));
        assert_eq!(echo.config_version, 1);
        assert_eq!(echo.last_sha256.as_deref(), Some("abc123"));
        // Stored before 000005: a `process` counts as the operator's choice.
        assert_eq!(s.isolation("echo").unwrap().mode, Some(IsolationMode::Process));
        let history = s.config_history("echo", 10).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!((history[0].0.actor.as_str(), history[0].0.version), ("admin", 1));
        let kinds: Vec<String> = s.events(None, 10).unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["config_changed", "host_started"]);
        assert_eq!(s.kv_get("apikeys", "key:1").unwrap().as_deref(), Some(&b"\x00\x01stored"[..]));
        let model = s.model("org/name").unwrap().unwrap();
        assert_eq!((model.revision.as_str(), model.total_bytes), ("main", 3));
        assert_eq!(model.files[0].sha256, "ab");
        assert_eq!(s.setting("bootstrap_admin_key_sha256").unwrap().map(|h| h.len()), Some(64));
        // New writes land next to the old rows, and the next version's config follows on.
        assert_eq!(s.set_config("echo", &serde_json::json!({"greeting": "yo"}), "t").unwrap(), 2);
    }

    #[test]
    fn database_urls_parse() {
        let sqlite = |p: &str| Ok(Database::Sqlite(PathBuf::from(p)));
        assert_eq!(Database::parse("/var/lib/bkg/bkg.db"), sqlite("/var/lib/bkg/bkg.db"));
        assert_eq!(Database::parse("sqlite:///var/lib/bkg.db"), sqlite("/var/lib/bkg.db"));
        assert_eq!(Database::parse("sqlite://rel/bkg.db"), sqlite("rel/bkg.db"));
        assert_eq!(Database::parse("sqlite:bkg.db"), sqlite("bkg.db"));
        for url in ["postgres://u:p@h:5432/d", "postgresql://h/d?sslmode=disable"] {
            assert_eq!(Database::parse(url), Ok(Database::Postgres(url.into())));
        }
        for (bad, says) in [
            ("", "empty"),
            ("  ", "empty"),
            ("sqlite://", "names no SQLite file"),
            ("mysql://h/d", "scheme \"mysql\" is not supported"),
        ] {
            let err = Database::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn database_urls_never_show_a_password() {
        for (url, shown) in [
            ("postgres://bkg:s3cret@db:5432/bkg", "postgres://bkg:***@db:5432/bkg"),
            (
                "postgres://bkg:s3cret@db/bkg?sslmode=require",
                "postgres://bkg:***@db/bkg?sslmode=require",
            ),
            (
                "postgresql://db/bkg?user=bkg&password=s3cret",
                "postgresql://db/bkg?user=bkg&password=***",
            ),
            ("postgres://bkg@db/bkg", "postgres://bkg@db/bkg"),
        ] {
            assert_eq!(Database::parse(url).unwrap().to_string(), shown);
        }
    }

    /// An unreachable PostgreSQL: the error names the URL (password elided) and what failed.
    #[test]
    fn unreachable_postgres_is_a_clear_error_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://bkg:hunter2pw@127.0.0.1:{port}/bkg");
        let err = Store::connect(&Database::parse(&url).unwrap()).err().unwrap().to_string();
        assert!(err.contains(&format!("postgres://bkg:***@127.0.0.1:{port}/bkg")), "{err}");
        assert!(err.contains("refused"), "{err}");
        assert!(!err.contains("hunter2pw"), "{err}");
    }
}
