//! pushi's `apps` and `vapid_key` routes for a logged-in app, mapped onto
//! rusher's apps ([`AppsAdmin`]) and VAPID key ([`crate::notify::vapid`]).
//!
//! A session sees and changes its own app only: `GET /apps` lists it,
//! `GET /apps/{ident}` shows it, `PUT /apps/{ident}` changes what an app
//! may change about itself (`name`, `vapid_key`, `vapid_email`) through
//! [`AppsAdmin::update`], with the admin API's checks. `POST /apps` is
//! refused: pushi creates apps without any login, rusher only through its
//! admin API (`POST /admin/apps`, the server's admin token).

use super::auth::Session;
use super::error::PushiError;
use super::PushiApi;
use crate::apps::admin::AdminError;
use crate::apps::App;
use crate::http::signed::read_body;
use crate::http::HttpSettings;
use crate::notify::vapid::public_key_base64url;
use actix_web::web::{Data, Path, Payload};
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

/// What `vapid_key` shows instead of the private key (and, sent back in a
/// `PUT`, means "unchanged").
pub const REDACTED: &str = "[redacted]";

/// pushi's `App` fields rusher applies, and the app option each sets.
const APPLIED: [(&str, &str); 3] = [
    ("name", "name"),
    ("vapid_key", "vapid_private_key"),
    ("vapid_email", "vapid_subject"),
];

/// pushi's `App` fields a `PUT` may carry that rusher leaves as they are:
/// the credentials (immutable in pushi too), Apple push (out of scope),
/// `smtp_url` (e-mail goes through the server's `[notifications.smtp]`),
/// and appier's bookkeeping (what `GET /apps/{ident}` gives back).
const IGNORED: [&str; 13] = [
    "ident",
    "key",
    "secret",
    "apn_sandbox",
    "apn_key",
    "apn_cer",
    "smtp_url",
    "enabled",
    "description",
    "meta",
    "instance",
    "created",
    "modified",
];

/// The app as pushi's `App.map()`. `vapid_key` is [`REDACTED`] when set
/// (a private key is not echoed); what rusher has no equivalent for is
/// null or false; `created`/`modified` are 0.
pub fn app_map(app: &App) -> Value {
    json!({
        "_id": app.id,
        "id": app.id,
        "ident": app.id,
        "key": app.key,
        "secret": app.secret,
        "name": app.name.clone().unwrap_or_default(),
        "enabled": app.enabled,
        "description": null,
        "meta": {},
        "apn_sandbox": false,
        "apn_key": null,
        "apn_cer": null,
        "vapid_key": app.vapid_private_key.as_ref().map(|_| REDACTED),
        "vapid_email": app.vapid_subject,
        "smtp_url": null,
        "created": 0,
        "modified": 0,
        "instance": app.id,
    })
}

/// The session's app when `ident` names it (its id or an alias); pushi's
/// 404 `App not found` otherwise, as pushi scopes apps to the session.
fn own<'a>(session: &'a Session, ident: &str) -> Result<&'a App, PushiError> {
    let app = &*session.app;
    if app.id == ident || app.id_aliases.iter().any(|a| a == ident) {
        Ok(app)
    } else {
        Err(PushiError::not_found("App not found"))
    }
}

/// `GET /pushi/apps` → `{"apps": [the session's app]}`.
pub async fn list(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "apps": [app_map(&session.app)] }))
}

/// `GET /pushi/apps/{ident}` → the session's app.
pub async fn show(session: Session, ident: Path<String>) -> Result<HttpResponse, PushiError> {
    Ok(HttpResponse::Ok().json(app_map(own(&session, &ident)?)))
}

/// `POST /pushi/apps`: refused (403), naming the admin API.
pub async fn create() -> Result<HttpResponse, PushiError> {
    Err(PushiError::forbidden(
        "rusher never creates an app without authentication: create it with the admin API \
         (POST /admin/apps with the server's admin token, README \"Apps at runtime\") or \
         in the config file's [[apps]]",
    ))
}

/// The admin changes a pushi `PUT` body asks for (see [`APPLIED`],
/// [`IGNORED`]); any other field is a 400 naming the accepted ones.
fn changes(body: Map<String, Value>) -> Result<Map<String, Value>, PushiError> {
    let mut changes = Map::new();
    for (field, value) in body {
        if let Some((_, option)) = APPLIED.iter().find(|(f, _)| *f == field) {
            if *option == "vapid_private_key" && value.as_str() == Some(REDACTED) {
                continue;
            }
            let value = match value {
                // pushi's empty form value clears the field.
                Value::String(s) if s.is_empty() => Value::Null,
                Value::String(_) | Value::Null => value,
                _ => {
                    return Err(PushiError::field(
                        &field,
                        format!("`{field}` must be a string"),
                    ))
                }
            };
            changes.insert((*option).to_owned(), value);
        } else if !IGNORED.contains(&field.as_str()) {
            return Err(PushiError::field(
                &field,
                format!(
                    "`{field}` cannot be changed here: an app may change its name, vapid_key \
                     and vapid_email (other options: the admin API, PUT /admin/apps/{{id}})"
                ),
            ));
        }
    }
    Ok(changes)
}

/// `PUT /pushi/apps/{ident}` (the client's `update_app`) → the app as now
/// served. Only the session's own app; only a runtime app (one from the
/// config file is changed there: 409); checked like the admin API (a
/// `vapid_key` needs a `vapid_email`, ...: 400).
pub async fn update(
    session: Session,
    ident: Path<String>,
    payload: Payload,
    api: Data<PushiApi>,
    settings: Data<HttpSettings>,
) -> Result<HttpResponse, PushiError> {
    let app = own(&session, &ident)?;
    let body = read_body(payload.into_inner(), settings.max_request_bytes).await?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| PushiError::field("name", format!("invalid JSON body: {e}")))?
    };
    let Value::Object(body) = body else {
        return Err(PushiError::field("name", "the body must be a JSON object"));
    };
    let changes = changes(body)?;
    let admin = api
        .apps
        .as_ref()
        .ok_or_else(|| PushiError::operational("apps cannot be changed on this server"))?;
    let updated = admin
        .update(&app.id, Value::Object(changes))
        .await
        .map_err(|error| match error {
            AdminError::NotFound(_) => PushiError::not_found("App not found"),
            AdminError::Invalid(message) => PushiError::field("app", message),
            AdminError::Conflict(message) => PushiError::conflict(message),
            AdminError::Unavailable(message) => {
                crate::http::error::ApiError::Unavailable(message).into()
            }
        })?;
    Ok(HttpResponse::Ok().json(app_map(&updated)))
}

/// `GET /pushi/vapid_key` → `{"vapid_public_key": base64url of the
/// uncompressed P-256 point}` of the app's `vapid_private_key`; without one
/// pushi's 500 `OperationalError`.
pub async fn vapid_key(session: Session) -> Result<HttpResponse, PushiError> {
    let key = session.app.vapid_private_key.as_deref().ok_or_else(|| {
        PushiError::operational(
            "VAPID credentials not configured for this app: set its vapid_private_key and \
             vapid_subject (PUT /pushi/apps/{ident} with vapid_key and vapid_email, the admin \
             API, or the config file)",
        )
    })?;
    let public = public_key_base64url(key)
        .map_err(|e| PushiError::operational(format!("Failed to derive VAPID public key: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({ "vapid_public_key": public })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_applies_name_and_vapid_fields_ignores_pushis_others_refuses_the_rest() {
        let body = json!({
            "name": "shop", "vapid_key": "k", "vapid_email": "", "secret": "s",
            "apn_key": "x", "smtp_url": "smtp://h"
        });
        let Value::Object(body) = body else { panic!() };
        let changes = changes(body).unwrap();
        assert_eq!(
            Value::Object(changes),
            json!({"name": "shop", "vapid_private_key": "k", "vapid_subject": null})
        );
        let Value::Object(redacted) = json!({"vapid_key": REDACTED}) else {
            panic!()
        };
        assert!(super::changes(redacted).unwrap().is_empty());
        let Value::Object(unknown) = json!({"max_connections": 5}) else {
            panic!()
        };
        let error = super::changes(unknown).unwrap_err();
        assert!(
            error.to_string().contains("cannot be changed here"),
            "{error}"
        );
    }
}
