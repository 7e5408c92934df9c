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
}
