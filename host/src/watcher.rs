//! The watcher: turns file-system events in the plugins folder into "this file is complete"
//! and "this file is gone" commands for the registry.
//!
//! A file is handed over only when it is complete. One renamed into the folder is complete by
//! definition (a rename is atomic: the writer finished before it): it is handed over at once,
//! without a quiet period or polls. One written in place (`cp`) is handed over once it was
//! closed after writing (inotify's close-write) and its size and mtime were stable across two
//! polls. Writers whose close we cannot see are handed over after a longer quiet period.
//! Hidden and temporary files, and files without the platform's library extension, are ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::registry::{Command, RegistryHandle};

/// Timing of the watcher.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Quiet time after the last event before a complete (renamed / closed) file is handed over.
    pub debounce: Duration,
    /// Quiet time before a file whose writer was never seen closing is handed over anyway.
    pub settle: Duration,
    /// How often pending files are checked: on this tick, whether or not events keep coming.
    pub poll: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(20),
            settle: Duration::from_secs(2),
            poll: Duration::from_millis(10),
        }
    }
}

/// True for files the host should consider: the platform's library extension, not hidden,
/// not a temporary or partial download.
pub fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.')
        || name.starts_with('~')
        || name.starts_with('#')
        || name.ends_with('~')
    {
        return false;
    }
    path.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION)
}

#[derive(Debug)]
struct Pending {
    last_event: Instant,
    complete: bool,
    stat: Option<(u64, SystemTime)>,
}

fn stat(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    Some((meta.len(), meta.modified().ok()?))
}

/// The running watcher; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: RecommendedWatcher,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: crossbeam_channel::Sender<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the watcher knows between events: the files waiting to be complete, and the last
/// rename handed over (see [`handle`]). Shared by `notify`'s thread, which takes the events in
/// as they come, and the watcher's thread, which checks the waiting files on a fixed tick.
#[derive(Default)]
struct Inbox {
    pending: HashMap<PathBuf, Pending>,
    renamed: Option<(PathBuf, usize)>,
}

type SharedInbox = Arc<Mutex<Inbox>>;

fn lock(inbox: &SharedInbox) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|p| p.into_inner())
}

/// Take in one event on `notify`'s thread, and hand over at once what it makes complete (a
/// file renamed into the folder): straight to the registry, without a hop through the
/// watcher's thread (each wake-up of another thread costs up to a scheduler slice, about a
/// millisecond, on a busy machine).
fn on_event(
    dir: &Path,
    inbox: &SharedInbox,
    registry: &RegistryHandle,
    event: notify::Result<notify::Event>,
) {
    let ready = {
        let mut inbox = lock(inbox);
        let Inbox { pending, renamed } = &mut *inbox;
        handle(dir, pending, renamed, event)
    };
    for path in ready {
        registry.send(Command::FileReady(path));
    }
}

/// Scan `dir` once (every existing candidate is handed over), then watch it.
pub fn watch(
    dir: &Path,
    registry: RegistryHandle,
    settings: WatchSettings,
) -> notify::Result<PluginWatcher> {
    let inbox = SharedInbox::default();
    let mut watcher = {
        let (dir, inbox, registry) = (dir.to_path_buf(), inbox.clone(), registry.clone());
        notify::recommended_watcher(move |ev| on_event(&dir, &inbox, &registry, ev))?
    };
    watcher.watch(dir, RecursiveMode::NonRecursive)?;

    let mut initial: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_candidate(p) && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    initial.sort();
    for path in &initial {
        registry.send(Command::FileReady(path.clone()));
    }
    registry.send(Command::Ready);

    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let thread = std::thread::Builder::new()
        .name("bkg-watcher".into())
        .spawn(move || flush_loop(inbox, stop_rx, registry, settings))?;
    Ok(PluginWatcher { _watcher: watcher, thread: Some(thread), stop: stop_tx })
}

/// Check the waiting files on a fixed tick, whatever the events do: a steady stream of them (a
/// log file written next to the plugins, say) cannot keep the check from running.
fn flush_loop(
    inbox: SharedInbox,
    stop: Receiver<()>,
    registry: RegistryHandle,
    settings: WatchSettings,
) {
    loop {
        match stop.recv_timeout(settings.poll) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        flush(&mut lock(&inbox).pending, &registry, &settings);
    }
}

/// Take in one event. Answers the files to hand over right now: those renamed into the folder
/// (the destination of a rename), which are complete by definition; everything else waits in
/// `pending` for [`flush`].
///
/// One rename is reported twice when its source is watched too (inotify: `To` with the
/// destination, then `Both` with both paths, under one tracker, the rename's cookie): `renamed`
/// keeps the last destination handed over with its tracker, so that the second report is not
/// handed over again (the registry would copy the file once more, and hash it to find it
/// unchanged, while the swap it just made answers its first calls).
fn handle(
    dir: &Path,
    pending: &mut HashMap<PathBuf, Pending>,
    renamed: &mut Option<(PathBuf, usize)>,
    event: notify::Result<notify::Event>,
) -> Vec<PathBuf> {
    let mut ready = Vec::new();
    match event {
        Ok(event) => {
            let last = event.paths.len().saturating_sub(1);
            for (i, path) in event.paths.iter().enumerate() {
                if path.parent() != Some(dir) || !is_candidate(path) {
                    continue;
                }
                let renamed_in = match event.kind {
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)) => true,
                    // Both paths in one event: the source first, the destination last.
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => i == last && i > 0,
                    _ => false,
                };
                if renamed_in && stat(path).is_some() {
                    pending.remove(path);
                    let tracker = event.tracker();
                    let seen = tracker.is_some()
                        && renamed.as_ref().is_some_and(|(p, t)| p == path && Some(*t) == tracker);
                    if seen {
                        continue;
                    }
                    *renamed = tracker.map(|t| (path.clone(), t));
                    tracing::debug!(file = %path.display(), "renamed in: handed over at once");
                    ready.push(path.clone());
                } else {
                    note(pending, path, &event.kind);
                }
            }
        }
        Err(e) => tracing::warn!("watch error: {e}"),
    }
    ready
}

fn note(pending: &mut HashMap<PathBuf, Pending>, path: &Path, kind: &EventKind) {
    let complete = match kind {
        // Reads (ours included) say nothing about the file's contents.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => return,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => true,
        _ => false,
    };
    let entry = pending.entry(path.to_path_buf()).or_insert(Pending {
        last_event: Instant::now(),
        complete: false,
        stat: None,
    });
    entry.last_event = Instant::now();
    // A new write after a close starts a new, incomplete round.
    entry.complete =
        complete || (entry.complete && matches!(kind, EventKind::Modify(ModifyKind::Metadata(_))));
    entry.stat = None;
}

fn flush(
    pending: &mut HashMap<PathBuf, Pending>,
    registry: &RegistryHandle,
    settings: &WatchSettings,
) {
    let now = Instant::now();
    pending.retain(|path, p| {
        let quiet = now.duration_since(p.last_event);
        let Some(current) = stat(path) else {
            if quiet >= settings.debounce {
                registry.send(Command::FileRemoved(path.clone()));
                return false;
            }
            return true;
        };
        let wait = if p.complete { settings.debounce } else { settings.settle };
        if quiet < wait {
            return true;
        }
        if p.stat == Some(current) {
            registry.send(Command::FileReady(path.clone()));
            return false;
        }
        p.stat = Some(current);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, Event};

    #[test]
    fn candidates() {
        let ext = std::env::consts::DLL_EXTENSION;
        assert!(is_candidate(Path::new(&format!("/p/echo.{ext}"))));
        assert!(!is_candidate(Path::new(&format!("/p/.echo.{ext}"))));
        assert!(!is_candidate(Path::new(&format!("/p/echo.{ext}~"))));
        assert!(!is_candidate(Path::new(&format!("/p/echo.{ext}.tmp"))));
        assert!(!is_candidate(Path::new(&format!("/p/echo.{ext}.part"))));
        assert!(!is_candidate(Path::new("/p/readme.txt")));
    }

    #[test]
    fn a_file_renamed_into_the_folder_is_handed_over_at_once_one_written_in_place_waits() {
        let dir = tempfile::tempdir().unwrap();
        let ext = std::env::consts::DLL_EXTENSION;
        let (renamed, copied) =
            (dir.path().join(format!("a.{ext}")), dir.path().join(format!("b.{ext}")));
        std::fs::write(&renamed, b"the library").unwrap();
        std::fs::write(&copied, b"the library").unwrap();
        let hidden = dir.path().join(format!(".a.{ext}.tmp"));
        let mut pending = HashMap::new();
        let mut last = None;
        let event = |kind: EventKind, paths: &[&Path]| {
            let mut e = Event::new(kind);
            for p in paths {
                e = e.add_path(p.to_path_buf());
            }
            Ok(e)
        };
        // One event with both paths, no tracker (how other platforms may report a rename).
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let ready = handle(dir.path(), &mut pending, &mut last, event(both, &[&hidden, &renamed]));
        assert_eq!(ready, vec![renamed.clone()]);
        assert!(pending.is_empty(), "{pending:?}");
        // The destination alone (the source was outside the folder).
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(
            handle(dir.path(), &mut pending, &mut last, event(to, &[&renamed])),
            vec![renamed]
        );
        // `cp`: written and closed in place, so it waits for the quiet period and the polls.
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        assert!(handle(dir.path(), &mut pending, &mut last, event(written, &[&copied])).is_empty());
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(handle(dir.path(), &mut pending, &mut last, event(closed, &[&copied])).is_empty());
        assert!(pending[&copied].complete, "{pending:?}");
        // A rename whose destination is gone again by the time the event is read waits too
        // (and is then reported removed by the flush).
        let gone = dir.path().join(format!("gone.{ext}"));
        assert!(handle(dir.path(), &mut pending, &mut last, event(to, &[&gone])).is_empty());
        assert!(pending.contains_key(&gone));
    }

    /// Regression (issue 15, swap latency): `mv .a.so.tmp a.so` in the folder is reported by
    /// inotify as `From`, `To` and `Both` (one cookie); the file was handed over twice, and the
    /// registry copied and hashed it a second time right after each swap.
    #[test]
    fn a_rename_reported_twice_is_handed_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let ext = std::env::consts::DLL_EXTENSION;
        let (renamed, hidden) =
            (dir.path().join(format!("a.{ext}")), dir.path().join(format!(".a.{ext}.tmp")));
        std::fs::write(&renamed, b"the library").unwrap();
        let (mut pending, mut last) = (HashMap::new(), None);
        let mut handed = Vec::new();
        for cookie in [7, 8] {
            let name = |mode| EventKind::Modify(ModifyKind::Name(mode));
            let reports = [
                Event::new(name(RenameMode::From)).add_path(hidden.clone()),
                Event::new(name(RenameMode::To)).add_path(renamed.clone()),
                Event::new(name(RenameMode::Both))
                    .add_path(hidden.clone())
                    .add_path(renamed.clone()),
            ];
            for e in reports {
                handed.extend(handle(
                    dir.path(),
                    &mut pending,
                    &mut last,
                    Ok(e.set_tracker(cookie)),
                ));
            }
            // Each rename (a cookie of its own) is handed over once.
            assert_eq!(handed.len(), cookie - 6, "{handed:?}");
        }
        assert_eq!(handed, vec![renamed.clone(), renamed]);
        assert!(pending.is_empty(), "{pending:?}");
    }

    #[test]
    fn a_stream_of_events_does_not_keep_a_complete_file_from_being_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join(format!("p.{}", std::env::consts::DLL_EXTENSION));
        std::fs::write(&plugin, b"the library").unwrap();
        let junk = dir.path().join("busy.log");
        let (registry, commands) = RegistryHandle::detached();
        let inbox = SharedInbox::default();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let looped = {
            let (inbox, registry) = (inbox.clone(), registry.clone());
            std::thread::spawn(move || {
                flush_loop(inbox, stop_rx, registry, WatchSettings::default())
            })
        };
        let event = |kind: EventKind, path: &Path| Ok(Event::new(kind).add_path(path.into()));
        // Written in place and closed: it waits for the quiet period and the polls.
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        on_event(dir.path(), &inbox, &registry, event(closed, &plugin));
        assert!(commands.try_recv().is_err(), "handed over before its polls");
        // Events about another file, back to back (never a quiet moment), until the plugin is
        // handed over.
        let deadline = Instant::now() + Duration::from_secs(20);
        let handed_over = loop {
            if let Ok(Command::FileReady(path)) = commands.try_recv() {
                break Some(path);
            }
            if Instant::now() > deadline {
                break None;
            }
            for _ in 0..1000 {
                let kind = EventKind::Modify(ModifyKind::Data(DataChange::Content));
                on_event(dir.path(), &inbox, &registry, event(kind, &junk));
            }
        };
        stop_tx.send(()).unwrap();
        looped.join().unwrap();
        assert_eq!(handed_over, Some(plugin), "the file was never handed over");
    }
}
