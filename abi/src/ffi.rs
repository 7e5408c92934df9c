//! The FFI contract: every type here crosses the library boundary and is covered by
//! abi_stable's layout check when the host loads a plugin.
//!
//! Plugin authors do not use this module directly; they implement [`crate::Plugin`] and
//! call [`crate::export_plugin!`]. The host uses it to talk to a loaded library.

#![allow(non_local_definitions)] // emitted by the sabi_trait macro expansion

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// A class of failure, shaped like an HTTP status so the host can map it directly.
/// A newtype over `u16` (not an enum) so that a newer plugin may send a kind an older
/// host does not know without undefined behaviour; unknown kinds are treated as 500.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u16);

impl ErrorKind {
    pub const BAD_REQUEST: Self = Self(400);
    pub const NOT_FOUND: Self = Self(404);
    pub const CONFLICT: Self = Self(409);
    /// The request's payload is over a limit (a body, a decoded image); the message names it.
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    pub const UNPROCESSABLE: Self = Self(422);
    /// The call was cancelled because its client went away.
    pub const CANCELLED: Self = Self(499);
    pub const INTERNAL: Self = Self(500);
    pub const UNSUPPORTED: Self = Self(501);
    pub const UNAVAILABLE: Self = Self(503);
    pub const TIMEOUT: Self = Self(504);
    /// The plugin's code panicked; the SDK caught it at the boundary.
    pub const PANICKED: Self = Self(590);
    /// The plugin's child process died during the call (process isolation; HTTP 503). Set
    /// by the host, never by a plugin.
    pub const PLUGIN_CRASHED: Self = Self(591);

    /// A short machine-readable code for the kind.
    pub fn code(self) -> &'static str {
        match self.0 {
            400 => "bad_request",
            404 => "not_found",
            409 => "conflict",
            413 => "payload_too_large",
            422 => "unprocessable",
            499 => "cancelled",
            501 => "unsupported",
            503 => "unavailable",
            504 => "timeout",
            590 => "plugin_panicked",
            591 => "plugin_crashed",
            _ => "plugin_error",
        }
    }
}

/// An error value returned across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiError {
    pub kind: ErrorKind,
    pub message: RString,
}

/// One capability a plugin offers to the host's bus and REST API.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiCapability {
    pub name: RString,
    pub description: RString,
    /// JSON Schema of the request body, or empty.
    pub input_schema: RString,
    /// JSON Schema of the response body, or empty.
    pub output_schema: RString,
    /// Whether the capability may answer with a stream of chunks.
    pub streaming: bool,
    /// The API-key scope a client needs to invoke it over HTTP: "" or "invoke" (the
    /// default) or "admin". Calls through the host's bus are not checked.
    pub scope: RString,
}

/// An admin route a plugin serves under `/api/plugins/{id}/admin{path}`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiRoute {
    pub method: RString,
    pub path: RString,
}

/// What a plugin says about itself before it is constructed.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiManifest {
    pub id: RString,
    pub name: RString,
    pub version: RString,
    pub description: RString,
    pub capabilities: RVec<FfiCapability>,
    pub routes: RVec<FfiRoute>,
    /// A top-level path prefix the plugin serves entirely (e.g. `/v1`).
    pub route_prefix: ROption<RString>,
    /// JSON Schema of the plugin's config, or empty.
    pub config_schema: RString,
    /// How many calls the host may run at once on this plugin (0 = host default).
    pub max_concurrency: u32,
    /// A new config takes effect only through a restart: the host stops the plugin, calls
    /// `configure`, and starts it again.
    pub config_needs_restart: bool,
}

/// Whether a call targets a capability or one of the plugin's routes.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Capability,
    Route,
}

/// A request, owned by the host and lent to the plugin for the duration of a call.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct FfiRequest {
    pub kind: CallKind,
    /// The capability name, or the route path (without the mount prefix).
    pub target: RString,
    pub method: RString,
    pub query: RString,
    pub content_type: RString,
    pub body: RVec<u8>,
}

/// A complete (non-streamed) answer, or the tail of a streamed one.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct FfiResponse {
    pub status: u16,
    pub content_type: RString,
    pub body: RVec<u8>,
}

/// Log levels for [`HostApi::log`].
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogLevel(pub u8);

impl LogLevel {
    pub const ERROR: Self = Self(1);
    pub const WARN: Self = Self(2);
    pub const INFO: Self = Self(3);
    pub const DEBUG: Self = Self(4);
    pub const TRACE: Self = Self(5);
}

/// The host's side of a running call: cancellation and streaming. Implemented by the host.
#[sabi_trait]
pub trait CallContext {
    /// True once the client went away or the call timed out.
    fn is_cancelled(&self) -> bool;
    /// Switch this call to a streamed answer; false if the client is gone.
    fn begin_stream(&self, content_type: RStr<'_>) -> bool;
    /// Send one chunk of a streamed answer; false if the client is gone.
    #[sabi(last_prefix_field)]
    fn send_chunk(&self, chunk: RSlice<'_, u8>) -> bool;
}

/// What the host offers a plugin for its whole life. Implemented by the host.
#[sabi_trait]
pub trait HostApi: Send + Sync {
    /// Append a line to the plugin's log.
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);
    /// The plugin's own data directory (created by the host).
    fn data_dir(&self) -> RString;
    /// Call another plugin's capability through the host's bus.
    fn call(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
    ) -> RResult<FfiResponse, FfiError>;
    /// Read a key from the plugin's own persistent key-value store.
    fn kv_get(&self, key: RStr<'_>) -> RResult<ROption<RVec<u8>>, FfiError>;
    /// Write a key (it survives swaps, plugin restarts and host restarts).
    fn kv_put(&self, key: RStr<'_>, value: RSlice<'_, u8>) -> RResult<(), FfiError>;
    /// Delete a key; true if it existed.
    fn kv_delete(&self, key: RStr<'_>) -> RResult<bool, FfiError>;
    /// The keys starting with `prefix`, sorted.
    #[sabi(last_prefix_field)]
    fn kv_keys(&self, prefix: RStr<'_>) -> RResult<RVec<RString>, FfiError>;
    /// The host's models folder: models downloaded through the host (and those laid out by
    /// `scripts/fetch-models.sh`) live in `<models_dir>/<org>/<name>/`.
    ///
    /// This method and `call_streaming` were added after 0.1.0's first cut: they changed the
    /// vtable's layout, and the host refuses libraries built before them with a layout error
    /// ("too many fields"); rebuild such plugins against this crate.
    fn models_dir(&self) -> RString;
    /// Call another plugin's capability and receive a streamed answer chunk by chunk, as it
    /// comes: `sink` gets each chunk on the calling thread, and answering false stops the call
    /// (the callee sees its call cancelled). Returns the answer's last part (for a callee that
    /// does not stream: its whole answer, and `sink` is never called).
    fn call_streaming(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
        sink: ChunkSinkMut<'_>,
    ) -> RResult<FfiResponse, FfiError>;
}

/// Receives the chunks of a streamed bus call ([`HostApi::call_streaming`]). Implemented by
/// the SDK around the calling plugin's closure.
#[sabi_trait]
pub trait ChunkSink {
    /// One chunk; false stops the call.
    #[sabi(last_prefix_field)]
    fn chunk(&mut self, data: RSlice<'_, u8>) -> bool;
}

/// A chunk sink as the host holds it for one call.
pub type ChunkSinkMut<'a> = ChunkSink_TO<'a, abi_stable::sabi_types::RMut<'a, ()>>;

/// A host handle as the plugin holds it.
pub type HostBox = HostApi_TO<'static, RBox<()>>;
/// A call context as the plugin sees it during one call.
pub type CallContextRef<'a> = CallContext_TO<'a, abi_stable::sabi_types::RRef<'a, ()>>;

/// The plugin object. Implemented by the SDK's adapter around an author's [`crate::Plugin`].
#[sabi_trait]
pub trait PluginObject: Send + Sync {
    fn start(&self) -> RResult<(), FfiError>;
    fn stop(&self) -> RResult<(), FfiError>;
    /// The plugin's own status report, as JSON.
    fn status(&self) -> RString;
    /// The current config, as JSON.
    fn config(&self) -> RString;
    /// Apply a new config (JSON).
    fn configure(&self, config: RStr<'_>) -> RResult<(), FfiError>;
    /// Run one call: a capability or a route.
    #[sabi(last_prefix_field)]
    fn call(&self, request: &FfiRequest, ctx: CallContextRef<'_>)
        -> RResult<FfiResponse, FfiError>;
}

/// A constructed plugin as the host holds it.
pub type PluginBox = PluginObject_TO<'static, RBox<()>>;

/// The root module every plugin library exports (through [`crate::export_plugin!`]).
///
/// A prefix type: fields may only be added after `create`, in a new minor version (abi_stable
/// lets an older host load a library with more fields, but refuses a library with fewer fields
/// than the host's: a new field locks out every plugin built before it).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's manifest; read before the plugin is constructed.
    pub manifest: extern "C" fn() -> RResult<FfiManifest, FfiError>,
    /// Construct the plugin object.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(host: HostBox) -> RResult<PluginBox, FfiError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "bkg_plugin";
    const NAME: &'static str = "bkg_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
