//! HTTP API errors: every refusal maps to a status and a JSON `{"error": ..}` here.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

/// A refused API request.
#[derive(Debug, Error)]
pub enum ApiError {
    /// 400: the request is malformed or breaks a limit.
    #[error("{0}")]
    BadRequest(String),
    /// 401: the signature check failed.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the app is disabled.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown app or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, not with this method.
    #[error("{message}")]
    MethodNotAllowed {
        /// What was refused, e.g. `POST /health`.
        message: String,
        /// The `Allow` header: the methods the path answers, e.g. `GET, HEAD`.
        allow: &'static str,
    },
    /// 413: body or event data too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: over the app's API rate limit.
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: shutting down, or a backend (the store) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After: 1`: a request with the same idempotency key is
    /// still publishing. A 5xx, so SDKs that retry (the sockudo ones) send
    /// the same key again and get the first request's answer.
    #[error("{0}")]
    RetryLater(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::RetryLater(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
            response.insert_header((header::ALLOW, *allow));
        }
        if let ApiError::RetryLater(_) = self {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// Shorthand for a 400 with a message.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}
