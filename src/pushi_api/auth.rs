//! `login`, `logout`, and the [`Session`] every other pushi route requires:
//! the `sid` query parameter (the PyPI client adds it to every call) holding
//! a token from [`super::session`].

use super::error::PushiError;
use super::session::{self, TokenError, TokenParts};
use super::PushiApi;
use crate::apps::App;
use crate::http::error::ApiError;
use crate::http::signed::query_param;
use crate::hub::invalidation::Change;
use crate::hub::Hub;
use actix_web::dev::Payload;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use futures_util::future::{ready, Ready};
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Equal strings, in a time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn shared(req: &HttpRequest) -> Result<(&Arc<Hub>, &PushiApi), PushiError> {
    match (
        req.app_data::<Data<Arc<Hub>>>(),
        req.app_data::<Data<PushiApi>>(),
    ) {
        (Some(hub), Some(api)) => Ok((hub.get_ref(), api.get_ref())),
        _ => Err(ApiError::Unavailable("server is not configured".into()).into()),
    }
}

/// What every authenticated request passes before its handler: the server
/// accepts requests, the app is on, and within its API rate limit (the
/// same budget as the Pusher HTTP API).
fn admit(hub: &Hub, app: &App) -> Result<(), PushiError> {
    if !hub.is_accepting() {
        return Err(ApiError::Unavailable("server is shutting down".into()).into());
    }
    if !app.enabled {
        return Err(PushiError::not_authenticated("the app is disabled"));
    }
    if !hub.allow_api_request(app) {
        return Err(ApiError::TooManyRequests(format!(
            "more than {} API requests per second for this app",
            app.max_api_requests_per_second
        ))
        .into());
    }
    Ok(())
}

/// A request with a valid session: the app it is for, and its token.
pub struct Session {
    /// The app logged in.
    pub app: Arc<App>,
    /// The token, for `logout`.
    pub token: TokenParts,
}

impl Session {
    fn from_request_sync(req: &HttpRequest) -> Result<Self, PushiError> {
        let (hub, api) = shared(req)?;
        let sid = query_param(req, "sid")
            .filter(|sid| !sid.is_empty())
            .ok_or_else(|| PushiError::not_authenticated("no session: missing `sid`"))?;
        let token = session::parse(&sid).map_err(PushiError::not_authenticated)?;
        let app = hub
            .apps()
            .by_id(&token.app_id)
            .ok_or(TokenError::UnknownApp)
            .map_err(PushiError::not_authenticated)?;
        session::verify(&token, &app.secret, now()).map_err(PushiError::not_authenticated)?;
        if api.revoked.contains(&token.nonce) {
            return Err(PushiError::not_authenticated(TokenError::Revoked));
        }
        admit(hub, &app)?;
        Ok(Session { app, token })
    }
}

impl FromRequest for Session {
    type Error = PushiError;
    type Future = Ready<Result<Self, PushiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Session::from_request_sync(req))
    }
}

/// `GET /pushi/login?app_id=&app_key=&app_secret=` → `{"token": sid}`.
/// All three must match one app (403 otherwise, naming none of them).
pub async fn login(req: HttpRequest) -> Result<HttpResponse, PushiError> {
    let (hub, api) = shared(&req)?;
    let field = |name: &str| query_param(&req, name).unwrap_or_default();
    let (app_id, app_key, app_secret) = (field("app_id"), field("app_key"), field("app_secret"));
    let app = hub
        .apps()
        .by_id(&app_id)
        // A config app answers to its aliases too; the token names its id.
        .filter(|app| same(&app.key, &app_key) & same(&app.secret, &app_secret))
        .ok_or_else(PushiError::invalid_credentials)?;
    admit(hub, &app)?;
    let expiry = now().saturating_add(api.settings.session_ttl_secs);
    let token = session::issue(&app.id, &app.secret, expiry);
    tracing::debug!(app = %app.id, "pushi login");
    Ok(HttpResponse::Ok().json(json!({ "token": token })))
}

/// `GET /pushi/logout?sid=` → `{"result": "success"}`; the token is
/// refused from then on, by this node at once and by the others as soon as
/// the announcement reaches them ([`crate::hub::invalidation`]).
pub async fn logout(req: HttpRequest, session: Session) -> Result<HttpResponse, PushiError> {
    let (hub, api) = shared(&req)?;
    let TokenParts { nonce, expiry, .. } = session.token;
    api.revoked.revoke(&nonce, expiry, now());
    hub.invalidations()
        .announce(Change::Logout { nonce, expiry });
    Ok(success())
}

/// appier's answer for a handler that returns nothing.
pub fn success() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "result": "success" }))
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("secret", "secret"));
        assert!(!same("secret", "secreT"));
        assert!(!same("secret", "secret2"));
        assert!(!same("", "x"));
        assert!(same("", ""));
    }
}
