//! Routing table and call dispatch. The registry writes the table; everyone else reads it.
//! A call picks the current instance for a plugin id; if that instance is being retired
//! (hot-swap), the call is routed again, so a swap never fails a request.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bkg_abi::ffi::{ErrorKind, FfiRequest};

use crate::exec::{
    CallJob, CancelOnDrop, Event, Instance, PluginFailure, Rejected, Reply, Sink, SubmitError,
};

/// Which instance serves each plugin id, and which id owns each top-level prefix.
#[derive(Default)]
pub struct Routing {
    plugins: RwLock<HashMap<String, Arc<Instance>>>,
    prefixes: RwLock<Vec<(String, String)>>,
    /// The auth provider's plugin id, and how many calls it got for anything but `verify`
    /// (counted when submitted and again when they end): the auth cache is keyed to this
    /// count, so a key revoked by any caller, over HTTP or the bus, is refused at once.
    provider: std::sync::OnceLock<String>,
    provider_writes: std::sync::atomic::AtomicU64,
}

impl Routing {
    /// Name the auth provider whose writes [`Routing::provider_writes`] counts (once).
    pub fn watch_provider(&self, id: &str) {
        let _ = self.provider.set(id.to_string());
    }

    /// How many calls the auth provider got for anything but `verify`.
    pub fn provider_writes(&self) -> u64 {
        self.provider_writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn is_provider_write(&self, id: &str, target: &str) -> bool {
        target != "verify" && self.provider.get().is_some_and(|p| p == id)
    }

    fn note_call(&self, id: &str, target: &str) {
        if self.is_provider_write(id, target) {
            self.provider_writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Instance>> {
        self.plugins.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Install (or replace) the instance for its id, atomically for readers.
    pub fn install(&self, instance: Arc<Instance>) {
        let id = instance.id().to_string();
        let prefix = instance.manifest.route_prefix.clone();
        {
            let mut prefixes = self.prefixes.write().unwrap_or_else(|p| p.into_inner());
            prefixes.retain(|(_, owner)| owner != &id);
            if let Some(p) = prefix {
                prefixes.push((p, id.clone()));
            }
        }
        self.plugins.write().unwrap_or_else(|p| p.into_inner()).insert(id, instance);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Instance>> {
        self.prefixes.write().unwrap_or_else(|p| p.into_inner()).retain(|(_, owner)| owner != id);
        self.plugins.write().unwrap_or_else(|p| p.into_inner()).remove(id)
    }

    /// The plugin id owning the prefix that `path` falls under, with that prefix.
    pub fn prefix_owner(&self, path: &str) -> Option<(String, String)> {
        let prefixes = self.prefixes.read().unwrap_or_else(|p| p.into_inner());
        prefixes
            .iter()
            .find(|(p, _)| {
                path == p || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('/'))
            })
            .map(|(p, id)| (p.clone(), id.clone()))
    }

    /// Prefixes claimed by ids other than `id`.
    pub fn prefixes_except(&self, id: &str) -> Vec<(String, String)> {
        let prefixes = self.prefixes.read().unwrap_or_else(|p| p.into_inner());
        prefixes.iter().filter(|(_, owner)| owner != id).cloned().collect()
    }

    pub fn all(&self) -> Vec<Arc<Instance>> {
        self.plugins.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// Why a call did not produce an answer from the plugin.
#[derive(Debug)]
pub enum DispatchError {
    NotLoaded(String),
    Stopped(String),
    Busy(String),
    /// The plugin's queued request bodies would pass its byte limit (`--queue-bytes`).
    QueueBytes(String, usize),
    Timeout(String, Duration),
    /// The plugin answered with an error (or panicked).
    Plugin(PluginFailure),
    /// The worker went away without answering (should not happen).
    Lost(String),
    /// The HTTP client disconnected; the call was cancelled.
    ClientGone(String),
}

/// How a call answered.
pub enum Answer {
    Complete(Reply),
    Stream {
        content_type: String,
        events: tokio::sync::mpsc::Receiver<Event>,
        guard: CancelOnDrop,
        idle: Duration,
    },
}

const ROUTE_ATTEMPTS: usize = 8;

fn submit_routed(
    routing: &Routing,
    id: &str,
    mut job: CallJob,
) -> Result<Arc<Instance>, DispatchError> {
    routing.note_call(id, job.request.target.as_str());
    for _ in 0..ROUTE_ATTEMPTS {
        let Some(instance) = routing.get(id) else {
            return Err(DispatchError::NotLoaded(id.to_string()));
        };
        match instance.submit(job) {
            Ok(()) => return Ok(instance),
            Err(Rejected { reason: SubmitError::Retired, job: back }) => {
                job = *back;
                std::thread::yield_now();
            }
            Err(Rejected { reason: SubmitError::Stopped, .. }) => {
                return Err(DispatchError::Stopped(id.to_string()))
            }
            Err(Rejected { reason: SubmitError::Busy, .. }) => {
                return Err(DispatchError::Busy(id.to_string()))
            }
            Err(Rejected { reason: SubmitError::QueueBytes(limit), .. }) => {
                return Err(DispatchError::QueueBytes(id.to_string(), limit))
            }
        }
    }
    Err(DispatchError::Busy(id.to_string()))
}

/// How often a waiting call checks whether its client went away.
const CLIENT_CHECK: Duration = Duration::from_millis(50);

/// Run a call from async code (the HTTP layer). `client_gone` is polled while the call runs;
/// once it says true the call is cancelled.
pub async fn call(
    routing: &Routing,
    id: &str,
    request: FfiRequest,
    client_gone: impl Fn() -> bool,
) -> Result<Answer, DispatchError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(32);
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let instance = submit_routed(routing, id, CallJob { request, sink: Sink::Async(tx), cancel })?;
    let timeout = instance.call_timeout;
    let stats = instance.stats().clone();
    drop(instance);
    let deadline = tokio::time::Instant::now() + timeout;
    let first = loop {
        let wait =
            CLIENT_CHECK.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(event) => break Ok(event),
            Err(_) if tokio::time::Instant::now() >= deadline => break Err(()),
            Err(_) if client_gone() => return Err(DispatchError::ClientGone(id.to_string())),
            Err(_) => {}
        }
    };
    match first {
        Err(()) => {
            stats.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(DispatchError::Timeout(id.to_string(), timeout))
        }
        Ok(None) => Err(DispatchError::Lost(id.to_string())),
        Ok(Some(Event::Done(Ok(reply)))) => Ok(Answer::Complete(reply)),
        Ok(Some(Event::Done(Err(failure)))) => Err(DispatchError::Plugin(failure)),
        Ok(Some(Event::Begin(content_type))) => {
            Ok(Answer::Stream { content_type, events: rx, guard, idle: timeout })
        }
        Ok(Some(Event::Chunk(_))) => Err(DispatchError::Lost(id.to_string())),
    }
}

/// Run a call from a plugin's thread (the bus): blocks, collects a streamed answer whole.
pub fn call_blocking(
    routing: &Routing,
    id: &str,
    request: FfiRequest,
) -> Result<Reply, DispatchError> {
    let mut body = Vec::new();
    let mut streamed = false;
    let mut tail = call_streaming(routing, id, request, &mut |chunk| {
        streamed = true;
        body.extend_from_slice(chunk);
        true
    })?;
    if streamed {
        body.extend_from_slice(&tail.body);
        tail.body = body;
    }
    Ok(tail)
}

/// How many chunks of a streamed bus answer may wait for the caller: the callee's worker
/// blocks once that many are queued, so a caller that reads slowly slows the callee down
/// instead of making the host buffer the whole answer.
const BUS_STREAM_BUFFER: usize = 16;

/// Counts a bus call to the auth provider once more when it ends, however it ends (a
/// verification that raced with it must not stay cached: see [`Routing::provider_writes`]).
struct ProviderWriteEnds<'a>(Option<&'a Routing>);

impl Drop for ProviderWriteEnds<'_> {
    fn drop(&mut self) {
        if let Some(routing) = self.0 {
            routing.provider_writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Run a call from a plugin's thread (the bus), handing each chunk of a streamed answer to
/// `on_chunk` as it arrives; `on_chunk` answering false cancels the call. Returns the last
/// part of the answer (with the stream's content type), or the whole answer of a callee that
/// does not stream.
///
/// A bus call made while the calling thread runs a call of its own (a plugin calling another
/// from inside a capability) is tied to it: when the caller's call is cancelled (its client
/// went away, it got its 504, or its generation's drain deadline passed), this call is
/// cancelled too and the callee sees its cancel flag.
pub fn call_streaming(
    routing: &Routing,
    id: &str,
    request: FfiRequest,
    on_chunk: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Reply, DispatchError> {
    let writes = routing.is_provider_write(id, request.target.as_str());
    let _ends = ProviderWriteEnds(writes.then_some(routing));
    let (tx, rx) = crossbeam_channel::bounded(BUS_STREAM_BUFFER);
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let parent = crate::exec::current_call_cancel();
    let parent_cancelled =
        || parent.as_ref().is_some_and(|p| p.load(std::sync::atomic::Ordering::Relaxed));
    let instance =
        submit_routed(routing, id, CallJob { request, sink: Sink::Blocking(tx), cancel })?;
    let timeout = instance.call_timeout;
    drop(instance);
    let mut stream_type: Option<String> = None;
    let mut idle_until = std::time::Instant::now() + timeout;
    loop {
        let now = std::time::Instant::now();
        if now >= idle_until {
            return Err(DispatchError::Timeout(id.to_string(), timeout));
        }
        if parent_cancelled() {
            // `_guard` raises the callee's cancel flag on the way out.
            return Err(DispatchError::ClientGone(id.to_string()));
        }
        let event = match rx.recv_timeout(CLIENT_CHECK.min(idle_until - now)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(_) => return Err(DispatchError::Lost(id.to_string())),
            Ok(event) => event,
        };
        idle_until = std::time::Instant::now() + timeout;
        match event {
            Event::Begin(content_type) => stream_type = Some(content_type),
            Event::Chunk(chunk) => {
                if !on_chunk(&chunk) {
                    return Err(DispatchError::ClientGone(id.to_string()));
                }
            }
            Event::Done(Ok(tail)) => {
                return Ok(match stream_type {
                    Some(content_type) => Reply { status: 200, content_type, body: tail.body },
                    None => tail,
                })
            }
            Event::Done(Err(failure)) => return Err(DispatchError::Plugin(failure)),
        }
    }
}

impl DispatchError {
    /// The error kind and message, for the bus (which answers plugins, not HTTP clients).
    pub fn to_failure(&self) -> PluginFailure {
        let (kind, message) = match self {
            DispatchError::NotLoaded(id) => {
                (ErrorKind::NOT_FOUND, format!("plugin '{id}' is not loaded"))
            }
            DispatchError::Stopped(id) => {
                (ErrorKind::CONFLICT, format!("plugin '{id}' is stopped"))
            }
            DispatchError::Busy(id) => {
                (ErrorKind::UNAVAILABLE, format!("plugin '{id}' is busy: its queue is full"))
            }
            DispatchError::QueueBytes(id, limit) => (
                ErrorKind::UNAVAILABLE,
                format!("plugin '{id}' is busy: {}", crate::exec::queue_bytes_message(*limit)),
            ),
            DispatchError::Timeout(id, t) => (
                ErrorKind::TIMEOUT,
                format!("plugin '{id}' did not answer within {} ms", t.as_millis()),
            ),
            DispatchError::Plugin(f) => return f.clone(),
            DispatchError::ClientGone(id) => {
                (ErrorKind::CANCELLED, format!("the client of the call to '{id}' went away"))
            }
            DispatchError::Lost(id) => {
                (ErrorKind::INTERNAL, format!("plugin '{id}' dropped the call"))
            }
        };
        PluginFailure { kind, message }
    }
}

/// Why a call was refused by the byte limit of a plugin's queue (shared by the HTTP and bus
/// answers).
pub fn queue_bytes_message(limit: usize) -> String {
    format!(
        "the request bodies queued for it would pass its limit of {limit} bytes (--queue-bytes); try again"
    )
}
