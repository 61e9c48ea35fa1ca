//! The WebSocket transport of a session: frames are WebSocket text
//! frames, probes are WebSocket pings echoed by the browser's pong, and the
//! close carries the Pusher code as the WebSocket close code (RFC 6455
//! §7.4.2 leaves 4000-4999 to applications).
//!
//! A message the client fragments (RFC 6455 §5.4: a first frame, then
//! continuation frames) is reassembled and read as one frame, its total
//! size held to `max_frame_bytes` like a single frame's.

use super::context::{self as ws, WsContext};
use crate::session::{Session, Transport};
use actix::ActorContext;
use actix::StreamHandler;
use actix_http::ws::Item;
use bytestring::ByteString;

/// A session carried by a WebSocket.
#[derive(Debug, Default)]
pub struct WebSocket {
    /// The largest message, in bytes, fragmented or not (`max_frame_bytes`).
    max_message: usize,
    /// The fragments of a message still arriving; `None` between messages
    /// (no allocation for clients that never fragment).
    fragments: Option<Fragments>,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragments {
    /// A text message (else binary, refused when complete).
    text: bool,
    data: Vec<u8>,
}

/// What a continuation frame completed.
#[derive(Debug, PartialEq, Eq)]
enum Reassembled {
    /// More fragments to come.
    Pending,
    /// A whole text message (its bytes, UTF-8 not checked yet).
    Text(Vec<u8>),
    /// A whole binary message.
    Binary,
    /// The message grew over `max_frame_bytes`.
    TooLarge,
}

impl WebSocket {
    /// `max_message`: `server.max_frame_bytes`, also the cap of a message
    /// sent in fragments.
    pub fn new(max_message: usize) -> Self {
        WebSocket {
            max_message,
            fragments: None,
        }
    }

    /// Adds a continuation frame (the codec has already refused frames out
    /// of order: a continuation without a first frame, or a new message
    /// inside one, is a protocol error there).
    fn reassemble(&mut self, item: Item) -> Reassembled {
        let (first, text, bytes, last) = match item {
            Item::FirstText(bytes) => (true, true, bytes, false),
            Item::FirstBinary(bytes) => (true, false, bytes, false),
            Item::Continue(bytes) => (false, false, bytes, false),
            Item::Last(bytes) => (false, false, bytes, true),
        };
        if first {
            self.fragments = Some(Fragments {
                text,
                data: Vec::new(),
            });
        }
        let Some(fragments) = self.fragments.as_mut() else {
            return Reassembled::Pending;
        };
        if fragments.data.len() + bytes.len() > self.max_message {
            self.fragments = None;
            return Reassembled::TooLarge;
        }
        fragments.data.extend_from_slice(&bytes);
        if !last {
            return Reassembled::Pending;
        }
        match self.fragments.take() {
            Some(Fragments { text: true, data }) => Reassembled::Text(data),
            _ => Reassembled::Binary,
        }
    }
}

impl Transport for WebSocket {
    type Context = WsContext<Session<Self>>;
    const NAME: &'static str = "ws";

    fn text(&mut self, ctx: &mut Self::Context, frame: ByteString) {
        ctx.text(frame);
    }

    fn probe(&mut self, ctx: &mut Self::Context, id: u64) {
        ctx.ping(&id.to_be_bytes());
    }

    fn transport_ping(&mut self, ctx: &mut Self::Context) -> bool {
        // Empty: no probe id, so its pong only proves the client alive.
        ctx.ping(b"");
        true
    }

    fn close(&mut self, ctx: &mut Self::Context, code: u16, reason: &str) {
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Other(code),
            description: Some(close_reason(reason).into()),
        }));
    }
}

/// Longest close reason, in bytes: a close frame is a control frame of at
/// most 125 bytes, two of them the code (RFC 6455 §5.5, §5.5.1). A longer
/// one makes clients drop the connection as broken (1006) instead of reading
/// the code; the whole message is in the `pusher:error` before it.
const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON`] bytes on a character boundary.
fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Frames from the client.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session<WebSocket> {
    fn handle(&mut self, message: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let message = match message {
            Ok(message) => message,
            Err(ws::ProtocolError::Overflow) => return self.frame_too_large(ctx),
            Err(ws::ProtocolError::Io(error)) if is_invalid_utf8(&error) => {
                return self.invalid_utf8(ctx);
            }
            Err(error) => {
                tracing::debug!(parent: self.span(), %error, "protocol error");
                ctx.close(Some(ws::CloseCode::Protocol.into()));
                return ctx.stop();
            }
        };
        self.saw_activity();
        match message {
            ws::Message::Text(text) => self.receive_text(ctx, &text),
            ws::Message::Ping(bytes) => ctx.pong(&bytes),
            ws::Message::Pong(payload) => {
                // Our probes are 8-byte ids; any other pong answers nothing.
                if let Ok(id) = <[u8; 8]>::try_from(&payload[..]) {
                    self.probe_answered(ctx, u64::from_be_bytes(id));
                }
            }
            ws::Message::Binary(_) => self.binary(ctx),
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(item) => match self.transport().reassemble(item) {
                Reassembled::Pending => {}
                Reassembled::Text(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => self.receive_text(ctx, &text),
                    Err(_) => self.invalid_utf8(ctx),
                },
                Reassembled::Binary => self.binary(ctx),
                Reassembled::TooLarge => self.frame_too_large(ctx),
            },
            ws::Message::Nop => {}
        }
    }
}

/// Whether a client-frame error is a text frame that is not UTF-8 (see
/// [`ws::not_utf8`]).
fn is_invalid_utf8(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData
        && error
            .get_ref()
            .is_some_and(|inner| inner.is::<std::str::Utf8Error>())
}

impl Session<WebSocket> {
    /// A binary message: Pusher frames are JSON text; the socket stays open.
    fn binary(&mut self, ctx: &mut <WebSocket as Transport>::Context) {
        self.error(ctx, None, "Binary frames are not supported; send JSON text");
    }

    /// A text message that is not UTF-8: close 1007, "invalid frame payload
    /// data" (RFC 6455 §7.4.1, §8.1).
    fn invalid_utf8(&mut self, ctx: &mut <WebSocket as Transport>::Context) {
        tracing::debug!(parent: self.span(), "text frame is not UTF-8");
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Invalid,
            description: Some("text frame is not UTF-8".into()),
        }));
        ctx.stop();
    }

    /// A frame over `max_frame_bytes`: `pusher:error`, then close 1009.
    fn frame_too_large(&mut self, ctx: &mut <WebSocket as Transport>::Context) {
        tracing::debug!(parent: self.span(), "frame over the size limit");
        self.error(ctx, None, "Frame is larger than the server accepts");
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Size,
            description: Some("frame too large".into()),
        }));
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reason_fits_a_control_frame_and_stays_utf8() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1);
        assert!(long.starts_with(cut));
    }

    fn item(kind: &str, data: &'static [u8]) -> Item {
        let bytes = actix_web::web::Bytes::from_static(data);
        match kind {
            "text" => Item::FirstText(bytes),
            "binary" => Item::FirstBinary(bytes),
            "more" => Item::Continue(bytes),
            _ => Item::Last(bytes),
        }
    }

    #[test]
    fn fragments_are_reassembled_into_one_message() {
        let mut socket = WebSocket::new(64);
        assert_eq!(
            socket.reassemble(item("text", b"{\"ev")),
            Reassembled::Pending
        );
        assert_eq!(
            socket.reassemble(item("more", b"ent\":")),
            Reassembled::Pending
        );
        assert_eq!(
            socket.reassemble(item("last", b"1}")),
            Reassembled::Text(b"{\"event\":1}".to_vec())
        );
        assert!(socket.fragments.is_none(), "nothing kept between messages");
        assert_eq!(
            socket.reassemble(item("binary", b"ab")),
            Reassembled::Pending
        );
        assert_eq!(socket.reassemble(item("last", b"")), Reassembled::Binary);
    }

    #[test]
    fn a_fragmented_message_is_held_to_the_frame_limit() {
        let mut socket = WebSocket::new(8);
        assert_eq!(
            socket.reassemble(item("text", b"12345")),
            Reassembled::Pending
        );
        assert_eq!(
            socket.reassemble(item("more", b"6789")),
            Reassembled::TooLarge
        );
        assert!(socket.fragments.is_none());
        // Exactly at the limit is accepted.
        assert_eq!(
            socket.reassemble(item("text", b"1234")),
            Reassembled::Pending
        );
        assert_eq!(
            socket.reassemble(item("last", b"5678")),
            Reassembled::Text(b"12345678".to_vec())
        );
    }

    #[test]
    fn a_text_frame_that_is_not_utf8_is_recognised() {
        let bytes = actix_web::web::Bytes::from_static(b"\xff");
        let utf8 = bytestring::ByteString::try_from(bytes).unwrap_err();
        let ws::ProtocolError::Io(error) = ws::not_utf8(utf8) else {
            panic!("not an I/O error");
        };
        assert!(is_invalid_utf8(&error));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!is_invalid_utf8(&reset));
        // A TLS failure is InvalidData too, but carries no Utf8Error.
        let tls = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad record mac");
        assert!(!is_invalid_utf8(&tls));
    }
}
