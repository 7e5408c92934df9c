//! The host handle each plugin instance gets at creation: logging, its data directory,
//! and calls to other plugins through the bus.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};
use bkg_abi::ffi::{
    CallKind, ChunkSinkMut, FfiError, FfiResponse, HostApi, HostApi_TO, HostBox, LogLevel,
};

use crate::dispatch::{self, Routing};
use crate::exec;
use crate::logs::{Level, LogHub};
use crate::store::Store;

pub struct PluginHost {
    plugin_id: String,
    data_dir: PathBuf,
    models_dir: PathBuf,
    routing: Weak<Routing>,
    logs: Arc<LogHub>,
    store: Arc<Store>,
}

/// Limits of the key-value store, per key.
pub const KV_MAX_KEY: usize = 512;
pub const KV_MAX_VALUE: usize = 16 * 1024 * 1024;

fn ffi_error(kind: bkg_abi::ErrorKind, message: String) -> FfiError {
    FfiError { kind, message: message.into() }
}

/// A key-value store failure as the plugin sees it: the database unreachable is `UNAVAILABLE`
/// (503, naming the database; the store fails fast while it is down), anything else internal.
fn store_error(e: crate::store::StoreError) -> FfiError {
    let kind = match e {
        crate::store::StoreError::Unavailable(_) => bkg_abi::ErrorKind::UNAVAILABLE,
        _ => bkg_abi::ErrorKind::INTERNAL,
    };
    ffi_error(kind, format!("key-value store: {e}"))
}

fn check_key(key: &str) -> Result<(), FfiError> {
    if key.is_empty() || key.len() > KV_MAX_KEY {
        return Err(ffi_error(
            bkg_abi::ErrorKind::BAD_REQUEST,
            format!("a key must have 1 to {KV_MAX_KEY} bytes, this one has {}", key.len()),
        ));
    }
    Ok(())
}

/// Build the handle for one plugin instance.
pub fn handle(
    plugin_id: &str,
    data_dir: PathBuf,
    models_dir: PathBuf,
    routing: Weak<Routing>,
    logs: Arc<LogHub>,
    store: Arc<Store>,
) -> HostBox {
    HostApi_TO::from_value(
        PluginHost { plugin_id: plugin_id.to_string(), data_dir, models_dir, routing, logs, store },
        TD_Opaque,
    )
}

/// Where a streamed bus call's chunks go; false stops the call.
type ChunkFn<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

impl PluginHost {
    /// A bus call: the whole answer, or (with `on_chunk`) a streamed one chunk by chunk.
    fn bus_call(
        &self,
        target: &str,
        capability: &str,
        content_type: &str,
        body: RSlice<'_, u8>,
        on_chunk: Option<ChunkFn<'_>>,
    ) -> RResult<FfiResponse, FfiError> {
        let Some(routing) = self.routing.upgrade() else {
            return RResult::RErr(FfiError {
                kind: bkg_abi::ErrorKind::UNAVAILABLE,
                message: "the host is shutting down".into(),
            });
        };
        let request = exec::request(
            CallKind::Capability,
            capability,
            "POST",
            "",
            content_type,
            body.as_slice().to_vec(),
        );
        if let Some(instance) = routing.get(target) {
            if !instance.manifest.has_capability(capability) {
                return RResult::RErr(FfiError {
                    kind: bkg_abi::ErrorKind::NOT_FOUND,
                    message: format!("plugin '{target}' has no capability '{capability}'").into(),
                });
            }
        }
        let answer = match on_chunk {
            Some(f) => dispatch::call_streaming(&routing, target, request, f),
            None => dispatch::call_blocking(&routing, target, request),
        };
        match answer {
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

    fn models_dir(&self) -> RString {
        self.models_dir.to_string_lossy().into_owned().into()
    }

    fn call(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
    ) -> RResult<FfiResponse, FfiError> {
        self.bus_call(plugin.as_str(), capability.as_str(), content_type.as_str(), body, None)
    }

    fn call_streaming(
        &self,
        plugin: RStr<'_>,
        capability: RStr<'_>,
        content_type: RStr<'_>,
        body: RSlice<'_, u8>,
        mut sink: ChunkSinkMut<'_>,
    ) -> RResult<FfiResponse, FfiError> {
        let mut forward = |chunk: &[u8]| sink.chunk(RSlice::from_slice(chunk));
        self.bus_call(
            plugin.as_str(),
            capability.as_str(),
            content_type.as_str(),
            body,
            Some(&mut forward),
        )
    }

    fn kv_get(&self, key: RStr<'_>) -> RResult<ROption<RVec<u8>>, FfiError> {
        let result = check_key(key.as_str())
            .and_then(|()| self.store.kv_get(&self.plugin_id, key.as_str()).map_err(store_error));
        match result {
            Ok(v) => RResult::ROk(v.map(RVec::from).into()),
            Err(e) => RResult::RErr(e),
        }
    }

    fn kv_put(&self, key: RStr<'_>, value: RSlice<'_, u8>) -> RResult<(), FfiError> {
        let result = check_key(key.as_str()).and_then(|()| {
            if value.len() > KV_MAX_VALUE {
                return Err(ffi_error(
                    bkg_abi::ErrorKind::BAD_REQUEST,
                    format!(
                        "a value may have at most {KV_MAX_VALUE} bytes, this one has {}",
                        value.len()
                    ),
                ));
            }
            self.store.kv_put(&self.plugin_id, key.as_str(), value.as_slice()).map_err(store_error)
        });
        result.into()
    }

    fn kv_delete(&self, key: RStr<'_>) -> RResult<bool, FfiError> {
        check_key(key.as_str())
            .and_then(|()| self.store.kv_delete(&self.plugin_id, key.as_str()).map_err(store_error))
            .into()
    }

    fn kv_keys(&self, prefix: RStr<'_>) -> RResult<RVec<RString>, FfiError> {
        match self.store.kv_keys(&self.plugin_id, prefix.as_str()) {
            Ok(keys) => RResult::ROk(keys.into_iter().map(RString::from).collect()),
            Err(e) => RResult::RErr(store_error(e)),
        }
    }
}
