//! pusher-js's HTTP transports as a session [`Transport`]: frames wait in
//! a bounded buffer until a receive request takes them — a long streaming
//! response (`xhr_streaming`) writes each as it comes, a long poll (`xhr_polling`)
//! answers with at most `max_batch_size` of them and ends. The client's
//! frames arrive on separate `xhr_send` requests ([`ClientFrames`]).
//!
//! Liveness: every request proves the client alive; a streaming response
//! carries a heartbeat (`h`) every `transports.heartbeat`, which pusher-js
//! answers with an empty send; a session no request has reached for
//! `activity_timeout` is closed like a dead socket (4201), and so is one
//! that stops answering (the session's own keep-alive). A client that
//! drops its request (pusher-js closing its socket) ends the session
//! within [`ABORT_GRACE`], unless it comes back.

use super::framing;
use super::registry::Registry;
use crate::http::sessions::SessionSlot;
use crate::http::streamed::{BodyWriter, WriteError};
use crate::protocol::error::ErrorCode;
use crate::session::{CloseRequest, Session, Transport, TransportSettings};
use actix::{ActorContext, ActorFutureExt, AsyncContext, Handler, SpawnHandle, WrapFuture};
use bytestring::ByteString;
use prometheus::IntCounter;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a session whose client dropped its request waits for
/// another before it ends like a closed socket.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// How much a streaming response carries before pusher-js drops it and
/// opens another: `MAX_BUFFER_LENGTH` of `src/core/http/http_request.ts`,
/// in UTF-16 code units of the response text. It aborts the request once
/// it has read a text longer than this that ends on a line end; whatever
/// the server wrote after that point would be lost with the request.
const STREAM_TEXT_LIMIT: usize = 256 * 1024;

/// Which pusher-js HTTP transport a session uses; fixed by its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `xhr_streaming`: one response carries frames as they come.
    Streaming,
    /// `xhr_polling`: each response carries what is waiting, then ends.
    Polling,
}

impl Kind {
    /// The transport's name, as pusher-js calls it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Streaming => "xhr_streaming",
            Kind::Polling => "xhr_polling",
        }
    }
}

/// What waits for a receive request.
#[derive(Debug)]
enum Item {
    Frame(ByteString),
    /// A recovery probe (see [`Transport::probe`]): answered once the
    /// response that carried everything before it has been received.
    Probe(u64),
}

/// The receive request attached now.
#[derive(Debug)]
struct Receive {
    writer: BodyWriter,
    /// Counts attachments, so a watcher of an older request is ignored.
    generation: u64,
    /// A poll's timer, ending it with a heartbeat when nothing came.
    poll_timer: Option<SpawnHandle>,
    /// The watcher that notices the client went away.
    watcher: SpawnHandle,
    /// UTF-16 code units written to this response (how pusher-js measures
    /// its text). Past [`STREAM_TEXT_LIMIT`] a stream takes no more: the
    /// client drops it after reading what it holds and opens the next,
    /// which gets what waited meanwhile.
    written: usize,
}

/// The outgoing side of one HTTP session.
pub struct Xhr {
    kind: Kind,
    /// The registry id (`{key}/{server}/{session}`).
    id: String,
    registry: Arc<Registry>,
    settings: TransportSettings,
    activity_timeout: Duration,
    /// Most frames buffered while no request takes them.
    max_buffer: usize,
    buffer: VecDeque<Item>,
    receive: Option<Receive>,
    generation: u64,
    /// `o` was written (only ever once per session).
    opened: bool,
    /// Since when no receive request is attached.
    detached_since: Instant,
    /// A flush is scheduled at the end of this turn.
    flush_scheduled: bool,
    /// The liveness timer runs.
    ticking: bool,
    /// Polling: a probe carried by a finished response, answered by the next poll.
    probe_sent: Option<u64>,
    /// The close line written, kept for the client's next request.
    close_line: Option<String>,
    /// A close was requested by the transport itself (slow client).
    closing: bool,
    /// `rusher_slow_client_disconnects_total`.
    slow_clients: IntCounter,
    _permit: SessionSlot,
}

impl Xhr {
    /// The transport of a new session `id` of `kind`, holding its place
    /// under the session cap. `max_buffer` is the connection queue size;
    /// `slow_clients` counts sessions closed with 4100.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: Kind,
        id: String,
        registry: Arc<Registry>,
        settings: TransportSettings,
        activity_timeout: Duration,
        max_buffer: usize,
        permit: SessionSlot,
        slow_clients: IntCounter,
    ) -> Self {
        Xhr {
            kind,
            id,
            registry,
            settings,
            activity_timeout,
            max_buffer,
            buffer: VecDeque::new(),
            receive: None,
            generation: 0,
            opened: false,
            detached_since: Instant::now(),
            flush_scheduled: false,
            ticking: false,
            probe_sent: None,
            close_line: None,
            closing: false,
            slow_clients,
            _permit: permit,
        }
    }

    /// The session's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Writes `line` to the attached request; a full or closed response
    /// detaches it (a full one also closes the session: a slow client).
    fn write(&mut self, ctx: &mut <Self as Transport>::Context, line: String) -> bool {
        let Some(receive) = &mut self.receive else {
            return false;
        };
        if self.kind == Kind::Streaming && receive.written > STREAM_TEXT_LIMIT {
            // Spent: what comes now waits for the client's next stream.
            return false;
        }
        let units = text_units(&line);
        match receive.writer.write(line) {
            Ok(()) => {
                receive.written = receive.written.saturating_add(units);
                true
            }
            Err(WriteError::Full) => {
                self.detach(ctx);
                self.slow_client(ctx);
                false
            }
            Err(WriteError::Closed) => {
                self.detach(ctx);
                false
            }
        }
    }

    /// The client cannot keep up: the session closes with 4100, once.
    fn slow_client(&mut self, ctx: &mut <Self as Transport>::Context) {
        if !self.closing {
            self.closing = true;
            self.slow_clients.inc();
            ctx.notify(CloseRequest(ErrorCode::OverCapacity.code()));
        }
    }

    /// Ends the attached request (its response completes) and forgets it.
    fn detach(&mut self, ctx: &mut <Self as Transport>::Context) {
        if let Some(receive) = self.receive.take() {
            if let Some(timer) = receive.poll_timer {
                ctx.cancel_future(timer);
            }
            ctx.cancel_future(receive.watcher);
            self.detached_since = Instant::now();
        }
    }

    /// Writes what waits, as the kind allows: everything on a stream; at
    /// most `max_batch_size` frames on a poll, which then ends.
    fn flush(&mut self, ctx: &mut <Self as Transport>::Context) {
        self.flush_scheduled = false;
        if self.receive.is_none() || self.buffer.is_empty() {
            return;
        }
        let most = self.settings.max_batch_size;
        let mut frames = Vec::new();
        let mut probe = None;
        while frames.len() < most {
            match self.buffer.pop_front() {
                Some(Item::Frame(frame)) => frames.push(frame),
                Some(Item::Probe(id)) => probe = Some(id),
                None => break,
            }
        }
        if !frames.is_empty() && self.write(ctx, framing::array(&frames)) {
            if self.kind == Kind::Polling {
                self.probe_sent = probe.or(self.probe_sent);
                self.detach(ctx);
            } else if !self.buffer.is_empty() {
                self.schedule_flush(ctx);
            }
            return;
        }
        // Not written (only probes waited, or the client went away): they
        // wait for the next request, in order.
        if let (Some(id), Kind::Polling) = (probe, self.kind) {
            self.buffer.push_front(Item::Probe(id));
        }
        for frame in frames.into_iter().rev() {
            self.buffer.push_front(Item::Frame(frame));
        }
    }

    fn schedule_flush(&mut self, ctx: &mut <Self as Transport>::Context) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // At the end of this turn: frames queued together leave together.
            ctx.run_later(Duration::ZERO, |session, ctx| {
                session.transport().flush(ctx)
            });
        }
    }
}

impl Transport for Xhr {
    type Context = actix::Context<Session<Self>>;
    const NAME: &'static str = "xhr";

    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn text(&mut self, ctx: &mut Self::Context, frame: ByteString) {
        if self.kind == Kind::Streaming && self.receive.is_some() && self.buffer.is_empty() {
            let line = framing::array([&frame]);
            if self.write(ctx, line) {
                return;
            }
            if self.closing {
                return;
            }
        }
        if self.buffer.len() >= self.max_buffer {
            return self.slow_client(ctx);
        }
        self.buffer.push_back(Item::Frame(frame));
        if self.receive.is_some() {
            self.schedule_flush(ctx);
        }
    }

    fn probe(&mut self, _ctx: &mut Self::Context, id: u64) {
        // A streaming client acknowledges nothing that could be told apart
        // from its heartbeats; its positions stay unconfirmed (a recovery
        // then replays from the last confirmed one: duplicates, no gaps).
        if self.kind == Kind::Polling {
            self.buffer.push_back(Item::Probe(id));
        }
    }

    fn close(&mut self, ctx: &mut Self::Context, code: u16, reason: &str) {
        let line = framing::close(code, reason);
        // What waits (the `pusher:error` at least) and the close, in one
        // write: a poll answers once.
        let frames: Vec<ByteString> = self
            .buffer
            .drain(..)
            .filter_map(|item| match item {
                Item::Frame(frame) => Some(frame),
                Item::Probe(_) => None,
            })
            .collect();
        let mut last = String::new();
        if !frames.is_empty() {
            last.push_str(&framing::array(&frames));
        }
        last.push_str(&line);
        self.write(ctx, last);
        self.close_line = Some(line);
        self.detach(ctx);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.detach(ctx);
        let line = self
            .close_line
            .take()
            .unwrap_or_else(|| framing::close(1006, "Session closed"));
        let session = ctx.address();
        self.registry
            .closed(&self.id, &session, line, self.settings.max_sessions);
    }
}

/// A receive request (`xhr_streaming` or `xhr`) for the session: its
/// response body is `writer`. Answers false when the session is of the
/// other kind.
#[derive(actix::Message)]
#[rtype(result = "bool")]
pub struct Attach {
    /// The response body to write to.
    pub writer: BodyWriter,
    /// The path the request came on.
    pub kind: Kind,
}

impl Handler<Attach> for Session<Xhr> {
    type Result = bool;

    fn handle(&mut self, attach: Attach, ctx: &mut Self::Context) -> bool {
        if attach.kind != self.transport().kind {
            return false;
        }
        self.saw_activity();
        // A poll comes only after the previous response was read whole.
        if let Some(id) = self.transport().probe_sent.take() {
            self.probe_answered(ctx, id);
        }
        let transport = self.transport();
        // The newest request wins (pusher-js reopens a stream that grew long).
        transport.detach(ctx);
        transport.generation += 1;
        let generation = transport.generation;
        // Fires only when the client dropped the request (an answered one
        // cancels its watcher): pusher-js does that when its socket closes,
        // and reopens at once only a stream that grew long. Gone for
        // ABORT_GRACE: the client is gone, like a closed WebSocket.
        let watcher = ctx.spawn(attach.writer.closed().into_actor(self).map(
            move |(), session, ctx| {
                let transport = session.transport();
                if transport.receive.as_ref().map(|r| r.generation) != Some(generation) {
                    return;
                }
                transport.detach(ctx);
                let grace = ABORT_GRACE.min(transport.activity_timeout);
                ctx.run_later(grace, move |session, ctx| {
                    let transport = session.transport();
                    if transport.receive.is_none() && transport.generation == generation {
                        tracing::debug!(parent: session.span(), "the client dropped its request and did not come back");
                        ctx.stop();
                    }
                });
            },
        ));
        let transport = self.transport();
        transport.receive = Some(Receive {
            writer: attach.writer,
            generation,
            poll_timer: None,
            watcher,
            written: 0,
        });
        if !transport.opened {
            transport.opened = true;
            transport.write(ctx, framing::OPEN.to_owned());
        }
        if !transport.ticking {
            transport.ticking = true;
            let every = transport.settings.heartbeat;
            ctx.run_interval(every, tick);
        }
        transport.flush(ctx);
        let transport = self.transport();
        if transport.kind == Kind::Polling && transport.receive.is_some() {
            let wait = transport.settings.long_poll_timeout;
            let timer = ctx.run_later(wait, move |session, ctx| {
                let transport = session.transport();
                if transport.receive.as_ref().map(|r| r.generation) == Some(generation) {
                    transport.write(ctx, framing::HEARTBEAT.to_owned());
                    transport.detach(ctx);
                }
            });
            if let Some(receive) = transport.receive.as_mut() {
                receive.poll_timer = Some(timer);
            }
        }
        true
    }
}

/// The length of `line` as JavaScript counts it (UTF-16 code units), which
/// is what pusher-js compares with its limit.
fn text_units(line: &str) -> usize {
    if line.is_ascii() {
        line.len()
    } else {
        line.chars().map(char::len_utf16).sum()
    }
}

/// The liveness timer: heartbeats on a stream; a session no request has
/// reached for `activity_timeout` is closed as dead.
fn tick(session: &mut Session<Xhr>, ctx: &mut actix::Context<Session<Xhr>>) {
    let transport = session.transport();
    if transport.receive.is_some() {
        if transport.kind == Kind::Streaming {
            transport.write(ctx, framing::HEARTBEAT.to_owned());
        }
        return;
    }
    if transport.detached_since.elapsed() >= transport.activity_timeout {
        tracing::debug!(parent: session.span(), "no request for the activity timeout: closing");
        session.close(ctx, ErrorCode::PongNotReceived.code());
    }
}

/// A receive request relayed from another node could not be written there
/// as fast as the session wrote it (its response filled up): the client is
/// slow, and the session closes with 4100 as for a full local response.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct SlowRemote;

impl Handler<SlowRemote> for Session<Xhr> {
    type Result = ();

    fn handle(&mut self, _: SlowRemote, ctx: &mut Self::Context) {
        let transport = self.transport();
        transport.detach(ctx);
        transport.slow_client(ctx);
    }
}

/// Frames the client sent on `xhr_send`, in order (none: a heartbeat).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct ClientFrames(pub Vec<String>);

impl Handler<ClientFrames> for Session<Xhr> {
    type Result = ();

    fn handle(&mut self, ClientFrames(frames): ClientFrames, ctx: &mut Self::Context) {
        self.saw_activity();
        for frame in frames {
            self.receive_text(ctx, &frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_as_javascript_measures_it() {
        assert_eq!(text_units("a[\"x\"]\n"), 7);
        // é is one UTF-16 unit (two UTF-8 bytes); 😀 two (four bytes).
        assert_eq!(text_units("é😀"), 3);
    }
}
