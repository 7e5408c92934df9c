//! The child side of process isolation: `bkg plugin-runner --fd 0 --library <shadow>
//! --plugin-dir <data root> --models-dir <dir> --host-pid <pid> [--rlimit-as N]
//! [--rlimit-nofile N] [--rlimit-nproc N]`, with the cookie in `BKG_RUNNER_COOKIE`.
//!
//! It asks the kernel to kill it when the host dies (`PR_SET_PDEATHSIG`) and checks the host
//! is still its parent, sets its resource limits, opens the library with the loader's checks,
//! answers the host's hello with the manifest, constructs the plugin when told, and serves
//! calls and lifecycle operations on a pool of threads (one more than the host's instance has
//! workers: one at a time reads, and runs the call it read, handing the reading over when
//! needed, see `serve_frames`; calls beyond that wait in a queue) until the host sends
//! `Shutdown` or goes away. Blocking I/O only (the reader may poll the socket briefly before
//! it blocks): frames are read through one buffer in turn, and written whole, one write
//! each, under one lock.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};
use bkg_abi::ffi::{
    CallContext, CallContext_TO, CallKind, ChunkSinkMut, ErrorKind, FfiError, FfiRequest,
    FfiResponse, HostApi, HostApi_TO, LogLevel, PluginBox,
};
use crossbeam_channel::Sender;

use super::wire::{
    self, CbOp, CbValue, ChildMsg, HostMsg, WireCapability, WireControl, WireError, WireManifest,
    WireReply, PROTOCOL_VERSION,
};
use crate::loader::LoadedLibrary;

/// The runner's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerArgs {
    pub fd: i32,
    pub library: PathBuf,
    pub plugin_dir: PathBuf,
    pub models_dir: PathBuf,
    pub host_pid: Option<u32>,
    pub rlimit_as: Option<u64>,
    pub rlimit_nofile: Option<u64>,
    pub rlimit_nproc: Option<u64>,
}

/// Read the runner's flags (everything after `plugin-runner`).
pub fn parse_args(args: &[String]) -> Result<RunnerArgs, String> {
    let mut fd = None;
    let mut library = None;
    let mut plugin_dir = None;
    let mut models_dir = None;
    let mut host_pid = None;
    let (mut rlimit_as, mut rlimit_nofile, mut rlimit_nproc) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| -> Result<u64, String> {
            value.parse::<u64>().map_err(|_| format!("{what} must be a number, not '{value}'"))
        };
        match flag.as_str() {
            "--fd" => fd = Some(number("--fd")? as i32),
            "--library" => library = Some(PathBuf::from(value)),
            "--plugin-dir" => plugin_dir = Some(PathBuf::from(value)),
            "--models-dir" => models_dir = Some(PathBuf::from(value)),
            "--host-pid" => host_pid = Some(number("--host-pid")? as u32),
            "--rlimit-as" => rlimit_as = Some(number("--rlimit-as")?),
            "--rlimit-nofile" => rlimit_nofile = Some(number("--rlimit-nofile")?),
            "--rlimit-nproc" => rlimit_nproc = Some(number("--rlimit-nproc")?),
            other => return Err(format!("unknown flag '{other}'")),
        }
    }
    let need = |v: Option<PathBuf>, flag: &str| v.ok_or_else(|| format!("{flag} is required"));
    Ok(RunnerArgs {
        fd: fd.ok_or("--fd is required")?,
        library: need(library, "--library")?,
        plugin_dir: need(plugin_dir, "--plugin-dir")?,
        models_dir: need(models_dir, "--models-dir")?,
        host_pid,
        rlimit_as,
        rlimit_nofile,
        rlimit_nproc,
    })
}

/// Run the runner; returns the process's exit status.
pub fn main(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        tracing::error!("cannot ask to die with the host: {e}");
        return 2;
    }
    if let Some(host) = args.host_pid {
        // The host may have died before the line above: then we were re-parented.
        if nix::unistd::getppid().as_raw() as u32 != host {
            tracing::error!("the host (pid {host}) is gone");
            return 3;
        }
    }
    for (resource, value, name) in [
        (nix::sys::resource::Resource::RLIMIT_AS, args.rlimit_as, "RLIMIT_AS"),
        (nix::sys::resource::Resource::RLIMIT_NOFILE, args.rlimit_nofile, "RLIMIT_NOFILE"),
        (nix::sys::resource::Resource::RLIMIT_NPROC, args.rlimit_nproc, "RLIMIT_NPROC"),
    ] {
        if let Some(v) = value {
            if let Err(e) = nix::sys::resource::setrlimit(resource, v, v) {
                tracing::error!("cannot set {name} to {v}: {e}");
                return 2;
            }
        }
    }
    if args.fd != 0 {
        tracing::error!("only --fd 0 (the connection as stdin) is supported");
        return 2;
    }
    // The connection is our stdin: take our own descriptor of it, then put /dev/null there so
    // the plugin cannot read the protocol.
    let stream = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            tracing::error!("cannot take the connection: {e}");
            return 2;
        }
    };
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let cookie = std::env::var("BKG_RUNNER_COOKIE").unwrap_or_default();
    match serve(args, stream, &cookie) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            2
        }
    }
}

/// The environment variable of the test hooks (the models install's crash tests read it too).
const FAILPOINT_ENV: &str = "BKG_FAILPOINT";

/// Test hook for the handshake tests: a runner started with `BKG_FAILPOINT=runner:<step>`
/// answers the host's hello with another protocol version (`hello_version`: one more than
/// its own) or a wrong cookie (`hello_cookie`), so the host's refusal can be tested. The
/// host's children inherit its environment, so it is set on the host. Returns the version
/// and cookie to answer with; another `runner:` step is refused by name, anything else
/// (another component's failpoint, unset) changes nothing.
fn hello_failpoint(
    failpoint: Option<&str>,
    version: u32,
    cookie: &str,
) -> Result<(u32, String), String> {
    match failpoint.and_then(|f| f.strip_prefix("runner:")) {
        None => Ok((version, cookie.to_string())),
        Some("hello_version") => {
            tracing::warn!("{FAILPOINT_ENV}: answering the hello with protocol version {}", version + 1);
            Ok((version + 1, cookie.to_string()))
        }
        Some("hello_cookie") => {
            tracing::warn!("{FAILPOINT_ENV}: answering the hello with a wrong cookie");
            Ok((version, format!("wrong-{cookie}")))
        }
        Some(other) => Err(format!(
            "{FAILPOINT_ENV}: unknown runner failpoint '{other}' (known: hello_version, hello_cookie)"
        )),
    }
}

/// How the runner writes: whole frames under one lock.
#[derive(Clone)]
struct Out(Arc<Mutex<UnixStream>>);

impl Out {
    fn send(&self, msg: &ChildMsg) -> bool {
        let frame = msg.encode();
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        wire::write_frame(&mut *w, &frame).is_ok()
    }
}

/// What a callback waits for.
enum CbEvent {
    Chunk(Vec<u8>),
    Reply(Result<CbValue, WireError>),
}

struct Shared {
    out: Out,
    next_req: AtomicU64,
    callbacks: Mutex<HashMap<u64, Sender<CbEvent>>>,
    calls: Mutex<HashMap<u64, Arc<CallState>>>,
    /// Who reads next, and what waits for a thread.
    turns: Turns,
}

/// The watch thread's tick while calls run on the threads that read them (see
/// [`serve_frames`]): a call still running unwatched after a whole tick gets another thread
/// to take over reading, so a frame waits at most two ticks to be read.
const WATCH_TICK: Duration = Duration::from_millis(1);

/// How long the reader spins for the next call right after answering one (see [`wire::Spin`]):
/// off unless `BKG_CHILD_SPIN_US` says otherwise. Measured (docs/benchmarks.md, issue 15,
/// session 9's closing run): 100 us takes a lone client's round trip from +17 us over in
/// process to -20 us, but costs throughput under load on 2 cores (wrk -c32: 0.83x -> 0.74x
/// of in process), since the spinning reader takes the core the host's threads need.
pub const CHILD_SPIN: Duration = Duration::ZERO;

/// The reading turn of the serving threads (see [`serve_frames`]).
struct Turns {
    sched: Mutex<Sched>,
    /// Where threads with nothing to do wait: for the reading turn or a queued job.
    turn: Condvar,
    /// Ticks (every [`WATCH_TICK`]) while calls run unwatched, waking the watch thread;
    /// disarmed by it after a tick with none (no wake-ups while idle). Armed and disarmed
    /// under the `sched` lock (`Sched::ticking`).
    timer: Option<nix::sys::timerfd::TimerFd>,
    /// When the last call was answered (microseconds since `epoch`).
    last_done_us: AtomicU64,
    epoch: std::time::Instant,
}

impl Turns {
    fn new() -> Turns {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let timer = match TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC) {
            Ok(t) => Some(t),
            Err(e) => {
                // Then every call hands the reading over before it runs, as it always may.
                tracing::warn!("cannot create a timer ({e}); every call hands reading over");
                None
            }
        };
        Turns {
            sched: Mutex::default(),
            turn: Condvar::new(),
            timer,
            last_done_us: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A thread is about to wait for something only the host can send (a callback's answer,
    /// a stream's credit): if a call runs unwatched, a waiting thread takes over reading now.
    fn ensure_reader(&self) {
        let mut sched = self.lock();
        if sched.unwatched && !sched.reading {
            sched.unwatched = false;
            self.turn.notify_one();
        }
    }

    /// A call may start running unwatched (`sched` is this lock's guard): start the ticks if
    /// they stopped and count it; false (it may not) when there is no timer to tick.
    fn watch(&self, sched: &mut Sched) -> bool {
        if !sched.ticking {
            let Some(t) = &self.timer else { return false };
            let tick = nix::sys::time::TimeSpec::from_duration(WATCH_TICK);
            let set = t.set(
                nix::sys::timerfd::Expiration::Interval(tick),
                nix::sys::timerfd::TimerSetTimeFlags::empty(),
            );
            if set.is_err() {
                return false;
            }
            sched.ticking = true;
        }
        sched.unwatched = true;
        sched.unwatched_calls += 1;
        true
    }

    fn answered(&self) {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.last_done_us.store(now, Ordering::Relaxed);
    }

    /// True when a call was answered within the last millisecond.
    fn answered_lately(&self) -> bool {
        let now = self.epoch.elapsed().as_micros() as u64;
        now.saturating_sub(self.last_done_us.load(Ordering::Relaxed)) < 1_000
    }
}

/// One call the child runs: its cancel flag and the chunks it may still send ahead of the
/// host (`wire::STREAM_WINDOW`, raised by the host's `Credit`).
struct CallState {
    cancel: AtomicBool,
    credit: Mutex<u32>,
    more: Condvar,
}

impl CallState {
    fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        let _guard = self.credit.lock().unwrap_or_else(|p| p.into_inner());
        self.more.notify_all();
    }

    /// Take one chunk of credit, waiting for the host to grant more; false once cancelled.
    fn take_credit(&self) -> bool {
        let mut credit = self.credit.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.cancel.load(Ordering::SeqCst) {
                return false;
            }
            if *credit > 0 {
                *credit -= 1;
                return true;
            }
            credit = self.more.wait(credit).unwrap_or_else(|p| p.into_inner());
        }
    }
}

enum Job {
    Call(wire::WireCall, Arc<CallState>),
    Control(u64, WireControl),
}

thread_local! {
    /// The call this runner thread runs (0: none), named in its bus calls.
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

fn serve(args: RunnerArgs, stream: UnixStream, cookie: &str) -> Result<(), String> {
    let writer = stream.try_clone().map_err(|e| format!("cannot clone the connection: {e}"))?;
    let out = Out(Arc::new(Mutex::new(writer)));
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let (ack_version, ack_cookie) =
        hello_failpoint(std::env::var(FAILPOINT_ENV).ok().as_deref(), PROTOCOL_VERSION, cookie)?;
    let hello_ack = |result: Result<WireManifest, String>| ChildMsg::HelloAck {
        version: ack_version,
        cookie: ack_cookie.clone(),
        result,
    };
    let frame = wire::read_frame(&mut reader)
        .map_err(|e| format!("reading the host's hello: {e}"))?
        .ok_or("the host closed the connection before its hello")?;
    match HostMsg::decode(&frame) {
        Ok(HostMsg::Hello { version, cookie: theirs }) => {
            if version != PROTOCOL_VERSION {
                let why = format!(
                    "the host speaks protocol version {version}, this runner {PROTOCOL_VERSION}"
                );
                out.send(&hello_ack(Err(why.clone())));
                return Err(why);
            }
            if cookie.is_empty() || theirs != cookie {
                let why = "the host's hello carries the wrong cookie".to_string();
                out.send(&hello_ack(Err(why.clone())));
                return Err(why);
            }
        }
        Ok(_) => return Err("the host's first message was not its hello".into()),
        Err(e) => return Err(format!("the host's hello: {e}")),
    }
    let library = match LoadedLibrary::open_shadow(&args.library) {
        Ok(l) => l,
        Err(e) => {
            let why = e.to_string();
            out.send(&hello_ack(Err(why.clone())));
            return Err(why);
        }
    };
    let module = library.module();
    let manifest = match (module.manifest())() {
        RResult::ROk(m) => m,
        RResult::RErr(e) => {
            let why = format!("manifest: {}", e.message);
            out.send(&hello_ack(Err(why.clone())));
            return Err(why);
        }
    };
    let id = manifest.id.to_string();
    let wire_manifest = WireManifest {
        id: id.clone(),
        name: manifest.name.to_string(),
        version: manifest.version.to_string(),
        description: manifest.description.to_string(),
        capabilities: manifest
            .capabilities
            .iter()
            .map(|c| WireCapability {
                name: c.name.to_string(),
                description: c.description.to_string(),
                input_schema: c.input_schema.to_string(),
                output_schema: c.output_schema.to_string(),
                streaming: c.streaming,
                scope: c.scope.to_string(),
            })
            .collect(),
        routes: manifest
            .routes
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect(),
        route_prefix: manifest.route_prefix.as_ref().into_option().map(|p| p.to_string()),
        config_schema: manifest.config_schema.to_string(),
        max_concurrency: manifest.max_concurrency,
        config_needs_restart: manifest.config_needs_restart,
    };
    if !out.send(&hello_ack(Ok(wire_manifest))) {
        return Err("the host went away during the handshake".into());
    }

    let shared = Arc::new(Shared {
        out: out.clone(),
        next_req: AtomicU64::new(0),
        callbacks: Mutex::default(),
        calls: Mutex::default(),
        turns: Turns::new(),
    });
    // Wait for `Create`.
    let frame = match wire::read_frame(&mut reader) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()),
        Err(e) => return Err(format!("reading from the host: {e}")),
    };
    let workers = match HostMsg::decode(&frame) {
        Ok(HostMsg::Create { workers }) => workers.max(1),
        Ok(HostMsg::Shutdown) => return Ok(()),
        Ok(other) => return Err(format!("expected Create, got {other:?}")),
        Err(e) => return Err(format!("from the host: {e}")),
    };
    let host = HostApi_TO::from_value(
        RunnerHost {
            shared: shared.clone(),
            data_dir: args.plugin_dir.join(&id),
            models_dir: args.models_dir.clone(),
        },
        TD_Opaque,
    );
    let plugin: Arc<PluginBox> = match (module.create())(host) {
        RResult::ROk(p) => Arc::new(p),
        RResult::RErr(e) => {
            let why = format!("create: {}", e.message);
            out.send(&ChildMsg::Created { result: Err(why.clone()) });
            return Err(why);
        }
    };
    out.send(&ChildMsg::Created { result: Ok(()) });

    // One more thread than the host has workers: at most `workers` run calls and operations
    // at once, and one reads (`serve_frames`). The host may have more calls out than that (up
    // to its queue's depth); the ones no thread is free for wait in `Sched`'s queue.
    let mut threads = Vec::new();
    let serve = Arc::new(Serve {
        reader: Mutex::new(reader),
        shared: shared.clone(),
        plugin,
        stopping: AtomicBool::new(false),
    });
    if shared.turns.timer.is_some() {
        let s = serve.clone();
        let t = std::thread::Builder::new()
            .name("runner-watch".into())
            .spawn(move || watch_unwatched(&s))
            .map_err(|e| format!("cannot start the watch thread: {e}"))?;
        threads.push(t);
    }
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    for i in 0..=workers {
        let (s, done) = (serve.clone(), done_tx.clone());
        let t = std::thread::Builder::new()
            .name(format!("runner-w{i}"))
            .spawn(move || {
                serve_frames(&s);
                let _ = done.try_send(());
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        threads.push(t);
    }
    drop(done_tx);
    drop(serve);
    let stop_heap = Arc::new(AtomicBool::new(false));
    {
        let (gauge, out, stop) = (library.heap(), out.clone(), stop_heap.clone());
        let _ = std::thread::Builder::new().name("runner-heap".into()).spawn(move || {
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                let now = gauge.bytes();
                if now != last {
                    last = now;
                    if !out.send(&ChildMsg::Heap { bytes: now }) {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
    }
    // Until a thread saw `Shutdown` or the end of the connection.
    let _ = done_rx.recv();
    stop_heap.store(true, Ordering::Relaxed);
    // Waiting callbacks are answered "gone" as their senders go; calls running get a moment.
    shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let until = std::time::Instant::now() + Duration::from_secs(2);
    for t in threads {
        while !t.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
    // The library stays mapped: the process ends now.
    std::mem::forget(library);
    Ok(())
}

/// What the serving threads share.
struct Serve {
    reader: Mutex<BufReader<UnixStream>>,
    shared: Arc<Shared>,
    plugin: Arc<PluginBox>,
    /// Set by the thread that read `Shutdown` or the end of the connection.
    stopping: AtomicBool,
}

/// Who reads, and what waits for a thread.
///
/// Invariant: a frame the host sent is read within two [`WATCH_TICK`]s (plus a thread's
/// wake-up), and before any call waits on the host: either a thread reads (`reading`), or a
/// call runs `unwatched` on the thread that read it while at least one thread is `idle` to
/// take over (the watch thread wakes one when the limit passes; a call that asks the host or
/// streams wakes one before it does, [`Turns::ensure_reader`]; the call's own thread reads
/// again when it is done). Jobs are queued only while a thread reads and none is idle, so
/// `queue` is empty whenever `idle > 0`.
#[derive(Default)]
struct Sched {
    /// A thread holds the reading turn.
    reading: bool,
    /// Threads waiting in `Turns::turn`.
    idle: usize,
    /// Jobs running.
    running: usize,
    /// A call runs on the thread that read it and nobody reads meanwhile.
    unwatched: bool,
    /// How many calls ran unwatched so far (the watch thread compares it between ticks).
    unwatched_calls: u64,
    /// The watch timer ticks.
    ticking: bool,
    queue: VecDeque<Job>,
}

/// What a serving thread does next.
enum Next {
    Run(Job),
    Read,
}

/// Serve frames until the connection ends. One thread at a time reads (the reading turn); a
/// job it reads it runs itself. Most of the time it runs it without handing the reading over
/// first (a hand-over wakes a sleeping thread, which costs more than a short call): when the
/// frame was the last one buffered, another thread is idle, and it is a call, the call runs
/// `unwatched`; the watch thread wakes an idle thread to read if the call is still running a
/// tick of its timer later, and the call wakes one itself before it waits for
/// the host (a bus call's answer, a stream's credit). Otherwise (more frames buffered, a
/// lifecycle operation) the reader wakes an idle thread to read on before it runs the job,
/// or queues the job and reads on when no thread is idle; a thread done with a job takes the
/// next queued one before it takes the reading turn or waits.
fn serve_frames(serve: &Serve) {
    let turns = &serve.shared.turns;
    let mut spin = wire::Spin::new(wire::spin_budget("BKG_CHILD_SPIN_US", CHILD_SPIN));
    loop {
        let next = {
            let mut sched = turns.lock();
            loop {
                if let Some(job) = sched.queue.pop_front() {
                    sched.running += 1;
                    break Next::Run(job);
                }
                if serve.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if !sched.reading {
                    sched.reading = true;
                    sched.unwatched = false;
                    break Next::Read;
                }
                sched.idle += 1;
                sched = turns.turn.wait(sched).unwrap_or_else(|p| p.into_inner());
                sched.idle -= 1;
            }
        };
        let (job, unwatched) = match next {
            Next::Run(job) => (job, None),
            Next::Read => match read_job(serve, &mut spin) {
                Some(read) => read,
                None => {
                    stop_all(serve);
                    return;
                }
            },
        };
        run_job(serve, job);
        let mut sched = turns.lock();
        sched.running -= 1;
        // Unless another call started unwatched since (after a reader took over).
        if unwatched == Some(sched.unwatched_calls) {
            sched.unwatched = false;
        }
    }
}

/// The connection ended (or `Shutdown`): every waiting thread and the watch thread look at
/// `stopping` again.
fn stop_all(serve: &Serve) {
    serve.stopping.store(true, Ordering::SeqCst);
    let turns = &serve.shared.turns;
    {
        let _sched = turns.lock();
        turns.turn.notify_all();
    }
    if let Some(t) = &turns.timer {
        let _sched = turns.lock();
        let _ = t.set(
            nix::sys::timerfd::Expiration::OneShot(nix::sys::time::TimeSpec::new(0, 1)),
            nix::sys::timerfd::TimerSetTimeFlags::empty(),
        );
    }
}

/// The watch thread, on each tick of the timer: a call that has run unwatched since the last
/// tick (no other call started unwatched since) gets an idle thread to take over reading; no
/// call run unwatched since the last tick stops the ticks. Sleeps in the timer's read
/// otherwise (no CPU while idle).
fn watch_unwatched(serve: &Serve) {
    let turns = &serve.shared.turns;
    let Some(timer) = &turns.timer else { return };
    let mut seen = 0;
    loop {
        if timer.wait().is_err() || serve.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut sched = turns.lock();
        if sched.unwatched_calls == seen {
            if sched.unwatched && !sched.reading {
                sched.unwatched = false;
                turns.turn.notify_one();
            } else if !sched.unwatched && sched.ticking {
                sched.ticking = timer.unset().is_err();
            }
        }
        seen = sched.unwatched_calls;
    }
}

/// Read with the reading turn until a job this thread runs (and, if it runs it unwatched,
/// its number among those); `None` once the connection ends.
fn read_job(serve: &Serve, spin: &mut wire::Spin) -> Option<(Job, Option<u64>)> {
    let turns = &serve.shared.turns;
    // Only the thread with the reading turn takes this lock: never contended for long.
    let mut reader = serve.reader.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if serve.stopping.load(Ordering::SeqCst) {
            return None;
        }
        // Right after an answer, with nothing else running, the next call may come soon.
        let due =
            reader.buffer().is_empty() && turns.answered_lately() && turns.lock().running == 0;
        let since = due.then(std::time::Instant::now);
        if due && spin.worth_it() {
            spin.spin(reader.get_ref().as_fd());
        }
        let read = wire::read_frame(&mut *reader);
        if let Some(since) = since {
            spin.record(since.elapsed());
        }
        let frame = match read {
            Ok(Some(f)) => f,
            // The host closed its side: it is ending (or gone; the kernel kills us then).
            Ok(None) => return None,
            Err(e) => {
                tracing::error!("reading from the host: {e}");
                return None;
            }
        };
        let msg = match HostMsg::decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("the host sent {e}");
                return None;
            }
        };
        // Routed while the reading turn is held, so a call is registered before a frame
        // about it (its cancel, its credit) can be read by another thread.
        let Some(job) = route(serve, msg) else { continue };
        let mut sched = turns.lock();
        if sched.idle == 0 {
            sched.queue.push_back(job);
            continue;
        }
        sched.reading = false;
        sched.running += 1;
        let unwatched = matches!(job, Job::Call(..))
            && reader.buffer().is_empty()
            && !sched.unwatched
            && turns.watch(&mut sched);
        if !unwatched {
            turns.turn.notify_one();
            return Some((job, None));
        }
        return Some((job, Some(sched.unwatched_calls)));
    }
}

/// Act on a frame that needs no thread of its own; a call or an operation comes back.
fn route(serve: &Serve, msg: HostMsg) -> Option<Job> {
    let shared = &serve.shared;
    match msg {
        HostMsg::Call(call) => {
            let state = Arc::new(CallState {
                cancel: AtomicBool::new(false),
                credit: Mutex::new(wire::STREAM_WINDOW),
                more: Condvar::new(),
            });
            shared.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(call.call, state.clone());
            Some(Job::Call(call, state))
        }
        HostMsg::Control { req, op } => Some(Job::Control(req, op)),
        HostMsg::Cancel { call } => {
            if let Some(state) = shared.calls.lock().unwrap_or_else(|p| p.into_inner()).get(&call) {
                state.cancel();
            }
            None
        }
        HostMsg::Credit { call, chunks } => {
            if let Some(state) = shared.calls.lock().unwrap_or_else(|p| p.into_inner()).get(&call) {
                let mut credit = state.credit.lock().unwrap_or_else(|p| p.into_inner());
                *credit = credit.saturating_add(chunks);
                state.more.notify_all();
            }
            None
        }
        HostMsg::CbReply { req, result } => {
            let waiter = shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).remove(&req);
            if let Some(tx) = waiter {
                let _ = tx.send(CbEvent::Reply(result));
            }
            None
        }
        HostMsg::CbChunk { req, data } => {
            if let Some(tx) = shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).get(&req) {
                let _ = tx.send(CbEvent::Chunk(data));
            }
            None
        }
        HostMsg::Shutdown => {
            serve.stopping.store(true, Ordering::SeqCst);
            None
        }
        HostMsg::Hello { .. } | HostMsg::Create { .. } => {
            tracing::warn!("a second hello or create from the host; ignored");
            None
        }
    }
}

fn run_job(serve: &Serve, job: Job) {
    let shared = &serve.shared;
    match job {
        Job::Call(call, state) => {
            let id = call.call;
            let result = if state.cancel.load(Ordering::SeqCst) {
                // Cancelled while it waited for a thread: the plugin never sees it.
                Err(WireError {
                    kind: ErrorKind::CANCELLED.0,
                    message: "the call was cancelled before it started".into(),
                })
            } else {
                CURRENT.with(|c| c.set(id));
                let result = run_call(&serve.plugin, call, &state, &shared.out, &shared.turns);
                CURRENT.with(|c| c.set(0));
                result
            };
            shared.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            shared.out.send(&ChildMsg::Done { call: id, result });
            shared.turns.answered();
        }
        Job::Control(req, op) => {
            let plugin = &serve.plugin;
            let unit = |r: RResult<(), FfiError>| match r {
                RResult::ROk(()) => Ok(String::new()),
                RResult::RErr(e) => Err(wire_error(e)),
            };
            let result = match op {
                WireControl::Start => unit(plugin.start()),
                WireControl::Stop => unit(plugin.stop()),
                WireControl::Status => Ok(plugin.status().into_string()),
                WireControl::Config => Ok(plugin.config().into_string()),
                WireControl::Configure(text) => unit(plugin.configure(RStr::from_str(&text))),
            };
            shared.out.send(&ChildMsg::ControlDone { req, result });
        }
    }
}

fn wire_error(e: FfiError) -> WireError {
    WireError { kind: e.kind.0, message: e.message.into_string() }
}

struct RunnerCallContext<'a> {
    call: u64,
    state: &'a CallState,
    out: &'a Out,
    turns: &'a Turns,
    streaming: Cell<bool>,
}

impl CallContext for RunnerCallContext<'_> {
    fn is_cancelled(&self) -> bool {
        self.state.cancel.load(Ordering::Relaxed)
    }
    fn begin_stream(&self, content_type: RStr<'_>) -> bool {
        if !self.streaming.get() {
            self.streaming.set(true);
            // Its credit must be read: a call running unwatched hands the reading over first.
            self.turns.ensure_reader();
            let msg =
                ChildMsg::Begin { call: self.call, content_type: content_type.as_str().into() };
            if !self.out.send(&msg) {
                return false;
            }
        }
        !self.is_cancelled()
    }
    fn send_chunk(&self, chunk: RSlice<'_, u8>) -> bool {
        if !self.streaming.get() && !self.begin_stream("application/octet-stream".into()) {
            return false;
        }
        // Waits while the host is `STREAM_WINDOW` chunks behind (a slow client).
        if !self.state.take_credit() {
            return false;
        }
        self.out.send(&ChildMsg::Chunk { call: self.call, data: chunk.as_slice().to_vec() })
            && !self.is_cancelled()
    }
}

fn run_call(
    plugin: &PluginBox,
    call: wire::WireCall,
    state: &CallState,
    out: &Out,
    turns: &Turns,
) -> Result<WireReply, WireError> {
    let request = FfiRequest {
        kind: if call.kind == 1 { CallKind::Route } else { CallKind::Capability },
        target: RString::from(call.target),
        method: RString::from(call.method),
        query: RString::from(call.query),
        content_type: RString::from(call.content_type),
        body: call.body.into(),
    };
    let ctx = RunnerCallContext { call: call.call, state, out, turns, streaming: Cell::new(false) };
    let ctx_obj = CallContext_TO::from_ptr(&ctx, TD_Opaque);
    match plugin.call(&request, ctx_obj) {
        RResult::ROk(r) => Ok(WireReply {
            status: r.status,
            content_type: r.content_type.into_string(),
            body: r.body.into_vec(),
        }),
        RResult::RErr(e) => Err(wire_error(e)),
    }
}

/// The `HostApi` a plugin in the child gets: its dirs locally, everything else asked of the
/// host over the connection.
/// Where a streamed bus call's chunks go; false stops the call.
type ChunkFn<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

struct RunnerHost {
    shared: Arc<Shared>,
    data_dir: PathBuf,
    models_dir: PathBuf,
}

fn gone() -> FfiError {
    FfiError {
        kind: ErrorKind::UNAVAILABLE,
        message: "the host closed the connection to the plugin's process".into(),
    }
}

impl RunnerHost {
    /// Ask the host; chunks of a streamed answer go to `on_chunk` (false: stop).
    fn ask(&self, op: CbOp, mut on_chunk: Option<ChunkFn<'_>>) -> Result<CbValue, FfiError> {
        let req = self.shared.next_req.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = crossbeam_channel::unbounded();
        self.shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).insert(req, tx);
        let call = CURRENT.with(|c| c.get());
        // The answer must be read: a call running unwatched hands the reading over first.
        self.shared.turns.ensure_reader();
        if !self.shared.out.send(&ChildMsg::Callback { req, call, op }) {
            self.shared.callbacks.lock().unwrap_or_else(|p| p.into_inner()).remove(&req);
            return Err(gone());
        }
        let mut stopped = false;
        // Chunks taken since the last credit granted to the host.
        let mut taken = 0u32;
        loop {
            match rx.recv() {
                Ok(CbEvent::Chunk(data)) => {
                    if stopped {
                        continue;
                    }
                    let go_on = on_chunk.as_mut().is_some_and(|f| f(&data));
                    if !go_on {
                        stopped = true;
                        self.shared.out.send(&ChildMsg::CbCancel { req });
                        continue;
                    }
                    taken += 1;
                    if taken >= wire::STREAM_WINDOW / 2 {
                        self.shared.out.send(&ChildMsg::CbCredit { req, chunks: taken });
                        taken = 0;
                    }
                }
                Ok(CbEvent::Reply(result)) => {
                    return result.map_err(|e| FfiError {
                        kind: ErrorKind(e.kind),
                        message: e.message.into(),
                    })
                }
                Err(_) => return Err(gone()),
            }
        }
    }

    fn bus(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
        on_chunk: Option<ChunkFn<'_>>,
    ) -> RResult<FfiResponse, FfiError> {
        let op = CbOp::Bus {
            plugin: plugin.as_str().into(),
            capability: capability.as_str().into(),
            content_type: content_type.as_str().into(),
            body: body.as_slice().to_vec(),
            stream: on_chunk.is_some(),
        };
        match self.ask(op, on_chunk) {
            Ok(CbValue::Reply(r)) => RResult::ROk(FfiResponse {
                status: r.status,
                content_type: r.content_type.into(),
                body: r.body.into(),
            }),
            Ok(other) => RResult::RErr(unexpected(other)),
            Err(e) => RResult::RErr(e),
        }
    }
}

fn unexpected(value: CbValue) -> FfiError {
    FfiError {
        kind: ErrorKind::INTERNAL,
        message: format!("the host answered with an unexpected value: {value:?}").into(),
    }
}

impl HostApi for RunnerHost {
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        self.shared.out.send(&ChildMsg::Log {
            level: level.0,
            target: target.as_str().into(),
            message: message.as_str().into(),
        });
    }

    fn data_dir(&self) -> RString {
        self.data_dir.to_string_lossy().into_owned().into()
    }

    fn models_dir(&self) -> RString {
        self.models_dir.to_string_lossy().into_owned().into()
    }

    fn call(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
    ) -> RResult<FfiResponse, FfiError> {
        self.bus(plugin, capability, content_type, body, None)
    }

    fn call_streaming(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
        mut sink: ChunkSinkMut<'_>,
    ) -> RResult<FfiResponse, FfiError> {
        let mut forward = |chunk: &[u8]| sink.chunk(RSlice::from_slice(chunk));
        self.bus(plugin, capability, content_type, body, Some(&mut forward))
    }

    fn kv_get(&self, key: RStr<'_>) -> RResult<ROption<RVec<u8>>, FfiError> {
        match self.ask(CbOp::KvGet { key: key.as_str().into() }, None) {
            Ok(CbValue::Value(v)) => RResult::ROk(v.map(RVec::from).into()),
            Ok(other) => RResult::RErr(unexpected(other)),
            Err(e) => RResult::RErr(e),
        }
    }

    fn kv_put(&self, key: RStr<'_>, value: RSlice<'_, u8>) -> RResult<(), FfiError> {
        let op = CbOp::KvPut { key: key.as_str().into(), value: value.as_slice().to_vec() };
        match self.ask(op, None) {
            Ok(CbValue::Unit) => RResult::ROk(()),
            Ok(other) => RResult::RErr(unexpected(other)),
            Err(e) => RResult::RErr(e),
        }
    }

    fn kv_delete(&self, key: RStr<'_>) -> RResult<bool, FfiError> {
        match self.ask(CbOp::KvDelete { key: key.as_str().into() }, None) {
            Ok(CbValue::Bool(b)) => RResult::ROk(b),
            Ok(other) => RResult::RErr(unexpected(other)),
            Err(e) => RResult::RErr(e),
        }
    }

    fn kv_keys(&self, prefix: RStr<'_>) -> RResult<RVec<RString>, FfiError> {
        match self.ask(CbOp::KvKeys { prefix: prefix.as_str().into() }, None) {
            Ok(CbValue::Keys(keys)) => RResult::ROk(keys.into_iter().map(RString::from).collect()),
            Ok(other) => RResult::RErr(unexpected(other)),
            Err(e) => RResult::RErr(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runner_flags_are_read_and_checked() {
        let args = parse_args(&strings(&[
            "--fd",
            "0",
            "--library",
            "/s/x.so",
            "--plugin-dir",
            "/d",
            "--models-dir",
            "/m",
            "--host-pid",
            "42",
            "--rlimit-nofile",
            "64",
        ]))
        .unwrap();
        assert_eq!(args.fd, 0);
        assert_eq!(args.library, PathBuf::from("/s/x.so"));
        assert_eq!(args.host_pid, Some(42));
        assert_eq!(args.rlimit_nofile, Some(64));
        assert_eq!(args.rlimit_as, None);
        assert_eq!(parse_args(&strings(&["--fd", "0"])).unwrap_err(), "--library is required");
        assert_eq!(parse_args(&strings(&["--fd"])).unwrap_err(), "--fd needs a value");
        assert_eq!(
            parse_args(&strings(&["--fd", "x"])).unwrap_err(),
            "--fd must be a number, not 'x'"
        );
        assert_eq!(parse_args(&strings(&["--bogus", "1"])).unwrap_err(), "unknown flag '--bogus'");
    }

    #[test]
    fn the_hello_failpoint_changes_only_what_it_names_and_refuses_an_unknown_runner_step() {
        let ok = |f: Option<&str>| hello_failpoint(f, 1, "c00k1e").unwrap();
        assert_eq!(ok(None), (1, "c00k1e".to_string()));
        assert_eq!(ok(Some("model_install:staged")), (1, "c00k1e".to_string()));
        assert_eq!(ok(Some("runner:hello_version")), (2, "c00k1e".to_string()));
        let (version, cookie) = ok(Some("runner:hello_cookie"));
        assert_eq!(version, 1);
        assert_ne!(cookie, "c00k1e");
        assert_eq!(
            hello_failpoint(Some("runner:hello"), 1, "c").unwrap_err(),
            "BKG_FAILPOINT: unknown runner failpoint 'hello' (known: hello_version, hello_cookie)"
        );
    }
}
