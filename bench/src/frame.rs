//! Cheap scanning of received frames. A delivery is only searched for the
//! few bytes the generator needs; nothing is parsed as JSON on the hot path.
//!
//! Event data written by the generator is plain ASCII with no characters
//! that JSON escapes: `ts=<unix micros>;seq=<n>;xxxx...`, so it reads the same
//! whether a server sends `data` as a string (double-encoded) or not.

use memchr::memmem;

/// Event name the generator publishes.
pub const BENCH_EVENT: &str = "bench";

/// Event data: the send time, a sequence number, and padding to `size` bytes.
pub fn event_data(ts_micros: u64, seq: u64, size: usize) -> String {
    let mut data = format!("ts={ts_micros};seq={seq};");
    while data.len() < size {
        data.push('x');
    }
    data
}

fn digits_at(bytes: &[u8], start: usize) -> Option<u64> {
    let mut value: u64 = 0;
    let mut seen = false;
    for &b in bytes.get(start..)? {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        seen = true;
    }
    seen.then_some(value)
}

/// The `ts=` stamp (unix micros) in a frame, if it has one.
pub fn stamp(frame: &str) -> Option<u64> {
    let bytes = frame.as_bytes();
    let at = memmem::find(bytes, b"ts=")?;
    digits_at(bytes, at + 3)
}

/// The value of the `"event"` key: `{"event":"name",...}` (spaces tolerated).
pub fn event_name(frame: &str) -> Option<&str> {
    let at = frame.find("\"event\"")? + "\"event\"".len();
    let rest = frame[at..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The token after `key` in a frame, skipping the quotes, colons, spaces and
/// backslashes of (double-)encoded JSON: `\"socket_id\":\"123.456\"` → `123.456`.
pub fn token_after<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let at = frame.find(key)? + key.len();
    let rest = &frame[at..];
    let rest = rest.trim_start_matches(['"', '\\', ':', ' ']);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The socket id in `pusher:connection_established`.
pub fn socket_id(frame: &str) -> Option<&str> {
    token_after(frame, "socket_id")
}

/// The close or error code in a `pusher:error` frame, if any.
pub fn error_code(frame: &str) -> Option<u64> {
    token_after(frame, "code\\\":")
        .or_else(|| token_after(frame, "code\":"))
        .and_then(|token| token.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_found_in_double_encoded_and_plain_data() {
        let data = event_data(1_700_000_000_123_456, 7, 64);
        assert_eq!(data.len(), 64);
        let double = format!(r#"{{"event":"bench","channel":"c","data":"{data}"}}"#);
        assert_eq!(stamp(&double), Some(1_700_000_000_123_456));
        assert_eq!(stamp(r#"{"event":"x","data":"{}"}"#), None);
    }

    #[test]
    fn event_name_tolerates_spaces_and_key_order() {
        assert_eq!(
            event_name(r#"{"channel":"c","event":"pusher_internal:subscription_succeeded"}"#),
            Some("pusher_internal:subscription_succeeded")
        );
        assert_eq!(event_name(r#"{ "event" : "bench" }"#), Some("bench"));
        assert_eq!(event_name(r#"{"data":"x"}"#), None);
    }

    #[test]
    fn socket_id_is_read_from_double_encoded_data() {
        let frame = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#;
        assert_eq!(socket_id(frame), Some("123.456"));
        let user = r#"{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"k1-2\",\"user_info\":{}}"}"#;
        assert_eq!(token_after(user, "user_id"), Some("k1-2"));
    }

    #[test]
    fn error_code_is_read() {
        assert_eq!(
            error_code(r#"{"event":"pusher:error","data":{"code":4100,"message":"x"}}"#),
            Some(4100)
        );
        assert_eq!(
            error_code(r#"{"event":"pusher:error","data":"{\"code\":4001}"}"#),
            Some(4001)
        );
    }
}
