//! The JSON error shape every route answers with: `{"error":{"code":"...","message":"..."}}`.
//! Its own module so that the auth middleware and the handlers both use it without
//! depending on each other.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use bkg_abi::ffi::ErrorKind;
use serde::Serialize;

use crate::dispatch::DispatchError;
use crate::registry::RegistryError;

/// An error answer: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Extra machine-readable detail (e.g. the failing fields of a config).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), details: None }
    }
    pub(crate) fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

/// The host's fields, plus OpenAI's `type` and `param`, so that an OpenAI client calling
/// `/v1` can parse an error the host answers before the plugin is reached (no key, a
/// stopped plugin, a body over the limit) like one from the plugin.
#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

/// OpenAI's error `type` for a status.
pub fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            error: ErrorInner {
                code: &self.code,
                message: &self.message,
                kind: openai_type(self.status),
                param: None,
                details: self.details.as_ref(),
            },
        })
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::NotLoaded(id) => {
                ApiError::not_found(format!("plugin '{id}' is not loaded"))
            }
            DispatchError::Stopped(id) => ApiError::new(
                StatusCode::CONFLICT,
                "plugin_stopped",
                format!(
                    "plugin '{id}' is stopped; start it with POST /api/core/plugins/{id}/start"
                ),
            ),
            DispatchError::Busy(id) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("plugin '{id}' is busy: its call queue is full, try again"),
            ),
            DispatchError::QueueBytes(id, limit) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "plugin '{id}' is busy: {}, try again",
                    crate::exec::queue_bytes_message(limit)
                ),
            ),
            DispatchError::Timeout(id, t) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("plugin '{id}' did not answer within {} ms", t.as_millis()),
            ),
            DispatchError::ClientGone(id) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "cancelled",
                format!("the client of the call to plugin '{id}' went away"),
            ),
            DispatchError::Lost(id) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("plugin '{id}' dropped the call without answering"),
            ),
            DispatchError::Plugin(f) => {
                let status = if f.kind == ErrorKind::PANICKED {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else if f.kind == ErrorKind::PLUGIN_CRASHED {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::from_u16(f.kind.0)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                };
                let status = if status.as_u16() == 499 { StatusCode::BAD_REQUEST } else { status };
                ApiError::new(status, f.kind.code(), f.message)
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotLoaded(_) => ApiError::not_found(e.to_string()),
            RegistryError::Failed(m) => ApiError::new(StatusCode::CONFLICT, "lifecycle_failed", m),
            RegistryError::Rejected(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "config_rejected", m)
            }
            RegistryError::Gone => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string())
            }
        }
    }
}

/// A store error as an answer: the database unreachable is 503 `database_unavailable` (with
/// what failed and that the host reconnects by itself), anything else a 500.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(_) => database_unavailable(&e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// 503 `database_unavailable`: `message` says what failed.
pub(crate) fn database_unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", message)
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_host_s_and_openai_s_fields() {
        let response =
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no key").error_response();
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures_util::FutureExt::now_or_never(body).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
        assert_eq!(v["error"]["message"], "no key");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(v["error"].as_object().unwrap().contains_key("param"), "{v}");
        assert_eq!(openai_type(StatusCode::CONFLICT), "invalid_request_error");
        assert_eq!(openai_type(StatusCode::SERVICE_UNAVAILABLE), "server_error");
    }
}
