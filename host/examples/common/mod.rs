//! Shared helpers of the benchmark examples (issue #2): find the release binaries next to
//! the running example, start a real `bkg` host on 127.0.0.1 in a temp dir, install and
//! remove plugin files the way users are told to (copy to a hidden temp name, rename), poll
//! the admin API, read a process's memory figures and summarise samples.
//!
//! Not an example itself: cargo only treats `examples/*.rs` and `examples/*/main.rs` as
//! examples. Each example uses a different part, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The cargo output folder the running example was built into (`target/release`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/release/examples/<name>  ->  target/release
    exe.parent()
        .and_then(Path::parent)
        .expect("the example runs from target/<profile>/examples")
        .to_path_buf()
}

/// The `bkg` binary to benchmark: `$BKG_BIN`, or `bkg` in the same build folder.
pub fn bkg_bin() -> PathBuf {
    let path =
        std::env::var_os("BKG_BIN").map(PathBuf::from).unwrap_or_else(|| build_dir().join("bkg"));
    assert!(
        path.is_file(),
        "no bkg binary at {} (run `cargo build --release -p bkg-host` first, or set BKG_BIN)",
        path.display()
    );
    path
}

/// Another example of the same build, e.g. `example_bin("bare_echo")`.
pub fn example_bin(name: &str) -> PathBuf {
    let path = build_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "no example binary at {} (run `cargo build --release -p bkg-host --examples` first)",
        path.display()
    );
    path
}

/// A fixture plugin of the same build, e.g. `fixture("echo-v2")` is
/// `target/release/libfixture_echo_v2.so`; `$BKG_FIXTURE_DIR` overrides the folder.
pub fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("BKG_FIXTURE_DIR").map(PathBuf::from).unwrap_or_else(build_dir);
    let file = format!(
        "{}fixture_{}.{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    );
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "fixture {name} not built at {} (run `cargo build --release -p fixture-{name}`)",
        path.display()
    );
    path
}

/// The file name plugins are installed under in the benchmarks.
pub fn lib_name(stem: &str) -> String {
    format!("{stem}.{}", std::env::consts::DLL_EXTENSION)
}

/// Read a server's stdout up to its `<prefix> listening on http://ADDR` line (the first line,
/// or one of the first few) and return the base URL. The rest of stdout is drained on a
/// thread so the server never blocks on it.
pub fn read_listen_line(stdout: ChildStdout, who: &str) -> String {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        let n = reader.read_line(&mut line).expect("read listen line");
        if n == 0 || line.contains(" listening on ") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while matches!(reader.read_line(&mut sink), Ok(n) if n > 0) {
            sink.clear();
        }
    });
    let base = line
        .trim()
        .split_once(" listening on ")
        .map(|(_, url)| url.to_string())
        .unwrap_or_else(|| panic!("unexpected first line from {who}: {line:?}"));
    assert!(base.starts_with("http://127.0.0.1:"), "{who}: {base}");
    base
}

/// Have the kernel kill a child process when the benchmark that started it dies, so that a
/// benchmark stopped by a signal (e.g. `timeout`) leaves no server behind.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        extern "C" {
            fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
        }
        const PR_SET_PDEATHSIG: std::ffi::c_int = 1;
        const SIGKILL: std::ffi::c_ulong = 9;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; the
        // benchmarks start their children from the main thread, which lives until the end.
        unsafe {
            cmd.pre_exec(|| {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                Ok(())
            });
        }
    }
    cmd
}

/// Poll `cond` every `every` until it holds or `limit` passes; false on timeout.
pub fn poll_until(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        if !every.is_zero() {
            std::thread::sleep(every);
        }
    }
}

/// A release `bkg` process on an ephemeral 127.0.0.1 port with its own temp folders.
/// Killed (and its folders removed) when dropped.
pub struct Host {
    child: Child,
    pub base: String,
    pub plugins: PathBuf,
    pub log: PathBuf,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

/// One HTTP answer: status (0 for a transport error) and body.
pub type Answer = (u16, String);

pub fn finish(resp: Result<ureq::Response, ureq::Error>) -> Answer {
    match resp {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// An HTTP client with keep-alive and a bound on every request.
/// The bootstrap admin key the benchmark hosts run with (the host requires a key).
pub const BENCH_KEY: &str = "bench-admin-key-0123456789abcdef";

/// The `Authorization` header value for [`BENCH_KEY`].
pub fn bearer() -> String {
    format!("Bearer {BENCH_KEY}")
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

impl Host {
    /// Start `bkg --listen 127.0.0.1:0 --data-dir TMP/data --plugins-dir TMP/plugins EXTRA`
    /// and wait until it is ready.
    pub fn start(extra: &[&str]) -> Host {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        let log = dir.path().join("host.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = die_with_parent(&mut Command::new(bkg_bin()))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--plugins-dir")
            .arg(&plugins)
            .args(extra)
            .env("RUST_LOG", std::env::var("BKG_BENCH_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .env("BKG_ADMIN_KEY", BENCH_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start bkg");
        let base = read_listen_line(child.stdout.take().expect("stdout"), "bkg");
        let host = Host { child, base, plugins, log, agent: agent(), _dir: dir };
        let ready = poll_until(Duration::from_secs(20), Duration::from_millis(10), || {
            host.get("/readyz").0 == 200
        });
        host.check(ready, "the host to be ready");
        host
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panic with the host log when `ok` is false.
    pub fn check(&self, ok: bool, what: &str) {
        if !ok {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("timed out waiting for {what}\n--- host log (tail) ---\n{}", tail.join("\n"));
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        finish(
            self.agent.get(&format!("{}{path}", self.base)).set("Authorization", &bearer()).call(),
        )
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        finish(
            self.agent
                .post(&format!("{}{path}", self.base))
                .set("Authorization", &bearer())
                .set("Content-Type", "application/octet-stream")
                .send_string(body),
        )
    }

    /// `GET /api/core/plugins/{id}`, or Null when unknown.
    pub fn plugin(&self, id: &str) -> Value {
        match self.get(&format!("/api/core/plugins/{id}")) {
            (200, body) => serde_json::from_str(&body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    pub fn state(&self, id: &str) -> String {
        self.plugin(id)["state"].as_str().unwrap_or("").to_string()
    }

    /// Wait (bounded) until the plugin's state is `state`; panics with the log otherwise.
    pub fn wait_state(&self, id: &str, state: &str, every: Duration) {
        let ok = poll_until(Duration::from_secs(20), every, || self.state(id) == state);
        self.check(ok, &format!("plugin {id} to be {state}"));
    }

    /// Copy `source` to a hidden temp name in the plugins folder (the watcher ignores it).
    /// Returns the temp path; [`Host::commit`] renames it into place.
    pub fn stage(&self, source: &Path, name: &str) -> PathBuf {
        let tmp = self.plugins.join(format!(".{name}.tmp"));
        std::fs::copy(source, &tmp).expect("copy plugin");
        tmp
    }

    /// Rename a staged file into place: the atomic step the host reacts to.
    pub fn commit(&self, staged: &Path, name: &str) {
        std::fs::rename(staged, self.plugins.join(name)).expect("rename plugin into place");
    }

    /// Copy to a temp name, then rename into place.
    pub fn install(&self, source: &Path, name: &str) {
        let staged = self.stage(source, name);
        self.commit(&staged, name);
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.plugins.join(name)).expect("remove plugin file");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `Key:   123 kB` figure of `/proc/PID/status`, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The `Threads:` count of `/proc/PID/status`.
pub fn proc_threads(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "Threads")
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `--name value` flags of an example; unknown flags are refused.
pub struct Flags(Vec<(String, String)>);

impl Flags {
    pub fn parse(known: &[&str]) -> Flags {
        let mut out = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                panic!("unexpected argument {arg:?}; flags: {known:?}");
            };
            assert!(known.contains(&name), "unknown flag --{name}; flags: {known:?}");
            let value = args.next().unwrap_or_else(|| panic!("--{name} needs a value"));
            out.push((name.to_string(), value));
        }
        Flags(out)
    }

    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.0.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v.parse().unwrap_or_else(|_| panic!("--{name}: cannot parse {v:?}")),
            None => default,
        }
    }
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `p50 / p99 / max` of samples in milliseconds.
pub fn summary_ms(samples: &mut [f64]) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        quantile(samples, 0.50),
        quantile(samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN),
        samples.len()
    )
}

/// What one wrk run reported.
pub struct Wrk {
    pub rps: f64,
    pub requests: u64,
    /// Non-2xx/3xx answers.
    pub non_2xx: u64,
    /// wrk's lines about non-2xx answers and socket errors, `; `-separated (empty: none).
    pub errors: String,
}

/// Run `wrk -t<threads> -c<connections> -d<secs>s -s <script> <url>` (the scripts under
/// scripts/ that run the benchmarks install wrk).
pub fn wrk(threads: usize, connections: usize, secs: u64, script: &Path, url: &str) -> Wrk {
    let out = Command::new("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{secs}s"),
            "-s".into(),
            script.display().to_string(),
            url.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run wrk (is it installed? the benchmark scripts install it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let mut w = Wrk { rps: 0.0, requests: 0, non_2xx: 0, errors: String::new() };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if line.contains(" requests in ") {
            w.requests = line.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
                w.non_2xx = v.trim().parse().unwrap_or(0);
            }
            w.errors.push_str(line);
            w.errors.push_str("; ");
        }
    }
    assert!(w.rps > 0.0, "cannot read wrk's output:\n{text}");
    w
}
