//! `GET /apps/{id}/channels`, `GET /apps/{id}/channels/{channel}` and
//! `GET /apps/{id}/channels/{channel}/users`.

use super::error::{bad_request, ApiError};
use super::signed::{info_attributes, query_param, Signed};
use crate::hub::Hub;
use crate::protocol::channel::{channel_type, validate_channel_name, ChannelKind};
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use std::sync::Arc;

/// `GET /apps/{app_id}/channels`: occupied channels, optionally by prefix.
pub async fn list(
    req: HttpRequest,
    signed: Signed,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let Signed { app, .. } = signed;
    let prefix = query_param(&req, "filter_by_prefix").unwrap_or_default();
    let info = info_attributes(query_param(&req, "info").as_deref());
    for attribute in &info {
        match attribute.as_str() {
            "user_count" if prefix.starts_with("presence-") => {}
            "user_count" => {
                return Err(bad_request(
                    "info=user_count needs filter_by_prefix=presence-",
                ))
            }
            "subscription_count" => {}
            other => return Err(bad_request(format!("unknown info attribute `{other}`"))),
        }
    }
    let mut channels = Map::new();
    for stats in hub.occupied_channels(&app.id).await {
        // User channels are private to sign-in; they are not listed.
        if !stats.name.starts_with(&prefix) || stats.name.starts_with("#server-to-user-") {
            continue;
        }
        let mut attributes = Map::new();
        for attribute in &info {
            let value = match attribute.as_str() {
                "user_count" => stats.user_count,
                _ => stats.subscription_count,
            };
            attributes.insert(attribute.clone(), value.into());
        }
        channels.insert(stats.name, Value::Object(attributes));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "channels": channels })))
}

/// A channel name from a path, checked against the app's limit: 400 naming it.
pub(crate) fn channel_name(channel: &str, max_len: usize) -> Result<(), ApiError> {
    validate_channel_name(channel, max_len)
        .map_err(|e| bad_request(format!("invalid channel `{channel}`: {e}")))
}

/// `GET /apps/{app_id}/channels/{channel}`: occupied, counts and cache.
pub async fn show(
    req: HttpRequest,
    signed: Signed,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let (_, channel) = path.into_inner();
    let Signed { app, .. } = signed;
    channel_name(&channel, app.max_channel_name_length)?;
    let info = info_attributes(query_param(&req, "info").as_deref());
    let kind = channel_type(&channel);
    let subscribers = hub.subscription_count(&app.id, &channel).await;
    let mut body = Map::new();
    body.insert("occupied".into(), (subscribers > 0).into());
    for attribute in &info {
        match attribute.as_str() {
            "subscription_count" => {
                body.insert("subscription_count".into(), subscribers.into());
            }
            "user_count" if kind.kind == ChannelKind::Presence => {
                let users = hub.user_count(&app.id, &channel).await;
                body.insert("user_count".into(), users.into());
            }
            "user_count" => {
                return Err(bad_request("info=user_count is only for presence channels"))
            }
            "cache" if kind.cache => {
                if let Some(ttl) = hub.cache_ttl(&app.id, &channel).await {
                    body.insert("cache".into(), serde_json::json!({ "ttl": ttl.as_secs() }));
                }
            }
            "cache" => return Err(bad_request("info=cache is only for cache channels")),
            other => return Err(bad_request(format!("unknown info attribute `{other}`"))),
        }
    }
    Ok(HttpResponse::Ok().json(Value::Object(body)))
}

/// `GET /apps/{app_id}/channels/{channel}/users`: a presence channel's members.
pub async fn users(
    signed: Signed,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let (_, channel) = path.into_inner();
    let Signed { app, .. } = signed;
    channel_name(&channel, app.max_channel_name_length)?;
    if channel_type(&channel).kind != ChannelKind::Presence {
        return Err(bad_request(
            "users can only be listed for presence channels",
        ));
    }
    let users: Vec<Value> = hub
        .member_ids(&app.id, &channel)
        .await
        .into_iter()
        .map(|id| serde_json::json!({ "id": id }))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "users": users })))
}
