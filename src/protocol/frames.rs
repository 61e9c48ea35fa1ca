//! Client frames parsed into typed messages; server frames encoded once.
//!
//! Parsing failures are a dedicated enum because they happen in normal
//! operation (bad clients) on the hot path.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use thiserror::Error;

/// A frame a client sent, typed.
#[derive(Debug)]
pub enum ClientMessage {
    /// `pusher:ping`: answer with a pong.
    Ping,
    /// `pusher:pong`: the answer to our ping.
    Pong,
    /// `pusher:subscribe`.
    Subscribe(SubscribeRequest),
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// Channel to leave.
        channel: String,
    },
    /// `pusher:signin`.
    Signin {
        /// `key:signature`.
        auth: String,
        /// The signed user data JSON string.
        user_data: String,
    },
    /// `client-*` event to relay to the channel's other subscribers.
    ClientEvent {
        /// Event name (starts with `client-`).
        event: String,
        /// Target channel.
        channel: String,
        /// Payload, relayed as sent.
        data: Box<RawValue>,
    },
    /// Any other event name; answered with an error, never closes the socket.
    Unknown {
        /// The event name as sent.
        event: String,
    },
    /// `pusher:ack` (extension, acknowledged delivery): the message ids the
    /// client received, from `{"message_id": "..."}` or `{"message_ids": [...]}`.
    Ack {
        /// At least one id.
        message_ids: Vec<String>,
    },
}

/// The data of a `pusher:subscribe` frame.
#[derive(Debug, Deserialize)]
pub struct SubscribeRequest {
    /// Channel to join.
    pub channel: String,
    /// `key:signature` for private and presence channels.
    #[serde(default)]
    pub auth: Option<String>,
    /// Signed presence data (a JSON string).
    #[serde(default)]
    pub channel_data: Option<String>,
    /// Personal channels: only stored messages after this sequence.
    /// Channels with history (extension): the last serial the client saw;
    /// the events after it are replayed after the subscription succeeds.
    #[serde(default)]
    pub since: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckData {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    message_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    event: Option<Value>,
    #[serde(default)]
    channel: Option<Value>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Why a client frame was refused. Each is answered with `pusher:error`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Not a JSON object.
    #[error("frame is not a JSON object")]
    NotJson,
    /// No `event`, or not a string.
    #[error("frame has no string \"event\" field")]
    MissingEvent,
    /// The data of a known event has the wrong shape.
    #[error("invalid data for {event}: {reason}")]
    InvalidData {
        /// The event whose data is wrong.
        event: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A client event without a string channel.
    #[error("client event needs a string \"channel\" field")]
    MissingChannel,
}

/// Data may be an object or a JSON string holding an object; accept both.
fn decode_data<T: for<'de> Deserialize<'de>>(
    event: &'static str,
    data: Option<&RawValue>,
) -> Result<T, FrameError> {
    // serde's messages quote the input (an unknown field's name, a wrong
    // string): cut them so an error never echoes a long client text back.
    let invalid = |reason: String| FrameError::InvalidData {
        event,
        reason: bounded_reason(reason),
    };
    let raw = data.ok_or_else(|| invalid("missing data".into()))?;
    match serde_json::from_str::<T>(raw.get()) {
        Ok(value) => Ok(value),
        Err(first) => match serde_json::from_str::<String>(raw.get()) {
            Ok(inner) => serde_json::from_str(&inner).map_err(|e| invalid(e.to_string())),
            Err(_) => Err(invalid(first.to_string())),
        },
    }
}

/// Longest reason kept from a parser message, in characters.
const MAX_REASON_CHARS: usize = 200;

/// `reason`, cut to [`MAX_REASON_CHARS`] characters with `…` when longer.
fn bounded_reason(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason,
    }
}

/// Parses one text frame from a client.
pub fn parse_client_frame(text: &str) -> Result<ClientMessage, FrameError> {
    // serde would read a JSON array positionally into the struct; only objects are frames.
    if !text.trim_start().starts_with('{') {
        return Err(FrameError::NotJson);
    }
    let frame: RawFrame<'_> = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
    let event = match frame.event {
        Some(Value::String(event)) => event,
        _ => return Err(FrameError::MissingEvent),
    };
    match event.as_str() {
        "pusher:ping" => Ok(ClientMessage::Ping),
        "pusher:pong" => Ok(ClientMessage::Pong),
        "pusher:subscribe" => Ok(ClientMessage::Subscribe(decode_data(
            "pusher:subscribe",
            frame.data,
        )?)),
        "pusher:unsubscribe" => {
            let data: UnsubscribeData = decode_data("pusher:unsubscribe", frame.data)?;
            Ok(ClientMessage::Unsubscribe {
                channel: data.channel,
            })
        }
        "pusher:signin" => {
            let data: SigninData = decode_data("pusher:signin", frame.data)?;
            Ok(ClientMessage::Signin {
                auth: data.auth,
                user_data: data.user_data,
            })
        }
        "pusher:ack" => {
            let data: AckData = decode_data("pusher:ack", frame.data)?;
            let mut message_ids = data.message_ids.unwrap_or_default();
            message_ids.extend(data.message_id);
            if message_ids.is_empty() {
                return Err(FrameError::InvalidData {
                    event: "pusher:ack",
                    reason: "needs \"message_id\" or a non-empty \"message_ids\"".into(),
                });
            }
            Ok(ClientMessage::Ack { message_ids })
        }
        _ if event.starts_with("client-") => {
            let channel = match frame.channel {
                Some(Value::String(channel)) => channel,
                _ => return Err(FrameError::MissingChannel),
            };
            let data = match frame.data {
                Some(raw) => raw.to_owned(),
                None => RawValue::from_string("null".into()).map_err(|_| FrameError::NotJson)?,
            };
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            })
        }
        _ => Ok(ClientMessage::Unknown { event }),
    }
}

#[derive(Serialize)]
struct ServerFrame<'a, D: Serialize + ?Sized> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: &'a D,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    /// History serial (extension): pusher-js reads only event, channel,
    /// data and user_id, so an extra top-level field is ignored by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<u64>,
}

fn encode<D: Serialize + ?Sized>(
    event: &str,
    channel: Option<&str>,
    data: &D,
    user_id: Option<&str>,
) -> ByteString {
    let frame = ServerFrame {
        event,
        channel,
        data,
        user_id,
        serial: None,
    };
    // Serialising plain strings, maps and raw JSON cannot fail.
    ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
}

/// An event for subscribers: `data` is the string the publisher gave.
pub fn event_frame(event: &str, channel: &str, data: &str, user_id: Option<&str>) -> ByteString {
    encode(event, Some(channel), data, user_id)
}

/// A client event relayed as sent (data object or string, unchanged).
pub fn client_event_frame(
    event: &str,
    channel: &str,
    data: &RawValue,
    user_id: Option<&str>,
) -> ByteString {
    encode(event, Some(channel), data, user_id)
}

/// An event on a channel with history: as [`client_event_frame`] plus the
/// top-level `"serial": N` (extension; encoded once, shared by every subscriber).
pub fn history_event_frame(
    event: &str,
    channel: &str,
    data: &RawValue,
    user_id: Option<&str>,
    serial: u64,
) -> ByteString {
    let frame = ServerFrame {
        event,
        channel: Some(channel),
        data,
        user_id,
        serial: Some(serial),
    };
    ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
}

/// An event on a channel with acknowledged delivery (extension): the
/// fields of [`history_event_frame`] led by `"message_id"` and `"channel"`,
/// in that order, so a connection finds both with [`delivery_head`] without
/// parsing the frame. Encoded once per publish and shared by every
/// subscriber; pusher-js ignores the extra field.
pub fn delivery_frame(
    message_id: &str,
    event: &str,
    channel: &str,
    data: &RawValue,
    user_id: Option<&str>,
    serial: Option<u64>,
) -> ByteString {
    #[derive(Serialize)]
    struct DeliveryFrame<'a> {
        message_id: &'a str,
        channel: &'a str,
        event: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        serial: Option<u64>,
    }
    let frame = DeliveryFrame {
        message_id,
        channel,
        event,
        data,
        user_id,
        serial,
    };
    ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
}

/// The `(message_id, channel)` a [`delivery_frame`] starts with; `None` for
/// every other frame. A prefix scan, no JSON parsing: message ids and
/// channel names contain no character JSON escapes (a name that would is
/// refused by the protocol's channel-name check before any publish).
pub fn delivery_head(frame: &str) -> Option<(&str, &str)> {
    let rest = frame.strip_prefix("{\"message_id\":\"")?;
    let (id, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(",\"channel\":\"")?;
    let (channel, _) = rest.split_once('"')?;
    (!channel.contains('\\')).then_some((id, channel))
}

/// An event on a channel with history whose serial is not known yet (a
/// shared history gives it): the frame of [`history_event_frame`] up to its
/// serial, encoded once, and what follows the serial. `head + serial + tail`
/// is that frame; [`without_serial`] gives the frame with no serial.
pub fn history_event_parts(
    message_id: Option<&str>,
    event: &str,
    channel: &str,
    data: &RawValue,
    user_id: Option<&str>,
) -> (String, &'static str) {
    let mut head = match message_id {
        Some(id) => delivery_frame(id, event, channel, data, user_id, Some(0)),
        None => history_event_frame(event, channel, data, user_id, 0),
    }
    .to_string();
    // `serial` is the last field: the frame ends with `0}`.
    head.truncate(head.len().saturating_sub(2));
    (head, "}")
}

/// The frame of [`history_event_parts`] with no `"serial"` (what a channel
/// without history gets): delivered when the shared history is unreachable.
pub fn without_serial(head: &str, tail: &str) -> ByteString {
    let body = head.strip_suffix(r#","serial":"#).unwrap_or(head);
    ByteString::from(format!("{body}{tail}"))
}

/// `pusher:recovery_failed` (extension) on `channel`: the events after
/// `since` cannot be replayed; data `{"channel","since","oldest","reason"}`
/// as a JSON string like every `pusher:` event's data.
pub fn recovery_failed(channel: &str, since: u64, oldest: Option<u64>, reason: &str) -> ByteString {
    let data = serde_json::json!({
        "channel": channel,
        "since": since,
        "oldest": oldest,
        "reason": reason,
    })
    .to_string();
    encode("pusher:recovery_failed", Some(channel), &data, None)
}

/// `pusher:connection_established` with its double-encoded data.
pub fn connection_established(socket_id: &str, activity_timeout: u64) -> ByteString {
    let data = serde_json::json!({"socket_id": socket_id, "activity_timeout": activity_timeout});
    encode(
        "pusher:connection_established",
        None,
        &data.to_string(),
        None,
    )
}

/// `pusher:error`; `code` is `None` for errors not tied to a close.
pub fn error_frame(code: Option<u16>, message: &str) -> ByteString {
    let data = serde_json::json!({"code": code, "message": message});
    encode("pusher:error", None, &data, None)
}

/// `pusher:pong`.
pub fn pong_frame() -> ByteString {
    ByteString::from_static(r#"{"event":"pusher:pong","data":"{}"}"#)
}

/// `pusher:ping` sent by the server after inactivity.
pub fn ping_frame() -> ByteString {
    ByteString::from_static(r#"{"event":"pusher:ping","data":"{}"}"#)
}

/// `pusher_internal:subscription_succeeded` with `data` already JSON-encoded.
pub fn subscription_succeeded(channel: &str, data: &str) -> ByteString {
    encode(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        data,
        None,
    )
}

/// `pusher:subscription_error` as pusher-js surfaces it on the channel.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> ByteString {
    let data = serde_json::json!({"type": kind, "error": error, "status": status});
    encode("pusher:subscription_error", Some(channel), &data, None)
}

/// `pusher_internal:member_added` for the other subscribers of a presence channel.
pub fn member_added(channel: &str, user_id: &str, user_info: Option<&RawValue>) -> ByteString {
    #[derive(Serialize)]
    struct Added<'a> {
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_info: Option<&'a RawValue>,
    }
    let data = serde_json::to_string(&Added { user_id, user_info }).unwrap_or_default();
    encode("pusher_internal:member_added", Some(channel), &data, None)
}

/// `pusher_internal:member_removed` when a user's last socket left.
pub fn member_removed(channel: &str, user_id: &str) -> ByteString {
    let data = serde_json::json!({ "user_id": user_id }).to_string();
    encode("pusher_internal:member_removed", Some(channel), &data, None)
}

/// `pusher_internal:subscription_count` with `{"subscription_count":N}` as
/// a JSON string, like every internal event (pusher-js parses it, sets
/// `channel.subscriptionCount` and emits `pusher:subscription_count`).
pub fn subscription_count(channel: &str, count: usize) -> ByteString {
    let (head, tail) = subscription_count_parts(channel);
    ByteString::from(format!("{head}{count}{tail}"))
}

/// [`subscription_count`] around its number: `head + N + tail` is the frame
/// (the Redis adapter puts the cluster-wide count in inside Redis).
pub fn subscription_count_parts(channel: &str) -> (String, &'static str) {
    let frame = encode(
        "pusher_internal:subscription_count",
        Some(channel),
        "{\"subscription_count\":0}",
        None,
    );
    // The data is the frame's last field, so its `0}"}` ends the frame.
    let head = frame.strip_suffix("0}\"}").unwrap_or(&frame).to_owned();
    (head, "}\"}")
}

/// `pusher:cache_miss` for a cache channel with nothing remembered.
pub fn cache_miss(channel: &str) -> ByteString {
    encode("pusher:cache_miss", Some(channel), "{}", None)
}

/// `pusher:signin_success` echoing the signed user data.
pub fn signin_success(user_data: &str) -> ByteString {
    let data = serde_json::json!({ "user_data": user_data }).to_string();
    encode("pusher:signin_success", None, &data, None)
}

/// `pusher_internal:watchlist_events` with one `online` or `offline` event.
pub fn watchlist_event(name: &str, user_ids: &[&str]) -> ByteString {
    let data = serde_json::json!({ "events": [{ "name": name, "user_ids": user_ids }] });
    encode("pusher_internal:watchlist_events", None, &data, None)
}

/// The `subscription_succeeded` data of a presence channel:
/// `{"presence":{"count":N,"ids":[..],"hash":{id: info}}}`.
pub fn presence_data<'a>(members: impl Iterator<Item = (&'a str, Option<&'a RawValue>)>) -> String {
    let mut ids = Vec::new();
    let mut hash = serde_json::Map::new();
    for (id, info) in members {
        ids.push(Value::String(id.to_owned()));
        let info = info
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null);
        hash.insert(id.to_owned(), info);
    }
    serde_json::json!({ "presence": { "count": ids.len(), "ids": ids, "hash": hash } }).to_string()
}

/// An event of a followed channel, delivered on the follower's personal
/// channel: name and data unchanged, the source channel and sequence added.
pub fn personal_frame(
    personal_channel: &str,
    event: &str,
    data: &RawValue,
    source_channel: &str,
    seq: u64,
) -> ByteString {
    #[derive(Serialize)]
    struct Personal<'a> {
        event: &'a str,
        channel: &'a str,
        data: &'a RawValue,
        source_channel: &'a str,
        seq: u64,
    }
    let frame = Personal {
        event,
        channel: personal_channel,
        data,
        source_channel,
        seq,
    };
    ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
}

/// A peer channel announcement on the presence channel (`pusher:peer_added`
/// or `pusher:peer_removed`), naming the peer channel and the other user.
pub fn peer_frame(
    event: &str,
    presence_channel: &str,
    peer_channel: &str,
    other_user: &str,
) -> ByteString {
    let data = serde_json::json!({ "channel": peer_channel, "user_id": other_user }).to_string();
    encode(event, Some(presence_channel), &data, None)
}

/// The `subscription_succeeded` data of a personal channel:
/// `{"messages":[{"seq","channel","event","data","time_ms"}, ..]}`, oldest first.
pub fn catch_up_data(messages: &[crate::store::StoredMessage]) -> String {
    #[derive(Serialize)]
    struct Message<'a> {
        seq: u64,
        channel: &'a str,
        event: &'a str,
        data: &'a RawValue,
        time_ms: u64,
    }
    #[derive(Serialize)]
    struct CatchUp<'a> {
        messages: Vec<Message<'a>>,
    }
    let null = RawValue::NULL;
    let messages = messages
        .iter()
        .map(|m| Message {
            seq: m.seq,
            channel: &m.channel,
            event: &m.event,
            // Stored data is JSON text written by this server.
            data: serde_json::from_str::<&RawValue>(&m.data).unwrap_or(null),
            time_ms: m.time_ms,
        })
        .collect();
    serde_json::to_string(&CatchUp { messages }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_count_is_an_internal_event_with_string_data() {
        let frame = subscription_count("room \"1\"", 12);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["event"], "pusher_internal:subscription_count");
        assert_eq!(value["channel"], "room \"1\"");
        assert_eq!(value["data"], "{\"subscription_count\":12}");
        let (head, tail) = subscription_count_parts("room");
        assert_eq!(format!("{head}7{tail}"), &*subscription_count("room", 7));
    }

    #[test]
    fn invalid_data_never_echoes_a_long_client_text() {
        let name = "x".repeat(5000);
        let frame =
            format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"a","since":"{name}"}}}}"#);
        match parse_client_frame(&frame) {
            Err(FrameError::InvalidData { reason, .. }) => {
                assert!(reason.chars().count() <= MAX_REASON_CHARS + 1, "{reason}");
                assert!(reason.ends_with('…'));
            }
            other => panic!("expected InvalidData, got {other:?}"),
        }
    }

    #[test]
    fn history_parts_join_around_the_serial() {
        let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let (head, tail) = history_event_parts(None, "e", "c", &data, Some("u"));
        assert_eq!(
            format!("{head}7{tail}"),
            history_event_frame("e", "c", &data, Some("u"), 7).to_string()
        );
        assert_eq!(
            without_serial(&head, tail),
            client_event_frame("e", "c", &data, Some("u"))
        );
        // Acknowledged delivery on the same channel: led by the message id.
        let (head, tail) = history_event_parts(Some("m1"), "e", "c", &data, None);
        assert_eq!(
            format!("{head}7{tail}"),
            delivery_frame("m1", "e", "c", &data, None, Some(7)).to_string()
        );
        assert_eq!(
            without_serial(&head, tail),
            delivery_frame("m1", "e", "c", &data, None, None)
        );
    }

    #[test]
    fn subscribe_accepts_object_and_string_data() {
        let object = r#"{"event":"pusher:subscribe","data":{"channel":"a"}}"#;
        let string = r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#;
        for text in [object, string] {
            match parse_client_frame(text) {
                Ok(ClientMessage::Subscribe(s)) => assert_eq!(s.channel, "a"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(parse_client_frame("nope").err(), Some(FrameError::NotJson));
        assert_eq!(parse_client_frame("[1]").err(), Some(FrameError::NotJson));
        assert_eq!(
            parse_client_frame("{}").err(),
            Some(FrameError::MissingEvent)
        );
        assert_eq!(
            parse_client_frame(r#"{"event":5}"#).err(),
            Some(FrameError::MissingEvent)
        );
        assert!(matches!(
            parse_client_frame(r#"{"event":"pusher:subscribe","data":5}"#),
            Err(FrameError::InvalidData { .. })
        ));
        assert!(matches!(
            parse_client_frame(r#"{"event":"pusher:subscribe","data":{}}"#),
            Err(FrameError::InvalidData { .. })
        ));
        assert_eq!(
            parse_client_frame(r#"{"event":"client-x","data":{}}"#).err(),
            Some(FrameError::MissingChannel)
        );
    }

    #[test]
    fn client_event_data_is_kept_verbatim() {
        let text = r#"{"event":"client-x","channel":"private-a","data":{"b":[1, 2]}}"#;
        match parse_client_frame(text) {
            Ok(ClientMessage::ClientEvent { data, .. }) => {
                assert_eq!(data.get(), r#"{"b":[1, 2]}"#)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn server_frames_double_encode_data() {
        let frame = connection_established("1.2", 120);
        let value: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(value["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["socket_id"], "1.2");
        assert_eq!(data["activity_timeout"], 120);

        let added = member_added("presence-a", "u1", None);
        let value: Value = serde_json::from_str(&added).unwrap();
        assert_eq!(value["data"], r#"{"user_id":"u1"}"#);

        let presence = presence_data([("u1", None)].into_iter());
        let value: Value = serde_json::from_str(&presence).unwrap();
        assert_eq!(value["presence"]["count"], 1);
        assert_eq!(value["presence"]["ids"][0], "u1");

        let event = event_frame("e", "c", "{\"x\":1}", None);
        assert_eq!(&*event, r#"{"event":"e","channel":"c","data":"{\"x\":1}"}"#);
    }

    #[test]
    fn delivery_frames_lead_with_id_and_channel() {
        let data = RawValue::from_string(r#""{\"x\":1}""#.into()).unwrap();
        let frame = delivery_frame("ab-1", "e", "orders-1", &data, None, Some(7));
        assert_eq!(
            &*frame,
            r#"{"message_id":"ab-1","channel":"orders-1","event":"e","data":"{\"x\":1}","serial":7}"#
        );
        assert_eq!(delivery_head(&frame), Some(("ab-1", "orders-1")));
        assert_eq!(delivery_head(&event_frame("e", "c", "{}", None)), None);
        assert_eq!(delivery_head(r#"{"message_id":"a","event":"x"}"#), None);
    }

    #[test]
    fn acks_take_one_id_or_a_batch() {
        let ids = |text: &str| match parse_client_frame(text) {
            Ok(ClientMessage::Ack { message_ids }) => Ok(message_ids),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(error),
        };
        assert_eq!(
            ids(r#"{"event":"pusher:ack","data":{"message_id":"a"}}"#),
            Ok(vec!["a".to_owned()])
        );
        assert_eq!(
            ids(r#"{"event":"pusher:ack","data":"{\"message_ids\":[\"a\",\"b\"]}"}"#),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        for bad in [
            r#"{"event":"pusher:ack"}"#,
            r#"{"event":"pusher:ack","data":{}}"#,
            r#"{"event":"pusher:ack","data":{"message_ids":[]}}"#,
            r#"{"event":"pusher:ack","data":{"message_id":5}}"#,
            r#"{"event":"pusher:ack","data":{"id":"a"}}"#,
        ] {
            assert!(
                matches!(
                    ids(bad),
                    Err(FrameError::InvalidData {
                        event: "pusher:ack",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
