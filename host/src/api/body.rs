//! Request bodies: each route class has a size limit (`--max-body-bytes` for plugin calls,
//! `--max-admin-body-bytes` for the host's own JSON routes, `--max-upload-bytes` for plugin
//! uploads), answered 413 with the limit named. A plugin call's body is read once, into the
//! buffer that is handed to the plugin: no second copy on the way.

use actix_web::http::{header, StatusCode};
use actix_web::web;
use actix_web::HttpRequest;
use futures_util::StreamExt as _;

use super::{ApiError, ApiResult};
use crate::exec::CapabilityInfo;

/// The input-schema keyword with which a capability declares a larger body limit than the
/// host's default: `{"x-bkg-max-body-bytes": 67108864, ...}` (additive: older plugins simply
/// lack it). The host's `--max-body-bytes` applies to capabilities that do not declare one.
pub use bkg_abi::MAX_BODY_KEYWORD;

/// The body limits of each route class, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Plugin calls: capabilities, admin routes and claimed prefixes.
    pub call: usize,
    /// The host's own JSON routes.
    pub admin: usize,
    /// Plugin library uploads (streamed to disk, never held in memory).
    pub upload: u64,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self { call: 4 << 20, admin: 1 << 20, upload: 1 << 30 }
    }
}

/// The body limit of a capability: its declared one, or the host's default.
pub fn capability_limit(capability: &CapabilityInfo, default: usize) -> usize {
    capability
        .input_schema
        .as_ref()
        .and_then(|s| s.get(MAX_BODY_KEYWORD))
        .and_then(serde_json::Value::as_u64)
        .map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// 413 naming the limit.
pub fn too_large(limit: u64, what: &str, how_to_raise: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than {limit} bytes, the limit for {what} ({how_to_raise})"
        ),
    )
}

/// The body's declared length, if the client sent a valid Content-Length.
pub fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Read a plugin call's body, refusing it (413) as soon as it is known to be over `limit`:
/// from its Content-Length before anything is read, or once the bytes read pass the limit.
/// `what` names the route class in the refusal (made only then: this is the hot path).
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    what: impl Fn() -> String,
) -> ApiResult<Vec<u8>> {
    let raise = "--max-body-bytes, or the capability's x-bkg-max-body-bytes";
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit as u64, &what(), raise));
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the request body broke off: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit as u64, &what(), raise));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
