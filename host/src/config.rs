//! Command-line flags, each with an environment fallback.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

const DEFAULT_HUB: &str = "https://huggingface.co";

/// `--database-url` as given: it may hold a password, so its `Debug` (and so `Config`'s)
/// shows none of it.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(s.to_string()))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "bkg",
    version,
    about = "bkg: a host for native plugins, loaded, swapped and unloaded live"
)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "BKG_LISTEN", default_value = "127.0.0.1:43121")]
    pub listen: String,
    /// Where the host keeps its state (default: $XDG_DATA_HOME/bkg or ~/.local/share/bkg).
    #[arg(long, env = "BKG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store: a SQLite file path (or `sqlite://PATH`), or `postgres://USER@HOST/DB` for
    /// several hosts on one PostgreSQL (default: <data-dir>/bkg.db). Its password is never
    /// logged nor shown in errors.
    #[arg(long, env = "BKG_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// The watched folder plugins are copied into (default: <data-dir>/plugins).
    #[arg(long, env = "BKG_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// The built admin UI (`admin-ui/dist/admin-ui/browser`), served at `/`; none: no UI.
    #[arg(long, env = "BKG_UI_DIR")]
    pub ui_dir: Option<PathBuf>,
    /// Where models live: `<models-dir>/<org>/<name>/` per model (default: <data-dir>/models).
    #[arg(long, env = "BKG_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// The Hugging Face hub the model downloads come from (HF_ENDPOINT is honoured too).
    #[arg(long, env = "BKG_HUB_ENDPOINT", default_value = DEFAULT_HUB)]
    pub hub_endpoint: String,
    /// How often a broken file transfer is resumed before the download fails (kept for later).
    #[arg(long, env = "BKG_HUB_RETRIES", default_value_t = 3)]
    pub hub_retries: usize,
    /// How long one plugin call may take before the client gets 504.
    #[arg(long, env = "BKG_CALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub call_timeout_ms: u64,
    /// How long a retiring generation may finish its running calls.
    #[arg(long, env = "BKG_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// How long start/stop/config calls into a plugin may take.
    #[arg(long, env = "BKG_CONTROL_TIMEOUT_MS", default_value_t = 60_000)]
    pub control_timeout_ms: u64,
    /// Worker threads per plugin instance (a plugin may ask for fewer or more).
    #[arg(long, env = "BKG_PLUGIN_WORKERS", default_value_t = 4)]
    pub plugin_workers: usize,
    /// Calls queued per plugin instance before the host answers 503.
    #[arg(long, env = "BKG_QUEUE_DEPTH", default_value_t = 256)]
    pub queue_depth: usize,
    /// Request body bytes queued (or running) per plugin instance before the host answers 503.
    #[arg(long, env = "BKG_QUEUE_BYTES", default_value_t = 256 << 20)]
    pub queue_bytes: usize,
    /// Largest request body a plugin call takes (capabilities, admin routes, claimed
    /// prefixes such as `/v1`), in bytes; larger ones get 413. A capability may declare a
    /// larger limit of its own in its manifest (`x-bkg-max-body-bytes` in its input schema).
    #[arg(long, env = "BKG_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Largest JSON body the host's own admin routes (`/api/core/...`) take, in bytes.
    #[arg(long, env = "BKG_MAX_ADMIN_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_admin_body_bytes: usize,
    /// Largest plugin library an upload (`PUT /api/core/plugins/upload/...`) takes, in bytes.
    #[arg(long, env = "BKG_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_upload_bytes: u64,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "BKG_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// The plugin that verifies API keys (its `verify` capability). The bootstrap admin key
    /// comes from the BKG_ADMIN_KEY environment variable, or is generated and printed once.
    #[arg(long, env = "BKG_AUTH_PROVIDER", default_value = "apikeys")]
    pub auth_provider: String,
    /// Quiet time before a file whose writer was never seen closing is loaded anyway.
    #[arg(long, env = "BKG_SETTLE_MS", default_value_t = 2_000)]
    pub settle_ms: u64,
    /// Process isolation: the address space a plugin's child process may map, in MiB
    /// (`RLIMIT_AS`; an allocation past it fails in the child only). Default: no limit.
    #[arg(long, env = "BKG_PROCESS_MAX_MEMORY_MB")]
    pub process_max_memory_mb: Option<u64>,
    /// Process isolation: open files a plugin's child process may hold (`RLIMIT_NOFILE`).
    #[arg(long, env = "BKG_PROCESS_MAX_OPEN_FILES")]
    pub process_max_open_files: Option<u64>,
    /// Process isolation: processes a plugin's child may start (`RLIMIT_NPROC`; Linux counts
    /// every process and thread of the user running the host, the host's own included).
    #[arg(long, env = "BKG_PROCESS_MAX_PROCESSES")]
    pub process_max_processes: Option<u64>,
    /// Retention: events older than this are deleted (`30d`, `12h`, `90m`, `45s`; `0` keeps
    /// them whatever their age).
    #[arg(long, env = "BKG_EVENTS_MAX_AGE", default_value = "30d", value_parser = parse_duration)]
    pub events_max_age: Duration,
    /// Retention: the most events kept in the database (the newest, of every host on it; `0`
    /// keeps them all).
    #[arg(long, env = "BKG_EVENTS_MAX_ROWS", default_value_t = 100_000)]
    pub events_max_rows: u64,
    /// Retention: changes (what hosts on one PostgreSQL apply from each other) older than this
    /// that every host seen within this time has applied are deleted; a host away longer
    /// reloads its state in full when it is back (`0` keeps them all).
    #[arg(long, env = "BKG_CHANGES_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub changes_retention: Duration,
    /// How often the host prunes events and changes (in batches of 1000 rows).
    #[arg(long, env = "BKG_PRUNE_EVERY", default_value = "1m", value_parser = parse_positive_duration)]
    pub prune_every: Duration,
}

/// A duration with its unit: `30d`, `24h`, `90m`, `45s`, `500ms`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "{text:?} has no unit: write it as 30d, 24h, 90m, 45s or 500ms (or 0)"
            ))
        }
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}: write it as 30d, 24h, 90m, 45s or 500ms (or 0)"
            ))
        }
    };
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration: write it as 30d, 24h, 90m, 45s or 500ms (or 0)")
    })?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// A duration above zero (see `parse_duration`).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be above zero (e.g. 1m)")),
        d => Ok(d),
    }
}

impl Config {
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("bkg");
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/share/bkg"),
            None => PathBuf::from(".bkg"),
        }
    }

    /// `--database-url`, or the SQLite file in the data dir.
    pub fn database(&self) -> Result<crate::store::Database, String> {
        match &self.database_url {
            Some(DatabaseUrl(url)) => crate::store::Database::parse(url)
                .map_err(|e| format!("--database-url (BKG_DATABASE_URL): {e}")),
            None => Ok(crate::store::Database::Sqlite(self.data_dir().join("bkg.db"))),
        }
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir.clone().unwrap_or_else(|| self.data_dir().join("plugins"))
    }

    pub fn models_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(|| self.data_dir().join("models"))
    }

    /// `--hub-endpoint`, or HF_ENDPOINT when the flag was left at its default.
    pub fn hub_endpoint(&self) -> String {
        match std::env::var("HF_ENDPOINT") {
            Ok(e) if !e.is_empty() && self.hub_endpoint == DEFAULT_HUB => e,
            _ => self.hub_endpoint.clone(),
        }
    }

    /// The request body limits of each route class.
    pub fn body_limits(&self) -> crate::api::BodyLimits {
        crate::api::BodyLimits {
            call: self.max_body_bytes.max(1),
            admin: self.max_admin_body_bytes.max(1),
            upload: self.max_upload_bytes.max(1),
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// The retention policy of events and changes (`0` flags: keep).
    pub fn retention(&self) -> crate::store::Retention {
        let set = |d: Duration| (!d.is_zero()).then_some(d);
        crate::store::Retention {
            events_max_age: set(self.events_max_age),
            events_max_rows: (self.events_max_rows > 0).then_some(self.events_max_rows),
            changes: set(self.changes_retention),
            every: self.prune_every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_debug_shows_no_database_password() {
        let config =
            Config::try_parse_from(["bkg", "--database-url", "postgres://bkg:hunter2@db/bkg"])
                .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("DatabaseUrl(..)"), "{shown}");
        assert!(config.database().is_ok());
    }

    #[test]
    fn retention_flags_take_durations_with_units_and_zero_keeps() {
        let config = Config::try_parse_from(["bkg"]).unwrap();
        let r = config.retention();
        assert_eq!(r.events_max_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(r.events_max_rows, Some(100_000));
        assert_eq!(r.changes, Some(Duration::from_secs(24 * 3_600)));
        assert_eq!(r.every, Duration::from_secs(60));
        let config = Config::try_parse_from([
            "bkg",
            "--events-max-age",
            "0",
            "--events-max-rows",
            "0",
            "--changes-retention",
            "90m",
            "--prune-every",
            "500ms",
        ])
        .unwrap();
        let r = config.retention();
        assert_eq!((r.events_max_age, r.events_max_rows), (None, None));
        assert_eq!(r.changes, Some(Duration::from_secs(5_400)));
        assert_eq!(r.every, Duration::from_millis(500));
        for bad in ["24", "1w", "h", "-1h", "1.5h", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let e = Config::try_parse_from(["bkg", "--prune-every", "0"]).unwrap_err().to_string();
        assert!(e.contains("above zero"), "{e}");
    }
}
