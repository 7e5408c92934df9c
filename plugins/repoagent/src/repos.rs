//! The repositories repoagent knows: the registry (name -> root, build state, index), path
//! safety for `repo.add`, and `repos.json` in the plugin's data dir (written atomically).
//!
//! Path safety: a repository's root is the canonical path (symbolic links and `..` resolved)
//! of an existing folder under one of the configured `roots` (resolved at each check), and
//! never in `/proc`, `/sys` or `/dev`. Nothing is ever written into a repository.
//!
//! Locking: a repository's index is an `Arc<RepoIndex>` behind a lock that is only ever held to
//! clone or swap that pointer, never while work runs (so never while waiting for the pool):
//! readers work on their own `Arc`, writers on a copy that replaces the index if it is still
//! the one they copied. No lock is held across a capability's work, so a capability may call
//! `Pool::install` inside `with_index`/`with_index_mut` (and the other way round) freely.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use bkg_abi::Error;
use serde::{Deserialize, Serialize};

use crate::api::{RepoInfo, RepoProgress};
use crate::index::RepoIndex;

pub(crate) fn poisoned() -> Error {
    Error::internal("a lock was poisoned by an earlier panic")
}

/// Where a repository's builds stand; `epoch` numbers the builds (a newer one supersedes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildState {
    Indexing { epoch: u64 },
    Ready { epoch: u64 },
    Error { epoch: u64, message: String },
}

/// One repository.
pub struct RepoEntry {
    pub name: String,
    /// Canonical.
    pub root: PathBuf,
    index: RwLock<Option<Arc<RepoIndex>>>,
    state: Mutex<BuildState>,
    changed: Condvar,
    /// The newest build's number: an older build stops.
    pub(crate) epoch: AtomicU64,
    /// Removed (or its add was cancelled): its builds stop, nothing is stored.
    pub(crate) removed: AtomicBool,
    pub(crate) files_done: AtomicUsize,
    pub(crate) files_total: AtomicUsize,
    pub(crate) watching: AtomicBool,
    /// Whole walks started.
    pub(crate) builds: AtomicU64,
    /// Answering from an index loaded from disk while a walk checks it against the files
    /// (state `ready`, `verifying: true`); the watcher's changes wait until it is done.
    pub(crate) verifying: AtomicBool,
    /// The saved index (`persist.rs`): held while one is written or deleted.
    pub(crate) saving: Mutex<SaveState>,
    /// A change the watcher applied is not saved yet (saved at most every `SAVE_EVERY`).
    pub(crate) save_wanted: AtomicBool,
}

/// What is saved of a repository's index.
#[derive(Debug, Default)]
pub struct SaveState {
    /// The generation on disk (None: unknown or none).
    pub generation: Option<u64>,
    /// When the last save began.
    pub at: Option<std::time::Instant>,
}

impl RepoEntry {
    pub fn new(name: String, root: PathBuf) -> Self {
        RepoEntry {
            name,
            root,
            index: RwLock::new(None),
            state: Mutex::new(BuildState::Indexing { epoch: 0 }),
            changed: Condvar::new(),
            epoch: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            files_done: AtomicUsize::new(0),
            files_total: AtomicUsize::new(0),
            watching: AtomicBool::new(false),
            builds: AtomicU64::new(0),
            verifying: AtomicBool::new(false),
            saving: Mutex::new(SaveState::default()),
            save_wanted: AtomicBool::new(false),
        }
    }

    /// The index as it is now (None before the first build ends).
    pub fn snapshot(&self) -> Option<Arc<RepoIndex>> {
        self.index.read().ok().and_then(|i| i.clone())
    }

    /// Put in a new index (a build's).
    pub(crate) fn store(&self, index: RepoIndex) {
        if let Ok(mut slot) = self.index.write() {
            *slot = Some(Arc::new(index));
        }
    }

    /// Replace the index with `new` only if it is still `old` (else false: someone replaced
    /// it meanwhile).
    pub(crate) fn swap_if(&self, old: &Arc<RepoIndex>, new: RepoIndex) -> bool {
        match self.index.write() {
            Ok(mut slot) if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, old)) => {
                *slot = Some(Arc::new(new));
                true
            }
            _ => false,
        }
    }

    pub fn state(&self) -> BuildState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(BuildState::Error { epoch: 0, message: "a lock was poisoned".into() })
    }

    pub(crate) fn set_state(&self, state: BuildState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
        self.changed.notify_all();
    }

    /// Wait (at most `timeout`) for the state to change or progress to be made.
    pub(crate) fn wait(&self, timeout: Duration) {
        if let Ok(s) = self.state.lock() {
            let _ = self.changed.wait_timeout(s, timeout);
        }
    }

    pub(crate) fn wake(&self) {
        self.changed.notify_all();
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state(), BuildState::Ready { .. })
    }

    pub fn progress(&self) -> RepoProgress {
        RepoProgress {
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
        }
    }

    pub fn info(&self) -> RepoInfo {
        let state = self.state();
        let index = self.snapshot();
        let index = index.as_deref();
        RepoInfo {
            name: self.name.clone(),
            path: self.root.display().to_string(),
            state: match state {
                BuildState::Indexing { .. } => "indexing",
                BuildState::Ready { .. } => "ready",
                BuildState::Error { .. } => "error",
            },
            files: index.map_or(0, |i| i.files.len()),
            languages: index.map(RepoIndex::languages).unwrap_or_default(),
            indexed_at: index.map(|i| i.indexed_at),
            watching: self.watching.load(Ordering::SeqCst),
            generation: index.map_or(0, |i| i.generation),
            builds: self.builds.load(Ordering::SeqCst),
            verifying: matches!(state, BuildState::Ready { .. })
                && self.verifying.load(Ordering::SeqCst),
            skipped_large: index.map_or(0, |i| i.skipped_large.len() as u64),
            skipped_binary: index.map_or(0, |i| i.skipped_binary.len() as u64),
            progress: matches!(state, BuildState::Indexing { .. }).then(|| self.progress()),
            error: match state {
                BuildState::Error { message, .. } => Some(message),
                _ => None,
            },
        }
    }

    fn no_index(&self) -> Error {
        match self.state() {
            BuildState::Error { message, .. } => Error::conflict(format!(
                "repository {} has no index: its last build failed: {message}",
                self.name
            )),
            _ => {
                let p = self.progress();
                Error::conflict(format!(
                    "repository {} is still indexing ({} of {} files read); try again shortly",
                    self.name, p.files_done, p.files_total
                ))
            }
        }
    }
}

/// The registry.
#[derive(Default)]
pub struct Repos {
    map: RwLock<BTreeMap<String, Arc<RepoEntry>>>,
}

impl Repos {
    /// One repository: 404 naming it and the known ones when unknown.
    pub fn get(&self, repo: &str) -> Result<Arc<RepoEntry>, Error> {
        let map = self.map.read().map_err(|_| poisoned())?;
        map.get(repo).cloned().ok_or_else(|| {
            if map.is_empty() {
                Error::not_found(format!(
                    "no repository named {repo:?}: none is added yet (repo.add {{path}})"
                ))
            } else {
                let known: Vec<&str> = map.keys().map(String::as_str).collect();
                Error::not_found(format!(
                    "no repository named {repo:?}; known: {}",
                    known.join(", ")
                ))
            }
        })
    }

    /// Read a repository's index (as it is when the call begins; no lock is held while `f`
    /// runs): 404 when unknown, 409 "still indexing" while it has none.
    pub fn with_index<T>(
        &self,
        repo: &str,
        f: impl FnOnce(&RepoIndex) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let entry = self.get(repo)?;
        match entry.snapshot() {
            Some(index) => f(&index),
            None => Err(entry.no_index()),
        }
    }

    /// Change a repository's index (e.g. to keep metrics computed lazily): `f` changes a copy,
    /// which replaces the index if nothing else did meanwhile; if a build or the watcher
    /// replaced it first, the change (made to an older index) is dropped. `f`'s answer is
    /// returned either way; an error from `f` changes nothing.
    pub fn with_index_mut<T>(
        &self,
        repo: &str,
        f: impl FnOnce(&mut RepoIndex) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let entry = self.get(repo)?;
        let Some(old) = entry.snapshot() else { return Err(entry.no_index()) };
        let mut copy = RepoIndex::clone(&old);
        let answer = f(&mut copy)?;
        entry.swap_if(&old, copy);
        Ok(answer)
    }

    /// Every repository, by name.
    pub fn all(&self) -> Vec<Arc<RepoEntry>> {
        self.map.read().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Add a repository: 409 when the name is taken or the folder is already added.
    pub fn insert(&self, entry: Arc<RepoEntry>) -> Result<(), Error> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        if map.contains_key(&entry.name) {
            return Err(Error::conflict(format!(
                "a repository named {} exists already: pick another name (repo.add {{path, name}})",
                entry.name
            )));
        }
        if let Some(other) = map.values().find(|e| e.root == entry.root) {
            return Err(Error::conflict(format!(
                "{} is already added as repository {}",
                entry.root.display(),
                other.name
            )));
        }
        map.insert(entry.name.clone(), entry);
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Option<Arc<RepoEntry>> {
        let removed = self.map.write().ok()?.remove(name);
        if let Some(e) = &removed {
            e.removed.store(true, Ordering::SeqCst);
            e.wake();
        }
        removed
    }

    /// Forget every repository (at stop): their builds stop.
    pub fn clear(&self) {
        let old = self.map.write().map(|mut m| std::mem::take(&mut *m)).unwrap_or_default();
        for e in old.values() {
            e.removed.store(true, Ordering::SeqCst);
            e.wake();
        }
    }

    /// The repository whose root holds `path` (the deepest, if roots nest).
    pub fn find_by_path(&self, path: &Path) -> Option<Arc<RepoEntry>> {
        let map = self.map.read().ok()?;
        map.values()
            .filter(|e| path.starts_with(&e.root))
            .max_by_key(|e| e.root.components().count())
            .cloned()
    }

    /// What `repos.json` holds.
    pub fn saved(&self) -> Vec<Saved> {
        self.all()
            .iter()
            .map(|e| Saved { name: e.name.clone(), path: e.root.display().to_string() })
            .collect()
    }
}

/// A repository name: 1 to 64 of letters, digits, `.`, `_` and `-`, not starting with `.`.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "name {name:?}: use 1 to 64 of letters, digits, '.', '_' and '-' (not starting with '.')"
        )))
    }
}

/// The virtual file systems never read, whatever the roots say.
const FORBIDDEN: [&str; 3] = ["/proc", "/sys", "/dev"];

fn forbidden(path: &Path) -> Option<&'static str> {
    FORBIDDEN.into_iter().find(|f| path.starts_with(f))
}

/// Check a path given to `repo.add` against the allowed roots (absolute, resolved here, now:
/// one that does not exist allows nothing): the canonical folder it names.
pub fn check_path(roots: &[PathBuf], path: &str) -> Result<PathBuf, Error> {
    if roots.is_empty() {
        return Err(Error::bad_request(
            "no repository roots are allowed: set `roots` (a list of absolute folders) in the \
             repoagent plugin's config (POST /api/core/plugins/repoagent/config) first",
        ));
    }
    let allowed = || roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
    if path.trim().is_empty() {
        return Err(Error::bad_request("path is empty: give the absolute path of a folder"));
    }
    let given = Path::new(path);
    if !given.is_absolute() {
        return Err(Error::bad_request(format!(
            "path {path:?} is relative: give an absolute path under one of the allowed roots ({})",
            allowed()
        )));
    }
    if let Some(f) = forbidden(given) {
        return Err(Error::bad_request(format!(
            "path {path:?} is in {f}, a virtual file system repoagent never reads"
        )));
    }
    let canonical = std::fs::canonicalize(given).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::bad_request(format!("path {path:?} does not exist"))
        } else {
            Error::bad_request(format!("path {path:?} cannot be resolved: {e}"))
        }
    })?;
    if let Some(f) = forbidden(&canonical) {
        return Err(Error::bad_request(format!(
            "path {path:?} resolves to {}, in {f}, a virtual file system repoagent never reads",
            canonical.display()
        )));
    }
    let resolved: Vec<PathBuf> =
        roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).collect();
    if !resolved.iter().any(|r| canonical.starts_with(r)) {
        let how = if canonical.as_path() == given {
            String::new()
        } else {
            format!(" resolves to {} (through `..` or a symbolic link) and", canonical.display())
        };
        return Err(Error::bad_request(format!(
            "path {path:?}{how} is outside the allowed roots ({}): add a root in the plugin's \
             config to allow it",
            allowed()
        )));
    }
    let meta = std::fs::metadata(&canonical)
        .map_err(|e| Error::bad_request(format!("path {path:?}: {e}")))?;
    if !meta.is_dir() {
        return Err(Error::bad_request(format!(
            "path {path:?} is a file, not a folder: give the repository's folder"
        )));
    }
    Ok(canonical)
}

/// One repository in `repos.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedFile {
    version: u32,
    repos: Vec<Saved>,
}

const FILE: &str = "repos.json";

/// The repositories saved in `dir` (none when there is no file yet).
pub fn load(dir: &Path) -> Result<Vec<Saved>, Error> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::internal(format!("reading {}: {e}", path.display()))),
    };
    let file: SavedFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("{} is damaged: {e}", path.display())))?;
    Ok(file.repos)
}

/// Save the repositories into `dir` atomically: a temp file written and fsynced, renamed over
/// the old one, the folder fsynced.
pub fn save(dir: &Path, repos: Vec<Saved>) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| Error::internal(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io(&format!("creating {}", dir.display()), e))?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let body = serde_json::to_vec_pretty(&SavedFile { version: 1, repos })
        .map_err(|e| Error::internal(format!("serialize: {e}")))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&format!("{}", tmp.display()), e))?;
    f.write_all(&body).map_err(|e| io(&format!("writing {}", tmp.display()), e))?;
    f.sync_all().map_err(|e| io(&format!("fsync {}", tmp.display()), e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| io(&format!("renaming to {}", path.display()), e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let repos = vec![Saved { name: "a".into(), path: "/x/a".into() }];
        save(dir.path(), repos.clone()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), repos);
        assert!(!dir.path().join(".repos.json.tmp").exists());
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(load(dir.path()).unwrap_err().message.contains("damaged"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("serde_json-1.0").is_ok());
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
