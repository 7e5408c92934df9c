//! The bkg host: loads native plugins from a watched folder, hot-swaps and unloads them,
//! and serves their capabilities and the admin API over HTTP.
//!
//! Parts and owners (see docs/ARCHITECTURE.md): `loader` (the only unsafe code: dlopen,
//! checks, dlclose), `exec` (the threads plugin code runs on), `registry` (the one thread that
//! changes the set of loaded plugins), `dispatch` (routing table and calls), `watcher`
//! (file events to registry commands), `host_api` (what plugins can ask of the host),
//! `api` (HTTP), `config` (flags).

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod distribute;
pub mod error;
pub mod exec;
pub mod host_api;
pub mod isolation;
pub mod loader;
pub mod logs;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod registry;
pub mod state;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod validate;
pub mod watcher;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web::Data, App, HttpServer};
use anyhow::Context as _;

pub use config::Config;

/// The host's parts, started but not serving HTTP: the store, the registry thread, the watcher
/// and the telemetry sampler. `run` puts an HTTP server in front; benchmarks and embedders
/// can mount `api::configure` on their own `App` with `state`.
pub struct Core {
    pub state: Data<api::AppState>,
    pub plugins_dir: std::path::PathBuf,
    registry_thread: std::thread::JoinHandle<()>,
    watcher: watcher::PluginWatcher,
    /// On PostgreSQL: the listener applying changes other hosts make (`sync`).
    sync: Option<sync::SyncHandle>,
    /// On PostgreSQL: plugin files shared through the database (`distribute`).
    distribute: Option<distribute::Distributor>,
    /// Deletes old events and changes (`store::Pruner`); none when everything is kept.
    pruner: Option<store::Pruner>,
}

impl Core {
    /// Start everything but HTTP. Must be called on an actix (tokio) runtime.
    pub fn start(config: &Config) -> anyhow::Result<Core> {
        let data_dir = config.data_dir();
        let plugins_dir = config.plugins_dir();
        let models_dir = config.models_dir();
        let shadow_dir = data_dir.join("shadow");
        for dir in [&data_dir, &plugins_dir, &shadow_dir, &models_dir] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Shadow copies of a previous run are never in use now.
        if let Ok(entries) = std::fs::read_dir(&shadow_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }

        let database = config.database().map_err(anyhow::Error::msg)?;
        let store = Arc::new(store::Store::connect(&database)?);
        tracing::info!(database = %database, "store opened");
        // The version this host's state is read at: `sync` applies what changes after it (and
        // what commits late below it).
        let version = sync::start_version(&store)?;
        // The auth provider's keys are shared state: its writes are changes other hosts apply.
        store.record_kv_changes_of(&config.auth_provider);
        store.add_event(
            None,
            "host_started",
            "host",
            serde_json::json!({ "pid": std::process::id() }),
        )?;
        let pruner = store::Pruner::start(store.clone(), config.retention())
            .context("cannot start the pruning of events and changes")?;
        let routing = Arc::new(dispatch::Routing::default());
        routing.watch_provider(&config.auth_provider);
        let logs = Arc::new(logs::LogHub::default());
        // Before the watcher's first scan: the folder catches up with the deployments.
        let (distributor, distribute_hook) = match &database {
            store::Database::Postgres(_) => {
                let (d, hook) = distribute::Distributor::start(
                    store.clone(),
                    &plugins_dir,
                    &data_dir.join("distribute"),
                    logs.clone(),
                )
                .context("cannot start plugin distribution")?;
                (Some(d), Some(hook))
            }
            store::Database::Sqlite(_) => (None, None),
        };
        let control_timeout = Duration::from_millis(config.control_timeout_ms);
        let settings = registry::Settings {
            shadow_dir,
            plugin_data_dir: data_dir.join("plugin-data"),
            models_dir: models_dir.clone(),
            limits: exec::Limits {
                workers: config.plugin_workers.max(1),
                queue_depth: config.queue_depth.max(1),
                queue_bytes: config.queue_bytes.max(1),
                call_timeout: config.call_timeout(),
                control_timeout,
            },
            drain_timeout: Duration::from_millis(config.drain_timeout_ms),
            control_timeout,
            process_limits: isolation::child::RLimits {
                address_space: config.process_max_memory_mb.map(|mb| mb.saturating_mul(1 << 20)),
                open_files: config.process_max_open_files,
                processes: config.process_max_processes,
            },
            distribute: distribute_hook.clone(),
        };
        let (registry, registry_thread) =
            registry::spawn(settings, store.clone(), logs.clone(), routing.clone())?;

        let telemetry = Arc::new(telemetry::Telemetry::default());
        let metrics = metrics::Sources {
            routing: routing.clone(),
            registry: registry.clone(),
            logs: logs.clone(),
            telemetry: telemetry.clone(),
        };
        actix_web::rt::spawn(telemetry.clone().run(routing.clone()));
        let env_key = std::env::var("BKG_ADMIN_KEY").ok();
        let (auth, generated_key) =
            auth::Auth::init(&store, env_key.as_deref(), &config.auth_provider)?;
        if let Some(key) = generated_key {
            // Printed once: only its hash is stored.
            println!("bkg admin key (shown once, keep it; only its hash is stored): {key}");
        }
        let models = models::Models::open(
            models::Settings {
                dir: models_dir.clone(),
                endpoint: config.hub_endpoint(),
                retries: config.hub_retries,
                token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
            },
            store.clone(),
            logs.clone(),
        )
        .with_context(|| format!("cannot open the models folder {}", models_dir.display()))?;
        let exe = std::env::current_exe().ok();
        let ui_dir = api::ui::locate(config.ui_dir.as_deref(), exe.as_deref());
        match &ui_dir {
            Some(dir) => tracing::info!("admin UI from {}", dir.display()),
            None => tracing::info!("no admin UI (--ui-dir, or a folder `ui` beside the binary)"),
        }
        let state = Data::new(api::AppState {
            registry: registry.clone(),
            routing,
            store,
            logs,
            telemetry,
            metrics,
            auth: Arc::new(auth),
            models: Arc::new(models),
            plugins_dir: plugins_dir.clone(),
            ui_dir,
            limits: config.body_limits(),
        });
        let watcher = watcher::watch(
            &plugins_dir,
            registry,
            watcher::WatchSettings {
                settle: Duration::from_millis(config.settle_ms),
                ..Default::default()
            },
        )
        .with_context(|| format!("cannot watch {}", plugins_dir.display()))?;
        let sync = match &database {
            store::Database::Postgres(url) => Some(
                sync::SyncHandle::start(
                    url,
                    state.store.clone(),
                    version,
                    sync::Targets {
                        registry: state.registry.clone(),
                        auth: state.auth.clone(),
                        distribute: distribute_hook,
                    },
                )
                .context("cannot start the change listener")?,
            ),
            store::Database::Sqlite(_) => None,
        };
        tracing::info!(plugins_dir = %plugins_dir.display(), data_dir = %data_dir.display(), "bkg started");
        Ok(Core {
            state,
            plugins_dir,
            registry_thread,
            watcher,
            sync,
            distribute: distributor,
            pruner,
        })
    }

    /// Stop watching, then drain, stop and unload every plugin.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: unloading plugins");
        drop(self.watcher);
        drop(self.pruner);
        // The change listener first: nothing it applies lands on a registry going away.
        drop(self.sync);
        self.state.registry.shutdown().await;
        let _ = self.registry_thread.join();
        drop(self.distribute);
        tracing::info!("bkg stopped");
    }
}

/// Run the host until SIGINT/SIGTERM, then drain and unload every plugin.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let core = Core::start(&config)?;
    let state = core.state.clone();
    let limits = state.limits;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(auth::middleware))
            .configure(|cfg| api::configure_with(cfg, limits))
    })
    .on_connect(api::remember_peer)
    .shutdown_timeout(10);
    if let Some(n) = config.http_workers {
        server = server.workers(n.max(1));
    }
    let server = match server.bind(&config.listen) {
        Ok(s) => s,
        Err(e) => {
            core.shutdown().await;
            return Err(e).with_context(|| format!("cannot listen on {}", config.listen));
        }
    };
    for addr in server.addrs() {
        // Tests and scripts read this line to find an ephemeral port.
        println!("bkg listening on http://{addr}");
    }
    // actix stops accepting and finishes in-flight requests on SIGINT/SIGTERM.
    let result = server.run().await;
    core.shutdown().await;
    result.context("http server failed")
}
