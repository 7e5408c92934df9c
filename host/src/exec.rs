//! Execution: every call into a plugin instance runs on threads the host owns for that
//! instance. The instance's worker threads construct the plugin, run its calls and lifecycle
//! methods, drop it, and are joined before the library is closed (so no thread-local
//! destructor of the plugin can pin the library, see docs/ARCHITECTURE.md).
//!
//! Calls go through a bounded queue (full = busy, and bounded in request bytes too); each call
//! carries a cancel flag and a sink for its events (stream start, chunks, the final result).
//! The instance knows the cancel flags of its queued and running calls, so a drain deadline
//! can cancel them and tell which returned and which ignored it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString},
};
use bkg_abi::ffi::{
    CallContext, CallContext_TO, ErrorKind, FfiError, FfiManifest, FfiRequest, HostBox, PluginBox,
    PluginModRef,
};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::loader::HeapGauge;

pub use crate::telemetry::CallStats;

/// Host-owned copy of a plugin's manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<CapabilityInfo>,
    pub routes: Vec<RouteInfo>,
    pub route_prefix: Option<String>,
    pub config_schema: Option<serde_json::Value>,
    pub max_concurrency: u32,
    pub config_needs_restart: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CapabilityInfo {
    pub name: String,
    pub description: String,
    pub input_schema: Option<serde_json::Value>,
    pub output_schema: Option<serde_json::Value>,
    pub streaming: bool,
    /// API-key scope needed over HTTP: "invoke" or "admin".
    pub scope: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RouteInfo {
    pub method: String,
    pub path: String,
}

fn parse_schema(text: &str) -> Option<serde_json::Value> {
    if text.trim().is_empty() {
        None
    } else {
        serde_json::from_str(text).ok()
    }
}

impl ManifestInfo {
    /// The host's copy of a manifest a plugin returned (in this process, or rebuilt from what
    /// a child sent over the wire).
    pub fn from_ffi(m: FfiManifest) -> Self {
        Self {
            id: m.id.into_string(),
            name: m.name.into_string(),
            version: m.version.into_string(),
            description: m.description.into_string(),
            capabilities: m
                .capabilities
                .into_iter()
                .map(|c| CapabilityInfo {
                    name: c.name.into_string(),
                    description: c.description.into_string(),
                    input_schema: parse_schema(&c.input_schema),
                    output_schema: parse_schema(&c.output_schema),
                    streaming: c.streaming,
                    scope: if c.scope.is_empty() { "invoke".into() } else { c.scope.into_string() },
                })
                .collect(),
            routes: m
                .routes
                .into_iter()
                .map(|r| RouteInfo { method: r.method.into_string(), path: r.path.into_string() })
                .collect(),
            route_prefix: m.route_prefix.into_option().map(|p| p.into_string()),
            config_schema: parse_schema(&m.config_schema),
            max_concurrency: m.max_concurrency,
            config_needs_restart: m.config_needs_restart,
        }
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c.name == name)
    }

    pub fn has_route(&self, method: &str, path: &str) -> bool {
        self.routes.iter().any(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
    }
}

/// An error the plugin returned (or a panic the SDK caught).
#[derive(Debug, Clone)]
pub struct PluginFailure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<FfiError> for PluginFailure {
    fn from(e: FfiError) -> Self {
        Self { kind: e.kind, message: e.message.into_string() }
    }
}

/// A complete answer, copied into host memory.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What a call sends back to whoever waits for it.
#[derive(Debug)]
pub enum Event {
    /// The call switched to a streamed answer with this content type.
    Begin(String),
    Chunk(Vec<u8>),
    Done(Result<Reply, PluginFailure>),
}

/// Where a call's events go: an async HTTP handler or a blocking bus caller.
pub enum Sink {
    Async(tokio::sync::mpsc::Sender<Event>),
    Blocking(crossbeam_channel::Sender<Event>),
}

impl Sink {
    fn send(&self, event: Event) -> bool {
        match self {
            Sink::Async(tx) => tx.blocking_send(event).is_ok(),
            Sink::Blocking(tx) => tx.send(event).is_ok(),
        }
    }
    /// Another handle on the same receiver (for the drain deadline's final answer).
    fn duplicate(&self) -> Sink {
        match self {
            Sink::Async(tx) => Sink::Async(tx.clone()),
            Sink::Blocking(tx) => Sink::Blocking(tx.clone()),
        }
    }
    /// Send without blocking (from the registry thread, which must not wait on a client).
    fn try_send(&self, event: Event) -> bool {
        match self {
            Sink::Async(tx) => tx.try_send(event).is_ok(),
            Sink::Blocking(tx) => tx.try_send(event).is_ok(),
        }
    }
    /// Send without blocking; the event comes back when the receiver is full or gone.
    fn try_send_back(&self, event: Event) -> Result<(), Event> {
        match self {
            Sink::Async(tx) => tx.try_send(event).map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(e)
                | tokio::sync::mpsc::error::TrySendError::Closed(e) => e,
            }),
            Sink::Blocking(tx) => tx.try_send(event).map_err(|e| e.into_inner()),
        }
    }
    fn is_closed(&self) -> bool {
        match self {
            Sink::Async(tx) => tx.is_closed(),
            Sink::Blocking(_) => false,
        }
    }
}

/// One queued call.
pub struct CallJob {
    pub request: FfiRequest,
    pub sink: Sink,
    pub cancel: Arc<AtomicBool>,
}

/// Lifecycle operations, run on the instance's own threads.
#[derive(Debug, Clone)]
pub enum Control {
    Start,
    Stop,
    Status,
    Config,
    Configure(String),
}

enum Job {
    Call(CallJob, Ticket),
    /// A call to plugin code that takes calls without a host thread ([`DirectDispatch`]),
    /// handed over by a worker because its body is too large to write from the submitting
    /// thread.
    Dispatch(DirectCall),
    Control(ControlJob),
    Exit,
}

/// Where a control job stands; its waiter and its worker agree on it through one atomic, so
/// an operation whose waiter gave up is either never run or known to have finished late.
const CONTROL_QUEUED: u8 = 0;
const CONTROL_RUNNING: u8 = 1;
const CONTROL_DONE: u8 = 2;
const CONTROL_ABANDONED: u8 = 3;

struct ControlJob {
    op: Control,
    reply: Sender<Result<String, PluginFailure>>,
    state: Arc<AtomicU8>,
    /// Run on the same thread right after `op` if `op` finished after its waiter gave up
    /// (e.g. re-apply the stored config over one that timed out).
    restore: Option<Control>,
    /// The plugin id, for the log line of a late finish.
    plugin: String,
}

/// One call the instance accepted (queued or running): its cancel flag, whether a worker took
/// it into plugin code, and whether its final event was sent.
struct CallEntry {
    cancel: Arc<AtomicBool>,
    started: AtomicBool,
    /// Set once by whoever sends the call's last event (its worker, or the drain deadline for
    /// a call that ignored its cancel flag); nothing is sent to the sink after it.
    ended: AtomicBool,
    sink: Sink,
}

/// An accepted call's hold on its instance: its place among the running calls and its
/// request bytes in the queue's byte count. Both are given back when it is dropped (the call
/// finished, or was refused).
struct Ticket {
    id: u64,
    bytes: usize,
    entry: Arc<CallEntry>,
    shared: Arc<Shared>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shared.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        self.shared.queued_bytes.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// What a drain deadline did to the calls still running on a generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Calls (queued or running) still there when the deadline passed.
    pub abandoned: usize,
    /// Of those, calls that ended within the grace period after their cancel flag was raised
    /// (or had not reached plugin code and never will).
    pub cancelled: usize,
    /// Of those, calls still in plugin code when the grace period ended: the plugin ignored
    /// its cancel flag, and the thread running it is left running.
    pub ignored: usize,
}

/// Why a call was refused for the byte limit of its plugin's queue.
pub fn queue_bytes_message(limit: usize) -> String {
    format!(
        "the request bodies in its queue would pass the queue's byte limit of {limit} bytes \
         (--queue-bytes)"
    )
}

/// The longest a drain deadline waits for cancelled calls to return.
pub const CANCEL_GRACE_MAX: Duration = Duration::from_secs(5);

/// The grace period cancelled calls get: the control timeout, at most [`CANCEL_GRACE_MAX`].
pub fn cancel_grace(control_timeout: Duration) -> Duration {
    control_timeout.min(CANCEL_GRACE_MAX)
}

/// A call the instance did not take, handed back so it can be routed again.
pub struct Rejected {
    pub reason: SubmitError,
    pub job: Box<CallJob>,
}

/// Why a call could not be run.
#[derive(Debug)]
pub enum SubmitError {
    /// The instance is stopped by an operator.
    Stopped,
    /// The instance is being retired (swapped out or removed): route again.
    Retired,
    /// The queue is full.
    Busy,
    /// The request bodies already queued plus this one would pass the instance's byte limit
    /// (`--queue-bytes`, the value given).
    QueueBytes(usize),
}

const RUNNING: u8 = 0;
const STOPPED: u8 = 1;
const RETIRED: u8 = 2;

struct Shared {
    in_flight: AtomicUsize,
    /// Request body bytes of the calls accepted and not finished.
    queued_bytes: AtomicUsize,
    queue_bytes_limit: usize,
    /// The calls accepted and not finished, by ticket id.
    calls: Mutex<HashMap<u64, Arc<CallEntry>>>,
    next_call: AtomicU64,
    /// The plugin id's counters, shared by its generations.
    stats: Arc<CallStats>,
    /// Plugin id and version, for log spans; set once the manifest is read.
    label: (String, String),
}

/// Limits for an instance's threads and queue.
#[derive(Debug, Clone)]
pub struct Limits {
    pub workers: usize,
    pub queue_depth: usize,
    pub call_timeout: Duration,
    /// How long manifest, construction and lifecycle calls may take.
    pub control_timeout: Duration,
    /// Request body bytes an instance holds for its queued and running calls before it
    /// answers busy (`--queue-bytes`).
    pub queue_bytes: usize,
}

/// One loaded generation of a plugin, with its worker threads.
pub struct Instance {
    pub manifest: Arc<ManifestInfo>,
    pub generation: u64,
    pub call_timeout: Duration,
    jobs: Sender<Job>,
    phase: AtomicU8,
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    heap: Arc<dyn HeapRead>,
    /// Plugin code that takes calls without a host thread each (a child process): calls are
    /// handed to it on the submitting thread, not queued for the workers.
    direct: Option<Arc<dyn DirectDispatch>>,
    /// How many calls may be out to `direct` at once: the queue's depth plus the workers,
    /// as many as the worker path holds (queued and running) before it answers busy.
    direct_limit: usize,
}

/// Request bodies up to this size are written to a child from the submitting thread (an
/// HTTP worker, or a plugin's thread for the bus); larger ones from an instance worker, so an
/// HTTP worker never blocks on a large write.
pub const DIRECT_BODY_MAX: usize = 64 * 1024;

/// Where an instance's heap figure comes from: its library's counter in this process, or the
/// last figure a child process reported.
pub trait HeapRead: Send + Sync {
    /// Heap bytes the plugin's library holds (`None`: not counted, closed, or gone).
    fn bytes(&self) -> Option<u64>;
}

impl HeapRead for HeapGauge {
    fn bytes(&self) -> Option<u64> {
        HeapGauge::bytes(self)
    }
}

/// The plugin code an instance's workers run: a plugin object loaded into this process
/// (`PluginBox`), or one served by a child process (`isolation::child`).
pub trait PluginCode: Send + Sync {
    /// Run one call; streamed parts go through `ctx`.
    fn call(&self, request: &FfiRequest, ctx: &HostCallContext<'_>)
        -> Result<Reply, PluginFailure>;
    /// Run one lifecycle operation.
    fn control(&self, op: Control) -> Result<String, PluginFailure>;
    /// Code that takes calls without a host thread held per call (a child process): the
    /// instance hands its calls to this instead of queueing them for its workers.
    fn direct(&self) -> Option<Arc<dyn DirectDispatch>> {
        None
    }
}

/// Plugin code that runs calls elsewhere (a child process) and ends them from another thread
/// (the one reading the child's answers): no host thread waits per call.
pub trait DirectDispatch: Send + Sync {
    /// Start the call. However it goes, the call ends through [`DirectCall::finish`] (or, as
    /// a last resort, its drop, which answers that the call was dropped).
    fn dispatch(&self, call: DirectCall);
}

/// A call handed to [`DirectDispatch`]: the request, the client's sink and the instance's
/// accounting (its place among the calls in flight, its request bytes, the counters), given
/// back when it is finished or dropped.
pub struct DirectCall {
    job: Option<CallJob>,
    ticket: Option<Ticket>,
    shared: Arc<Shared>,
    started: Instant,
    streaming: bool,
}

/// What a watchdog needs of a [`DirectCall`] that another thread holds: whether it was
/// cancelled (or its client went away), and its cancel flag.
#[derive(Clone)]
pub struct CallWatch(Arc<CallEntry>);

impl CallWatch {
    /// True once the call was cancelled or its client went away.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancel.load(Ordering::Relaxed) || self.0.sink.is_closed()
    }
    /// The call's cancel flag (a bus call made for it is tied to it).
    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.0.cancel
    }
}

impl DirectCall {
    fn new(job: CallJob, ticket: Ticket, shared: Arc<Shared>) -> DirectCall {
        ticket.entry.started.store(true, Ordering::SeqCst);
        DirectCall {
            job: Some(job),
            ticket: Some(ticket),
            shared,
            started: Instant::now(),
            streaming: false,
        }
    }

    fn job(&self) -> &CallJob {
        self.job.as_ref().expect("a direct call's job is there until it ends")
    }

    fn entry(&self) -> &Arc<CallEntry> {
        &self.ticket.as_ref().expect("a direct call's ticket is there until it ends").entry
    }

    /// The request.
    pub fn request(&self) -> &FfiRequest {
        &self.job().request
    }

    /// A handle for the watchdog: cancellation and the cancel flag.
    pub fn watch(&self) -> CallWatch {
        CallWatch(self.entry().clone())
    }

    /// True once the call was cancelled or its client went away.
    pub fn is_cancelled(&self) -> bool {
        let job = self.job();
        job.cancel.load(Ordering::Relaxed) || job.sink.is_closed()
    }

    fn with_ctx<R>(&mut self, f: impl FnOnce(&HostCallContext<'_>) -> R) -> R {
        let job = self.job.as_ref().expect("a direct call's job is there until it ends");
        let entry = &self.ticket.as_ref().expect("a direct call's ticket is there").entry;
        let ctx = HostCallContext {
            cancel: &job.cancel,
            sink: &job.sink,
            ended: &entry.ended,
            streaming: Cell::new(self.streaming),
        };
        let r = f(&ctx);
        self.streaming = ctx.streaming.get();
        r
    }

    /// Switch to a streamed answer (blocks while the client's buffer is full: not for an
    /// HTTP worker's thread); false if the client is gone.
    pub fn begin_stream(&mut self, content_type: &str) -> bool {
        self.with_ctx(|ctx| ctx.begin_stream(content_type))
    }

    /// Send one chunk (blocks while the client's buffer is full: not for an HTTP worker's
    /// thread); false if the client is gone or already has its final answer.
    pub fn send_chunk(&mut self, chunk: &[u8]) -> bool {
        self.with_ctx(|ctx| ctx.send_chunk(chunk))
    }

    /// End the call with its final answer: the client gets it unless something (a drain
    /// deadline) ended the call before; the counters and the instance's accounting follow.
    pub fn finish(mut self, result: Result<Reply, PluginFailure>) {
        self.end(result);
    }

    fn end(&mut self, result: Result<Reply, PluginFailure>) {
        let (Some(job), Some(ticket)) = (self.job.take(), self.ticket.take()) else { return };
        self.shared.stats.record(self.started.elapsed(), Duration::ZERO, result.is_err());
        if !ticket.entry.ended.swap(true, Ordering::SeqCst) {
            send_final(&job.sink, Event::Done(result));
        }
        drop(job);
        drop(ticket);
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The job back, for a refusal (the ticket is given back; in_flight is the caller's).
    fn into_job(mut self) -> CallJob {
        self.ticket.take();
        self.job.take().expect("a direct call's job is there until it ends")
    }
}

impl Drop for DirectCall {
    fn drop(&mut self) {
        if self.job.is_some() {
            self.end(Err(PluginFailure {
                kind: ErrorKind::INTERNAL,
                message: "the call was dropped without an answer".into(),
            }));
        }
    }
}

/// Send a call's final event: without waiting when there is room (always, for an answer
/// that did not stream), else waiting unless this is an async runtime's thread.
fn send_final(sink: &Sink, event: Event) {
    if let Err(event) = sink.try_send_back(event) {
        if !sink.is_closed() && tokio::runtime::Handle::try_current().is_err() {
            sink.send(event);
        }
    }
}

impl PluginCode for PluginBox {
    fn call(
        &self,
        request: &FfiRequest,
        ctx: &HostCallContext<'_>,
    ) -> Result<Reply, PluginFailure> {
        let ctx_obj = CallContext_TO::from_ptr(ctx, TD_Opaque);
        // The trait object's own (inherent) method, not `PluginCode::call`.
        match PluginBox::call(self, request, ctx_obj) {
            RResult::ROk(r) => Ok(Reply {
                status: r.status,
                content_type: r.content_type.into_string(),
                body: r.body.into_vec(),
            }),
            RResult::RErr(e) => Err(PluginFailure::from(e)),
        }
    }

    fn control(&self, op: Control) -> Result<String, PluginFailure> {
        run_control(self, op)
    }
}

/// Where an instance's manifest and plugin come from: [`LocalSource`] reads them from a
/// library loaded into this process; a child process sends them over the wire.
pub trait PluginSource: Send + 'static {
    /// Read the manifest (before anything is constructed).
    fn manifest(&mut self) -> Result<ManifestInfo, String>;
    /// Construct the plugin with this host handle.
    fn create(self: Box<Self>, host: HostBox) -> Result<Arc<dyn PluginCode>, String>;
}

/// A library opened in this process: its root module.
pub struct LocalSource(pub PluginModRef);

impl PluginSource for LocalSource {
    fn manifest(&mut self) -> Result<ManifestInfo, String> {
        match (self.0.manifest())() {
            RResult::ROk(m) => Ok(ManifestInfo::from_ffi(m)),
            RResult::RErr(e) => Err(format!("manifest: {}", e.message)),
        }
    }

    fn create(self: Box<Self>, host: HostBox) -> Result<Arc<dyn PluginCode>, String> {
        match (self.0.create())(host) {
            RResult::ROk(p) => Ok(Arc::new(p)),
            RResult::RErr(e) => Err(format!("create: {}", e.message)),
        }
    }
}

/// Why an instance could not be booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{0}")]
    Plugin(String),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    /// The plugin's code did not return: its thread is left running, so its library must
    /// never be closed.
    #[error("{0}")]
    Hung(String),
}

/// The host's side of one running call, as the plugin code sees it: its cancel flag (and
/// whether its client is still there) and where streamed parts go.
pub struct HostCallContext<'a> {
    cancel: &'a AtomicBool,
    sink: &'a Sink,
    /// Set when the call's last event was sent for it (a drain deadline gave up on it).
    ended: &'a AtomicBool,
    streaming: Cell<bool>,
}

impl CallContext for HostCallContext<'_> {
    fn is_cancelled(&self) -> bool {
        HostCallContext::is_cancelled(self)
    }
    fn begin_stream(&self, content_type: RStr<'_>) -> bool {
        HostCallContext::begin_stream(self, content_type.as_str())
    }
    fn send_chunk(&self, chunk: RSlice<'_, u8>) -> bool {
        HostCallContext::send_chunk(self, chunk.as_slice())
    }
}

impl HostCallContext<'_> {
    /// True once the call was cancelled or its client went away.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.sink.is_closed()
    }
    /// Switch the call to a streamed answer; false if the client is gone.
    pub fn begin_stream(&self, content_type: &str) -> bool {
        if self.ended.load(Ordering::SeqCst) {
            return false;
        }
        if self.streaming.get() {
            return !self.is_cancelled();
        }
        self.streaming.set(true);
        let ok = self.sink.send(Event::Begin(content_type.to_owned()));
        if !ok {
            self.cancel.store(true, Ordering::Relaxed);
        }
        ok
    }
    /// Send one chunk of a streamed answer; false if the client is gone.
    pub fn send_chunk(&self, chunk: &[u8]) -> bool {
        if !self.streaming.get() && !self.begin_stream("application/octet-stream") {
            return false;
        }
        if self.ended.load(Ordering::SeqCst) {
            // The client already got its final answer: nothing more goes to it.
            return false;
        }
        let ok = self.sink.send(Event::Chunk(chunk.to_vec()));
        if !ok {
            self.cancel.store(true, Ordering::Relaxed);
        }
        ok
    }
}

thread_local! {
    /// The cancel flag of the call this worker thread is running (host memory, host code:
    /// not a thread-local of the plugin's). A bus call made from inside that call links its
    /// own cancel flag to it, so cancelling a caller cancels what it is waiting for.
    static CURRENT_CALL: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

/// The cancel flag of the call running on this thread, if this is a worker running a call.
pub fn current_call_cancel() -> Option<Arc<AtomicBool>> {
    CURRENT_CALL.with(|c| c.borrow().clone())
}

/// Marks this thread as running a call (its cancel flag) until dropped: bus calls made on the
/// thread meanwhile are tied to that call. Worker threads enter each call they run; the host
/// thread serving a child's bus call enters the call the child made it for.
pub struct CurrentCall;

impl CurrentCall {
    pub fn enter(cancel: &Arc<AtomicBool>) -> Self {
        CURRENT_CALL.with(|c| *c.borrow_mut() = Some(cancel.clone()));
        CurrentCall
    }
}

impl Drop for CurrentCall {
    fn drop(&mut self) {
        CURRENT_CALL.with(|c| *c.borrow_mut() = None);
    }
}

fn run_call(plugin: &dyn PluginCode, job: CallJob, ticket: Ticket, shared: &Shared) {
    let entry = ticket.entry.clone();
    if job.cancel.load(Ordering::SeqCst) {
        // Cancelled while queued (its client went away, or a drain deadline passed): the
        // plugin never sees it.
        if !entry.ended.swap(true, Ordering::SeqCst) {
            job.sink.send(Event::Done(Err(PluginFailure {
                kind: ErrorKind::CANCELLED,
                message: "the call was cancelled before it started".into(),
            })));
        }
        drop(job);
        drop(ticket);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    entry.started.store(true, Ordering::SeqCst);
    let _current = CurrentCall::enter(&job.cancel);
    let _span = tracing::debug_span!(
        "plugin_call",
        plugin.id = %shared.label.0,
        plugin.version = %shared.label.1,
        target = %job.request.target,
    )
    .entered();
    let started = Instant::now();
    let cpu_started = cpu_time::ThreadTime::try_now().ok();
    let result = {
        let ctx = HostCallContext {
            cancel: &job.cancel,
            sink: &job.sink,
            ended: &entry.ended,
            streaming: Cell::new(false),
        };
        plugin.call(&job.request, &ctx)
    };
    let cpu = cpu_started.map_or(Duration::ZERO, |t| t.elapsed());
    shared.stats.record(started.elapsed(), cpu, result.is_err());
    if !entry.ended.swap(true, Ordering::SeqCst) {
        job.sink.send(Event::Done(result));
    }
    drop(job);
    drop(ticket);
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
}

fn run_control(plugin: &PluginBox, op: Control) -> Result<String, PluginFailure> {
    let unit = |r: RResult<(), FfiError>| match r {
        RResult::ROk(()) => Ok(String::new()),
        RResult::RErr(e) => Err(PluginFailure::from(e)),
    };
    match op {
        Control::Start => unit(plugin.start()),
        Control::Stop => unit(plugin.stop()),
        Control::Status => Ok(plugin.status().into_string()),
        Control::Config => Ok(plugin.config().into_string()),
        Control::Configure(text) => unit(plugin.configure(RStr::from_str(&text))),
    }
}

fn run_control_job(plugin: &dyn PluginCode, job: ControlJob) {
    let ControlJob { op, reply, state, restore, plugin: id } = job;
    if state
        .compare_exchange(CONTROL_QUEUED, CONTROL_RUNNING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        tracing::warn!(plugin = %id, ?op, "not run: whoever asked for it stopped waiting");
        return;
    }
    let name = format!("{op:?}");
    let result = plugin.control(op);
    if state
        .compare_exchange(CONTROL_RUNNING, CONTROL_DONE, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        let _ = reply.send(result);
        return;
    }
    // The waiter gave up while the plugin ran it: whatever it changed was not recorded.
    match restore {
        Some(restore) => {
            let restored = plugin.control(restore);
            tracing::warn!(
                plugin = %id,
                op = %name,
                restored = restored.is_ok(),
                error = restored.err().map(|f| f.message),
                "the plugin finished an operation after its waiter gave up; the stored config was re-applied over it"
            );
        }
        None => tracing::warn!(
            plugin = %id,
            op = %name,
            ok = result.is_ok(),
            "the plugin finished an operation after its waiter gave up"
        ),
    }
}

fn worker_loop(plugin: Arc<dyn PluginCode>, jobs: Receiver<Job>, shared: Arc<Shared>) {
    for job in jobs.iter() {
        match job {
            Job::Call(call, ticket) => run_call(&*plugin, call, ticket, &shared),
            Job::Dispatch(call) => match plugin.direct() {
                Some(direct) => direct.dispatch(call),
                // Not reached: only code with a direct path gets these; dropping the call
                // answers it.
                None => drop(call),
            },
            Job::Control(job) => run_control_job(&*plugin, job),
            Job::Exit => break,
        }
    }
    // The last worker to get here drops the plugin object, on a host-owned thread.
    drop(plugin);
}

enum BootMsg {
    Manifest(ManifestInfo),
    Created(Arc<dyn PluginCode>),
    Failed(String),
}

/// How many worker threads an instance of this manifest gets: the host's count, or the
/// plugin's `max_concurrency` up to four times that.
pub fn worker_count(manifest: &ManifestInfo, limits: &Limits) -> usize {
    match manifest.max_concurrency {
        0 => limits.workers,
        n => (n as usize).min(limits.workers.max(1) * 4),
    }
    .max(1)
}

/// What the caller of [`Instance::boot`] decides once it has read the manifest: the host
/// handle, generation and counters to construct the plugin with, or why it must not be.
pub type BootDecision = Result<(HostBox, u64, Arc<CallStats>), String>;

impl Instance {
    /// Read the manifest on a new worker thread, let `decide` validate it, construct the
    /// plugin on that same thread, then start the remaining workers. The plugin is not started.
    /// `source` is a library in this process ([`LocalSource`]) or a child process.
    pub fn boot(
        source: Box<dyn PluginSource>,
        heap: Arc<dyn HeapRead>,
        limits: &Limits,
        thread_prefix: &str,
        decide: impl FnOnce(&ManifestInfo) -> BootDecision,
    ) -> Result<Arc<Instance>, BootError> {
        let (jobs_tx, jobs_rx) = bounded::<Job>(limits.queue_depth.max(1));
        let (boot_tx, boot_rx) = bounded::<BootMsg>(1);
        let (go_tx, go_rx) = bounded::<Option<(HostBox, Arc<Shared>)>>(1);

        let rx0 = jobs_rx.clone();
        let first = std::thread::Builder::new()
            .name(format!("{thread_prefix}-w0"))
            .spawn(move || {
                let mut source = source;
                let manifest = match source.manifest() {
                    Ok(m) => m,
                    Err(message) => {
                        let _ = boot_tx.send(BootMsg::Failed(message));
                        return;
                    }
                };
                if boot_tx.send(BootMsg::Manifest(manifest)).is_err() {
                    return;
                }
                let Ok(Some((host, shared0))) = go_rx.recv() else { return };
                let plugin = match source.create(host) {
                    Ok(p) => p,
                    Err(message) => {
                        let _ = boot_tx.send(BootMsg::Failed(message));
                        return;
                    }
                };
                if boot_tx.send(BootMsg::Created(plugin.clone())).is_err() {
                    return;
                }
                worker_loop(plugin, rx0, shared0);
            })
            .map_err(BootError::Thread)?;

        let fail = |first: JoinHandle<()>, message: String| {
            let _ = first.join();
            Err(BootError::Plugin(message))
        };
        let hung = |what: &str| {
            Err(BootError::Hung(format!(
                "the plugin's {what} did not return within {} ms",
                limits.control_timeout.as_millis()
            )))
        };
        let manifest = match boot_rx.recv_timeout(limits.control_timeout) {
            Ok(BootMsg::Manifest(m)) => m,
            Ok(BootMsg::Failed(message)) => return fail(first, message),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return hung("manifest"),
            _ => return fail(first, "plugin boot thread died".into()),
        };
        let (host, generation, stats) = match decide(&manifest) {
            Ok(decided) => decided,
            Err(message) => {
                let _ = go_tx.send(None);
                return fail(first, message);
            }
        };
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            queue_bytes_limit: limits.queue_bytes,
            calls: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(0),
            stats,
            label: (manifest.id.clone(), manifest.version.clone()),
        });
        let _ = go_tx.send(Some((host, shared.clone())));
        let plugin = match boot_rx.recv_timeout(limits.control_timeout) {
            Ok(BootMsg::Created(p)) => p,
            Ok(BootMsg::Failed(message)) => return fail(first, message),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return hung("constructor"),
            _ => return fail(first, "plugin boot thread died".into()),
        };
        let wanted = worker_count(&manifest, limits);
        let direct = plugin.direct();

        let instance = Arc::new(Instance {
            manifest: Arc::new(manifest),
            generation,
            call_timeout: limits.call_timeout,
            jobs: jobs_tx,
            phase: AtomicU8::new(STOPPED),
            shared: shared.clone(),
            workers: Mutex::new(vec![first]),
            heap,
            direct,
            direct_limit: limits.queue_depth.max(1) + wanted,
        });
        for i in 1..wanted {
            let (p, rx, s) = (plugin.clone(), jobs_rx.clone(), shared.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("{thread_prefix}-w{i}"))
                .spawn(move || worker_loop(p, rx, s));
            match spawned {
                Ok(handle) => instance.lock_workers().push(handle),
                Err(e) => {
                    drop(plugin);
                    if !instance.shutdown(limits.control_timeout) {
                        return Err(BootError::Hung(format!("cannot start a worker thread: {e}")));
                    }
                    return Err(BootError::Thread(e));
                }
            }
        }
        // Our clone goes now; the workers hold the others.
        drop(plugin);
        Ok(instance)
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    pub fn stats(&self) -> &Arc<CallStats> {
        &self.shared.stats
    }

    /// Heap bytes the plugin's library holds (`None`: not counted, or closed).
    pub fn heap_bytes(&self) -> Option<u64> {
        self.heap.bytes()
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    pub fn is_running(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == RUNNING
    }

    /// Accept calls.
    pub fn open(&self) {
        self.phase.store(RUNNING, Ordering::SeqCst);
    }

    /// Request body bytes held for the calls accepted and not finished.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::SeqCst)
    }

    /// Refuse new calls (as stopped, or as retired) and wait until running ones finish or
    /// the deadline passes. At the deadline every call still there gets its cancel flag
    /// raised and `grace` to return; a call still in plugin code after that ignored it, and
    /// its client is sent a final `cancelled` error (nothing the plugin sends later reaches
    /// it). Calls still queued are answered `cancelled` without reaching the plugin.
    pub fn close_and_drain(
        &self,
        retire: bool,
        deadline: Duration,
        grace: Duration,
    ) -> DrainOutcome {
        self.phase.store(if retire { RETIRED } else { STOPPED }, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        let abandoned = loop {
            let n = self.in_flight();
            if n == 0 {
                return DrainOutcome::default();
            }
            if Instant::now() >= until {
                break n;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let entries = |shared: &Shared| -> Vec<Arc<CallEntry>> {
            shared.calls.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
        };
        for entry in entries(&self.shared) {
            entry.cancel.store(true, Ordering::SeqCst);
        }
        let until = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        let what = if retire { "retired" } else { "stopped" };
        let mut ignored = 0;
        for entry in entries(&self.shared) {
            if entry.started.load(Ordering::SeqCst) {
                ignored += 1;
            }
            // Still queued behind a stuck call, or stuck itself: the client gets its answer now.
            if !entry.ended.swap(true, Ordering::SeqCst) {
                let message = if entry.started.load(Ordering::SeqCst) {
                    format!(
                        "the call was cancelled as the plugin was {what} and did not stop within {} ms",
                        grace.as_millis()
                    )
                } else {
                    format!("the call was cancelled before it started: the plugin was {what}")
                };
                entry.sink.try_send(Event::Done(Err(PluginFailure {
                    kind: ErrorKind::CANCELLED,
                    message,
                })));
            }
        }
        DrainOutcome { abandoned, cancelled: abandoned.saturating_sub(ignored), ignored }
    }

    /// Queue a call for the workers, or hand it to plugin code that takes calls directly (a
    /// child process: written here, or by a worker when its body is over
    /// [`DIRECT_BODY_MAX`]). On failure the job is handed back.
    pub fn submit(&self, job: CallJob) -> Result<(), Rejected> {
        let before = self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let refuse = |reason: SubmitError, job: CallJob| {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            Err(Rejected { reason, job: Box::new(job) })
        };
        match self.phase.load(Ordering::SeqCst) {
            RUNNING => {}
            STOPPED => return refuse(SubmitError::Stopped, job),
            _ => return refuse(SubmitError::Retired, job),
        }
        // Request bodies are held until their call finishes: bound their sum, not only the
        // number of calls, so a client cannot make the host buffer gigabytes.
        let bytes = job.request.body.len();
        let limit = self.shared.queue_bytes_limit;
        let held = self.shared.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
        if held.saturating_add(bytes) > limit {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
            self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return refuse(SubmitError::QueueBytes(limit), job);
        }
        let id = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(CallEntry {
            cancel: job.cancel.clone(),
            started: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            sink: job.sink.duplicate(),
        });
        self.shared.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(id, entry.clone());
        let ticket = Ticket { id, bytes, entry, shared: self.shared.clone() };
        if let Some(direct) = &self.direct {
            // No host thread per call: the bound is the queue's, counted in calls in flight.
            if before >= self.direct_limit {
                drop(ticket);
                self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return refuse(SubmitError::Busy, job);
            }
            let call = DirectCall::new(job, ticket, self.shared.clone());
            if bytes <= DIRECT_BODY_MAX {
                direct.dispatch(call);
                return Ok(());
            }
            return match self.jobs.try_send(Job::Dispatch(call)) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(Job::Dispatch(call))) => {
                    self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    refuse(SubmitError::Busy, call.into_job())
                }
                Err(TrySendError::Disconnected(Job::Dispatch(call))) => {
                    refuse(SubmitError::Retired, call.into_job())
                }
                Err(_) => unreachable!("try_send returns the job it was given"),
            };
        }
        match self.jobs.try_send(Job::Call(job, ticket)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Job::Call(job, ticket))) => {
                drop(ticket);
                self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                refuse(SubmitError::Busy, job)
            }
            Err(TrySendError::Disconnected(Job::Call(job, ticket))) => {
                drop(ticket);
                refuse(SubmitError::Retired, job)
            }
            Err(_) => unreachable!("try_send returns the job it was given"),
        }
    }

    /// Run a lifecycle operation on the instance's threads and wait for it.
    pub fn control(&self, op: Control, timeout: Duration) -> Result<String, PluginFailure> {
        self.control_or_restore(op, timeout, None).0
    }

    /// Like [`Instance::control`]; an operation whose waiter gave up is not run if it has not
    /// started, and if the plugin finishes it late, `restore` runs right after it on the same
    /// thread (e.g. the stored config, re-applied over one whose apply timed out).
    /// The flag is true when the waiter gave up while the plugin was running the operation:
    /// it may still finish (late).
    pub fn control_or_restore(
        &self,
        op: Control,
        timeout: Duration,
        restore: Option<Control>,
    ) -> (Result<String, PluginFailure>, bool) {
        let (tx, rx) = bounded(1);
        let timed_out = || PluginFailure {
            kind: ErrorKind::TIMEOUT,
            message: format!("the plugin did not answer within {} ms", timeout.as_millis()),
        };
        let state = Arc::new(AtomicU8::new(CONTROL_QUEUED));
        let job = ControlJob {
            op,
            reply: tx,
            state: state.clone(),
            restore,
            plugin: self.manifest.id.clone(),
        };
        let until = Instant::now() + timeout;
        if self.jobs.send_timeout(Job::Control(job), timeout).is_err() {
            return (Err(timed_out()), false);
        }
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(result) => (result, false),
            Err(_) => match state.swap(CONTROL_ABANDONED, Ordering::SeqCst) {
                // It finished just now: its answer is on the way.
                CONTROL_DONE => (rx.recv().unwrap_or_else(|_| Err(timed_out())), false),
                CONTROL_RUNNING => (Err(timed_out()), true),
                _ => (Err(timed_out()), false),
            },
        }
    }

    /// Stop every worker and join it; the plugin object is dropped on the last worker.
    /// Returns true when every worker finished within `deadline`: then no code of this
    /// instance runs any more and its library may be closed. A worker stuck in plugin code is
    /// left running (detached), and the library must then never be closed.
    #[must_use = "a false answer means the library must not be closed"]
    pub fn shutdown(&self, deadline: Duration) -> bool {
        let workers = std::mem::take(&mut *self.lock_workers());
        let until = Instant::now() + deadline;
        for _ in 0..workers.len() {
            // Queued calls are still served before the workers exit.
            let left = until.saturating_duration_since(Instant::now());
            let _ = self.jobs.send_timeout(Job::Exit, left);
        }
        let mut all_done = true;
        for w in workers {
            while !w.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::error!(thread = ?w.thread().name(), "a plugin thread did not stop; leaving it running");
                all_done = false;
            }
        }
        all_done
    }
}

/// Sets a call's cancel flag when dropped (the HTTP client went away, or the wait timed out).
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Build a request for a capability or a route.
pub fn request(
    kind: bkg_abi::ffi::CallKind,
    target: &str,
    method: &str,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> FfiRequest {
    FfiRequest {
        kind,
        target: RString::from(target),
        method: RString::from(method),
        query: RString::from(query),
        content_type: RString::from(content_type),
        body: body.into(),
    }
}
