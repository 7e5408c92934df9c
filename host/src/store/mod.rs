//! The store: the only module that knows SQL. SQLite through diesel (bundled libsqlite3, WAL),
//! with the migrations in the top-level `migrations/` embedded and applied at start.
//!
//! Everything goes through diesel's query builder against `schema.rs`, and the connection type
//! is the `Conn` alias, so a PostgreSQL backend is a contained change: another alias (or an
//! enum over both), the Postgres flavour of the migrations, and `open`.

mod schema;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde::Serialize;

use crate::isolation::IsolationMode;
use schema::{config_history, events, host_settings, kv, models, plugins};

type Conn = SqliteConnection;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

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

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = models)]
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
}

impl Store {
    /// Open (or create) the database file, switch it to WAL and apply pending migrations.
    pub fn open(path: &Path) -> StoreResult<Store> {
        let url = path.to_string_lossy().into_owned();
        let open_err = |message: String| StoreError::Open { path: url.clone(), message };
        let mut conn = Conn::establish(&url).map_err(|e| open_err(e.to_string()))?;
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA busy_timeout = 5000",
            "PRAGMA foreign_keys = ON",
        ] {
            diesel::sql_query(pragma).execute(&mut conn).map_err(|e| open_err(e.to_string()))?;
        }
        conn.run_pending_migrations(MIGRATIONS).map_err(|e| StoreError::Migrate(e.to_string()))?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_plugin(conn: &mut Conn, id: &str) -> QueryResult<usize> {
        diesel::insert_into(plugins::table)
            .values((plugins::id.eq(id), plugins::updated_at_ms.eq(now_ms())))
            .on_conflict_do_nothing()
            .execute(conn)
    }

    pub fn plugin(&self, id: &str) -> StoreResult<Option<PluginRecord>> {
        let row = plugins::table
            .find(id)
            .select(PluginRow::as_select())
            .first(&mut *self.conn())
            .optional()?;
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
        let mut conn = self.conn();
        conn.transaction(|c| {
            Self::ensure_plugin(c, id)?;
            diesel::update(plugins::table.find(id))
                .set((
                    plugins::desired_state.eq(state.as_str()),
                    plugins::updated_at_ms.eq(now_ms()),
                ))
                .execute(c)
        })?;
        Ok(())
    }

    /// Where the plugin id's code runs (the operator's choice; `in_process` for an id never
    /// set). A stored value this build does not know is an error rather than a silent default.
    pub fn isolation(&self, id: &str) -> StoreResult<IsolationMode> {
        let stored: Option<String> = plugins::table
            .find(id)
            .select(plugins::isolation)
            .first(&mut *self.conn())
            .optional()?;
        match stored {
            None => Ok(IsolationMode::default()),
            Some(text) => IsolationMode::parse(&text)
                .ok_or(StoreError::Invalid { what: "isolation mode", value: text }),
        }
    }

    /// Store where the plugin id's code runs (creating its record like the desired state).
    pub fn set_isolation(&self, id: &str, mode: IsolationMode) -> StoreResult<()> {
        let mut conn = self.conn();
        conn.transaction(|c| {
            Self::ensure_plugin(c, id)?;
            diesel::update(plugins::table.find(id))
                .set((plugins::isolation.eq(mode.as_str()), plugins::updated_at_ms.eq(now_ms())))
                .execute(c)
        })?;
        Ok(())
    }

    pub fn record_loaded(
        &self,
        id: &str,
        file: &str,
        sha256: &str,
        version: &str,
    ) -> StoreResult<()> {
        let mut conn = self.conn();
        conn.transaction(|c| {
            Self::ensure_plugin(c, id)?;
            diesel::update(plugins::table.find(id))
                .set((
                    plugins::last_file.eq(file),
                    plugins::last_sha256.eq(sha256),
                    plugins::last_version.eq(version),
                    plugins::updated_at_ms.eq(now_ms()),
                ))
                .execute(c)
        })?;
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
        let mut conn = self.conn();
        let version = conn.transaction(|c| -> QueryResult<i64> {
            Self::ensure_plugin(c, id)?;
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
            Ok(version)
        })?;
        Ok(version)
    }

    /// The newest configs of a plugin, newest first.
    pub fn config_history(
        &self,
        id: &str,
        limit: i64,
    ) -> StoreResult<Vec<(ConfigEntry, serde_json::Value)>> {
        let rows: Vec<ConfigEntry> = config_history::table
            .filter(config_history::plugin_id.eq(id))
            .order(config_history::seq.desc())
            .limit(limit)
            .select(ConfigEntry::as_select())
            .load(&mut *self.conn())?;
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
        diesel::insert_into(events::table)
            .values((
                events::at_ms.eq(now_ms()),
                events::plugin_id.eq(plugin),
                events::kind.eq(kind),
                events::actor.eq(actor),
                events::details.eq(details.to_string()),
            ))
            .execute(&mut *self.conn())?;
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
        diesel::replace_into(models::table).values(&row).execute(&mut *self.conn())?;
        Ok(())
    }

    /// Every installed model, by repo id.
    pub fn models(&self) -> StoreResult<Vec<InstalledModel>> {
        let rows: Vec<ModelRow> = models::table
            .select(ModelRow::as_select())
            .order(models::repo.asc())
            .load(&mut *self.conn())?;
        rows.into_iter().map(ModelRow::into_model).collect()
    }

    pub fn model(&self, repo: &str) -> StoreResult<Option<InstalledModel>> {
        let row = models::table
            .find(repo)
            .select(ModelRow::as_select())
            .first(&mut *self.conn())
            .optional()?;
        row.map(ModelRow::into_model).transpose()
    }

    /// The newest events (optionally of one plugin), newest first.
    pub fn events(&self, plugin: Option<&str>, limit: i64) -> StoreResult<Vec<Event>> {
        let mut query = events::table.select(EventRow::as_select()).into_boxed();
        if let Some(p) = plugin {
            query = query.filter(events::plugin_id.eq(p));
        }
        let rows: Vec<EventRow> =
            query.order(events::seq.desc()).limit(limit).load(&mut *self.conn())?;
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
        Ok(host_settings::table
            .find(key)
            .select(host_settings::value)
            .first(&mut *self.conn())
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let at = now_ms();
        diesel::insert_into(host_settings::table)
            .values((
                host_settings::key.eq(key),
                host_settings::value.eq(value),
                host_settings::updated_at_ms.eq(at),
            ))
            .on_conflict(host_settings::key)
            .do_update()
            .set((host_settings::value.eq(value), host_settings::updated_at_ms.eq(at)))
            .execute(&mut *self.conn())?;
        Ok(())
    }

    pub fn kv_get(&self, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(kv::table.find((plugin, key)).select(kv::value).first(&mut *self.conn()).optional()?)
    }

    pub fn kv_put(&self, plugin: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        let at = now_ms();
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
            .execute(&mut *self.conn())?;
        Ok(())
    }

    /// Delete a key; true if it existed.
    pub fn kv_delete(&self, plugin: &str, key: &str) -> StoreResult<bool> {
        let n = diesel::delete(kv::table.find((plugin, key))).execute(&mut *self.conn())?;
        Ok(n > 0)
    }

    /// Keys of a plugin starting with `prefix`, sorted.
    pub fn kv_keys(&self, plugin: &str, prefix: &str) -> StoreResult<Vec<String>> {
        let pattern =
            format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        Ok(kv::table
            .filter(kv::plugin_id.eq(plugin))
            .filter(kv::key.like(pattern).escape('\\'))
            .order(kv::key.asc())
            .select(kv::key)
            .load(&mut *self.conn())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bkg.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn desired_state_and_config_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bkg.db");
        {
            let s = Store::open(&path).unwrap();
            s.set_desired_state("echo", DesiredState::Stopped).unwrap();
            assert_eq!(s.set_config("echo", &serde_json::json!({"a": 1}), "test").unwrap(), 1);
            assert_eq!(s.set_config("echo", &serde_json::json!({"a": 2}), "test").unwrap(), 2);
            s.record_loaded("echo", "/p/echo.so", "abc", "1.0.0").unwrap();
        }
        let s = Store::open(&path).unwrap();
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

    #[test]
    fn isolation_defaults_to_in_process_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bkg.db");
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.isolation("echo").unwrap(), IsolationMode::InProcess);
            s.set_desired_state("echo", DesiredState::Stopped).unwrap();
            assert_eq!(s.isolation("echo").unwrap(), IsolationMode::InProcess);
            s.set_isolation("echo", IsolationMode::Process).unwrap();
            // A plugin id with no record yet gets one, like the desired state.
            s.set_isolation("fresh", IsolationMode::Process).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.isolation("echo").unwrap(), IsolationMode::Process);
        assert_eq!(s.isolation("fresh").unwrap(), IsolationMode::Process);
        assert_eq!(s.isolation("ghost").unwrap(), IsolationMode::InProcess);
        // The rest of the record is untouched by the mode.
        assert_eq!(s.plugin("echo").unwrap().unwrap().desired_state, DesiredState::Stopped);
        s.set_isolation("echo", IsolationMode::InProcess).unwrap();
        assert_eq!(s.isolation("echo").unwrap(), IsolationMode::InProcess);
    }

    #[test]
    fn isolation_column_refuses_unknown_modes() {
        let (_d, s) = store();
        s.set_isolation("echo", IsolationMode::Process).unwrap();
        let refused = diesel::update(plugins::table.find("echo"))
            .set(plugins::isolation.eq("sandbox"))
            .execute(&mut *s.conn());
        assert!(refused.is_err(), "the CHECK constraint let 'sandbox' in");
        assert_eq!(s.isolation("echo").unwrap(), IsolationMode::Process);
    }

    #[test]
    fn isolation_migration_reverts() {
        let (_d, s) = store();
        s.set_isolation("echo", IsolationMode::Process).unwrap();
        let mut conn = s.conn();
        let reverted = conn.revert_last_migration(MIGRATIONS).unwrap();
        assert_eq!(reverted.to_string(), "20261130000004");
        assert!(plugins::table.select(plugins::isolation).load::<String>(&mut *conn).is_err());
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        drop(conn);
        assert_eq!(s.isolation("echo").unwrap(), IsolationMode::InProcess);
    }

    #[test]
    fn events_filter_and_order() {
        let (_d, s) = store();
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

    #[test]
    fn models_replace_by_repo() {
        let (_d, s) = store();
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

    #[test]
    fn settings_upsert() {
        let (_d, s) = store();
        assert_eq!(s.setting("a").unwrap(), None);
        s.set_setting("a", "1").unwrap();
        s.set_setting("a", "2").unwrap();
        assert_eq!(s.setting("a").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn kv_is_per_plugin() {
        let (_d, s) = store();
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
}
