//! Retention: the `events` and `changes` tables are kept bounded, never losing a change a
//! running host still needs.
//!
//! - Events: rows beyond `--events-max-rows` (the newest kept, of every host on the database)
//!   and rows older than `--events-max-age` are deleted, oldest first.
//! - Changes: a row is deleted once it is older than `--changes-retention` AND every host seen
//!   within that time has applied it. Each host's change listener (`crate::sync`) writes the
//!   last version it applied to `sync_hosts` (`report_applied`, at most every `CHECK_EVERY`
//!   while nothing changes); a host stopped cleanly deletes its row (`forget_applied`), a row
//!   not refreshed within the retention stops counting (and is deleted). The highest id ever
//!   deleted is kept in `changes_pruned` (ids have gaps, so the oldest row left does not
//!   tell), written in the transaction that deletes: a host whose last applied version is below
//!   it may have missed a change, and `crate::sync` then reloads its state in full.
//!
//! Every delete is a batch of at most `PRUNE_BATCH` rows in a statement (or transaction) of its
//! own, so no lock is held for long and the store's connection is free between batches. The
//! `Pruner` thread (`bkg-prune`) runs the policy at start and then every `--prune-every`; it is
//! stopped and joined at shutdown. On PostgreSQL one host prunes the changes at a time (an
//! advisory lock taken with `try`: the others skip that round).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::schema::{changes, changes_pruned, events, sync_hosts};
use super::{now_ms, Conn, Store, StoreError, StoreResult};

/// The most rows one delete takes.
pub const PRUNE_BATCH: i64 = 1000;

/// A changes retention below this is warned about: it is close to how often hosts report
/// what they applied (`crate::sync::CHECK_EVERY`).
const SHORT_RETENTION: Duration = Duration::from_secs(10);

/// The advisory lock key the change pruning holds on PostgreSQL ("bkg-prun").
const PG_PRUNE_LOCK: i64 = 0x626b_672d_7072_756e;

/// What is kept: `None` keeps everything of that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this are deleted.
    pub events_max_age: Option<Duration>,
    /// At most this many events are kept (the newest).
    pub events_max_rows: Option<u64>,
    /// Changes older than this that every live host has applied are deleted; a host not seen
    /// for this long no longer holds them back.
    pub changes: Option<Duration>,
    /// How often the policy runs.
    pub every: Duration,
}

/// What one run of the policy deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub changes: u64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Taking the change pruning's lock for the transaction, per backend: PostgreSQL's advisory
/// lock, without waiting (false: another host prunes now); SQLite's write transaction is
/// the lock already.
trait PruneLock {
    fn try_lock_prune(&mut self) -> QueryResult<bool>;
}

impl PruneLock for PgConnection {
    fn try_lock_prune(&mut self) -> QueryResult<bool> {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "pg_try_advisory_xact_lock({PG_PRUNE_LOCK})"
        )))
        .get_result(self)
    }
}

impl PruneLock for SqliteConnection {
    fn try_lock_prune(&mut self) -> QueryResult<bool> {
        Ok(true)
    }
}

impl Store {
    /// Delete at most `PRUNE_BATCH` events: those with `seq <= through_seq`, else those older
    /// than `before_ms`, oldest first. The number deleted.
    pub fn prune_events_batch(
        &self,
        through_seq: Option<i32>,
        before_ms: Option<i64>,
    ) -> StoreResult<usize> {
        let seqs: Vec<i32> = on_conn!(&mut *self.conn(), c => {
            let mut query = events::table.select(events::seq).into_boxed();
            query = match (through_seq, before_ms) {
                (Some(s), Some(t)) => query.filter(events::seq.le(s).or(events::at_ms.lt(t))),
                (Some(s), None) => query.filter(events::seq.le(s)),
                (None, Some(t)) => query.filter(events::at_ms.lt(t)),
                (None, None) => return Ok(0),
            };
            query.order(events::seq.asc()).limit(PRUNE_BATCH).load(c)
        })?;
        if seqs.is_empty() {
            return Ok(0);
        }
        Ok(on_conn!(&mut *self.conn(), c =>
            diesel::delete(events::table.filter(events::seq.eq_any(&seqs))).execute(c))?)
    }

    /// The `seq` of the newest event beyond the `keep` newest: it and everything older go.
    pub fn events_beyond(&self, keep: u64) -> StoreResult<Option<i32>> {
        let offset = i64::try_from(keep).unwrap_or(i64::MAX);
        Ok(on_conn!(&mut *self.conn(), c => events::table
            .select(events::seq)
            .order(events::seq.desc())
            .offset(offset)
            .limit(1)
            .first(c)
            .optional())?)
    }

    /// The number of events stored (for tests and the admin view).
    pub fn event_count(&self) -> StoreResult<i64> {
        Ok(on_conn!(&mut *self.conn(), c => events::table.count().get_result(c))?)
    }

    /// Delete, in one transaction, at most `PRUNE_BATCH` changes older than `retention` that
    /// every host seen within `retention` has applied, raising the stored watermark
    /// (`changes_pruned_through`) to the highest id deleted. The number deleted (0 also when
    /// another host is pruning now).
    pub fn prune_changes_batch(&self, retention: Duration) -> StoreResult<usize> {
        let cutoff = now_ms().saturating_sub(ms(retention));
        Ok(on_conn!(&mut *self.conn(), c => c.transaction(|c| -> QueryResult<usize> {
            if !c.try_lock_prune()? {
                return Ok(0);
            }
            // The oldest version a live host still has to apply bounds what may go.
            let live_min: Option<i64> = sync_hosts::table
                .filter(sync_hosts::seen_at_ms.ge(cutoff))
                .select(diesel::dsl::min(sync_hosts::applied))
                .first(c)?;
            let ids: Vec<i64> = changes::table
                .filter(changes::id.le(live_min.unwrap_or(i64::MAX)))
                .filter(changes::at_ms.lt(cutoff))
                .order(changes::id.asc())
                .limit(PRUNE_BATCH)
                .select(changes::id)
                .load(c)?;
            let Some(&highest) = ids.last() else { return Ok(0) };
            let n = diesel::delete(changes::table.filter(changes::id.eq_any(&ids))).execute(c)?;
            // Only ever raised (two hosts' prunes never lower it).
            diesel::update(changes_pruned::table.find(1))
                .filter(changes_pruned::pruned_through.lt(highest))
                .set(changes_pruned::pruned_through.eq(highest))
                .execute(c)?;
            Ok(n)
        }))?)
    }

    /// Delete the progress rows of hosts not seen within `retention` (crashed, or away: they
    /// no longer hold changes back). The number deleted.
    pub fn forget_hosts_not_seen(&self, retention: Duration) -> StoreResult<usize> {
        let cutoff = now_ms().saturating_sub(ms(retention));
        Ok(on_conn!(&mut *self.conn(), c => diesel::delete(
            sync_hosts::table.filter(sync_hosts::seen_at_ms.lt(cutoff))
        )
        .execute(c))?)
    }

    /// The highest change id ever pruned (0: none): a host whose last applied version is
    /// below it may have missed changes.
    pub fn changes_pruned_through(&self) -> StoreResult<i64> {
        let through: Option<i64> = on_conn!(&mut *self.conn(), c => changes_pruned::table
            .find(1)
            .select(changes_pruned::pruned_through)
            .first(c)
            .optional())?;
        Ok(through.unwrap_or(0))
    }

    /// This host's change listener applied every change through `applied` (its progress row
    /// in `sync_hosts`, with now as when it was last seen).
    pub fn report_applied(&self, applied: i64) -> StoreResult<()> {
        let at = now_ms();
        let origin = self.origin.as_str();
        on_conn!(&mut *self.conn(), c => diesel::insert_into(sync_hosts::table)
            .values((
                sync_hosts::origin.eq(origin),
                sync_hosts::applied.eq(applied),
                sync_hosts::seen_at_ms.eq(at),
            ))
            .on_conflict(sync_hosts::origin)
            .do_update()
            .set((sync_hosts::applied.eq(applied), sync_hosts::seen_at_ms.eq(at)))
            .execute(c))?;
        Ok(())
    }

    /// This host stops applying changes: its progress row goes (it holds nothing back).
    pub fn forget_applied(&self) -> StoreResult<()> {
        let origin = self.origin.as_str();
        on_conn!(&mut *self.conn(), c =>
            diesel::delete(sync_hosts::table.find(origin)).execute(c))?;
        Ok(())
    }

    /// Run the policy once: batch after batch until nothing is left or `stopping` says so.
    pub fn prune(&self, policy: &Retention, stopping: &dyn Fn() -> bool) -> StoreResult<Pruned> {
        let mut pruned = Pruned::default();
        let through_seq = match policy.events_max_rows {
            Some(keep) => self.events_beyond(keep)?,
            None => None,
        };
        let before_ms = policy.events_max_age.map(|age| now_ms().saturating_sub(ms(age)));
        while !stopping() {
            let n = self.prune_events_batch(through_seq, before_ms)?;
            pruned.events += n as u64;
            if (n as i64) < PRUNE_BATCH {
                break;
            }
        }
        if let Some(retention) = policy.changes {
            self.forget_hosts_not_seen(retention)?;
            while !stopping() {
                let n = self.prune_changes_batch(retention)?;
                pruned.changes += n as u64;
                if (n as i64) < PRUNE_BATCH {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}

/// The thread that runs the retention policy (`bkg-prune`): at start, then every
/// `policy.every`. Dropping it stops and joins the thread (a run in progress stops after its
/// current batch).
pub struct Pruner {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Pruner {
    /// Start the thread; none when the policy keeps everything.
    pub fn start(store: Arc<Store>, policy: Retention) -> std::io::Result<Option<Pruner>> {
        if policy.events_max_age.is_none()
            && policy.events_max_rows.is_none()
            && policy.changes.is_none()
        {
            tracing::info!("retention: events and changes are kept forever");
            return Ok(None);
        }
        if let Some(retention) = policy.changes.filter(|r| *r < SHORT_RETENTION) {
            tracing::warn!(
                "--changes-retention {} ms is short: hosts report what they applied every 2 s, so \
                 a live host late by more than that may have to reload its whole state",
                retention.as_millis()
            );
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bkg-prune".into())
            .spawn(move || run(&store, &policy, &flag))?;
        Ok(Some(Pruner { stop, thread: Some(thread) }))
    }
}

fn run(store: &Store, policy: &Retention, stop: &(Mutex<bool>, Condvar)) {
    let (lock, wake) = stop;
    let stopping = || *lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut failing = false;
    loop {
        match store.prune(policy, &stopping) {
            Ok(pruned) => {
                if failing {
                    tracing::info!("pruning events and changes works again");
                    failing = false;
                }
                if pruned != Pruned::default() {
                    tracing::info!(
                        events = pruned.events,
                        changes = pruned.changes,
                        "retention: pruned old rows"
                    );
                }
            }
            // Unavailable: the store logs the outage itself; the next round tries again.
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot prune events and changes: {e}; retrying later");
                    failing = true;
                }
            }
        }
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = wake
            .wait_timeout_while(guard, policy.every, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        if *guard {
            break;
        }
    }
    tracing::debug!("the pruner stopped");
}

impl Drop for Pruner {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{change_kind, Database, DesiredState};

    /// A fresh database of each backend: a SQLite file, a new database of the test cluster.
    fn databases() -> Vec<(Database, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Database::Sqlite(dir.path().join("bkg.db"));
        let pg = Database::Postgres(crate::store::test_pg::shared().create_database());
        vec![(sqlite, Some(dir)), (pg, None)]
    }

    /// Run a test-only statement on the store's own connection.
    fn exec(s: &Store, sql: &str) {
        match &mut *s.conn() {
            Conn::Sqlite(c) => diesel::sql_query(sql).execute(c).unwrap(),
            Conn::Pg(c) => diesel::sql_query(sql).execute(c).unwrap(),
            Conn::Down(why) => panic!("the test database is unreachable: {why}"),
        };
    }

    fn keep_all() -> Retention {
        Retention {
            events_max_age: None,
            events_max_rows: None,
            changes: None,
            every: Duration::from_secs(60),
        }
    }

    fn never() -> bool {
        false
    }

    fn seqs(s: &Store) -> Vec<i32> {
        s.events_before(None, None, 10_000).unwrap().iter().map(|e| e.seq).collect()
    }

    /// More events than `--events-max-rows`, in more than one batch: the newest stay; then
    /// events older than `--events-max-age` go, and paging by `before` still ends cleanly.
    #[test]
    fn events_beyond_the_row_limit_and_the_age_are_pruned_newest_first_kept() {
        for (db, _dir) in databases() {
            let s = Store::connect(&db).unwrap();
            let n = PRUNE_BATCH as usize * 2 + 500;
            for chunk in 0..n.div_ceil(500) {
                let values = format!("(1, 'e', 'loaded', 'test', '{{\"i\": {chunk}}}')");
                let sql = format!(
                    "INSERT INTO events (at_ms, plugin_id, kind, actor, details) VALUES {}",
                    vec![values; 500].join(", ")
                );
                exec(&s, &sql);
            }
            s.add_event(Some("e"), "newest", "test", serde_json::json!({})).unwrap();
            let all = seqs(&s);
            assert_eq!(all.len(), n + 1, "{db}");
            // Nothing to do: nothing goes.
            assert_eq!(s.prune(&keep_all(), &never).unwrap(), Pruned::default());
            let policy = Retention { events_max_rows: Some(700), ..keep_all() };
            let pruned = s.prune(&policy, &never).unwrap();
            assert_eq!(pruned, Pruned { events: (n + 1 - 700) as u64, changes: 0 }, "{db}");
            assert_eq!(seqs(&s), all[..700], "{db}: the newest 700 stay");
            assert_eq!(s.event_count().unwrap(), 700);
            // Paging: a page that would reach below what is left just ends.
            let first = s.events_before(None, None, 600).unwrap();
            let last = first.last().unwrap().seq;
            let second = s.events_before(None, Some(i64::from(last)), 600).unwrap();
            assert_eq!(second.len(), 100, "{db}");
            assert!(second.iter().all(|e| e.seq < last));
            assert!(s
                .events_before(None, Some(i64::from(second[99].seq)), 600)
                .unwrap()
                .is_empty());
            // By age: every event at 1 ms since the epoch is older than a day; the one
            // written now stays.
            let policy =
                Retention { events_max_age: Some(Duration::from_secs(86_400)), ..keep_all() };
            assert_eq!(s.prune(&policy, &never).unwrap().events, 699, "{db}");
            let left = s.events(None, 10).unwrap();
            assert_eq!(left.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["newest"]);
            // A stop asked for ends the run before its next batch.
            exec(&s, "UPDATE events SET at_ms = 1");
            assert_eq!(s.prune(&policy, &|| true).unwrap(), Pruned::default());
            assert_eq!(s.event_count().unwrap(), 1);
        }
    }

    /// Changes older than the retention go once every live host applied them; a host not
    /// seen within the retention holds nothing back; the watermark keeps the highest id gone,
    /// so the database's version never goes back even with the table empty.
    #[test]
    fn changes_are_pruned_once_every_live_host_applied_them() {
        for (db, _dir) in databases() {
            let a = Store::connect(&db).unwrap();
            let b = Store::connect(&db).unwrap();
            let retention = Duration::from_secs(3_600);
            let policy = Retention { changes: Some(retention), ..keep_all() };
            for i in 0..6 {
                a.set_config("echo", &serde_json::json!({ "i": i }), "test").unwrap();
            }
            let ids: Vec<i64> = a.changes_after(0, 100).unwrap().iter().map(|c| c.id).collect();
            assert_eq!(ids.len(), 6);
            a.report_applied(ids[5]).unwrap();
            b.report_applied(ids[2]).unwrap();
            // Recent: kept whoever applied them.
            assert_eq!(a.prune(&policy, &never).unwrap().changes, 0, "{db}");
            exec(&a, "UPDATE changes SET at_ms = 1");
            // Old: those B applied go, the rest wait for B.
            assert_eq!(a.prune(&policy, &never).unwrap().changes, 3, "{db}");
            assert_eq!(a.changes_pruned_through().unwrap(), ids[2]);
            let left: Vec<i64> = a.changes_after(0, 100).unwrap().iter().map(|c| c.id).collect();
            assert_eq!(left, ids[3..], "{db}");
            // B applies more and is seen: the watermark follows.
            b.report_applied(ids[4]).unwrap();
            assert_eq!(a.prune(&policy, &never).unwrap().changes, 2, "{db}");
            assert_eq!(a.changes_pruned_through().unwrap(), ids[4]);
            // B not seen within the retention: it holds nothing back, and its row goes.
            exec(
                &a,
                &format!("UPDATE sync_hosts SET seen_at_ms = 1 WHERE origin = '{}'", b.origin()),
            );
            assert_eq!(a.prune(&policy, &never).unwrap().changes, 1, "{db}");
            assert_eq!(a.changes_pruned_through().unwrap(), ids[5]);
            assert!(a.changes_after(0, 100).unwrap().is_empty());
            assert_eq!(a.last_change().unwrap(), ids[5], "{db}: the version never goes back");
            // A host that stops deletes its own row: nothing is held back for it.
            a.forget_applied().unwrap();
            // The next change is newer than everything pruned.
            b.set_desired_state("echo", DesiredState::Stopped).unwrap();
            let next = b.changes_after(ids[5], 10).unwrap();
            assert_eq!(next.len(), 1);
            assert_eq!(next[0].kind, change_kind::DESIRED_STATE);
            assert!(next[0].id > ids[5]);
            // `0` keeps them all: no policy for changes, nothing goes.
            exec(&a, "UPDATE changes SET at_ms = 1");
            assert_eq!(a.prune(&keep_all(), &never).unwrap().changes, 0);
            assert_eq!(a.last_change().unwrap(), next[0].id);
        }
    }
}
