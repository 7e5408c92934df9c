//! The registry: ONE thread owns every change to the set of loaded plugins (load, swap,
//! unload, start, stop). Everything else sends it commands and reads the views it publishes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::dispatch::Routing;
use crate::exec::{
    BootError, CallStats, CapabilityInfo, Control, DrainOutcome, HeapRead, Instance, Limits,
    LocalSource, ManifestInfo, PluginSource, RouteInfo,
};
use crate::host_api;
use crate::isolation::child::{self, Conn, RemoteSource, SpawnSpec, Spawned};
use crate::isolation::supervise::{Decision, Supervisor};
use crate::isolation::{
    CrashInfo, EffectiveLimits, IsolationMode, IsolationSetting, IsolationSource, ProcessInfo,
    ProcessLimits,
};
use crate::loader::{self, LoadedLibrary, Residency};
use crate::logs::{Level, LogHub};
use crate::store::{DesiredState, Store};

/// The lifecycle state of a plugin id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    Loading,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// No generation is loaded any more (its file was deleted).
    Unloaded,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastError {
    pub message: String,
    pub file: Option<String>,
    pub at_ms: u64,
}

/// One generation's life, kept for the API (the `unloaded`/`pinned` record).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub generation: u64,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub loaded_at_ms: u64,
    pub retired_at_ms: Option<u64>,
    /// Why it was retired: swapped, removed, replaced or shutdown.
    pub reason: Option<String>,
    /// `unloaded` or `pinned` once retired; absent while it is loaded.
    pub residency: Option<Residency>,
    /// Calls still running (or queued) when a drain deadline passed: at its retirement, and
    /// at stops (through the API, or to apply a config) during its life.
    pub abandoned_calls: usize,
    /// Of the abandoned calls, those that ended once their cancel flag was raised at the
    /// deadline (or were answered `cancelled` before reaching the plugin).
    pub cancelled_calls: usize,
    /// Of the abandoned calls, those still in plugin code after the grace period: the plugin
    /// ignored the cancel flag. Their threads run on, so the generation is `pinned` when it
    /// is retired.
    pub ignored_cancel_calls: usize,
    /// Heap bytes the library still held after its plugin object was dropped and its threads
    /// joined: memory it leaked or keeps in statics, which stays in the process. Absent while
    /// loaded, or when the library does not count its heap.
    pub heap_left_bytes: Option<u64>,
}

/// A file in the plugins folder that provides a plugin id. When several do, the newest (by
/// modification time, ties by name) serves; removing it swaps to the next.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginFile {
    pub file: String,
    pub sha256: String,
    /// Modification time, ms since the epoch.
    pub modified_ms: Option<u64>,
    /// True for the file the loaded generation came from.
    pub serving: bool,
}

/// What the API shows for a plugin id.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub state: PluginState,
    pub generation: u64,
    pub capabilities: Vec<CapabilityInfo>,
    pub routes: Vec<RouteInfo>,
    pub route_prefix: Option<String>,
    pub config_schema: Option<serde_json::Value>,
    /// The file the loaded generation came from (the serving one of `files`).
    pub file: Option<String>,
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    /// Every file in the plugins folder that provides this id, newest first.
    pub files: Vec<PluginFile>,
    pub loaded_at_ms: Option<u64>,
    /// When the loaded generation last started (unix ms; none while stopped): what a
    /// card's uptime counts from.
    pub started_at_ms: Option<u64>,
    pub last_error: Option<LastError>,
    /// Set when no generation is loaded (`state` is `unloaded`): whether the last one's
    /// library left memory (`unloaded`) or is still mapped until the host exits (`pinned`).
    pub residency: Option<Residency>,
    pub history: Vec<HistoryEntry>,
    /// Where the plugin's code runs: the operator's choice (`POST
    /// /api/core/plugins/{id}/isolation`, persisted) if the operator made one, else the mode
    /// its library suggests (`isolation_suggested`), else `in_process`.
    pub isolation: IsolationMode,
    /// The mode the serving file's library suggests (`export_plugin!(.., isolation =
    /// process)`), read from the file without running it; null when it suggests none.
    pub isolation_suggested: Option<IsolationMode>,
    /// Where `isolation` comes from: `operator`, `plugin` (its suggestion) or `default`.
    pub isolation_source: IsolationSource,
    /// The limits the plugin's child process runs under in process mode (memory, open files,
    /// processes, call deadline), each the operator's or the host's default.
    pub isolation_limits: EffectiveLimits,
    /// The child process serving the plugin in `process` mode (pid, restarts, crash loop,
    /// last crash); absent in `in_process` mode.
    pub process: Option<ProcessInfo>,
}

/// Lifecycle operations the API asks for.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("plugin '{0}' is not loaded")]
    NotLoaded(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Rejected(String),
    #[error("the registry is not running")]
    Gone,
}

pub type Reply<T> = oneshot::Sender<Result<T, RegistryError>>;

/// The answer to a config change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configured {
    /// The stored config's version.
    pub version: i64,
    /// False when the config equalled the stored one: nothing was applied or stored.
    pub changed: bool,
}

pub enum Command {
    /// A complete file is in the plugins folder: load it, or hot-swap its plugin.
    FileReady(PathBuf),
    /// A file left the plugins folder: unload what it provided.
    FileRemoved(PathBuf),
    /// The initial scan is done.
    Ready,
    Lifecycle {
        id: String,
        action: Action,
        /// Who asked, for the event log (`key:<id>`).
        actor: String,
        reply: Reply<PluginView>,
    },
    /// Apply a (validated) config to a plugin and persist it; answers the config version
    /// (a config equal to the stored one is neither applied nor stored again).
    Configure {
        id: String,
        config: serde_json::Value,
        actor: String,
        reply: Reply<Configured>,
    },
    /// Another host sharing the database stored a new config for the plugin (`crate::sync`):
    /// apply the stored config to the loaded generation, storing nothing; answers whether a
    /// generation was loaded to apply it to.
    ApplyStoredConfig {
        id: String,
        reply: Reply<bool>,
    },
    /// Run the plugin in the host or in a child process: store the mode, and load the
    /// serving file again in it when it changed and a generation is loaded (a swap).
    SetIsolation {
        id: String,
        mode: IsolationMode,
        /// New limits for process mode (`None`: keep the stored ones).
        limits: Option<ProcessLimits>,
        actor: String,
        reply: Reply<PluginView>,
    },
    /// The child process of a process-mode generation died without being asked to.
    ChildExited {
        id: String,
        generation: u64,
        crash: CrashInfo,
    },
    /// The restart delay after a crash of `generation`'s child ran out: start a new child.
    RestartChild {
        id: String,
        generation: u64,
    },
    Shutdown(oneshot::Sender<()>),
}

/// Tunables of the registry.
#[derive(Debug, Clone)]
pub struct Settings {
    pub shadow_dir: PathBuf,
    pub plugin_data_dir: PathBuf,
    /// The models folder plugins are told about (`Host::models_dir`).
    pub models_dir: PathBuf,
    pub limits: Limits,
    pub drain_timeout: Duration,
    pub control_timeout: Duration,
    /// Resource limits every plugin child process sets on itself (process mode).
    pub process_limits: child::RLimits,
    /// Told what was loaded and what was removed (several hosts on PostgreSQL: `distribute`).
    pub distribute: Option<crate::distribute::Hook>,
}

/// Lifetime counters of the registry, for metrics.
#[derive(Debug, Default)]
pub struct RegistryCounters {
    pub loads: AtomicU64,
    pub load_failures: AtomicU64,
    pub unloaded: AtomicU64,
    pub pinned: AtomicU64,
}

/// The cheap, cloneable handle the rest of the host uses.
#[derive(Clone)]
pub struct RegistryHandle {
    tx: Sender<Command>,
    views: Arc<RwLock<BTreeMap<String, PluginView>>>,
    ready: Arc<AtomicBool>,
    counters: Arc<RegistryCounters>,
}

impl RegistryHandle {
    pub fn send(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
    }

    pub fn views(&self) -> Vec<PluginView> {
        self.views.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn view(&self, id: &str) -> Option<PluginView> {
        self.views.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn counters(&self) -> &RegistryCounters {
        &self.counters
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub async fn lifecycle(
        &self,
        id: &str,
        action: Action,
        actor: &str,
    ) -> Result<PluginView, RegistryError> {
        let (reply, rx) = oneshot::channel();
        let command =
            Command::Lifecycle { id: id.to_string(), action, actor: actor.to_string(), reply };
        if !self.send(command) {
            return Err(RegistryError::Gone);
        }
        rx.await.unwrap_or(Err(RegistryError::Gone))
    }

    pub async fn configure(
        &self,
        id: &str,
        config: serde_json::Value,
        actor: &str,
    ) -> Result<Configured, RegistryError> {
        let (reply, rx) = oneshot::channel();
        let command =
            Command::Configure { id: id.to_string(), config, actor: actor.to_string(), reply };
        if !self.send(command) {
            return Err(RegistryError::Gone);
        }
        rx.await.unwrap_or(Err(RegistryError::Gone))
    }

    /// Apply the config the store holds for `id` (changed by another host) to its loaded
    /// generation without storing it again; `Ok(false)` when no generation is loaded (its
    /// next load reads the store).
    pub async fn apply_stored_config(&self, id: &str) -> Result<bool, RegistryError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::ApplyStoredConfig { id: id.to_string(), reply }) {
            return Err(RegistryError::Gone);
        }
        rx.await.unwrap_or(Err(RegistryError::Gone))
    }

    pub async fn set_isolation(
        &self,
        id: &str,
        mode: IsolationMode,
        limits: Option<ProcessLimits>,
        actor: &str,
    ) -> Result<PluginView, RegistryError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::SetIsolation {
            id: id.to_string(),
            mode,
            limits,
            actor: actor.to_string(),
            reply,
        };
        if !self.send(command) {
            return Err(RegistryError::Gone);
        }
        rx.await.unwrap_or(Err(RegistryError::Gone))
    }

    /// Unload everything and stop the registry thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(tx)) {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
impl RegistryHandle {
    /// A handle with no registry behind it: its commands land in the returned receiver (for
    /// unit tests of what sends them).
    pub(crate) fn detached() -> (RegistryHandle, Receiver<Command>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = RegistryHandle {
            tx,
            views: Arc::default(),
            ready: Arc::default(),
            counters: Arc::default(),
        };
        (handle, rx)
    }
}

struct Generation {
    instance: Arc<Instance>,
    library: Code,
    started: bool,
    /// When it last started (unix ms); none while stopped.
    started_at_ms: Option<u64>,
}

/// Where a generation's code was loaded: the file it came from and, in this process, the
/// opened library, or in process mode the child process serving the staged copy.
struct Code {
    source: PathBuf,
    /// See [`Code::sha256`].
    sha256: std::cell::OnceCell<String>,
    size: u64,
    kind: CodeKind,
}

enum CodeKind {
    Library(LoadedLibrary),
    Child { conn: Arc<Conn>, shadow: PathBuf },
}

impl Code {
    fn library(library: LoadedLibrary) -> Code {
        Code {
            source: library.source.clone(),
            sha256: library.sha256.clone().map(Into::into).unwrap_or_default(),
            size: library.size,
            kind: CodeKind::Library(library),
        }
    }

    /// The SHA-256 of the loaded copy. A swap's copy is not hashed on its path (about 0.5 ms
    /// per MiB): it is hashed here, from the shadow copy (which nothing else writes), the first
    /// time it is asked for: right after the switch, or before a decision that needs it; on a
    /// thread of low priority, so the first calls of a new generation come first.
    fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| {
            let (hashed, shadow) = match &self.kind {
                // The copy may lack its unread part yet (`loader::stage`): filled in first.
                CodeKind::Library(library) => (library.fill_and_hash(), &library.shadow),
                CodeKind::Child { shadow, .. } => (loader::hash_file_in_background(shadow), shadow),
            };
            hashed.unwrap_or_else(|e| {
                tracing::warn!(shadow = %shadow.display(), "cannot hash the loaded copy: {e}");
                String::new()
            })
        })
    }

    /// The child serving this generation (process mode).
    fn child(&self) -> Option<&Arc<Conn>> {
        match &self.kind {
            CodeKind::Child { conn, .. } => Some(conn),
            CodeKind::Library(_) => None,
        }
    }

    /// Give up on code whose plugin was never constructed or failed to boot: close the
    /// library (leave it mapped when a thread of it is `hung`), or end the child.
    fn discard(self, hung: bool) {
        match self.kind {
            CodeKind::Library(library) if hung => {
                library.abandon();
            }
            CodeKind::Library(library) => {
                library.close();
            }
            CodeKind::Child { conn, shadow } => {
                conn.end(if hung { Duration::ZERO } else { Duration::from_secs(1) });
                let _ = std::fs::remove_file(shadow);
            }
        }
    }
}

/// A staged file opened for loading: in this process, or by a child that shook hands.
enum Opened {
    Library(LoadedLibrary),
    Child(Spawned, loader::Staged),
}

#[derive(Default)]
struct Slot {
    current: Option<Generation>,
    state: Option<PluginState>,
    last_error: Option<LastError>,
    history: Vec<HistoryEntry>,
    last_generation: u64,
    manifest: Option<Arc<ManifestInfo>>,
    loaded_at_ms: Option<u64>,
    /// Call counters of this id, carried across generations.
    stats: Arc<CallStats>,
    /// The operator's isolation mode (if any) and limits: read from the store when the slot
    /// is made, changed by `on_set_isolation`.
    isolation: IsolationSetting,
    /// The mode the serving generation's library suggests.
    suggested: Option<IsolationMode>,
    /// Restart backoff and the crash loop rule of its children (process mode).
    supervisor: Supervisor,
    /// The last crash of one of its children.
    last_crash: Option<CrashInfo>,
}

const HISTORY_LIMIT: usize = 50;

/// Why a retired generation's library is `pinned`, for its event.
const PINNED_NOTE: &str = "the plugin was retired but its library is still mapped (a thread \
     it started still runs, or one of its calls ignored cancellation): its code and memory \
     stay in the process until the host exits";

/// The event kind of a retired generation: `pinned` when its library is still mapped,
/// `unloaded` otherwise (left memory, or a platform that cannot tell: see the residency).
fn retired_event_kind(residency: Residency) -> &'static str {
    match residency {
        Residency::Pinned => "pinned",
        Residency::Unloaded | Residency::Unknown => "unloaded",
    }
}
const RESERVED_PREFIXES: &[&str] = &["/api", "/ws", "/healthz", "/readyz", "/metrics", "/assets"];

pub use crate::clock::now_ms;

struct Registry {
    settings: Settings,
    store: Arc<Store>,
    logs: Arc<LogHub>,
    counters: Arc<RegistryCounters>,
    routing: Arc<Routing>,
    slots: BTreeMap<String, Slot>,
    /// What each file in the folder provides (or failed to provide). Several files may
    /// provide one id: the newest serves (see [`newest`]).
    files: HashMap<PathBuf, FileRecord>,
    views: Arc<RwLock<BTreeMap<String, PluginView>>>,
    seq: u64,
    /// The registry's own queue: a child's death and a restart's timer come back through it.
    commands: Sender<Command>,
    /// Times the steps of the load in progress (see [`Steps`]).
    steps: Steps,
}

/// Where a load's time goes: each step's duration in microseconds, logged at debug level as
/// one `load steps` line per loaded file (`scripts/`'s swap benchmark reads them). The steps
/// up to `switch` are on a swap's path (from the file handed over to new calls reaching the
/// new generation); the rest (records, the old generation's retirement) come after it.
#[derive(Default)]
struct Steps(std::cell::RefCell<Option<StepLaps>>);

/// When the load began, when the last step ended, and each step's name and microseconds.
type StepLaps = (Instant, Instant, Vec<(&'static str, u64)>);

impl Steps {
    fn begin(&self) {
        let now = Instant::now();
        *self.0.borrow_mut() = Some((now, now, Vec::new()));
    }

    /// Close the step that ran since the previous one.
    fn lap(&self, step: &'static str) {
        if let Some((_, last, laps)) = self.0.borrow_mut().as_mut() {
            let now = Instant::now();
            laps.push((step, now.duration_since(*last).as_micros() as u64));
            *last = now;
        }
    }

    fn clear(&self) {
        self.0.borrow_mut().take();
    }

    /// Log the steps of the load that just ended, and forget them.
    fn report(&self, id: &str, generation: u64) {
        let Some((begun, _, laps)) = self.0.borrow_mut().take() else { return };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let steps: Vec<String> = laps.iter().map(|(s, us)| format!("{s}={us}")).collect();
            tracing::debug!(
                plugin = id,
                generation,
                total_us = begun.elapsed().as_micros() as u64,
                steps = %steps.join(" "),
                "load steps"
            );
        }
    }
}

/// One file in the plugins folder, as the registry last read it.
#[derive(Debug, Clone)]
struct FileRecord {
    /// The plugin id it provides, or (when it failed) the id its failure is recorded under.
    id: String,
    /// Set when it provides `id` (it serves, or would load and stands by); `None` when it
    /// failed to load.
    provides: Option<Provided>,
}

#[derive(Debug, Clone)]
struct Provided {
    sha256: String,
    /// Its size: a file of another size has other content, no hash needed to tell.
    size: u64,
    modified: SystemTime,
}

/// The file that serves among several providing one id: the newest by modification time,
/// ties by name (the greater name).
fn newest<'a>(files: impl Iterator<Item = (&'a Path, SystemTime)>) -> Option<&'a Path> {
    files
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.file_name().cmp(&b.0.file_name())))
        .map(|f| f.0)
}

fn modified_of(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Start the registry thread.
pub fn spawn(
    settings: Settings,
    store: Arc<Store>,
    logs: Arc<LogHub>,
    routing: Arc<Routing>,
) -> std::io::Result<(RegistryHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let views = Arc::new(RwLock::new(BTreeMap::new()));
    let ready = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(RegistryCounters::default());
    let handle = RegistryHandle {
        tx: tx.clone(),
        views: views.clone(),
        ready: ready.clone(),
        counters: counters.clone(),
    };
    let registry = Registry {
        settings,
        store,
        logs,
        counters,
        routing,
        slots: BTreeMap::new(),
        files: HashMap::new(),
        views,
        seq: 0,
        commands: tx,
        steps: Steps::default(),
    };
    let thread = std::thread::Builder::new()
        .name("bkg-registry".into())
        .spawn(move || registry.run(rx, ready))?;
    Ok((handle, thread))
}

/// The operator's stored isolation setting of an id; none (logged) when the store cannot say.
fn stored_isolation(store: &Store, id: &str) -> IsolationSetting {
    store.isolation(id).unwrap_or_else(|e| {
        tracing::warn!(plugin = id, "cannot read the isolation mode, using the default: {e}");
        IsolationSetting::default()
    })
}

/// The isolation mode a staged library suggests, read from the file without running it
/// (`isolation::hint`); a malformed suggestion is none, with a warning naming what is wrong.
fn suggested_mode(staged: &loader::Staged) -> Option<IsolationMode> {
    crate::isolation::hint::read_hint(&staged.shadow).unwrap_or_else(|e| {
        tracing::warn!(
            file = %staged.source.display(),
            "ignoring the library's isolation suggestion (bkg_isolation_hint_v1): {e}"
        );
        None
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// True if one path is a prefix of the other on a segment boundary.
fn prefixes_overlap(a: &str, b: &str) -> bool {
    let under =
        |x: &str, y: &str| x == y || x.strip_prefix(y).is_some_and(|rest| rest.starts_with('/'));
    under(a, b) || under(b, a)
}

fn file_stem_id(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("unknown")
        .trim_start_matches("lib")
        .to_string()
}

impl Registry {
    fn run(mut self, rx: Receiver<Command>, ready: Arc<AtomicBool>) {
        for command in rx.iter() {
            match command {
                Command::FileReady(path) => self.on_file_ready(&path),
                Command::FileRemoved(path) => self.on_file_removed(&path),
                Command::Ready => ready.store(true, Ordering::SeqCst),
                Command::Lifecycle { id, action, actor, reply } => {
                    let result = self.on_lifecycle(&id, action, &actor);
                    let _ = reply.send(result);
                }
                Command::Configure { id, config, actor, reply } => {
                    let result = self.on_configure(&id, config, &actor);
                    let _ = reply.send(result);
                }
                Command::ApplyStoredConfig { id, reply } => {
                    let _ = reply.send(self.on_apply_stored_config(&id));
                }
                Command::SetIsolation { id, mode, limits, actor, reply } => {
                    let result = self.on_set_isolation(&id, mode, limits, &actor);
                    let _ = reply.send(result);
                }
                Command::ChildExited { id, generation, crash } => {
                    self.on_child_exited(&id, generation, crash)
                }
                Command::RestartChild { id, generation } => self.on_restart_child(&id, generation),
                Command::Shutdown(reply) => {
                    ready.store(false, Ordering::SeqCst);
                    self.shutdown();
                    let _ = reply.send(());
                    return;
                }
            }
            self.steps.clear();
            self.publish();
        }
        self.shutdown();
    }

    fn slot(&mut self, id: &str) -> &mut Slot {
        let store = &self.store;
        self.slots
            .entry(id.to_string())
            .or_insert_with(|| Slot { isolation: stored_isolation(store, id), ..Slot::default() })
    }

    /// Append to the persistent event log (a failure to write it is logged, not fatal), and
    /// put a host line into the plugin's live log.
    fn event(&self, plugin: &str, kind: &str, actor: &str, details: serde_json::Value) {
        let level = if kind.ends_with("failed") { Level::Error } else { Level::Info };
        self.logs.push(plugin, level, "host", "lifecycle", &format!("{kind} {details}"));
        if let Err(e) = self.store.add_event(Some(plugin), kind, actor, details) {
            tracing::warn!(plugin, kind, "cannot write event: {e}");
        }
    }

    fn fail(&mut self, id: &str, file: Option<&Path>, message: String) {
        tracing::warn!(plugin = id, file = ?file, "{message}");
        self.counters.load_failures.fetch_add(1, Ordering::Relaxed);
        self.event(
            id,
            "load_failed",
            "watcher",
            serde_json::json!({ "file": file.map(|f| f.display().to_string()), "error": message }),
        );
        let slot = self.slot(id);
        slot.last_error = Some(LastError {
            message,
            file: file.map(|f| f.display().to_string()),
            at_ms: now_ms(),
        });
        if slot.current.is_none() {
            slot.state = Some(PluginState::Failed);
        }
    }

    fn on_file_ready(&mut self, path: &Path) {
        let prior = self.files.get(path).cloned();
        let prior_id = prior.as_ref().map(|r| r.id.clone());
        let fallback_id = prior_id.clone().unwrap_or_else(|| file_stem_id(path));
        let modified = modified_of(path);
        self.seq += 1;
        self.steps.begin();
        // Taken first, so that a file that fails to stage leaves no expectation behind.
        let expected = self.settings.distribute.as_ref().and_then(|d| d.take_expected(path));
        let mut staged = match loader::stage(path, &self.settings.shadow_dir, self.seq) {
            Ok(s) => s,
            Err(e) => {
                self.file_failed(path, &fallback_id);
                return self.fail(&fallback_id, Some(path), e.to_string());
            }
        };
        // A file just fetched from the database (`distribute`): the copy opened must be the
        // bytes checked there (hashed before the switch, for such files only).
        if let Some(expected) = expected {
            let found = staged.hash().map(str::to_string);
            if found.as_deref().ok() != Some(expected.as_str()) {
                let why = match found {
                    Ok(sha256) => format!("its SHA-256 is {sha256}"),
                    Err(e) => e.to_string(),
                };
                staged.discard();
                self.file_failed(path, &fallback_id);
                let message = format!(
                    "refused {}: it was fetched from the database as SHA-256 {expected}, but the \
                     copy opened differs ({why}); the running version keeps serving",
                    path.display()
                );
                return self.fail(&fallback_id, Some(path), message);
            }
        }
        if let Some(prior) = prior {
            let id = prior.id;
            let loaded = self
                .slots
                .get(&id)
                .and_then(|s| s.current.as_ref())
                .filter(|_| self.serves_from(&id, path))
                .map(|g| &g.library);
            // Content can only be the same at the same size: only then is the copy hashed
            // now, on the path (a new build of another size is hashed after its switch).
            let same_size = loaded.is_some_and(|c| c.size == staged.size)
                || prior.provides.as_ref().is_some_and(|p| p.size == staged.size);
            let sha256 = match same_size.then(|| staged.hash()) {
                Some(Ok(sha256)) => Some(sha256.to_string()),
                Some(Err(e)) => {
                    staged.discard();
                    self.file_failed(path, &fallback_id);
                    return self.fail(&fallback_id, Some(path), e.to_string());
                }
                None => None,
            };
            let loaded_same =
                sha256.is_some() && loaded.is_some_and(|c| Some(c.sha256()) == sha256.as_deref());
            let recorded_same =
                sha256.is_some() && prior.provides.is_some_and(|p| Some(p.sha256) == sha256);
            if loaded_same || recorded_same {
                // Same content (touched, or an event for a file already handled): only its
                // time may have changed, and with it which file is the newest.
                let provides =
                    Provided { sha256: sha256.unwrap_or_default(), size: staged.size, modified };
                self.files.insert(
                    path.to_path_buf(),
                    FileRecord { id: id.clone(), provides: Some(provides) },
                );
                let is_newest = newest(self.providers(&id)) == Some(path);
                if loaded_same {
                    tracing::debug!(file = %path.display(), "file unchanged; nothing to do");
                    staged.discard();
                    if !is_newest {
                        // Its time went back: another file is newer now.
                        self.serve_next(&id, None);
                    }
                    return;
                }
                if !is_newest {
                    tracing::debug!(file = %path.display(), "file unchanged; standing by");
                    staged.discard();
                    return;
                }
                // A file standing by that is now the newest: it takes over (below).
            }
        }
        // The id of a new file is known only once its manifest is read: its mode is guessed
        // from what the registry knows of the file (its record, else its name), and `load`
        // loads it again the other way when the manifest's id says otherwise.
        self.steps.lap("stage");
        self.open_and_load(path, modified, staged, prior_id, &fallback_id, None, true);
    }

    /// The operator's isolation setting of `id` (the store's answer for an id without a slot).
    fn setting_of(&self, id: &str) -> IsolationSetting {
        self.slots.get(id).map(|s| s.isolation).unwrap_or_else(|| stored_isolation(&self.store, id))
    }

    /// Where `id`'s code runs when loaded from a file that suggests `suggested`.
    fn mode_of(&self, id: &str, suggested: Option<IsolationMode>) -> IsolationMode {
        self.setting_of(id).effective(suggested).0
    }

    /// The host's own limits for children (`--process-max-*`, `--call-timeout-ms`).
    fn host_limits(&self) -> ProcessLimits {
        let r = self.settings.process_limits;
        ProcessLimits {
            memory_mb: r.address_space.map(|bytes| bytes >> 20),
            open_files: r.open_files,
            processes: r.processes,
            call_deadline_ms: Some(self.settings.limits.call_timeout.as_millis() as u64),
        }
    }

    /// The limits `id`'s child runs under: the operator's over the host's.
    fn limits_of(&self, id: &str) -> EffectiveLimits {
        EffectiveLimits::merge(&self.setting_of(id).limits, &self.host_limits())
    }

    /// Open a staged file (dlopen here, or a child process on it) and load it: in `mode`, or
    /// when none is given, in the mode of `fallback_id` (the operator's, else the file's
    /// suggestion, else in the host).
    #[allow(clippy::too_many_arguments)]
    fn open_and_load(
        &mut self,
        path: &Path,
        modified: SystemTime,
        mut staged: loader::Staged,
        prior_id: Option<String>,
        fallback_id: &str,
        mode: Option<IsolationMode>,
        may_switch_mode: bool,
    ) {
        let suggested = suggested_mode(&staged);
        let mode = mode.unwrap_or_else(|| self.mode_of(fallback_id, suggested));
        let opened = match mode {
            IsolationMode::InProcess => match LoadedLibrary::open_staged(staged) {
                Ok(lib) => Opened::Library(lib),
                Err(e) => {
                    self.file_failed(path, fallback_id);
                    return self.fail(fallback_id, Some(path), e.to_string());
                }
            },
            // The child opens the copy by its path: it must be whole.
            IsolationMode::Process => match staged
                .fill()
                .map_err(|e| e.to_string())
                .and_then(|()| self.spawn_child(&staged, fallback_id))
            {
                Ok(spawned) => Opened::Child(spawned, staged),
                Err(e) => {
                    staged.discard();
                    self.file_failed(path, fallback_id);
                    return self.fail(
                        fallback_id,
                        Some(path),
                        format!("cannot start the plugin's process: {e}"),
                    );
                }
            },
        };
        self.steps.lap("open");
        self.load(path, modified, opened, prior_id, fallback_id, suggested, may_switch_mode);
    }

    /// Start `bkg plugin-runner` on a staged copy; its stderr goes to the plugin's log.
    fn spawn_child(&self, staged: &loader::Staged, id_guess: &str) -> Result<Spawned, String> {
        // The runner is this binary; a host embedded elsewhere (a benchmark) names it.
        let exe = match std::env::var_os("BKG_RUNNER_EXE") {
            Some(exe) => PathBuf::from(exe),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find the host's own binary: {e}"))?,
        };
        let spec = SpawnSpec {
            exe,
            library: staged.shadow.clone(),
            plugin_dir: self.settings.plugin_data_dir.clone(),
            models_dir: self.settings.models_dir.clone(),
            handshake_timeout: self.settings.control_timeout,
            rlimits: self.limits_of(id_guess).rlimits(),
        };
        let label: Arc<std::sync::OnceLock<String>> = Arc::default();
        let (logs, guess, named) = (self.logs.clone(), id_guess.to_string(), label.clone());
        let on_line = Arc::new(move |line: &str| {
            let id = named.get().unwrap_or(&guess);
            logs.push(id, Level::Warn, "plugin", "stderr", line);
        });
        let spawned = child::spawn(&spec, on_line).map_err(|e| e.0)?;
        let _ = label.set(spawned.manifest.id.clone());
        tracing::info!(plugin = %spawned.manifest.id, pid = spawned.conn.pid(), "plugin process started");
        Ok(spawned)
    }

    /// Validate a manifest against the rest of the host. Runs before the plugin is constructed.
    fn check_manifest(&self, m: &ManifestInfo) -> Result<(), String> {
        if !valid_id(&m.id) {
            return Err(format!("invalid plugin id '{}': use 1-64 of a-z, 0-9, '-' and '_'", m.id));
        }
        for c in &m.capabilities {
            if c.name.is_empty() || c.name.contains('/') {
                return Err(format!("invalid capability name '{}'", c.name));
            }
        }
        for r in &m.routes {
            if !r.path.starts_with('/') {
                return Err(format!("route path '{}' must start with '/'", r.path));
            }
        }
        if let Some(prefix) = &m.route_prefix {
            if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
                return Err(format!("route prefix '{prefix}' must look like '/name'"));
            }
            if let Some(r) = RESERVED_PREFIXES.iter().find(|r| prefixes_overlap(prefix, r)) {
                return Err(format!("route prefix '{prefix}' overlaps the host's own '{r}'"));
            }
            if let Some((other, owner)) = self
                .routing
                .prefixes_except(&m.id)
                .into_iter()
                .find(|(p, _)| prefixes_overlap(prefix, p))
            {
                return Err(format!(
                    "route prefix '{prefix}' overlaps '{other}', already claimed by plugin '{owner}'"
                ));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        path: &Path,
        modified: SystemTime,
        opened: Opened,
        prior_id: Option<String>,
        fallback_id: &str,
        suggested: Option<IsolationMode>,
        may_switch_mode: bool,
    ) {
        let mut chosen: Option<(String, u64)> = None;
        let mut standby: Option<String> = None;
        // The mode (and id) to load the file again with, when the manifest's id says so.
        let mut other_mode: Option<(IsolationMode, String)> = None;
        let limits = self.settings.limits.clone();
        let thread_prefix = format!("bkg-p{}", self.seq);
        let (source, heap, library, mode): (Box<dyn PluginSource>, Arc<dyn HeapRead>, Code, _) =
            match opened {
                Opened::Library(library) => (
                    Box::new(LocalSource(library.module())),
                    library.heap(),
                    Code::library(library),
                    IsolationMode::InProcess,
                ),
                Opened::Child(spawned, staged) => {
                    let workers = crate::exec::worker_count(&spawned.manifest, &limits);
                    let conn = spawned.conn.clone();
                    let source = RemoteSource::new(
                        spawned.conn,
                        spawned.manifest,
                        workers,
                        self.settings.control_timeout,
                    );
                    let code = Code {
                        source: staged.source,
                        sha256: staged.sha256.map(Into::into).unwrap_or_default(),
                        size: staged.size,
                        kind: CodeKind::Child { conn: conn.clone(), shadow: staged.shadow },
                    };
                    (Box::new(source), conn, code, IsolationMode::Process)
                }
            };
        // In process mode a call past the plugin's call deadline is answered 504 and
        // cancelled; the child running it the cancel grace later is killed (`RemotePlugin`).
        let mut limits = limits;
        if mode == IsolationMode::Process {
            if let Some(ms) = self.limits_of(fallback_id).call_deadline_ms.value {
                limits.call_timeout = Duration::from_millis(ms);
            }
        }
        let booted = Instance::boot(source, heap, &limits, &thread_prefix, |m| {
            self.steps.lap("manifest");
            self.check_manifest(m)?;
            // Another file in the folder provides this id and is newer: it keeps serving,
            // this one stands by (the plugin is not constructed).
            let others = self.providers(&m.id).filter(|(p, _)| *p != path);
            if newest(others.chain(std::iter::once((path, modified)))) != Some(path) {
                standby = Some(m.id.clone());
                return Err(format!("a newer file provides '{}'", m.id));
            }
            // The mode was guessed before the id was known: the id's own may differ (and in
            // process mode the child's limits are the id's own).
            let wanted = self.mode_of(&m.id, suggested);
            let other_limits = wanted == IsolationMode::Process
                && m.id != fallback_id
                && self.limits_of(&m.id) != self.limits_of(fallback_id);
            if wanted != mode || other_limits {
                other_mode = Some((wanted, m.id.clone()));
                return Err(format!("plugin '{}' runs {}", m.id, wanted.as_str()));
            }
            let generation = self.slots.get(&m.id).map_or(0, |s| s.last_generation) + 1;
            let data_dir = self.settings.plugin_data_dir.join(&m.id);
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
            chosen = Some((m.id.clone(), generation));
            let handle = host_api::handle(
                &m.id,
                data_dir,
                self.settings.models_dir.clone(),
                Arc::downgrade(&self.routing),
                self.logs.clone(),
                self.store.clone(),
            );
            let stats = self.slots.get(&m.id).map(|s| s.stats.clone()).unwrap_or_default();
            self.steps.lap("decide");
            Ok((handle, generation, stats))
        });
        self.steps.lap("construct");
        let instance = match booted {
            // Refused by the decision above: the worker thread is joined, nothing was built.
            Err(_) if standby.is_some() => {
                let id = standby.unwrap_or_default();
                let provides =
                    Provided { sha256: library.sha256().to_string(), size: library.size, modified };
                library.discard(false);
                return self.stand_by(path, &id, provides, prior_id);
            }
            // The id runs in the other mode: load the file again that way (once).
            Err(e) if other_mode.is_some() => {
                library.discard(false);
                let (wanted, id) = other_mode.unwrap_or_default();
                if !may_switch_mode {
                    self.file_failed(path, fallback_id);
                    return self.fail(fallback_id, Some(path), format!("load failed: {e}"));
                }
                tracing::info!(file = %path.display(), mode = wanted.as_str(), "loading the file again in its plugin's mode");
                self.seq += 1;
                let staged = match loader::stage(path, &self.settings.shadow_dir, self.seq) {
                    Ok(s) => s,
                    Err(e) => {
                        self.file_failed(path, fallback_id);
                        return self.fail(fallback_id, Some(path), e.to_string());
                    }
                };
                return self.open_and_load(
                    path,
                    modified,
                    staged,
                    prior_id,
                    &id,
                    Some(wanted),
                    false,
                );
            }
            Ok(i) => i,
            Err(e) => {
                let id = chosen.map(|c| c.0).unwrap_or_else(|| fallback_id.to_string());
                library.discard(matches!(e, BootError::Hung(_)));
                self.file_failed(path, &id);
                return self.fail(&id, Some(path), format!("load failed: {e}"));
            }
        };
        let id = instance.id().to_string();
        let generation = instance.generation;
        let control_timeout = self.settings.control_timeout;

        // A file that used to provide another id now provides this one: drop the old id's
        // failure record if it was only a placeholder.
        if let Some(old) = prior_id.filter(|old| old != &id) {
            // Recorded under the new id first, so the old id's other files can take over.
            self.file_failed(path, &id);
            self.retire_file_owner(&old, path, "replaced");
        }

        // The stored config is applied before the plugin starts; a plugin that rejects it does
        // not replace a running generation.
        let record = match self.store.plugin(&id) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(plugin = %id, "cannot read the stored record: {e}");
                None
            }
        };
        self.steps.lap("read_record");
        if let Some(config) = record.as_ref().and_then(|r| r.config.as_ref()) {
            if let Err(f) =
                instance.control(Control::Configure(config.to_string()), control_timeout)
            {
                self.dispose(&instance, library);
                self.file_failed(path, &id);
                return self.fail(
                    &id,
                    Some(path),
                    format!("stored config rejected: {}", f.message),
                );
            }
        }
        // A plugin an operator stopped stays stopped, across swaps and host restarts.
        let want_running = record.is_none_or(|r| r.desired_state == DesiredState::Running);
        let slot = self.slot(&id);
        if slot.current.is_none() {
            slot.state = Some(PluginState::Loading);
            // Show `loading` while a slow start (a model load, say) runs.
            self.publish();
        }
        self.steps.lap("configure");
        let mut started = false;
        if want_running {
            if let Err(f) = instance.control(Control::Start, control_timeout) {
                self.dispose(&instance, library);
                self.file_failed(path, &id);
                return self.fail(&id, Some(path), format!("start failed: {}", f.message));
            }
            instance.open();
            started = true;
        }
        self.steps.lap("start");
        // Switch routing: from here on new calls go to the new generation.
        self.routing.install(instance.clone());
        self.steps.lap("switch");
        // Off the swap's path now: the copy's hash, unless it was needed before.
        let sha256 = library.sha256().to_string();
        self.steps.lap("hash");
        let entry = HistoryEntry {
            generation,
            version: instance.manifest.version.clone(),
            file: path.display().to_string(),
            sha256: sha256.clone(),
            loaded_at_ms: now_ms(),
            retired_at_ms: None,
            reason: None,
            residency: None,
            abandoned_calls: 0,
            cancelled_calls: 0,
            ignored_cancel_calls: 0,
            heap_left_bytes: None,
        };
        let provides = Provided { sha256: sha256.clone(), size: library.size, modified };
        self.files
            .insert(path.to_path_buf(), FileRecord { id: id.clone(), provides: Some(provides) });
        let slot = self.slot(&id);
        slot.manifest = Some(instance.manifest.clone());
        slot.suggested = suggested;
        slot.stats = instance.stats().clone();
        slot.last_generation = generation;
        slot.loaded_at_ms = Some(entry.loaded_at_ms);
        slot.last_error = None;
        slot.state = Some(if started { PluginState::Running } else { PluginState::Stopped });
        slot.history.push(entry);
        if slot.history.len() > HISTORY_LIMIT {
            slot.history.remove(0);
        }
        let version = instance.manifest.version.clone();
        let started_at_ms = started.then(now_ms);
        let commands = self.commands.clone();
        let slot = self.slot(&id);
        if let Some(conn) = library.child() {
            slot.supervisor.on_started(Instant::now());
            // Its death comes back to this thread as a command.
            let (tx, id, pid) = (commands, id.clone(), conn.pid());
            conn.on_exit(move |crash| {
                tracing::warn!(plugin = %id, pid, generation, "{}", crash.message);
                let _ = tx.send(Command::ChildExited { id, generation, crash });
            });
        }
        let old = slot.current.replace(Generation { instance, library, started, started_at_ms });
        tracing::info!(plugin = %id, generation, file = %path.display(), swapped = old.is_some(), "plugin loaded");
        if old.as_ref().and_then(|g| g.library.child()).is_some_and(|c| c.is_dead()) {
            // A restart after a crash: the view says it serves again (state, new pid) as
            // soon as it does, not only once the dead generation's records are written.
            self.publish();
        }
        let file = path.display().to_string();
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store.record_loaded(&id, &file, &sha256, &version) {
            tracing::warn!(plugin = %id, "cannot record the load: {e}");
        }
        if let Some(hook) = &self.settings.distribute {
            // A send: publishing happens on the distribution thread.
            hook.loaded(path, &sha256);
        }
        self.steps.lap("record_loaded");
        self.event(
            &id,
            if old.is_some() { "swapped" } else { "loaded" },
            "watcher",
            serde_json::json!({
                "generation": generation, "version": version, "file": file,
                "sha256": sha256, "started": started,
            }),
        );
        self.steps.lap("event");
        if let Some(old) = old {
            self.retire(&id, old, "swapped");
            self.steps.lap("retire");
        }
        self.steps.report(&id, generation);
    }

    /// Stop an instance's threads and close its library, or leave the library in memory
    /// when a thread is stuck in plugin code.
    /// Also returns the heap bytes the library still held once its plugin object was dropped
    /// and its threads joined (what it leaked, or keeps in statics), where it counts them.
    /// In process mode: the workers are joined (one waiting on a stuck child is freed when
    /// the child ends), then the child is asked to exit (`Shutdown`, SIGKILL after the
    /// control timeout): its process is gone, a real unload.
    fn dispose(&self, instance: &Instance, code: Code) -> (Residency, Option<u64>) {
        match code.kind {
            CodeKind::Library(library) => {
                if instance.shutdown(self.settings.control_timeout) {
                    let heap_left = library.heap().bytes();
                    (library.close(), heap_left)
                } else {
                    (library.abandon(), None)
                }
            }
            CodeKind::Child { conn, shadow } => {
                let joined = instance.shutdown(self.settings.control_timeout);
                conn.end(self.settings.control_timeout);
                if !joined {
                    tracing::warn!(
                        pid = conn.pid(),
                        "a worker waited on the plugin's process until it ended"
                    );
                }
                let _ = std::fs::remove_file(&shadow);
                let residency =
                    if conn.is_dead() { Residency::Unloaded } else { Residency::Unknown };
                (residency, None)
            }
        }
    }

    /// `path` no longer provides `id` (it was removed, or now holds something else). If what
    /// `id` runs came from it, swap to the newest other file that provides `id`, or unload it
    /// when no other file can take over. A failure record no file claims any more is dropped.
    fn retire_file_owner(&mut self, id: &str, path: &Path, reason: &str) {
        if self.serves_from(id, path) {
            if self.serve_next(id, Some(path)) {
                return;
            }
            self.routing.remove(id);
            if let Some(old) = self.slot(id).current.take() {
                self.retire(id, old, reason);
            }
            self.slot(id).state = Some(PluginState::Unloaded);
        } else if self.slots.get(id).is_some_and(|s| s.current.is_none())
            && !self.files.iter().any(|(p, r)| r.id == id && p != path)
        {
            self.slots.remove(id);
        }
    }

    /// True if the generation `id` runs was loaded from `path`.
    fn serves_from(&self, id: &str, path: &Path) -> bool {
        self.slots
            .get(id)
            .and_then(|s| s.current.as_ref())
            .is_some_and(|g| g.library.source == path)
    }

    /// The files that provide `id`, with their modification times.
    fn providers<'a>(&'a self, id: &'a str) -> impl Iterator<Item = (&'a Path, SystemTime)> + 'a {
        self.files
            .iter()
            .filter(move |(_, r)| r.id == id)
            .filter_map(|(p, r)| r.provides.as_ref().map(|v| (p.as_path(), v.modified)))
    }

    /// Record that `path` failed to provide anything; its failure is shown under `id`.
    fn file_failed(&mut self, path: &Path, id: &str) {
        self.files.insert(path.to_path_buf(), FileRecord { id: id.to_string(), provides: None });
    }

    /// `path` provides `id` but another file is newer: record it; it serves once the newer
    /// ones are gone. Nothing of it stays loaded.
    fn stand_by(&mut self, path: &Path, id: &str, provides: Provided, prior_id: Option<String>) {
        let sha256 = provides.sha256.clone();
        self.files.insert(
            path.to_path_buf(),
            FileRecord { id: id.to_string(), provides: Some(provides) },
        );
        tracing::info!(plugin = id, file = %path.display(), "a newer file provides the plugin; this one stands by");
        self.event(
            id,
            "standby",
            "watcher",
            serde_json::json!({ "file": path.display().to_string(), "sha256": sha256 }),
        );
        if let Some(old) = prior_id.filter(|old| old != id) {
            self.retire_file_owner(&old, path, "replaced");
        }
        // The serving file was rewritten with content older than another file's.
        if self.serves_from(id, path) {
            self.serve_next(id, None);
        }
    }

    /// Load the newest file other than `except` that provides `id` (a swap: the running
    /// generation serves until the new one is installed). Tries the next one when a file
    /// fails; true once a file other than `except` serves, or `except` is `None` and the
    /// serving file is among the newest that loads.
    fn serve_next(&mut self, id: &str, except: Option<&Path>) -> bool {
        let mut candidates: Vec<(PathBuf, SystemTime)> = self
            .providers(id)
            .filter(|(p, _)| Some(*p) != except)
            .map(|(p, t)| (p.to_path_buf(), t))
            .collect();
        candidates
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.file_name().cmp(&a.0.file_name())));
        for (candidate, _) in candidates {
            if self.serves_from(id, &candidate) {
                return true;
            }
            tracing::info!(plugin = id, file = %candidate.display(), "next file that provides the plugin takes over");
            self.on_file_ready(&candidate);
            if self.serves_from(id, &candidate) {
                return true;
            }
        }
        false
    }

    /// Drain, stop, join and close one generation, and record whether it left memory.
    fn retire(&mut self, id: &str, old: Generation, reason: &str) {
        let drained = self.drain(id, &old.instance, true);
        if old.started {
            if let Err(f) = old.instance.control(Control::Stop, self.settings.control_timeout) {
                tracing::warn!(plugin = id, "stop failed while retiring: {}", f.message);
            }
        }
        let generation = old.instance.generation;
        let (residency, heap_left_bytes) = self.dispose(&old.instance, old.library);
        drop(old.instance);
        match residency {
            Residency::Pinned => self.counters.pinned.fetch_add(1, Ordering::Relaxed),
            _ => self.counters.unloaded.fetch_add(1, Ordering::Relaxed),
        };
        tracing::info!(
            plugin = id,
            generation,
            ?residency,
            heap_left_bytes,
            reason,
            "plugin generation retired"
        );
        // A library that stayed mapped is never reported `unloaded`: the event says `pinned`
        // and why.
        let (kind, mut details) = (
            retired_event_kind(residency),
            serde_json::json!({
                "generation": generation, "reason": reason,
                "residency": residency, "abandoned_calls": drained.abandoned,
                "cancelled_calls": drained.cancelled,
                "ignored_cancel_calls": drained.ignored,
                "heap_left_bytes": heap_left_bytes,
            }),
        );
        if residency == Residency::Pinned {
            details["note"] = PINNED_NOTE.into();
        }
        self.event(id, kind, if reason == "shutdown" { "host" } else { "watcher" }, details);
        if let Some(entry) =
            self.slot(id).history.iter_mut().rev().find(|h| h.generation == generation)
        {
            entry.retired_at_ms = Some(now_ms());
            entry.reason = Some(reason.to_string());
            entry.residency = Some(residency);
            entry.heap_left_bytes = heap_left_bytes;
        }
    }

    /// Close a generation to calls (retired, or stopped) and drain it: at the deadline its
    /// remaining calls are cancelled and given a grace period (see
    /// [`Instance::close_and_drain`]). The outcome is added to the generation's history entry.
    fn drain(&mut self, id: &str, instance: &Instance, retire: bool) -> DrainOutcome {
        let grace = crate::exec::cancel_grace(self.settings.control_timeout);
        let drained = instance.close_and_drain(retire, self.settings.drain_timeout, grace);
        if drained.abandoned > 0 {
            tracing::warn!(
                plugin = id,
                abandoned = drained.abandoned,
                cancelled = drained.cancelled,
                ignored_cancel = drained.ignored,
                "drain deadline passed with calls still running: cancelled them"
            );
            let generation = instance.generation;
            if let Some(entry) =
                self.slot(id).history.iter_mut().rev().find(|h| h.generation == generation)
            {
                entry.abandoned_calls += drained.abandoned;
                entry.cancelled_calls += drained.cancelled;
                entry.ignored_cancel_calls += drained.ignored;
            }
        }
        drained
    }

    fn on_file_removed(&mut self, path: &Path) {
        if let Some(hook) = &self.settings.distribute {
            hook.removed(path);
        }
        let recorded = self.files.remove(path).map(|r| r.id);
        // What an id runs may come from this file although the file's last content failed
        // or provided another id.
        let mut ids: Vec<String> =
            self.slots.keys().filter(|id| self.serves_from(id, path)).cloned().collect();
        ids.extend(recorded.filter(|id| !ids.contains(id)));
        for id in ids {
            self.retire_file_owner(&id, path, "removed");
        }
    }

    fn on_lifecycle(
        &mut self,
        id: &str,
        action: Action,
        actor: &str,
    ) -> Result<PluginView, RegistryError> {
        let control_timeout = self.settings.control_timeout;
        if matches!(action, Action::Start | Action::Restart) {
            if let Some(view) = self.start_dead_child(id, actor)? {
                return Ok(view);
            }
        }
        let (instance, mut running) = self
            .slots
            .get(id)
            .and_then(|s| s.current.as_ref())
            .map(|g| (g.instance.clone(), g.started))
            .ok_or_else(|| RegistryError::NotLoaded(id.to_string()))?;
        let mut started_now = false;
        let stops = matches!(action, Action::Stop | Action::Restart);
        let starts = matches!(action, Action::Start | Action::Restart);
        let mut result: Result<(), String> = Ok(());
        // What the drain deadline of a stop did to calls still running (zero when it had none).
        let mut drained = DrainOutcome::default();
        if stops && running {
            drained = self.drain(id, &instance, false);
            running = false;
            result = instance
                .control(Control::Stop, control_timeout)
                .map(drop)
                .map_err(|f| format!("stop failed: {}", f.message));
        }
        if result.is_ok() && starts && !running {
            result = instance
                .control(Control::Start, control_timeout)
                .map(drop)
                .map_err(|f| format!("start failed: {}", f.message));
            if result.is_ok() {
                running = true;
                started_now = true;
                instance.open();
            }
        }
        let slot =
            self.slots.get_mut(id).ok_or_else(|| RegistryError::NotLoaded(id.to_string()))?;
        if let Some(g) = slot.current.as_mut() {
            g.started = running;
            if !running {
                g.started_at_ms = None;
            } else if started_now {
                g.started_at_ms = Some(now_ms());
            }
        }
        let kind = match action {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Restart => "restarted",
        };
        let mut details = serde_json::json!({});
        if stops {
            details = serde_json::json!({
                "abandoned_calls": drained.abandoned,
                "cancelled_calls": drained.cancelled,
                "ignored_cancel_calls": drained.ignored,
            });
        }
        match result {
            Ok(()) => {
                slot.state =
                    Some(if running { PluginState::Running } else { PluginState::Stopped });
                slot.last_error = None;
                tracing::info!(plugin = id, ?action, "lifecycle action done");
                let desired = if running { DesiredState::Running } else { DesiredState::Stopped };
                if let Err(e) = self.store.set_desired_state(id, desired) {
                    tracing::warn!(plugin = id, "cannot persist the desired state: {e}");
                }
                self.event(id, kind, actor, details);
            }
            Err(message) => {
                slot.state = Some(PluginState::Failed);
                slot.last_error =
                    Some(LastError { message: message.clone(), file: None, at_ms: now_ms() });
                details["action"] = kind.into();
                details["error"] = message.clone().into();
                self.event(id, "lifecycle_failed", actor, details);
                self.publish();
                return Err(RegistryError::Failed(message));
            }
        }
        self.publish();
        self.view_of(id).ok_or_else(|| RegistryError::NotLoaded(id.to_string()))
    }

    /// An operator's start of a plugin in process mode forgets its crashes (and a crash loop);
    /// when its child is dead (backing off, crashlooping), the serving file is loaded again in
    /// a new child. `None`: nothing done here, the plain start goes on.
    fn start_dead_child(
        &mut self,
        id: &str,
        actor: &str,
    ) -> Result<Option<PluginView>, RegistryError> {
        let Some(slot) = self.slots.get_mut(id) else { return Ok(None) };
        let Some(child) = slot.current.as_ref().and_then(|g| g.library.child()) else {
            return Ok(None);
        };
        let dead = child.is_dead();
        slot.supervisor.reset();
        if !dead {
            return Ok(None);
        }
        if let Err(e) = self.store.set_desired_state(id, DesiredState::Running) {
            tracing::warn!(plugin = id, "cannot persist the desired state: {e}");
        }
        self.reload_serving(id, "start")?;
        self.event(id, "started", actor, serde_json::json!({ "new_process": true }));
        self.publish();
        Ok(self.view_of(id))
    }

    /// Apply a validated config to the loaded generation, then persist it. A config the
    /// plugin rejects is not stored.
    fn on_configure(
        &mut self,
        id: &str,
        config: serde_json::Value,
        actor: &str,
    ) -> Result<Configured, RegistryError> {
        let control_timeout = self.settings.control_timeout;
        let generation = self
            .slots
            .get(id)
            .and_then(|s| s.current.as_ref())
            .ok_or_else(|| RegistryError::NotLoaded(id.to_string()))?;
        let instance = generation.instance.clone();
        let restart = instance.manifest.config_needs_restart && generation.started;
        // What the store holds now: re-applied over this config if the plugin applies it only
        // after its apply timed out (the store would not know it).
        let (stored, stored_version) = match self.store.plugin(id) {
            Ok(record) => record.map_or((None, 0), |r| (r.config, r.config_version)),
            Err(e) => {
                tracing::warn!(plugin = id, "cannot read the stored config: {e}");
                (None, 0)
            }
        };
        // The plugin was configured with the stored config when it loaded (and by every
        // change since): the same config again changes nothing, and is not a new version.
        if stored.as_ref() == Some(&config) {
            tracing::info!(plugin = id, version = stored_version, "config unchanged");
            return Ok(Configured { version: stored_version, changed: false });
        }
        if restart {
            // The plugin applies a config only at start: stop, configure, start again.
            self.drain(id, &instance, false);
            if let Err(f) = instance.control(Control::Stop, control_timeout) {
                tracing::warn!(plugin = id, "stop before reconfiguring failed: {}", f.message);
            }
        }
        let (applied, may_apply_late) = instance.control_or_restore(
            Control::Configure(config.to_string()),
            control_timeout,
            stored.as_ref().map(|c| Control::Configure(c.to_string())),
        );
        let timed_out = matches!(&applied, Err(f) if f.kind == bkg_abi::ffi::ErrorKind::TIMEOUT);
        if may_apply_late && stored.is_none() {
            // Nothing stored to put back if the plugin applies this config late: it must not
            // serve with a config the store does not hold.
            let message = format!(
                "the plugin did not apply the config within {} ms and may still apply it later; \
                 no earlier config is stored to restore, so the plugin is stopped: \
                 reload its file to run it with a known config",
                control_timeout.as_millis()
            );
            self.drain(id, &instance, false);
            return Err(self.fail_running(id, message));
        }
        if restart {
            if let Err(f) = instance.control(Control::Start, control_timeout) {
                let message = format!("restart after reconfiguring failed: {}", f.message);
                return Err(self.fail_running(id, message));
            }
            instance.open();
            if let Some(g) = self.slots.get_mut(id).and_then(|s| s.current.as_mut()) {
                g.started_at_ms = Some(now_ms());
            }
        }
        applied.map_err(|f| {
            if timed_out {
                RegistryError::Failed(format!(
                    "the config was not applied: {}; it is not stored{}",
                    f.message,
                    if may_apply_late {
                        ", and the stored config is re-applied if the plugin applies it late"
                    } else {
                        " (it was not run)"
                    }
                ))
            } else {
                RegistryError::Rejected(format!("the plugin rejected the config: {}", f.message))
            }
        })?;
        let version = self.store.set_config(id, &config, actor).map_err(|e| {
            RegistryError::Failed(format!("the config was applied but not stored: {e}"))
        })?;
        tracing::info!(plugin = id, version, restarted = restart, "config applied and stored");
        self.logs.push(
            id,
            Level::Info,
            "host",
            "config",
            &format!(
                "config version {version} applied{}",
                if restart { " (restarted)" } else { "" }
            ),
        );
        Ok(Configured { version, changed: true })
    }

    /// Another host stored a new config for `id` (issue 16, `crate::sync`): apply the stored
    /// config to the loaded generation (stopping and starting it around the change when its
    /// plugin applies configs only at start), storing nothing. Applying the same config twice
    /// is harmless, so a change seen again is no harm either.
    fn on_apply_stored_config(&mut self, id: &str) -> Result<bool, RegistryError> {
        let control_timeout = self.settings.control_timeout;
        let Some(generation) = self.slots.get(id).and_then(|s| s.current.as_ref()) else {
            return Ok(false);
        };
        let instance = generation.instance.clone();
        let restart = instance.manifest.config_needs_restart && generation.started;
        let record = self
            .store
            .plugin(id)
            .map_err(|e| RegistryError::Failed(format!("cannot read the stored config: {e}")))?;
        let Some(record) = record else { return Ok(true) };
        let Some(config) = record.config else { return Ok(true) };
        if restart {
            self.drain(id, &instance, false);
            if let Err(f) = instance.control(Control::Stop, control_timeout) {
                tracing::warn!(plugin = id, "stop before reconfiguring failed: {}", f.message);
            }
        }
        let applied = instance.control(Control::Configure(config.to_string()), control_timeout);
        if restart {
            if let Err(f) = instance.control(Control::Start, control_timeout) {
                let message = format!("restart after reconfiguring failed: {}", f.message);
                return Err(self.fail_running(id, message));
            }
            instance.open();
            if let Some(g) = self.slots.get_mut(id).and_then(|s| s.current.as_mut()) {
                g.started_at_ms = Some(now_ms());
            }
        }
        if let Err(f) = applied {
            let message = format!(
                "the config version {} stored by another host was not applied: {}",
                record.config_version, f.message
            );
            self.logs.push(id, Level::Error, "host", "config", &message);
            return Err(RegistryError::Failed(message));
        }
        let version = record.config_version;
        tracing::info!(plugin = id, version, restarted = restart, "stored config applied (sync)");
        self.logs.push(
            id,
            Level::Info,
            "host",
            "config",
            &format!("config version {version} (stored by another host) applied"),
        );
        Ok(true)
    }

    /// The loaded generation of `id` no longer runs: mark it stopped and the plugin failed
    /// with `message`, publish, and hand back the error for the caller.
    fn fail_running(&mut self, id: &str, message: String) -> RegistryError {
        if let Some(slot) = self.slots.get_mut(id) {
            if let Some(g) = slot.current.as_mut() {
                g.started = false;
                g.started_at_ms = None;
            }
            slot.state = Some(PluginState::Failed);
            slot.last_error =
                Some(LastError { message: message.clone(), file: None, at_ms: now_ms() });
        }
        self.publish();
        RegistryError::Failed(message)
    }

    fn shutdown(&mut self) {
        let ids: Vec<String> = self.slots.keys().cloned().collect();
        for id in ids {
            self.routing.remove(&id);
            if let Some(old) = self.slot(&id).current.take() {
                self.retire(&id, old, "shutdown");
                self.slot(&id).state = Some(PluginState::Unloaded);
            }
        }
        self.publish();
    }

    fn view_of(&self, id: &str) -> Option<PluginView> {
        self.views.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn publish(&self) {
        let mut views = BTreeMap::new();
        let host_limits = self.host_limits();
        for (id, slot) in &self.slots {
            let m = slot.manifest.as_deref();
            let current = slot.current.as_ref();
            let serving = current.map(|g| g.library.source.as_path());
            let mut files: Vec<PluginFile> = self
                .files
                .iter()
                .filter(|(_, r)| &r.id == id)
                .filter_map(|(p, r)| {
                    let v = r.provides.as_ref()?;
                    Some(PluginFile {
                        file: p.display().to_string(),
                        sha256: v.sha256.clone(),
                        modified_ms: v
                            .modified
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_millis() as u64),
                        serving: serving == Some(p.as_path()),
                    })
                })
                .collect();
            // The serving file's content may have failed since it loaded: still name it.
            if let Some(g) = current.filter(|_| !files.iter().any(|f| f.serving)) {
                files.push(PluginFile {
                    file: g.library.source.display().to_string(),
                    sha256: g.library.sha256().to_string(),
                    modified_ms: None,
                    serving: true,
                });
            }
            files.sort_by(|a, b| {
                b.modified_ms.cmp(&a.modified_ms).then_with(|| b.file.cmp(&a.file))
            });
            views.insert(
                id.clone(),
                PluginView {
                    id: id.clone(),
                    name: m.map(|m| m.name.clone()).unwrap_or_else(|| id.clone()),
                    version: m.map(|m| m.version.clone()).unwrap_or_default(),
                    description: m.map(|m| m.description.clone()).unwrap_or_default(),
                    state: slot.state.unwrap_or(PluginState::Failed),
                    generation: current.map_or(0, |g| g.instance.generation),
                    capabilities: m.map(|m| m.capabilities.clone()).unwrap_or_default(),
                    routes: m.map(|m| m.routes.clone()).unwrap_or_default(),
                    route_prefix: m.and_then(|m| m.route_prefix.clone()),
                    config_schema: m.and_then(|m| m.config_schema.clone()),
                    file: current.map(|g| g.library.source.display().to_string()),
                    sha256: current.map(|g| g.library.sha256().to_string()),
                    size_bytes: current.map(|g| g.library.size),
                    files,
                    loaded_at_ms: current.and(slot.loaded_at_ms),
                    started_at_ms: current.and_then(|g| g.started_at_ms),
                    last_error: slot.last_error.clone(),
                    residency: if current.is_none() {
                        slot.history.last().and_then(|h| h.residency)
                    } else {
                        None
                    },
                    history: slot.history.clone(),
                    isolation: slot.isolation.effective(slot.suggested).0,
                    isolation_suggested: slot.suggested,
                    isolation_source: slot.isolation.effective(slot.suggested).1,
                    isolation_limits: EffectiveLimits::merge(&slot.isolation.limits, &host_limits),
                    process: (slot.isolation.effective(slot.suggested).0 == IsolationMode::Process
                        || current.is_some_and(|g| g.library.child().is_some()))
                    .then(|| ProcessInfo {
                        pid: current
                            .and_then(|g| g.library.child())
                            .filter(|c| !c.is_dead())
                            .map(|c| c.pid()),
                        restarts: slot.supervisor.restarts(),
                        crashlooping: slot.supervisor.crashlooping(),
                        last_crash: slot.last_crash.clone(),
                    }),
                },
            );
        }
        *self.views.write().unwrap_or_else(|p| p.into_inner()) = views;
    }

    /// The operator chose where `id`'s code runs (and, given, its limits in process mode).
    /// The choice is stored first (it wins over the library's suggestion from now on); when
    /// the effective mode changed, or the limits of a plugin in process mode did, and a
    /// generation is loaded, the serving file is loaded again that way (a swap: no failed
    /// request). If that fails the old setting is stored again (the old generation keeps
    /// serving) and the error is answered. A plugin that is not loaded only keeps the setting
    /// for its next load.
    fn on_set_isolation(
        &mut self,
        id: &str,
        mode: IsolationMode,
        limits: Option<ProcessLimits>,
        actor: &str,
    ) -> Result<PluginView, RegistryError> {
        let slot = self.slots.get(id).ok_or_else(|| RegistryError::NotLoaded(id.to_string()))?;
        let before = slot.isolation;
        let (from, _) = before.effective(slot.suggested);
        let after = IsolationSetting { mode: Some(mode), limits: limits.unwrap_or(before.limits) };
        let loaded = slot.current.is_some();
        if after == before {
            return self.view_of(id).ok_or_else(|| RegistryError::NotLoaded(id.to_string()));
        }
        self.store.set_isolation(id, &after).map_err(|e| {
            RegistryError::Failed(format!("the isolation mode of '{id}' was not stored: {e}"))
        })?;
        self.slot(id).isolation = after;
        let mut details = serde_json::json!({ "from": from.as_str(), "to": mode.as_str() });
        if after.limits != before.limits {
            details["limits"] = serde_json::json!(after.limits);
        }
        let reload =
            from != mode || (mode == IsolationMode::Process && after.limits != before.limits);
        if loaded && reload {
            if let Err(e) = self.reload_serving(id, "isolation") {
                if let Err(e) = self.store.set_isolation(id, &before) {
                    tracing::warn!(plugin = id, "cannot store the isolation mode again: {e}");
                }
                self.slot(id).isolation = before;
                let message = format!(
                    "plugin '{id}' was not switched to {}: {e}; it still runs {}",
                    mode.as_str(),
                    from.as_str()
                );
                details["error"] = message.clone().into();
                self.event(id, "isolation_failed", actor, details);
                self.publish();
                return Err(RegistryError::Failed(message));
            }
        }
        tracing::info!(plugin = id, from = from.as_str(), to = mode.as_str(), "isolation mode set");
        // Only the source changed (the operator confirmed the mode it ran in): no event.
        if from != mode || after.limits != before.limits {
            self.event(id, "isolation", actor, details);
        }
        self.publish();
        self.view_of(id).ok_or_else(|| RegistryError::NotLoaded(id.to_string()))
    }

    /// Load the serving file of `id` again in its current mode: a swap (the running
    /// generation serves until the new one is installed, then is retired), so no request
    /// fails. Used for a mode switch, a restart after a crash and an operator's start of a
    /// plugin whose child died. On failure the running generation stays and the error is
    /// answered (and recorded on the plugin).
    fn reload_serving(&mut self, id: &str, reason: &str) -> Result<(), RegistryError> {
        let (path, before) = self
            .slots
            .get(id)
            .and_then(|s| s.current.as_ref())
            .map(|g| (g.library.source.clone(), g.instance.generation))
            .ok_or_else(|| RegistryError::NotLoaded(id.to_string()))?;
        tracing::info!(plugin = id, reason, file = %path.display(), "loading the serving file again");
        let record = self.files.get(&path).cloned();
        self.seq += 1;
        let staged = match self.relink_dead_child(id) {
            // A restart after a crash runs the code that crashed: a new name for its shadow
            // copy (a hard link) instead of copying and hashing the file again.
            Some(staged) => staged,
            None => loader::stage(&path, &self.settings.shadow_dir, self.seq).map_err(|e| {
                RegistryError::Failed(format!("cannot read the serving file again: {e}"))
            })?,
        };
        let prior_id = record.as_ref().map(|r| r.id.clone());
        self.open_and_load(&path, modified_of(&path), staged, prior_id, id, None, false);
        let now =
            self.slots.get(id).and_then(|s| s.current.as_ref()).map(|g| g.instance.generation);
        if now.is_some_and(|g| g != before) {
            return Ok(());
        }
        // The file still provides the id (the generation from it serves on).
        if let Some(record) = record {
            self.files.insert(path.clone(), record);
        }
        let message = self
            .slots
            .get(id)
            .and_then(|s| s.last_error.as_ref())
            .map(|e| e.message.clone())
            .unwrap_or_else(|| format!("{} did not load", path.display()));
        Err(RegistryError::Failed(message))
    }

    /// When `id`'s serving generation is a dead child: its shadow copy under a new name (a
    /// hard link, so the retired generation's removal of its own name leaves it), staged for
    /// the next child. `None` otherwise, or when the link cannot be made.
    fn relink_dead_child(&self, id: &str) -> Option<loader::Staged> {
        let code = &self.slots.get(id)?.current.as_ref()?.library;
        let CodeKind::Child { conn, shadow } = &code.kind else { return None };
        if !conn.is_dead() {
            return None;
        }
        let stem = code.source.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
        let ext = shadow.extension().and_then(|s| s.to_str()).unwrap_or("so");
        let fresh = self.settings.shadow_dir.join(format!("{stem}-{}.{ext}", self.seq));
        match std::fs::hard_link(shadow, &fresh) {
            Ok(()) => Some(loader::Staged::whole(
                code.source.clone(),
                fresh,
                Some(code.sha256().to_string()),
                code.size,
            )),
            Err(e) => {
                tracing::debug!(
                    plugin = id,
                    "cannot link the shadow copy again, staging anew: {e}"
                );
                None
            }
        }
    }

    /// The child of `generation` died without being asked to: record the crash (event
    /// `crashed` with the signal or exit code and the stderr tail, the plugin's log, its last
    /// error), show the plugin `failed`, and restart it after the supervisor's delay, or not
    /// at all once it is crashlooping. Calls meanwhile get 503 `plugin_crashed`.
    fn on_child_exited(&mut self, id: &str, generation: u64, crash: CrashInfo) {
        let serving = self
            .slots
            .get(id)
            .and_then(|s| s.current.as_ref())
            .filter(|g| g.instance.generation == generation)
            .and_then(|g| g.library.child().map(|c| c.pid()));
        let Some(pid) = serving else {
            tracing::info!(
                plugin = id,
                generation,
                "a retired generation's process ended: {}",
                crash.message
            );
            return;
        };
        let slot = self.slot(id);
        slot.last_crash = Some(crash.clone());
        slot.state = Some(PluginState::Failed);
        slot.last_error =
            Some(LastError { message: crash.message.clone(), file: None, at_ms: crash.at_ms });
        if let Some(g) = slot.current.as_mut() {
            g.started_at_ms = None;
        }
        let decision = slot.supervisor.on_crash(Instant::now());
        self.event(
            id,
            "crashed",
            "host",
            serde_json::json!({
                "generation": generation, "pid": pid, "signal": crash.signal,
                "exit_code": crash.exit_code, "message": crash.message,
                "stderr_tail": crash.stderr_tail,
            }),
        );
        self.after_crash(id, generation, decision);
        self.publish();
    }

    /// Schedule the restart the supervisor decided, or record the crash loop.
    fn after_crash(&mut self, id: &str, generation: u64, decision: Decision) {
        let child = self
            .slots
            .get(id)
            .and_then(|s| s.current.as_ref())
            .and_then(|g| g.library.child())
            .cloned();
        match decision {
            Decision::RestartAfter(delay) => {
                if let Some(c) = &child {
                    c.set_note(format!("it is restarted in {} ms", delay.as_millis()));
                }
                self.logs.push(
                    id,
                    Level::Info,
                    "host",
                    "supervise",
                    &format!("restarting the plugin's process in {} ms", delay.as_millis()),
                );
                let (tx, id) = (self.commands.clone(), id.to_string());
                let timer =
                    std::thread::Builder::new().name("bkg-restart".into()).spawn(move || {
                        std::thread::sleep(delay);
                        let _ = tx.send(Command::RestartChild { id, generation });
                    });
                if let Err(e) = timer {
                    tracing::error!("cannot start the restart timer: {e}");
                }
            }
            Decision::Crashloop => {
                let message = format!(
                    "crashlooping: its process crashed {} times within {} s; it is not \
                     restarted until an operator starts it",
                    crate::isolation::supervise::CRASHLOOP_CRASHES,
                    crate::isolation::supervise::CRASHLOOP_WINDOW.as_secs()
                );
                if let Some(c) = &child {
                    c.set_note(format!("it is {message}"));
                }
                let slot = self.slot(id);
                slot.state = Some(PluginState::Failed);
                slot.last_error =
                    Some(LastError { message: message.clone(), file: None, at_ms: now_ms() });
                self.event(
                    id,
                    "crashlooping",
                    "host",
                    serde_json::json!({ "generation": generation, "message": message }),
                );
            }
        }
    }

    /// A restart delay ran out: load the serving file in a new child, unless the plugin
    /// changed meanwhile (another generation serves, an operator started it, it is
    /// crashlooping). A failed restart counts as another crash.
    fn on_restart_child(&mut self, id: &str, generation: u64) {
        let due = self.slots.get(id).is_some_and(|s| {
            !s.supervisor.crashlooping()
                && s.current.as_ref().is_some_and(|g| {
                    g.instance.generation == generation
                        && g.library.child().is_some_and(|c| c.is_dead())
                })
        });
        if !due {
            return;
        }
        match self.reload_serving(id, "restart") {
            Ok(()) => {
                let slot = self.slot(id);
                let (restarts, pid) = (
                    slot.supervisor.restarts(),
                    slot.current.as_ref().and_then(|g| g.library.child()).map(|c| c.pid()),
                );
                let generation = slot.current.as_ref().map_or(0, |g| g.instance.generation);
                self.event(
                    id,
                    "restarted",
                    "host",
                    serde_json::json!({ "generation": generation, "pid": pid, "restarts": restarts, "after_crash": true }),
                );
            }
            Err(e) => {
                tracing::warn!(plugin = id, "restart after a crash failed: {e}");
                let decision = self.slot(id).supervisor.on_crash(Instant::now());
                self.slot(id).state = Some(PluginState::Failed);
                self.after_crash(id, generation, decision);
            }
        }
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_overlap_is_segment_wise() {
        assert!(prefixes_overlap("/v1", "/v1"));
        assert!(prefixes_overlap("/v1", "/v1/chat"));
        assert!(prefixes_overlap("/v1/chat", "/v1"));
        assert!(!prefixes_overlap("/v1", "/v10"));
        assert!(!prefixes_overlap("/api2", "/api"));
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("echo"));
        assert!(valid_id("my-plugin_2"));
        assert!(!valid_id(""));
        assert!(!valid_id("Echo"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(65)));
    }

    #[test]
    fn the_newest_file_serves_ties_by_name() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let t1 = t0 + Duration::from_millis(1);
        let (a, b) = (Path::new("/p/a.so"), Path::new("/p/b.so"));
        assert_eq!(newest([(a, t1), (b, t0)].into_iter()), Some(a));
        assert_eq!(newest([(b, t0), (a, t1)].into_iter()), Some(a));
        assert_eq!(newest([(a, t0), (b, t0)].into_iter()), Some(b));
        assert_eq!(newest([(b, t0), (a, t0)].into_iter()), Some(b));
        assert_eq!(newest(std::iter::empty()), None);
    }

    #[test]
    fn stem_drops_lib_prefix() {
        assert_eq!(file_stem_id(Path::new("/p/libfoo.so")), "foo");
        assert_eq!(file_stem_id(Path::new("/p/bar.so")), "bar");
    }
}
