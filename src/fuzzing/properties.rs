//! Property tests of the parsers input reaches (run by `cargo test`).
//!
//! Cases per property: `PROPTEST_CASES` from the environment, 64 by
//! default so the suite stays fast in CI; a long run sets it higher
//! (`PROPTEST_CASES=100000 cargo test --lib fuzzing::properties`). A
//! failure is fixed in the code with a unit test beside it, so no
//! regression files are written.

use super::*;
use crate::protocol::auth::{sign, RequestAuthError};
use crate::protocol::channel::ChannelNameError;
use crate::protocol::frames::SubscribeRequest;
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Value};

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Names the channel rule accepts.
fn valid_channel() -> impl Strategy<Value = String> {
    let body = "[a-zA-Z0-9_=@,.;-]{1,100}";
    prop_oneof![
        body.prop_map(|b| b.to_string()),
        body.prop_map(|b| format!("private-{b}")),
        body.prop_map(|b| format!("presence-{b}")),
        body.prop_map(|b| format!("#server-to-user-{b}")),
        "[a-z]{1,10}:[a-z0-9]{1,10}&[a-z0-9]{1,10}".prop_map(|b| format!("peer-{b}")),
    ]
}

/// Names near the rule's edges: allowed characters, the prefixes, the
/// characters allowed only in some names, and anything at all.
fn channel_like() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("private-"),
        Just("presence-"),
        Just("peer-"),
        Just("#server-to-user-"),
        Just("#"),
        Just("cache-"),
    ];
    prop_oneof![
        (prefix, "[a-zA-Z0-9_=@,.;:&#!% é\t-]{0,170}").prop_map(|(p, b)| format!("{p}{b}")),
        ".{0,200}",
    ]
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_text_is_a_frame_or_a_short_error(text in ".{0,300}") {
        check_client_frame(&text);
    }

    #[test]
    fn any_json_object_is_a_frame_or_a_short_error(
        event in prop_oneof![
            Just("pusher:subscribe".to_owned()),
            Just("pusher:unsubscribe".to_owned()),
            Just("pusher:signin".to_owned()),
            Just("pusher:ack".to_owned()),
            "client-.{0,10}",
            ".{0,12}",
        ],
        channel in json_value(),
        data in json_value(),
        data_as_string in any::<bool>(),
    ) {
        let data = if data_as_string { Value::String(data.to_string()) } else { data };
        let frame = json!({ "event": event, "channel": channel, "data": data });
        check_client_frame(&frame.to_string());
    }

    /// A client event the server relays parses back to itself.
    #[test]
    fn relayed_client_events_parse_back_to_themselves(
        event in "client-[a-zA-Z0-9_-]{0,30}",
        channel in valid_channel(),
        data in json_value(),
        user_id in proptest::option::of(".{1,20}"),
    ) {
        let raw = serde_json::value::RawValue::from_string(data.to_string()).unwrap();
        let relayed = frames::client_event_frame(&event, &channel, &raw, user_id.as_deref());
        match parse_client_frame(&relayed) {
            Ok(ClientMessage::ClientEvent { event: e, channel: c, data: d }) => {
                prop_assert_eq!(e, event);
                prop_assert_eq!(c, channel);
                prop_assert_eq!(d.get(), raw.get());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// A subscribe frame, data as an object or as a JSON string, parses to
    /// its fields.
    #[test]
    fn subscribe_frames_parse_to_their_fields(
        channel in ".{0,40}",
        auth in proptest::option::of(".{0,40}"),
        channel_data in proptest::option::of(".{0,40}"),
        since in proptest::option::of(any::<u64>()),
        data_as_string in any::<bool>(),
    ) {
        let data = json!({
            "channel": channel, "auth": auth, "channel_data": channel_data, "since": since,
        });
        let data = if data_as_string { Value::String(data.to_string()) } else { data };
        let frame = json!({ "event": "pusher:subscribe", "data": data }).to_string();
        match parse_client_frame(&frame) {
            Ok(ClientMessage::Subscribe(request)) => {
                prop_assert_eq!(request.channel, channel);
                prop_assert_eq!(request.auth, auth);
                prop_assert_eq!(request.channel_data, channel_data);
                prop_assert_eq!(request.since, since);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// The validator accepts exactly the names of the rule (1..=164 bytes
    /// of `A-Z a-z 0-9 _ - = @ , . ;`, `:`/`&` in peer names, the
    /// `#server-to-user-` prefix), and says why it refuses.
    #[test]
    fn channel_names_are_accepted_exactly_by_the_rule(name in channel_like()) {
        check_channel_name(&name);
        match validate_channel_name(&name, MAX_CHANNEL_NAME_LENGTH) {
            Ok(()) => {
                prop_assert!(name.len() <= MAX_CHANNEL_NAME_LENGTH);
                prop_assert!(name.is_ascii());
            }
            Err(ChannelNameError::Empty) => prop_assert!(name.is_empty()),
            Err(ChannelNameError::TooLong { max }) => {
                prop_assert_eq!(max, MAX_CHANNEL_NAME_LENGTH);
                prop_assert!(name.len() > MAX_CHANNEL_NAME_LENGTH);
            }
            Err(ChannelNameError::InvalidCharacters) => {
                prop_assert!(name.len() <= MAX_CHANNEL_NAME_LENGTH);
            }
        }
    }

    #[test]
    fn valid_names_pass_and_longer_ones_are_too_long(
        name in valid_channel(),
        extra in "[a-z]{0,200}",
    ) {
        prop_assert!(validate_channel_name(&name, MAX_CHANNEL_NAME_LENGTH).is_ok() || name.len() > MAX_CHANNEL_NAME_LENGTH);
        let long = format!("{name}{extra}");
        let expected = if long.len() > MAX_CHANNEL_NAME_LENGTH {
            Err(ChannelNameError::TooLong { max: MAX_CHANNEL_NAME_LENGTH })
        } else {
            Ok(())
        };
        prop_assert_eq!(validate_channel_name(&long, MAX_CHANNEL_NAME_LENGTH), expected);
    }

    /// Signed presence channel_data whose user_id is missing or not a
    /// non-empty string or number is refused as InvalidChannelData (400).
    #[test]
    fn presence_data_with_a_bad_user_id_is_a_400(
        user_id in prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            any::<bool>().prop_map(|b| Some(Value::Bool(b))),
            Just(Some(Value::String(String::new()))),
            vec(json_value(), 0..3).prop_map(|v| Some(Value::Array(v))),
            Just(Some(json!({"id": "u1"}))),
        ],
        info in json_value(),
    ) {
        let mut data = json!({ "user_info": info });
        if let Some(id) = user_id {
            data["user_id"] = id;
        }
        let refusal = subscribe_signed("presence-room", &data.to_string()).unwrap_err();
        prop_assert_eq!(refusal.kind, "InvalidChannelData");
        prop_assert_eq!(refusal.status, 400);
        prop_assert!(refusal.message.contains("user_id"), "{}", refusal.message);
    }

    /// user_info over `max_presence_user_info_bytes` (1024) is a 400 that
    /// names the limit; within it, the member is granted as sent.
    #[test]
    fn presence_user_info_is_bounded(
        id in prop_oneof![".{1,30}".prop_map(Value::String), any::<i64>().prop_map(Value::from)],
        size in 0usize..4096,
    ) {
        let info = json!({ "name": "x".repeat(size) });
        let data = json!({ "user_id": id, "user_info": info }).to_string();
        let sent = info.to_string().len();
        match subscribe_signed("presence-room", &data) {
            Ok(Grant::Member(member)) => {
                prop_assert!(sent <= 1024);
                let expected = match &id { Value::String(s) => s.clone(), other => other.to_string() };
                prop_assert_eq!(member.user_id, expected);
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(refusal) => {
                prop_assert!(sent > 1024);
                prop_assert_eq!((refusal.kind, refusal.status), ("InvalidChannelData", 400));
                prop_assert!(refusal.message.contains("1024"), "{}", refusal.message);
            }
        }
    }

    #[test]
    fn any_member_data_is_parsed_or_refused(text in ".{0,200}", value in json_value()) {
        check_member_data(&text);
        check_member_data(&value.to_string());
    }

    /// A query signed the way each SDK signs it verifies, whatever the
    /// order of its parameters: values as sent (Node), URL-encoded values
    /// as sent (Python), decoded values sent encoded with `+` or `%20` for
    /// spaces (Ruby, PHP).
    #[test]
    fn correctly_signed_queries_verify_in_any_order(
        (params, order) in signed_params(),
        style in 0..4u8,
        body in ".{0,40}",
    ) {
        let params: Vec<(String, String)> = match style {
            // The Node SDK sends what it signs unencoded: only plain values survive that.
            0 => params.into_iter().map(|(k, v)| (k, plain(&v))).collect(),
            // A decoded value holding `&` is ambiguous: such a value must be
            // signed as sent (see `separators_inside_values_cannot_forge_parameters`).
            2 | 3 => params.into_iter().map(|(k, v)| (k, v.replace('&', ""))).collect(),
            _ => params,
        };
        let query = signed_query(&params, &order, style, body.as_bytes());
        prop_assert_eq!(verify(&query, body.as_bytes()), Ok(()), "{}", query);
        // What the handlers read is what was signed.
        for (key, value) in &params {
            prop_assert_eq!(crate::http::signed::query_value(&query, key), Some(value.clone()));
        }
    }

    /// Changing, dropping or adding a parameter of a signed query breaks
    /// the signature; repeating one is refused whatever it repeats.
    #[test]
    fn tampered_queries_are_refused(
        (params, order) in signed_params(),
        style in 1..4u8,
        victim in any::<prop::sample::Index>(),
        // No `%` or `+`: a value that is the literal encoding of the signed
        // one reads the same under the two accepted forms (see README).
        other in "[^%+]{0,10}",
    ) {
        let params: Vec<(String, String)> =
            params.into_iter().map(|(k, v)| (k, v.replace('&', ""))).collect();
        let query = signed_query(&params, &order, style, b"");
        let (key, value) = &params[victim.index(params.len())];
        let pairs: Vec<&str> = query.split('&').collect();
        let is_victim = |pair: &&str| pair.split('=').next() == Some(key.as_str());
        // A changed value.
        if other != *value {
            let changed: Vec<String> = pairs
                .iter()
                .map(|pair| if is_victim(pair) { format!("{key}={}", encode(&other)) } else { pair.to_string() })
                .collect();
            prop_assert_eq!(verify(&changed.join("&"), b""), Err(RequestAuthError::BadSignature));
        }
        // A dropped parameter.
        let dropped: Vec<&str> = pairs.iter().copied().filter(|p| !is_victim(p)).collect();
        prop_assert_eq!(verify(&dropped.join("&"), b""), Err(RequestAuthError::BadSignature));
        // An added one.
        let added = format!("{query}&zz_added={}", encode(&other));
        prop_assert_eq!(verify(&added, b""), Err(RequestAuthError::BadSignature));
        // A repeated one, with the same value or another.
        for again in [value.as_str(), other.as_str()] {
            let repeated = format!("{query}&{key}={}", encode(again));
            prop_assert_eq!(
                verify(&repeated, b""),
                Err(RequestAuthError::RepeatedParameter(key.clone()))
            );
        }
    }

    /// A value holding `&` or `=`, signed decoded, cannot be re-read as
    /// other parameters: the decoded form is not used when it is ambiguous.
    #[test]
    fn separators_inside_values_cannot_forge_parameters(
        a in "[a-z]{1,8}", b in "[a-z]{1,8}",
    ) {
        // Signed: filter_by_prefix=a and info=b (two parameters), decoded.
        let params = vec![("filter_by_prefix".to_owned(), a.clone()), ("info".to_owned(), b.clone())];
        let query = signed_query(&params, &[0, 1, 2, 3, 4], 2, b"");
        prop_assert_eq!(verify(&query, b""), Ok(()));
        // Forged: one parameter whose decoded value spells both.
        let signature = query.rsplit_once("auth_signature=").map(|(_, s)| s.to_owned()).unwrap();
        let forged = format!(
            "{}&filter_by_prefix={a}%26info%3D{b}&auth_signature={signature}",
            base_params().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"),
        );
        prop_assert_eq!(verify(&forged, b""), Err(RequestAuthError::BadSignature));
        // Nor can a parameter name carry a separator.
        let named = format!("{query}&a%3Db=c");
        prop_assert!(matches!(verify(&named, b""), Err(RequestAuthError::BadParameterName(_))));
    }

    /// Any `auth_timestamp`, at any server time: refused as stale unless
    /// within 600 s, never an overflow.
    #[test]
    fn any_timestamp_is_checked_without_overflow(
        stamp in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)],
        now in prop_oneof![any::<i64>(), Just(1_000_000i64), Just(i64::MIN), Just(i64::MAX)],
    ) {
        let query = format!("auth_key=key&auth_timestamp={stamp}&auth_signature=00");
        let request = SignedRequest { method: "GET", path: "/p", raw_query: &query, body: b"" };
        let result = verify_request("key", "secret", &request, now);
        let fresh = (i128::from(now) - i128::from(stamp)).abs() <= i128::from(MAX_TIMESTAMP_SKEW_SECS);
        if fresh {
            prop_assert_eq!(result, Err(RequestAuthError::BadSignature));
        } else {
            prop_assert_eq!(result, Err(RequestAuthError::StaleTimestamp));
        }
    }

    #[test]
    fn any_http_request_is_checked_without_panic(
        method in "[A-Z]{0,7}",
        path in "/.{0,30}",
        query in "[a-z_%&=+0-9A-F.,-]{0,120}",
        body in prop_oneof![".{0,100}", json_value().prop_map(|v| v.to_string())],
    ) {
        check_http_request(&method, &path, &query, body.as_bytes());
        let body = json!({ "batch": [ { "name": "e", "data": body, "channel": "a" } ] }).to_string();
        check_http_request(&method, &path, &query, body.as_bytes());
    }

    /// `since` is a serial (any u64) or a 400; `limit` is 1..=1000 or a 400.
    #[test]
    fn history_paging_takes_exactly_serials_and_limits(since in ".{0,25}", limit in "[0-9]{0,5}") {
        let result = crate::http::history::paging(Some(&since), Some(&limit));
        let limit_ok = limit.parse::<usize>().is_ok_and(|n| (1..=1000).contains(&n));
        prop_assert_eq!(result.is_ok(), since.parse::<u64>().is_ok() && limit_ok);
    }

    /// An idempotency key is accepted iff it is 1..=256 bytes without a
    /// control character.
    #[test]
    fn idempotency_keys_follow_the_rule(key in prop_oneof![".{0,300}", "[ -~]{250,260}"]) {
        let expected = !key.is_empty() && key.len() <= 256 && !key.chars().any(char::is_control);
        prop_assert_eq!(crate::hub::idempotency::validate_key(&key).is_ok(), expected);
    }

    /// `protocol=N` is served for 5..=7 only.
    #[test]
    fn protocol_versions_are_5_to_7(version in any::<u64>(), junk in "[a-z=&]{0,10}") {
        let served = crate::ws::handshake::check_protocol(&format!("{junk}&protocol={version}"));
        // The first `protocol` wins: only assert when junk names none.
        if !junk.split('&').any(|pair| pair.split('=').next() == Some("protocol")) {
            prop_assert_eq!(served.is_ok(), (5..=7).contains(&version));
        }
    }

    /// An SSE event id names every channel's serial and reads back the same,
    /// whatever the names hold.
    #[test]
    fn sse_event_ids_round_trip(positions in btree_map(".{1,30}", any::<u64>(), 0..6)) {
        let positions: Vec<(String, u64)> = positions.into_iter().collect();
        let channels: Vec<String> = positions.iter().map(|(c, _)| c.clone()).collect();
        let id = event_id::format(&positions);
        let parsed = event_id::parse(&id, &channels);
        prop_assert_eq!(parsed, Ok(positions.into_iter().collect::<HashMap<_, _>>()), "{}", id);
    }

    #[test]
    fn any_sse_request_is_parsed_or_refused(text in ".{0,200}", id in "[a-z0-9=,%]{0,40}") {
        sse_request(text.as_bytes());
        sse_request(format!("{id}\na,b,c").as_bytes());
    }

    /// The frames of an `a[...]` line read back as sent, and any body is
    /// parsed or refused.
    #[test]
    fn xhr_lines_read_back_their_frames(frames in vec(".{0,60}", 0..6), body in ".{0,100}") {
        let encoded: Vec<bytestring::ByteString> = frames.iter().map(|f| f.as_str().into()).collect();
        let line = crate::xhr::framing::array(encoded.iter());
        prop_assert_eq!(crate::xhr::framing::parse_send(&line.as_bytes()[1..]), Ok(frames));
        xhr_send(body.as_bytes());
    }

    /// Every bus message reads back as itself, whatever its fields hold
    /// (the frame may hold the separator; the other fields never do).
    #[test]
    fn bus_messages_round_trip(
        fields in vec("[^\u{1f}]{0,20}", 4),
        frame in ".{0,60}",
        number in any::<u64>(),
        live in any::<bool>(),
        text in ".{0,100}",
    ) {
        let messages = [
            BusMessage::Publish { node: &fields[0], app_id: &fields[1], channel: &fields[2], except: &fields[3], frame: &frame },
            BusMessage::History { node: &fields[0], app_id: &fields[1], channel: &fields[2], except: &fields[3], live, serial: number, frame: &frame },
            BusMessage::Marker { node: &fields[0], token: number },
            BusMessage::Terminate { node: &fields[0], app_id: &fields[1], user_id: &frame },
        ];
        for message in messages {
            let wire = message.encode();
            prop_assert_eq!(BusMessage::decode(&wire), Some(message));
        }
        redis_message(text.as_bytes());
    }

    /// Any number in any numeric option is refused with a message or
    /// accepted with every derived value computable.
    #[test]
    fn config_numbers_never_panic(
        key in prop::sample::select(vec![
            "server.activity_timeout", "server.pong_timeout", "server.subscribe_wait_ms",
            "server.shutdown_grace", "server.handover_wait_ms", "server.max_frame_bytes",
            "server.outgoing_queue", "server.workers", "server.max_request_bytes",
            "server.webhooks.batch_size", "server.webhooks.batch_ms", "server.webhooks.queue",
            "server.webhooks.max_attempts", "server.webhooks.backoff_ms",
            "server.webhooks.member_removed_delay_ms", "transports.long_poll_timeout",
            "transports.heartbeat", "transports.max_sessions", "redis.heartbeat_secs",
            "redis.node_timeout_secs", "store.message_ttl_secs", "app.max_connections",
            "app.max_event_data_bytes", "app.max_channel_name_length", "app.client_event_rate",
            "app.cache_ttl", "app.history_size", "app.history_ttl", "app.idempotency_window",
            "app.recovery_window", "app.delivery.ack_timeout_ms", "app.delivery.retry_backoff",
            "app.delivery.max_retries", "app.delivery.message_ttl", "app.max_api_requests_per_second",
        ]),
        value in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            Just(u64::MAX.to_string()),
            Just("0".to_owned()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            Just("nan".to_owned()),
            Just("inf".to_owned()),
        ],
    ) {
        let (table, name) = key.rsplit_once('.').unwrap();
        let text = match table.strip_prefix("app") {
            Some(rest) => {
                let sub = rest.strip_prefix('.').map(|t| format!("[apps.{t}]\n")).unwrap_or_default();
                format!("[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n{sub}{name} = {value}\n")
            }
            None => format!("[{table}]\n{name} = {value}\n"),
        };
        config(text.as_bytes());
    }

    #[test]
    fn any_config_text_is_parsed_or_refused(text in ".{0,200}") {
        config(text.as_bytes());
    }
}

/// A subscribe to `channel` with `channel_data`, correctly signed.
fn subscribe_signed(
    channel: &str,
    data: &str,
) -> Result<Grant, crate::hub::authorize::SubscriptionError> {
    let app = app();
    let request = SubscribeRequest {
        channel: channel.to_owned(),
        auth: Some(channel_auth(
            &app.key,
            &app.secret,
            SOCKET_ID,
            channel,
            Some(data),
        )),
        channel_data: Some(data.to_owned()),
        since: None,
    };
    authorize(&app, SOCKET_ID, &request, None)
}

const NOW: i64 = 1_000_000;

fn base_params() -> Vec<(String, String)> {
    vec![
        ("auth_key".into(), "key".into()),
        ("auth_timestamp".into(), NOW.to_string()),
        ("auth_version".into(), "1.0".into()),
    ]
}

/// Request parameters besides the auth ones (names as the SDKs use:
/// lower-case words), and an order to send them in.
fn signed_params() -> impl Strategy<Value = (Vec<(String, String)>, Vec<usize>)> {
    btree_map("[a-z][a-z_]{0,11}", ".{0,20}", 1..5)
        .prop_map(|m| {
            m.into_iter()
                .filter(|(k, _)| !k.starts_with("auth_") && k != "body_md5")
                .collect::<Vec<_>>()
        })
        .prop_filter("at least one parameter", |p: &Vec<_>| !p.is_empty())
        .prop_flat_map(|params| {
            let n = params.len() + base_params().len();
            (
                Just(params),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            )
        })
}

/// `value` with only the characters a raw (unencoded) query can carry.
fn plain(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_,.-:".contains(*c))
        .collect()
}

/// Characters an encoded value keeps as they are (RFC 3986 unreserved).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE).to_string()
}

/// The query an SDK sends for `params` (with the auth parameters),
/// pairs in `order`, signed in `style`: 0 raw values (Node), 1 encoded
/// values (Python), 2 decoded values sent encoded with `%20`, 3 the same
/// with `+` for spaces (Ruby, PHP).
fn signed_query(params: &[(String, String)], order: &[usize], style: u8, body: &[u8]) -> String {
    let mut all = base_params();
    all.extend(params.iter().cloned());
    let md5 = (!body.is_empty()).then(|| ("body_md5".to_owned(), hex::encode(Md5::digest(body))));
    let sent = |value: &str| match style {
        0 => value.to_owned(),
        3 => encode(value).replace("%20", "+"),
        _ => encode(value),
    };
    let signed_value = |value: &str| match style {
        1 => encode(value),
        _ => value.to_owned(),
    };
    let mut sorted: Vec<String> = all
        .iter()
        .chain(md5.iter())
        .map(|(k, v)| format!("{k}={}", signed_value(v)))
        .collect();
    sorted.sort();
    let signature = sign(
        "secret",
        &format!("GET\n/apps/1/channels\n{}", sorted.join("&")),
    );
    let mut pairs: Vec<String> = md5.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.extend(
        order
            .iter()
            .filter_map(|&i| all.get(i))
            .map(|(k, v)| format!("{k}={}", sent(v))),
    );
    pairs.push(format!("auth_signature={signature}"));
    pairs.join("&")
}

fn verify(query: &str, body: &[u8]) -> Result<(), RequestAuthError> {
    let request = SignedRequest {
        method: "GET",
        path: "/apps/1/channels",
        raw_query: query,
        body,
    };
    verify_request("key", "secret", &request, NOW)
}
