//! pushi routes rusher does not serve: each answers 501 in pushi's error
//! shape, saying what rusher offers instead. Listed in the README's
//! "Coming from pushi" section.

use super::error::PushiError;
use actix_web::{HttpResponse, ResponseError};

/// 501 with `message`.
fn not_served(message: &str) -> HttpResponse {
    PushiError::not_implemented(message).error_response()
}

/// `/apps`, `/apps/{ident}` (list, create, show, update).
pub async fn apps() -> HttpResponse {
    not_served(
        "pushi's /apps routes are not served: rusher never creates an app without \
         authentication; apps come from the config file's [[apps]] (or rusher's admin \
         API, guarded by the server's admin token)",
    )
}

/// `/webs` (per-user HTTP callbacks).
pub async fn webs() -> HttpResponse {
    not_served(
        "pushi's /webs (HTTP callbacks per event) are not served by this API; \
         app-wide signed webhooks are configured per app ([[apps.webhooks]])",
    )
}

/// `/smtps` (e-mail per event).
pub async fn smtps() -> HttpResponse {
    not_served("pushi's /smtps (e-mail notifications) are not served by this API")
}

/// `/web_pushes` and `/vapid_key` (browser Web Push).
pub async fn web_pushes() -> HttpResponse {
    not_served(
        "pushi's /web_pushes and /vapid_key (Web Push notifications) are not served by this API",
    )
}

/// `/apns` (Apple push).
pub async fn apns() -> HttpResponse {
    not_served("Apple push (pushi's /apns) is not supported by rusher")
}

/// `/messaging/*` (send to adapters directly, without an event).
pub async fn messaging() -> HttpResponse {
    not_served(
        "pushi's /messaging routes are not served: trigger an event on a channel \
         (POST /pushi/events); its followers get it on personal-{user_id}",
    )
}
