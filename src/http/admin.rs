//! The admin API: `/admin/apps` (list, create, show, update, delete),
//! guarded by the server-wide `[admin] token` sent as
//! `Authorization: Bearer <token>`, never by an app's secret.
//!
//! Without a token configured the admin API is off: every route answers
//! 404 saying how to turn it on. A missing or wrong token is 401 (counted
//! in `rusher_admin_requests_total{result="unauthorized"}`, logged
//! throttled). The logic lives in [`crate::apps::admin`].

use crate::apps::admin::{AdminError, AppsAdmin};
use crate::apps::{App, AppSource};
use crate::metrics::Metrics;
use crate::throttled_log::ThrottledLog;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the admin routes need, shared by every worker.
pub struct AdminState {
    /// The operations; `None` when the admin API is off (no token).
    admin: Option<(AppsAdmin, String)>,
    metrics: Metrics,
    refused_log: ThrottledLog,
}

impl AdminState {
    /// The admin API with `token`, or off when `None`.
    pub fn new(admin: AppsAdmin, token: Option<String>, metrics: Metrics) -> Self {
        AdminState {
            admin: token.map(|token| (admin, token)),
            metrics,
            refused_log: ThrottledLog::new(10_000),
        }
    }

    /// The operations when the request carries the token; the refusal otherwise.
    fn authorize(&self, req: &HttpRequest) -> Result<&AppsAdmin, Box<HttpResponse>> {
        let Some((admin, token)) = &self.admin else {
            return Err(Box::new(self.answer(
                "off",
                StatusCode::NOT_FOUND,
                "the admin API is off: set [admin] token (or RUSHER_ADMIN_TOKEN) to turn it on",
            )));
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        match given {
            Some(given) if same_secret(given.trim(), token) => Ok(admin),
            _ => {
                if let Some(suppressed) = self.refused_log.ready() {
                    let peer = req
                        .peer_addr()
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default();
                    tracing::warn!(%peer, suppressed, "admin API request with a missing or wrong token refused");
                }
                Err(Box::new(self.answer(
                    "unauthorized",
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong admin token (Authorization: Bearer <[admin] token>)",
                )))
            }
        }
    }

    fn answer(&self, result: &str, status: StatusCode, message: &str) -> HttpResponse {
        self.metrics
            .admin_requests
            .with_label_values(&[result])
            .inc();
        HttpResponse::build(status).json(json!({ "error": message }))
    }

    fn refused(&self, error: AdminError) -> HttpResponse {
        let (result, status) = match &error {
            AdminError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            AdminError::Invalid(_) => ("invalid", StatusCode::BAD_REQUEST),
            AdminError::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            AdminError::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        };
        self.answer(result, status, &error.to_string())
    }

    fn ok(&self, status: StatusCode, body: Value) -> HttpResponse {
        self.metrics.admin_requests.with_label_values(&["ok"]).inc();
        HttpResponse::build(status).json(body)
    }
}

/// Compares in time independent of where the strings differ (the digests
/// have one length whatever the inputs).
pub(crate) fn same_secret(given: &str, token: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// An app as the admin API shows it: every option, credentials, source.
fn shown(app: &App, source: AppSource) -> Value {
    let mut value = serde_json::to_value(app).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("source".into(), Value::String(source.label().into()));
    }
    value
}

fn body(bytes: &[u8]) -> Result<Value, AdminError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes).map_err(|e| AdminError::Invalid(format!("body is not JSON: {e}")))
}

/// Registers `/admin/apps` and `/admin/apps/{id}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/apps")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/admin/apps/{id}")
            .route(web::get().to(show))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

async fn list(req: HttpRequest, state: web::Data<Arc<AdminState>>) -> HttpResponse {
    let admin = match state.authorize(&req) {
        Ok(admin) => admin,
        Err(refused) => return *refused,
    };
    let apps: Vec<Value> = admin
        .list()
        .iter()
        .map(|(app, source)| shown(app, *source))
        .collect();
    state.ok(StatusCode::OK, json!({ "apps": apps }))
}

async fn create(
    req: HttpRequest,
    bytes: web::Bytes,
    state: web::Data<Arc<AdminState>>,
) -> HttpResponse {
    let admin = match state.authorize(&req) {
        Ok(admin) => admin,
        Err(refused) => return *refused,
    };
    let created = match body(&bytes) {
        Ok(options) => admin.create(options).await,
        Err(error) => Err(error),
    };
    match created {
        Ok(app) => state.ok(StatusCode::CREATED, shown(&app, AppSource::Store)),
        Err(error) => state.refused(error),
    }
}

async fn show(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<Arc<AdminState>>,
) -> HttpResponse {
    let admin = match state.authorize(&req) {
        Ok(admin) => admin,
        Err(refused) => return *refused,
    };
    match admin.show(&id) {
        Ok((app, source)) => state.ok(StatusCode::OK, shown(&app, source)),
        Err(error) => state.refused(error),
    }
}

async fn update(
    req: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
    state: web::Data<Arc<AdminState>>,
) -> HttpResponse {
    let admin = match state.authorize(&req) {
        Ok(admin) => admin,
        Err(refused) => return *refused,
    };
    let updated = match body(&bytes) {
        Ok(changes) => admin.update(&id, changes).await,
        Err(error) => Err(error),
    };
    match updated {
        Ok(app) => state.ok(StatusCode::OK, shown(&app, AppSource::Store)),
        Err(error) => state.refused(error),
    }
}

async fn delete(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<Arc<AdminState>>,
) -> HttpResponse {
    let admin = match state.authorize(&req) {
        Ok(admin) => admin,
        Err(refused) => return *refused,
    };
    match admin.delete(&id).await {
        Ok(()) => state.ok(StatusCode::OK, json!({ "deleted": id.as_str() })),
        Err(error) => state.refused(error),
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 §11.1, RFC 6750 §2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(super::bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(super::bearer_token("Basic abc"), None);
        assert_eq!(super::bearer_token("Bearerabc"), None);
    }

    use super::*;

    #[test]
    fn the_token_compare_needs_the_exact_token() {
        assert!(same_secret("0123456789abcdef", "0123456789abcdef"));
        assert!(!same_secret("0123456789abcde", "0123456789abcdef"));
        assert!(!same_secret("", "0123456789abcdef"));
    }
}
