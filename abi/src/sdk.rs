//! The safe side for plugin authors: a plain trait with defaults and small value types.
//! The adapter in this module turns an author's [`Plugin`] into the FFI [`PluginObject`]
//! and runs every entry point under `catch_unwind`, so a panic becomes an error value (and a
//! panic in the plugin's `Drop` is caught and ignored).

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};
use serde::{de::DeserializeOwned, Serialize};

use crate::ffi::{
    self, CallContextRef, CallKind, ChunkSink, ChunkSink_TO, ErrorKind, FfiCapability, FfiError,
    FfiManifest, FfiRequest, FfiResponse, FfiRoute, HostBox, LogLevel, PluginBox, PluginObject,
};

/// Adapts a closure to the host's chunk sink for [`Host::call_stream`].
struct ClosureSink<'f>(&'f mut dyn FnMut(&[u8]) -> bool);

impl ChunkSink for ClosureSink<'_> {
    fn chunk(&mut self, data: RSlice<'_, u8>) -> bool {
        // A panic must not unwind into the host: treat it as "stop".
        catch_unwind(AssertUnwindSafe(|| (self.0)(data.as_slice()))).unwrap_or(false)
    }
}

/// An error a plugin returns; the host maps its kind to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CONFLICT, message)
    }
    /// 413: the payload is over a limit; say which limit, its value and how to raise it.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PAYLOAD_TOO_LARGE, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNAVAILABLE, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INTERNAL, message)
    }
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::CANCELLED, "call cancelled: the client went away")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::bad_request(format!("invalid JSON: {e}"))
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        FfiError { kind: e.kind, message: e.message.into() }
    }
}

impl From<FfiError> for Error {
    fn from(e: FfiError) -> Self {
        Error { kind: e.kind, message: e.message.into_string() }
    }
}

/// One capability in a [`Manifest`].
#[derive(Debug, Clone, Default)]
pub struct Capability {
    pub name: String,
    pub description: String,
    pub input_schema: Option<serde_json::Value>,
    pub output_schema: Option<serde_json::Value>,
    pub streaming: bool,
    /// The API-key scope needed to invoke it over HTTP (`None` = "invoke").
    pub scope: Option<String>,
}

/// The input-schema keyword with which a capability declares its own request body limit
/// (see [`Manifest::max_body_bytes`]).
pub const MAX_BODY_KEYWORD: &str = "x-bkg-max-body-bytes";

/// What a plugin declares about itself. Build it with the chained methods.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<Capability>,
    /// Admin routes as (method, path), served under `/api/plugins/{id}/admin{path}`.
    pub routes: Vec<(String, String)>,
    pub route_prefix: Option<String>,
    pub config_schema: Option<serde_json::Value>,
    pub max_concurrency: u32,
    pub config_needs_restart: bool,
}

impl Manifest {
    /// `id` is the stable identity used for routing and hot-swap: `[a-z0-9_-]{1,64}`.
    pub fn new(id: &str, name: &str, version: &str) -> Self {
        Self { id: id.into(), name: name.into(), version: version.into(), ..Self::default() }
    }
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.into();
        self
    }
    pub fn capability(mut self, name: &str, description: &str) -> Self {
        self.capabilities.push(Capability {
            name: name.into(),
            description: description.into(),
            ..Capability::default()
        });
        self
    }
    /// A capability that may answer with a stream of chunks.
    pub fn streaming_capability(mut self, name: &str, description: &str) -> Self {
        self.capabilities.push(Capability {
            name: name.into(),
            description: description.into(),
            streaming: true,
            ..Capability::default()
        });
        self
    }
    /// A capability only keys with the `admin` scope may invoke over HTTP.
    pub fn admin_capability(mut self, name: &str, description: &str) -> Self {
        self.capabilities.push(Capability {
            name: name.into(),
            description: description.into(),
            scope: Some("admin".into()),
            ..Capability::default()
        });
        self
    }
    pub fn with_capability(mut self, capability: Capability) -> Self {
        self.capabilities.push(capability);
        self
    }
    pub fn route(mut self, method: &str, path: &str) -> Self {
        self.routes.push((method.to_ascii_uppercase(), path.into()));
        self
    }
    /// Claim a whole top-level path prefix such as `/v1`.
    pub fn route_prefix(mut self, prefix: &str) -> Self {
        self.route_prefix = Some(prefix.into());
        self
    }
    pub fn config_schema(mut self, schema: serde_json::Value) -> Self {
        self.config_schema = Some(schema);
        self
    }
    /// The plugin applies a new config only at start: the host restarts it to apply one.
    pub fn config_needs_restart(mut self) -> Self {
        self.config_needs_restart = true;
        self
    }
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = n;
        self
    }
    /// Let the named capability (declared before this call) take request bodies of up to
    /// `bytes` over HTTP instead of the host's default (`--max-body-bytes`, 4 MiB). Written
    /// into the capability's input schema as the keyword [`MAX_BODY_KEYWORD`], so hosts that
    /// predate it simply ignore it.
    ///
    /// # Panics
    /// If no capability of that name was declared before, or its input schema is not a JSON
    /// object: both are mistakes in the plugin's own manifest code.
    pub fn max_body_bytes(mut self, capability: &str, bytes: u64) -> Self {
        let c = self
            .capabilities
            .iter_mut()
            .find(|c| c.name == capability)
            .unwrap_or_else(|| panic!("max_body_bytes: no capability '{capability}' declared"));
        let schema = c.input_schema.get_or_insert_with(|| serde_json::json!({}));
        let object = schema.as_object_mut().unwrap_or_else(|| {
            panic!("max_body_bytes: the input schema of '{capability}' is not an object")
        });
        object.insert(MAX_BODY_KEYWORD.into(), bytes.into());
        self
    }

    fn into_ffi(self) -> FfiManifest {
        let schema = |s: Option<serde_json::Value>| -> RString {
            s.map(|v| v.to_string()).unwrap_or_default().into()
        };
        FfiManifest {
            id: self.id.into(),
            name: self.name.into(),
            version: self.version.into(),
            description: self.description.into(),
            capabilities: self
                .capabilities
                .into_iter()
                .map(|c| FfiCapability {
                    name: c.name.into(),
                    description: c.description.into(),
                    input_schema: schema(c.input_schema),
                    output_schema: schema(c.output_schema),
                    streaming: c.streaming,
                    scope: c.scope.unwrap_or_default().into(),
                })
                .collect(),
            routes: self
                .routes
                .into_iter()
                .map(|(method, path)| FfiRoute { method: method.into(), path: path.into() })
                .collect(),
            route_prefix: match self.route_prefix {
                Some(p) => ROption::RSome(p.into()),
                None => ROption::RNone,
            },
            config_schema: schema(self.config_schema),
            max_concurrency: self.max_concurrency,
            config_needs_restart: self.config_needs_restart,
        }
    }
}

/// A request as the plugin sees it: borrowed from the host for the duration of the call.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The capability name, or the route path for [`Plugin::route`].
    pub target: &'a str,
    pub method: &'a str,
    pub query: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// Parse the body as JSON (an empty body parses as `null`).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if self.body.is_empty() {
            return Ok(serde_json::from_slice(b"null")?);
        }
        Ok(serde_json::from_slice(self.body)?)
    }
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(self.body)
            .map_err(|e| Error::bad_request(format!("body is not UTF-8: {e}")))
    }
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn bytes(content_type: &str, body: Vec<u8>) -> Self {
        Self { status: 200, content_type: content_type.into(), body }
    }
    pub fn text(text: impl Into<String>) -> Self {
        Self::bytes("text/plain; charset=utf-8", text.into().into_bytes())
    }
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let body =
            serde_json::to_vec(value).map_err(|e| Error::internal(format!("serialize: {e}")))?;
        Ok(Self::bytes("application/json", body))
    }
    /// An empty answer (used as the end of a streamed one).
    pub fn empty() -> Self {
        Self::bytes("", Vec::new())
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    /// Parse the body as JSON.
    pub fn parse_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// The host's side of one call: cancellation and streaming.
pub struct Context<'a> {
    inner: CallContextRef<'a>,
}

impl<'a> Context<'a> {
    /// True once the client went away or the call timed out. Long work should check it.
    pub fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
    /// Switch this call to a streamed answer; send chunks with [`Stream::send`].
    /// What the call finally returns is sent as the last chunk.
    pub fn stream(&self, content_type: &str) -> Result<Stream<'_, 'a>, Error> {
        if self.inner.begin_stream(content_type.into()) {
            Ok(Stream { ctx: &self.inner })
        } else {
            Err(Error::cancelled())
        }
    }
}

/// A streamed answer in progress.
pub struct Stream<'s, 'a> {
    ctx: &'s CallContextRef<'a>,
}

impl Stream<'_, '_> {
    /// Send one chunk; fails with a cancelled error once the client is gone.
    pub fn send(&self, chunk: &[u8]) -> Result<(), Error> {
        if self.ctx.send_chunk(RSlice::from_slice(chunk)) {
            Ok(())
        } else {
            Err(Error::cancelled())
        }
    }
}

/// The plugin's handle on the host, given at creation. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostBox>,
}

impl Host {
    pub fn log(&self, level: LogLevel, target: &str, message: &str) {
        self.inner.log(level, target.into(), message.into());
    }
    pub fn info(&self, message: &str) {
        self.log(LogLevel::INFO, "", message);
    }
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::WARN, "", message);
    }
    pub fn error(&self, message: &str) {
        self.log(LogLevel::ERROR, "", message);
    }
    pub fn debug(&self, message: &str) {
        self.log(LogLevel::DEBUG, "", message);
    }
    /// The plugin's own data directory; it survives swaps and restarts.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.inner.data_dir().into_string())
    }
    /// The host's models folder (`<models_dir>/<org>/<name>/` holds one model's files).
    pub fn models_dir(&self) -> PathBuf {
        PathBuf::from(self.inner.models_dir().into_string())
    }
    /// Call another plugin's capability through the host's bus.
    pub fn call(
        &self,
        plugin: &str,
        capability: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, Error> {
        match self.inner.call(
            plugin.into(),
            capability.into(),
            content_type.into(),
            RSlice::from_slice(body),
        ) {
            RResult::ROk(r) => Ok(Response {
                status: r.status,
                content_type: r.content_type.into_string(),
                body: r.body.into_vec(),
            }),
            RResult::RErr(e) => Err(e.into()),
        }
    }
    /// Call another plugin's capability and take its streamed answer chunk by chunk as it
    /// comes (`on_chunk` returning false stops the call: the callee sees it cancelled, and this
    /// returns a `cancelled` error). Returns the answer's last part; a callee that does not
    /// stream answers whole here and `on_chunk` is never called.
    pub fn call_stream(
        &self,
        plugin: &str,
        capability: &str,
        content_type: &str,
        body: &[u8],
        mut on_chunk: impl FnMut(&[u8]) -> bool,
    ) -> Result<Response, Error> {
        let mut sink = ClosureSink(&mut on_chunk);
        let sink = ChunkSink_TO::from_ptr(&mut sink, TD_Opaque);
        match self.inner.call_streaming(
            plugin.into(),
            capability.into(),
            content_type.into(),
            RSlice::from_slice(body),
            sink,
        ) {
            RResult::ROk(r) => Ok(Response {
                status: r.status,
                content_type: r.content_type.into_string(),
                body: r.body.into_vec(),
            }),
            RResult::RErr(e) => Err(e.into()),
        }
    }
    /// Read a key from the plugin's own persistent key-value store.
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.inner.kv_get(key.into()) {
            RResult::ROk(v) => Ok(v.into_option().map(|v| v.into_vec())),
            RResult::RErr(e) => Err(e.into()),
        }
    }
    /// Write a key; it survives swaps, plugin restarts and host restarts.
    pub fn kv_put(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.inner.kv_put(key.into(), RSlice::from_slice(value)).into_result().map_err(Error::from)
    }
    /// Delete a key; true if it existed.
    pub fn kv_delete(&self, key: &str) -> Result<bool, Error> {
        self.inner.kv_delete(key.into()).into_result().map_err(Error::from)
    }
    /// The keys starting with `prefix`, sorted.
    pub fn kv_keys(&self, prefix: &str) -> Result<Vec<String>, Error> {
        match self.inner.kv_keys(prefix.into()) {
            RResult::ROk(keys) => Ok(keys.into_iter().map(RString::into_string).collect()),
            RResult::RErr(e) => Err(e.into()),
        }
    }

    /// Call another plugin's capability with a JSON value.
    pub fn call_json<T: Serialize + ?Sized>(
        &self,
        plugin: &str,
        capability: &str,
        body: &T,
    ) -> Result<Response, Error> {
        let body =
            serde_json::to_vec(body).map_err(|e| Error::internal(format!("serialize: {e}")))?;
        self.call(plugin, capability, "application/json", &body)
    }
}

/// The trait a plugin author implements. Only `manifest`, `new` and `invoke` are required.
///
/// Calls may run concurrently on several host threads, so methods take `&self`; keep mutable
/// state behind a `Mutex` or atomics. Threads the plugin starts must be joined in `stop`,
/// otherwise the library can never leave the host's memory.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Who the plugin is and what it offers; read before it is constructed.
    fn manifest() -> Manifest;
    /// Construct the plugin. Keep it cheap and side-effect free; do work in `start`.
    fn new(host: Host) -> Result<Self, Error>;
    fn start(&self) -> Result<(), Error> {
        Ok(())
    }
    fn stop(&self) -> Result<(), Error> {
        Ok(())
    }
    /// A free-form status report shown by the host's API.
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn configure(&self, _config: serde_json::Value) -> Result<(), Error> {
        Err(Error::unsupported("this plugin takes no config"))
    }
    /// Run a capability.
    fn invoke(
        &self,
        capability: &str,
        request: Request<'_>,
        ctx: &Context<'_>,
    ) -> Result<Response, Error>;
    /// Serve one of the plugin's routes (admin routes or its claimed prefix).
    fn route(&self, request: Request<'_>, _ctx: &Context<'_>) -> Result<Response, Error> {
        Err(Error::not_found(format!("no route {} {}", request.method, request.target)))
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    format!("plugin panicked: {text}")
}

/// Run author code, turning a panic into an error value.
fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> RResult<T, FfiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(payload) => {
            RResult::RErr(Error::new(ErrorKind::PANICKED, panic_message(payload)).into())
        }
    }
}

fn to_ffi_response(r: Response) -> FfiResponse {
    FfiResponse { status: r.status, content_type: r.content_type.into(), body: RVec::from(r.body) }
}

/// The author's plugin behind the FFI object. It is an `Option` only so that `Drop` can take
/// it out and drop it under `catch_unwind`: it is `Some` from construction until then.
struct Adapter<P: Plugin>(Option<P>);

impl<P: Plugin> Adapter<P> {
    fn new(plugin: P) -> Self {
        Adapter(Some(plugin))
    }
    fn plugin(&self) -> Result<&P, Error> {
        self.0.as_ref().ok_or_else(|| Error::internal("the plugin was already dropped"))
    }
}

impl<P: Plugin> Drop for Adapter<P> {
    /// The host drops the plugin object through an `extern "C"` function: a panic in the
    /// author's `Drop` must not unwind across it (that aborts the host). It is caught and
    /// ignored here (the panic hook has already printed it); what the plugin failed to free
    /// stays allocated.
    fn drop(&mut self) {
        if let Some(plugin) = self.0.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(plugin)));
        }
    }
}

impl<P: Plugin> PluginObject for Adapter<P> {
    fn start(&self) -> RResult<(), FfiError> {
        guard(|| self.plugin()?.start())
    }
    fn stop(&self) -> RResult<(), FfiError> {
        guard(|| self.plugin()?.stop())
    }
    fn status(&self) -> RString {
        match guard(|| Ok(self.plugin()?.status().to_string())) {
            RResult::ROk(s) => s.into(),
            RResult::RErr(e) => {
                serde_json::json!({ "error": e.message.as_str() }).to_string().into()
            }
        }
    }
    fn config(&self) -> RString {
        match guard(|| Ok(self.plugin()?.config().to_string())) {
            RResult::ROk(s) => s.into(),
            RResult::RErr(_) => "null".into(),
        }
    }
    fn configure(&self, config: RStr<'_>) -> RResult<(), FfiError> {
        guard(|| {
            let value: serde_json::Value = serde_json::from_str(config.as_str())?;
            self.plugin()?.configure(value)
        })
    }
    fn call(
        &self,
        request: &FfiRequest,
        ctx: CallContextRef<'_>,
    ) -> RResult<FfiResponse, FfiError> {
        guard(|| {
            let req = Request {
                target: request.target.as_str(),
                method: request.method.as_str(),
                query: request.query.as_str(),
                content_type: request.content_type.as_str(),
                body: request.body.as_slice(),
            };
            let ctx = Context { inner: ctx };
            let plugin = self.plugin()?;
            let response = match request.kind {
                CallKind::Capability => plugin.invoke(req.target, req, &ctx)?,
                CallKind::Route => plugin.route(req, &ctx)?,
            };
            Ok(to_ffi_response(response))
        })
    }
}

#[doc(hidden)]
pub extern "C" fn manifest_entry<P: Plugin>() -> RResult<FfiManifest, FfiError> {
    guard(|| Ok(P::manifest().into_ffi()))
}

#[doc(hidden)]
pub extern "C" fn create_entry<P: Plugin>(host: HostBox) -> RResult<PluginBox, FfiError> {
    guard(|| {
        let plugin = P::new(Host { inner: Arc::new(host) })?;
        Ok(ffi::PluginObject_TO::from_value(Adapter::new(plugin), TD_Opaque))
    })
}

/// Build a root module for `P` at run time (for in-process use, e.g. benchmarks comparing a
/// plugin with and without the library boundary). Leaks one small allocation per call;
/// [`crate::export_plugin!`] uses a static instead.
#[doc(hidden)]
pub fn root_module<P: Plugin>() -> crate::ffi::PluginModRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    crate::ffi::PluginMod { manifest: manifest_entry::<P>, create: create_entry::<P> }
        .leak_into_prefix()
}
