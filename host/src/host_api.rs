//! The host handle each plugin instance gets at creation: logging, its data directory,
//! and calls to other plugins through the bus.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString},
};
use bkg_abi::ffi::{CallKind, FfiError, FfiResponse, HostApi, HostApi_TO, HostBox, LogLevel};

use crate::dispatch::{self, Routing};
use crate::exec;
use crate::logs::{Level, LogHub};

pub struct PluginHost {
    plugin_id: String,
    data_dir: PathBuf,
    routing: Weak<Routing>,
    logs: Arc<LogHub>,
}

/// Build the handle for one plugin instance.
pub fn handle(
    plugin_id: &str,
    data_dir: PathBuf,
    routing: Weak<Routing>,
    logs: Arc<LogHub>,
) -> HostBox {
    HostApi_TO::from_value(
        PluginHost { plugin_id: plugin_id.to_string(), data_dir, routing, logs },
        TD_Opaque,
    )
}

impl HostApi for PluginHost {
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        let (plugin, target, message) =
            (self.plugin_id.as_str(), target.as_str(), message.as_str());
        self.logs.push(plugin, Level::from_abi(level), "plugin", target, message);
        match level {
            LogLevel::ERROR => tracing::error!(plugin, target, "{message}"),
            LogLevel::WARN => tracing::warn!(plugin, target, "{message}"),
            LogLevel::INFO => tracing::info!(plugin, target, "{message}"),
            LogLevel::DEBUG => tracing::debug!(plugin, target, "{message}"),
            _ => tracing::trace!(plugin, target, "{message}"),
        }
    }

    fn data_dir(&self) -> RString {
        self.data_dir.to_string_lossy().into_owned().into()
    }

    fn call(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
    ) -> RResult<FfiResponse, FfiError> {
        let Some(routing) = self.routing.upgrade() else {
            return RResult::RErr(FfiError {
                kind: bkg_abi::ErrorKind::UNAVAILABLE,
                message: "the host is shutting down".into(),
            });
        };
        let request = exec::request(
            CallKind::Capability,
            capability.as_str(),
            "POST",
            "",
            content_type.as_str(),
            body.as_slice().to_vec(),
        );
        let target = plugin.as_str();
        if let Some(instance) = routing.get(target) {
            if !instance.manifest.has_capability(capability.as_str()) {
                return RResult::RErr(FfiError {
                    kind: bkg_abi::ErrorKind::NOT_FOUND,
                    message: format!("plugin '{target}' has no capability '{capability}'").into(),
                });
            }
        }
        match dispatch::call_blocking(&routing, target, request) {
            Ok(reply) => RResult::ROk(FfiResponse {
                status: reply.status,
                content_type: reply.content_type.into(),
                body: reply.body.into(),
            }),
            Err(e) => {
                let f = e.to_failure();
                RResult::RErr(FfiError { kind: f.kind, message: f.message.into() })
            }
        }
    }
}
