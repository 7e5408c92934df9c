//! Issue #2, measurement 1: the cost of one call through the plugin ABI.
//!
//! Loads the release build of the noop fixture (`target/release/libfixture_noop.so`, the
//! smallest plugin; `BKG_ECHO_SO=path` measures another one, e.g. the echo fixture) with the
//! host's own loader, constructs the plugin on this thread and times millions of calls of
//! its no-op capability (`noop`) through the `PluginObject` trait object, the way the host's
//! workers call it (a fresh `CallContext` object per call, the answer dropped). The baseline
//! is a direct `Box<dyn Trait>` call to an in-process no-op doing the equivalent work: match
//! on the capability string, return an empty response struct.
//!
//! As a breakdown it also times the same SDK adapter compiled into this binary (the
//! `bkg_abi` plugin machinery without `dlopen`), which separates the cost of the adapter and
//! the ABI-stable types from the cost of the library boundary itself.
//!
//! ```text
//! cargo build --release -p fixture-noop
//! cargo bench -p bkg-host --bench abi_call
//! ```
//!
//! `BKG_BENCH_ITERS` (calls per run, default 5,000,000) and `BKG_BENCH_RUNS` (runs per
//! variant, default 9) tune it; the figure reported is the median of the runs.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};
use bkg_abi::ffi::{
    CallContext, CallContext_TO, CallKind, ErrorKind, FfiError, FfiRequest, FfiResponse, HostApi,
    HostApi_TO, LogLevel, PluginBox,
};
use bkg_abi::{Context, Error, Host, Manifest, Plugin, Request, Response};
use bkg_host::exec;
use bkg_host::loader::{LoadedLibrary, Residency};

const TARGET_RATIO: f64 = 2.0;

// ---- the host side the plugin sees -------------------------------------------------------

/// A host handle that does nothing.
struct BenchHost;

impl HostApi for BenchHost {
    fn log(&self, _level: LogLevel, _target: RStr<'_>, _message: RStr<'_>) {}
    fn data_dir(&self) -> RString {
        RString::new()
    }
    fn models_dir(&self) -> RString {
        RString::new()
    }
    fn call(
        &self,
        _plugin: RStr<'_>,
        _capability: RStr<'_>,
        _content_type: RStr<'_>,
        _body: RSlice<'_, u8>,
    ) -> RResult<FfiResponse, FfiError> {
        RResult::RErr(FfiError {
            kind: ErrorKind::UNSUPPORTED,
            message: "no bus in the benchmark".into(),
        })
    }
    fn call_streaming(
        &self,
        _plugin: RStr<'_>,
        _capability: RStr<'_>,
        _content_type: RStr<'_>,
        _body: RSlice<'_, u8>,
        _sink: bkg_abi::ffi::ChunkSinkMut<'_>,
    ) -> RResult<FfiResponse, FfiError> {
        RResult::RErr(FfiError {
            kind: ErrorKind::UNSUPPORTED,
            message: "no bus in the benchmark".into(),
        })
    }
    fn kv_get(&self, _key: RStr<'_>) -> RResult<ROption<RVec<u8>>, FfiError> {
        RResult::ROk(ROption::RNone)
    }
    fn kv_put(&self, _key: RStr<'_>, _value: RSlice<'_, u8>) -> RResult<(), FfiError> {
        RResult::ROk(())
    }
    fn kv_delete(&self, _key: RStr<'_>) -> RResult<bool, FfiError> {
        RResult::ROk(false)
    }
    fn kv_keys(&self, _prefix: RStr<'_>) -> RResult<RVec<RString>, FfiError> {
        RResult::ROk(RVec::new())
    }
}

/// A call context that is never cancelled and refuses to stream.
struct BenchContext;

impl CallContext for BenchContext {
    fn is_cancelled(&self) -> bool {
        false
    }
    fn begin_stream(&self, _content_type: RStr<'_>) -> bool {
        false
    }
    fn send_chunk(&self, _chunk: RSlice<'_, u8>) -> bool {
        false
    }
}

fn host_box() -> bkg_abi::ffi::HostBox {
    HostApi_TO::from_value(BenchHost, TD_Opaque)
}

// ---- the baseline: a plain Rust trait object ------------------------------------------------

struct DirectRequest {
    target: String,
    #[allow(dead_code)]
    method: String,
    #[allow(dead_code)]
    query: String,
    content_type: String,
    body: Vec<u8>,
}

struct DirectResponse {
    #[allow(dead_code)]
    status: u16,
    #[allow(dead_code)]
    content_type: String,
    #[allow(dead_code)]
    body: Vec<u8>,
}

#[allow(dead_code)]
struct DirectError {
    status: u16,
    message: String,
}

#[allow(dead_code)] // the no-op never asks; kept to mirror the ABI signature
trait DirectContext {
    fn is_cancelled(&self) -> bool;
}

impl DirectContext for BenchContext {
    fn is_cancelled(&self) -> bool {
        false
    }
}

trait DirectPlugin {
    fn call(
        &self,
        request: &DirectRequest,
        ctx: &dyn DirectContext,
    ) -> Result<DirectResponse, DirectError>;
}

/// The same capability table as the echo fixture, in its order (only `noop` is called; the
/// other arms keep the string comparisons the plugin makes the same).
struct DirectNoop;

impl DirectPlugin for DirectNoop {
    fn call(
        &self,
        request: &DirectRequest,
        _ctx: &dyn DirectContext,
    ) -> Result<DirectResponse, DirectError> {
        let ok = |content_type: &str, body: Vec<u8>| DirectResponse {
            status: 200,
            content_type: content_type.to_string(),
            body,
        };
        match request.target.as_str() {
            "echo" => Ok(ok(&request.content_type, request.body.clone())),
            "noop" => {
                Ok(DirectResponse { status: 200, content_type: String::new(), body: Vec::new() })
            }
            "greet" => Ok(ok("text/plain", b"hello".to_vec())),
            "version" => Ok(ok("application/json", b"{\"version\":\"1.0.0\"}".to_vec())),
            "relay" | "log" | "datadir" | "kv-put" | "kv-get" | "kv-keys" | "kv-delete"
            | "count" => Ok(ok("text/plain", request.target.as_bytes().to_vec())),
            other => Err(DirectError { status: 404, message: format!("no capability {other}") }),
        }
    }
}

// ---- the breakdown: the SDK adapter compiled in-process -------------------------------------

/// The echo fixture's capability table again, behind the SDK's `Plugin` trait.
struct InProcessNoop;

impl Plugin for InProcessNoop {
    fn manifest() -> Manifest {
        Manifest::new("inproc", "In-process no-op", "1.0.0").capability("noop", "nothing")
    }
    fn new(_host: Host) -> Result<Self, Error> {
        Ok(InProcessNoop)
    }
    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        _ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        match capability {
            "echo" => Ok(Response::bytes(req.content_type, req.body.to_vec())),
            "noop" => Ok(Response::empty()),
            "greet" => Ok(Response::text("hello")),
            "version" => {
                Ok(Response::bytes("application/json", b"{\"version\":\"1.0.0\"}".to_vec()))
            }
            "relay" | "log" | "datadir" | "kv-put" | "kv-get" | "kv-keys" | "kv-delete"
            | "count" => Ok(Response::text(capability)),
            other => Err(Error::not_found(format!("no capability {other}"))),
        }
    }
}

// ---- timing ---------------------------------------------------------------------------------

fn ns_per_call(iters: u64, mut call: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        call();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn abi_calls(plugin: &PluginBox, request: &FfiRequest, iters: u64) -> f64 {
    let ctx = BenchContext;
    ns_per_call(iters, || {
        let ctx_obj = CallContext_TO::from_ptr(black_box(&ctx), TD_Opaque);
        let answer = black_box(plugin).call(black_box(request), ctx_obj);
        drop(black_box(answer));
    })
}

fn direct_calls(plugin: &dyn DirectPlugin, request: &DirectRequest, iters: u64) -> f64 {
    let ctx = BenchContext;
    ns_per_call(iters, || {
        let ctx: &dyn DirectContext = black_box(&ctx);
        let answer = black_box(plugin).call(black_box(request), ctx);
        drop(black_box(answer));
    })
}

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ has a parent")
            .join("target")
    })
}

/// The release build of the plugin to measure: the `noop` fixture (the smallest plugin, so the
/// figure is the boundary's cost, not a large plugin's own code), or `$BKG_ECHO_SO` (e.g. the
/// echo fixture, whose big `invoke` adds about 7 ns of its own).
fn echo_library() -> PathBuf {
    if let Some(path) = std::env::var_os("BKG_ECHO_SO") {
        return PathBuf::from(path);
    }
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "--quiet", "--release", "-p", "fixture-noop"])
        .status()
        .expect("run cargo build --release -p fixture-noop");
    assert!(status.success(), "building the release noop fixture failed");
    let path = target_dir().join("release").join(format!(
        "{}fixture_noop.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    ));
    assert!(path.is_file(), "no release noop fixture at {}", path.display());
    path
}

fn construct(module: bkg_abi::ffi::PluginModRef) -> PluginBox {
    match (module.manifest())() {
        RResult::ROk(m) => assert!(m.capabilities.iter().any(|c| c.name.as_str() == "noop")),
        RResult::RErr(e) => panic!("manifest failed: {}", e.message),
    }
    match (module.create())(host_box()) {
        RResult::ROk(p) => p,
        RResult::RErr(e) => panic!("create failed: {}", e.message),
    }
}

fn main() {
    let iters = env_u64("BKG_BENCH_ITERS", 5_000_000);
    let runs = env_u64("BKG_BENCH_RUNS", 9).max(1) as usize;

    let source = echo_library();
    let shadow = tempfile::tempdir().expect("temp dir");
    let library = LoadedLibrary::open(&source, shadow.path(), 1).expect("load the plugin");
    let plugin = construct(library.module());
    let in_process = construct(bkg_abi::__private::root_module::<InProcessNoop>());

    let request = exec::request(CallKind::Capability, "noop", "POST", "", "", Vec::new());
    let direct_request = DirectRequest {
        target: "noop".into(),
        method: "POST".into(),
        query: String::new(),
        content_type: String::new(),
        body: Vec::new(),
    };
    let direct: Box<dyn DirectPlugin> = Box::new(DirectNoop);

    // Both must answer before they are timed.
    match plugin.call(&request, CallContext_TO::from_ptr(&BenchContext, TD_Opaque)) {
        RResult::ROk(r) => assert!(r.status == 200 && r.body.is_empty()),
        RResult::RErr(e) => panic!("noop failed: {}", e.message),
    }
    assert!(direct.call(&direct_request, &BenchContext).is_ok_and(|r| r.body.is_empty()));

    // Warm up, then interleave the variants run by run so drift affects all alike.
    abi_calls(&plugin, &request, iters / 10);
    abi_calls(&in_process, &request, iters / 10);
    direct_calls(direct.as_ref(), &direct_request, iters / 10);
    let (mut abi, mut inproc, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        abi.push(abi_calls(&plugin, &request, iters));
        inproc.push(abi_calls(&in_process, &request, iters));
        plain.push(direct_calls(direct.as_ref(), &direct_request, iters));
    }

    drop(plugin);
    drop(in_process);
    let residency = library.close();

    let (a, i, d) = (median(&abi), median(&inproc), median(&plain));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "abi_call: {runs} runs x {iters} calls of capability \"noop\" (median ns/call, min in brackets)"
    );
    println!("abi_call: direct Box<dyn Trait> call        {d:>7.2} ns  [{:.2}]", min(&plain));
    println!("abi_call: SDK adapter in-process (no dlopen)  {i:>7.2} ns  [{:.2}]", min(&inproc));
    println!("abi_call: loaded plugin through the ABI     {a:>7.2} ns  [{:.2}]", min(&abi));
    println!(
        "abi_call: library closed: {}",
        match residency {
            Residency::Unloaded => "unloaded",
            Residency::Pinned => "pinned",
            Residency::Unknown => "unknown",
        }
    );
    let ratio = a / d;
    println!(
        "abi_call: RESULT ABI/direct = {ratio:.2}x ({:+.2} ns per call; target < {TARGET_RATIO}x: {})",
        a - d,
        if ratio < TARGET_RATIO { "met" } else { "NOT met" }
    );
}
