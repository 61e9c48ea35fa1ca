//! The WebSocket transport of a session: frames are WebSocket text
//! frames, probes are WebSocket pings echoed by the browser's pong, and the
//! close carries the Pusher code as the WebSocket close code (RFC 6455
//! §7.4.2 leaves 4000-4999 to applications).

use crate::session::{Session, Transport};
use actix::ActorContext;
use actix::StreamHandler;
use actix_web_actors::ws;
use bytestring::ByteString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A session carried by a WebSocket.
#[derive(Debug, Default, Clone)]
pub struct WebSocket {
    /// Set by [`super::frame_guard`] when the client declared a frame over
    /// `max_frame_bytes`: the stream error that follows is that, not a
    /// broken connection.
    oversize: Arc<AtomicBool>,
}

impl WebSocket {
    pub fn new(oversize: Arc<AtomicBool>) -> Self {
        WebSocket { oversize }
    }
}

impl Transport for WebSocket {
    type Context = ws::WebsocketContext<Session<Self>>;
    const NAME: &'static str = "ws";

    fn text(&mut self, ctx: &mut Self::Context, frame: ByteString) {
        ctx.text(frame);
    }

    fn probe(&mut self, ctx: &mut Self::Context, id: u64) {
        ctx.ping(&id.to_be_bytes());
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
            Err(ws::ProtocolError::Io(_)) if self.transport().oversize.load(Ordering::Relaxed) => {
                return self.frame_too_large(ctx);
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
            ws::Message::Binary(_) => {
                self.error(ctx, None, "Binary frames are not supported; send JSON text")
            }
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(_) | ws::Message::Nop => {}
        }
    }
}

impl Session<WebSocket> {
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
}
