//! The persistence API (signed like the rest): follow and unfollow channels
//! for a user, list a user's follows and the messages kept for them.

use super::error::{bad_request, ApiError};
use super::signed::{query_param, Signed};
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
#[derive(Debug, Deserialize)]
struct FollowRequest {
    user_id: Option<serde_json::Value>,
    event: Option<String>,
}

fn unavailable(error: StoreError) -> ApiError {
    ApiError::Unavailable(format!("{error}; live delivery is unaffected, retry later"))
}

fn persistence(hub: &Hub) -> Result<&Arc<Persistence>, ApiError> {
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

fn parse_follow(app: &App, body: &[u8]) -> Result<(String, String), ApiError> {
    let request: FollowRequest =
        serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))?;
    let user_id = match request.user_id {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(bad_request("missing `user_id` (string)")),
    };
    check_user_id(app, &user_id)?;
    let channel = request
        .event
        .ok_or_else(|| bad_request("missing `event` (the channel to follow)"))?;
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
pub async fn subscribe(signed: Signed, hub: Data<Arc<Hub>>) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let (user_id, channel) = parse_follow(&app, &body)?;
    let created = persistence(&hub)?
        .follow(&app.id, &user_id, &channel)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "subscribed": true, "created": created })))
}

/// `POST /apps/{app_id}/unsubscribe`: the user stops following (idempotent).
pub async fn unsubscribe(signed: Signed, hub: Data<Arc<Hub>>) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let (user_id, channel) = parse_follow(&app, &body)?;
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
    let limit = number("limit", 100)?.clamp(1, 1000) as usize;
    let found = persistence(&hub)?
        .messages_for(&app.id, &user_id, since, limit)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(catch_up_data(&found)))
}
