//! Crash isolation: `POST /api/core/plugins/{id}/isolation` sets where a plugin's code runs
//! and the limits of its child process in process mode.

use super::*;
use crate::isolation::{IsolationMode, ProcessLimits};

/// The body of `POST /api/core/plugins/{id}/isolation`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct IsolationRequest {
    /// `process` (a supervised child process: a crash ends only the child, which is
    /// restarted) or `in_process` (loaded into the host: the fastest, the default). The
    /// operator's choice always wins over the mode the plugin's library suggests.
    mode: IsolationMode,
    /// Limits of the plugin's child process in process mode. Absent: the stored ones are kept;
    /// given: they replace them, and a field that is absent or null takes the host's default
    /// (`--process-max-*`, `--call-timeout-ms`). A change on a plugin running in process mode
    /// is a swap to a child with the new limits.
    limits: Option<ProcessLimits>,
}

/// The accepted range of each limit, with its unit.
const LIMIT_RANGES: [(&str, u64, u64, &str); 4] = [
    ("memory_mb", 64, 4 << 20, "MiB of address space"),
    ("open_files", 16, 1 << 20, "open files"),
    ("processes", 1, 4 << 20, "processes"),
    ("call_deadline_ms", 1, 86_400_000, "ms"),
];

const SHAPE: &str = r#"the body is {"mode": "process" | "in_process", "limits": {"memory_mb", "open_files", "processes", "call_deadline_ms"}} (limits optional)"#;

/// The mode and limits a body asks for, or why the body is not the expected shape.
fn requested(body: &serde_json::Value) -> Result<(IsolationMode, Option<ProcessLimits>), String> {
    let Some(fields) = body.as_object() else {
        return Err(format!("{SHAPE}, not {}", kind_of(body)));
    };
    if let Some(other) = fields.keys().find(|k| !matches!(k.as_str(), "mode" | "limits")) {
        return Err(format!("unknown field {other:?}: {SHAPE}"));
    }
    let mode = match fields.get("mode") {
        None => return Err(format!("the field \"mode\" is missing: {SHAPE}")),
        Some(serde_json::Value::String(text)) => IsolationMode::parse(text).ok_or_else(|| {
            format!("unknown isolation mode {text:?}: use \"process\" or \"in_process\"")
        })?,
        Some(other) => {
            return Err(format!(
                "\"mode\" is {}, not a string: use \"process\" or \"in_process\"",
                kind_of(other)
            ))
        }
    };
    let limits = match fields.get("limits") {
        None => None,
        Some(serde_json::Value::Null) => Some(ProcessLimits::default()),
        Some(serde_json::Value::Object(given)) => Some(requested_limits(given)?),
        Some(other) => {
            return Err(format!(
                "\"limits\" is {}, not an object like {{\"memory_mb\": 512}}",
                kind_of(other)
            ))
        }
    };
    Ok((mode, limits))
}

fn requested_limits(
    given: &serde_json::Map<String, serde_json::Value>,
) -> Result<ProcessLimits, String> {
    if let Some(other) = given.keys().find(|k| LIMIT_RANGES.iter().all(|(n, ..)| n != k)) {
        return Err(format!(
            "unknown limit {other:?}: the limits are memory_mb, open_files, processes and \
             call_deadline_ms"
        ));
    }
    let mut values = [None; 4];
    for ((name, min, max, unit), value) in LIMIT_RANGES.iter().zip(values.iter_mut()) {
        *value = match given.get(*name) {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (*min..=*max).contains(&n) => Some(n),
                _ => {
                    let got = match v {
                        serde_json::Value::Number(n) => n.to_string(),
                        other => kind_of(other).to_string(),
                    };
                    return Err(format!(
                        "limits.{name} must be null (the host's default) or a whole number \
                         from {min} to {max} ({unit}), not {got}"
                    ));
                }
            },
        };
    }
    let [memory_mb, open_files, processes, call_deadline_ms] = values;
    Ok(ProcessLimits { memory_mb, open_files, processes, call_deadline_ms })
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[utoipa::path(post, path = "/api/core/plugins/{id}/isolation", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "echo")),
    request_body(content = IsolationRequest, description = "where the plugin's code runs", content_type = "application/json"),
    responses((status = 200, description = "the plugin after the switch (`isolation` is the new mode, `isolation_source` is `operator`, `isolation_limits` the effective limits); persisted and used by every later load, whatever the library suggests. A loaded plugin whose mode changed (or whose limits changed in process mode) is loaded again that way, a swap that fails no request; one that is not loaded keeps the setting for its next load", body = PluginDetail),
    (status = 400, description = "malformed JSON, not {\"mode\": \"process\" | \"in_process\", \"limits\": {...}}, or a limit out of its range (the message names the field and the range)", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 409, description = "the plugin could not be loaded in the new mode: it still runs in the old one, which stays stored", body = ErrorSchema)))]
/// `POST /api/core/plugins/{id}/isolation`: run the plugin in the host or in a supervised
/// child process.
pub(crate) async fn set_isolation(
    state: Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    state.registry.view(&id).ok_or_else(|| ApiError::not_found(format!("no plugin '{id}'")))?;
    let (mode, limits) = requested(&body)
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "invalid_isolation", message))?;
    let view = state.registry.set_isolation(&id, mode, limits, &actor(&req)).await?;
    Ok(HttpResponse::Ok().json(detail(&state, view)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn requested_mode(body: &serde_json::Value) -> Result<IsolationMode, String> {
        requested(body).map(|(mode, _)| mode)
    }

    #[test]
    fn bodies_name_what_is_wrong() {
        assert_eq!(requested_mode(&json!({"mode": "process"})), Ok(IsolationMode::Process));
        assert_eq!(requested_mode(&json!({"mode": "in_process"})), Ok(IsolationMode::InProcess));
        let err = |v| requested_mode(&v).unwrap_err();
        assert!(err(json!({"mode": "sandbox"})).contains("unknown isolation mode \"sandbox\""));
        assert!(err(json!({"mode": "Process"})).contains("unknown isolation mode"));
        assert!(err(json!({})).contains("\"mode\" is missing"));
        assert!(err(json!({"mode": 1})).contains("\"mode\" is a number, not a string"));
        assert!(err(json!({"mode": null})).contains("\"mode\" is null"));
        assert!(err(json!("process")).contains("not a string"));
        assert!(err(json!(["process"])).contains("not an array"));
        assert!(err(json!({"mode": "process", "limit": {}})).contains("unknown field \"limit\""));
    }

    #[test]
    fn limits_are_optional_and_each_field_nullable() {
        let limits = |v| requested(&v).unwrap().1;
        assert_eq!(limits(json!({"mode": "process"})), None);
        assert_eq!(
            limits(json!({"mode": "process", "limits": null})),
            Some(ProcessLimits::default())
        );
        assert_eq!(
            limits(json!({"mode": "process", "limits": {}})),
            Some(ProcessLimits::default())
        );
        assert_eq!(
            limits(json!({"mode": "process", "limits": {
                "memory_mb": 512, "open_files": 256, "processes": 64, "call_deadline_ms": 30000
            }})),
            Some(ProcessLimits {
                memory_mb: Some(512),
                open_files: Some(256),
                processes: Some(64),
                call_deadline_ms: Some(30000)
            })
        );
        assert_eq!(
            limits(json!({"mode": "in_process", "limits": {"memory_mb": null, "processes": 8}})),
            Some(ProcessLimits { processes: Some(8), ..ProcessLimits::default() })
        );
    }

    #[test]
    fn bad_limits_name_the_field_and_why() {
        let err = |v| requested(&v).unwrap_err();
        let with = |limits| json!({"mode": "process", "limits": limits});
        let e = err(with(json!({"memory_mb": -1})));
        assert!(e.contains("limits.memory_mb must be") && e.contains("not -1"), "{e}");
        assert!(err(with(json!({"memory_mb": 8}))).contains("from 64 to"));
        assert!(err(with(json!({"open_files": 1.5}))).contains("limits.open_files"));
        assert!(err(with(json!({"processes": 0}))).contains("limits.processes"));
        assert!(err(with(json!({"call_deadline_ms": "30s"}))).contains("not a string"));
        assert!(err(with(json!({"call_deadline_ms": 0}))).contains("limits.call_deadline_ms"));
        assert!(err(with(json!({"memory": 512}))).contains("unknown limit \"memory\""));
        assert!(err(with(json!([512]))).contains("\"limits\" is an array"));
    }
}
