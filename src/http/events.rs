//! `POST /apps/{id}/events` and `POST /apps/{id}/batch_events`.
//!
//! Both take an optional `idempotency_key` (per event / per batch item;
//! `/events` also reads it from an `X-Idempotency-Key` or `Idempotency-Key`
//! header): see [`crate::hub::idempotent_publish`]. A request is validated
//! whole before any key is claimed, so a refused request claims nothing.

use super::error::{bad_request, ApiError};
use super::signed::{info_attributes, Signed};
use crate::apps::App;
use crate::console::tap::ConsoleEvent;
use crate::hub::idempotency::validate_key;
use crate::hub::idempotent_publish::{Begun, KeyBusy};
use crate::hub::Hub;
use crate::protocol::channel::{channel_type, validate_channel_name, ChannelKind};
use actix_web::http::header::ContentType;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::Arc;

/// One event as the SDKs send it.
#[derive(Debug, Deserialize)]
struct EventRequest {
    name: Option<String>,
    data: Option<Value>,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
    /// Any JSON, so a non-string gets a clear 400 rather than a parse error.
    idempotency_key: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct BatchRequest {
    batch: Vec<EventRequest>,
}

/// An event that passed every check, ready to publish.
struct ValidEvent {
    name: String,
    data: String,
    channels: Vec<String>,
    socket_id: Option<String>,
    info: Vec<String>,
    idempotency_key: Option<String>,
    /// Stored for followers (always, but for pushi's `"persist": false`).
    persist: bool,
}

fn valid_socket_id(socket_id: &str) -> bool {
    socket_id.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

/// Checks one event against the app's limits (400, or 413 for data size).
fn validate(app: &App, event: EventRequest) -> Result<ValidEvent, ApiError> {
    let name = event
        .name
        .ok_or_else(|| bad_request("missing event name (`name`)"))?;
    if name.is_empty() {
        return Err(bad_request("event name must not be empty"));
    }
    if name.len() > app.max_event_name_length {
        return Err(bad_request(format!(
            "event name is longer than {} characters",
            app.max_event_name_length
        )));
    }
    let data = match event.data {
        Some(Value::String(data)) => data,
        // The SDKs send a string; tolerate JSON values by encoding them.
        Some(other) => other.to_string(),
        None => return Err(bad_request("missing event data (`data`)")),
    };
    if data.len() > app.max_event_data_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "event data is larger than {} bytes",
            app.max_event_data_bytes
        )));
    }
    let channels = match (event.channels, event.channel) {
        (Some(channels), _) => channels,
        (None, Some(channel)) => vec![channel],
        (None, None) => return Err(bad_request("missing `channels` or `channel`")),
    };
    if channels.is_empty() {
        return Err(bad_request("`channels` must name at least one channel"));
    }
    if channels.len() > app.max_channels_per_event {
        return Err(bad_request(format!(
            "an event may name at most {} channels",
            app.max_channels_per_event
        )));
    }
    for channel in &channels {
        validate_channel_name(channel, app.max_channel_name_length)
            .map_err(|e| bad_request(format!("invalid channel `{channel}`: {e}")))?;
    }
    if let Some(socket_id) = &event.socket_id {
        if !valid_socket_id(socket_id) {
            return Err(bad_request(format!("invalid socket_id `{socket_id}`")));
        }
    }
    let idempotency_key = match event.idempotency_key {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => {
            validate_key(&key).map_err(|e| bad_request(e.to_string()))?;
            Some(key)
        }
        Some(_) => return Err(bad_request("idempotency_key must be a string")),
    };
    let info = info_attributes(event.info.as_deref());
    for attribute in &info {
        if attribute != "subscription_count" && attribute != "user_count" {
            return Err(bad_request(format!("unknown info attribute `{attribute}`")));
        }
    }
    Ok(ValidEvent {
        name,
        data,
        channels,
        socket_id: event.socket_id,
        info,
        idempotency_key,
        persist: true,
    })
}

/// The body of `/events`, as the SDKs send it.
const EVENT_BODY: &str = r#"{"name": ..., "data": ..., "channels": [...]} (or "channel")"#;
/// The body of `/batch_events`.
const BATCH_BODY: &str = r#"{"batch": [{"name": ..., "data": ..., "channel": ...}, ...]}"#;

/// Parses the JSON body; a missing or malformed one is a 400 naming the
/// body `expected`.
fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], expected: &str) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request(format!("expected a JSON body {expected}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("invalid JSON body: {e}; expected {expected}")))
}

/// Publishes to every channel of the event; returns the `info` asked for.
async fn publish(hub: &Hub, app: &App, event: &ValidEvent) -> Map<String, Value> {
    let mut channels_info = Map::new();
    // The data is a string; as JSON text it is what every frame carries.
    let data = serde_json::to_string(&event.data)
        .ok()
        .and_then(|json| RawValue::from_string(json).ok())
        .unwrap_or_else(|| RawValue::NULL.to_owned());
    for channel in &event.channels {
        hub.console().emit(&app.id, || {
            ConsoleEvent::new("api_event")
                .channel(channel)
                .event(&event.name, &event.data)
        });
        hub.publish_event(
            &app.id,
            channel,
            &event.name,
            &data,
            None,
            event.socket_id.as_deref(),
            event.persist,
        )
        .await;
        if !event.info.is_empty() {
            let mut info = Map::new();
            for attribute in &event.info {
                match attribute.as_str() {
                    "subscription_count" => {
                        let count = hub.subscription_count(&app.id, channel).await;
                        info.insert(attribute.clone(), count.into());
                    }
                    "user_count" if channel_type(channel).kind == ChannelKind::Presence => {
                        let count = hub.user_count(&app.id, channel).await;
                        info.insert(attribute.clone(), count.into());
                    }
                    _ => {}
                }
            }
            channels_info.insert(channel.clone(), Value::Object(info));
        }
    }
    channels_info
}

/// One event from pushi's API (`POST /pushi/events`) or the console's
/// test event (`crate::console::api`): checked against the
/// app's limits exactly as `/events` checks it (400 / 413 with the same
/// messages), then published on each channel; `persist` false publishes
/// live only (see [`Hub::publish_event`]).
pub(crate) async fn publish_pushi_event(
    hub: &Hub,
    app: &App,
    name: String,
    data: Value,
    channels: Vec<String>,
    persist: bool,
) -> Result<(), ApiError> {
    let request = EventRequest {
        name: Some(name),
        data: Some(data),
        channels: Some(channels),
        channel: None,
        socket_id: None,
        info: None,
        idempotency_key: None,
    };
    let event = ValidEvent {
        persist,
        ..validate(app, request)?
    };
    publish(hub, app, &event).await;
    Ok(())
}

/// Headers that carry an idempotency key: the sockudo SDKs send
/// `X-Idempotency-Key` (beside the body field); `Idempotency-Key` is the
/// IETF draft's name.
const KEY_HEADERS: [&str; 2] = ["x-idempotency-key", "idempotency-key"];

/// The key of an `/events` request: the body's `idempotency_key`, else a
/// key header. Two keys that differ (body and header, or the two headers,
/// or a header repeated): 400 (which one was meant?).
fn event_key(req: &HttpRequest, event: &ValidEvent) -> Result<Option<String>, ApiError> {
    let mut header: Option<String> = None;
    for name in KEY_HEADERS {
        for value in req.headers().get_all(name) {
            let value = value
                .to_str()
                .map_err(|_| bad_request(format!("header {name} must be visible ASCII")))?;
            validate_key(value).map_err(|e| bad_request(format!("header {name}: {e}")))?;
            match &header {
                Some(seen) if seen != value => {
                    return Err(bad_request("the idempotency key headers differ"))
                }
                _ => header = Some(value.to_owned()),
            }
        }
    }
    match (&event.idempotency_key, header) {
        (Some(body), Some(header)) if *body != header => Err(bad_request(
            "idempotency_key in the body and the idempotency key header differ",
        )),
        (Some(body), _) => Ok(Some(body.clone())),
        (None, header) => Ok(header),
    }
}

/// The JSON body, as answered now and to repeats of an idempotency key.
fn json_answer(answer: &str, replayed: bool) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.content_type(ContentType::json());
    if replayed {
        // The IETF idempotency draft's hint; clients may ignore it.
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.body(answer.to_owned())
}

fn busy(key: &str) -> ApiError {
    ApiError::RetryLater(format!(
        "a request with idempotency_key `{key}` is still being published; retry with the same key"
    ))
}

/// `/events` and `/batch_events` bodies checked as the handlers check
/// them, for [`crate::fuzzing`]: every event accepted keeps the app's limits.
#[cfg(any(test, fuzzing))]
pub(crate) fn check_bodies(app: &App, body: &[u8]) {
    let kept = |event: &ValidEvent| {
        assert!(!event.name.is_empty() && event.name.len() <= app.max_event_name_length);
        assert!(event.data.len() <= app.max_event_data_bytes);
        assert!(!event.channels.is_empty() && event.channels.len() <= app.max_channels_per_event);
        for channel in &event.channels {
            assert!(crate::fuzzing::channel_name_allowed(channel), "{channel}");
        }
        assert!(event.socket_id.as_deref().is_none_or(valid_socket_id));
        assert!(event
            .idempotency_key
            .as_deref()
            .is_none_or(|k| validate_key(k).is_ok()));
    };
    if let Ok(event) = parse_json(body, EVENT_BODY).and_then(|event| validate(app, event)) {
        kept(&event);
    }
    if let Ok(batch) = parse_json::<BatchRequest>(body, BATCH_BODY) {
        for event in batch
            .batch
            .into_iter()
            .filter_map(|e| validate(app, e).ok())
        {
            kept(&event);
        }
    }
}

/// `POST /apps/{app_id}/events`.
pub async fn trigger(
    req: HttpRequest,
    signed: Signed,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let event = validate(&app, parse_json(&body, EVENT_BODY)?)?;
    let key = event_key(&req, &event)?;
    let guard = match hub.begin_idempotent(&app, key.as_deref()).await {
        Ok(Begun::Publish(guard)) => guard,
        Ok(Begun::Repeat(answer)) => return Ok(json_answer(&answer, true)),
        Err(KeyBusy) => return Err(busy(key.as_deref().unwrap_or_default())),
    };
    let channels = publish(&hub, &app, &event).await;
    let answer = if event.info.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "channels": channels })
    }
    .to_string();
    if let Some(guard) = guard {
        guard.answer(answer.as_str().into()).await;
    }
    Ok(json_answer(&answer, false))
}

/// `POST /apps/{app_id}/batch_events`.
pub async fn trigger_batch(signed: Signed, hub: Data<Arc<Hub>>) -> Result<HttpResponse, ApiError> {
    let Signed { app, body } = signed;
    let batch: BatchRequest = parse_json(&body, BATCH_BODY)?;
    if batch.batch.len() > app.max_batch_events {
        return Err(bad_request(format!(
            "a batch may hold at most {} events",
            app.max_batch_events
        )));
    }
    // Validate everything first: a bad item refuses the whole batch, unsent.
    let events = batch
        .batch
        .into_iter()
        .map(|event| validate(&app, event))
        .collect::<Result<Vec<_>, _>>()?;
    let any_info = events.iter().any(|e| !e.info.is_empty());
    let mut results = Vec::with_capacity(events.len());
    // One item after the other: an item repeating an earlier item's key in
    // the same batch finds its answer. Items published before a busy key
    // stay published and answered; the retried batch repeats them.
    for event in &events {
        let key = event.idempotency_key.as_deref();
        let guard = match hub.begin_idempotent(&app, key).await {
            Ok(Begun::Publish(guard)) => guard,
            Ok(Begun::Repeat(answer)) => {
                results.push(serde_json::from_str(&answer).unwrap_or(Value::Object(Map::new())));
                continue;
            }
            Err(KeyBusy) => return Err(busy(key.unwrap_or_default())),
        };
        let channels = publish(&hub, &app, event).await;
        // Batch items name one channel; report its info flat, as Pusher does.
        let info = channels
            .into_values()
            .next()
            .unwrap_or(Value::Object(Map::new()));
        if let Some(guard) = guard {
            guard.answer(info.to_string().into()).await;
        }
        results.push(info);
    }
    if any_info {
        Ok(HttpResponse::Ok().json(serde_json::json!({ "batch": results })))
    } else {
        Ok(HttpResponse::Ok().json(serde_json::json!({})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    fn event(json: Value) -> EventRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn limits_are_enforced_with_the_right_error() {
        let mut app = AppConfig::with_credentials("a", "k", "s");
        app.max_channels_per_event = 2;
        app.max_event_data_bytes = 4;
        let ok = validate(
            &app,
            event(serde_json::json!({"name":"e","data":"1234","channel":"c"})),
        );
        assert!(ok.is_ok());
        let big = validate(
            &app,
            event(serde_json::json!({"name":"e","data":"12345","channel":"c"})),
        );
        assert!(matches!(big, Err(ApiError::PayloadTooLarge(_))));
        let many = validate(
            &app,
            event(serde_json::json!({"name":"e","data":"1","channels":["a","b","c"]})),
        );
        assert!(matches!(many, Err(ApiError::BadRequest(_))));
        let bad_channel = validate(
            &app,
            event(serde_json::json!({"name":"e","data":"1","channel":"a b"})),
        );
        assert!(matches!(bad_channel, Err(ApiError::BadRequest(_))));
        let bad_socket = validate(
            &app,
            event(serde_json::json!({"name":"e","data":"1","channel":"a","socket_id":"x"})),
        );
        assert!(matches!(bad_socket, Err(ApiError::BadRequest(_))));
        let no_name = validate(&app, event(serde_json::json!({"data":"1","channel":"a"})));
        assert!(matches!(no_name, Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn socket_ids_are_two_integers() {
        assert!(valid_socket_id("123.456"));
        assert!(!valid_socket_id("123"));
        assert!(!valid_socket_id("a.1"));
        assert!(!valid_socket_id("1."));
    }
}
