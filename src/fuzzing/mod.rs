//! What must hold for *any* input of every parser that clients, backends,
//! peer nodes and config files reach: one entry point per parser family.
//!
//! Each function takes arbitrary bytes, drives the parsers exactly as the
//! server does, and panics (an `assert!`) when an invariant breaks: no
//! panic inside the parsers, errors that stay short, and round trips (what
//! the server encodes parses back to itself). The fuzz targets in
//! `bench/fuzz` call these (`cargo fuzz`, see `bench/fuzz/run.sh`); the
//! property tests in [`properties`] call them with generated inputs and add
//! the properties that need structure (signed requests, channel names).
//!
//! Not a public API: hidden from the docs and only here so the fuzz crate,
//! which links the library, can reach parsers that are crate-private.

use crate::adapter::redis::bus::BusMessage;
use crate::apps::App;
use crate::config::{AppConfig, Config};
use crate::hub::authorize::{authorize, Grant};
use crate::protocol::auth::{
    channel_auth, user_auth, verify_channel_auth, verify_request, verify_user_auth, SignedRequest,
    MAX_TIMESTAMP_SKEW_SECS,
};
use crate::protocol::channel::{channel_type, validate_channel_name, MAX_CHANNEL_NAME_LENGTH};
use crate::protocol::frames::{self, parse_client_frame, ClientMessage, FrameError};
use crate::protocol::presence::{parse_channel_data, parse_user_data, MemberDataError};
use crate::sse::{event_id, token};
use std::collections::HashMap;
use std::time::Instant;

#[cfg(test)]
mod properties;

/// The app every entry point checks against: the default limits.
pub fn app() -> App {
    AppConfig::with_credentials("1", "key", "secret")
}

/// Socket id the entry points sign for.
const SOCKET_ID: &str = "123.456";

/// The longest error message a client may be sent for a bad frame, in
/// characters: a reason is cut at 200, the rest is the fixed wording.
const MAX_FRAME_ERROR_CHARS: usize = 300;

/// The rule of `protocol/channel.rs`, restated independently: 1..=164
/// bytes of `A-Z a-z 0-9 _ - = @ , . ;`, plus `:` and `&` in `peer-`
/// names, plus a leading `#server-to-user-` that must be followed by at
/// least one allowed character.
pub fn channel_name_allowed(name: &str) -> bool {
    let body = name.strip_prefix("#server-to-user-").unwrap_or(name);
    let peer = name.starts_with("peer-");
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME_LENGTH
        && !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || b"_-=@,.;".contains(&b)
                || (peer && (b == b':' || b == b'&'))
        })
}

/// A client text frame (WebSocket message, one element of an `xhr_send`
/// body): parsed, then each typed message goes where the session sends it.
pub fn client_frame(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_client_frame(text);
    }
}

/// [`client_frame`] on text.
pub fn check_client_frame(text: &str) {
    let message = match parse_client_frame(text) {
        Ok(message) => message,
        Err(error) => return check_frame_error(&error),
    };
    match message {
        ClientMessage::Ping | ClientMessage::Pong => {}
        ClientMessage::Subscribe(request) => check_subscribe(request),
        ClientMessage::Unsubscribe { channel } => check_channel_name(&channel),
        ClientMessage::Signin { auth, user_data } => check_signin(&auth, &user_data),
        ClientMessage::ClientEvent {
            event,
            channel,
            data,
        } => {
            assert!(event.starts_with("client-"), "{event}");
            check_channel_name(&channel);
            let _ = channel_type(&channel).kind.client_event_refusal();
            // What the server relays parses back to the same event.
            let relayed = frames::client_event_frame(&event, &channel, &data, Some("u1"));
            match parse_client_frame(&relayed) {
                Ok(ClientMessage::ClientEvent {
                    event: e,
                    channel: c,
                    data: d,
                }) => {
                    assert_eq!((e.as_str(), c.as_str()), (event.as_str(), channel.as_str()));
                    assert_eq!(d.get(), data.get());
                }
                other => panic!("relayed {relayed} parsed as {other:?}"),
            }
        }
        ClientMessage::Unknown { event } => {
            assert!(!event.starts_with("client-"), "{event}");
        }
        ClientMessage::Ack { message_ids } => assert!(!message_ids.is_empty()),
    }
}

fn check_frame_error(error: &FrameError) {
    let message = error.to_string();
    assert!(
        message.chars().count() <= MAX_FRAME_ERROR_CHARS,
        "error too long: {message}"
    );
}

/// A subscribe request, unsigned and then correctly signed: the outcome is
/// a grant or a refusal with the status pusher-js expects, never a panic.
fn check_subscribe(mut request: frames::SubscribeRequest) {
    check_channel_name(&request.channel);
    let app = app();
    if let Err(refusal) = authorize(&app, SOCKET_ID, &request, None) {
        assert!(matches!(refusal.status, 400 | 401 | 403), "{refusal:?}");
    }
    // Signed as a backend would sign it, over the channel data sent.
    let auth = channel_auth(
        &app.key,
        &app.secret,
        SOCKET_ID,
        &request.channel,
        request.channel_data.as_deref(),
    );
    request.auth = Some(auth);
    let valid_name = channel_name_allowed(&request.channel);
    match authorize(&app, SOCKET_ID, &request, None) {
        Ok(Grant::Member(member)) => {
            assert!(valid_name);
            assert!(!member.user_id.is_empty());
            let info = member.user_info.as_ref().map_or(0, |raw| raw.get().len());
            assert!(info <= app.max_presence_user_info_bytes);
        }
        Ok(_) => assert!(valid_name, "{} granted", request.channel),
        Err(refusal) => {
            assert!(matches!(refusal.status, 400 | 401 | 403), "{refusal:?}");
            if !valid_name {
                assert_eq!(refusal.kind, "InvalidChannel");
            }
        }
    }
    if let Some(data) = &request.channel_data {
        check_member_data(data);
    }
}

fn check_signin(auth: &str, user_data: &str) {
    let app = app();
    let _ = verify_user_auth(&app.key, &app.secret, SOCKET_ID, user_data, auth);
    let signed = user_auth(&app.key, &app.secret, SOCKET_ID, user_data);
    assert!(verify_user_auth(
        &app.key,
        &app.secret,
        SOCKET_ID,
        user_data,
        &signed
    ));
    check_member_data(user_data);
}

/// A channel name (subscribe, unsubscribe, client event, API request).
pub fn channel_name(data: &[u8]) {
    if let Ok(name) = std::str::from_utf8(data) {
        check_channel_name(name);
    }
}

/// [`channel_name`] on text.
pub fn check_channel_name(name: &str) {
    let accepted = validate_channel_name(name, MAX_CHANNEL_NAME_LENGTH).is_ok();
    assert_eq!(accepted, channel_name_allowed(name), "{name:?}");
    let kind = channel_type(name);
    let _ = (kind.needs_auth(), kind.kind.client_event_refusal());
    let _ = crate::hub::peer::parse_peer_channel(name);
    if let Some(peer) = crate::hub::peer::peer_channel(name, "a", "b") {
        assert!(channel_name_allowed(&peer), "{peer}");
    }
    // An SSE event id names any channel and reads back the same.
    if !name.is_empty() {
        let id = event_id::format(&[(name.to_owned(), 7)]);
        let back = event_id::parse(&id, &[name.to_owned()]);
        assert_eq!(back, Ok(HashMap::from([(name.to_owned(), 7)])), "{id}");
    }
    if accepted {
        // A delivery frame's head is found without parsing, for every
        // name the check lets through.
        let data = serde_json::value::RawValue::NULL;
        let frame = frames::delivery_frame("m-1", "e", name, data, None, None);
        assert_eq!(frames::delivery_head(&frame), Some(("m-1", name)));
        let signed = channel_auth("k", "s", SOCKET_ID, name, None);
        assert!(verify_channel_auth(
            "k", "s", SOCKET_ID, name, None, &signed
        ));
    }
}

/// Presence `channel_data` and sign-in `user_data`, and an SSE token's
/// `user_data` (signed, so the presence data made of it is checked too).
pub fn member_data(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_member_data(text);
    }
}

/// [`member_data`] on text.
pub fn check_member_data(text: &str) {
    let limit = app().max_presence_user_info_bytes;
    match parse_channel_data(text, limit) {
        Ok(member) => {
            assert!(!member.user_id.is_empty());
            let info = member.user_info.as_ref().map_or(0, |raw| raw.get().len());
            assert!(info <= limit);
        }
        Err(MemberDataError::UserInfoTooLarge(n)) => assert_eq!(n, limit),
        Err(_) => {}
    }
    if let Ok(user) = parse_user_data(text) {
        assert!(!user.id.is_empty());
        assert!(user.watchlist.iter().all(|id| !id.is_empty()));
    }
    // The same text as the signed user_data of an SSE stream.
    let app = app();
    let channels = "presence-a";
    let expires = "4000000000";
    let signed = crate::protocol::auth::sign(
        &app.secret,
        &token::string_to_sign(&app.id, channels, expires, Some(text)),
    );
    let auth = format!("{}:{signed}", app.key);
    let params = token::TokenParams {
        auth: Some(&auth),
        expires: Some(expires),
        user_data: Some(text),
        app_id: None,
    };
    match token::verify(&app, channels, params, 1) {
        Ok(token::Verified::Signed(Some(user))) => {
            // The presence data made from it is what a subscribe accepts.
            let member = parse_channel_data(&user.presence_data, usize::MAX);
            assert_eq!(member.map(|m| m.user_id).ok(), Some(user.id));
        }
        Ok(other) => panic!("signed user_data gave {other:?}"),
        Err(error) => assert_eq!(error.status(), 400, "{error}"),
    }
}

/// A signed HTTP API request: `METHOD\nPATH\nQUERY\nBODY` (missing parts
/// empty). The query is checked as the request signature and read as the
/// handlers read it (`info`, `filter_by_prefix`, `since`/`limit`,
/// `protocol`), and the body as `/events` and `/batch_events` read it.
pub fn http_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    check_http_request(method, path, query, body.as_bytes());
}

/// [`http_request`] on its parts.
pub fn check_http_request(method: &str, path: &str, query: &str, body: &[u8]) {
    let app = app();
    let now = 1_000_000;
    let request = SignedRequest {
        method,
        path,
        raw_query: query,
        body,
    };
    if verify_request(&app.key, &app.secret, &request, now).is_ok() {
        // Only a request carrying a fresh timestamp can pass.
        let stamp = crate::http::signed::query_value(query, "auth_timestamp");
        let stamp: Option<i64> = stamp.and_then(|s| s.parse().ok());
        assert!(stamp.is_some_and(|t| now.abs_diff(t) <= MAX_TIMESTAMP_SKEW_SECS as u64));
    }
    for name in ["info", "filter_by_prefix", "since", "limit", "user_id"] {
        let value = crate::http::signed::query_value(query, name);
        let _ = crate::http::signed::info_attributes(value.as_deref());
    }
    let _ = crate::ws::handshake::check_protocol(query);
    let since = crate::http::signed::query_value(query, "since");
    let limit = crate::http::signed::query_value(query, "limit");
    if let Ok((_, limit)) = crate::http::history::paging(since.as_deref(), limit.as_deref()) {
        assert!((1..=crate::http::history::MAX_LIMIT).contains(&limit));
    }
    if let Ok(key) = std::str::from_utf8(body) {
        if crate::hub::idempotency::validate_key(key).is_ok() {
            assert!(!key.is_empty() && key.len() <= crate::hub::idempotency::MAX_KEY_BYTES);
        }
    }
    crate::http::events::check_bodies(&app, body);
    let _ = crate::http::persistence::parse_follow(&app, body, query);
}

/// An SSE `Last-Event-ID` (first line) for a stream of the channels on the
/// second line (comma-separated, as the `channels` parameter), with the
/// stream token parameters after (`auth`, `expires`, `user_data` lines).
pub fn sse_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(5, '\n');
    let id = lines.next().unwrap_or_default();
    let given = lines.next().unwrap_or_default();
    // The stream's names passed the channel-name check: none is empty.
    let channels: Vec<String> = given
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if let Ok(since) = event_id::parse(id, &channels) {
        assert!(since.keys().all(|channel| channels.contains(channel)));
        let mut positions: Vec<(String, u64)> = since.clone().into_iter().collect();
        positions.sort();
        let again = event_id::format(&positions);
        assert_eq!(event_id::parse(&again, &channels), Ok(since), "{again}");
    }
    let app = app();
    let params = token::TokenParams {
        auth: lines.next(),
        expires: lines.next(),
        user_data: lines.next(),
        app_id: Some("1"),
    };
    if let Err(error) = token::verify(&app, given, params, 1_000) {
        assert!(matches!(error.status(), 400 | 401 | 403), "{error}");
    }
}

/// An `xhr_send` body: a JSON array of frames, each parsed as a client frame.
pub fn xhr_send(data: &[u8]) {
    if let Ok(frames) = crate::xhr::framing::parse_send(data) {
        // What the server would send back in an `a[...]` line reads back the same.
        let encoded: Vec<bytestring::ByteString> = frames
            .iter()
            .map(|f| bytestring::ByteString::from(f.as_str()))
            .collect();
        let line = crate::xhr::framing::array(encoded.iter());
        let back: Result<Vec<String>, _> = serde_json::from_str(&line[1..]);
        assert_eq!(back.ok().as_ref(), Some(&frames));
        for frame in &frames {
            check_client_frame(frame);
        }
    }
}

/// A message from the Redis bus (another node, or anyone who can publish
/// on the Redis channel), and a stored acknowledged-delivery entry.
pub fn redis_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(message) = BusMessage::decode(text) {
        let again = message.encode();
        assert_eq!(BusMessage::decode(&again), Some(message), "{again}");
    }
    let now = Instant::now();
    let _ = crate::adapter::redis::delivery::entry_of("id", text, now, 1_000);
}

/// A config file (TOML): parsed, validated, and, when valid, every value
/// the server derives from it at start-up computed.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let _ = config.summary();
    if config.validate().is_err() {
        return;
    }
    let _ = (config.unused_settings(), config.default_secret_warnings());
    let _ = (
        config.server.handover_wait(),
        config.server.subscribe_wait(),
    );
    for app in &config.apps {
        let policy = app.delivery.policy();
        let _ = app.recovery_window();
        for resends in [0, 1, 30, u32::MAX] {
            let _ = policy.wait(resends);
        }
    }
    let _ = crate::apps::AppRegistry::new(config.apps.clone());
}
