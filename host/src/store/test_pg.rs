//! A real, temporary PostgreSQL cluster for tests and benchmarks: Debian's `postgresql`
//! (`initdb` + `pg_ctl`) in a temp dir, on 127.0.0.1 and a free port, trust auth. One cluster
//! per test binary (`shared()`), one fresh database per test (`create_database`).
//!
//! Used by the store's unit tests (`#[cfg(test)]` in the library), by the integration tests
//! (`host/tests/it/support_pg.rs` includes this file) and by the store benchmark
//! (`host/examples/store_bench.rs`). Only std and diesel.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (CI does), every server
//! command runs as the `postgres` user (`runuser -u postgres --`) and the temp dir is chowned to
//! it. The cluster is stopped and its folder deleted by a watchdog `sh` holding a pipe from this
//! process: it fires when the pipe closes, so also when the test binary exits or is killed.
//! A missing PostgreSQL is a failure that says what to install, never a skipped test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use diesel::{Connection, PgConnection, RunQueryDsl};

/// What to install when the server programs are missing.
pub const INSTALL_HINT: &str = "PostgreSQL's server is needed for these tests: install Debian's \
     `postgresql` package (apt-get install postgresql; scripts/deps.sh does it), or point \
     BKG_PG_BIN at a folder with initdb, pg_ctl and postgres";

pub struct PgCluster {
    port: u16,
    dir: PathBuf,
    as_postgres: bool,
    /// Closing this (drop, or the process ending) makes the watchdog stop the server.
    watchdog_pipe: Mutex<Option<ChildStdin>>,
    watchdog: Mutex<Child>,
    next_db: AtomicUsize,
}

/// The cluster shared by every test of this test binary, started on first use.
pub fn shared() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| PgCluster::start(false).unwrap_or_else(|e| panic!("{e}")))
}

/// Where `initdb`, `pg_ctl` and `postgres` are: BKG_PG_BIN, or the newest
/// /usr/lib/postgresql/<version>/bin.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("BKG_PG_BIN").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!("BKG_PG_BIN={} has no initdb. {INSTALL_HINT}", dir.display()))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no /usr/lib/postgresql ({e}). {INSTALL_HINT}"))?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no initdb under /usr/lib/postgresql/*/bin. {INSTALL_HINT}"))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl PgCluster {
    /// Start a cluster. `durable`: fsync on (benchmarks); tests run with fsync off.
    pub fn start(durable: bool) -> Result<PgCluster, String> {
        let bin = bin_dir()?;
        let as_postgres = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        let dir = std::env::temp_dir().join(format!(
            "bkg-pg-{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir), "chown the cluster folder")?;
            // A TMPDIR under a folder only root may enter would fail in initdb, less clearly.
            run(
                Command::new("runuser").args(["-u", "postgres", "--", "test", "-w"]).arg(&dir),
                "checking that the postgres user may write the cluster folder (if not, set \
                 TMPDIR to a folder it can reach, e.g. /tmp)",
            )
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&dir);
            })?;
        }
        let data = dir.join("data");
        let server = |program: &str| -> Command {
            let path = bin.join(program);
            if as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            } else {
                Command::new(path)
            }
        };
        run(
            server("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        )?;
        // A few tries: the free port may be taken between finding it and the server binding it.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync={} \
                 -c synchronous_commit={} -c max_connections=200",
                dir.display(),
                if durable { "on" } else { "off" },
                if durable { "on" } else { "off" },
            );
            let started = run(
                server("pg_ctl")
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(dir.join("server.log"))
                    .args(["-o", &options, "-w", "-t", "60", "start"]),
                "pg_ctl start",
            );
            match started {
                Ok(()) => {
                    let (watchdog, pipe) = spawn_watchdog(&bin, &data, &dir, as_postgres)?;
                    let cluster = PgCluster {
                        port,
                        dir,
                        as_postgres,
                        watchdog_pipe: Mutex::new(Some(pipe)),
                        watchdog: Mutex::new(watchdog),
                        next_db: AtomicUsize::new(0),
                    };
                    return Ok(cluster);
                }
                Err(e) => {
                    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                    last_err = format!("{e}\nserver log:\n{log}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(format!("cannot start the test PostgreSQL: {last_err}"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database; its URL. It sorts text like a production database in an
    /// English locale (ICU `en-US`: `_z A a_1 a-2 a1 b B`), not byte by byte, so that a query
    /// relying on the order of the cluster's `C` locale fails here as it would there.
    pub fn create_database(&self) -> String {
        let name = format!("bkg_test_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let mut admin = PgConnection::establish(&self.url("postgres"))
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
        diesel::sql_query(format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        ))
        .execute(&mut admin)
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        self.url(&name)
    }

    /// The cluster's folder (data, socket, server log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server program of this cluster, run as `postgres` when the tests run as root.
    fn server_command(&self, program: &str) -> Result<Command, String> {
        let path = bin_dir()?.join(program);
        Ok(if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        })
    }

    /// Stop the server, as an outage (`pg_ctl stop -m fast`: every client's connection is
    /// terminated, new ones are refused); `start_server` brings it back. For a cluster of its
    /// own (`PgCluster::start`), never `shared()`: other tests use that one meanwhile.
    pub fn stop_server(&self) -> Result<(), String> {
        run(
            self.server_command("pg_ctl")?
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        )
    }

    /// Start the server stopped by `stop_server` again: the same folder, port and options (the
    /// ones the server wrote to `postmaster.opts` at its first start).
    pub fn start_server(&self) -> Result<(), String> {
        let data = self.dir.join("data");
        let opts = std::fs::read_to_string(data.join("postmaster.opts"))
            .map_err(|e| format!("cannot read the server's postmaster.opts: {e}"))?;
        // `<program> "-D" "<data>" "-p" "<port>" ...`: the quoted arguments after the program.
        let args = opts
            .trim()
            .split_once(" \"")
            .map(|(_, rest)| format!("\"{rest}"))
            .ok_or_else(|| format!("postmaster.opts has no arguments: {opts:?}"))?;
        run(
            self.server_command("pg_ctl")?
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-o", &args, "-w", "-t", "60", "start"]),
            "pg_ctl start",
        )
    }
}

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Closing the pipe is the watchdog's signal; wait for it to finish the cleanup.
        drop(self.watchdog_pipe.lock().unwrap_or_else(|p| p.into_inner()).take());
        let _ = self.watchdog.lock().unwrap_or_else(|p| p.into_inner()).wait();
    }
}

/// `sh` that waits for its stdin to close, then stops the server and deletes the folder.
fn spawn_watchdog(
    bin: &Path,
    data: &Path,
    dir: &Path,
    as_postgres: bool,
) -> Result<(Child, ChildStdin), String> {
    let script = r#"echo ready; read _; ${AS_POSTGRES:+runuser -u postgres --} "$PG_CTL" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1; rm -rf "$PG_DIR""#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .env("PG_CTL", bin.join("pg_ctl"))
        .env("PG_DATA", data)
        .env("PG_DIR", dir)
        .env("AS_POSTGRES", if as_postgres { "1" } else { "" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))?;
    let pipe = child.stdin.take().expect("piped stdin");
    let mut line = String::new();
    let out = child.stdout.take().expect("piped stdout");
    BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        return Err(format!("the cluster's watchdog did not start: {line:?}"));
    }
    Ok((child, pipe))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
