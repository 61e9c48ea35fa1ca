//! pushi routes rusher does not serve: each answers 501 in pushi's error
//! shape, saying what rusher offers instead. Listed in the README's
//! "Coming from pushi" section.

use super::error::PushiError;
use actix_web::{HttpResponse, ResponseError};

/// 501 with `message`.
fn not_served(message: &str) -> HttpResponse {
    PushiError::not_implemented(message).error_response()
}

/// `/apns` (Apple push).
pub async fn apns() -> HttpResponse {
    not_served(
        "Apple push (pushi's /apns) is not supported by rusher: register a Web Push \
         subscription (/pushi/web_pushes) or an HTTP callback (/pushi/webs) instead",
    )
}

/// `/messaging/*` (send to adapters directly, without an event).
pub async fn messaging() -> HttpResponse {
    not_served(
        "pushi's /messaging routes are not served: register the target on a channel \
         (/pushi/webs, /pushi/smtps, /pushi/web_pushes; personal-{user_id} for a user) \
         and trigger an event on it (POST /pushi/events)",
    )
}
