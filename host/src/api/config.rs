//! Plugin config: `GET/POST /api/core/plugins/{id}/config`.

use super::*;

const CONFIG_HISTORY: i64 = 20;

#[utoipa::path(get, path = "/api/core/plugins/{id}/config", tag = "config", security(("bearer" = [])), params(("id" = String, Path, description = "plugin id", example = "echo")),
    responses((status = 200, description = "schema, current config, version, history", body = Object), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
/// `GET /api/core/plugins/{id}/config`: schema, current config and recent history.
pub(crate) async fn get_config(
    state: Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
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
    responses((status = 200, description = "applied and stored (`changed: true`, a new `version`); or equal to the stored config (`changed: false`, its `version`; nothing applied, stored or logged)", body = Object),
    (status = 400, description = "malformed JSON", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 409, description = "the plugin takes no config", body = ErrorSchema),
    (status = 422, description = "invalid config (details.errors names every failing path) or refused by the plugin", body = ErrorSchema)))]
/// `POST /api/core/plugins/{id}/config`: validate, apply live, persist. A config equal (as
/// JSON) to the stored one answers its version with `changed: false`.
pub(crate) async fn set_config(
    state: Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
) -> ApiResult<HttpResponse> {
    let actor = super::actor(&req);
    let id = id.into_inner();
    let config = body.into_inner();
    let instance = loaded(&state, &id)?;
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
    let done = state.registry.configure(&id, config.clone(), &actor).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id, "version": done.version, "changed": done.changed, "config": config,
    })))
}
