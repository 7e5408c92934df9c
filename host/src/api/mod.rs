//! The HTTP layer: the only module that knows actix-web and JSON error shapes.

use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use bkg_abi::ffi::CallKind;
use serde::Serialize;

use crate::dispatch::{self, Answer};
use crate::exec::{self, Control, Event};

const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
use crate::logs::Level;
use crate::openapi::{ErrorSchema, EventListSchema, LogLinesSchema, PluginListSchema};
use crate::registry::{Action, PluginView};
use crate::validate;
use std::sync::Arc;

pub(crate) mod body;
pub(crate) mod config;
pub(crate) mod isolation;
mod key_events;
pub(crate) mod models;
pub(crate) mod observe;
pub(crate) mod ui;

use config::{get_config, set_config};
use observe::{
    all_telemetry, events, get_logs, metrics, plugin_telemetry, ws_all_telemetry, ws_logs,
    ws_plugin_telemetry,
};

pub use crate::error::ApiError;
pub(crate) use crate::error::ApiResult;
pub use crate::state::AppState;
pub use body::BodyLimits;

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

/// Who made a request, for the event log: the API key's id, or `api`.
pub(crate) fn actor(req: &HttpRequest) -> String {
    use actix_web::HttpMessage as _;
    req.extensions()
        .get::<crate::auth::Principal>()
        .map_or_else(|| "api".to_string(), |p| p.actor())
}

/// The running generation of a plugin, or 404.
pub(crate) fn loaded(state: &AppState, id: &str) -> ApiResult<Arc<crate::exec::Instance>> {
    state.routing.get(id).ok_or_else(|| ApiError::not_found(format!("plugin '{id}' is not loaded")))
}

/// Call a plugin with this HTTP request's method, query, content type and body.
async fn call_plugin(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    kind: CallKind,
    target: &str,
    body: Vec<u8>,
) -> ApiResult<HttpResponse> {
    Ok(respond(dispatch_call(state, req, id, kind, target, body).await?))
}

/// Dispatch a call built from this HTTP request (its method, query and content type); the
/// call is cancelled if the client goes away while it runs.
pub(crate) async fn dispatch_call(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    kind: CallKind,
    target: &str,
    body: Vec<u8>,
) -> ApiResult<Answer> {
    let request = exec::request(
        kind,
        target,
        req.method().as_str(),
        req.query_string(),
        &content_type(req),
        body,
    );
    let peer = peer_of(req);
    let gone = move || peer.as_ref().is_some_and(|p| p.closed());
    Ok(dispatch::call(&state.routing, id, request, gone).await?)
}

/// A plugin's view plus its live call counters.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginDetail {
    #[serde(flatten)]
    view: PluginView,
    calls: Option<CallCounters>,
    /// This plugin verifies the API keys (`--auth-provider`): stopping it locks out every
    /// key but the bootstrap one.
    auth_provider: bool,
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
    let auth_provider = view.id == state.auth.provider;
    PluginDetail { view, calls, auth_provider }
}

#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/api/core/plugins", tag = "plugins", security(("bearer" = [])),
    params(("all" = Option<bool>, Query, description = "include unloaded plugins")),
    responses((status = 200, description = "every plugin", body = PluginListSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
pub(crate) async fn list_plugins(state: Data<AppState>, q: web::Query<ListQuery>) -> HttpResponse {
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
pub(crate) async fn get_plugin(
    state: Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let view =
        state.registry.view(&id).ok_or_else(|| ApiError::not_found(format!("no plugin '{id}'")))?;
    Ok(HttpResponse::Ok().json(detail(&state, view)))
}

#[utoipa::path(get, path = "/api/core/plugins/{id}/status", tag = "plugins", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    responses((status = 200, description = "the plugin's own status report", body = Object), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 504, description = "the plugin did not answer", body = ErrorSchema)))]
/// The plugin's own status report (its `status` entry point), run on its threads.
pub(crate) async fn plugin_status(
    state: Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let instance = loaded(&state, &id)?;
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
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> ApiResult<T> {
    web::block(f).await.map_err(|e| ApiError::internal(e.to_string()))?.map_err(ApiError::from)
}

#[utoipa::path(post, path = "/api/core/plugins/{id}/{action}", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo"), ("action" = String, Path, description = "start, stop or restart", example = "restart"),
        ("confirm" = Option<bool>, Query, description = "stop the auth provider although that locks out every key but the bootstrap one")),
    responses((status = 200, description = "the plugin after the action", body = PluginDetail), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 409, description = "the plugin failed to start or stop; or `confirm_required`: stopping the auth provider needs ?confirm=true (or the bootstrap key)", body = ErrorSchema)))]
pub(crate) async fn lifecycle(
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<ConfirmQuery>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (id, verb) = path.into_inner();
    if verb == "stop" && id == state.auth.provider {
        refuse_lockout(&state, &req, query.confirm)?;
    }
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
    let view = state.registry.lifecycle(&id, action, &actor(&req)).await?;
    Ok(HttpResponse::Ok().json(detail(&state, view)))
}

#[derive(serde::Deserialize)]
pub(crate) struct ConfirmQuery {
    #[serde(default)]
    confirm: bool,
}

/// Stopping the auth provider locks out every key but the bootstrap one. Refused with 409
/// `confirm_required` unless the caller is the bootstrap key (which keeps working) or says
/// `?confirm=true`.
fn refuse_lockout(state: &AppState, req: &HttpRequest, confirmed: bool) -> ApiResult<()> {
    use actix_web::HttpMessage as _;
    let bootstrap = req
        .extensions()
        .get::<crate::auth::Principal>()
        .is_some_and(|p| p.key_id == crate::auth::BOOTSTRAP_KEY_ID);
    if bootstrap || confirmed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "confirm_required",
        format!(
            "'{}' is the auth provider: while it is stopped, every API key except the \
             bootstrap admin key is refused, including the one used here. Confirm to stop it \
             anyway (API: add ?confirm=true).",
            state.auth.provider
        ),
    ))
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
pub(crate) async fn invoke(
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (id, capability) = path.into_inner();
    let instance = loaded(&state, &id)?;
    let Some(cap) = instance.manifest.capabilities.iter().find(|c| c.name == capability) else {
        return Err(ApiError::not_found(format!("plugin '{id}' has no capability '{capability}'")));
    };
    let limit = body::capability_limit(cap, state.limits.call);
    drop(instance);
    let what = || format!("capability '{capability}' of plugin '{id}'");
    let body = body::read_limited(&req, payload, limit, what).await?;
    if key_events::recorded(&state, &id, &capability) {
        return key_events::call_and_record(&state, &req, &id, &capability, body).await;
    }
    call_plugin(&state, &req, &id, CallKind::Capability, &capability, body).await
}

#[utoipa::path(method(get, post, put, delete, patch), path = "/api/plugins/{id}/admin/{route}", tag = "invoke",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo"), ("route" = String, Path, description = "the plugin's admin route")),
    request_body(content = Object, description = "passed to the plugin as is"),
    responses((status = 200, description = "the plugin's answer"),
    (status = 401, description = "no or invalid API key", body = ErrorSchema),
    (status = 403, description = "the key lacks the scope (GET needs read, other methods admin)", body = ErrorSchema),
    (status = 404, description = "no such plugin or route", body = ErrorSchema)))]
pub(crate) async fn admin_route(
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (id, tail) = path.into_inner();
    let route = format!("/{tail}");
    let instance = loaded(&state, &id)?;
    if !instance.manifest.has_route(req.method().as_str(), &route) {
        return Err(ApiError::not_found(format!(
            "plugin '{id}' has no route {} {route}",
            req.method()
        )));
    }
    drop(instance);
    let what = || format!("the admin routes of plugin '{id}'");
    let body = body::read_limited(&req, payload, state.limits.call, what).await?;
    call_plugin(&state, &req, &id, CallKind::Route, &route, body).await
}

/// Everything not matched above: a plugin's claimed prefix, the admin UI's files, or 404.
/// The path is the one actix-web routed on (decoded, and canonical: the auth middleware
/// refuses anything else), the same one the middleware decided the scope on.
async fn fallback(
    state: Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let path = req.match_info().as_str().to_string();
    let Some((prefix, id)) = state.routing.prefix_owner(&path) else {
        let read = req.method() == actix_web::http::Method::GET
            || req.method() == actix_web::http::Method::HEAD;
        if read && !reserved_path(&state, &path) {
            return match &state.ui_dir {
                Some(dir) => ui::serve(dir, &req).await,
                None => Ok(ui::not_installed(&req)),
            };
        }
        return Err(ApiError::not_found(format!("no route for {} {path}", req.method())));
    };
    let what = || format!("plugin '{id}' under {prefix}");
    let body = body::read_limited(&req, payload, state.limits.call, what).await?;
    call_plugin(&state, &req, &id, CallKind::Route, &path, body).await
}

/// Whether a path falls under the host's own or a plugin's namespace in any letter case
/// (`/API/...`, `/V1/...`): those are never the admin UI, so a 404 there is a JSON 404 and
/// not the UI's `index.html`.
fn reserved_path(state: &AppState, path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("").to_ascii_lowercase();
    let host = ["api", "ws", "metrics", "healthz", "readyz"].contains(&first.as_str());
    host || state.routing.prefixes_except("").iter().any(|(p, _)| {
        p.trim_start_matches('/').split('/').next().unwrap_or("").eq_ignore_ascii_case(&first)
    })
}

/// `GET /api/openapi.json`: this API's OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", responses((status = 200, description = "this document", body = Object)))]
pub(crate) async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "the process is alive", body = Object)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "the initial plugin scan is done; `database` is `up` or `down` (PostgreSQL unreachable: plugin calls and reads from memory are still served, so the host stays ready; admin writes answer 503 database_unavailable)", body = Object),
    (status = 503, description = "still starting", body = ErrorSchema)))]
pub(crate) async fn readyz(state: Data<AppState>) -> HttpResponse {
    if state.registry.is_ready() {
        // A trivial query: finds an outage without traffic, and reconnects when one is due.
        let store = state.store.clone();
        let db = web::block(move || {
            let _ = store.ping();
            store.health()
        })
        .await
        .ok();
        // No error text: `/readyz` needs no key, and the error names the database's address
        // (it is in the log).
        HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "database": db.as_ref().map_or("unknown", |h| h.database),
            "database_down_since_ms": db.as_ref().and_then(|h| h.down_since_ms),
        }))
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
fn json_error_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default().content_type_required(false).limit(limit).error_handler(
        move |err, _| {
            use actix_web::error::JsonPayloadError as E;
            match err {
                E::Overflow { .. } | E::OverflowKnownLength { .. } => body::too_large(
                    limit as u64,
                    "the host's admin routes",
                    "--max-admin-body-bytes",
                )
                .into(),
                err => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("malformed JSON: {err}"),
                )
                .into(),
            }
        },
    )
}

/// Mount every route, with the default body limits.
pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_with(cfg, BodyLimits::default())
}

/// Mount every route; the JSON routes take bodies up to `limits.admin` bytes (plugin calls
/// and uploads read `AppState::limits` themselves).
pub fn configure_with(cfg: &mut web::ServiceConfig, limits: BodyLimits) {
    cfg.app_data(json_error_config(limits.admin))
        .app_data(web::PayloadConfig::new(limits.admin))
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
        .route("/api/core/plugins/upload/{filename}", web::put().to(ui::upload))
        .route("/api/core/plugins/{id}/models/download", web::post().to(models::start_download))
        .route("/api/core/models", web::get().to(models::list_models))
        .route("/api/core/models/downloads/{job}", web::get().to(models::get_download))
        .route("/api/core/models/downloads/{job}", web::delete().to(models::cancel_download))
        .route("/ws/core/plugins/{id}/models", web::get().to(models::ws_models))
        .route("/api/core/plugins/{id}/isolation", web::post().to(isolation::set_isolation))
        .route("/api/core/plugins/{id}/{action}", web::post().to(lifecycle))
        .default_service(web::to(fallback));
}
