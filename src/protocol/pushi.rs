//! pushi's WebSocket dialect (pushi.js, pushi's own browser client) as pure
//! code: the frames rusher's Pusher frames become for a pushi connection, and
//! the pushi-only client frames (`pusher:latest`, events with `echo` and
//! `persist`).
//!
//! The shapes follow pushi-service 0.6.10: `pushi/net/server.py`
//! (`on_handshake`, `handle_pusher_subscribe`, `handle_pusher_unsubscribe`,
//! `handle_pusher_latest`, `handle_event`) and `pushi/base/state.py`
//! (`subscribe`/`unsubscribe` member frames, `trigger_c` adding `mid` and
//! `timestamp`, `get_channel` for the `{name, members, alias, events}` data),
//! and what `src/extras/js/pushi.js` parses (`onmessage`).

use bytestring::ByteString;
use rand::Rng;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Which frames a connection speaks: Pusher's (pusher-js, `/app/{key}`) or
/// pushi's (pushi.js, `/{key}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// The Pusher protocol, version 7.
    #[default]
    Pusher,
    /// pushi's dialect (see the module doc).
    Pushi,
}

/// Most events one `pusher:latest` returns (pushi has no cap; pushi.js asks
/// for 10 by default).
pub const MAX_LATEST_COUNT: u64 = 100;

/// `count` when `pusher:latest` gives none (pushi.js's and pushi's default).
pub const DEFAULT_LATEST_COUNT: u64 = 10;

/// Largest `skip` accepted: far beyond any history buffer, small enough
/// that `skip + count` cannot overflow.
pub const MAX_LATEST_SKIP: u64 = 1 << 32;

/// Unix time in seconds with a fraction, as pushi's `timestamp` (`time.time()`).
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A random RFC 4122 version 4 UUID, as pushi's `mid` (`uuid.uuid4()`).
pub fn random_mid() -> String {
    let mut bytes: [u8; 16] = rand::thread_rng().gen();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The `mid` of an event kept in a channel's history: its serial, so the
/// live frame and `pusher_internal:latest` name it the same on every node.
pub fn history_mid(serial: u64) -> String {
    serial.to_string()
}

/// `pusher:connection_established` as pushi sends it: `data` is
/// `{"socket_id": ...}` only (`server.py` `on_handshake`).
pub fn connection_established(socket_id: &str) -> ByteString {
    let data = serde_json::json!({ "socket_id": socket_id }).to_string();
    encode(serde_json::json!({
        "event": "pusher:connection_established",
        "data": data,
    }))
}

/// The channel data pushi answers subscribe, unsubscribe and latest with
/// (`state.py` `get_channel`): `{name, members, alias, events}`. `members`
/// maps a user id to its `channel_data` (`{user_id, user_info}`).
fn channel_data(channel: &str, members: Map<String, Value>, events: Vec<Value>) -> String {
    serde_json::json!({
        "name": channel,
        "members": members,
        "alias": [],
        "events": events,
    })
    .to_string()
}

/// The pushi `members` map from a Pusher presence `subscription_succeeded`
/// data (`{"presence":{"ids":[...],"hash":{id: info}}}`); empty otherwise.
fn members_from_presence(data: &str) -> Map<String, Value> {
    let mut members = Map::new();
    let Ok(value) = serde_json::from_str::<Value>(data) else {
        return members;
    };
    if let Some(hash) = value
        .get("presence")
        .and_then(|p| p.get("hash"))
        .and_then(Value::as_object)
    {
        for (id, info) in hash {
            let mut member = Map::new();
            member.insert("user_id".into(), Value::String(id.clone()));
            if !info.is_null() {
                member.insert("user_info".into(), info.clone());
            }
            members.insert(id.clone(), Value::Object(member));
        }
    }
    members
}

/// The frame a Pusher frame addressed to one connection becomes in pushi's
/// dialect, or `None` when it is sent as is (errors, pings, acknowledgements).
/// Used for frames built for one connection (subscription answers); the
/// channel fan-out uses [`fan_out_frame`].
pub fn session_frame(frame: &str) -> Option<ByteString> {
    let head: Head<'_> = serde_json::from_str(frame).ok()?;
    match head.event.as_ref() {
        // `server.py` `handle_pusher_subscribe`: data is `get_channel(...)`.
        "pusher_internal:subscription_succeeded" => {
            let channel = head.channel?;
            let data = head
                .data
                .map(|d| string_or_raw(d.get()))
                .unwrap_or_default();
            let members = members_from_presence(&data);
            Some(encode(serde_json::json!({
                "event": "pusher_internal:subscription_succeeded",
                "data": channel_data(&channel, members, Vec::new()),
                "channel": channel,
            })))
        }
        _ => fan_out_frame(frame),
    }
}

/// `pusher_internal:unsubscription_succeeded` (`server.py`
/// `handle_pusher_unsubscribe`), which pushi.js waits for to drop the channel.
pub fn unsubscription_succeeded(channel: &str) -> ByteString {
    encode(serde_json::json!({
        "event": "pusher_internal:unsubscription_succeeded",
        "data": channel_data(channel, Map::new(), Vec::new()),
        "channel": channel,
    }))
}

/// The fields of a frame this module reads.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// A JSON string's value, or any other JSON value's text (pushi sends
/// `data` as a string: `json.dumps(data)` when it is not one, `trigger_c`).
fn string_or_raw(raw: &str) -> String {
    serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned())
}

fn encode(value: Value) -> ByteString {
    ByteString::from(value.to_string())
}

/// The pushi frame for one event of the channel fan-out, built once per
/// event for all of a channel's pushi subscribers (`None`: send the Pusher
/// frame as is).
///
/// - An event (API, client, personal): the same fields, `data` as a string,
///   plus `mid` (the history serial when the frame carries one, see
///   [`history_mid`], else its acknowledged-delivery `message_id`, else a
///   random UUID) and
///   `timestamp` (now, Unix seconds), as `state.py` `trigger_c`.
/// - `pusher_internal:member_added` / `member_removed`: pushi's
///   `pusher:member_added` / `pusher:member_removed` with the member's
///   `{user_id, user_info}` as a JSON string in `member` and no `data`
///   (`state.py` `subscribe` / `unsubscribe`).
/// - Any other `pusher:` / `pusher_internal:` frame: as is.
pub fn fan_out_frame(frame: &str) -> Option<ByteString> {
    let mut object: Map<String, Value> = serde_json::from_str(frame).ok()?;
    let event = object.get("event")?.as_str()?.to_owned();
    let member_event = match event.as_str() {
        "pusher_internal:member_added" => Some("pusher:member_added"),
        "pusher_internal:member_removed" => Some("pusher:member_removed"),
        _ => None,
    };
    if let Some(renamed) = member_event {
        let member = object.remove("data").unwrap_or(Value::Null);
        object.insert("event".into(), Value::String(renamed.into()));
        object.insert("member".into(), member);
        return Some(encode(Value::Object(object)));
    }
    if event.starts_with("pusher:") || event.starts_with("pusher_internal:") {
        return None;
    }
    if let Some(data) = object.get_mut("data") {
        if !data.is_string() {
            *data = Value::String(data.to_string());
        }
    }
    let mid = match (
        object.get("serial").and_then(Value::as_u64),
        object.get("message_id").and_then(Value::as_str),
    ) {
        (Some(serial), _) => history_mid(serial),
        (None, Some(id)) => id.to_owned(),
        (None, None) => random_mid(),
    };
    object.insert("mid".into(), Value::String(mid));
    object.insert("timestamp".into(), serde_json::json!(now_seconds()));
    Some(encode(Value::Object(object)))
}

/// One stored event as `pusher_internal:latest` lists it: pushi's
/// `PushiEvent` map (`mid`, `channel`, `owner_id`, `timestamp`, and `data`
/// the event as sent, `{channel, event, data}`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The history serial.
    pub serial: u64,
    /// Event name.
    pub event: String,
    /// Data as published (raw JSON).
    pub data: String,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The sender (client event) or excluded socket.
    pub owner_id: Option<String>,
}

/// `pusher_internal:latest` for `channel` with `events` newest first
/// (`server.py` `handle_pusher_latest`, `state.py` `get_events_global`).
pub fn latest(channel: &str, events: &[StoredEvent]) -> ByteString {
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "mid": history_mid(e.serial),
                "channel": channel,
                "owner_id": e.owner_id,
                "timestamp": e.time_ms as f64 / 1000.0,
                "data": {
                    "channel": channel,
                    "event": e.event,
                    "data": string_or_raw(&e.data),
                },
            })
        })
        .collect();
    encode(serde_json::json!({
        "event": "pusher_internal:latest",
        "data": channel_data(channel, Map::new(), events),
        "channel": channel,
    }))
}

/// A frame from a pushi.js client that the Pusher protocol does not have.
#[derive(Debug, Clone)]
pub enum PushiMessage {
    /// `pusher:latest` `{channel, skip, count}`.
    Latest {
        /// The channel whose stored events are asked for.
        channel: String,
        /// Newest events to pass over.
        skip: u64,
        /// Events to return, 1 to [`MAX_LATEST_COUNT`].
        count: u64,
    },
    /// An event sent by the client (`Channel.send`, `server.py` `handle_event`).
    Event {
        /// Event name, as sent.
        event: String,
        /// Target channel.
        channel: String,
        /// Payload, relayed as sent.
        data: Box<RawValue>,
        /// The sender receives it too.
        echo: bool,
        /// Keep it (pushi's default: true).
        persist: bool,
    },
}

#[derive(Deserialize)]
struct RawPushi<'a> {
    #[serde(borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    channel: Option<Value>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    echo: Option<Value>,
    persist: Option<Value>,
}

#[derive(Deserialize)]
struct RawLatest {
    channel: Option<Value>,
    skip: Option<Value>,
    count: Option<Value>,
}

/// Reads a pushi-only frame: `Ok(None)` for any frame the Pusher protocol
/// handles (every `pusher:` event but `pusher:latest`, and anything that is
/// not a JSON object with an `event`, whose error the Pusher parser gives);
/// `Err` with the reason for a malformed `pusher:latest` or event.
pub fn parse(text: &str) -> Result<Option<PushiMessage>, String> {
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    let Ok(frame) = serde_json::from_str::<RawPushi<'_>>(text) else {
        return Ok(None);
    };
    let Some(event) = frame.event else {
        return Ok(None);
    };
    if event == "pusher:latest" {
        let data = frame
            .data
            .ok_or_else(|| "pusher:latest needs data {channel, skip, count}".to_owned())?;
        // pushi.js sends data as an object; a JSON string holding one is read too.
        let text = string_or_raw(data.get());
        let latest: RawLatest = serde_json::from_str(&text)
            .map_err(|_| "pusher:latest data must be an object {channel, skip, count}")?;
        let channel = match latest.channel {
            Some(Value::String(channel)) if !channel.is_empty() => channel,
            _ => return Err("pusher:latest needs a channel name".into()),
        };
        let skip = bounded(latest.skip, "skip", 0, 0, MAX_LATEST_SKIP)?;
        let count = bounded(
            latest.count,
            "count",
            DEFAULT_LATEST_COUNT,
            1,
            MAX_LATEST_COUNT,
        )?;
        return Ok(Some(PushiMessage::Latest {
            channel,
            skip,
            count,
        }));
    }
    if event.starts_with("pusher:") || event.starts_with("pusher_internal:") {
        return Ok(None);
    }
    let channel = match frame.channel {
        Some(Value::String(channel)) if !channel.is_empty() => channel,
        _ => return Err(format!("Event {event} needs a channel")),
    };
    let data = match frame.data {
        Some(data) => data,
        None => RawValue::from_string("null".into()).map_err(|e| e.to_string())?,
    };
    Ok(Some(PushiMessage::Event {
        event: event.into_owned(),
        channel,
        data,
        echo: flag(frame.echo, "echo", false)?,
        persist: flag(frame.persist, "persist", true)?,
    }))
}

/// An optional boolean field (`null` or absent: `default`).
fn flag(value: Option<Value>, name: &str, default: bool) -> Result<bool, String> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(format!("{name} must be true or false")),
    }
}

/// An optional integer field within `min..=max` (`null` or absent: `default`).
fn bounded(
    value: Option<Value>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, String> {
    let error = || format!("pusher:latest {name} must be an integer from {min} to {max}");
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(error),
        Some(_) => Err(error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frames;

    fn json(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap()
    }

    #[test]
    fn events_get_mid_timestamp_and_string_data() {
        let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let frame = frames::client_event_frame("message", "c", &data, None);
        let out = json(&fan_out_frame(&frame).unwrap());
        assert_eq!(out["event"], "message");
        assert_eq!(out["channel"], "c");
        assert_eq!(out["data"], r#"{"a":1}"#);
        assert_eq!(out["mid"].as_str().unwrap().len(), 36);
        assert!(out["timestamp"].as_f64().unwrap() > 1.6e9);
        let random = json(&fan_out_frame(&frame).unwrap());
        assert_eq!(random["mid"].as_str().unwrap().len(), 36);
        let with_serial = frames::history_event_frame("e", "c", &data, None, 7);
        assert_eq!(json(&fan_out_frame(&with_serial).unwrap())["mid"], "7");
    }

    #[test]
    fn member_frames_take_pushis_shape() {
        let info = RawValue::from_string(r#"{"name":"A"}"#.into()).unwrap();
        let added =
            json(&fan_out_frame(&frames::member_added("presence-x", "u1", Some(&info))).unwrap());
        assert_eq!(added["event"], "pusher:member_added");
        assert!(added.get("data").is_none());
        let member = json(added["member"].as_str().unwrap());
        assert_eq!(member["user_id"], "u1");
        assert_eq!(member["user_info"]["name"], "A");
        let removed = json(&fan_out_frame(&frames::member_removed("presence-x", "u1")).unwrap());
        assert_eq!(removed["event"], "pusher:member_removed");
        assert_eq!(json(removed["member"].as_str().unwrap())["user_id"], "u1");
    }

    #[test]
    fn protocol_frames_pass_unchanged() {
        assert!(fan_out_frame(&frames::subscription_count("c", 3)).is_none());
        assert!(fan_out_frame(&frames::error_frame(None, "x")).is_none());
        assert!(fan_out_frame("not json").is_none());
    }

    #[test]
    fn presence_subscription_lists_members() {
        let info = RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
        let data = frames::presence_data([("u1", Some(&*info))].into_iter());
        let frame = frames::subscription_succeeded("presence-x", &data);
        let out = json(&session_frame(&frame).unwrap());
        let inner = json(out["data"].as_str().unwrap());
        assert_eq!(inner["name"], "presence-x");
        assert_eq!(inner["members"]["u1"]["user_info"]["n"], 1);
        assert_eq!(inner["alias"], serde_json::json!([]));
        let public = json(&session_frame(&frames::subscription_succeeded("c", "{}")).unwrap());
        assert_eq!(
            json(public["data"].as_str().unwrap())["members"],
            serde_json::json!({})
        );
    }

    #[test]
    fn latest_is_parsed_and_bounded() {
        let ok = parse(r#"{"event":"pusher:latest","data":{"channel":"c","skip":2,"count":5}}"#);
        assert!(
            matches!(ok, Ok(Some(PushiMessage::Latest { ref channel, skip: 2, count: 5 })) if channel == "c")
        );
        let defaults = parse(r#"{"event":"pusher:latest","data":{"channel":"c"}}"#);
        assert!(matches!(
            defaults,
            Ok(Some(PushiMessage::Latest {
                skip: 0,
                count: 10,
                ..
            }))
        ));
        for bad in [
            r#"{"event":"pusher:latest","data":{"channel":"c","count":0}}"#,
            r#"{"event":"pusher:latest","data":{"channel":"c","count":101}}"#,
            r#"{"event":"pusher:latest","data":{"channel":"c","skip":-1}}"#,
            r#"{"event":"pusher:latest","data":{"channel":"c","skip":"a"}}"#,
            r#"{"event":"pusher:latest","data":{"skip":1}}"#,
            r#"{"event":"pusher:latest"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_carry_echo_and_persist() {
        let parsed = parse(
            r#"{"event":"message","channel":"c","data":{"x":1},"echo":true,"persist":false}"#,
        );
        match parsed {
            Ok(Some(PushiMessage::Event {
                event,
                echo,
                persist,
                data,
                ..
            })) => {
                assert_eq!((event.as_str(), echo, persist), ("message", true, false));
                assert_eq!(data.get(), r#"{"x":1}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(r#"{"event":"m","channel":"c","data":"d"}"#),
            Ok(Some(PushiMessage::Event {
                echo: false,
                persist: true,
                ..
            }))
        ));
        assert!(parse(r#"{"event":"m","data":"d"}"#).is_err());
        assert!(parse(r#"{"event":"m","channel":"c","echo":"yes"}"#).is_err());
        assert!(matches!(
            parse(r#"{"event":"pusher:subscribe","data":{}}"#),
            Ok(None)
        ));
        assert!(matches!(parse("[]"), Ok(None)));
    }

    #[test]
    fn latest_lists_newest_first_as_pushi_events() {
        let events = [StoredEvent {
            serial: 4,
            event: "e".into(),
            data: r#""hi""#.into(),
            time_ms: 1500,
            owner_id: None,
        }];
        let out = json(&latest("c", &events));
        assert_eq!(out["event"], "pusher_internal:latest");
        let inner = json(out["data"].as_str().unwrap());
        assert_eq!(inner["events"][0]["mid"], "4");
        assert_eq!(inner["events"][0]["timestamp"], 1.5);
        assert_eq!(inner["events"][0]["data"]["data"], "hi");
        assert_eq!(inner["events"][0]["data"]["event"], "e");
    }

    #[test]
    fn random_mids_are_v4_uuids() {
        let mid = random_mid();
        assert_eq!(mid.len(), 36);
        assert_eq!(&mid[14..15], "4");
        assert_ne!(mid, random_mid());
    }
}
