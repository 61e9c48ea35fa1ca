//! The console's JSON API, under `/console/api/apps/{app_id}/`, every call
//! checked against the session cookie: no session 401, a session of
//! another app 403.
//!
//! - `GET overview`: `{"app_id", "connections"}` (open connections of the
//!   app, this node plus what the other nodes reported).
//! - `GET channels`: `{"channels": [{"name", "subscription_count",
//!   "user_count"}]}`, the occupied channels as `GET /apps/{id}/channels`
//!   lists them (the adapter's listing: the whole cluster with Redis),
//!   user channels left out, by name.
//! - `GET channels/{channel}/members`: `{"users": [{"id"}]}` of a presence
//!   channel (400 for another kind), as `GET .../users` answers.
//! - `POST events` with `{"channel", "event", "data"}` (`data`: JSON text):
//!   a test event, through the HTTP API's checks, limits and publish
//!   ([`crate::http::events::publish_pushi_event`]): 400 / 413 / 429 as
//!   the API answers them.
//! - `GET live`: the live stream ([`super::live`]).

use super::ConsoleApp;
use crate::http::channels::channel_name;
use crate::http::error::{bad_request, ApiError};
use crate::hub::Hub;
use crate::protocol::channel::{channel_type, ChannelKind};
use actix_web::web::{Data, Json, Path};
use actix_web::{HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// `GET /console/api/apps/{app_id}/overview`.
pub async fn overview(ConsoleApp(app): ConsoleApp, hub: Data<Arc<Hub>>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "app_id": app.id,
        "connections": hub.app_connection_count(&app.id),
    }))
}

/// `GET /console/api/apps/{app_id}/channels`.
pub async fn channels(ConsoleApp(app): ConsoleApp, hub: Data<Arc<Hub>>) -> HttpResponse {
    let mut stats = hub.occupied_channels(&app.id).await;
    stats.retain(|s| !s.name.starts_with("#server-to-user-"));
    stats.sort_by(|a, b| a.name.cmp(&b.name));
    let channels: Vec<Value> = stats
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "subscription_count": s.subscription_count,
                "user_count": s.user_count,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "channels": channels }))
}

/// `GET /console/api/apps/{app_id}/channels/{channel}/members`.
pub async fn members(
    ConsoleApp(app): ConsoleApp,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> HttpResponse {
    let (_, channel) = path.into_inner();
    if let Err(error) = channel_name(&channel, app.max_channel_name_length) {
        return error.error_response();
    }
    if channel_type(&channel).kind != ChannelKind::Presence {
        return bad_request("members can only be listed for presence channels").error_response();
    }
    let users: Vec<Value> = hub
        .member_ids(&app.id, &channel)
        .await
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    HttpResponse::Ok().json(json!({ "users": users }))
}

/// A test event from the page.
#[derive(Debug, Deserialize)]
pub struct TestEvent {
    channel: String,
    event: String,
    /// JSON text, as typed in the page.
    data: String,
}

/// `POST /console/api/apps/{app_id}/events`.
pub async fn send(
    ConsoleApp(app): ConsoleApp,
    body: Json<TestEvent>,
    hub: Data<Arc<Hub>>,
) -> HttpResponse {
    let TestEvent {
        channel,
        event,
        data,
    } = body.into_inner();
    let data: Value = match serde_json::from_str(&data) {
        Ok(data) => data,
        Err(e) => return bad_request(format!("data is not JSON: {e}")).error_response(),
    };
    if !hub.allow_api_request(&app) {
        return ApiError::TooManyRequests("the app's API rate limit is reached".into())
            .error_response();
    }
    match crate::http::events::publish_pushi_event(&hub, &app, event, data, vec![channel], true)
        .await
    {
        Ok(()) => HttpResponse::Ok().json(json!({})),
        Err(error) => error.error_response(),
    }
}
