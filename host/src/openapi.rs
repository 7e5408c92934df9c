//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! response types, served at `/api/openapi.json`. A test checks every mounted route is in it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The error shape every failing route answers with.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorSchema {
    error: ErrorFields,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct ErrorFields {
    /// Machine-readable, e.g. `not_found`, `unauthorized`, `invalid_config`.
    code: String,
    message: String,
    /// OpenAI's error type (`invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `server_error`), so OpenAI clients parse it.
    r#type: String,
    /// OpenAI's `param`: always null in the host's own errors.
    param: Option<String>,
    /// Extra detail, e.g. `{"errors": [{"path": "/x", "message": "..."}]}` for configs.
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
}

#[derive(ToSchema)]
#[schema(as = PluginList)]
#[allow(dead_code)]
pub struct PluginListSchema {
    plugins: Vec<crate::api::PluginDetail>,
}

#[derive(ToSchema)]
#[schema(as = LogLines)]
#[allow(dead_code)]
pub struct LogLinesSchema {
    id: String,
    lines: Vec<crate::logs::LogLine>,
}

#[derive(ToSchema)]
#[schema(as = EventList)]
#[allow(dead_code)]
pub struct EventListSchema {
    events: Vec<crate::store::Event>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "bkg", description = "The bkg plugin host: plugins, lifecycle, config, logs, telemetry, models, invocation."),
    paths(
        crate::api::list_plugins,
        crate::api::get_plugin,
        crate::api::plugin_status,
        crate::api::config::get_config,
        crate::api::config::set_config,
        crate::api::observe::get_logs,
        crate::api::observe::ws_logs,
        crate::api::observe::plugin_telemetry,
        crate::api::observe::all_telemetry,
        crate::api::observe::ws_plugin_telemetry,
        crate::api::observe::ws_all_telemetry,
        crate::api::observe::metrics,
        crate::api::observe::events,
        crate::api::ui::upload,
        crate::api::models::start_download,
        crate::api::models::list_models,
        crate::api::models::get_download,
        crate::api::models::cancel_download,
        crate::api::models::ws_models,
        crate::api::lifecycle,
        crate::api::isolation::set_isolation,
        crate::api::invoke,
        crate::api::admin_route,
        crate::api::openapi,
        crate::api::healthz,
        crate::api::readyz,
    ),
    components(schemas(ErrorSchema, PluginListSchema, LogLinesSchema, EventListSchema)),
    modifiers(&BearerAuth),
    tags(
        (name = "plugins", description = "loaded plugins and their lifecycle"),
        (name = "invoke", description = "calling plugin capabilities"),
        (name = "config", description = "plugin configuration"),
        (name = "logs", description = "plugin logs"),
        (name = "telemetry", description = "calls, latency, CPU, memory"),
        (name = "events", description = "the persistent event log"),
        (name = "models", description = "model downloads from a Hugging Face hub and the model registry"),
        (name = "health", description = "liveness and readiness"),
    )
)]
struct ApiDoc;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
