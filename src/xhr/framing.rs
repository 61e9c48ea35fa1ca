//! The SockJS-style lines pusher-js's HTTP transports read (pusher-js
//! `src/core/http/http_socket.ts`, `onChunk`): every line ends with `\n`
//! and starts with its type:
//!
//! - `o` — the session is open (first line of a session, never again);
//! - `a[...]` — a JSON array of Pusher frames, each a JSON string;
//! - `h` — a heartbeat (xhr_streaming answers it with an empty send);
//! - `c[code,"reason"]` — the session is closed with a Pusher close code.

use bytestring::ByteString;

/// `o\n`: the session is open.
pub const OPEN: &str = "o\n";

/// `h\n`: a heartbeat.
pub const HEARTBEAT: &str = "h\n";

/// `a[...]\n` carrying `frames` (encoded Pusher frames) in order.
pub fn array<'a>(frames: impl IntoIterator<Item = &'a ByteString>) -> String {
    let mut line = String::from("a[");
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        push_json_string(&mut line, frame);
    }
    line.push_str("]\n");
    line
}

/// `c[code,"reason"]\n`: the session closed with a Pusher close code.
pub fn close(code: u16, reason: &str) -> String {
    let mut line = format!("c[{code},");
    push_json_string(&mut line, reason);
    line.push_str("]\n");
    line
}

/// Appends `text` as a JSON string literal (RFC 8259 §7).
fn push_json_string(out: &mut String, text: &str) {
    // serde_json's escaping of a &str cannot fail.
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Parses an `xhr_send` body: a JSON array of frames, each a JSON string
/// (`[]` is a heartbeat). The error says what is wrong, for a 400.
pub fn parse_send(body: &[u8]) -> Result<Vec<String>, String> {
    serde_json::from_slice::<Vec<String>>(body)
        .map_err(|error| format!("body must be a JSON array of strings (Pusher frames): {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_pusher_js_reads_them() {
        let frames = [
            ByteString::from(r#"{"event":"e","data":"x\"y"}"#),
            ByteString::from("{}"),
        ];
        let line = array(frames.iter());
        assert_eq!(
            line,
            "a[\"{\\\"event\\\":\\\"e\\\",\\\"data\\\":\\\"x\\\\\\\"y\\\"}\",\"{}\"]\n"
        );
        // What pusher-js does with the line: JSON.parse of what follows `a`,
        // then each element is a frame text.
        let parsed: Vec<String> = serde_json::from_str(&line[1..]).unwrap();
        assert_eq!(parsed, vec![frames[0].to_string(), frames[1].to_string()]);
        assert_eq!(array([].iter()), "a[]\n");
        assert_eq!(
            close(4009, "Unauthorized \"x\""),
            "c[4009,\"Unauthorized \\\"x\\\"\"]\n"
        );
    }

    #[test]
    fn send_bodies() {
        assert_eq!(parse_send(b"[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_send(br#"["{\"event\":\"pusher:ping\",\"data\":{}}"]"#).unwrap(),
            vec![r#"{"event":"pusher:ping","data":{}}"#.to_string()]
        );
        assert!(parse_send(b"{}").is_err());
        assert!(parse_send(b"[1]").is_err());
        assert!(parse_send(b"").is_err());
    }
}
