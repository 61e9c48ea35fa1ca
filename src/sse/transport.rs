//! Server-Sent Events as a session [`Transport`]: each Pusher frame is one
//! SSE event (`event:` the Pusher event name, `data:` the whole frame), an
//! `id:` on channels with history (see [`event_id`](super::event_id)), a
//! `: heartbeat` comment every `transports.heartbeat`. The stream is
//! receive-only: the client cannot answer pings, so its liveness is the
//! response itself (a client that went away ends the session at once; one
//! that reads too slowly fills the bounded body and is closed with 4100).

use super::event_id;
use crate::http::sessions::SessionSlot;
use crate::http::streamed::{BodyWriter, WriteError};
use crate::protocol::error::ErrorCode;
use crate::protocol::frames::SubscribeRequest;
use crate::session::{CloseRequest, Session, Transport};
use actix::{ActorContext, ActorFutureExt, AsyncContext, Handler};
use actix_web::web::Bytes;
use bytestring::ByteString;
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;

/// The comment written every `transports.heartbeat` so proxies keep an
/// idle stream open (EventSource ignores comments).
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// A session carried by one `text/event-stream` response.
#[derive(Debug)]
pub struct Sse {
    body: BodyWriter,
    heartbeat: Duration,
    /// Each history channel's latest serial the client has (or has queued
    /// before its live events), in subscribe order: the event id.
    positions: Vec<(String, u64)>,
    /// A close was asked (slow client): further writes are dropped.
    closing: bool,
    /// This session's place under `transports.max_sessions`, freed with it.
    _slot: SessionSlot,
}

impl Sse {
    /// The transport of a stream writing to `body`, with a heartbeat every
    /// `heartbeat`, holding `slot` for as long as it lives.
    pub fn new(body: BodyWriter, heartbeat: Duration, slot: SessionSlot) -> Self {
        Sse {
            body,
            heartbeat,
            positions: Vec::new(),
            closing: false,
            _slot: slot,
        }
    }

    /// Writes one chunk; a full body is a slow client (4100), a closed one
    /// a client that went away.
    fn write(&mut self, ctx: &mut <Self as Transport>::Context, chunk: Bytes) {
        if self.closing {
            return;
        }
        match self.body.write(chunk) {
            Ok(()) => {}
            Err(WriteError::Full) => {
                self.closing = true;
                ctx.notify(CloseRequest::new(ErrorCode::OverCapacity.code()));
            }
            Err(WriteError::Closed) => ctx.stop(),
        }
    }

    /// The SSE event for one encoded Pusher frame, updating the positions
    /// when it carries a serial.
    fn event(&mut self, frame: &str) -> Bytes {
        let head: Option<Head<'_>> = serde_json::from_str(frame).ok();
        let mut event = String::with_capacity(frame.len() + 64);
        if let Some(head) = &head {
            // A name with a line break cannot be an SSE field: it is left
            // out (the event is then a `message`), the frame still says it.
            if !head.event.contains(['\r', '\n']) {
                event.push_str("event: ");
                event.push_str(&head.event);
                event.push('\n');
            }
            if let Some(channel) = head.channel.as_deref() {
                if let Some(serial) = head.serial {
                    self.advance(channel, serial);
                }
                if self.positions.iter().any(|(tracked, _)| tracked == channel) {
                    event.push_str("id: ");
                    event.push_str(&event_id::format(&self.positions));
                    event.push('\n');
                }
            }
        }
        event.push_str("data: ");
        // JSON strings hold no raw line break; whitespace between tokens
        // (a client event's data as sent) may: a space means the same.
        if frame.contains(['\r', '\n']) {
            event.push_str(&frame.replace(['\r', '\n'], " "));
        } else {
            event.push_str(frame);
        }
        event.push_str("\n\n");
        Bytes::from(event)
    }

    /// The client has `channel` up to `serial`.
    fn advance(&mut self, channel: &str, serial: u64) {
        match self
            .positions
            .iter_mut()
            .find(|(tracked, _)| tracked == channel)
        {
            Some((_, position)) => *position = (*position).max(serial),
            None => self.positions.push((channel.to_owned(), serial)),
        }
    }
}

/// The fields of a frame an SSE event needs; the rest (data) is skipped.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    serial: Option<u64>,
}

impl Transport for Sse {
    type Context = actix::Context<Session<Self>>;
    const NAME: &'static str = "sse";
    const CLIENT_ANSWERS_PINGS: bool = false;

    fn text(&mut self, ctx: &mut Self::Context, frame: ByteString) {
        let event = self.event(&frame);
        self.write(ctx, event);
    }

    /// An SSE client cannot prove what it read: the probe stays
    /// unanswered, so a signed-in user's recovery position is not
    /// confirmed past where it joined (a later recovery may repeat
    /// events, never skip them). The stream resumes with `Last-Event-ID`.
    fn probe(&mut self, _ctx: &mut Self::Context, _id: u64) {}

    /// The session wrote the `pusher:error` and stops: the response ends
    /// when the actor, holding the body's writer, is gone.
    fn close(&mut self, _ctx: &mut Self::Context, _code: u16, _reason: &str) {
        self.closing = true;
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.heartbeat, |session, ctx| {
            session
                .transport()
                .write(ctx, Bytes::from_static(HEARTBEAT));
        });
        // The client closed the response: stop now, not at the next write,
        // so presence and webhooks see it leave at once.
        let gone = actix::fut::wrap_future::<_, Session<Self>>(self.body.closed());
        ctx.spawn(gone.map(|(), session, ctx| {
            tracing::debug!(parent: session.span(), "SSE client went away");
            ctx.stop();
        }));
    }

    fn subscribed(&mut self, _ctx: &mut Self::Context, channel: &str, position: Option<u64>) {
        if let Some(position) = position {
            self.advance(channel, position);
        }
    }
}

/// What the stream joins for its client, in order, once the session has
/// started: the sign-in of the token's user, then each channel. One message
/// per step, so each waits for the previous one to finish (the session
/// holds its mailbox while a subscribe is answered).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub enum Join {
    /// `pusher:signin` with a signature the server made for the token's user.
    SignIn {
        /// `<app key>:<signature of socket_id::user::user_data>`.
        auth: String,
        /// The token's `user_data`.
        user_data: String,
    },
    /// `pusher:subscribe`, signed by the server for a token that allowed it.
    Subscribe(SubscribeRequest),
}

impl Handler<Join> for Session<Sse> {
    type Result = ();

    fn handle(&mut self, join: Join, ctx: &mut Self::Context) {
        match join {
            Join::SignIn { auth, user_data } => self.sign_in(ctx, &auth, &user_data),
            Join::Subscribe(request) => self.subscribe(ctx, request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::sessions::HttpSessions;
    use crate::http::streamed;

    fn sse() -> Sse {
        let (body, _stream) = streamed::body(4);
        let slot = HttpSessions::new(1).open().expect("a free slot");
        Sse::new(body, Duration::from_secs(1), slot)
    }

    fn text(event: &Bytes) -> &str {
        std::str::from_utf8(event).expect("utf-8")
    }

    #[test]
    fn a_frame_is_one_event_named_after_it_with_the_whole_frame_as_data() {
        let mut sse = sse();
        let frame = r#"{"event":"my-event","channel":"news","data":"{\"a\":1}"}"#;
        assert_eq!(
            text(&sse.event(frame)),
            format!("event: my-event\ndata: {frame}\n\n")
        );
    }

    #[test]
    fn history_channels_get_one_id_naming_every_position() {
        let mut sse = sse();
        sse.subscribed_position("a", 3);
        let succeeded =
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"a","data":"{}"}"#;
        assert!(text(&sse.event(succeeded)).contains("\nid: a=3\n"));
        sse.subscribed_position("b,c", 0);
        let first = r#"{"event":"e","channel":"a","data":"x","serial":4}"#;
        assert!(text(&sse.event(first)).contains("\nid: a=4,b%2Cc=0\n"));
        let second = r#"{"event":"e","channel":"b,c","data":"x","serial":1}"#;
        assert!(text(&sse.event(second)).contains("\nid: a=4,b%2Cc=1\n"));
        // A channel without history: no id.
        let plain = r#"{"event":"e","channel":"other","data":"x"}"#;
        assert!(!text(&sse.event(plain)).contains("id:"));
    }

    #[test]
    fn line_breaks_never_split_an_event() {
        let mut sse = sse();
        let frame = "{\"event\":\"client-x\",\"channel\":\"private-a\",\"data\":{\"b\":\r\n1}}";
        let event = sse.event(frame);
        assert_eq!(text(&event).matches('\n').count(), 3, "{}", text(&event));
        let named = r#"{"event":"bad\nname","channel":"a","data":"x"}"#;
        assert!(text(&sse.event(named)).starts_with("data: "));
    }

    impl Sse {
        fn subscribed_position(&mut self, channel: &str, position: u64) {
            self.advance(channel, position);
        }
    }
}
