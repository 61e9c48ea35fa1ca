//! The notification registration API (signed like the rest; README
//! "Notifications"): register an HTTP callback, an e-mail address or a Web
//! Push subscription on a channel (or on a user's personal channel), remove
//! it, list a channel's registrations.
//!
//! Fields come from a JSON body or, like the follow API, from the query
//! string (the Node SDK's `pusher.post({path, params})`): there `endpoint`,
//! `p256dh` and `auth` make up `web_push`. A field given in both with
//! different values is refused.

use super::error::{bad_request, ApiError};
use super::signed::{query_value, Signed};
use crate::hub::Hub;
use crate::notify::registration::{self, Kind, Request, WebPushRequest, EXPECTED};
use crate::notify::{Notifier, RegisterError};
use crate::store::StoreError;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use std::sync::Arc;

/// A refused registration as the API answers it (also pushi's `/pushi/webs`,
/// `/smtps`, `/web_pushes`): a limit or a kind without a sender is a 400,
/// a store failure a 503.
pub fn register_error(error: RegisterError) -> ApiError {
    match error {
        RegisterError::Limit(message) => bad_request(message),
        RegisterError::NotConfigured(Kind::Email) => bad_request(
            "e-mail notifications are off on this server ([notifications.smtp] host is not set)",
        ),
        RegisterError::NotConfigured(kind) => bad_request(format!(
            "`{}` notifications are off on this server",
            kind.as_str()
        )),
        RegisterError::Store(error) => unavailable(error),
    }
}

/// A store failure as a 503 saying loaded registrations keep working.
pub fn unavailable(error: StoreError) -> ApiError {
    ApiError::Unavailable(format!(
        "{error}; registrations already loaded keep working, retry later"
    ))
}

/// The hub's notifier, or 404 when it is off (also pushi's routes).
pub(crate) fn notifier(hub: &Hub) -> Result<&Arc<Notifier>, ApiError> {
    hub.notifier()
        .ok_or_else(|| ApiError::NotFound("notifications are not enabled".into()))
}

/// `body` or `query`; the same value in both is fine, two different ones are not.
fn merge(
    name: &str,
    body: Option<String>,
    query: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (body, query) {
        (Some(body), Some(query)) if body != query => Err(bad_request(format!(
            "`{name}` is `{body}` in the JSON body but `{query}` in the query string"
        ))),
        (body, query) => Ok(body.or(query)),
    }
}

/// The request from the body and the query string.
fn request(body: &[u8], query: &str) -> Result<Request, ApiError> {
    let mut request: Request = if body.iter().all(u8::is_ascii_whitespace) {
        Request::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("invalid JSON body: {e}; {EXPECTED}")))?
    };
    let take = |name: &str| query_value(query, name);
    request.channel = merge("channel", request.channel.take(), take("channel"))?;
    let body_user = match request.user_id.take() {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(bad_request("`user_id` must be a string")),
    };
    request.user_id = merge("user_id", body_user, take("user_id"))?.map(Into::into);
    request.url = merge("url", request.url.take(), take("url"))?;
    request.email = merge("email", request.email.take(), take("email"))?;
    let (endpoint, p256dh, auth) = (take("endpoint"), take("p256dh"), take("auth"));
    if endpoint.is_some() || p256dh.is_some() || auth.is_some() {
        let push = request.web_push.get_or_insert_with(WebPushRequest::default);
        push.endpoint = merge("web_push.endpoint", push.endpoint.take(), endpoint)?;
        push.p256dh = merge("web_push.p256dh", push.p256dh.take(), p256dh)?;
        push.auth = merge("web_push.auth", push.auth.take(), auth)?;
    }
    Ok(request)
}

/// `POST /apps/{app_id}/notifications/subscribe` → `{"subscribed": true, "created": bool}`.
pub async fn subscribe(
    req: HttpRequest,
    signed: Signed,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let request = request(&body, req.query_string())?;
    let registration =
        registration::parse(&request, app.max_channel_name_length, true).map_err(bad_request)?;
    let created = notifier(&hub)?
        .register(&app.id, registration)
        .await
        .map_err(register_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "subscribed": true, "created": created })))
}

/// `POST /apps/{app_id}/notifications/unsubscribe` → `{"subscribed": false, "removed": bool}`.
pub async fn unsubscribe(
    req: HttpRequest,
    signed: Signed,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let request = request(&body, req.query_string())?;
    let registration =
        registration::parse(&request, app.max_channel_name_length, false).map_err(bad_request)?;
    let removed = notifier(&hub)?
        .unregister(&app.id, &registration)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "subscribed": false, "removed": removed })))
}

/// `GET /apps/{app_id}/notifications?channel=` (or `user_id=`) →
/// `{"notifications": [{"channel", "kind", "url"|"email"|"endpoint"}]}`,
/// as this node has them (other nodes' changes within 10 s).
pub async fn list(
    req: HttpRequest,
    signed: Signed,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let Signed { app, .. } = signed;
    let request = request(b"", req.query_string())?;
    let channel =
        registration::channel_of(&request, app.max_channel_name_length).map_err(bad_request)?;
    let listed: Vec<serde_json::Value> = notifier(&hub)?
        .registrations(&app.id, &channel)
        .iter()
        .map(|r| {
            let field = match r.kind {
                Kind::Web => "url",
                Kind::Email => "email",
                Kind::WebPush => "endpoint",
            };
            serde_json::json!({ "channel": r.channel, "kind": r.kind.as_str(), field: r.target })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "notifications": listed })))
}
