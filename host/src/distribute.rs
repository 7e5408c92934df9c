//! Plugin distribution between hosts sharing one PostgreSQL database (issue 16).
//!
//! A plugin library deployed on one host (uploaded through the API or copied into its plugins
//! folder) is published once the registry has loaded it: its bytes stored in the database
//! content-addressed by SHA-256, the deployment (file name -> hash) written and a
//! `plugin_deployed` change recorded (`store::blobs`). Every other host's `sync` listener hands
//! the change here; this module fetches the blob chunk by chunk into a hidden temporary file of
//! its plugins folder, checks the bytes' SHA-256 against the recorded one and renames it into
//! place, so that its watcher and registry load it as any file renamed into the folder. A file
//! removed from one host's folder is marked removed and deleted from every other folder.
//!
//! This module owns what is published and fetched; the store only stores and serves; the
//! registry still owns loading (it tells this module, through a `Hook`, what it loaded and what
//! was removed: a channel send, off its swap path; the work happens on this module's own
//! thread, `bkg-distribute`, joined on shutdown).
//!
//! No echo: a file this module wrote (or deleted) comes back from the registry as loaded (or
//! removed) and is skipped; and publishing what the database holds already under that name
//! (same hash) records nothing. A fetched blob whose bytes do not hash to the recorded SHA-256
//! is refused (error in the log, a `deploy_refused` event): the file in place, and what the
//! registry serves from it, stay as they are.
//!
//! At start (before the watcher's first scan) the folder is reconciled with the deployments:
//! a file deployed but missing here, or here with other content, is fetched (the database's
//! version wins); a file here whose deployment was removed (with the same content) is deleted;
//! a file only this host has is published once loaded, as any new file.
//!
//! Memory: at most one chunk (`store::BLOB_CHUNK`, 4 MiB) of a blob is held at once, when
//! publishing and when fetching; publishing first copies the file into the data folder's
//! `distribute/` (hashing it as it goes), so that the bytes stored are the bytes hashed.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use sha2::{Digest, Sha256};

use crate::logs::LogHub;
use crate::store::Store;

/// How often what failed on the store is done again.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Why a fetch did not write the file.
enum Fetch {
    /// The store failed (an outage): tried again later.
    Store(String),
    /// The blob is gone: a newer deployment replaced it, and its change follows.
    Gone,
    /// The bytes are not what was recorded, or the folder cannot be written.
    Refused(String),
}

enum Job {
    /// The registry loaded `path`, whose copy hashes to `sha256`.
    Loaded {
        path: PathBuf,
        sha256: String,
    },
    /// `path` was removed from the plugins folder.
    Removed(PathBuf),
    /// Another host changed what is deployed under this file name.
    Changed(String),
    Stop,
}

/// What the registry and the change listener tell this module: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Hook {
    tx: Sender<Job>,
    expected: Expected,
}

/// The SHA-256 each file just fetched must have when the registry opens its copy.
type Expected = Arc<Mutex<HashMap<PathBuf, String>>>;

fn lock(expected: &Expected) -> std::sync::MutexGuard<'_, HashMap<PathBuf, String>> {
    expected.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("distribute::Hook")
    }
}

impl Hook {
    /// The registry loaded `path`, hashing to `sha256`: published unless this module wrote it.
    pub fn loaded(&self, path: &Path, sha256: &str) {
        let _ = self.tx.send(Job::Loaded { path: path.to_path_buf(), sha256: sha256.to_string() });
    }

    /// `path` left the plugins folder: removed everywhere unless this module deleted it.
    pub fn removed(&self, path: &Path) {
        let _ = self.tx.send(Job::Removed(path.to_path_buf()));
    }

    /// What is deployed under `file` changed on another host: the folder is made to match.
    pub fn changed(&self, file: &str) {
        let _ = self.tx.send(Job::Changed(file.to_string()));
    }

    /// The SHA-256 `path` was fetched with, if this module just wrote it: the registry checks
    /// the copy it opens against it (taken once: a later write of the file is someone else's).
    pub fn take_expected(&self, path: &Path) -> Option<String> {
        lock(&self.expected).remove(path)
    }
}

/// The running distribution thread. Dropping it stops and joins the thread.
pub struct Distributor {
    tx: Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Distributor {
    /// Reconcile `plugins_dir` with the deployments (see the module docs), then start the
    /// thread. `work_dir` holds the copies being published. Call before the watcher's scan.
    pub fn start(
        store: Arc<Store>,
        plugins_dir: &Path,
        work_dir: &Path,
        logs: Arc<LogHub>,
    ) -> std::io::Result<(Distributor, Hook)> {
        fs::create_dir_all(work_dir)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let expected = Expected::default();
        let mut worker = Worker {
            expected: expected.clone(),
            retry: Default::default(),
            store,
            plugins_dir: plugins_dir.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
            logs,
            own: HashMap::new(),
        };
        worker.reconcile();
        let thread = std::thread::Builder::new()
            .name("bkg-distribute".into())
            .spawn(move || worker.run(rx))?;
        Ok((Distributor { tx: tx.clone(), thread: Some(thread) }, Hook { tx, expected }))
    }
}

impl Drop for Distributor {
    fn drop(&mut self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    store: Arc<Store>,
    plugins_dir: PathBuf,
    work_dir: PathBuf,
    logs: Arc<LogHub>,
    /// What this module wrote (file name -> hashes) or deleted (None) whose registry report
    /// has not come back yet: skipped when it does.
    own: HashMap<String, Vec<Option<String>>>,
    /// Shared with `Hook::take_expected`.
    expected: Expected,
    /// What failed on the store, by file name, done again every `RETRY_EVERY`.
    retry: std::collections::BTreeMap<String, Job>,
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name().and_then(|n| n.to_str()).map(str::to_string)
}

/// The plugin id a file name most likely provides (its stem without `lib`), for events.
fn id_of(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(file)
        .trim_start_matches("lib")
        .to_string()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's SHA-256, none when it does not exist.
fn hash_of(path: &Path) -> Option<String> {
    crate::loader::hash_file(path).ok()
}

impl Worker {
    fn run(mut self, rx: Receiver<Job>) {
        let mut next_retry = Instant::now() + RETRY_EVERY;
        loop {
            let job = if self.retry.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(next_retry.saturating_duration_since(Instant::now())) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            match job {
                Some(Job::Stop) => break,
                Some(job) => self.handle(job),
                None if self.retry.is_empty() => break,
                None => {}
            }
            if Instant::now() >= next_retry {
                // What failed on the store (an outage): done again, against what is now.
                for (_, job) in std::mem::take(&mut self.retry) {
                    self.handle(job);
                }
                next_retry = Instant::now() + RETRY_EVERY;
            }
        }
        tracing::debug!("distribution stopped");
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Loaded { path, sha256 } => self.on_loaded(&path, &sha256),
            Job::Removed(path) => self.on_removed(&path),
            Job::Changed(file) => self.apply(&file, false),
            Job::Stop => {}
        }
    }

    /// Do `job` again in `RETRY_EVERY` (the store failed; a newer job for the file replaces
    /// it). Logged once per file until it succeeds.
    fn retry_later(&mut self, file: &str, job: Job, why: &str) {
        if self.retry.insert(file.to_string(), job).is_none() {
            tracing::warn!(
                file,
                "plugin distribution: {why}; retrying every {} s",
                RETRY_EVERY.as_secs()
            );
        }
    }

    /// Take back one report of what this module did to `file`, if it is one.
    fn was_own(&mut self, file: &str, what: Option<&str>) -> bool {
        let Some(pending) = self.own.get_mut(file) else { return false };
        let Some(i) = pending.iter().position(|p| p.as_deref() == what) else { return false };
        pending.remove(i);
        if pending.is_empty() {
            self.own.remove(file);
        }
        true
    }

    fn on_loaded(&mut self, path: &Path, sha256: &str) {
        let Some(file) = file_name(path) else { return };
        if self.was_own(&file, Some(sha256)) {
            tracing::debug!(file, "loaded what was fetched from the database; nothing to publish");
            return;
        }
        match self.store.deployment(&file) {
            Ok(Some(d)) if !d.removed && d.sha256 == sha256 => return,
            Ok(_) => {}
            Err(e) => {
                let job = Job::Loaded { path: path.to_path_buf(), sha256: sha256.to_string() };
                return self.retry_later(&file, job, &format!("cannot publish: {e}"));
            }
        }
        if let Err(e) = self.publish(&file, path) {
            if path.exists() {
                let job = Job::Loaded { path: path.to_path_buf(), sha256: sha256.to_string() };
                self.retry_later(&file, job, &format!("cannot publish: {e}"));
            } else {
                tracing::debug!(file, "not published, gone meanwhile: {e}");
            }
        }
    }

    /// Copy the file aside (hashing it), then store that copy.
    fn publish(&mut self, file: &str, path: &Path) -> Result<(), String> {
        let copy = self.work_dir.join(format!("publish-{file}"));
        let sha256 = (|| -> std::io::Result<String> {
            let mut from = fs::File::open(path)?;
            let mut to = fs::File::create(&copy)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
            }
            Ok(hex(&hasher.finalize()))
        })()
        .map_err(|e| format!("cannot copy {}: {e}", path.display()));
        let result = sha256.and_then(|sha256| {
            let mut reader = fs::File::open(&copy).map_err(|e| e.to_string())?;
            let changed =
                self.store.deploy(file, &sha256, &mut reader).map_err(|e| e.to_string())?;
            if changed {
                tracing::info!(file, sha256, "plugin file published to the other hosts");
            }
            Ok(())
        });
        let _ = fs::remove_file(&copy);
        result
    }

    fn on_removed(&mut self, path: &Path) {
        let Some(file) = file_name(path) else { return };
        if self.was_own(&file, None) {
            return;
        }
        if path.exists() {
            // Replaced by now (renamed over): the load that follows publishes it.
            return;
        }
        match self.store.undeploy(&file) {
            Ok(true) => tracing::info!(file, "plugin file removed from every host"),
            Ok(false) => {}
            Err(e) => self.retry_later(
                &file,
                Job::Removed(path.to_path_buf()),
                &format!("cannot remove the plugin file from the other hosts: {e}"),
            ),
        }
    }

    /// At start: every deployment applied to the folder (files only this host has are
    /// published when the registry loads them).
    fn reconcile(&mut self) {
        let deployments = match self.store.deployments() {
            Ok(d) => d,
            Err(e) => {
                return tracing::warn!(
                    "cannot read the deployed plugin files, not catching up: {e}"
                )
            }
        };
        for d in deployments {
            self.apply(&d.file, true);
        }
        // The registry reports the files written now as loaded, once it loads them at its
        // first scan: that report is expected, as for any fetched file.
    }

    /// Make the folder's `file` match its deployment. At start a removed deployment deletes
    /// only a copy of the removed content (another one is this host's own, published later).
    fn apply(&mut self, file: &str, at_start: bool) {
        let d = match self.store.deployment(file) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                let why = format!("cannot read the deployment: {e}");
                return self.retry_later(file, Job::Changed(file.to_string()), &why);
            }
        };
        if file.contains('/')
            || file.starts_with('.')
            || !crate::watcher::is_candidate(Path::new(file))
        {
            return tracing::warn!(
                file,
                "ignoring a deployment whose file name is not a plugin library's"
            );
        }
        let path = self.plugins_dir.join(file);
        let local = hash_of(&path);
        if d.removed {
            let Some(local) = local else { return };
            if at_start && local != d.sha256 {
                return;
            }
            self.own.entry(file.to_string()).or_default().push(None);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file, "plugin file removed: it was removed on another host")
                }
                Err(e) => {
                    self.was_own(file, None);
                    tracing::warn!(file, "cannot remove the plugin file another host removed: {e}");
                }
            }
            return;
        }
        if local.as_deref() == Some(d.sha256.as_str()) {
            return;
        }
        match self.fetch(file, &d.sha256, &path) {
            Ok(()) => {
                self.own.entry(file.to_string()).or_default().push(Some(d.sha256.clone()));
                tracing::info!(file, sha256 = d.sha256, "plugin file fetched from the database");
            }
            Err(Fetch::Store(e)) => {
                let why = format!("cannot fetch from the database: {e}");
                self.retry_later(file, Job::Changed(file.to_string()), &why);
            }
            Err(Fetch::Gone) => {
                tracing::debug!(file, "its blob was replaced meanwhile: the newer change follows")
            }
            Err(Fetch::Refused(e)) => {
                let message = format!("refused the plugin file {file} from the database: {e}");
                tracing::error!(file, sha256 = d.sha256, "{message}");
                let id = id_of(file);
                self.logs.push(&id, crate::logs::Level::Error, "host", "distribute", &message);
                let details = serde_json::json!({
                    "file": file, "sha256": d.sha256, "error": e, "host": self.store.origin(),
                });
                if let Err(e) =
                    self.store.add_event(Some(&id), "deploy_refused", "distribute", details)
                {
                    tracing::warn!(file, "cannot write event: {e}");
                }
            }
        }
    }

    /// Fetch the blob `sha256` into a hidden file of the plugins folder, check its hash and
    /// rename it to `path`.
    fn fetch(&self, file: &str, sha256: &str, path: &Path) -> Result<(), Fetch> {
        let temp = self.plugins_dir.join(format!(".{file}.bkg-fetch"));
        let store = |e: crate::store::StoreError| Fetch::Store(e.to_string());
        let write =
            |e: std::io::Error| Fetch::Refused(format!("cannot write {}: {e}", temp.display()));
        let result = (|| -> Result<(), Fetch> {
            let chunks = self.store.blob_chunks(sha256).map_err(store)?.ok_or(Fetch::Gone)?;
            let mut out = fs::File::create(&temp).map_err(write)?;
            let mut hasher = Sha256::new();
            for seq in 0..chunks {
                let chunk =
                    self.store.blob_chunk(sha256, seq).map_err(store)?.ok_or(Fetch::Gone)?;
                hasher.update(&chunk);
                out.write_all(&chunk).map_err(write)?;
            }
            let got = hex(&hasher.finalize());
            if got != sha256 {
                return Err(Fetch::Refused(format!(
                    "its bytes hash to SHA-256 {got}, not the recorded {sha256} (corrupt blob)"
                )));
            }
            out.sync_all().map_err(write)?;
            drop(out);
            lock(&self.expected).insert(path.to_path_buf(), sha256.to_string());
            fs::rename(&temp, path).map_err(|e| {
                lock(&self.expected).remove(path);
                Fetch::Refused(format!("cannot rename into {}: {e}", path.display()))
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_hash_is_taken_once_per_path() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let hook = Hook { tx, expected: Expected::default() };
        let (a, b) = (Path::new("/p/liba.so"), Path::new("/p/libb.so"));
        lock(&hook.expected).insert(a.to_path_buf(), "h1".into());
        assert_eq!(hook.take_expected(b), None);
        assert_eq!(hook.take_expected(a).as_deref(), Some("h1"));
        assert_eq!(hook.take_expected(a), None, "a later write of the file is not checked");
    }

    #[test]
    fn deployment_file_names_give_the_plugin_id() {
        assert_eq!(id_of("libecho.so"), "echo");
        assert_eq!(id_of("echo.so"), "echo");
    }
}
