//! The state the HTTP layer and its middleware share: handles to the host's parts.

use std::sync::Arc;

use crate::dispatch::Routing;
use crate::logs::LogHub;
use crate::registry::RegistryHandle;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Shared state of the HTTP layer.
pub struct AppState {
    pub registry: RegistryHandle,
    pub routing: Arc<Routing>,
    pub store: Arc<Store>,
    pub logs: Arc<LogHub>,
    pub telemetry: Arc<Telemetry>,
    pub metrics: crate::metrics::Sources,
    pub auth: Arc<crate::auth::Auth>,
    pub models: Arc<crate::models::Models>,
    /// The watched plugins folder (uploads are written into it).
    pub plugins_dir: std::path::PathBuf,
    /// The built admin UI, served at `/` (none: not served).
    pub ui_dir: Option<std::path::PathBuf>,
    /// Request body limits per route class.
    pub limits: crate::api::BodyLimits,
}
