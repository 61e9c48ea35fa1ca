//! The persistence API (signed like the rest): follow and unfollow channels
//! for a user, list a user's follows and the messages kept for them.
//!
//! `subscribe` and `unsubscribe` take `user_id` and `event` from a JSON body
//! or from the query string: the Node SDK's `pusher.post({path, params})`
//! sends `params` in the query string and no body. The query string is
//! signed like the body, so either form is authenticated.

use super::error::{bad_request, ApiError};
use super::signed::{query_param, query_value, Signed};
use crate::apps::App;
use crate::hub::persistence::Persistence;
use crate::hub::Hub;
use crate::protocol::channel::{channel_type, validate_channel_name, ChannelKind};
use crate::protocol::frames::catch_up_data;
use crate::store::StoreError;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use std::sync::Arc;

/// Body of `subscribe` and `unsubscribe`.
#[derive(Debug, Default, Deserialize)]
struct FollowRequest {
    user_id: Option<serde_json::Value>,
    event: Option<String>,
}

/// The store failed: 503, live delivery goes on (also pushi's routes).
pub(crate) fn unavailable(error: StoreError) -> ApiError {
    ApiError::Unavailable(format!("{error}; live delivery is unaffected, retry later"))
}

/// The hub's persistence, or 404 when it is off (also pushi's routes).
pub(crate) fn persistence(hub: &Hub) -> Result<&Arc<Persistence>, ApiError> {
    hub.persistence()
        .ok_or_else(|| ApiError::NotFound("persistence is not enabled".into()))
}

/// A user id must make a valid `personal-{user_id}` channel name.
fn check_user_id(app: &App, user_id: &str) -> Result<(), ApiError> {
    if user_id.is_empty() {
        return Err(bad_request("`user_id` must not be empty"));
    }
    validate_channel_name(&format!("personal-{user_id}"), app.max_channel_name_length)
        .map_err(|e| bad_request(format!("invalid user_id `{user_id}`: {e}")))
}

/// What to say when a follow field is missing.
const EXPECTED: &str = "expected user_id and event, in a JSON body or in the query string";

/// A follow field from the body or the query string. Both may carry it, but
/// then with the same value: two different ones are refused rather than one
/// silently preferred.
fn one_of(
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

/// The `user_id` and channel (`event`) of a follow request, from the JSON
/// body, the query string, or both (see [`one_of`]).
pub(crate) fn parse_follow(
    app: &App,
    body: &[u8],
    query: &str,
) -> Result<(String, String), ApiError> {
    let request: FollowRequest = if body.iter().all(u8::is_ascii_whitespace) {
        FollowRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("invalid JSON body: {e}; {EXPECTED}")))?
    };
    let body_user_id = match request.user_id {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(bad_request("`user_id` must be a string")),
    };
    let user_id = one_of("user_id", body_user_id, query_value(query, "user_id"))?;
    let channel = one_of("event", request.event, query_value(query, "event"))?;
    let (user_id, channel) = match (user_id, channel) {
        (Some(user_id), Some(channel)) => (user_id, channel),
        (None, None) => return Err(bad_request(format!("missing fields: {EXPECTED}"))),
        (None, Some(_)) => return Err(bad_request(format!("missing `user_id`: {EXPECTED}"))),
        (Some(_), None) => {
            return Err(bad_request(format!(
                "missing `event` (the channel to follow): {EXPECTED}"
            )))
        }
    };
    check_user_id(app, &user_id)?;
    validate_channel_name(&channel, app.max_channel_name_length)
        .map_err(|e| bad_request(format!("invalid channel `{channel}`: {e}")))?;
    if matches!(
        channel_type(&channel).kind,
        ChannelKind::Personal | ChannelKind::Peer | ChannelKind::ServerToUser
    ) {
        return Err(bad_request(format!(
            "`{channel}` cannot be followed: personal, peer and user channels are not stored"
        )));
    }
    Ok((user_id, channel))
}

/// `POST /apps/{app_id}/subscribe`: the user follows a channel (idempotent).
pub async fn subscribe(
    req: HttpRequest,
    signed: Signed,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let (user_id, channel) = parse_follow(&app, &body, req.query_string())?;
    let created = persistence(&hub)?
        .follow(&app.id, &user_id, &channel)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "subscribed": true, "created": created })))
}

/// `POST /apps/{app_id}/unsubscribe`: the user stops following (idempotent).
pub async fn unsubscribe(
    req: HttpRequest,
    signed: Signed,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let (user_id, channel) = parse_follow(&app, &body, req.query_string())?;
    let removed = persistence(&hub)?
        .unfollow(&app.id, &user_id, &channel)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "subscribed": false, "removed": removed })))
}

/// `GET /apps/{app_id}/users/{user_id}/subscriptions`.
pub async fn subscriptions(
    signed: Signed,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let (_, user_id) = path.into_inner();
    let Signed { app, .. } = signed;
    check_user_id(&app, &user_id)?;
    let channels = persistence(&hub)?
        .subscriptions(&app.id, &user_id)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "subscriptions": channels })))
}

/// `GET /apps/{app_id}/users/{user_id}/messages?since=&limit=`: what the
/// user's personal channel would replay.
pub async fn messages(
    req: HttpRequest,
    signed: Signed,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let (_, user_id) = path.into_inner();
    let Signed { app, .. } = signed;
    check_user_id(&app, &user_id)?;
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        query_param(&req, name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| bad_request(format!("`{name}` must be a non-negative integer")))
        })
    };
    let since = number("since", 0)?;
    let limit = match number("limit", 100)? {
        0 => return Err(bad_request("`limit` must be between 1 and 1000".to_owned())),
        n => n.min(1000) as usize,
    };
    let found = persistence(&hub)?
        .messages_for(&app.id, &user_id, since, limit)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(catch_up_data(&found)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    fn parse(body: &str, query: &str) -> Result<(String, String), String> {
        let app = AppConfig::with_credentials("a", "k", "s");
        parse_follow(&app, body.as_bytes(), query).map_err(|e| e.to_string())
    }

    #[test]
    fn fields_come_from_the_body_the_query_or_both() {
        let both = Ok(("u1".to_owned(), "news".to_owned()));
        assert_eq!(parse(r#"{"user_id":"u1","event":"news"}"#, ""), both);
        // The Node SDK's post({path, params}): no body, signature params around.
        assert_eq!(
            parse(
                "",
                "auth_key=k&auth_timestamp=1&user_id=u1&event=news&auth_signature=x"
            ),
            both
        );
        assert_eq!(parse(r#"{"user_id":"u1"}"#, "event=news"), both);
        assert_eq!(
            parse(r#"{"user_id":"u1","event":"news"}"#, "user_id=u1"),
            both
        );
        assert_eq!(
            parse(r#"{"user_id":7,"event":"news"}"#, "user_id=7")
                .unwrap()
                .0,
            "7"
        );
        assert_eq!(parse("", "user_id=a%40b&event=news").unwrap().0, "a@b");
    }

    #[test]
    fn missing_or_conflicting_fields_say_what_is_expected() {
        let expected = "expected user_id and event, in a JSON body or in the query string";
        for (body, query) in [
            ("", ""),
            ("  ", "auth_key=k"),
            ("{}", ""),
            (r#"{"event":"n"}"#, ""),
        ] {
            let error = parse(body, query).unwrap_err();
            assert!(error.contains(expected), "{body:?} {query:?}: {error}");
        }
        assert!(parse("{", "").unwrap_err().starts_with("invalid JSON body"));
        let conflict = parse(r#"{"user_id":"u1","event":"n"}"#, "user_id=u2").unwrap_err();
        assert!(
            conflict.contains("`user_id` is `u1` in the JSON body but `u2`"),
            "{conflict}"
        );
        assert!(parse(r#"{"user_id":[1],"event":"n"}"#, "").is_err());
    }
}
