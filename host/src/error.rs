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

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
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

pub(crate) type ApiResult<T> = Result<T, ApiError>;
