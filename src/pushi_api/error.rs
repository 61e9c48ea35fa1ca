//! Refusals of pushi's API, in pushi's JSON shape: appier answers an error
//! with `{"result": "error", "name": ..., "message": ..., "code": status}`
//! (and `errors`, per field, for a validation error). The PyPI client only
//! looks at the status (it raises `appier.HTTPError`; on 401 / 403 it logs
//! in again and retries once); a person reads `message`.

use crate::http::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};
use std::fmt;

/// A refused pushi API request.
#[derive(Debug)]
pub struct PushiError {
    status: StatusCode,
    name: &'static str,
    message: String,
    /// Per-field messages of a validation error (appier's `errors`).
    errors: Option<Map<String, Value>>,
}

impl PushiError {
    fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        PushiError {
            status,
            name,
            message: message.into(),
            errors: None,
        }
    }

    /// 403: no session, or a session that is invalid, expired or logged out.
    /// pushi answers 403 `User not authenticated`; so does rusher, with why.
    pub fn not_authenticated(why: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "NotAuthenticated",
            format!("User not authenticated: {why}"),
        )
    }

    /// 403: `login` with an unknown app or a wrong key or secret (pushi: 404
    /// `App not found`; see the README's differences).
    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "InvalidCredentials",
            "Invalid credentials: no app has this app_id, app_key and app_secret",
        )
    }

    /// 400 naming a missing or invalid field, with appier's `errors` map.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut errors = Map::new();
        errors.insert(field.to_owned(), json!([message.clone()]));
        PushiError {
            errors: Some(errors),
            ..Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
        }
    }

    /// 404 for something the app does not have.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundError", message)
    }

    /// 405: a pushi path asked with a method it does not serve.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    /// 403: a request the session may not make (another app, or creating
    /// an app, which needs the admin API).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "NotAllowed", message)
    }

    /// 409: the change conflicts with how the app is configured.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    /// 500 `OperationalError`, as pushi answers an app without the settings
    /// a route needs (`GET /vapid_key` without a VAPID key).
    pub fn operational(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "OperationalError",
            message,
        )
    }

    /// 501: a pushi route rusher does not serve; `message` says what to use.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "NotImplemented", message)
    }
}

impl From<ApiError> for PushiError {
    /// The HTTP API's refusals keep their status and message.
    fn from(error: ApiError) -> Self {
        let status = error.status_code();
        let name = match status {
            StatusCode::BAD_REQUEST => "ValidationError",
            StatusCode::NOT_FOUND => "NotFoundError",
            StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            _ => "Refused",
        };
        Self::new(status, name, error.to_string())
    }
}

impl fmt::Display for PushiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for PushiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({
            "result": "error",
            "name": self.name,
            "message": self.message,
            "code": self.status.as_u16(),
        });
        if let (Some(errors), Some(map)) = (&self.errors, body.as_object_mut()) {
            map.insert("errors".into(), Value::Object(errors.clone()));
        }
        HttpResponse::build(self.status).json(body)
    }
}
