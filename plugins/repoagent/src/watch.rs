//! Watching the repositories: one notify watcher (inotify on Linux), recursive on every
//! repository's root, and one thread of the plugin's (`bkg-repoagent-watch`) that takes its
//! events, waits until they settle (`DEBOUNCE` without a new one, at most `MAX_DELAY` after
//! the first) and hands the changed paths to the plugin, which re-reads just those files.
//!
//! Stopping: dropping the notify watcher tells its event-loop thread (which notify starts
//! detached) to end; that thread owns the channel's sender, so the channel closes when it is
//! done, and only then does our thread end and `stop` join it. No thread is left behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bkg_abi::Error;
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::Core;

/// Quiet time after the last event before the changes are applied.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Changes are applied at the latest this long after the first of them, even if events keep
/// coming.
pub const MAX_DELAY: Duration = Duration::from_millis(400);
const TICK: Duration = Duration::from_millis(50);

struct Running {
    watcher: RecommendedWatcher,
    thread: JoinHandle<()>,
}

/// The paths changed since they were last applied.
#[derive(Default, Debug)]
pub struct Pending {
    pub paths: BTreeSet<PathBuf>,
    /// The kernel dropped events (queue overflow): every repository is indexed again.
    pub rescan: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan
    }
}

#[derive(Default)]
pub struct Watcher {
    running: Mutex<Option<Running>>,
}

fn poisoned() -> Error {
    Error::internal("watcher: a lock was poisoned by an earlier panic")
}

impl Watcher {
    /// Start the notify watcher and our thread.
    pub fn start(&self, core: Weak<Core>) -> Result<(), Error> {
        self.stop()?;
        let (tx, rx) = channel();
        // Never through a symbolic link: one inside a repository may lead anywhere (`/`).
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = RecommendedWatcher::new(tx, config)
            .map_err(|e| Error::internal(format!("starting the file watcher: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("bkg-repoagent-watch".into())
            .spawn(move || run(rx, core))
            .map_err(|e| Error::internal(format!("starting the watch thread: {e}")))?;
        *self.running.lock().map_err(|_| poisoned())? = Some(Running { watcher, thread });
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.running.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// Watch a repository's root (recursively). False when the watcher is not running.
    pub fn watch(&self, root: &Path) -> Result<bool, Error> {
        let mut running = self.running.lock().map_err(|_| poisoned())?;
        match running.as_mut() {
            Some(r) => r
                .watcher
                .watch(root, RecursiveMode::Recursive)
                .map(|()| true)
                .map_err(|e| Error::internal(format!("watching {}: {e}", root.display()))),
            None => Ok(false),
        }
    }

    pub fn unwatch(&self, root: &Path) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(r) = running.as_mut() {
                let _ = r.watcher.unwatch(root);
            }
        }
    }

    /// Drop the notify watcher, wait for its thread to let go of the channel and join ours.
    pub fn stop(&self) -> Result<(), Error> {
        let old = self.running.lock().map_err(|_| poisoned())?.take();
        if let Some(Running { watcher, thread }) = old {
            drop(watcher);
            thread.join().map_err(|_| Error::internal("the watch thread panicked"))?;
        }
        Ok(())
    }
}

/// Our thread: gather events, apply them once they settle; ends when the channel closes.
fn run(rx: Receiver<notify::Result<notify::Event>>, core: Weak<Core>) {
    let mut pending = Pending::default();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        match rx.recv_timeout(TICK) {
            // Opening and reading a file (ours too: the walk reads `.gitignore`) changes nothing.
            Ok(Ok(event)) if matches!(event.kind, notify::EventKind::Access(_)) => {}
            Ok(Ok(event)) => {
                pending.rescan |= event.need_rescan();
                pending.paths.extend(event.paths);
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
            }
            Ok(Err(e)) => {
                if let Some(core) = core.upgrade() {
                    core.host.warn(&format!("file watcher: {e}"));
                }
                pending.rescan = true;
                first.get_or_insert_with(Instant::now);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // The indexes changed lately, saved once due (`Core::flush_saves`).
        if let Some(core) = core.upgrade() {
            core.flush_saves();
        }
        let due = first.is_some_and(|f| f.elapsed() >= MAX_DELAY) || last.elapsed() >= DEBOUNCE;
        if pending.is_empty() || !due {
            continue;
        }
        match core.upgrade() {
            Some(core) => core.apply_pending(&mut pending),
            None => pending = Pending::default(),
        }
        // What is left waits for a repository still indexing: retried on the next tick.
        first = if pending.is_empty() { None } else { first };
    }
}
