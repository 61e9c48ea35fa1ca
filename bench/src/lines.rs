//! The wire formats of the HTTP transports, parsed as their clients parse
//! them, one line at a time:
//!
//! - pusher-js's `xhr_streaming` / `xhr_polling` (SockJS-style lines,
//!   pusher-js `src/core/http/http_socket.ts` `onChunk`; rusher
//!   `src/xhr/framing.rs`): `o`, `a["<frame>",...]`, `h`, `c[code,"reason"]`,
//!   each ended by `\n`;
//! - Server-Sent Events (WHATWG HTML §9.2.6 "Interpreting an event stream"):
//!   `event:` / `data:` / `id:` fields, `:` comments, a blank line ends an
//!   event. rusher sends each Pusher frame as one event named after it whose
//!   data is the frame's JSON.
//!
//! [`LineBuffer`] cuts a body's chunks into lines for both.

use anyhow::{bail, Context, Result};

/// Cuts a byte stream into lines ended by `\n` (a `\r` before it is
/// dropped, so CRLF lines read the same). A lone `\r` as line end, which
/// SSE also allows, is not recognised: no server of interest sends it.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
}

impl LineBuffer {
    /// Appends a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole line, without its end. Errors when it is not UTF-8.
    pub fn next_line(&mut self) -> Option<Result<String>> {
        let rest = &self.buffer[self.start..];
        let end = memchr::memchr(b'\n', rest)?;
        let mut line = &rest[..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let text = std::str::from_utf8(line)
            .map(str::to_owned)
            .context("a line of the response is not UTF-8");
        self.start += end + 1;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            // Keep the buffer from growing with a long stream.
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        Some(text)
    }

    /// Bytes received that do not end a line yet.
    pub fn pending(&self) -> usize {
        self.buffer.len() - self.start
    }
}

/// One line of `xhr_streaming` / `xhr_polling`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XhrLine {
    /// `o`: the session is open.
    Open,
    /// `a[...]`: Pusher frames (their JSON texts), in order.
    Frames(Vec<String>),
    /// `h`: a heartbeat (a streaming client answers with an empty send).
    Heartbeat,
    /// `c[code,"reason"]`: the session closed with this Pusher close code.
    Close(u16, String),
}

/// Parses one line (without its `\n`), as pusher-js does: the type is the
/// first character, the rest is JSON.
pub fn parse_xhr_line(line: &str) -> Result<XhrLine> {
    let (kind, rest) = line.split_at_checked(1).unwrap_or((line, ""));
    match kind {
        "o" => Ok(XhrLine::Open),
        "h" => Ok(XhrLine::Heartbeat),
        "a" => serde_json::from_str::<Vec<String>>(rest)
            .map(XhrLine::Frames)
            .with_context(|| format!("bad `a` line: {}", clip(line))),
        "c" => {
            let (code, reason): (u16, String) = serde_json::from_str(rest)
                .with_context(|| format!("bad `c` line: {}", clip(line)))?;
            Ok(XhrLine::Close(code, reason))
        }
        _ => bail!("unknown line type: {}", clip(line)),
    }
}

fn clip(line: &str) -> &str {
    let mut end = line.len().min(120);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when none was given.
    pub event: String,
    /// The `data:` lines joined by `\n`: here, one Pusher frame's JSON.
    pub data: String,
    /// The `id:` field of this event, if any (what `Last-Event-ID` replays from).
    pub id: Option<String>,
}

/// Builds events from SSE lines: feed every line (without its end) to
/// [`SseParser::line`]; the blank line that ends an event returns it.
#[derive(Debug, Default)]
pub struct SseParser {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Takes one line; returns the event a blank line completes. Comments
    /// (`:` lines, the server's heartbeats), `retry:` and unknown fields are
    /// skipped; an event without `data` is not dispatched (as the spec says).
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            let id = self.id.take();
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
                id,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // An id with NUL is ignored (spec).
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut buffer = LineBuffer::default();
        let mut out = Vec::new();
        for chunk in chunks {
            buffer.push(chunk);
            while let Some(line) = buffer.next_line() {
                out.push(line.unwrap());
            }
        }
        out
    }

    #[test]
    fn lines_are_cut_across_chunks_and_crlf_is_one_end() {
        assert_eq!(
            lines_of(&[b"o\na[\"x", b"\"]\r\n", b"h\n\nc[1"]),
            vec!["o", "a[\"x\"]", "h", ""]
        );
        let mut buffer = LineBuffer::default();
        buffer.push(b"c[1");
        assert!(buffer.next_line().is_none());
        assert_eq!(buffer.pending(), 3);
        buffer.push(&[0xff, b'\n']);
        assert!(buffer.next_line().unwrap().is_err());
        assert_eq!(buffer.pending(), 0);
    }

    #[test]
    fn xhr_lines_as_rusher_writes_them() {
        // What rusher's src/xhr/framing.rs writes for two frames.
        let line =
            r#"a["{\"event\":\"bench\",\"channel\":\"c\",\"data\":\"ts=17;seq=1;x\"}","{}"]"#;
        let XhrLine::Frames(frames) = parse_xhr_line(line).unwrap() else {
            panic!("not frames");
        };
        assert_eq!(
            frames,
            vec![
                r#"{"event":"bench","channel":"c","data":"ts=17;seq=1;x"}"#.to_owned(),
                "{}".to_owned()
            ]
        );
        assert_eq!(crate::frame::stamp(&frames[0]), Some(17));
        assert_eq!(crate::frame::event_name(&frames[0]), Some("bench"));
        assert_eq!(parse_xhr_line("o").unwrap(), XhrLine::Open);
        assert_eq!(parse_xhr_line("h").unwrap(), XhrLine::Heartbeat);
        assert_eq!(parse_xhr_line("a[]").unwrap(), XhrLine::Frames(vec![]));
        assert_eq!(
            parse_xhr_line(r#"c[4100,"Over capacity \"x\""]"#).unwrap(),
            XhrLine::Close(4100, "Over capacity \"x\"".to_owned())
        );
    }

    #[test]
    fn bad_xhr_lines_are_errors_naming_the_line() {
        for bad in ["", "x", "a[", "a[1]", "c[]", "c[\"4100\",\"x\"]"] {
            let error = parse_xhr_line(bad).unwrap_err();
            assert!(format!("{error:#}").contains(bad), "{bad}: {error:#}");
        }
    }

    fn events_of(text: &str) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        lines_of(&[text.as_bytes()])
            .iter()
            .filter_map(|line| parser.line(line))
            .collect()
    }

    #[test]
    fn sse_events_carry_name_data_and_id() {
        let frame = r#"{"event":"bench","channel":"c","data":"ts=42;seq=3;xx"}"#;
        let text = format!(
            ": heartbeat\n\nevent: pusher:connection_established\ndata: {{}}\n\n\
             id: c:7\r\nevent: bench\r\ndata: {frame}\r\n\r\n"
        );
        let events = events_of(&text);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "pusher:connection_established".into(),
                    data: "{}".into(),
                    id: None
                },
                SseEvent {
                    event: "bench".into(),
                    data: frame.into(),
                    id: Some("c:7".into())
                },
            ]
        );
        assert_eq!(crate::frame::stamp(&events[1].data), Some(42));
    }

    #[test]
    fn sse_follows_the_spec_on_the_odd_cases() {
        // Several data lines join with \n; no space after the colon is fine;
        // a field without a colon has an empty value; no data = no event;
        // unknown fields and retry are skipped; the default name is message.
        let events = events_of("data:a\ndata: b\nretry: 10\nfoo: x\n\nevent: e\n\ndata\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "message".into(),
                    data: "a\nb".into(),
                    id: None
                },
                SseEvent {
                    event: "message".into(),
                    data: String::new(),
                    id: None
                },
            ]
        );
    }
}
