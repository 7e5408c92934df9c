//! `repoagent`: code analysis of repositories on the host's disk: line counts, symbols,
//! metrics, search, a repository map, and code RAG through brainml over the bus.
//!
//! Repositories are added under the roots an operator allows (`repos.rs`), walked like ripgrep
//! walks (`walk.rs`), indexed file by file on the plugin's own rayon pool (`index.rs`,
//! `pool.rs`) and kept up to date by a file watcher (`watch.rs`). The plugin never reads
//! outside its roots, never writes into a repository, and its threads (the pool's, the
//! watcher's, notify's) are all joined in `stop`: it unloads cleanly.

pub mod api;
pub mod chunk;
pub mod churn;
pub mod index;
pub mod lang;
pub mod map;
pub mod metrics;
pub mod persist;
pub mod pool;
pub mod rag;
pub mod repos;
pub mod search;
pub mod stats;
pub mod symbols;
pub mod walk;
pub mod watch;

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bkg_abi::serde_json::{json, Value};
use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use api::*;
use repos::{BuildState, RepoEntry, Repos};

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) const NDJSON: &str = "application/x-ndjson";

/// A streamed build sends a progress line at least this often.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A repository's index is saved at most this often while the watcher applies changes (a build
/// or a verify that changed something saves at once).
pub const SAVE_EVERY: Duration = Duration::from_secs(3);

/// One NDJSON line.
pub(crate) fn ndjson<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    let mut line = serde_json::to_vec(v).map_err(|e| Error::internal(format!("serialize: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

/// A request body as JSON (an empty body is `{}`), with a message naming what is wrong.
pub(crate) fn parse<T: DeserializeOwned>(req: &Request<'_>) -> Result<T, Error> {
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { req.body };
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("invalid request: {e}")))
}

pub(crate) use repos::poisoned;

/// The plugin's config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The folders repositories may be added under (absolute). Empty: every `repo.add` is
    /// refused.
    pub roots: Vec<PathBuf>,
    /// Threads of the plugin's pool (indexing, counting, search).
    pub threads: usize,
    /// Files larger than this are left out of the index (and counted).
    pub max_file_bytes: u64,
    /// Watch the repositories and update their indexes on every change.
    pub watch: bool,
    /// How many commits of history `code.metrics`' hotspots read.
    pub churn_commits: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            roots: Vec::new(),
            threads: 2,
            max_file_bytes: 1 << 20,
            watch: true,
            churn_commits: 2000,
        }
    }
}

pub const MAX_THREADS: usize = 64;
pub const MAX_FILE_BYTES_LIMIT: u64 = 1 << 30;
pub const MAX_CHURN_COMMITS: u32 = 1_000_000;

impl Settings {
    /// Check every value.
    fn checked(self) -> Result<Settings, Error> {
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(Error::bad_request(format!(
                "threads {}: use 1 to {MAX_THREADS}",
                self.threads
            )));
        }
        if !(1..=MAX_FILE_BYTES_LIMIT).contains(&self.max_file_bytes) {
            return Err(Error::bad_request(format!(
                "max_file_bytes {}: use 1 to {MAX_FILE_BYTES_LIMIT}",
                self.max_file_bytes
            )));
        }
        if !(1..=MAX_CHURN_COMMITS).contains(&self.churn_commits) {
            return Err(Error::bad_request(format!(
                "churn_commits {}: use 1 to {MAX_CHURN_COMMITS}",
                self.churn_commits
            )));
        }
        for r in &self.roots {
            if !r.is_absolute() {
                return Err(Error::bad_request(format!(
                    "roots: {} is relative: give absolute folders",
                    r.display()
                )));
            }
            let virtual_fs =
                |p: &std::path::Path| ["/proc", "/sys", "/dev"].iter().any(|f| p.starts_with(f));
            if virtual_fs(r) {
                return Err(Error::bad_request(format!(
                    "roots: {} is a virtual file system repoagent never reads",
                    r.display()
                )));
            }
            // A root that does not exist (now) is kept: refusing it would keep the plugin
            // from loading with its stored config after the folder went away. It allows
            // nothing until it exists (roots are resolved at each check).
            match std::fs::canonicalize(r) {
                Ok(c) if !c.is_dir() => {
                    return Err(Error::bad_request(format!(
                        "roots: {} is not a folder",
                        r.display()
                    )))
                }
                Ok(c) if virtual_fs(&c) => {
                    return Err(Error::bad_request(format!(
                        "roots: {} leads to {}, a virtual file system repoagent never reads",
                        r.display(),
                        c.display()
                    )))
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::bad_request(format!(
                        "roots: {} cannot be used: {e}",
                        r.display()
                    )))
                }
            }
        }
        Ok(self)
    }
}

/// What the plugin's threads share; the plugin holds it in an `Arc` (the watcher's thread
/// holds a `Weak`, pool jobs an `Arc` until they end: all before `stop` returns).
pub struct Core {
    pub(crate) host: Host,
    /// As configured (what `config` shows) and as checked.
    configured: RwLock<Settings>,
    settings: RwLock<Settings>,
    pub(crate) pool: pool::Pool,
    /// The symbol queries and line-count rules every file read uses.
    pub(crate) reader: index::Reader,
    pub(crate) repos: Repos,
    pub(crate) watcher: watch::Watcher,
    /// `code.map`'s graphs, per repository.
    pub(crate) maps: map::Maps,
    /// `code.index` runs (rag.rs).
    pub(crate) rag: rag::Rag,
    stopping: AtomicBool,
    persisting: Mutex<()>,
    /// Some repository has a change the watcher applied that is not saved yet.
    saves_due: AtomicBool,
}

/// The plugin. Derefs to its [`Core`] (`self.repos`, `self.reader`, `self.pool`).
pub struct RepoAgent {
    core: Arc<Core>,
}

impl Deref for RepoAgent {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Core {
    /// The checked settings.
    pub(crate) fn settings(&self) -> Settings {
        self.settings.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn persist(&self) -> Result<(), Error> {
        let _one = self.persisting.lock().map_err(|_| poisoned())?;
        repos::save(&self.host.data_dir(), self.repos.saved())
    }

    fn watch(&self, entry: &RepoEntry) {
        match self.watcher.watch(&entry.root) {
            Ok(on) => entry.watching.store(on, Ordering::SeqCst),
            Err(e) => {
                entry.watching.store(false, Ordering::SeqCst);
                self.host.warn(&format!("repository {}: not watched: {}", entry.name, e.message));
            }
        }
    }

    /// Start a build of `entry`'s index on the pool (superseding one in progress): its epoch.
    fn start_build(self: &Arc<Self>, entry: &Arc<RepoEntry>) -> Result<u64, Error> {
        let epoch = entry.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        entry.builds.fetch_add(1, Ordering::SeqCst);
        entry.files_done.store(0, Ordering::SeqCst);
        entry.files_total.store(0, Ordering::SeqCst);
        entry.verifying.store(false, Ordering::SeqCst);
        entry.set_state(BuildState::Indexing { epoch });
        let (core, job) = (self.clone(), entry.clone());
        if let Err(e) = self.pool.spawn(move || core.build_job(&job, epoch)) {
            entry.set_state(BuildState::Error { epoch, message: e.message.clone() });
            return Err(e);
        }
        Ok(epoch)
    }

    /// A pool job: walk and index the repository; the index replaces the old one unless a
    /// newer build, a removal or `stop` came first.
    fn build_job(&self, entry: &RepoEntry, epoch: u64) {
        let current = || {
            !self.is_stopping()
                && !entry.removed.load(Ordering::SeqCst)
                && entry.epoch.load(Ordering::SeqCst) == epoch
        };
        let cancelled = || !current();
        let max = self.settings().max_file_bytes;
        let started = Instant::now();
        let result = walk::walk(&entry.root, &entry.root, max, &cancelled).and_then(|walked| {
            entry.files_total.store(walked.files.len(), Ordering::SeqCst);
            entry.wake();
            index::build(
                &entry.name,
                &entry.root,
                walked,
                max,
                &self.reader,
                &entry.files_done,
                &cancelled,
            )
        });
        if !current() {
            entry.wake();
            return;
        }
        match result {
            Ok(mut index) => {
                index.indexed_ms = started.elapsed().as_millis() as u64;
                if let Some(old) = entry.snapshot() {
                    index.generation = old.generation + 1;
                }
                let files = index.files.len();
                entry.store(index);
                entry.set_state(BuildState::Ready { epoch });
                self.host.debug(&format!("repository {} indexed: {files} files", entry.name));
                // After `Ready`: the add's answer does not wait for the save.
                self.save_index(entry);
            }
            Err(e) => {
                self.host.warn(&format!("repository {}: indexing failed: {e}", entry.name));
                entry.set_state(BuildState::Error { epoch, message: e.message });
            }
        }
    }

    /// Wait for the build `epoch` (or a newer one) of `entry` to end, streaming progress.
    fn wait_build(
        &self,
        entry: &RepoEntry,
        epoch: u64,
        ctx: &Context<'_>,
        stream: Option<&Stream<'_, '_>>,
    ) -> Result<(), Error> {
        let mut sent = None;
        let mut last_sent = Instant::now();
        loop {
            if ctx.is_cancelled() {
                return Err(Error::cancelled());
            }
            if self.is_stopping() {
                return Err(Error::unavailable("repoagent is stopping"));
            }
            if entry.removed.load(Ordering::SeqCst) {
                return Err(Error::conflict(format!(
                    "repository {} was removed while it was indexing",
                    entry.name
                )));
            }
            match entry.state() {
                BuildState::Ready { epoch: e } if e >= epoch => return Ok(()),
                BuildState::Error { epoch: e, message } if e >= epoch => {
                    return Err(Error::internal(format!(
                        "indexing repository {} failed: {message}",
                        entry.name
                    )))
                }
                _ => {}
            }
            if let Some(s) = stream {
                // On progress, and every few seconds regardless (a long walk of a big tree
                // must not look idle to the host).
                let p = entry.progress();
                if sent != Some((p.files_done, p.files_total)) || last_sent.elapsed() >= HEARTBEAT {
                    s.send(&ndjson(&p)?)?;
                    sent = Some((p.files_done, p.files_total));
                    last_sent = Instant::now();
                }
            }
            entry.wait(Duration::from_millis(100));
        }
    }

    fn indexed(&self, entry: &RepoEntry) -> Result<RepoIndexed, Error> {
        let index = entry.snapshot().ok_or_else(|| Error::internal("the index vanished"))?;
        Ok(RepoIndexed {
            name: entry.name.clone(),
            path: entry.root.display().to_string(),
            files: index.files.len(),
            skipped_large: index.skipped_large.len() as u64,
            skipped_binary: index.skipped_binary.len() as u64,
            indexed_ms: index.indexed_ms,
        })
    }

    /// Answer a build's end: plain, or (streamed) as the last NDJSON line, an error too.
    fn finish(
        &self,
        what: &str,
        stream: Option<Stream<'_, '_>>,
        result: Result<RepoIndexed, Error>,
        status: u16,
    ) -> Result<Response, Error> {
        match (result, stream) {
            (Ok(answer), None) => Ok(Response::json(&answer)?.with_status(status)),
            (Ok(answer), Some(_)) => Ok(Response::bytes(NDJSON, ndjson(&answer)?)),
            (Err(e), Some(_)) if e.kind != bkg_abi::ErrorKind::CANCELLED => {
                self.host.warn(&format!("{what} failed midway: {e}"));
                let line = json!({ "error": {
                    "code": e.kind.code(), "status": e.kind.0, "message": e.message } });
                Ok(Response::bytes(NDJSON, format!("{line}\n").into_bytes()))
            }
            (Err(e), _) => Err(e),
        }
    }

    fn repo_add(self: &Arc<Self>, r: RepoAdd, ctx: &Context<'_>) -> Result<Response, Error> {
        let settings = self.settings();
        let root = repos::check_path(&settings.roots, &r.path)?;
        let name =
            match r.name {
                Some(n) => n,
                None => root.file_name().and_then(|n| n.to_str()).map(str::to_string).ok_or_else(
                    || Error::bad_request(format!("path {:?}: give a name for it", r.path)),
                )?,
            };
        repos::check_name(&name)?;
        let entry = Arc::new(RepoEntry::new(name, root));
        self.repos.insert(entry.clone())?;
        let stream = match r.stream.then(|| ctx.stream(NDJSON)).transpose() {
            Ok(s) => s,
            Err(e) => {
                self.forget(&entry);
                return Err(e);
            }
        };
        self.watch(&entry);
        let result = self
            .start_build(&entry)
            .and_then(|epoch| self.wait_build(&entry, epoch, ctx, stream.as_ref()))
            .and_then(|()| self.persist())
            .and_then(|()| self.indexed(&entry));
        match &result {
            Ok(a) => self.host.info(&format!(
                "repository {} added: {} ({} files, {} ms)",
                a.name, a.path, a.files, a.indexed_ms
            )),
            Err(_) => self.forget(&entry),
        }
        self.finish("repo.add", stream, result, 201)
    }

    /// Undo an add that did not finish (only if the name still means this entry).
    fn forget(&self, entry: &Arc<RepoEntry>) {
        if let Ok(e) = self.repos.get(&entry.name) {
            if Arc::ptr_eq(&e, entry) {
                self.repos.remove(&entry.name);
                self.watcher.unwatch(&entry.root);
            }
        }
        entry.removed.store(true, Ordering::SeqCst);
        self.delete_index(entry);
    }

    fn repo_remove(&self, r: RepoName) -> Result<Response, Error> {
        let entry = self.repos.get(&r.name)?;
        self.repos.remove(&entry.name);
        if entry.watching.swap(false, Ordering::SeqCst) {
            self.watcher.unwatch(&entry.root);
        }
        self.persist()?;
        self.delete_index(&entry);
        let (collections_deleted, collections_left) =
            rag::forget_repo(&self.host, &entry.name, r.keep_index);
        self.host.info(&format!(
            "repository {} removed (its files untouched; collections deleted: {}, left: {})",
            entry.name,
            collections_deleted.len(),
            collections_left.len()
        ));
        Response::json(&RepoRemoved {
            removed: entry.name.clone(),
            collections_deleted,
            collections_left,
        })
    }

    fn repo_reindex(
        self: &Arc<Self>,
        r: RepoReindex,
        ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        let entry = self.repos.get(&r.name)?;
        // The roots may have changed since it was added.
        repos::check_path(&self.settings().roots, &entry.root.display().to_string())?;
        let stream = r.stream.then(|| ctx.stream(NDJSON)).transpose()?;
        if !entry.watching.load(Ordering::SeqCst) {
            self.watch(&entry);
        }
        let result = self
            .start_build(&entry)
            .and_then(|epoch| self.wait_build(&entry, epoch, ctx, stream.as_ref()))
            .and_then(|()| self.indexed(&entry));
        self.finish("repo.reindex", stream, result, 200)
    }

    /// Save `entry`'s index now (unless it is saved at this generation already, removed, or the
    /// plugin is stopping). Runs on the pool or the watcher's thread; one at a time per
    /// repository.
    fn save_index(&self, entry: &RepoEntry) {
        let Ok(mut saved) = entry.saving.lock() else { return };
        if self.is_stopping() || entry.removed.load(Ordering::SeqCst) {
            return;
        }
        let Some(index) = entry.snapshot() else { return };
        if saved.generation == Some(index.generation) {
            return;
        }
        saved.at = Some(Instant::now());
        let started = Instant::now();
        match persist::save(&self.host.data_dir(), &index) {
            Ok(bytes) => {
                saved.generation = Some(index.generation);
                self.host.debug(&format!(
                    "repository {}: index saved (generation {}, {} files, {bytes} bytes, {} ms)",
                    entry.name,
                    index.generation,
                    index.files.len(),
                    started.elapsed().as_millis()
                ));
            }
            Err(e) => {
                self.host.warn(&format!("repository {}: saving its index failed: {e}", entry.name))
            }
        }
    }

    /// A change the watcher applied: saved soon (`flush_saves`, at most every `SAVE_EVERY`).
    fn request_save(&self, entry: &RepoEntry) {
        entry.save_wanted.store(true, Ordering::SeqCst);
        self.saves_due.store(true, Ordering::SeqCst);
    }

    /// Called by the watcher's thread on every tick: queue the saves that are due on the pool.
    pub(crate) fn flush_saves(self: &Arc<Self>) {
        if !self.saves_due.swap(false, Ordering::SeqCst) || self.is_stopping() {
            return;
        }
        let mut again = false;
        for e in self.repos.all() {
            if !e.save_wanted.load(Ordering::SeqCst) {
                continue;
            }
            // A save in progress (the lock held) or one begun lately: later.
            let due =
                e.saving.try_lock().is_ok_and(|s| s.at.is_none_or(|at| at.elapsed() >= SAVE_EVERY));
            if !due {
                again = true;
                continue;
            }
            e.save_wanted.store(false, Ordering::SeqCst);
            let (core, job) = (self.clone(), e.clone());
            if self.pool.spawn(move || core.save_index(&job)).is_err() {
                return;
            }
        }
        if again {
            self.saves_due.store(true, Ordering::SeqCst);
        }
    }

    /// Delete `entry`'s saved index (a removed repository), after a save in progress.
    fn delete_index(&self, entry: &RepoEntry) {
        let Ok(mut saved) = entry.saving.lock() else { return };
        saved.generation = None;
        if let Err(e) = persist::remove(&self.host.data_dir(), &entry.name) {
            self.host.warn(&format!("repository {}: {e}", entry.name));
        }
    }

    /// The index saved for `entry`, if there is one that can be used (else logged why not).
    fn load_index(&self, entry: &RepoEntry) -> Option<index::RepoIndex> {
        let dir = self.host.data_dir();
        let started = Instant::now();
        match persist::load(&dir, &entry.name, &entry.root) {
            Ok(Some(index)) => {
                self.host.info(&format!(
                    "repository {}: saved index loaded ({} files, generation {}, {} ms); \
                     verifying it against the files",
                    entry.name,
                    index.files.len(),
                    index.generation,
                    started.elapsed().as_millis()
                ));
                Some(index)
            }
            Ok(None) => None,
            Err(why) => {
                self.host.warn(&format!(
                    "repository {}: saved index {} not used: {why}; indexing it from scratch",
                    entry.name,
                    persist::path(&dir, &entry.name).display()
                ));
                None
            }
        }
    }

    /// Answer from a loaded index at once and check it against the files on the pool: state
    /// `ready` with `verifying` until done.
    fn start_verify(self: &Arc<Self>, entry: &Arc<RepoEntry>, index: index::RepoIndex) {
        let generation = index.generation;
        entry.store(index);
        if let Ok(mut saved) = entry.saving.lock() {
            saved.generation = Some(generation);
        }
        let epoch = entry.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        entry.verifying.store(true, Ordering::SeqCst);
        entry.set_state(BuildState::Ready { epoch });
        let (core, job) = (self.clone(), entry.clone());
        if let Err(e) = self.pool.spawn(move || core.verify_job(&job, epoch)) {
            entry.verifying.store(false, Ordering::SeqCst);
            self.host.warn(&format!("repository {}: not verified: {e}", entry.name));
        }
    }

    /// A pool job: walk the repository, read again the files that differ from the loaded
    /// index, and put the result in unless a build, a removal or `stop` came first.
    fn verify_job(&self, entry: &RepoEntry, epoch: u64) {
        let current = || {
            !self.is_stopping()
                && !entry.removed.load(Ordering::SeqCst)
                && entry.epoch.load(Ordering::SeqCst) == epoch
        };
        let cancelled = || !current();
        let Some(old) = entry.snapshot() else { return };
        let max = self.settings().max_file_bytes;
        let started = Instant::now();
        let result = walk::walk(&entry.root, &entry.root, max, &cancelled).and_then(|walked| {
            index::refresh(&old, walked, max, &self.reader, &entry.files_done, &cancelled)
        });
        drop(old);
        if !current() {
            return;
        }
        match result {
            Ok(r) => {
                self.host.info(&format!(
                    "repository {} verified against the files: {} changed, {} new, {} removed \
                     ({} ms)",
                    entry.name,
                    r.changed,
                    r.added,
                    r.removed,
                    started.elapsed().as_millis()
                ));
                let changed = r.index.is_some();
                if let Some(index) = r.index {
                    entry.store(index);
                }
                entry.verifying.store(false, Ordering::SeqCst);
                entry.set_state(BuildState::Ready { epoch });
                if changed {
                    self.save_index(entry);
                }
            }
            Err(e) => {
                // The loaded index still answers; the next build or a restart tries again.
                self.host.warn(&format!("repository {}: verifying failed: {e}", entry.name));
                entry.verifying.store(false, Ordering::SeqCst);
                entry.set_state(BuildState::Ready { epoch });
            }
        }
    }

    /// Bring the saved repositories back (at start): each answers from its saved index at once
    /// (verified against the files in the background), or is indexed again in the background.
    fn restore(self: &Arc<Self>) {
        let dir = self.host.data_dir();
        let saved = match repos::load(&dir) {
            Ok(s) => s,
            Err(e) => {
                // Kept aside, not overwritten by the next add.
                let aside = dir.join(format!("repos.json.damaged-{}", index::now_ms()));
                let _ = std::fs::rename(dir.join("repos.json"), &aside);
                self.host.error(&format!("{}; moved to {}", e.message, aside.display()));
                return;
            }
        };
        let roots = self.settings().roots;
        for s in saved {
            let checked = repos::check_path(&roots, &s.path);
            let root = checked.as_ref().map_or_else(|_| PathBuf::from(&s.path), Clone::clone);
            let entry = Arc::new(RepoEntry::new(s.name.clone(), root));
            if self.repos.insert(entry.clone()).is_err() {
                continue;
            }
            match checked {
                Ok(_) => {
                    self.watch(&entry);
                    match self.load_index(&entry) {
                        Some(index) => self.start_verify(&entry, index),
                        None => {
                            let _ = self.start_build(&entry);
                        }
                    }
                }
                Err(e) => {
                    self.host.warn(&format!("repository {} not indexed: {}", s.name, e.message));
                    entry.set_state(BuildState::Error {
                        epoch: 0,
                        message: format!("not indexed: {}", e.message),
                    });
                }
            }
        }
    }

    /// Apply the watcher's changed paths to the indexes of ready repositories (inside the
    /// pool); paths of repositories still indexing stay pending.
    pub(crate) fn apply_pending(self: &Arc<Self>, pending: &mut watch::Pending) {
        if self.is_stopping() {
            *pending = watch::Pending::default();
            return;
        }
        if std::mem::take(&mut pending.rescan) {
            for e in self.repos.all() {
                if e.snapshot().is_some() {
                    let _ = self.start_build(&e);
                }
            }
        }
        let mut by_repo: BTreeMap<String, (Arc<RepoEntry>, std::collections::BTreeSet<PathBuf>)> =
            BTreeMap::new();
        for p in std::mem::take(&mut pending.paths) {
            if let Some(e) = self.repos.find_by_path(&p) {
                by_repo
                    .entry(e.name.clone())
                    .or_insert_with(|| (e, Default::default()))
                    .1
                    .insert(p);
            }
        }
        let max = self.settings().max_file_bytes;
        for (_, (entry, paths)) in by_repo {
            match entry.state() {
                // Applied once the verify ends (on its index).
                BuildState::Ready { .. } if entry.verifying.load(Ordering::SeqCst) => {
                    pending.paths.extend(paths);
                    continue;
                }
                BuildState::Ready { .. } => {}
                // Applied once the build ends.
                BuildState::Indexing { .. } => {
                    pending.paths.extend(paths);
                    continue;
                }
                // Its next build walks it anyway.
                BuildState::Error { .. } => continue,
            }
            // On a copy, outside every lock; it replaces the index unless something else did
            // first (then again, on the new one).
            for _ in 0..8 {
                let Some(old) = entry.snapshot() else { break };
                let root = &entry.root;
                let relevant =
                    |p: &PathBuf| walk::relative(root, p).is_some_and(|rel| old.may_change(&rel));
                if !paths.iter().any(relevant) {
                    break;
                }
                let mut copy = index::RepoIndex::clone(&old);
                let applied = self
                    .pool
                    .install(|| index::apply_changes(&mut copy, &paths, max, &self.reader));
                match applied {
                    Ok(index::Applied::NeedsRebuild) => {
                        let _ = self.start_build(&entry);
                    }
                    Ok(index::Applied::RootGone) => {
                        let message = format!(
                            "its folder {} is gone: repo.reindex once it is back, or repo.remove",
                            entry.root.display()
                        );
                        self.host.warn(&format!("repository {}: {message}", entry.name));
                        if entry.watching.swap(false, Ordering::SeqCst) {
                            self.watcher.unwatch(&entry.root);
                        }
                        let epoch = entry.epoch.load(Ordering::SeqCst);
                        entry.set_state(BuildState::Error { epoch, message });
                    }
                    Ok(index::Applied::Changed) if !entry.swap_if(&old, copy) => continue,
                    Ok(index::Applied::Changed) => self.request_save(&entry),
                    Ok(_) => {}
                    Err(e) => {
                        self.host.warn(&format!("repository {}: update failed: {e}", entry.name))
                    }
                }
                break;
            }
        }
    }

    fn status(&self) -> Value {
        let s = self.settings();
        let repos: Vec<RepoInfo> = self.repos.all().iter().map(|e| e.info()).collect();
        json!({
            "version": VERSION,
            "threads": self.pool.threads(),
            "threads_spawned": self.pool.spawned_total(),
            "threads_joined": self.pool.joined_total(),
            "watching": self.watcher.is_running(),
            "roots_missing": s.roots.iter().filter(|r| !r.is_dir()).collect::<Vec<_>>(),
            "roots": s.roots,
            "repos": repos,
        })
    }
}

impl Plugin for RepoAgent {
    fn manifest() -> Manifest {
        Manifest::new("repoagent", "Code analysis", VERSION)
            .description(
                "code analysis of repositories on the host's disk (under the roots an operator \
                 allows): line counts, symbols, metrics, search; indexes kept up to date by a \
                 file watcher",
            )
            .streaming_capability(
                "repo.add",
                "{path, name?, stream?}: add and index a repository under an allowed root (201 \
                 {name, path, files, indexed_ms}); stream: NDJSON progress {files_done, \
                 files_total}, then the answer",
            )
            .capability(
                "repo.list",
                "the repositories: {repos: [{name, path, state, files, languages, indexed_at, \
                 watching}]}",
            )
            .capability(
                "repo.remove",
                "{name, keep_index?}: stop watching and forget it (files untouched; the \
                 collections code.index filled for it are deleted unless keep_index)",
            )
            .capability(
                "code.stats",
                "{repo, by?: language|file, path?}: lines, code, comments, blanks (tokei's \
                 rules) per language with files, or per file, most code first; totals",
            )
            .capability(
                "code.search",
                "{repo, pattern, regex?: false, case_sensitive?: true, smart_case?, glob?, \
                 path?, max?: 100, context?: 0}: ripgrep's search; hits {path, line, column, \
                 text, before?, after?, symbol?: {kind, name, line}}, truncated, files_searched",
            )
            .capability(
                "code.symbols",
                "{repo, path?, kind?, name?, language?, limit?: 1000}: definitions (tree-sitter) \
                 {path, kind, name, line, end_line, parent, signature, language}; name: exact \
                 matches, else case-insensitive substring (name_match says which); total, \
                 truncated",
            )
            .capability(
                "code.outline",
                "{repo, path}: the file's definitions nested by what encloses them (children)",
            )
            .capability(
                "code.refs",
                "{repo, name, kind?: call|type|other, path?, limit?: 200}: the name's \
                 definitions and references {path, line, kind, text, symbol?}; total, truncated",
            )
            .capability(
                "code.metrics",
                "{repo, path?, limit?: 50}: with path, the file's functions (cyclomatic, \
                 cognitive, lines, params, exits) and totals; without, files ranked by \
                 complexity and hotspots (git churn x complexity; churn_error when there is no \
                 history)",
            )
            .capability(
                "code.map",
                "{repo, focus?: [paths or names], tokens?: 1024}: the most important \
                 definitions (aider's repo map: files ranked by personalized PageRank over \
                 references, definitions fitted to the token budget); {map, tokens, files, \
                 ranked, included, cached, updated}",
            )
            .streaming_capability(
                "code.index",
                "{repo, collection?, stream?}: one chunk per definition embedded into a brainml \
                 collection (default repo-<name>); only new or changed chunks are embedded \
                 again; answer {chunks, embedded, unchanged, deleted}; stream: NDJSON progress \
                 {phase, done, total}, then the answer; 503 naming brainml or candle when one \
                 is missing",
            )
            .capability(
                "code.semantic_search",
                "{repo, query, k?: 10, mode?: hybrid|dense|bm25, collection?}: the chunks \
                 closest in meaning: hits {path, line, end_line, kind, name, score, text}",
            )
            .streaming_capability(
                "code.ask",
                "{repo, question, k?: 5, model?, stream?}: the chat model (llmserver) answers \
                 from the chunks found, citing path:line; citations {n, cite, path, line, ...}; \
                 stream: server-sent events like brainml's rag.ask",
            )
            .streaming_capability(
                "repo.reindex",
                "{name, stream?}: walk and index the repository again",
            )
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "roots": { "type": "array", "items": { "type": "string" }, "default": [],
                        "description": "absolute folders repositories may be added under; empty: none" },
                    "threads": { "type": "integer", "minimum": 1, "maximum": MAX_THREADS, "default": 2 },
                    "max_file_bytes": { "type": "integer", "minimum": 1, "maximum": MAX_FILE_BYTES_LIMIT,
                        "default": 1048576, "description": "larger files are left out (and counted)" },
                    "watch": { "type": "boolean", "default": true },
                    "churn_commits": { "type": "integer", "minimum": 1, "maximum": MAX_CHURN_COMMITS,
                        "default": 2000 }
                },
                "additionalProperties": false
            }))
            .config_needs_restart()
    }

    fn new(host: Host) -> Result<Self, Error> {
        Ok(RepoAgent {
            core: Arc::new(Core {
                host,
                configured: RwLock::new(Settings::default()),
                settings: RwLock::new(Settings::default()),
                pool: pool::Pool::default(),
                reader: index::Reader::default(),
                repos: Repos::default(),
                watcher: watch::Watcher::default(),
                maps: map::Maps::default(),
                rag: rag::Rag::default(),
                stopping: AtomicBool::new(false),
                persisting: Mutex::new(()),
                saves_due: AtomicBool::new(false),
            }),
        })
    }

    fn start(&self) -> Result<(), Error> {
        self.stopping.store(false, Ordering::SeqCst);
        let s = self.settings();
        self.pool.start(s.threads)?;
        if s.watch {
            self.watcher.start(Arc::downgrade(&self.core))?;
        }
        self.core.restore();
        Ok(())
    }

    fn stop(&self) -> Result<(), Error> {
        self.stopping.store(true, Ordering::SeqCst);
        self.repos.clear();
        self.maps.clear();
        self.watcher.stop()?;
        self.pool.shutdown()
    }

    fn status(&self) -> Value {
        self.core.status()
    }

    fn config(&self) -> Value {
        self.configured
            .read()
            .ok()
            .and_then(|s| serde_json::to_value(&*s).ok())
            .unwrap_or(Value::Null)
    }

    fn configure(&self, config: Value) -> Result<(), Error> {
        let given: Settings = if config.is_null() {
            Settings::default()
        } else {
            serde_json::from_value(config)
                .map_err(|e| Error::bad_request(format!("config: {e}")))?
        };
        let checked = given.clone().checked()?;
        *self.configured.write().map_err(|_| poisoned())? = given;
        *self.settings.write().map_err(|_| poisoned())? = checked;
        Ok(())
    }

    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        match capability {
            "repo.add" => self.core.repo_add(parse(&req)?, ctx),
            "repo.list" => {
                let repos = self.repos.all().iter().map(|e| e.info()).collect();
                Response::json(&RepoList { repos })
            }
            "repo.remove" => self.repo_remove(parse(&req)?),
            "repo.reindex" => self.core.repo_reindex(parse(&req)?, ctx),
            "code.stats" => Response::json(&stats::answer(&self.repos, &parse(&req)?)?),
            "code.search" => {
                Response::json(&search::answer(&self.repos, &self.pool, &parse(&req)?)?)
            }
            "code.symbols" => {
                Response::json(&symbols::answer::symbols(&self.repos, &parse(&req)?)?)
            }
            "code.outline" => {
                Response::json(&symbols::answer::outline(&self.repos, &parse(&req)?)?)
            }
            "code.refs" => Response::json(&symbols::answer::refs(&self.repos, &parse(&req)?)?),
            "code.metrics" => {
                let churn_commits = self.settings().churn_commits;
                let cancelled = || ctx.is_cancelled() || self.is_stopping();
                metrics::answer(&self.repos, &self.pool, churn_commits, &parse(&req)?, &cancelled)
            }
            "code.map" => Response::json(&map::answer(&self.maps, &self.repos, &parse(&req)?)?),
            "code.index" => self.core.code_index(parse(&req)?, ctx),
            "code.semantic_search" => self.core.semantic_search(parse(&req)?),
            "code.ask" => self.core.code_ask(parse(&req)?, ctx),
            other => Err(Error::not_found(format!("no capability {other}"))),
        }
    }
}

export_plugin!(RepoAgent);
