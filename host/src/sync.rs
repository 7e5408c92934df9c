//! Change propagation between hosts sharing one PostgreSQL database (issue 16).
//!
//! Every store function that makes a change other hosts must apply (a plugin's config, its
//! desired state, its isolation mode or limits, the auth provider's keys, an installed model)
//! writes a row of `changes` in the change's own transaction and sends
//! `pg_notify('bkg_changes', <id>)`, delivered at commit (`store::RecordChange`). The row's id
//! is the database's version.
//!
//! This module owns the listener: ONE thread per host, with its own connection (the `postgres`
//! crate's blocking client: diesel exposes no notifications). It `LISTEN`s, and on a
//! notification, and every `CHECK_EVERY` anyway (covering what was missed while its connection
//! was down), reads the changes after the last version it applied and dispatches each by kind
//! to the state's owner: the registry (config, desired state, isolation: the same functions the
//! API uses, or `apply_stored_config`), the auth cache (`Auth::changed_elsewhere`). A host's own
//! changes come back too and are skipped by origin. Applying is idempotent, so a change seen
//! twice is harmless. A lost connection is reconnected with backoff (`BACKOFF_FIRST` doubling to
//! `BACKOFF_MAX`), with a log line per state change. The thread is joined on shutdown.
//!
//! Change ids are taken when a transaction inserts its change, not when it commits, so a
//! change may appear below one already read: the ids skipped by a read (and, at a start, those
//! missing below the version the state was read at: `start_version`) are looked for again for
//! `HOLE_WAIT` and applied when they appear.
//!
//! Old changes are pruned (`store/retention.rs`) once every live host has applied them: the
//! listener reports the last version it applied (`Store::report_applied`, its row of
//! `sync_hosts`) after each read and at least every `CHECK_EVERY`, and deletes its row when
//! it stops. A host away longer than the retention (its database connection down, the process
//! suspended) no longer holds changes back, so it may find that changes after its version are
//! gone: each read of the changes is followed by a read of the pruning watermark, and when the
//! last applied version is below it, nothing is applied piecemeal: every kind of state is
//! reloaded in full (`reload_all`: what a start reads), with a warning and a
//! `changes_reloaded` event.
//!
//! What it must never do: change state itself (it only calls the owners), write to the store
//! (the owners do, and they record nothing when a value is already what the store holds; its
//! own progress row and the `changes_reloaded` event are the exceptions), or block the
//! registry thread (it waits for the registry's answers on its own thread).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;

use crate::auth::Auth;
use crate::registry::{Action, PluginState, RegistryHandle};
use crate::store::{change_kind, Change, DesiredState, Store, CHANGES_CHANNEL};

/// How long the listener waits for a notification before it looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);
/// The periodic version check: changes missed by the listener are applied at most this late.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Changes read from the store at once.
const BATCH: i64 = 500;
/// How long an id skipped in the sequence is looked for again: a transaction that took an id
/// and committed after a later one was read (a rolled back one never fills its id).
const HOLE_WAIT: Duration = Duration::from_secs(60);
/// The most skipped ids looked for at once.
const MAX_HOLES: usize = 10_000;
/// How far below the version a start reads its state at ids are checked for gaps: a
/// transaction that took its id before that version was read may commit after it.
const START_GAP_WINDOW: i64 = 1000;

/// The version a host reads its state at, and the ids below it no change has yet (taken by
/// transactions still running, or rolled back: `SyncHandle::start` looks for them a while).
/// Read both before the state, so that a change committed after this is either in the state
/// read or applied later.
pub fn start_version(store: &Store) -> crate::store::StoreResult<(i64, Vec<i64>)> {
    let version = store.last_change()?;
    let after = (version - START_GAP_WINDOW).max(store.changes_pruned_through()?);
    let present = store.change_ids_between(after, version)?;
    let mut present = present.into_iter().peekable();
    let mut gaps = Vec::new();
    for id in after + 1..=version {
        if present.peek() == Some(&id) {
            present.next();
        } else {
            gaps.push(id);
        }
    }
    Ok((version, gaps))
}

/// The owners the listener dispatches changes to.
pub struct Targets {
    pub registry: RegistryHandle,
    pub auth: Arc<Auth>,
    /// Plugin files deployed or removed elsewhere (`crate::distribute`).
    pub distribute: Option<crate::distribute::Hook>,
}

/// The running listener. Dropping it stops and joins its thread.
pub struct SyncHandle {
    stop: Arc<AtomicBool>,
    applied: Arc<AtomicI64>,
    thread: Option<JoinHandle<()>>,
    store: Arc<Store>,
}

impl SyncHandle {
    /// Start listening on the PostgreSQL database `url` and applying the changes after version
    /// `from` (the version the host read its state at), and those that fill one of `gaps` (ids
    /// below `from` no change had then: see [`start_version`]).
    pub fn start(
        url: &str,
        store: Arc<Store>,
        (from, gaps): (i64, Vec<i64>),
        targets: Targets,
    ) -> std::io::Result<SyncHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let applied = Arc::new(AtomicI64::new(from));
        // Counted as live from now on: the changes after `from` are kept for this host.
        if let Err(e) = store.report_applied(from) {
            tracing::warn!("cannot record this host's applied version: {e}");
        }
        let mut listener = Listener {
            url: url.to_string(),
            store: store.clone(),
            targets,
            stop: stop.clone(),
            applied: applied.clone(),
            store_failing: false,
            reported: None,
            holes: Default::default(),
        };
        for id in gaps {
            listener.note_holes(id, id + 1);
        }
        let thread =
            std::thread::Builder::new().name("bkg-sync".into()).spawn(move || listener.run())?;
        tracing::info!(version = from, "applying changes made by other hosts from this version on");
        Ok(SyncHandle { stop, applied, thread: Some(thread), store })
    }

    /// The last version this host applied.
    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::SeqCst)
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Stopped: this host holds no change back any more (a start reads the whole state).
        if let Err(e) = self.store.forget_applied() {
            tracing::debug!("cannot delete this host's applied version: {e}");
        }
    }
}

struct Listener {
    url: String,
    store: Arc<Store>,
    targets: Targets,
    stop: Arc<AtomicBool>,
    applied: Arc<AtomicI64>,
    /// Whether the last read of the changes failed (logged once per state change).
    store_failing: bool,
    /// The version last reported to the store as applied, and when.
    reported: Option<(i64, Instant)>,
    /// Ids below the applied version that no change had when it was read, and when they were
    /// first missed: a change committed after a later one lands there (`fill_holes`).
    holes: std::collections::BTreeMap<i64, Instant>,
}

impl Listener {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn run(mut self) {
        // The registry answers on tokio oneshot channels: this thread waits for them itself.
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("the change listener cannot start: {e}");
                return;
            }
        };
        let mut client: Option<postgres::Client> = None;
        let mut backoff = BACKOFF_FIRST;
        let mut retry_at = Instant::now();
        let mut down_logged = false;
        let mut last_check = Instant::now();
        while !self.stopping() {
            let Some(c) = client.as_mut() else {
                if Instant::now() >= retry_at {
                    match self.listen() {
                        Ok(c) => {
                            tracing::info!(channel = CHANGES_CHANNEL, "listening for changes");
                            client = Some(c);
                            backoff = BACKOFF_FIRST;
                            down_logged = false;
                            // What happened while not listening.
                            self.catch_up(&rt);
                            last_check = Instant::now();
                        }
                        Err(e) => {
                            if !down_logged {
                                tracing::warn!(
                                    "cannot listen for changes: {}; retrying with backoff up to {} s",
                                    e,
                                    BACKOFF_MAX.as_secs()
                                );
                                down_logged = true;
                            }
                            retry_at = Instant::now() + backoff;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                    continue;
                }
                // Not listening: the periodic check still applies what others change.
                if last_check.elapsed() >= CHECK_EVERY {
                    self.catch_up(&rt);
                    last_check = Instant::now();
                }
                std::thread::sleep(POLL.min(retry_at.saturating_duration_since(Instant::now())));
                continue;
            };
            let mut notified = false;
            let mut lost = None;
            {
                let mut notifications = c.notifications();
                match notifications.timeout_iter(POLL).next() {
                    Ok(Some(_)) => notified = true,
                    Ok(None) => {}
                    Err(e) => lost = Some(e.to_string()),
                }
                // Take every notification already here: one read of the store covers them.
                if lost.is_none() {
                    let mut pending = notifications.iter();
                    loop {
                        match pending.next() {
                            Ok(Some(_)) => notified = true,
                            Ok(None) => break,
                            Err(e) => {
                                lost = Some(e.to_string());
                                break;
                            }
                        }
                    }
                }
            }
            if lost.is_some() || c.is_closed() {
                tracing::warn!(
                    "the change listener's connection was lost ({}); reconnecting",
                    lost.as_deref().unwrap_or("closed")
                );
                client = None;
                retry_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            if notified || last_check.elapsed() >= CHECK_EVERY {
                self.catch_up(&rt);
                last_check = Instant::now();
            }
        }
        tracing::debug!("the change listener stopped");
    }

    /// A new connection of its own, listening on `CHANGES_CHANNEL`, named so that an operator
    /// can tell it in `pg_stat_activity`.
    fn listen(&self) -> Result<postgres::Client, String> {
        let mut config: postgres::Config = self.url.parse().map_err(|e| format!("{e}"))?;
        config.application_name(&format!("bkg-sync-{}", self.store.origin()));
        config.connect_timeout(Duration::from_secs(5));
        // A server gone silent (packets dropped) ends the connection within about 8 s, as the
        // store's does (`store/link.rs`), unless the URL says otherwise: the idle listener
        // would otherwise wait for it for the kernel's two hours.
        let unset = |name: &str| !self.url.contains(name);
        if unset("keepalives") {
            config
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(5))
                .keepalives_interval(Duration::from_secs(1))
                .keepalives_retries(3);
        }
        if unset("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_secs(5));
        }
        let mut client = config.connect(postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&format!("LISTEN {CHANGES_CHANNEL}")).map_err(|e| e.to_string())?;
        Ok(client)
    }

    /// A failed read of the store: logged once until reading works again.
    fn store_failed(&mut self, what: &str, e: crate::store::StoreError) {
        if !self.store_failing {
            tracing::warn!("cannot read {what}: {e}");
            self.store_failing = true;
        }
    }

    /// Apply every change after the last applied version, oldest first (or reload everything
    /// when some of them were pruned), then report the version applied.
    fn catch_up(&mut self, rt: &tokio::runtime::Runtime) {
        self.catch_up_changes(rt);
        self.fill_holes(rt);
        self.report();
    }

    /// Remember the ids in `from..to` as holes (no change had them when read).
    fn note_holes(&mut self, from: i64, to: i64) {
        let now = Instant::now();
        for id in from..to {
            if self.holes.len() >= MAX_HOLES {
                tracing::warn!(
                    "more than {MAX_HOLES} change ids skipped: those after {id} are not looked for again"
                );
                return;
            }
            self.holes.insert(id, now);
        }
    }

    /// Apply the changes that have filled a hole since (their transaction committed after a
    /// later change was read); holes older than `HOLE_WAIT` are given up.
    fn fill_holes(&mut self, rt: &tokio::runtime::Runtime) {
        self.holes.retain(|_, missed| missed.elapsed() < HOLE_WAIT);
        if self.holes.is_empty() {
            return;
        }
        let ids: Vec<i64> = self.holes.keys().copied().collect();
        let found = match self.store.changes_in(&ids) {
            Ok(found) => found,
            Err(e) => return self.store_failed("the changes committed late", e),
        };
        for change in found {
            self.holes.remove(&change.id);
            if change.origin != self.store.origin() {
                tracing::debug!(version = change.id, "a change committed after a later one");
                self.apply(rt, &change);
            }
        }
    }

    /// Tell the store the version applied: when it moved, and else at each periodic check
    /// (every `CHECK_EVERY`: what keeps this host counted as live by the pruning).
    fn report(&mut self) {
        let applied = self.applied.load(Ordering::SeqCst);
        if let Some((version, at)) = self.reported {
            if version == applied && at.elapsed() < CHECK_EVERY / 2 {
                return;
            }
        }
        match self.store.report_applied(applied) {
            Ok(()) => self.reported = Some((applied, Instant::now())),
            Err(e) => tracing::debug!("cannot record this host's applied version: {e}"),
        }
    }

    fn catch_up_changes(&mut self, rt: &tokio::runtime::Runtime) {
        loop {
            let after = self.applied.load(Ordering::SeqCst);
            let changes = match self.store.changes_after(after, BATCH) {
                Ok(changes) => changes,
                Err(e) => {
                    return self.store_failed(&format!("the changes after version {after}"), e)
                }
            };
            // Read after the changes: a prune that removed any of those after `after` raised
            // the watermark above `after` before this read.
            let pruned_through = match self.store.changes_pruned_through() {
                Ok(through) => through,
                Err(e) => return self.store_failed("the pruned changes' watermark", e),
            };
            if self.store_failing {
                tracing::info!("reading changes works again");
                self.store_failing = false;
            }
            if after < pruned_through {
                // Changes this host never applied may be gone: none is applied piecemeal.
                if !self.reload_all(rt, after, pruned_through) {
                    return;
                }
                continue;
            }
            let n = changes.len();
            let mut expected = after + 1;
            for change in &changes {
                self.note_holes(expected, change.id);
                expected = change.id + 1;
            }
            for (i, change) in changes.iter().enumerate() {
                // The owners read what the store holds now: one apply covers every earlier
                // change of the same thing in this batch.
                let superseded = changes[i + 1..]
                    .iter()
                    .any(|later| later.kind == change.kind && later.subject == change.subject);
                if change.origin != self.store.origin() && !superseded {
                    self.apply(rt, change);
                }
                self.applied.store(change.id, Ordering::SeqCst);
            }
            if (n as i64) < BATCH {
                return;
            }
        }
    }

    /// Changes after `after` were pruned (through `pruned_through`) before this host applied
    /// them: every kind of state is handed to its owner as if each had changed, the owners
    /// reading what the store holds now (what a start reads), and the applied version set to
    /// the database's version read before. False when the store could not be read (tried
    /// again at the next check).
    fn reload_all(
        &mut self,
        rt: &tokio::runtime::Runtime,
        after: i64,
        pruned_through: i64,
    ) -> bool {
        tracing::warn!(
            applied = after,
            pruned_through,
            "changes this host had not applied were pruned (it was away longer than \
             --changes-retention): reloading the whole shared state"
        );
        let read = (|| {
            Ok((self.store.last_change()?, self.store.plugin_ids()?, self.store.deployments()?))
        })();
        let (version, ids, deployments) = match read {
            Ok(read) => read,
            Err(e) => {
                self.store_failed("the state to reload", e);
                return false;
            }
        };
        let reload = |kind: &str, subject: &str| Change {
            id: version,
            kind: kind.to_string(),
            subject: subject.to_string(),
            origin: "reload".to_string(),
            at_ms: 0,
        };
        for id in &ids {
            for kind in [change_kind::CONFIG, change_kind::DESIRED_STATE] {
                self.apply(rt, &reload(kind, id));
            }
            if self.isolation_differs(id) {
                self.apply(rt, &reload(change_kind::ISOLATION, id));
            }
        }
        // Every cached key verification is dropped.
        let provider = self.targets.auth.provider.clone();
        self.apply(rt, &reload(change_kind::KV, &provider));
        for d in &deployments {
            self.apply(rt, &reload(change_kind::PLUGIN_DEPLOYED, &d.file));
        }
        self.applied.store(version, Ordering::SeqCst);
        // Everything up to `version` was read as it is now.
        self.holes.clear();
        let details = serde_json::json!({
            "host": self.store.origin(),
            "applied": after,
            "pruned_through": pruned_through,
            "version": version,
            "plugins": ids.len(),
            "deployments": deployments.len(),
        });
        if let Err(e) = self.store.add_event(None, "changes_reloaded", "sync", details) {
            tracing::warn!("the changes_reloaded event was dropped: {e}");
        }
        tracing::info!(version, plugins = ids.len(), "the whole shared state was reloaded");
        true
    }

    /// Whether the operator's stored isolation of `id` (if any) is not what its loaded
    /// generation runs with: a reload swaps only such plugins.
    fn isolation_differs(&self, id: &str) -> bool {
        let Some(view) = self.targets.registry.view(id) else { return false };
        let Ok(setting) = self.store.isolation(id) else { return true };
        let Some(mode) = setting.mode else { return false };
        let operator = |v: &crate::isolation::LimitValue| {
            (v.source == crate::isolation::LimitSource::Operator).then_some(v.value).flatten()
        };
        let limits = &view.isolation_limits;
        view.isolation != mode
            || view.isolation_source != crate::isolation::IsolationSource::Operator
            || operator(&limits.memory_mb) != setting.limits.memory_mb
            || operator(&limits.open_files) != setting.limits.open_files
            || operator(&limits.processes) != setting.limits.processes
            || operator(&limits.call_deadline_ms) != setting.limits.call_deadline_ms
    }

    /// Hand one change to the owner of its kind of state.
    fn apply(&self, rt: &tokio::runtime::Runtime, change: &Change) {
        let id = change.subject.as_str();
        let actor = format!("sync:{}", change.origin);
        let registry = &self.targets.registry;
        tracing::debug!(version = change.id, kind = change.kind, subject = id, "applying a change");
        let result: Result<(), String> = match change.kind.as_str() {
            change_kind::CONFIG => {
                rt.block_on(registry.apply_stored_config(id)).map(drop).map_err(|e| e.to_string())
            }
            change_kind::DESIRED_STATE => match self.store.plugin(id) {
                Ok(Some(record)) => {
                    let state = registry.view(id).map(|v| v.state);
                    let action = match (record.desired_state, state) {
                        (DesiredState::Stopped, Some(PluginState::Running)) => Some(Action::Stop),
                        (DesiredState::Running, Some(PluginState::Stopped)) => Some(Action::Start),
                        // Not loaded here (its load reads the store), or already so.
                        _ => None,
                    };
                    match action {
                        Some(action) => rt
                            .block_on(registry.lifecycle(id, action, &actor))
                            .map(drop)
                            .map_err(|e| e.to_string()),
                        None => Ok(()),
                    }
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            change_kind::ISOLATION => match self.store.isolation(id) {
                // A plugin not loaded here reads its setting from the store when it loads.
                Ok(_) if registry.view(id).is_none() => Ok(()),
                Ok(setting) => match setting.mode {
                    Some(mode) => rt
                        .block_on(registry.set_isolation(id, mode, Some(setting.limits), &actor))
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    None => {
                        Err("the operator's mode was forgotten: applied at the next load".into())
                    }
                },
                Err(e) => Err(e.to_string()),
            },
            change_kind::KV => {
                if id == self.targets.auth.provider {
                    self.targets.auth.changed_elsewhere();
                }
                Ok(())
            }
            // The models view reads the store: nothing is held here to update.
            change_kind::MODEL => Ok(()),
            // The distribution thread fetches or deletes the file (never on this thread).
            change_kind::PLUGIN_DEPLOYED | change_kind::PLUGIN_REMOVED => {
                if let Some(hook) = &self.targets.distribute {
                    hook.changed(id);
                }
                Ok(())
            }
            other => Err(format!("unknown kind of change {other:?} (a newer host wrote it?)")),
        };
        match result {
            Ok(()) => {
                tracing::debug!(version = change.id, kind = change.kind, subject = id, "applied")
            }
            Err(e) => tracing::warn!(
                version = change.id,
                kind = change.kind,
                subject = id,
                "a change made by another host was not applied: {e}"
            ),
        }
    }
}
