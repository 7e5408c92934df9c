//! The store's connection state on PostgreSQL: up, or down with the reason and when the next
//! reconnection is due. SQLite is a local file: it is never down.
//!
//! A store call whose query finds the connection broken (the server stopped or restarted, the
//! network gone) marks it down (`Conn::Down`, in `on_conn!`) and answers
//! `StoreError::Unavailable`; every store call while it is down answers the same at once,
//! without touching the network. The next call after the backoff delay (100 ms, doubling to
//! 5 s) tries one reconnection with a 2 s connect timeout, without holding the connection's
//! lock, so other callers keep failing fast meanwhile. One log line per state change (down,
//! back up), never one per failed query or attempt.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;

use super::{Conn, Database, Store, StoreError};

/// The first delay before a reconnection attempt; doubled after each failed one.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest delay between reconnection attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// libpq's connect timeout, in seconds, for every connection the store opens.
pub(crate) const CONNECT_TIMEOUT_S: u32 = 2;
/// libpq settings that bound how long a query waits on a server that went silent (the
/// network dropping packets instead of refusing them): unacknowledged data for at most 5 s
/// (`tcp_user_timeout`), an idle connection probed after 5 s, every second, 3 times.
const SILENT_SERVER: [(&str, &str); 4] = [
    ("tcp_user_timeout", "5000"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "1"),
    ("keepalives_count", "3"),
];

/// What the store knows about its connection (for `/readyz` and `/metrics`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DbHealth {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// `up` or `down`.
    pub database: &'static str,
    /// While down: since when (unix ms), and the last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_since_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times the connection was lost since the host started.
    pub outages: u64,
    /// How many store calls were refused while it was down (each an admin write answered 503,
    /// a read answered 503, a plugin's key-value call answered `UNAVAILABLE`, or an event or
    /// record the host writes by itself dropped with a warning).
    pub refused: u64,
}

/// The reconnection state of one store (PostgreSQL only).
pub(crate) struct Link {
    /// The URL the store reconnects with (with `connect_timeout`); `None` for SQLite.
    url: Option<String>,
    /// The URL with its password elided, for log lines.
    shown: String,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    down_since: Option<(Instant, u64)>,
    next_try: Option<Instant>,
    delay: Duration,
    attempting: bool,
    outages: u64,
    refused: u64,
}

impl Link {
    pub(crate) fn new(db: &Database) -> Link {
        let url = match db {
            Database::Sqlite(_) => None,
            Database::Postgres(url) => Some(with_connect_timeout(url)),
        };
        Link { url, shown: db.to_string(), state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection was just found broken: log it once, schedule the first reconnection.
    fn went_down(&self, why: &str) {
        let mut s = self.state();
        if s.down_since.is_some() {
            return;
        }
        s.down_since = Some((Instant::now(), crate::clock::now_ms()));
        s.delay = BACKOFF_FIRST;
        s.next_try = Some(Instant::now() + BACKOFF_FIRST);
        s.outages += 1;
        tracing::warn!(
            database = %self.shown,
            "database connection lost ({why}); serving from memory, admin writes answer 503 \
             database_unavailable; reconnecting with backoff ({} ms doubling to {} s)",
            BACKOFF_FIRST.as_millis(),
            BACKOFF_MAX.as_secs()
        );
    }

    /// Whether a reconnection attempt is due now; if so the caller makes it (and no other).
    fn take_attempt(&self) -> bool {
        let mut s = self.state();
        let due = s.next_try.is_some_and(|t| Instant::now() >= t);
        if due && !s.attempting {
            s.attempting = true;
            true
        } else {
            false
        }
    }

    fn attempt_failed(&self) {
        let mut s = self.state();
        s.attempting = false;
        s.delay = (s.delay * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
        s.next_try = Some(Instant::now() + s.delay);
    }

    fn came_back(&self) {
        let mut s = self.state();
        let down_for = s.down_since.take().map(|(at, _)| at.elapsed());
        s.attempting = false;
        s.next_try = None;
        s.delay = BACKOFF_FIRST;
        tracing::info!(
            database = %self.shown,
            down_ms = down_for.map_or(0, |d| d.as_millis() as u64),
            "database connection restored"
        );
    }
}

/// `url` with libpq's `connect_timeout` and the `SILENT_SERVER` settings (each unless the URL
/// sets it), so that no caller waits long for an unreachable server.
pub(crate) fn with_connect_timeout(url: &str) -> String {
    let mut url = url.to_string();
    let connect = CONNECT_TIMEOUT_S.to_string();
    for (key, value) in std::iter::once(("connect_timeout", connect.as_str())).chain(SILENT_SERVER)
    {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        if query.split('&').any(|kv| kv.split('=').next() == Some(key)) {
            continue;
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}{key}={value}");
    }
    url
}

/// The store's connection, locked. Dropping it after a query marked the connection down logs
/// the outage once and schedules the reconnection.
pub(super) struct ConnGuard<'a> {
    guard: MutexGuard<'a, Conn>,
    link: &'a Link,
    was_up: bool,
}

impl std::ops::Deref for ConnGuard<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.guard
    }
}

impl std::ops::DerefMut for ConnGuard<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.guard
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if let (true, Conn::Down(why)) = (self.was_up, &*self.guard) {
            self.link.went_down(why);
        }
    }
}

impl Store {
    /// The connection, locked. While it is down, a reconnection is tried first if one is due
    /// (without holding the lock: others fail fast meanwhile).
    pub(super) fn conn(&self) -> ConnGuard<'_> {
        let link = &self.link;
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let (Conn::Down(_), Some(url)) = (&*guard, &link.url) {
            if link.take_attempt() {
                drop(guard);
                let result = PgConnection::establish(url);
                guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(c) => {
                        *guard = Conn::Pg(c);
                        link.came_back();
                    }
                    Err(e) => {
                        *guard = Conn::Down(
                            Database::Postgres(url.clone()).scrub(e.to_string().trim_end()),
                        );
                        link.attempt_failed();
                    }
                }
            }
        }
        let was_up = !matches!(*guard, Conn::Down(_));
        if !was_up {
            link.state().refused += 1;
        }
        ConnGuard { guard, link, was_up }
    }

    /// Whether the database is unreachable now (as far as the last store call found).
    pub fn is_down(&self) -> bool {
        self.link.state().down_since.is_some()
    }

    /// Check the connection with a trivial query (`/readyz`): marks it down, or brings it back
    /// when a reconnection is due.
    pub fn ping(&self) -> super::StoreResult<()> {
        on_conn!(&mut *self.conn(), c => diesel::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), c))?;
        Ok(())
    }

    /// The connection's state, for `/readyz` and `/metrics`.
    pub fn health(&self) -> DbHealth {
        // The connection's lock first, as everywhere (`conn` takes the link's under it).
        let why = match &*self.conn.lock().unwrap_or_else(|p| p.into_inner()) {
            Conn::Down(why) => Some(why.clone()),
            _ => None,
        };
        let s = self.link.state();
        DbHealth {
            backend: if self.link.url.is_some() { "postgres" } else { "sqlite" },
            database: if s.down_since.is_some() { "down" } else { "up" },
            down_since_ms: s.down_since.map(|(_, ms)| ms),
            error: why.filter(|_| s.down_since.is_some()),
            outages: s.outages,
            refused: s.refused,
        }
    }
}

/// Why `e` means the connection to PostgreSQL is gone (the server stopped, restarted or is
/// unreachable), or `None` for an error of the query itself.
pub(crate) fn broken_connection(e: &DieselError) -> Option<String> {
    let gone = match e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => {
            let m = info.message();
            [
                "terminating connection",
                "server closed the connection",
                "no connection to the server",
                "could not receive data from server",
                "could not send data to server",
                "connection to server",
                "the database system is shutting down",
                "the database system is starting up",
            ]
            .iter()
            .any(|s| m.contains(s))
        }
        DieselError::BrokenTransactionManager => true,
        DieselError::RollbackErrorOnCommit { rollback_error, commit_error } => {
            return broken_connection(commit_error).or_else(|| broken_connection(rollback_error));
        }
        _ => false,
    };
    gone.then(|| e.to_string().trim_end().replace('\n', " "))
}

/// A store error that means the connection is gone, as `broken_connection`.
pub(crate) trait MaybeBroken {
    fn broken(&self) -> Option<String>;
}

impl MaybeBroken for DieselError {
    fn broken(&self) -> Option<String> {
        broken_connection(self)
    }
}

impl MaybeBroken for StoreError {
    fn broken(&self) -> Option<String> {
        match self {
            StoreError::Db(e) => broken_connection(e),
            StoreError::Unavailable(why) => Some(why.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster of its own, stopped and started again: the store answers `Unavailable` at
    /// once while the server is gone (after the first query found it gone), then reconnects
    /// by itself, with the rows of before.
    #[test]
    fn a_stopped_server_makes_store_calls_unavailable_until_the_store_reconnects() {
        let cluster = crate::store::test_pg::PgCluster::start(false).unwrap();
        let store = Store::connect(&Database::Postgres(cluster.create_database())).unwrap();
        store.kv_put("echo", "k", b"before").unwrap();
        assert_eq!(store.health().database, "up");

        cluster.stop_server().unwrap();
        let e = store.kv_get("echo", "k").unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert!(store.is_down());
        assert_eq!((store.health().database, store.health().outages), ("down", 1));
        // While down: every call refused with the same typed error, nothing written.
        let e = store.kv_put("echo", "k", b"during").unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("database is unreachable"), "{e}");
        assert!(store.health().refused >= 1);

        cluster.start_server().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.ping().is_err() {
            assert!(Instant::now() < deadline, "the store did not reconnect");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!store.is_down());
        assert_eq!(store.kv_get("echo", "k").unwrap().as_deref(), Some(&b"before"[..]));
        store.kv_put("echo", "k", b"after").unwrap();
        assert_eq!(store.kv_get("echo", "k").unwrap().as_deref(), Some(&b"after"[..]));
        assert_eq!(store.health().outages, 1);
    }

    #[test]
    fn sqlite_is_never_down() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bkg.db")).unwrap();
        store.ping().unwrap();
        let h = store.health();
        assert_eq!((h.backend, h.database, h.outages), ("sqlite", "up", 0));
    }

    #[test]
    fn the_connect_timeout_is_added_once() {
        let tail =
            "tcp_user_timeout=5000&keepalives_idle=5&keepalives_interval=1&keepalives_count=3";
        assert_eq!(
            with_connect_timeout("postgres://u@h:5/db"),
            format!("postgres://u@h:5/db?connect_timeout=2&{tail}")
        );
        assert_eq!(
            with_connect_timeout("postgres://u@h:5/db?sslmode=disable"),
            format!("postgres://u@h:5/db?sslmode=disable&connect_timeout=2&{tail}")
        );
        assert_eq!(
            with_connect_timeout("postgres://u@h/db?connect_timeout=9&keepalives_idle=60"),
            "postgres://u@h/db?connect_timeout=9&keepalives_idle=60&tcp_user_timeout=5000&\
             keepalives_interval=1&keepalives_count=3"
        );
    }

    #[test]
    fn a_closed_connection_is_broken_and_a_constraint_is_not() {
        let closed = DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("server closed the connection unexpectedly".to_string()),
        );
        assert!(broken_connection(&closed).is_some());
        let unique = DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("duplicate key".to_string()),
        );
        assert!(broken_connection(&unique).is_none());
        assert!(broken_connection(&DieselError::NotFound).is_none());
    }
}
