//! pushi's `events` and `subscriptions` routes, mapped onto rusher's publish
//! path and follow API. Answers have the keys pushi-service 0.6.10 gives
//! (appier's `map()` of its models); what rusher does not keep is filled
//! with a neutral value (see each `*_map`).

use super::auth::{success, Session};
use super::error::PushiError;
use crate::apps::App;
use crate::http::events::publish_pushi_event;
use crate::http::persistence::{parse_follow, persistence, unavailable};
use crate::http::signed::{query_param, read_body};
use crate::http::HttpSettings;
use crate::hub::Hub;
use crate::store::{Follow, StoredMessage};
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::sync::Arc;

/// Most events `GET /pushi/events` lists (pushi: no limit; default 10).
const MAX_COUNT: usize = 1000;

/// pushi's truthiness (`if not value`), for `data` and `persist`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// An event of `POST /pushi/events`, with pushi's defaults.
#[derive(Debug, PartialEq)]
struct PushiEvent {
    name: String,
    data: Value,
    channels: Vec<String>,
    persist: bool,
}

/// Reads pushi's event body: `data` (required, not empty), `event`
/// (default `message`), `channel` (a name or a list; default `global`),
/// `persist` (default true). Other keys are ignored.
fn parse_event(body: &[u8]) -> Result<PushiEvent, PushiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| PushiError::field("data", format!("invalid JSON body: {e}")))?
    };
    let field = |name: &str| body.get(name).filter(|v| !v.is_null());
    let data = field("data")
        .filter(|data| truthy(data))
        .cloned()
        .ok_or_else(|| PushiError::field("data", "No data set for event (`data`)"))?;
    let name = match field("event") {
        None => "message".to_owned(),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(PushiError::field("event", "`event` must be a string")),
    };
    let channels = match field("channel") {
        None => vec!["global".to_owned()],
        Some(Value::String(channel)) => vec![channel.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                PushiError::field("channel", "`channel` must be a name or a list of names")
            })?,
        Some(_) => {
            return Err(PushiError::field(
                "channel",
                "`channel` must be a name or a list of names",
            ))
        }
    };
    let persist = field("persist").is_none_or(truthy);
    Ok(PushiEvent {
        name,
        data,
        channels,
        persist,
    })
}

/// `POST /pushi/events` `{"data", "event", "channel", "persist"}` →
/// `{"result": "success"}`: published like `POST /apps/{id}/events` (same
/// limits and messages); `persist` (default true) stores it for the
/// channel's followers, false publishes it live only.
pub async fn create_event(
    session: Session,
    payload: Payload,
    hub: Data<Arc<Hub>>,
    settings: Data<HttpSettings>,
) -> Result<HttpResponse, PushiError> {
    let body = read_body(payload.into_inner(), settings.max_request_bytes).await?;
    let event = parse_event(&body)?;
    publish_pushi_event(
        &hub,
        &session.app,
        event.name,
        event.data,
        event.channels,
        event.persist,
    )
    .await?;
    Ok(success())
}

/// One stored message as pushi's `PushiEvent.map()`: `mid` is rusher's
/// sequence (as a string), `timestamp` Unix seconds (float), `data` the
/// event as it was triggered. `owner_id` is always null (events from the
/// API have no owner in pushi either).
fn event_map(app: &App, message: &StoredMessage) -> Value {
    // Stored as the frame's JSON text: a string event gives back its string.
    let data: Value =
        serde_json::from_str(&message.data).unwrap_or_else(|_| Value::String(message.data.clone()));
    let secs = message.time_ms / 1000;
    json!({
        "_id": message.seq.to_string(),
        "id": message.seq,
        "enabled": true,
        "description": null,
        "created": secs,
        "modified": secs,
        "meta": {},
        "instance": app.id,
        "mid": message.seq.to_string(),
        "channel": message.channel,
        "owner_id": null,
        "timestamp": message.time_ms as f64 / 1000.0,
        "data": {
            "data": data,
            "event": message.event,
            "channel": message.channel,
            "persist": true,
        },
    })
}

/// `GET /pushi/events?count=` (default 10, at most 1000) →
/// `{"events": [...]}`, newest first: the messages stored for followers
/// (rusher stores the events of followed channels only).
pub async fn list_events(
    req: HttpRequest,
    session: Session,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    let count = match query_param(&req, "count") {
        None => 10,
        Some(count) => count
            .parse::<usize>()
            .map_err(|_| PushiError::field("count", "`count` must be a non-negative integer"))?,
    };
    let messages = persistence(&hub)?
        .recent_messages(&session.app.id, count.min(MAX_COUNT))
        .await
        .map_err(unavailable)?;
    let events: Vec<Value> = messages
        .iter()
        .map(|m| event_map(&session.app, m))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

/// One follow as pushi's `Subscription.map()`. `id` and `_id` are
/// `{user_id}/{event}` (what `DELETE` takes); `created` and `modified` are
/// 0, as rusher does not keep when a follow began.
fn subscription_map(app: &App, user_id: &str, channel: &str) -> Value {
    let id = format!("{user_id}/{channel}");
    json!({
        "_id": id,
        "id": id,
        "user_id": user_id,
        "event": channel,
        "enabled": true,
        "description": null,
        "meta": {},
        "created": 0,
        "modified": 0,
        "instance": app.id,
    })
}

/// `GET /pushi/subscriptions?user_id=&event=` → `{"subscriptions": [...]}`.
pub async fn list_subscriptions(
    req: HttpRequest,
    session: Session,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    let filter = |name: &str| query_param(&req, name).filter(|v| !v.is_empty());
    let (user_id, channel) = (filter("user_id"), filter("event"));
    let follows: Vec<Follow> = persistence(&hub)?
        .follows(&session.app.id, user_id.as_deref(), channel.as_deref())
        .await
        .map_err(unavailable)?;
    let subscriptions: Vec<Value> = follows
        .iter()
        .map(|f| subscription_map(&session.app, &f.user_id, &f.channel))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "subscriptions": subscriptions })))
}

/// `POST /pushi/subscriptions` `{"user_id", "event"}` → the subscription
/// (the existing one when already there): the user follows the channel, as
/// with `POST /apps/{id}/subscribe` (same checks and messages).
pub async fn create_subscription(
    session: Session,
    payload: Payload,
    hub: Data<Arc<Hub>>,
    settings: Data<HttpSettings>,
) -> Result<HttpResponse, PushiError> {
    let body = read_body(payload.into_inner(), settings.max_request_bytes).await?;
    // `sid` is the only query parameter the client sends; the body names the follow.
    let (user_id, channel) = parse_follow(&session.app, &body, "")
        .map_err(|e| PushiError::field("event", e.to_string()))?;
    persistence(&hub)?
        .follow(&session.app.id, &user_id, &channel)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(subscription_map(&session.app, &user_id, &channel)))
}

/// `DELETE /pushi/subscriptions/{user_id}/{event}?force=` → the removed
/// subscription; when there was none `{"result": "success"}`, or 404 with
/// `force` (as pushi).
pub async fn delete_subscription(
    req: HttpRequest,
    session: Session,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, PushiError> {
    let (user_id, channel) = path.into_inner();
    let removed = persistence(&hub)?
        .unfollow(&session.app.id, &user_id, &channel)
        .await
        .map_err(unavailable)?;
    if removed {
        return Ok(HttpResponse::Ok().json(subscription_map(&session.app, &user_id, &channel)));
    }
    let force =
        query_param(&req, "force").is_some_and(|f| !f.is_empty() && f != "0" && f != "false");
    if force {
        return Err(PushiError::not_found("Subscription not found"));
    }
    Ok(success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_body_gets_pushis_defaults() {
        let event = parse_event(br#"{"data": "hi"}"#).unwrap();
        assert_eq!(
            event,
            PushiEvent {
                name: "message".into(),
                data: json!("hi"),
                channels: vec!["global".into()],
                persist: true,
            }
        );
        let event = parse_event(
            br#"{"data": {"a": 1}, "event": "e", "channel": ["a", "b"], "persist": false}"#,
        )
        .unwrap();
        assert_eq!(event.channels, ["a", "b"]);
        assert_eq!(event.data, json!({"a": 1}));
        assert!(!event.persist);
        assert_eq!(event.name, "e");
    }

    #[test]
    fn an_event_without_data_or_with_bad_fields_is_a_400_naming_the_field() {
        for body in [
            &b""[..],
            b"{}",
            br#"{"data": ""}"#,
            br#"{"data": null}"#,
            br#"{"data": {}}"#,
        ] {
            let error = parse_event(body).unwrap_err();
            assert!(
                error.to_string().contains("No data set for event"),
                "{error}"
            );
        }
        assert!(parse_event(b"{")
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
        assert!(parse_event(br#"{"data": "x", "event": 1}"#).is_err());
        assert!(parse_event(br#"{"data": "x", "channel": [1]}"#).is_err());
    }

    #[test]
    fn a_stored_string_event_maps_back_to_its_string() {
        let app = crate::config::AppConfig::with_credentials("a", "k", "s");
        let message = StoredMessage {
            seq: 7,
            channel: "news".into(),
            event: "article".into(),
            data: "\"hello\"".into(),
            time_ms: 1500,
        };
        let map = event_map(&app, &message);
        assert_eq!(map["data"]["data"], json!("hello"));
        assert_eq!(map["data"]["event"], json!("article"));
        assert_eq!(map["mid"], json!("7"));
        assert_eq!(map["timestamp"], json!(1.5));
    }
}
