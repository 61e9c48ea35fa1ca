//! Admission of an API request: app lookup, body size, and the request signature.
//!
//! The app is the one named by the `{app_id}` path segment; on a route
//! without one (`/users/{user_id}/terminate_connections`, which the PyPI SDK
//! calls without the `/apps/{app_id}` prefix) it is the app whose key is the
//! request's `auth_key`, and the signature must then verify with that app's
//! secret like any other.

use super::error::ApiError;
use super::HttpSettings;
use crate::apps::App;
use crate::hub::Hub;
use crate::protocol::auth::{query_params, verify_request, SignedRequest};
use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut, Data};
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Reads the body, refusing (413) as soon as it passes `limit` bytes.
/// A body that arrives in one chunk (most: the SDKs send small ones) is
/// kept as it came, without a copy.
pub(crate) async fn read_body(mut payload: Payload, limit: usize) -> Result<Bytes, ApiError> {
    // `only` holds the body while it is one chunk; `joined` once it is more.
    let mut only: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read body: {e}")))?;
        let held = only.as_ref().map_or(joined.len(), Bytes::len);
        if held + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "request body is larger than {limit} bytes"
            )));
        }
        if only.is_none() && joined.is_empty() {
            only = Some(chunk);
            continue;
        }
        if let Some(first) = only.take() {
            joined.extend_from_slice(&first);
        }
        joined.extend_from_slice(&chunk);
    }
    Ok(only.unwrap_or_else(|| joined.freeze()))
}

/// An API request that passed admission: its app, and the body exactly as
/// signed. Every API handler takes one, so none can forget the signature
/// check.
pub struct Signed {
    /// The app named by `{app_id}`, or by `auth_key` on a route without it.
    pub app: Arc<App>,
    /// The raw body.
    pub body: Bytes,
}

impl FromRequest for Signed {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let (Some(hub), Some(settings)) = (
                req.app_data::<Data<Arc<Hub>>>(),
                req.app_data::<Data<HttpSettings>>(),
            ) else {
                return Err(ApiError::Unavailable("server is not configured".into()));
            };
            let (app, body) = admit(&req, payload, hub, settings).await?;
            Ok(Signed { app, body })
        })
    }
}

/// The app the request is for: by `{app_id}` (404 when unknown), or, on a
/// route without it, by `auth_key` (401 when missing or unknown: the
/// signature names no app).
fn find_app(req: &HttpRequest, hub: &Hub) -> Result<Arc<App>, ApiError> {
    if let Some(app_id) = req.match_info().get("app_id") {
        return hub
            .apps()
            .by_id(app_id)
            .ok_or_else(|| ApiError::NotFound(format!("unknown app id `{app_id}`")));
    }
    let key = query_param(req, "auth_key")
        .ok_or_else(|| ApiError::Unauthorized("missing query parameter auth_key".into()))?;
    hub.apps()
        .by_key(&key)
        .ok_or_else(|| ApiError::Unauthorized(format!("auth_key `{key}` belongs to no app")))
}

/// Finds the app, reads the body and checks the signature. On success the
/// request is the app's and the body is exactly what was signed.
async fn admit(
    req: &HttpRequest,
    payload: Payload,
    hub: &Hub,
    settings: &HttpSettings,
) -> Result<(Arc<App>, Bytes), ApiError> {
    if !hub.is_accepting() {
        return Err(ApiError::Unavailable("server is shutting down".into()));
    }
    let app = find_app(req, hub)?;
    let body = read_body(payload, settings.max_request_bytes).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let request = SignedRequest {
        method: req.method().as_str(),
        path: req.uri().path(),
        raw_query: req.query_string(),
        body: &body,
    };
    verify_request(&app.key, &app.secret, &request, now)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    // Checked after the signature so that only the owner learns the app is off.
    if !app.enabled {
        return Err(ApiError::Forbidden("app is disabled".into()));
    }
    // Counted only for signed requests: a stranger cannot spend an app's budget.
    if !hub.allow_api_request(&app) {
        return Err(ApiError::TooManyRequests(format!(
            "more than {} API requests per second for this app",
            app.max_api_requests_per_second
        )));
    }
    Ok((app, body))
}

/// The decoded value of query parameter `name`, if present.
pub fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    query_value(req.query_string(), name)
}

/// The decoded value (`+` and `%XX` decoded) of parameter `name` (lower
/// case) in a raw query string, if present. Names are read as the request
/// signature reads them ([`query_params`]: decoded, lower-cased); a signed
/// request never repeats one (refused at admission), elsewhere the first wins.
pub fn query_value(raw_query: &str, name: &str) -> Option<String> {
    query_params(raw_query)
        .into_iter()
        .find(|param| param.name == name)
        .map(|param| param.value.into_owned())
}

/// The comma-separated `info` attributes asked for.
pub fn info_attributes(info: Option<&str>) -> Vec<String> {
    info.map(|info| {
        info.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_read_parameter_names_as_the_signature_does() {
        // The signature lower-cases and decodes names: `INFO=x` is signed
        // as `info=x`, so the handlers must read it as `info` too, or a
        // signed `info` could be hidden by re-spelling its name.
        assert_eq!(
            query_value("INFO=user_count", "info").as_deref(),
            Some("user_count")
        );
        assert_eq!(query_value("inf%6F=a+b", "info").as_deref(), Some("a b"));
        assert_eq!(query_value("info=%2C", "info").as_deref(), Some(","));
        assert_eq!(query_value("other=1", "info"), None);
    }

    #[actix_web::test]
    async fn a_body_in_several_chunks_is_joined_and_limited() {
        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        for chunk in [&b"ab"[..], b"", b"cd", b"e"] {
            sender.feed_data(Bytes::from_static(chunk));
        }
        sender.feed_eof();
        let body = read_body(Payload::from(payload), 5).await;
        assert_eq!(body.ok().as_deref(), Some(&b"abcde"[..]));

        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        sender.feed_data(Bytes::from_static(b"one"));
        sender.feed_eof();
        let body = read_body(Payload::from(payload), 3).await;
        assert_eq!(body.ok().as_deref(), Some(&b"one"[..]));

        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        sender.feed_data(Bytes::from_static(b"abc"));
        sender.feed_data(Bytes::from_static(b"d"));
        sender.feed_eof();
        assert!(matches!(
            read_body(Payload::from(payload), 3).await,
            Err(ApiError::PayloadTooLarge(_))
        ));
    }
}
