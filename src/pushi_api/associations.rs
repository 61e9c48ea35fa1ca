//! pushi's association routes, `webs`, `smtps` and `web_pushes` (list,
//! create, delete), mapped onto rusher's notification registrations
//! ([`crate::notify`]): pushi's `event` is rusher's channel, and
//! `personal-{u}` receives every channel `u` follows, as pushi's alias does.
//! A request is validated by [`registration::parse`] and stored by
//! [`Notifier::register`], the code path of `POST
//! /apps/{id}/notifications/subscribe`, so both APIs accept and refuse the
//! same registrations.
//!
//! Answers have the keys of pushi-service 0.6.10's `Web`, `SMTP` and
//! `WebPush` `map()`. Differences (README "Coming from pushi"): targets are
//! validated (pushi stores any string), `unsubscribe` removes every other
//! registration of the target (pushi removes one), a delete without `force`
//! of a missing registration is `{"result": "success"}` (pushi: 500 for
//! smtps), and `DELETE /webs/{url}` deletes all of the URL's (pushi's finds
//! none).

use super::auth::{success, Session};
use super::error::PushiError;
use super::PREFIX;
use crate::apps::App;
use crate::http::notifications::{notifier, register_error, unavailable};
use crate::http::signed::{query_param, read_body};
use crate::http::HttpSettings;
use crate::hub::Hub;
use crate::notify::registration::{self, Kind, Registration, Request, WebPushRequest};
use crate::notify::Notifier;
use crate::protocol::auth::verify_channel_auth;
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use std::sync::Arc;

/// One of pushi's association models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Association {
    /// `/webs`: an HTTP callback (`url`).
    Web,
    /// `/smtps`: an e-mail address (`email`).
    Smtp,
    /// `/web_pushes`: a Web Push subscription (`endpoint`, `p256dh`, `auth`).
    WebPush,
}

impl Association {
    /// The registration kind it maps onto.
    fn kind(self) -> Kind {
        match self {
            Association::Web => Kind::Web,
            Association::Smtp => Kind::Email,
            Association::WebPush => Kind::WebPush,
        }
    }

    /// The field naming the target, in pushi's bodies, filters and maps.
    fn field(self) -> &'static str {
        match self {
            Association::Web => "url",
            Association::Smtp => "email",
            Association::WebPush => "endpoint",
        }
    }

    /// The model's name, as in pushi's `... not found`.
    fn model(self) -> &'static str {
        match self {
            Association::Web => "Web",
            Association::Smtp => "SMTP",
            Association::WebPush => "WebPush",
        }
    }

    /// The path segment after the prefix (`webs`, `smtps`, `web_pushes`).
    fn path(self) -> &'static str {
        match self {
            Association::Web => "webs",
            Association::Smtp => "smtps",
            Association::WebPush => "web_pushes",
        }
    }
}

/// pushi's boolean query parameters (`unsubscribe`, `force`): absent,
/// empty, `0`, `false` and `None` are false.
fn flag(req: &HttpRequest, name: &str) -> bool {
    query_param(req, name).is_some_and(|v| {
        !matches!(
            v.to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "none" | "off"
        )
    })
}

/// A registration as pushi's model `map()`: the target field (and the keys
/// of a Web Push subscription), `event`, and appier's common fields. rusher
/// keeps no creation time (`created`, `modified` are 0); `id`/`_id` name
/// the registration (`{event}/{target}`).
fn map(association: Association, app: &App, registration: &Registration) -> Value {
    let id = format!("{}/{}", registration.channel, registration.target);
    let mut map = json!({
        "_id": id,
        "id": id,
        association.field(): registration.target,
        "event": registration.channel,
        "enabled": true,
        "description": null,
        "meta": {},
        "created": 0,
        "modified": 0,
        "instance": app.id,
    });
    if let (Some(keys), Some(object)) = (&registration.keys, map.as_object_mut()) {
        object.insert("p256dh".into(), json!(keys.p256dh));
        object.insert("auth".into(), json!(keys.auth));
    }
    map
}

/// The request for `target` on `channel` (keys only for a Web Push).
fn request(
    association: Association,
    channel: Option<String>,
    target: String,
    keys: Option<(Option<String>, Option<String>)>,
) -> Request {
    let mut request = Request {
        channel,
        ..Request::default()
    };
    match association {
        Association::Web => request.url = Some(target),
        Association::Smtp => request.email = Some(target),
        Association::WebPush => {
            let (p256dh, auth) = keys.unwrap_or_default();
            request.web_push = Some(WebPushRequest {
                endpoint: Some(target),
                p256dh,
                auth,
            });
        }
    }
    request
}

/// A string field of the JSON body (`None` when absent or null).
fn text(body: &Value, name: &str) -> Result<Option<String>, PushiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(PushiError::field(
            name,
            format!("`{name}` must be a string"),
        )),
    }
}

/// The registrations of `association`'s kind, optionally only `target`'s
/// and only on `channel`.
async fn matching(
    notifier: &Notifier,
    app: &App,
    association: Association,
    target: Option<&str>,
    channel: Option<&str>,
) -> Result<Vec<Registration>, PushiError> {
    let all = notifier.all(&app.id).await.map_err(unavailable)?;
    Ok(all
        .into_iter()
        .filter(|r| r.kind == association.kind())
        .filter(|r| target.is_none_or(|t| r.target == t))
        .filter(|r| channel.is_none_or(|c| r.channel == c))
        .collect())
}

/// `GET /pushi/{webs|smtps|web_pushes}?{url|email|endpoint}=&event=` →
/// `{"subscriptions": [...]}`, from the store (every node's).
pub async fn list(
    association: Association,
    req: HttpRequest,
    session: Session,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    let filter = |name: &str| query_param(&req, name).filter(|v| !v.is_empty());
    let (target, channel) = (filter(association.field()), filter("event"));
    let found = matching(
        notifier(&hub)?,
        &session.app,
        association,
        target.as_deref(),
        channel.as_deref(),
    )
    .await?;
    let subscriptions: Vec<Value> = found
        .iter()
        .map(|r| map(association, &session.app, r))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "subscriptions": subscriptions })))
}

/// `POST /pushi/{webs|smtps|web_pushes}?auth=&unsubscribe=` with
/// `{"url"|"email"|"endpoint", ["p256dh", "auth",] "event"}` → the
/// registration (the existing one when already there).
///
/// `auth`, when given for a `private-`, `presence-`, `peer-` or
/// `personal-` channel, must be pushi's signature
/// (`{app_key}:{hex HMAC-SHA256(secret, "{target}:{event}")}`), else 403;
/// without it the session (logged in with the app secret) is enough.
/// `unsubscribe` (the client sends true) first removes the target's
/// registrations on other channels, so a target follows one channel, as
/// in pushi.
pub async fn create(
    association: Association,
    req: HttpRequest,
    session: Session,
    payload: Payload,
    hub: Data<Arc<Hub>>,
    settings: Data<HttpSettings>,
) -> Result<HttpResponse, PushiError> {
    let body = read_body(payload.into_inner(), settings.max_request_bytes).await?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| PushiError::field("event", format!("invalid JSON body: {e}")))?
    };
    let field = association.field();
    let channel = text(&body, "event")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| PushiError::field("event", "missing `event` (the channel)"))?;
    let target = text(&body, field)?
        .ok_or_else(|| PushiError::field(field, format!("missing `{field}`")))?;
    let keys = match association {
        Association::WebPush => Some((text(&body, "p256dh")?, text(&body, "auth")?)),
        _ => None,
    };
    let app = &session.app;
    let registration = registration::parse(
        &request(association, Some(channel), target, keys),
        app.max_channel_name_length,
        true,
    )
    .map_err(|e| PushiError::field(field, e))?;
    if let Some(auth) = query_param(&req, "auth").filter(|a| !a.is_empty()) {
        let private = ["private-", "presence-", "peer-", "personal-"]
            .iter()
            .any(|p| registration.channel.starts_with(p));
        if private
            && !verify_channel_auth(
                &app.key,
                &app.secret,
                &registration.target,
                &registration.channel,
                None,
                &auth,
            )
        {
            return Err(PushiError::forbidden(format!(
                "Invalid signature: `auth` must be {{app_key}}:HMAC-SHA256(secret, \"{}:{}\")",
                registration.target, registration.channel
            )));
        }
    }
    let notifier = notifier(&hub)?;
    if flag(&req, "unsubscribe") {
        let others = matching(notifier, app, association, Some(&registration.target), None).await?;
        for other in others.iter().filter(|r| r.channel != registration.channel) {
            notifier
                .unregister(&app.id, other)
                .await
                .map_err(unavailable)?;
        }
    }
    let answer = map(association, app, &registration);
    notifier
        .register(&app.id, registration)
        .await
        .map_err(|e| PushiError::from(register_error(e)))?;
    Ok(HttpResponse::Ok().json(answer))
}

/// Removes `target`'s registration on `channel`: the registration, or
/// `{"result": "success"}` when there was none (404 with `force`).
async fn delete_one(
    association: Association,
    req: &HttpRequest,
    session: &Session,
    hub: &Hub,
    target: String,
    channel: String,
) -> Result<HttpResponse, PushiError> {
    let app = &session.app;
    let registration = registration::parse(
        &request(association, Some(channel), target, None),
        app.max_channel_name_length,
        false,
    )
    .map_err(|e| PushiError::field(association.field(), e))?;
    let notifier = notifier(hub)?;
    // The stored one, for its Web Push keys in the answer.
    let stored = matching(
        notifier,
        app,
        association,
        Some(&registration.target),
        Some(&registration.channel),
    )
    .await?;
    let removed = notifier
        .unregister(&app.id, &registration)
        .await
        .map_err(unavailable)?;
    if removed {
        let shown = stored.first().unwrap_or(&registration);
        return Ok(HttpResponse::Ok().json(map(association, app, shown)));
    }
    if flag(req, "force") {
        return Err(PushiError::not_found(format!(
            "{} not found",
            association.model()
        )));
    }
    Ok(success())
}

/// Removes every registration of `target` (of `association`'s kind):
/// `{"subscriptions": [the removed]}`.
async fn delete_all(
    association: Association,
    session: &Session,
    hub: &Hub,
    target: &str,
) -> Result<HttpResponse, PushiError> {
    let app = &session.app;
    let notifier = notifier(hub)?;
    // Normalised as when registered (an e-mail address is trimmed, ...).
    let normalised = registration::parse(
        &request(association, Some("x".into()), target.to_owned(), None),
        app.max_channel_name_length,
        false,
    )
    .map_err(|e| PushiError::field(association.field(), e))?
    .target;
    let found = matching(notifier, app, association, Some(&normalised), None).await?;
    for registration in &found {
        notifier
            .unregister(&app.id, registration)
            .await
            .map_err(unavailable)?;
    }
    let subscriptions: Vec<Value> = found.iter().map(|r| map(association, app, r)).collect();
    Ok(HttpResponse::Ok().json(json!({ "subscriptions": subscriptions })))
}

/// The raw (still percent-encoded) path after `/pushi/{path}/`.
fn raw_tail(req: &HttpRequest, association: Association) -> &str {
    let path = req.uri().path();
    let prefix_len = PREFIX.len() + association.path().len() + 2;
    path.get(prefix_len..).unwrap_or_default()
}

fn decode(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// `DELETE /pushi/webs/{url}/{event}` (the client sends the URL as it is,
/// slashes and all: the last segment is the event) or `DELETE
/// /pushi/webs/{url}` with the URL percent-encoded into one segment (all
/// of the URL's registrations).
pub async fn delete_web(
    req: HttpRequest,
    session: Session,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    let tail = raw_tail(&req, Association::Web);
    match tail.rsplit_once('/') {
        None => delete_all(Association::Web, &session, &hub, &decode(tail)).await,
        Some((url, event)) => {
            let (url, event) = (decode(url), decode(event));
            delete_one(Association::Web, &req, &session, &hub, url, event).await
        }
    }
}

/// `DELETE /pushi/smtps/{email}/{event}?force=`.
pub async fn delete_smtp(
    req: HttpRequest,
    session: Session,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    let (email, event) = path.into_inner();
    delete_one(Association::Smtp, &req, &session, &hub, email, event).await
}

/// `DELETE /pushi/smtps/{email}`: all of the address's registrations.
pub async fn delete_smtps(
    session: Session,
    path: Path<String>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    delete_all(Association::Smtp, &session, &hub, &path.into_inner()).await
}

/// `DELETE /pushi/web_pushes/{endpoint}?event=&force=` (the endpoint
/// percent-encoded, as the client sends it): with `event` that one
/// registration, without it all of the endpoint's.
pub async fn delete_web_push(
    req: HttpRequest,
    session: Session,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    let endpoint = decode(raw_tail(&req, Association::WebPush));
    match query_param(&req, "event").filter(|e| !e.is_empty()) {
        Some(event) => {
            delete_one(Association::WebPush, &req, &session, &hub, endpoint, event).await
        }
        None => delete_all(Association::WebPush, &session, &hub, &endpoint).await,
    }
}

/// The list and create handlers of one association, as actix handlers.
macro_rules! handlers {
    ($list:ident, $create:ident, $association:expr) => {
        #[doc = concat!("[`list`] for `", stringify!($association), "`.")]
        pub async fn $list(
            req: HttpRequest,
            session: Session,
            hub: Data<Arc<Hub>>,
        ) -> Result<HttpResponse, PushiError> {
            list($association, req, session, hub).await
        }

        #[doc = concat!("[`create`] for `", stringify!($association), "`.")]
        pub async fn $create(
            req: HttpRequest,
            session: Session,
            payload: Payload,
            hub: Data<Arc<Hub>>,
            settings: Data<HttpSettings>,
        ) -> Result<HttpResponse, PushiError> {
            create($association, req, session, payload, hub, settings).await
        }
    };
}

handlers!(list_webs, create_web, Association::Web);
handlers!(list_smtps, create_smtp, Association::Smtp);
handlers!(list_web_pushes, create_web_push, Association::WebPush);
