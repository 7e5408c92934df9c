//! Crash isolation: `POST /api/core/plugins/{id}/isolation` sets where a plugin's code runs.

use super::*;
use crate::isolation::IsolationMode;

/// The body of `POST /api/core/plugins/{id}/isolation`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct IsolationRequest {
    /// `process` (a supervised child process: a crash ends only the child, which is
    /// restarted) or `in_process` (loaded into the host: the fastest, the default).
    mode: IsolationMode,
}

/// The mode a body asks for, or why the body is not `{"mode": "process" | "in_process"}`.
fn requested_mode(body: &serde_json::Value) -> Result<IsolationMode, String> {
    const SHAPE: &str = r#"the body is {"mode": "process"} or {"mode": "in_process"}"#;
    let Some(fields) = body.as_object() else {
        return Err(format!("{SHAPE}, not {}", kind_of(body)));
    };
    if let Some(other) = fields.keys().find(|k| k.as_str() != "mode") {
        return Err(format!("unknown field {other:?}: {SHAPE}"));
    }
    match fields.get("mode") {
        None => Err(format!("the field \"mode\" is missing: {SHAPE}")),
        Some(serde_json::Value::String(text)) => IsolationMode::parse(text).ok_or_else(|| {
            format!("unknown isolation mode {text:?}: use \"process\" or \"in_process\"")
        }),
        Some(other) => Err(format!(
            "\"mode\" is {}, not a string: use \"process\" or \"in_process\"",
            kind_of(other)
        )),
    }
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
    responses((status = 200, description = "the plugin after the switch (`isolation` is the new mode); persisted and used by every later load. A loaded plugin is loaded again in the new mode, a swap that fails no request; one that is not loaded keeps the mode for its next load", body = PluginDetail),
    (status = 400, description = "malformed JSON, or not {\"mode\": \"process\" | \"in_process\"}", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
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
    let mode = requested_mode(&body)
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "invalid_isolation", message))?;
    let view = state.registry.set_isolation(&id, mode, &actor(&req)).await?;
    Ok(HttpResponse::Ok().json(detail(&state, view)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert!(err(json!({"mode": "process", "limits": {}})).contains("unknown field \"limits\""));
    }
}
