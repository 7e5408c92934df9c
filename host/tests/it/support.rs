//! Test harness: builds the fixture plugins once, starts real hosts on ephemeral ports in
//! temp dirs, and talks to them over HTTP. On failure a host prints its log.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The bootstrap admin key every test host is started with.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Build every fixture plugin, product plugin and example (once per test run) and return the
/// folder holding them.
///
/// One `cargo build` of the whole workspace with the targets `cargo test --workspace` also
/// builds (libraries, binaries, examples: the examples make cargo resolve the dev-dependencies'
/// features the way the test build does). A build of a subset (`-p a -p b`) resolves features
/// for that subset only and compiles its own copy of every shared dependency: on a fresh clone
/// that was two more copies of candle, about 3 GB of disk and minutes of CI.
pub fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args(["build", "--quiet", "--workspace", "--lib", "--bins", "--examples"])
            .output()
            .expect("run cargo build for the fixtures");
        assert!(
            out.status.success(),
            "building fixtures failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir().join("debug")
    })
}

/// The built library of a fixture, e.g. `fixture("echo-v2")`.
pub fn fixture(name: &str) -> PathBuf {
    let file = format!(
        "{}fixture_{}.{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    );
    let path = fixture_dir().join(file);
    assert!(path.is_file(), "fixture {name} not built at {}", path.display());
    path
}

/// The built library of a product plugin, e.g. `product_plugin("apikeys")`.
pub fn product_plugin(name: &str) -> PathBuf {
    let file = format!(
        "{}bkg_plugin_{}.{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    );
    let path = fixture_dir().join(file);
    assert!(path.is_file(), "plugin {name} not built at {}", path.display());
    path
}

/// The plugin from docs/plugin-author.md (`abi/examples/hello.rs`).
pub fn author_guide_example() -> PathBuf {
    let file = format!("{}hello.{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_EXTENSION);
    let path = fixture_dir().join("examples").join(file);
    assert!(path.is_file(), "example not built at {}", path.display());
    path
}

pub fn lib_name(stem: &str) -> String {
    format!("{stem}.{}", std::env::consts::DLL_EXTENSION)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A real `bkg` process on an ephemeral port with its own data and plugins folders.
pub struct Host {
    child: Child,
    pub base: String,
    /// Holds the data and plugins folders; removed when the host is dropped.
    dir: Option<tempfile::TempDir>,
    pub plugins: PathBuf,
    log: PathBuf,
    agent: ureq::Agent,
}

impl Host {
    pub fn start() -> Host {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Host {
        fixture_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_in(dir, extra)
    }

    /// Start a host on the data and plugins folders of `dir` (kept from an earlier host).
    fn spawn_in(dir: tempfile::TempDir, extra: &[&str]) -> Host {
        Self::spawn_with(dir, extra, &[("NO_COLOR", Some("1"))])
    }

    /// The one way a test host is started: `bkg` on an ephemeral port with the data and
    /// plugins folders of `dir`, stderr appended to `host.log` there (a restarted host keeps
    /// the earlier lines); `env` sets (`Some`) or removes (`None`) environment variables.
    fn spawn_with(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, Option<&str>)]) -> Host {
        Self::spawn_exe(Path::new(env!("CARGO_BIN_EXE_bkg")), dir, extra, env)
    }

    /// Start the `bkg` binary at `exe` (a link to the built one elsewhere) on a fresh folder.
    pub fn start_exe(exe: &Path, extra: &[&str]) -> Host {
        fixture_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_exe(exe, dir, extra, &[("NO_COLOR", Some("1"))])
    }

    fn spawn_exe(
        exe: &Path,
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Host {
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        let log = dir.path().join("host.log");
        let log_file =
            std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let mut command = Command::new(exe);
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--plugins-dir")
            .arg(&plugins)
            .args(extra)
            .env("RUST_LOG", "info,bkg_host=debug")
            .env("BKG_ADMIN_KEY", ADMIN_KEY);
        for (name, value) in env {
            match value {
                Some(v) => command.env(name, v),
                None => command.env_remove(name),
            };
        }
        let mut child = command.stdout(Stdio::piped()).stderr(log_file).spawn().expect("start bkg");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let base = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read bkg's stdout");
            assert!(
                n > 0,
                "bkg exited before listening:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            if let Some(url) = line.trim().strip_prefix("bkg listening on ") {
                break url.to_string();
            }
        };
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        let host = Host { child, base, dir: Some(dir), plugins, log, agent };
        host.wait_for("readyz", || host.get("/readyz").0 == 200);
        host
    }

    /// The host's models folder (the default, `<data-dir>/models`).
    pub fn models_dir(&self) -> PathBuf {
        self.dir.as_ref().expect("dir").path().join("data").join("models")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn finish(resp: Result<ureq::Response, ureq::Error>) -> (u16, String) {
        match resp {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.get_as(path, ADMIN_KEY)
    }

    /// GET with another API key (empty: none).
    pub fn get_as(&self, path: &str, key: &str) -> (u16, String) {
        Self::finish(self.authorized(self.agent.get(&format!("{}{path}", self.base)), key).call())
    }

    /// POST with another API key (empty: none).
    pub fn post_as(&self, path: &str, body: &str, key: &str) -> (u16, String) {
        Self::finish(
            self.authorized(self.agent.post(&format!("{}{path}", self.base)), key)
                .send_string(body),
        )
    }

    /// PUT raw bytes with the admin key.
    pub fn put_bytes(&self, path: &str, bytes: &[u8]) -> (u16, String) {
        let req = self.agent.put(&format!("{}{path}", self.base));
        Self::finish(self.authorized(req, ADMIN_KEY).send_bytes(bytes))
    }

    pub fn request_as(&self, method: &str, path: &str, key: &str) -> (u16, String) {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        Self::finish(self.authorized(req, key).send_string(""))
    }

    fn authorized(&self, req: ureq::Request, key: &str) -> ureq::Request {
        if key.is_empty() {
            req
        } else {
            req.set("Authorization", &format!("Bearer {key}"))
        }
    }

    /// A WebSocket URL for `path` carrying the admin key.
    pub fn ws_url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}access_token={ADMIN_KEY}", self.base.replace("http://", "ws://"))
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.post_as(path, body, ADMIN_KEY)
    }

    pub fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, body) = self.post(path, body);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// `GET /api/core/plugins/{id}`, or Null when unknown.
    pub fn plugin(&self, id: &str) -> Value {
        let (status, v) = self.get_json(&format!("/api/core/plugins/{id}"));
        if status == 200 {
            v
        } else {
            Value::Null
        }
    }

    pub fn state(&self, id: &str) -> String {
        self.plugin(id)["state"].as_str().unwrap_or("").to_string()
    }

    /// Deploy the way users are told to: copy to a hidden temp name, then rename into place.
    pub fn install(&self, source: &Path, name: &str) {
        let tmp = self.plugins.join(format!(".{name}.tmp"));
        std::fs::copy(source, &tmp).expect("copy plugin");
        std::fs::rename(&tmp, self.plugins.join(name)).expect("rename plugin into place");
    }

    /// Write bytes into the folder through a temp name + rename.
    pub fn install_bytes(&self, bytes: &[u8], name: &str) {
        let tmp = self.plugins.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).expect("write file");
        std::fs::rename(&tmp, self.plugins.join(name)).expect("rename into place");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.plugins.join(name)).expect("remove plugin file");
    }

    /// Poll until `cond` holds (bounded at 20 s; a failure prints what was awaited and the log).
    pub fn wait_for(&self, what: &str, cond: impl Fn() -> bool) {
        self.wait_for_up_to(what, Duration::from_secs(20), cond)
    }

    /// `wait_for` with another bound (for work that may take long on a busy machine).
    pub fn wait_for_up_to(&self, what: &str, bound: Duration, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}\n--- host log ---\n{}", self.log());
    }

    pub fn wait_state(&self, id: &str, state: &str) {
        self.wait_for(&format!("{id} to be {state}"), || self.state(id) == state);
    }

    /// Wait until `id` is unloaded (its file deleted) and the host has found out whether its
    /// last generation's library left memory; the plugin's view then (`history[0].residency`).
    pub fn wait_residency(&self, id: &str) -> Value {
        self.wait_state(id, "unloaded");
        self.wait_for("the generation's residency", || {
            !self.plugin(id)["history"][0]["residency"].is_null()
        });
        self.plugin(id)
    }

    /// Send SIGTERM and wait for the process to exit.
    /// Stop gracefully (SIGTERM) and start a new host on the same folders.
    pub fn restart(mut self, extra: &[&str]) -> Host {
        let (status, log) = self.stop_with("-TERM");
        assert!(status.success(), "bkg exited with {status:?}\n{log}");
        Self::spawn_in(self.dir.take().expect("dir"), extra)
    }

    /// Kill without warning (SIGKILL) and start a new host on the same folders.
    pub fn kill_and_restart(mut self, extra: &[&str]) -> Host {
        self.stop_with("-KILL");
        Self::spawn_in(self.dir.take().expect("dir"), extra)
    }

    fn stop_with(&mut self, signal: &str) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait bkg") {
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "bkg did not exit after {signal}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        self.stop_with("-TERM")
    }

    /// Stop gracefully (SIGTERM) and start a new host on the same folders with extra
    /// environment variables (e.g. a test hook such as `BKG_FAILPOINT`).
    pub fn restart_with_env(mut self, extra: &[&str], env: &[(&str, &str)]) -> Host {
        let (status, log) = self.stop_with("-TERM");
        assert!(status.success(), "bkg exited with {status:?}\n{log}");
        Self::spawn_in_with_env(self.dir.take().expect("dir"), extra, env)
    }

    /// Wait (at most 60 s) for the process to exit on its own, e.g. at a failpoint.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait bkg") {
                return status;
            }
            assert!(Instant::now() < deadline, "bkg did not exit by itself\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit on its own ([`Host::wait_for_exit`]) and start a new host
    /// on the same folders.
    pub fn restart_after_exit(mut self, extra: &[&str]) -> Host {
        self.wait_for_exit();
        Self::spawn_in(self.dir.take().expect("dir"), extra)
    }

    /// [`Host::spawn_in`] with extra environment variables.
    fn spawn_in_with_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Host {
        let mut vars: Vec<(&str, Option<&str>)> = vec![("NO_COLOR", Some("1"))];
        vars.extend(env.iter().map(|(k, v)| (*k, Some(*v))));
        Self::spawn_with(dir, extra, &vars)
    }
}

impl Host {
    /// Start a host as a user's shell would: `NO_COLOR` neither set by the harness nor
    /// inherited from the test's environment; stderr goes to the log file as usual.
    pub fn start_without_no_color() -> Host {
        fixture_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_with(dir, &[], &[("NO_COLOR", None)])
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "--- host log ({}) ---\n{}", self.base, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Kill without warning (SIGKILL), let `edit` change the data folder while no host runs,
    /// and start a new host on the same folders.
    pub fn kill_edit_and_restart(mut self, extra: &[&str], edit: impl FnOnce(&Path)) -> Host {
        self.stop_with("-KILL");
        let dir = self.dir.take().expect("dir");
        edit(&dir.path().join("data"));
        Self::spawn_in(dir, extra)
    }
}

/// The models `scripts/fetch-models.sh` lays out (or `$BKG_TEST_MODELS`), hard-linked into a
/// folder of the test's own, so a test that writes there (a quantized file, say) touches
/// nothing shared. Returns `into`.
pub fn link_models(into: &Path, models: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let source = std::env::var_os("BKG_TEST_MODELS").map(PathBuf::from).unwrap_or(source);
    for model in models {
        let from = source.join(model);
        assert!(
            from.join(".bkg-model.json").is_file(),
            "the model {model} is not in {}: run `bash scripts/fetch-models.sh` first",
            source.display()
        );
        link_tree(&from, &into.join(model));
    }
    into.to_path_buf()
}

fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            link_tree(&e.path(), &target);
        } else if target.exists() {
            // Linked already: copying onto a hard link would truncate the shared original.
        } else if std::fs::hard_link(e.path(), &target).is_err() {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

impl Host {
    /// The host's data folder (`--data-dir`); plugins keep theirs in `plugin-data/<id>`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.as_ref().expect("dir").path().join("data")
    }

    /// POST raw bytes with the admin key; the status and the answer's raw bytes (any size).
    pub fn post_bytes(&self, path: &str, content_type: &str, bytes: &[u8]) -> (u16, Vec<u8>) {
        use std::io::Read;
        let req =
            self.agent.post(&format!("{}{path}", self.base)).set("Content-Type", content_type);
        let resp = self.authorized(req, ADMIN_KEY).send_bytes(bytes);
        let (code, r) = match resp {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(code, r)) => (code, r),
            Err(e) => return (0, e.to_string().into_bytes()),
        };
        let mut body = Vec::new();
        r.into_reader().read_to_end(&mut body).expect("read the answer");
        (code, body)
    }
}

impl Host {
    /// POST JSON with the admin key and read the answer line by line as it streams (NDJSON):
    /// `on_line` gets each line; returning false drops the connection there (a client
    /// leaving). Returns the status.
    pub fn post_lines(&self, path: &str, body: &str, mut on_line: impl FnMut(&str) -> bool) -> u16 {
        let req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Content-Type", "application/json");
        let (code, r) = match self.authorized(req, ADMIN_KEY).send_string(body) {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(code, r)) => (code, r),
            Err(e) => panic!("POST {path}: {e}"),
        };
        for line in BufReader::new(r.into_reader()).lines() {
            let line = line.expect("read a line of the answer");
            if !on_line(&line) {
                break;
            }
        }
        code
    }
}

/// The built crash fixture (`host/tests/fixtures/crashy`, built once per test run): its
/// crashing capabilities may only be called on a plugin in `process` isolation mode.
pub fn crashy_fixture() -> PathBuf {
    fixture("crashy")
}

impl Host {
    /// `POST /api/core/plugins/{id}/isolation {"mode": mode}` ("process" | "in_process");
    /// asserts a 200 and returns the plugin view it answers.
    pub fn set_isolation(&self, id: &str, mode: &str) -> Value {
        let (status, v) = self.post_json(
            &format!("/api/core/plugins/{id}/isolation"),
            &format!(r#"{{"mode":"{mode}"}}"#),
        );
        assert_eq!(status, 200, "setting {id}'s isolation to {mode}: {v}");
        assert_eq!(v["isolation"], mode, "{v}");
        v
    }

    /// Set `id`'s isolation mode and wait until it serves in that mode: in `process` mode
    /// the view shows a child pid, in `in_process` mode none.
    pub fn isolate(&self, id: &str, mode: &str) {
        self.set_isolation(id, mode);
        self.wait_for(&format!("{id} to run in {mode} mode"), || {
            let p = self.plugin(id);
            p["isolation"] == mode
                && p["state"] == "running"
                && (mode == "process") == p["process"]["pid"].is_u64()
        });
    }

    /// Events of `plugin` (newest first, at most 1000).
    pub fn events_of(&self, plugin: &str) -> Vec<Value> {
        let (status, v) = self.get_json(&format!("/api/core/events?plugin={plugin}&limit=1000"));
        assert_eq!(status, 200, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    }
}

impl Host {
    /// Run the plugins `ids` (loaded and running) in isolation `mode` for a test body shared
    /// by both modes: `in_process` (the default) leaves them as they are; `process` moves
    /// each into a child ([`Host::isolate`], a swap: one more generation each).
    pub fn in_mode(&self, mode: &str, ids: &[&str]) {
        assert!(mode == "in_process" || mode == "process", "no isolation mode {mode:?}");
        if mode == "process" {
            for id in ids {
                self.isolate(id, mode);
            }
        }
    }
}

/// Raises the flag when dropped, so client threads looping on it stop even when the test body
/// panics (a `thread::scope` joins its threads before the panic goes on: without this the test
/// would hang instead of failing).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A host with the `echo` fixture and the `apikeys` plugin (the key provider) running.
pub fn start_with_apikeys() -> Host {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&product_plugin("apikeys"), &lib_name("apikeys"));
    host.wait_state("echo", "running");
    host.wait_state("apikeys", "running");
    host
}

/// The temporary PostgreSQL of this test binary: one cluster, started on first use, stopped
/// and deleted when the binary exits (the store's own tests use the same file).
#[path = "../../src/store/test_pg.rs"]
pub mod test_pg;

/// A new, empty database on the test binary's PostgreSQL: its URL, for `--database-url`.
pub fn postgres_database() -> String {
    test_pg::shared().create_database()
}

/// The built fixture whose library suggests process mode (`host/tests/fixtures/hinted`:
/// `export_plugin!(Hinted, heap = untracked, isolation = process)`), built once per test run.
pub fn hinted_fixture() -> PathBuf {
    fixture("hinted")
}

impl Host {
    /// Start a host on a fresh folder with `env` set (test hooks such as
    /// `BKG_AUTH_CACHE_TTL_MS`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Host {
        fixture_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut all: Vec<(&str, Option<&str>)> = vec![("NO_COLOR", Some("1"))];
        all.extend(env.iter().map(|(k, v)| (*k, Some(*v))));
        Self::spawn_with(dir, extra, &all)
    }
}

/// A host on the database at `url` (`--database-url`) with the `echo` fixture and the
/// `apikeys` plugin running; its store is that database, not a SQLite file in its data dir.
pub fn host_on_database(url: &str) -> Host {
    let host = Host::start_with(&["--database-url", url]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&product_plugin("apikeys"), &lib_name("apikeys"));
    host.wait_state("echo", "running");
    host.wait_state("apikeys", "running");
    assert!(!host.data_dir().join("bkg.db").exists(), "a SQLite file was made");
    host
}

/// A key made through the `apikeys` plugin with `scopes`: its id and the key.
pub fn create_key(host: &Host, name: &str, scopes: &[&str]) -> (String, String) {
    let body = serde_json::json!({ "name": name, "scopes": scopes }).to_string();
    let (status, v) = host.post_json("/api/plugins/apikeys/create", &body);
    assert_eq!(status, 201, "{v}");
    (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
}
