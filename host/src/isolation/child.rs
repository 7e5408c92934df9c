//! The host's side of a plugin in process mode: spawning `bkg plugin-runner` on a staged
//! shadow file, the handshake, and the remote plugin object an instance hands its calls to.
//!
//! No host thread waits per call: the thread that submits a call writes its frame
//! ([`DirectDispatch`]), and the reader ends it as the answer comes. Per child there are four
//! host threads: the reader (every frame from the child: answers end their calls, lifecycle
//! answers, log lines, heap figures; host callbacks are served on a thread each, never on the
//! reader, since a bus call may take long and may call back into the same child), the
//! watchdog (forwards the cancellation of calls out, kills the child when one runs on past
//! it), the waiter (blocks in `waitid` until the child dies, then ends every call in flight
//! with 503 `plugin_crashed` naming the signal or exit code) and the stderr reader (mirrors
//! the child's stderr into the plugin's log, keeping the last lines for the crash record). A
//! call whose answer streams gets a thread of its own for that answer, which may wait for a
//! slow client (the child waits for credit meanwhile).
//!
//! The socket is the child's stdin (`--fd 0`): std dup2s it there in the child only, so no
//! descriptor of ours is ever inheritable and no `unsafe` is needed.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr};
use bkg_abi::ffi::{
    CallKind, ChunkSink, ChunkSink_TO, ErrorKind, FfiCapability, FfiManifest, FfiRequest, FfiRoute,
    HostBox, LogLevel,
};
use crossbeam_channel::{Receiver, Sender};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::wire::{
    self, CbOp, CbValue, ChildMsg, HostMsg, WireControl, WireError, WireManifest, WireReply,
    PROTOCOL_VERSION,
};
use super::CrashInfo;
use crate::exec::{
    CallWatch, Control, DirectCall, DirectDispatch, HeapRead, HostCallContext, ManifestInfo,
    PluginCode, PluginFailure, PluginSource, Reply,
};

/// How many of the child's last stderr lines a crash record keeps.
pub const STDERR_TAIL: usize = 20;

/// What to run and with what.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The `bkg` binary (`std::env::current_exe()`).
    pub exe: PathBuf,
    /// The staged shadow copy the child opens.
    pub library: PathBuf,
    /// The plugins' data root: the child's data dir is `<plugin_dir>/<id>`.
    pub plugin_dir: PathBuf,
    pub models_dir: PathBuf,
    /// How long the handshake may take.
    pub handshake_timeout: Duration,
    /// Resource limits the child sets on itself (none: inherited).
    pub rlimits: RLimits,
}

/// Resource limits a child sets on itself at start (`setrlimit`, soft and hard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RLimits {
    /// Address space, bytes (`RLIMIT_AS`).
    pub address_space: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes/threads of the user (`RLIMIT_NPROC`).
    pub processes: Option<u64>,
}

/// What the reader hands the thread forwarding a streamed call's answer.
enum StreamMsg {
    Chunk(Vec<u8>),
    Done(Result<Reply, PluginFailure>),
}

/// A call out to the child. No host thread waits for it: the reader ends it as its answer
/// comes (a streamed answer is forwarded by a thread of its own, which may wait for a slow
/// client), and the watchdog forwards its cancellation.
struct PendingCall {
    /// The call, until it streams (then its stream thread holds it).
    call: Option<DirectCall>,
    /// Its cancel flag and client, for the watchdog and for bus calls made for it.
    watch: CallWatch,
    /// Where its chunks go once it streams.
    stream: Option<Sender<StreamMsg>>,
    /// Its target, for the log line and the crash record of a kill.
    target: String,
    /// The watchdog sent `Cancel` for it.
    cancel_sent: bool,
    /// When the watchdog first saw it cancelled.
    cancelled_at: Option<Instant>,
}

impl PendingCall {
    /// End it with `result` (through its stream thread, if it streams).
    fn end(self, result: Result<Reply, PluginFailure>) {
        if let Some(stream) = &self.stream {
            let _ = stream.send(StreamMsg::Done(result));
        } else if let Some(call) = self.call {
            call.finish(result);
        }
    }
}

type OnExit = Box<dyn FnOnce(CrashInfo) + Send>;

/// How the child ended.
#[derive(Debug, Clone)]
struct Exit {
    signal: Option<String>,
    exit_code: Option<i32>,
    message: String,
    at_ms: u64,
}

/// The connection to one child, shared by the remote plugin, its reader, waiter and
/// callback threads.
pub struct Conn {
    pid: u32,
    writer: Mutex<UnixStream>,
    next_id: AtomicU64,
    calls: Mutex<HashMap<u64, PendingCall>>,
    controls: Mutex<HashMap<u64, Sender<Result<String, PluginFailure>>>>,
    created: Mutex<Option<Sender<Result<(), String>>>>,
    cb_cancels: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    /// The credit of each streamed bus answer going to the child: `CbChunk`s it may still
    /// be sent (`wire::STREAM_WINDOW`, raised by its `CbCredit`).
    cb_credits: Mutex<HashMap<u64, Arc<BusCredit>>>,
    host: OnceLock<HostBox>,
    heap: AtomicU64,
    heap_known: AtomicBool,
    /// Set once the child is dead: why (the message every call in flight ends with).
    dead: OnceLock<Exit>,
    /// The host asked it to end (a retirement or shutdown): its death is no crash.
    expected_exit: AtomicBool,
    /// True once the zombie was reaped: from then on its pid may belong to another process,
    /// so nothing signals it. Held while signalling, so the pid cannot be reused meanwhile.
    reaped: Mutex<bool>,
    stderr_tail: Mutex<VecDeque<String>>,
    stderr_done: AtomicBool,
    on_exit: Mutex<Option<OnExit>>,
    /// The plugin id, once known (for log lines).
    label: OnceLock<String>,
    /// What the supervisor does about the death (restarting, crashlooping): added to the
    /// answer of every call made to the dead child.
    note: Mutex<Option<String>>,
    /// Why the host killed it (a call that ignored its cancellation), for the crash record.
    kill_reason: OnceLock<String>,
}

fn crashed(message: &str) -> PluginFailure {
    PluginFailure { kind: ErrorKind::PLUGIN_CRASHED, message: message.to_string() }
}

fn signal_words(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGSEGV => "segmentation fault",
        Signal::SIGABRT => "aborted",
        Signal::SIGKILL => "killed",
        Signal::SIGBUS => "bus error",
        Signal::SIGILL => "illegal instruction",
        Signal::SIGFPE => "arithmetic error",
        Signal::SIGTERM => "terminated",
        Signal::SIGXCPU => "CPU time limit",
        _ => "signal",
    }
}

impl Conn {
    fn send(&self, msg: &HostMsg) -> std::io::Result<()> {
        self.send_frame(&msg.encode())
    }

    fn send_frame(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        wire::write_frame(&mut *w, frame)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True once the child is dead.
    pub fn is_dead(&self) -> bool {
        self.dead.get().is_some()
    }

    fn dead_failure(&self) -> Option<PluginFailure> {
        let exit = self.dead.get()?;
        Some(match self.note.lock().unwrap_or_else(|p| p.into_inner()).as_deref() {
            Some(note) => crashed(&format!("{}; {note}", exit.message)),
            None => crashed(&exit.message),
        })
    }

    /// Say what happens next (restart in N ms, crashlooping) in the answers to calls made to
    /// the dead child.
    pub fn set_note(&self, note: String) {
        *self.note.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
    }

    /// Send SIGKILL, unless the child was already reaped.
    pub fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }

    /// Kill the child for `reason` (it is recorded as the crash's cause).
    pub fn kill_because(&self, reason: String) {
        if self.kill_reason.set(reason).is_ok() {
            tracing::warn!(pid = self.pid, plugin = ?self.label.get(), reason = ?self.kill_reason.get(), "killing the plugin's process");
            self.kill();
        }
    }

    /// Ask the child to end (its plugin was stopped): `Shutdown`, then SIGKILL if it is still
    /// there after `grace`. Returns once it is dead (or after `grace` and the kill). Its
    /// death is not reported as a crash.
    pub fn end(&self, grace: Duration) {
        self.expected_exit.store(true, Ordering::SeqCst);
        let _ = self.send(&HostMsg::Shutdown);
        let until = Instant::now() + grace;
        while !self.is_dead() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !self.is_dead() {
            tracing::warn!(pid = self.pid, plugin = ?self.label.get(), "the plugin's process did not exit when asked; killing it");
            self.kill();
            let until = Instant::now() + Duration::from_secs(5);
            while !self.is_dead() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Call `f` with the crash record when the child dies without being asked to (at once if
    /// it already did). Set once.
    pub fn on_exit(&self, f: impl FnOnce(CrashInfo) + Send + 'static) {
        let mut slot = self.on_exit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(exit) = self.dead.get() {
            drop(slot);
            if !self.expected_exit.load(Ordering::SeqCst) {
                f(self.crash_info(exit));
            }
            return;
        }
        *slot = Some(Box::new(f));
    }

    fn crash_info(&self, exit: &Exit) -> CrashInfo {
        CrashInfo {
            at_ms: exit.at_ms,
            signal: exit.signal.clone(),
            exit_code: exit.exit_code,
            message: exit.message.clone(),
            stderr_tail: self
                .stderr_tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// The last stderr lines of the child.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// End every call and operation in flight with the crash.
    fn fail_all(&self, message: &str) {
        let calls: Vec<PendingCall> =
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, c)| c).collect();
        for call in calls {
            call.end(Err(crashed(message)));
        }
        let controls: Vec<_> = self
            .controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in controls {
            let _ = c.send(Err(crashed(message)));
        }
        if let Some(tx) = self.created.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(Err(message.to_string()));
        }
        for flag in self.cb_cancels.lock().unwrap_or_else(|p| p.into_inner()).values() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

impl HeapRead for Conn {
    fn bytes(&self) -> Option<u64> {
        if self.is_dead() || !self.heap_known.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.heap.load(Ordering::Relaxed))
    }
}

fn failure(e: WireError) -> PluginFailure {
    PluginFailure { kind: ErrorKind(e.kind), message: e.message }
}

fn reply(r: WireReply) -> Reply {
    Reply { status: r.status, content_type: r.content_type, body: r.body }
}

/// A spawned child that passed the handshake.
pub struct Spawned {
    pub conn: Arc<Conn>,
    pub manifest: ManifestInfo,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpawnError(pub String);

/// A random per-spawn cookie (hex).
fn cookie() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Never reached on Linux; the cookie is a check, not a secret the socket relies on.
        let t = crate::clock::now_ms().to_le_bytes();
        bytes[..8].copy_from_slice(&t);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_ffi_manifest(m: WireManifest) -> FfiManifest {
    FfiManifest {
        id: m.id.into(),
        name: m.name.into(),
        version: m.version.into(),
        description: m.description.into(),
        capabilities: m
            .capabilities
            .into_iter()
            .map(|c| FfiCapability {
                name: c.name.into(),
                description: c.description.into(),
                input_schema: c.input_schema.into(),
                output_schema: c.output_schema.into(),
                streaming: c.streaming,
                scope: c.scope.into(),
            })
            .collect(),
        routes: m
            .routes
            .into_iter()
            .map(|(method, path)| FfiRoute { method: method.into(), path: path.into() })
            .collect(),
        route_prefix: m.route_prefix.map(Into::into).into(),
        config_schema: m.config_schema.into(),
        max_concurrency: m.max_concurrency,
        config_needs_restart: m.config_needs_restart,
    }
}

/// Start `bkg plugin-runner` on a staged library, shake hands, and start the reader, waiter
/// and stderr threads. `on_line` gets each line the child writes to its stderr.
pub fn spawn(
    spec: &SpawnSpec,
    on_line: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Spawned, SpawnError> {
    let (host_end, child_end) = UnixStream::pair()
        .map_err(|e| SpawnError(format!("cannot create the socket pair: {e}")))?;
    let cookie = cookie();
    let mut command = Command::new(&spec.exe);
    command
        .arg("plugin-runner")
        .arg("--fd")
        .arg("0")
        .arg("--library")
        .arg(&spec.library)
        .arg("--plugin-dir")
        .arg(&spec.plugin_dir)
        .arg("--models-dir")
        .arg(&spec.models_dir)
        .arg("--host-pid")
        .arg(std::process::id().to_string());
    for (flag, value) in [
        ("--rlimit-as", spec.rlimits.address_space),
        ("--rlimit-nofile", spec.rlimits.open_files),
        ("--rlimit-nproc", spec.rlimits.processes),
    ] {
        if let Some(v) = value {
            command.arg(flag).arg(v.to_string());
        }
    }
    // The bootstrap admin key stays with the host. (The child dies with the thread that
    // spawned it, `PR_SET_PDEATHSIG`: the registry thread, which lives as long as the host.)
    command
        .env_remove("BKG_ADMIN_KEY")
        .env("BKG_RUNNER_COOKIE", &cookie)
        .env("NO_COLOR", "1")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(child_end)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| {
        SpawnError(format!("cannot start the plugin runner {}: {e}", spec.exe.display()))
    })?;
    // Our copy of the child's end is closed here, so the child's death is EOF on ours.
    drop(command);
    let pid = child.id();
    let stderr = child.stderr.take();
    // std's `Child` neither waits nor kills on drop: the waiter thread reaps it by pid.
    drop(child);

    let writer =
        host_end.try_clone().map_err(|e| SpawnError(format!("cannot clone the socket: {e}")))?;
    let conn = Arc::new(Conn {
        pid,
        writer: Mutex::new(writer),
        next_id: AtomicU64::new(0),
        calls: Mutex::default(),
        controls: Mutex::default(),
        created: Mutex::default(),
        cb_cancels: Mutex::default(),
        cb_credits: Mutex::default(),
        host: OnceLock::new(),
        heap: AtomicU64::new(0),
        heap_known: AtomicBool::new(false),
        dead: OnceLock::new(),
        expected_exit: AtomicBool::new(false),
        reaped: Mutex::new(false),
        stderr_tail: Mutex::default(),
        stderr_done: AtomicBool::new(stderr.is_none()),
        on_exit: Mutex::default(),
        label: OnceLock::new(),
        note: Mutex::default(),
        kill_reason: OnceLock::new(),
    });
    if let Some(stderr) = stderr {
        let c = conn.clone();
        let spawned =
            std::thread::Builder::new().name(format!("bkg-child{pid}-err")).spawn(move || {
                let mut lines = BufReader::new(stderr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match lines.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    on_line(text);
                    if is_backtrace_line(text) {
                        // In the log, but not in the crash record's few lines, which keep
                        // what the plugin and the runtime said.
                        continue;
                    }
                    let mut tail = c.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(text.to_string());
                }
                c.stderr_done.store(true, Ordering::SeqCst);
            });
        if spawned.is_err() {
            conn.stderr_done.store(true, Ordering::SeqCst);
        }
    }
    {
        let c = conn.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bkg-child{pid}-wait"))
            .spawn(move || wait_for_exit(c));
        if let Err(e) = spawned {
            conn.kill();
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
            return Err(SpawnError(format!("cannot start the waiter thread: {e}")));
        }
    }

    // The handshake, on this thread, bounded.
    let fail = |conn: &Conn, message: String| -> SpawnError {
        conn.expected_exit.store(true, Ordering::SeqCst);
        conn.kill();
        SpawnError(message)
    };
    let mut reader = BufReader::with_capacity(64 * 1024, host_end);
    let hello = HostMsg::Hello { version: PROTOCOL_VERSION, cookie: cookie.clone() };
    if let Err(e) = conn.send(&hello) {
        let why = died_before_hello(&conn, &format!("cannot send the hello: {e}"));
        return Err(fail(&conn, why));
    }
    let _ = reader.get_ref().set_read_timeout(Some(spec.handshake_timeout));
    let first = wire::read_frame(&mut reader);
    let _ = reader.get_ref().set_read_timeout(None);
    let frame = match first {
        Ok(Some(frame)) => frame,
        Ok(None) => {
            let why = died_before_hello(&conn, "it closed the connection");
            return Err(fail(&conn, why));
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(fail(
                &conn,
                format!(
                    "the plugin's process did not answer the hello within {} ms",
                    spec.handshake_timeout.as_millis()
                ),
            ));
        }
        Err(e) => {
            let why = died_before_hello(&conn, &format!("reading its hello failed: {e}"));
            return Err(fail(&conn, why));
        }
    };
    let manifest = match ChildMsg::decode(&frame) {
        Ok(ChildMsg::HelloAck { version, cookie: echoed, result }) => {
            if version != PROTOCOL_VERSION {
                return Err(fail(
                    &conn,
                    format!(
                        "the plugin runner speaks protocol version {version}, this host {PROTOCOL_VERSION}"
                    ),
                ));
            }
            if echoed != cookie {
                return Err(fail(
                    &conn,
                    "the plugin runner answered with the wrong cookie (not the process this \
                     host started?)"
                        .to_string(),
                ));
            }
            match result {
                Ok(m) => ManifestInfo::from_ffi(to_ffi_manifest(m)),
                Err(message) => return Err(fail(&conn, message)),
            }
        }
        Ok(other) => {
            return Err(fail(
                &conn,
                format!("the plugin runner's first message was not its hello: {other:?}"),
            ))
        }
        Err(e) => return Err(fail(&conn, format!("the plugin runner's hello: {e}"))),
    };
    let _ = conn.label.set(manifest.id.clone());
    {
        let c = conn.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bkg-child{pid}-read"))
            .spawn(move || read_loop(c, reader));
        if let Err(e) = spawned {
            return Err(fail(&conn, format!("cannot start the reader thread: {e}")));
        }
    }
    Ok(Spawned { conn, manifest })
}

/// A line of a Rust backtrace (`stack backtrace:`, `  12: frame`, `      at file:line`, the
/// closing note), which a child with `RUST_BACKTRACE` set prints after a panic or an abort.
fn is_backtrace_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    if line == "stack backtrace:" || trimmed.starts_with("note: Some details are omitted") {
        return true;
    }
    if trimmed.len() < line.len() && trimmed.starts_with("at ") {
        return true;
    }
    match trimmed.split_once(": ") {
        Some((n, _)) => {
            trimmed.len() < line.len() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Why a child that closed its side before its hello did: its exit status and the last
/// line of its stderr, when they come within a second.
fn died_before_hello(conn: &Conn, what: &str) -> String {
    let until = Instant::now() + Duration::from_secs(1);
    while !(conn.is_dead() && conn.stderr_done.load(Ordering::SeqCst)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut message = format!("the plugin's process ended before its hello ({what})");
    if let Some(exit) = conn.dead.get() {
        // Before the hello the plugin is not named: "the plugin's process exited with ...".
        message = format!("{} before its hello", exit.message);
    }
    if let Some(line) = conn.stderr_tail().iter().rev().find(|l| !l.trim().is_empty()) {
        message.push_str(&format!(": {line}"));
    }
    message
}

fn wait_for_exit(conn: Arc<Conn>) {
    let pid = Pid::from_raw(conn.pid as i32);
    // WNOWAIT: the zombie stays until it is reaped below, under the `reaped` lock, so a kill
    // racing with the death never hits a reused pid.
    let status = loop {
        match nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let (signal, exit_code, message) = match status {
        Ok(WaitStatus::Signaled(_, sig, _)) => (
            Some(sig.as_str().to_string()),
            None,
            format!("was killed by {} ({})", sig.as_str(), signal_words(sig)),
        ),
        Ok(WaitStatus::Exited(_, code)) => (None, Some(code), format!("exited with status {code}")),
        Ok(other) => (None, None, format!("ended ({other:?})")),
        Err(e) => (None, None, format!("ended (waitid failed: {e})")),
    };
    let label = conn.label.get().cloned().unwrap_or_default();
    let full = match (conn.kill_reason.get(), label.is_empty()) {
        (Some(reason), _) => format!("plugin '{label}' was killed by the host: {reason}"),
        (None, true) => format!("the plugin's process {message}"),
        (None, false) => format!("plugin '{label}' crashed: its process {message}"),
    };
    let exit = Exit { signal, exit_code, message: full.clone(), at_ms: crate::clock::now_ms() };
    let _ = conn.dead.set(exit.clone());
    // Every call in flight ends now, before anything else.
    conn.fail_all(&full);
    {
        let mut reaped = conn.reaped.lock().unwrap_or_else(|p| p.into_inner());
        let _ = nix::sys::wait::waitpid(pid, None);
        *reaped = true;
    }
    // The stderr tail: its last lines come with EOF, which follows the death at once
    // (unless something the child started still holds the pipe).
    let until = Instant::now() + Duration::from_millis(500);
    while !conn.stderr_done.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let expected = conn.expected_exit.load(Ordering::SeqCst);
    if expected {
        tracing::info!(pid = conn.pid, plugin = %label, "the plugin's process {message}");
    } else {
        tracing::warn!(pid = conn.pid, plugin = %label, "{full}");
    }
    let callback = conn.on_exit.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(f) = callback {
        if !expected {
            f(conn.crash_info(&exit));
        }
    }
}

/// How long the host's reader spins for an answer before it blocks (see [`wire::Spin`]):
/// off unless `BKG_HOST_SPIN_US` says otherwise. Measured (docs/benchmarks.md, issue 15,
/// session 9), 50 us gained nothing at the median once the child runs the calls it reads
/// without a hand-over, so it is not worth the CPU by default.
pub const HOST_SPIN: Duration = Duration::ZERO;

fn read_loop(conn: Arc<Conn>, mut reader: BufReader<UnixStream>) {
    let mut spin = wire::Spin::new(wire::spin_budget("BKG_HOST_SPIN_US", HOST_SPIN));
    loop {
        // Calls out and nothing buffered: an answer is due, and may come soon.
        let waiting = reader.buffer().is_empty()
            && !conn.calls.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        let since = waiting.then(Instant::now);
        if waiting && spin.worth_it() {
            use std::os::fd::AsFd;
            spin.spin(reader.get_ref().as_fd());
        }
        let read = wire::read_frame(&mut reader);
        if let Some(since) = since {
            spin.record(since.elapsed());
        }
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                if !conn.is_dead() {
                    tracing::warn!(pid = conn.pid, "reading from the plugin's process: {e}");
                }
                break;
            }
        };
        let msg = match ChildMsg::decode(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                // A child that sends garbage cannot be trusted with more calls.
                tracing::error!(pid = conn.pid, "the plugin's process sent {e}; killing it");
                conn.kill();
                break;
            }
        };
        match msg {
            ChildMsg::Begin { call, content_type } => {
                let mut calls = conn.calls.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = calls.get_mut(&call) {
                    start_stream(&conn, call, c, content_type);
                }
            }
            ChildMsg::Chunk { call, data } => {
                let mut calls = conn.calls.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = calls.get_mut(&call) {
                    if c.stream.is_none() {
                        // The runner always begins a stream first; a chunk without it is
                        // taken as one of the default type.
                        start_stream(&conn, call, c, "application/octet-stream".into());
                    }
                    if let Some(stream) = &c.stream {
                        let _ = stream.send(StreamMsg::Chunk(data));
                    }
                }
            }
            ChildMsg::Done { call, result } => {
                let pending = conn.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&call);
                if let Some(c) = pending {
                    c.end(result.map(reply).map_err(failure));
                }
            }
            ChildMsg::ControlDone { req, result } => {
                let pending = conn.controls.lock().unwrap_or_else(|p| p.into_inner()).remove(&req);
                if let Some(tx) = pending {
                    let _ = tx.send(result.map_err(failure));
                }
            }
            ChildMsg::Created { result } => {
                if let Some(tx) = conn.created.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(result);
                }
            }
            ChildMsg::Log { level, target, message } => match conn.host.get() {
                Some(host) => {
                    host.log(LogLevel(level), target.as_str().into(), message.as_str().into())
                }
                None => tracing::info!(pid = conn.pid, target, "{message}"),
            },
            ChildMsg::Heap { bytes } => {
                conn.heap.store(bytes.unwrap_or(0), Ordering::Relaxed);
                conn.heap_known.store(bytes.is_some(), Ordering::Relaxed);
            }
            ChildMsg::CbCredit { req, chunks } => {
                let credit =
                    conn.cb_credits.lock().unwrap_or_else(|p| p.into_inner()).get(&req).cloned();
                if let Some(credit) = credit {
                    credit.grant(chunks);
                }
            }
            ChildMsg::CbCancel { req } => {
                if let Some(f) = conn.cb_cancels.lock().unwrap_or_else(|p| p.into_inner()).get(&req)
                {
                    f.store(true, Ordering::SeqCst);
                }
            }
            ChildMsg::Callback { req, call, op } => {
                let parent = conn
                    .calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&call)
                    .map(|c| c.watch.cancel_flag().clone());
                let c = conn.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("bkg-child{}-cb", conn.pid))
                    .spawn(move || serve_callback(&c, req, parent, op));
                if let Err(e) = spawned {
                    let result = Err(WireError {
                        kind: ErrorKind::UNAVAILABLE.0,
                        message: format!("the host cannot start a thread for the request: {e}"),
                    });
                    let _ = conn.send(&HostMsg::CbReply { req, result });
                }
            }
            ChildMsg::HelloAck { .. } => {
                tracing::warn!(pid = conn.pid, "a second hello from the plugin's process; ignored");
            }
        }
    }
    // EOF: the child died or closed its side. The waiter reports the death; a child that
    // closed the socket but lives on is of no use and is ended.
    let until = Instant::now() + Duration::from_secs(1);
    while !conn.is_dead() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    if !conn.is_dead() {
        tracing::warn!(pid = conn.pid, "the plugin's process closed its connection; killing it");
        conn.kill();
    }
}

/// A call's answer turned into a stream: from now on a thread of its own forwards the chunks
/// the reader hands it (waiting while the client is slow; the child waits for credit
/// meanwhile) and its final answer after them.
fn start_stream(conn: &Arc<Conn>, id: u64, pending: &mut PendingCall, content_type: String) {
    let Some(call) = pending.call.take() else { return };
    let (tx, rx) = crossbeam_channel::unbounded();
    let c = conn.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("bkg-child{}-stream", conn.pid))
        .spawn(move || forward_stream(&c, id, call, content_type, rx));
    match spawned {
        Ok(_) => pending.stream = Some(tx),
        Err(e) => {
            // The call was moved into the closure that never ran: dropping it answered it.
            tracing::error!(pid = conn.pid, "cannot start a thread for a streamed answer: {e}");
            let _ = conn.send(&HostMsg::Cancel { call: id });
            pending.cancel_sent = true;
        }
    }
}

fn forward_stream(
    conn: &Conn,
    id: u64,
    mut call: DirectCall,
    content_type: String,
    rx: Receiver<StreamMsg>,
) {
    let mut cancel_sent = false;
    let send_cancel = |sent: &mut bool| {
        if !*sent {
            *sent = true;
            let _ = conn.send(&HostMsg::Cancel { call: id });
        }
    };
    if !call.begin_stream(&content_type) {
        send_cancel(&mut cancel_sent);
    }
    // Chunks handed to the client since the last credit granted to the child.
    let mut taken = 0u32;
    for msg in rx.iter() {
        match msg {
            StreamMsg::Chunk(data) => {
                if !call.send_chunk(&data) {
                    send_cancel(&mut cancel_sent);
                }
                taken += 1;
                if taken >= wire::STREAM_WINDOW / 2 && !cancel_sent {
                    let _ = conn.send(&HostMsg::Credit { call: id, chunks: taken });
                    taken = 0;
                }
            }
            StreamMsg::Done(result) => {
                call.finish(result);
                return;
            }
        }
    }
    // The reader went without an answer for it: the child is gone.
    call.finish(Err(conn
        .dead_failure()
        .unwrap_or_else(|| crashed("the plugin's process dropped the call"))));
}

/// How often the watchdog looks at the calls out to a child.
const CANCEL_CHECK: Duration = Duration::from_millis(20);

/// One per child: every [`CANCEL_CHECK`] it sends `Cancel` for each call out whose client
/// went away or which was cancelled (its 504, a drain deadline, its caller's cancellation),
/// and kills the child when such a call still runs `kill_after` later, so no call waits on
/// it and nothing stays pinned. Ends with the child.
fn watchdog(conn: std::sync::Weak<Conn>, kill_after: Duration) {
    loop {
        std::thread::sleep(CANCEL_CHECK);
        let Some(conn) = conn.upgrade() else { return };
        if conn.is_dead() {
            return;
        }
        let mut cancel = Vec::new();
        let mut stuck = None;
        {
            let mut calls = conn.calls.lock().unwrap_or_else(|p| p.into_inner());
            for (id, c) in calls.iter_mut() {
                if !c.watch.is_cancelled() {
                    continue;
                }
                if !c.cancel_sent {
                    c.cancel_sent = true;
                    cancel.push(*id);
                }
                let since = *c.cancelled_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= kill_after && stuck.is_none() {
                    stuck = Some(c.target.clone());
                }
            }
        }
        for call in cancel {
            let _ = conn.send(&HostMsg::Cancel { call });
        }
        if let Some(target) = stuck {
            conn.kill_because(format!(
                "the call to '{target}' went on {} ms after it was cancelled",
                kill_after.as_millis()
            ));
        }
    }
}

/// How many `CbChunk`s a streamed bus answer may still send to the child.
struct BusCredit {
    chunks: Mutex<u32>,
    more: std::sync::Condvar,
}

impl BusCredit {
    fn grant(&self, chunks: u32) {
        let mut n = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_add(chunks);
        self.more.notify_all();
    }

    /// Take one chunk's credit, waiting while the child is `STREAM_WINDOW` behind; false once
    /// `stop` is raised (the child cancelled, or died).
    fn take(&self, stop: &AtomicBool) -> bool {
        let mut n = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            if *n > 0 {
                *n -= 1;
                return true;
            }
            // `stop` is raised without a notification: look again now and then.
            n = self.more.wait_timeout(n, CANCEL_CHECK).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Streamed bus call chunks go back to the child as `CbChunk`s, at most `STREAM_WINDOW` ahead
/// of what the plugin took (a plugin that reads slowly slows the callee down instead of
/// making its child buffer the answer).
struct ForwardChunks<'a> {
    conn: &'a Conn,
    req: u64,
    stop: Arc<AtomicBool>,
    credit: Arc<BusCredit>,
}

impl ChunkSink for ForwardChunks<'_> {
    fn chunk(&mut self, data: RSlice<'_, u8>) -> bool {
        if !self.credit.take(&self.stop) {
            return false;
        }
        let msg = HostMsg::CbChunk { req: self.req, data: data.as_slice().to_vec() };
        self.conn.send(&msg).is_ok() && !self.stop.load(Ordering::SeqCst)
    }
}

fn serve_callback(conn: &Conn, req: u64, parent: Option<Arc<AtomicBool>>, op: CbOp) {
    let _current = parent.as_ref().map(crate::exec::CurrentCall::enter);
    let Some(host) = conn.host.get() else {
        let result = Err(WireError {
            kind: ErrorKind::UNAVAILABLE.0,
            message: "the plugin is not constructed yet".into(),
        });
        let _ = conn.send(&HostMsg::CbReply { req, result });
        return;
    };
    let error = |e: bkg_abi::ffi::FfiError| WireError { kind: e.kind.0, message: e.message.into() };
    let result = match op {
        CbOp::Bus { plugin, capability, content_type, body, stream } => {
            let answer = if stream {
                let stop = Arc::new(AtomicBool::new(false));
                let credit = Arc::new(BusCredit {
                    chunks: Mutex::new(wire::STREAM_WINDOW),
                    more: std::sync::Condvar::new(),
                });
                conn.cb_cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(req, stop.clone());
                conn.cb_credits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(req, credit.clone());
                let mut forward = ForwardChunks { conn, req, stop, credit };
                let sink = ChunkSink_TO::from_ptr(&mut forward, TD_Opaque);
                let answer = host.call_streaming(
                    RStr::from_str(&plugin),
                    RStr::from_str(&capability),
                    RStr::from_str(&content_type),
                    RSlice::from_slice(&body),
                    sink,
                );
                conn.cb_cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&req);
                conn.cb_credits.lock().unwrap_or_else(|p| p.into_inner()).remove(&req);
                answer
            } else {
                host.call(
                    RStr::from_str(&plugin),
                    RStr::from_str(&capability),
                    RStr::from_str(&content_type),
                    RSlice::from_slice(&body),
                )
            };
            match answer {
                RResult::ROk(r) => Ok(CbValue::Reply(WireReply {
                    status: r.status,
                    content_type: r.content_type.into_string(),
                    body: r.body.into_vec(),
                })),
                RResult::RErr(e) => Err(error(e)),
            }
        }
        CbOp::KvGet { key } => match host.kv_get(RStr::from_str(&key)) {
            RResult::ROk(v) => Ok(CbValue::Value(v.into_option().map(|v| v.into_vec()))),
            RResult::RErr(e) => Err(error(e)),
        },
        CbOp::KvPut { key, value } => {
            match host.kv_put(RStr::from_str(&key), RSlice::from_slice(&value)) {
                RResult::ROk(()) => Ok(CbValue::Unit),
                RResult::RErr(e) => Err(error(e)),
            }
        }
        CbOp::KvDelete { key } => match host.kv_delete(RStr::from_str(&key)) {
            RResult::ROk(b) => Ok(CbValue::Bool(b)),
            RResult::RErr(e) => Err(error(e)),
        },
        CbOp::KvKeys { prefix } => match host.kv_keys(RStr::from_str(&prefix)) {
            RResult::ROk(keys) => {
                Ok(CbValue::Keys(keys.into_iter().map(|k| k.into_string()).collect()))
            }
            RResult::RErr(e) => Err(error(e)),
        },
    };
    let _ = conn.send(&HostMsg::CbReply { req, result });
}

/// The manifest and constructor of a plugin in a child that passed its handshake.
pub struct RemoteSource {
    conn: Arc<Conn>,
    manifest: ManifestInfo,
    workers: u32,
    timeout: Duration,
}

impl RemoteSource {
    /// `workers`: how many calls the child may run at once (the instance's worker count).
    pub fn new(
        conn: Arc<Conn>,
        manifest: ManifestInfo,
        workers: usize,
        timeout: Duration,
    ) -> RemoteSource {
        RemoteSource { conn, manifest, workers: workers.max(1) as u32, timeout }
    }
}

impl PluginSource for RemoteSource {
    fn manifest(&mut self) -> Result<ManifestInfo, String> {
        Ok(self.manifest.clone())
    }

    fn create(self: Box<Self>, host: HostBox) -> Result<Arc<dyn PluginCode>, String> {
        let conn = self.conn;
        let _ = conn.host.set(host);
        let (tx, rx) = crossbeam_channel::bounded(1);
        *conn.created.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        if let Some(exit) = conn.dead.get() {
            return Err(exit.message.clone());
        }
        conn.send(&HostMsg::Create { workers: self.workers })
            .map_err(|e| format!("cannot reach the plugin's process: {e}"))?;
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(())) => {
                let kill_after = crate::exec::cancel_grace(self.timeout);
                let weak = Arc::downgrade(&conn);
                std::thread::Builder::new()
                    .name(format!("bkg-child{}-watch", conn.pid))
                    .spawn(move || watchdog(weak, kill_after))
                    .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
                Ok(Arc::new(RemotePlugin { remote: Arc::new(Remote { conn }) }))
            }
            Ok(Err(message)) => Err(message),
            Err(_) => Err(format!(
                "the plugin's process did not construct the plugin within {} ms",
                self.timeout.as_millis()
            )),
        }
    }
}

/// The plugin object in a child, as the instance sees it: calls go out directly
/// ([`Remote`]), lifecycle operations from the instance's workers.
pub struct RemotePlugin {
    remote: Arc<Remote>,
}

/// The call path into a child: the submitting thread writes the call, the reader ends it.
struct Remote {
    conn: Arc<Conn>,
}

impl DirectDispatch for Remote {
    fn dispatch(&self, call: DirectCall) {
        let conn = &*self.conn;
        let id = conn.id();
        let request = call.request();
        let frame = wire::encode_call(
            id,
            match request.kind {
                CallKind::Capability => 0,
                CallKind::Route => 1,
            },
            request.target.as_str(),
            request.method.as_str(),
            request.query.as_str(),
            request.content_type.as_str(),
            request.body.as_slice(),
        );
        let pending = PendingCall {
            target: request.target.as_str().to_owned(),
            watch: call.watch(),
            call: Some(call),
            stream: None,
            cancel_sent: false,
            cancelled_at: None,
        };
        conn.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(id, pending);
        if let Some(f) = conn.dead_failure() {
            let pending = conn.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            if let Some(p) = pending {
                p.end(Err(f));
            }
            return;
        }
        // A failed write means the child is gone: the waiter ends the call with the cause.
        let _ = conn.send_frame(&frame);
    }
}

impl PluginCode for RemotePlugin {
    fn call(
        &self,
        _request: &FfiRequest,
        _ctx: &HostCallContext<'_>,
    ) -> Result<Reply, PluginFailure> {
        // The instance hands calls to `direct()`; no worker runs one.
        Err(PluginFailure {
            kind: ErrorKind::INTERNAL,
            message: "a call to a plugin in process mode reached a host worker".into(),
        })
    }

    fn direct(&self) -> Option<Arc<dyn DirectDispatch>> {
        Some(self.remote.clone())
    }

    fn control(&self, op: Control) -> Result<String, PluginFailure> {
        let conn = &*self.remote.conn;
        let req = conn.id();
        let (tx, rx) = crossbeam_channel::bounded(1);
        conn.controls.lock().unwrap_or_else(|p| p.into_inner()).insert(req, tx);
        if let Some(f) = conn.dead_failure() {
            conn.controls.lock().unwrap_or_else(|p| p.into_inner()).remove(&req);
            return Err(f);
        }
        let op = match op {
            Control::Start => WireControl::Start,
            Control::Stop => WireControl::Stop,
            Control::Status => WireControl::Status,
            Control::Config => WireControl::Config,
            Control::Configure(text) => WireControl::Configure(text),
        };
        let _ = conn.send(&HostMsg::Control { req, op });
        rx.recv().unwrap_or_else(|_| {
            Err(conn.dead_failure().unwrap_or_else(|| crashed("the plugin's process is gone")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtrace_lines_are_told_from_what_the_plugin_said() {
        for line in [
            "stack backtrace:",
            "   0: __rustc::rust_begin_unwind",
            "  14: __rust_try",
            "             at /rustc/abc/library/std/src/panicking.rs:689:5",
            "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.",
        ] {
            assert!(is_backtrace_line(line), "{line:?}");
        }
        for line in [
            "crashy: oom: an allocation of 64 MiB failed",
            "memory allocation of 1073741824 bytes failed",
            "thread 'runner-w1' panicked at src/lib.rs:3:5:",
            "12: not indented, so the plugin's own",
            "at the start of a line",
            "",
        ] {
            assert!(!is_backtrace_line(line), "{line:?}");
        }
    }
}
