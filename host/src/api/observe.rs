//! Watching plugins: logs, telemetry, metrics and the event log, over REST and WebSocket.

use super::*;

#[derive(serde::Deserialize)]
pub(crate) struct LogQuery {
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
pub(crate) async fn get_logs(
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
pub(crate) async fn ws_logs(
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
pub(crate) async fn plugin_telemetry(
    state: Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let instance = loaded(&state, &id)?;
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
pub(crate) async fn all_telemetry(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "host": state.telemetry.host(),
        "plugins": state.telemetry.latest(),
    }))
}

/// WebSocket pushing one telemetry message a second: the whole tick, or one plugin's sample.
pub(crate) fn ws_telemetry_stream(
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
pub(crate) async fn ws_plugin_telemetry(
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
pub(crate) async fn ws_all_telemetry(
    state: Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    ws_telemetry_stream(&state, &req, body, None)
}

#[utoipa::path(get, path = "/metrics", tag = "telemetry", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(state: Data<AppState>) -> ApiResult<HttpResponse> {
    let mut text = crate::metrics::render(&state.metrics)
        .map_err(|e| ApiError::internal(format!("cannot encode metrics: {e}")))?;
    let store = state.store.clone();
    let db = web::block(move || store.health())
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the database's state: {e}")))?;
    text.push_str(&database_metrics(&db));
    Ok(HttpResponse::Ok().content_type(prometheus::TEXT_FORMAT).body(text))
}

/// The store's connection state in the Prometheus text format: `bkg_database_up` (1, or 0
/// while PostgreSQL is unreachable), `bkg_database_outages_total` and
/// `bkg_database_refused_total`.
fn database_metrics(db: &crate::store::DbHealth) -> String {
    format!(
        "# HELP bkg_database_up Whether the host's database connection is up (0: unreachable, \
         admin writes answer 503).\n# TYPE bkg_database_up gauge\nbkg_database_up{{backend=\"{}\"}} {}\n\
         # HELP bkg_database_outages_total Times the database connection was lost.\n\
         # TYPE bkg_database_outages_total counter\nbkg_database_outages_total {}\n\
         # HELP bkg_database_refused_total Store calls refused while the database was unreachable.\n\
         # TYPE bkg_database_refused_total counter\nbkg_database_refused_total {}\n",
        db.backend,
        u8::from(db.database == "up"),
        db.outages,
        db.refused
    )
}

#[derive(serde::Deserialize)]
pub(crate) struct EventsQuery {
    plugin: Option<String>,
    limit: Option<i64>,
    before: Option<i64>,
}

#[utoipa::path(get, path = "/api/core/events", tag = "events", security(("bearer" = [])),
    params(("plugin" = Option<String>, Query, description = "only this plugin"),
      ("limit" = Option<i64>, Query, description = "newest first, 1 to 1000 (default 100)"),
      ("before" = Option<i64>, Query, description = "only events with a `seq` below this: the next page after one whose last event had this `seq` (pruned events are gone: the last page ends early)")),
    responses((status = 200, description = "the event log, newest first", body = EventListSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
/// `GET /api/core/events?plugin=&limit=&before=`: the event log, newest first.
pub(crate) async fn events(
    state: Data<AppState>,
    q: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.store.clone();
    let events = blocking(move || {
        store.events_before(q.plugin.as_deref().filter(|p| !p.is_empty()), q.before, limit)
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}
