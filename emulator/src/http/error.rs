//! The one place where failures become status codes and Service Bus error bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use servicebus_wire::WireError;
use servicebus_wire::atom::{ERROR_CONTENT_TYPE, error_body};

use super::RequestContext;
use super::target::BadPath;
use crate::auth::AuthError;
use crate::broker;

/// A failed request: status, optional Service Bus sub-code and a detail for the client.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) sub_code: Option<u32>,
    pub(crate) detail: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, sub_code: u32, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            sub_code: Some(sub_code),
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 40000, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40400, detail)
    }

    pub(crate) fn method_not_allowed(method: &axum::http::Method, template: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            40000,
            format!("{method} is not supported on {template}"),
        )
    }

    /// The response, with the tracking fields the service appends to every detail.
    pub(crate) fn into_response(self, ctx: &RequestContext) -> Response {
        self.render(&ctx.namespace, &ctx.decoded_path)
    }

    /// As [`ApiError::into_response`], for a request known only by its path.
    pub(crate) fn render(self, namespace: &str, path: &str) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, detail = %self.detail, "request failed");
        } else {
            tracing::debug!(status = %self.status, detail = %self.detail, "request refused");
        }
        let sub = self
            .sub_code
            .map(|c| format!("SubCode={c}. "))
            .unwrap_or_default();
        let detail = format!(
            "{sub}{}. TrackingId:{}_G0, SystemTracker:{}.servicebus.windows.net:{}, Timestamp:{}",
            self.detail.trim_end_matches('.'),
            uuid::Uuid::new_v4(),
            namespace,
            path.trim_start_matches('/'),
            chrono::Utc::now().format("%m/%d/%Y %H:%M:%S")
        );
        let mut response = (self.status, error_body(self.status.as_u16(), &detail)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ERROR_CONTENT_TYPE),
        );
        response
    }
}

impl From<broker::Error> for ApiError {
    fn from(e: broker::Error) -> Self {
        match e {
            broker::Error::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, 40400, e.to_string())
            }
            broker::Error::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, 40900, format!("Conflict. {e}"))
            }
            broker::Error::Name(_)
            | broker::Error::Rule(_)
            | broker::Error::WrongKind { .. }
            | broker::Error::CreationOnly { .. }
            | broker::Error::PropertiesTooLarge { .. }
            | broker::Error::ClockNotManual
            | broker::Error::ClockOutOfRange { .. } => ApiError::bad_request(e.to_string()),
            broker::Error::Missing { .. } | broker::Error::Render { .. } => {
                tracing::error!(error = %e, "internal failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50000,
                    "Internal server error",
                )
            }
            broker::Error::LockLost { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, 40400, e.to_string())
            }
            broker::Error::Disabled { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, 40301, e.to_string())
            }
            broker::Error::QuotaExceeded { sub_code, .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                sub_code,
                format!("Quota exceeded. {e}"),
            ),
            broker::Error::TooLarge { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                40300,
                format!("The message is too large: {e}"),
            ),
            broker::Error::Store(source) => {
                tracing::error!(error = %source, cause = ?std::error::Error::source(&source), "storage failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50000,
                    "Internal server error",
                )
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match &e {
            AuthError::Unauthenticated(sas) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                sas.sub_code(),
                format!("Unauthorized: {e}"),
            ),
            AuthError::Bearer(jwt) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                jwt.sub_code(),
                format!("Unauthorized: {e}"),
            ),
            AuthError::MissingClaim { claim } => ApiError::new(
                StatusCode::FORBIDDEN,
                40100,
                format!(
                    "Unauthorized access. '{claim}' claim(s) are required to perform this operation"
                ),
            ),
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<BadPath> for ApiError {
    fn from(e: BadPath) -> Self {
        ApiError::not_found(format!(
            "No service is hosted at the specified address: {}",
            e.0
        ))
    }
}
