//! The HTTP layer: the only module that knows actix-web and JSON error shapes.

use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use bkg_abi::ffi::{CallKind, ErrorKind};
use serde::Serialize;

use crate::dispatch::Routing;
use crate::dispatch::{self, Answer, DispatchError};
use crate::exec::{self, Control, Event};

const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
use crate::logs::{Level, LogHub};
use crate::openapi::{ErrorSchema, EventListSchema, LogLinesSchema, PluginListSchema};
use crate::registry::{Action, PluginView, RegistryError, RegistryHandle};
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::validate;
use std::sync::Arc;

/// Shared state of the HTTP layer.
pub struct AppState {
    pub registry: RegistryHandle,
    pub routing: Arc<Routing>,
    pub store: Arc<Store>,
    pub logs: Arc<LogHub>,
    pub telemetry: Arc<Telemetry>,
    pub metrics: crate::metrics::Sources,
    pub auth: Arc<crate::auth::Auth>,
}

/// An error answer: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Extra machine-readable detail (e.g. the failing fields of a config).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), details: None }
    }
    fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            error: ErrorInner {
                code: &self.code,
                message: &self.message,
                details: self.details.as_ref(),
            },
        })
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::NotLoaded(id) => {
                ApiError::not_found(format!("plugin '{id}' is not loaded"))
            }
            DispatchError::Stopped(id) => ApiError::new(
                StatusCode::CONFLICT,
                "plugin_stopped",
                format!(
                    "plugin '{id}' is stopped; start it with POST /api/core/plugins/{id}/start"
                ),
            ),
            DispatchError::Busy(id) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("plugin '{id}' is busy: its call queue is full, try again"),
            ),
            DispatchError::Timeout(id, t) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("plugin '{id}' did not answer within {} ms", t.as_millis()),
            ),
            DispatchError::ClientGone(id) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "cancelled",
                format!("the client of the call to plugin '{id}' went away"),
            ),
            DispatchError::Lost(id) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("plugin '{id}' dropped the call without answering"),
            ),
            DispatchError::Plugin(f) => {
                let status = if f.kind == ErrorKind::PANICKED {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::from_u16(f.kind.0)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                };
                let status = if status.as_u16() == 499 { StatusCode::BAD_REQUEST } else { status };
                ApiError::new(status, f.kind.code(), f.message)
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotLoaded(_) => ApiError::not_found(e.to_string()),
            RegistryError::Failed(m) => ApiError::new(StatusCode::CONFLICT, "lifecycle_failed", m),
            RegistryError::Rejected(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "config_rejected", m)
            }
            RegistryError::Gone => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string())
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A duplicate of the connection's socket, kept so a handler waiting on a plugin can tell
/// whether the client went away (actix-web does not drop handlers on disconnect).
pub struct PeerSocket(std::net::TcpStream);

impl PeerSocket {
    /// True once the peer has closed its side and nothing is left to read. The socket is
    /// non-blocking (tokio set it so), so this never waits.
    fn closed(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.0.peek(&mut byte), Ok(0))
    }
}

/// `on_connect` hook: keep a duplicate of each TCP connection's socket.
pub fn remember_peer(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd;
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            ext.insert(std::sync::Arc::new(PeerSocket(std::net::TcpStream::from(fd))));
        }
    }
}

fn peer_of(req: &HttpRequest) -> Option<Arc<PeerSocket>> {
    req.conn_data::<Arc<PeerSocket>>().cloned()
}

/// Call a plugin with this HTTP request's method, query, content type and body.
async fn call_plugin(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    kind: CallKind,
    target: &str,
    body: &Bytes,
) -> ApiResult<HttpResponse> {
    let request = exec::request(
        kind,
        target,
        req.method().as_str(),
        req.query_string(),
        &content_type(req),
        body.to_vec(),
    );
    let peer = peer_of(req);
    let gone = move || peer.as_ref().is_some_and(|p| p.closed());
    Ok(respond(dispatch::call(&state.routing, id, request, gone).await?))
}

/// A plugin's view plus its live call counters.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginDetail {
    #[serde(flatten)]
    view: PluginView,
    calls: Option<CallCounters>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CallCounters {
    total: u64,
    errors: u64,
    rejected: u64,
    in_flight: usize,
}

fn detail(state: &AppState, view: PluginView) -> PluginDetail {
    let calls = state.routing.get(&view.id).filter(|i| i.generation == view.generation).map(|i| {
        let s = i.stats();
        use std::sync::atomic::Ordering::Relaxed;
        CallCounters {
            total: s.calls.load(Relaxed),
            errors: s.errors.load(Relaxed),
            rejected: s.rejected.load(Relaxed),
            in_flight: i.in_flight(),
        }
    });
    PluginDetail { view, calls }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/api/core/plugins", tag = "plugins", security(("bearer" = [])),
    params(("all" = Option<bool>, Query, description = "include unloaded plugins")),
    responses((status = 200, description = "every plugin", body = PluginListSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
async fn list_plugins(state: Data<AppState>, q: web::Query<ListQuery>) -> HttpResponse {
    let plugins: Vec<PluginDetail> = state
        .registry
        .views()
        .into_iter()
        .filter(|v| q.all || v.state != crate::registry::PluginState::Unloaded)
        .map(|v| detail(&state, v))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "plugins": plugins }))
}

#[utoipa::path(get, path = "/api/core/plugins/{id}", tag = "plugins", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    responses((status = 200, description = "one plugin", body = PluginDetail), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
async fn get_plugin(state: Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let view =
        state.registry.view(&id).ok_or_else(|| ApiError::not_found(format!("no plugin '{id}'")))?;
    Ok(HttpResponse::Ok().json(detail(&state, view)))
}

#[utoipa::path(get, path = "/api/core/plugins/{id}/status", tag = "plugins", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    responses((status = 200, description = "the plugin's own status report", body = Object), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 504, description = "the plugin did not answer", body = ErrorSchema)))]
/// The plugin's own status report (its `status` entry point), run on its threads.
async fn plugin_status(state: Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let instance = state
        .routing
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("plugin '{id}' is not loaded")))?;
    let report = web::block(move || instance.control(Control::Status, STATUS_TIMEOUT))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|f| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                f.kind.code(),
                format!("status: {}", f.message),
            )
        })?;
    let value: serde_json::Value =
        serde_json::from_str(&report).unwrap_or(serde_json::Value::String(report));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id.as_str(), "status": value })))
}

/// Run a store query off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> ApiResult<T> {
    web::block(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

const CONFIG_HISTORY: i64 = 20;

#[utoipa::path(get, path = "/api/core/plugins/{id}/config", tag = "config", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    responses((status = 200, description = "schema, current config, version, history", body = Object), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
/// `GET /api/core/plugins/{id}/config`: schema, current config and recent history.
async fn get_config(state: Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let view =
        state.registry.view(&id).ok_or_else(|| ApiError::not_found(format!("no plugin '{id}'")))?;
    let store = state.store.clone();
    let key = id.clone();
    let (record, history) =
        blocking(move || Ok((store.plugin(&key)?, store.config_history(&key, CONFIG_HISTORY)?)))
            .await?;
    let stored = record.as_ref().and_then(|r| r.config.clone());
    // Without a stored config, show what the plugin reports (its defaults).
    let (config, source) = match stored {
        Some(c) => (c, "stored"),
        None => match state.routing.get(&id) {
            Some(instance) => {
                let report = web::block(move || instance.control(Control::Config, STATUS_TIMEOUT))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .unwrap_or_else(|_| "null".into());
                (serde_json::from_str(&report).unwrap_or(serde_json::Value::Null), "plugin")
            }
            None => (serde_json::Value::Null, "none"),
        },
    };
    let history: Vec<serde_json::Value> = history
        .into_iter()
        .map(|(entry, value)| {
            serde_json::json!({
                "version": entry.version, "actor": entry.actor, "at_ms": entry.at_ms, "config": value,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id,
        "schema": view.config_schema,
        "config": config,
        "source": source,
        "version": record.map_or(0, |r| r.config_version),
        "history": history,
    })))
}

#[utoipa::path(post, path = "/api/core/plugins/{id}/config", tag = "config", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    request_body(content = Object, description = "the new config (JSON)", content_type = "application/json"),
    responses((status = 200, description = "applied and stored", body = Object),
    (status = 400, description = "malformed JSON", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 409, description = "the plugin takes no config", body = ErrorSchema),
    (status = 422, description = "invalid config (details.errors names every failing path) or refused by the plugin", body = ErrorSchema)))]
/// `POST /api/core/plugins/{id}/config`: validate, apply live, persist.
async fn set_config(
    state: Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
) -> ApiResult<HttpResponse> {
    use actix_web::HttpMessage as _;
    let actor = req
        .extensions()
        .get::<crate::auth::Principal>()
        .map_or_else(|| "api".to_string(), |p| p.actor());
    let id = id.into_inner();
    let config = body.into_inner();
    let instance = state
        .routing
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("plugin '{id}' is not loaded")))?;
    let Some(schema) = instance.manifest.config_schema.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_config",
            format!("plugin '{id}' declares no config schema, so it takes no config"),
        ));
    };
    drop(instance);
    match validate::check(&schema, &config) {
        Ok(()) => {}
        Err(validate::Invalid::Schema(e)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "bad_schema",
                format!("plugin '{id}' declares an invalid config schema: {e}"),
            ))
        }
        Err(validate::Invalid::Fields(errors)) => {
            let summary: Vec<String> = errors
                .iter()
                .map(|e| {
                    format!("{}: {}", if e.path.is_empty() { "/" } else { &e.path }, e.message)
                })
                .collect();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                format!("the config does not match the plugin's schema: {}", summary.join("; ")),
            )
            .with_details(serde_json::json!({ "errors": errors })));
        }
    }
    let version = state.registry.configure(&id, config.clone(), &actor).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "id": id, "version": version, "config": config })))
}

#[derive(serde::Deserialize)]
struct LogQuery {
    tail: Option<usize>,
    level: Option<String>,
}

impl LogQuery {
    fn parse(&self, default_tail: usize) -> ApiResult<(usize, Level)> {
        let level = match self.level.as_deref() {
            None | Some("") => Level::Trace,
            Some(text) => Level::parse(text).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("unknown level '{text}': use error, warn, info, debug or trace"),
                )
            })?,
        };
        Ok((self.tail.unwrap_or(default_tail).min(crate::logs::RING_LINES), level))
    }
}

#[utoipa::path(get, path = "/api/core/plugins/{id}/logs", tag = "logs", security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo"), ("tail" = Option<usize>, Query, description = "lines (default 200, at most 2000)"),
      ("level" = Option<String>, Query, description = "error, warn, info, debug or trace")),
    responses((status = 200, description = "recent lines, oldest first", body = LogLinesSchema),
    (status = 400, description = "bad level", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
/// `GET /api/core/plugins/{id}/logs?tail=N&level=L`: recent lines, oldest first.
async fn get_logs(
    state: Data<AppState>,
    id: web::Path<String>,
    q: web::Query<LogQuery>,
) -> ApiResult<HttpResponse> {
    let (tail, level) = q.parse(200)?;
    if state.registry.view(&id).is_none() {
        return Err(ApiError::not_found(format!("no plugin '{id}'")));
    }
    let lines = state.logs.tail(&id, tail, level);
    let lines: Vec<&crate::logs::LogLine> = lines.iter().map(|l| &**l).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id.as_str(), "lines": lines })))
}

#[utoipa::path(get, path = "/ws/core/plugins/{id}/logs", tag = "logs", security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo"), ("tail" = Option<usize>, Query, description = "lines replayed first (default 100)"),
      ("level" = Option<String>, Query, description = "error, warn, info, debug or trace"),
      ("access_token" = Option<String>, Query, description = "API key, for clients that cannot send headers")),
    responses((status = 101, description = "WebSocket: JSON log lines, or {\"dropped\": n} when the client was too slow"),
    (status = 400, description = "not a WebSocket request", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
/// `GET /ws/core/plugins/{id}/logs?tail=N&level=L` (WebSocket): the tail, then live lines as
/// JSON text messages. A client too slow to keep up gets `{"dropped": n}` instead of lines.
async fn ws_logs(
    state: Data<AppState>,
    id: web::Path<String>,
    q: web::Query<LogQuery>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let (tail, level) = q.parse(100)?;
    let id = id.into_inner();
    if state.registry.view(&id).is_none() {
        return Err(ApiError::not_found(format!("no plugin '{id}'")).into());
    }
    let (response, session, incoming) = actix_ws::handle(&req, body)?;
    let (backlog, live) = state.logs.subscribe(&id, tail, level);
    let to_text = |line: &crate::logs::LogLine| serde_json::to_string(line).unwrap_or_default();
    let logs = state.logs.clone();
    crate::ws::pump(
        session,
        incoming,
        backlog.iter().map(|l| to_text(l)).collect(),
        live,
        move |line| (line.level <= level).then(|| to_text(line)),
        move |n| {
            logs.count_dropped(n);
            Some(serde_json::json!({ "dropped": n }).to_string())
        },
    );
    Ok(response)
}

#[utoipa::path(get, path = "/api/core/plugins/{id}/telemetry", tag = "telemetry", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    responses((status = 200, description = "latest sample, history, totals", body = Object), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
/// `GET /api/core/plugins/{id}/telemetry`: the latest sample, history and lifetime totals.
async fn plugin_telemetry(state: Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let instance = state
        .routing
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("plugin '{id}' is not loaded")))?;
    let history = state.telemetry.history(&id, crate::telemetry::HISTORY);
    let s = instance.stats();
    use std::sync::atomic::Ordering::Relaxed;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id.as_str(),
        "current": history.last(),
        "history": history,
        "totals": {
            "calls": s.calls.load(Relaxed),
            "errors": s.errors.load(Relaxed),
            "rejected": s.rejected.load(Relaxed),
            "timeouts": s.timeouts.load(Relaxed),
            "cpu_seconds": s.cpu_nanos.load(Relaxed) as f64 / 1e9,
            "in_flight": instance.in_flight(),
        },
    })))
}

#[utoipa::path(get, path = "/api/core/telemetry", tag = "telemetry", security(("bearer" = [])),
    responses((status = 200, description = "the host and every plugin's latest sample", body = Object), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
/// `GET /api/core/telemetry`: the host and the latest sample of every plugin.
async fn all_telemetry(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "host": state.telemetry.host(),
        "plugins": state.telemetry.latest(),
    }))
}

/// WebSocket pushing one telemetry message a second: the whole tick, or one plugin's sample.
fn ws_telemetry_stream(
    state: &AppState,
    req: &HttpRequest,
    body: web::Payload,
    plugin: Option<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, incoming) = actix_ws::handle(req, body)?;
    let render = move |tick: &std::sync::Arc<crate::telemetry::Tick>| {
        let message = match &plugin {
            Some(id) => serde_json::json!({ "id": id, "sample": tick.plugins.get(id) }),
            None => serde_json::to_value(&**tick).unwrap_or_default(),
        };
        Some(message.to_string())
    };
    // A slow client skips ticks; the next one is complete in itself.
    crate::ws::pump(session, incoming, Vec::new(), state.telemetry.subscribe(), render, |_| None);
    Ok(response)
}

#[utoipa::path(get, path = "/ws/core/plugins/{id}/telemetry", tag = "telemetry", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    responses((status = 101, description = "WebSocket: one sample a second"),
    (status = 400, description = "not a WebSocket request", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
async fn ws_plugin_telemetry(
    state: Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    if state.registry.view(&id).is_none() {
        return Err(ApiError::not_found(format!("no plugin '{id}'")).into());
    }
    ws_telemetry_stream(&state, &req, body, Some(id.into_inner()))
}

#[utoipa::path(get, path = "/ws/core/telemetry", tag = "telemetry", security(("bearer" = [])),
    responses((status = 101, description = "WebSocket: one tick a second"),
    (status = 400, description = "not a WebSocket request", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
async fn ws_all_telemetry(
    state: Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    ws_telemetry_stream(&state, &req, body, None)
}

#[utoipa::path(get, path = "/metrics", tag = "telemetry", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
/// `GET /metrics`: Prometheus text format.
async fn metrics(state: Data<AppState>) -> ApiResult<HttpResponse> {
    let text = crate::metrics::render(&state.metrics)
        .map_err(|e| ApiError::internal(format!("cannot encode metrics: {e}")))?;
    Ok(HttpResponse::Ok().content_type(prometheus::TEXT_FORMAT).body(text))
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    plugin: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/core/events", tag = "events", security(("bearer" = [])),
    params(("plugin" = Option<String>, Query, description = "only this plugin"),
      ("limit" = Option<i64>, Query, description = "newest first, 1 to 1000 (default 100)")),
    responses((status = 200, description = "the event log, newest first", body = EventListSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
/// `GET /api/core/events?plugin=&limit=`: the event log, newest first.
async fn events(state: Data<AppState>, q: web::Query<EventsQuery>) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.store.clone();
    let events =
        blocking(move || store.events(q.plugin.as_deref().filter(|p| !p.is_empty()), limit))
            .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}

#[utoipa::path(post, path = "/api/core/plugins/{id}/{action}", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo"), ("action" = String, Path, description = "start, stop or restart", example = "restart")),
    responses((status = 200, description = "the plugin after the action", body = PluginDetail), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 409, description = "the plugin failed to start or stop", body = ErrorSchema)))]
async fn lifecycle(
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (id, verb) = path.into_inner();
    let action = match verb.as_str() {
        "start" => Action::Start,
        "stop" => Action::Stop,
        "restart" => Action::Restart,
        other => {
            return Err(ApiError::not_found(format!(
                "no lifecycle action '{other}': use start, stop or restart"
            )))
        }
    };
    let view = state.registry.lifecycle(&id, action).await?;
    Ok(HttpResponse::Ok().json(detail(&state, view)))
}

fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

/// Turn a plugin's answer into an HTTP response (streamed answers are forwarded chunk by chunk).
fn respond(answer: Answer) -> HttpResponse {
    match answer {
        Answer::Complete(reply) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            let mut builder = HttpResponse::build(status);
            if !reply.content_type.is_empty() {
                builder.content_type(reply.content_type);
            }
            builder.body(reply.body)
        }
        Answer::Stream { content_type, events, guard, idle } => {
            let stream =
                futures_util::stream::unfold(Some((events, guard)), move |state| async move {
                    let (mut events, guard) = state?;
                    match tokio::time::timeout(idle, events.recv()).await {
                        Ok(Some(Event::Chunk(c))) => {
                            Some((Ok::<_, actix_web::Error>(Bytes::from(c)), Some((events, guard))))
                        }
                        Ok(Some(Event::Begin(_))) => {
                            Some((Ok(Bytes::new()), Some((events, guard))))
                        }
                        Ok(Some(Event::Done(Ok(tail)))) => Some((Ok(Bytes::from(tail.body)), None)),
                        Ok(Some(Event::Done(Err(f)))) => {
                            tracing::warn!("streamed call failed after it began: {}", f.message);
                            Some((Err(actix_web::error::ErrorInternalServerError(f.message)), None))
                        }
                        Ok(None) => None,
                        Err(_) => {
                            drop(guard);
                            Some((
                                Err(actix_web::error::ErrorGatewayTimeout(
                                    "plugin stream went idle",
                                )),
                                None,
                            ))
                        }
                    }
                });
            HttpResponse::Ok().content_type(content_type).streaming(stream)
        }
    }
}

#[utoipa::path(post, path = "/api/plugins/{id}/{capability}", tag = "invoke", security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo"), ("capability" = String, Path, description = "capability name", example = "echo")),
    request_body(content = Object, description = "the request for the plugin, any content type (JSON by default)"),
    responses((status = 200, description = "the plugin's answer (any content type; streamed for streaming capabilities)"),
    (status = 400, description = "the plugin refused the request", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema),
    (status = 404, description = "no such plugin or capability", body = ErrorSchema),
    (status = 409, description = "the plugin is stopped", body = ErrorSchema),
    (status = 500, description = "the plugin failed or panicked", body = ErrorSchema),
    (status = 503, description = "the plugin's queue is full", body = ErrorSchema),
    (status = 504, description = "the plugin did not answer in time", body = ErrorSchema)))]
async fn invoke(
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let (id, capability) = path.into_inner();
    let instance = state
        .routing
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("plugin '{id}' is not loaded")))?;
    if !instance.manifest.has_capability(&capability) {
        return Err(ApiError::not_found(format!("plugin '{id}' has no capability '{capability}'")));
    }
    drop(instance);
    call_plugin(&state, &req, &id, CallKind::Capability, &capability, &body).await
}

#[utoipa::path(method(get, post, put, delete, patch), path = "/api/plugins/{id}/admin/{route}", tag = "invoke",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo"), ("route" = String, Path, description = "the plugin's admin route")),
    request_body(content = Object, description = "passed to the plugin as is"),
    responses((status = 200, description = "the plugin's answer"),
    (status = 401, description = "no or invalid API key", body = ErrorSchema),
    (status = 403, description = "the key lacks the scope (GET needs read, other methods admin)", body = ErrorSchema),
    (status = 404, description = "no such plugin or route", body = ErrorSchema)))]
async fn admin_route(
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let (id, tail) = path.into_inner();
    let route = format!("/{tail}");
    let instance = state
        .routing
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("plugin '{id}' is not loaded")))?;
    if !instance.manifest.has_route(req.method().as_str(), &route) {
        return Err(ApiError::not_found(format!(
            "plugin '{id}' has no route {} {route}",
            req.method()
        )));
    }
    drop(instance);
    call_plugin(&state, &req, &id, CallKind::Route, &route, &body).await
}

/// Everything not matched above: a plugin's claimed prefix, or 404.
async fn fallback(state: Data<AppState>, req: HttpRequest, body: Bytes) -> ApiResult<HttpResponse> {
    let path = req.path().to_string();
    let Some((_prefix, id)) = state.routing.prefix_owner(&path) else {
        return Err(ApiError::not_found(format!("no route for {} {path}", req.method())));
    };
    call_plugin(&state, &req, &id, CallKind::Route, &path, &body).await
}

/// `GET /api/openapi.json`: this API's OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", responses((status = 200, description = "this document", body = Object)))]
async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "the process is alive", body = Object)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "the initial plugin scan is done", body = Object),
    (status = 503, description = "still starting", body = ErrorSchema)))]
async fn readyz(state: Data<AppState>) -> HttpResponse {
    if state.registry.is_ready() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the initial plugin scan is still running",
        )
        .error_response()
    }
}

/// JSON bodies are accepted whatever their Content-Type (curl's `-d` says form-urlencoded).
fn json_error_config() -> web::JsonConfig {
    web::JsonConfig::default().content_type_required(false).limit(1024 * 1024).error_handler(
        |err, _| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("malformed JSON: {err}"))
                .into()
        },
    )
}

/// Mount every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_error_config())
        .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
        // The hot path first: actix tries routes in order.
        .route("/api/plugins/{id}/{capability}", web::post().to(invoke))
        .route("/api/plugins/{id}/admin/{tail:.*}", web::to(admin_route))
        .route("/healthz", web::get().to(healthz))
        .route("/api/openapi.json", web::get().to(openapi))
        .route("/readyz", web::get().to(readyz))
        .route("/api/core/plugins", web::get().to(list_plugins))
        .route("/api/core/plugins/{id}", web::get().to(get_plugin))
        .route("/api/core/events", web::get().to(events))
        .route("/api/core/telemetry", web::get().to(all_telemetry))
        .route("/ws/core/telemetry", web::get().to(ws_all_telemetry))
        .route("/metrics", web::get().to(metrics))
        .route("/api/core/plugins/{id}/telemetry", web::get().to(plugin_telemetry))
        .route("/ws/core/plugins/{id}/telemetry", web::get().to(ws_plugin_telemetry))
        .route("/api/core/plugins/{id}/status", web::get().to(plugin_status))
        .route("/api/core/plugins/{id}/logs", web::get().to(get_logs))
        .route("/ws/core/plugins/{id}/logs", web::get().to(ws_logs))
        .route("/api/core/plugins/{id}/config", web::get().to(get_config))
        .route("/api/core/plugins/{id}/config", web::post().to(set_config))
        .route("/api/core/plugins/{id}/{action}", web::post().to(lifecycle))
        .default_service(web::to(fallback));
}
