//! rusher's actor context for a WebSocket connection, in place of
//! actix-web-actors' `WebsocketContext`: still an actix actor (its
//! mailbox, timers, `wait` and spawned futures are actix's
//! [`ContextParts`] run by actix's [`ContextFut`]), but its frames go
//! straight between the actor and the socket.
//!
//! Why: `WebsocketContext` is reached through a response body (a boxed
//! stream of byte chunks) and reads the client through the request's
//! payload stream, so every wake of a session, for one outgoing frame,
//! went through five layers of streams and queues, each its own heap
//! object and cache miss; at 10,000 subscribers that plumbing was most of
//! rusher's own CPU per delivery (bench/results/performance.md). Here:
//!
//! - out: [`WsContext::text`] (and ping, pong, close) encodes the frame
//!   (RFC 6455 §5.2, unmasked) into the context's buffer at once; the
//!   socket ([`super::socket`]) takes that buffer whole after each run.
//! - in: the socket puts what it read into the context's input (after
//!   [`FrameSizes`] checked the frame headers, so an oversized frame is
//!   refused at its header); one item of the context reads frames from it
//!   and hands each to the actor's `StreamHandler`, as actix's stream items
//!   do (16 per run, none while the actor waits). The socket is read again
//!   only once every whole frame in the input was handed over: at most one
//!   frame of `max_frame_bytes` plus one read is buffered.
//!
//! The handler answers the upgrade with [`start`]; the 101 response
//! carries the running context to the upgrade service ([`Handover`]).

use super::frame_guard::FrameSizes;
use super::socket::{Input, Read, Served};
use super::upgrade::OnUpgradeService;
use actix::dev::{AsyncContextParts, ContextFut, ContextParts, Envelope, Mailbox, ToEnvelope};
use actix::{
    Actor, ActorContext, ActorFuture, ActorState, Addr, AsyncContext, Handler, SpawnHandle,
    StreamHandler,
};
use actix_codec::{Decoder, Encoder};
use actix_http::ws::{Codec, Frame};
use actix_web::web::{Bytes, BytesMut};
use actix_web::HttpMessage;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
pub use actix_web_actors::ws::{CloseCode, CloseReason, HandshakeError, Message, ProtocolError};
use bytestring::ByteString;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How a text frame that is not UTF-8 reaches the actor: an
/// `InvalidData` I/O error carrying the `Utf8Error` (actix's
/// `ProtocolError` has no variant of its own for it; the transport answers
/// it with close 1007, RFC 6455 §8.1).
pub fn not_utf8(error: std::str::Utf8Error) -> ProtocolError {
    ProtocolError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// Client frames handed to the actor in one run before it lets the
/// context's other work go (actix's own stream items do 16).
const FRAMES_PER_RUN: usize = 16;

/// Items an actix stream item hands to its actor in one run before it
/// wakes itself and yields (`actix::stream::ActorStream`).
const STREAM_BATCH: usize = 16;

/// The context of an actor serving one WebSocket.
pub struct WsContext<A>
where
    A: Actor<Context = WsContext<A>>,
{
    parts: ContextParts<A>,
    codec: Codec,
    /// Frames encoded and not yet taken by the socket.
    out: BytesMut,
    /// A close frame was written: nothing may follow it (RFC 6455 §5.5.1).
    closed: bool,
    /// Frames written in the current run.
    written: usize,
    input: Inbound,
}

/// What the client sent and the actor has not read yet.
struct Inbound {
    buf: BytesMut,
    sizes: FrameSizes,
    /// A frame header declared more than `max_frame_bytes`: the frames
    /// before it are read, then [`ProtocolError::Overflow`].
    oversize: bool,
    /// Reading the socket failed: reported after the frames before it.
    error: Option<std::io::Error>,
    /// Nothing more comes (the client's end, an error, an oversized frame).
    ended: bool,
    /// Every whole frame in `buf` was handed over: the socket may be read.
    starved: bool,
}

impl<A> WsContext<A>
where
    A: Actor<Context = Self>,
{
    fn write(&mut self, message: Message) {
        if self.closed {
            return;
        }
        self.closed = matches!(message, Message::Close(_));
        self.written += 1;
        if let Err(error) = self.codec.encode(message, &mut self.out) {
            tracing::debug!(%error, "cannot encode a frame");
        }
    }

    /// Sends a text frame.
    pub fn text(&mut self, text: impl Into<ByteString>) {
        self.write(Message::Text(text.into()));
    }

    /// Sends a ping frame carrying `payload` (at most 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) {
        self.write(Message::Ping(Bytes::copy_from_slice(payload)));
    }

    /// Sends a pong frame carrying `payload` (a ping's, RFC 6455 §5.5.3).
    pub fn pong(&mut self, payload: &[u8]) {
        self.write(Message::Pong(Bytes::copy_from_slice(payload)));
    }

    /// Sends the close frame; frames written after it are dropped. The
    /// connection closes once the actor stops.
    pub fn close(&mut self, reason: Option<CloseReason>) {
        self.write(Message::Close(reason));
    }

    /// The next client frame, if a whole one is there.
    fn next_frame(&mut self) -> Option<Result<Message, ProtocolError>> {
        let input = &mut self.input;
        let frame = match self.codec.decode(&mut input.buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // Nothing kept between frames for an idle connection.
                if input.buf.is_empty() && input.buf.capacity() > 0 {
                    input.buf = BytesMut::new();
                }
                if std::mem::take(&mut input.oversize) {
                    return Some(Err(ProtocolError::Overflow));
                }
                return input.error.take().map(|e| Err(ProtocolError::Io(e)));
            }
            Err(error) => {
                input.ended = true;
                return Some(Err(error));
            }
        };
        Some(Ok(match frame {
            Frame::Text(bytes) => match ByteString::try_from(bytes) {
                Ok(text) => Message::Text(text),
                Err(error) => return Some(Err(not_utf8(error))),
            },
            Frame::Binary(bytes) => Message::Binary(bytes),
            Frame::Ping(bytes) => Message::Ping(bytes),
            Frame::Pong(bytes) => Message::Pong(bytes),
            Frame::Close(reason) => Message::Close(reason),
            Frame::Continuation(item) => Message::Continuation(item),
        }))
    }
}

impl<A> ActorContext for WsContext<A>
where
    A: Actor<Context = Self>,
{
    fn stop(&mut self) {
        self.parts.stop();
    }

    fn terminate(&mut self) {
        self.parts.terminate();
    }

    fn state(&self) -> ActorState {
        self.parts.state()
    }
}

impl<A> AsyncContext<A> for WsContext<A>
where
    A: Actor<Context = Self>,
{
    fn spawn<F>(&mut self, fut: F) -> SpawnHandle
    where
        F: ActorFuture<A, Output = ()> + 'static,
    {
        self.parts.spawn(fut)
    }

    fn wait<F>(&mut self, fut: F)
    where
        F: ActorFuture<A, Output = ()> + 'static,
    {
        self.parts.wait(fut);
    }

    /// Also while stopping: no more client frames are handed over then
    /// (as `WebsocketContext`).
    fn waiting(&self) -> bool {
        self.parts.waiting()
            || matches!(
                self.parts.state(),
                ActorState::Stopping | ActorState::Stopped
            )
    }

    fn cancel_future(&mut self, handle: SpawnHandle) -> bool {
        self.parts.cancel_future(handle)
    }

    fn address(&self) -> Addr<A> {
        self.parts.address()
    }
}

impl<A> AsyncContextParts<A> for WsContext<A>
where
    A: Actor<Context = Self>,
{
    fn parts(&mut self) -> &mut ContextParts<A> {
        &mut self.parts
    }
}

impl<A, M> ToEnvelope<A, M> for WsContext<A>
where
    A: Actor<Context = WsContext<A>> + Handler<M>,
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    fn pack(msg: M, tx: Option<actix::dev::OneshotSender<M::Result>>) -> Envelope<A> {
        Envelope::new(msg, tx)
    }
}

/// The context's item that hands client frames to the actor (zero-sized:
/// boxing it allocates nothing).
struct ClientFrames;

impl<A> ActorFuture<A> for ClientFrames
where
    A: Actor<Context = WsContext<A>> + StreamHandler<Result<Message, ProtocolError>>,
{
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut WsContext<A>,
        task: &mut Context<'_>,
    ) -> Poll<()> {
        if ctx.input.starved {
            // Nothing came since the last run found no whole frame.
            return Poll::Pending;
        }
        for _ in 0..FRAMES_PER_RUN {
            let Some(frame) = ctx.next_frame() else {
                if ctx.input.ended {
                    // The client's end: as for any stream, the actor's
                    // `finished` (by default, stop).
                    act.finished(ctx);
                    return Poll::Ready(());
                }
                ctx.input.starved = true;
                return Poll::Pending;
            };
            act.handle(frame, ctx);
            if ctx.waiting() {
                return Poll::Pending;
            }
        }
        // More may be there: let the context's other work run first.
        task.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A running actor and its context, served by the upgraded socket.
struct Driver<A>
where
    A: Actor<Context = WsContext<A>>,
{
    fut: ContextFut<A, WsContext<A>>,
    /// The socket was told no input is wanted: wake it once it is.
    refused: bool,
    /// The context ran in this poll of the connection, wrote fewer frames
    /// than a stream hands over in one run (actix's stream items stop at
    /// [`STREAM_BATCH`] and wake themselves: more may wait then), and
    /// nothing was put in since: running it again would find what it found
    /// (what wakes it later wakes the connection too). Spares the mailbox,
    /// the queue and the timers two more looks per delivery.
    ran: bool,
}

impl<A> Input for Driver<A>
where
    A: Actor<Context = WsContext<A>>,
{
    fn wants_input(&mut self, _cx: &mut Context<'_>) -> bool {
        let input = &self.fut.ctx().input;
        let wants = input.starved && !input.ended;
        // Becoming starved happens in `poll_output`, which wakes then.
        self.refused = !wants && !input.ended;
        wants
    }

    fn input(&mut self, read: Read<'_>) {
        self.ran = false;
        let input = &mut self.fut.ctx().input;
        input.starved = false;
        match read {
            Read::Bytes(bytes) => match input.sizes.feed(bytes) {
                Ok(()) => input.buf.extend_from_slice(bytes),
                Err(oversize) => {
                    input.buf.extend_from_slice(&bytes[..oversize.at]);
                    input.oversize = true;
                    input.ended = true;
                }
            },
            Read::End => input.ended = true,
            Read::Failed(error) => {
                input.error = Some(error);
                input.ended = true;
            }
        }
    }
}

impl<A> Served for Driver<A>
where
    A: Actor<Context = WsContext<A>>,
{
    fn poll_begins(&mut self) {
        self.ran = false;
    }

    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ()>>> {
        if !self.ran && self.fut.alive() {
            self.fut.ctx().written = 0;
            let _ = Pin::new(&mut self.fut).poll(cx);
            self.ran = self.fut.ctx().written < STREAM_BATCH;
        }
        let ctx = self.fut.ctx();
        if self.refused && ctx.input.starved {
            self.refused = false;
            cx.waker().wake_by_ref();
        }
        if !ctx.out.is_empty() {
            // Taken whole: an idle connection keeps no output buffer.
            return Poll::Ready(Some(Ok(std::mem::take(&mut ctx.out).freeze())));
        }
        if self.fut.alive() {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

/// A running WebSocket actor, carried by the 101 response from the
/// handler to the upgrade service (in the response's extensions), which
/// serves it on the socket.
pub struct Handover(pub Box<dyn Served>);

/// Completes the 101 answer `handshake` began (see [`handshake`]) and
/// starts `actor` in a [`WsContext`] reading client frames of at most
/// `max_frame_bytes` payload bytes (a larger one is
/// [`ProtocolError::Overflow`], found at its header). The actor runs once
/// the upgrade service serves the response.
pub fn start<A>(
    actor: A,
    mut handshake: HttpResponseBuilder,
    max_frame_bytes: usize,
) -> HttpResponse
where
    A: Actor<Context = WsContext<A>> + StreamHandler<Result<Message, ProtocolError>>,
{
    let driver = running(actor, max_frame_bytes);
    // A streamed body, as actix-web-actors answered: the head gets no
    // length (the upgrade service writes the session's frames instead).
    let mut response =
        handshake.streaming(futures_util::stream::empty::<Result<Bytes, actix_web::Error>>());
    response.extensions_mut().insert(Handover(driver));
    response
}

/// Checks a WebSocket handshake (RFC 6455 §4.2.1) and gives the start of
/// its 101 answer. Errors (each a 400-class `HandshakeError` answer): not a
/// GET, no `Upgrade: websocket` or `Connection: upgrade`, a missing or bad
/// `Sec-WebSocket-Key` or version, and a request not run by the upgrade
/// service (`Upgrade` not exactly `websocket`, or a chunked body: actix-http
/// serves those as plain requests, where no WebSocket can follow).
pub fn handshake(req: &HttpRequest) -> Result<HttpResponseBuilder, HandshakeError> {
    let response = actix_web_actors::ws::handshake(req)?;
    if !req.extensions().contains::<OnUpgradeService>() {
        return Err(HandshakeError::NoWebsocketUpgrade);
    }
    Ok(response)
}

/// `actor` in a new context, ready to be served (it starts when first polled).
fn running<A>(actor: A, max_frame_bytes: usize) -> Box<dyn Served>
where
    A: Actor<Context = WsContext<A>> + StreamHandler<Result<Message, ProtocolError>>,
{
    let mailbox = Mailbox::default();
    let mut ctx = WsContext {
        parts: ContextParts::new(mailbox.sender_producer()),
        codec: Codec::new().max_size(max_frame_bytes),
        out: BytesMut::new(),
        closed: false,
        written: 0,
        input: Inbound {
            buf: BytesMut::new(),
            sizes: FrameSizes::new(max_frame_bytes),
            oversize: false,
            error: None,
            ended: false,
            starved: true,
        },
    };
    ctx.spawn(ClientFrames);
    Box::new(Driver {
        fut: ContextFut::new(ctx, actor, mailbox),
        refused: false,
        ran: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::socket::Upgraded;
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Echoes text, reports what else it got as text, closes on "close".
    struct Echo;

    impl Actor for Echo {
        type Context = WsContext<Self>;

        fn started(&mut self, ctx: &mut Self::Context) {
            ctx.text("hello");
        }
    }

    impl StreamHandler<Result<Message, ProtocolError>> for Echo {
        fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
            match item {
                Ok(Message::Text(text)) if text == "close" => {
                    ctx.close(Some(CloseCode::Normal.into()));
                    ctx.text("after the close");
                    ctx.stop();
                }
                Ok(Message::Text(text)) => ctx.text(text),
                Ok(Message::Ping(payload)) => ctx.pong(&payload),
                Ok(other) => ctx.text(format!("{other:?}")),
                Err(ProtocolError::Overflow) => {
                    ctx.text("overflow");
                    ctx.stop();
                }
                Err(error) => ctx.text(format!("error {error}")),
            }
        }
    }

    /// A masked client frame (RFC 6455 §5.3; a zero key keeps it readable).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(payload);
        frame
    }

    /// An unmasked server text frame.
    fn server_text(text: &str) -> Vec<u8> {
        let mut frame = vec![0x81, text.len() as u8];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    /// A connection serving `Echo` (frames of at most `max` bytes), its
    /// greeting already read.
    async fn echo(max: usize) -> (tokio::task::JoinHandle<()>, tokio::io::DuplexStream) {
        let (server, mut client) = tokio::io::duplex(4096);
        let task = actix_web::rt::spawn(Upgraded::new(server, Bytes::new(), running(Echo, max)));
        assert_eq!(read_exactly(&mut client, 7).await, server_text("hello"));
        (task, client)
    }

    async fn read_exactly(client: &mut tokio::io::DuplexStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut got))
            .await
            .expect("in time")
            .expect("read");
        got
    }

    #[actix_web::test]
    async fn frames_go_both_ways_in_any_chunking_and_nothing_follows_the_close() {
        let (task, mut client) = echo(1024).await;
        // Two frames in one write, then one split over three writes.
        let mut bytes = client_frame(1, b"one");
        bytes.extend(client_frame(9, b"p"));
        client.write_all(&bytes).await.unwrap();
        assert_eq!(read_exactly(&mut client, 5).await, server_text("one"));
        assert_eq!(read_exactly(&mut client, 3).await, [0x8a, 1, b'p']);
        let split = client_frame(1, b"split");
        for part in [&split[..1], &split[1..4], &split[4..]] {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(read_exactly(&mut client, 7).await, server_text("split"));
        client.write_all(&client_frame(1, b"close")).await.unwrap();
        // The close frame (code 1000), then the end: nothing after it.
        assert_eq!(read_exactly(&mut client, 4).await, [0x88, 2, 0x03, 0xe8]);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?} after the close");
        task.await.unwrap();
    }

    #[actix_web::test]
    async fn an_oversized_frame_is_refused_at_its_header() {
        let (task, mut client) = echo(100).await;
        // A whole frame first, then only the header of a 1000-byte one.
        let mut bytes = client_frame(1, b"ok");
        bytes.extend(&client_frame(1, &[b'x'; 1000])[..8]);
        client.write_all(&bytes).await.unwrap();
        assert_eq!(read_exactly(&mut client, 4).await, server_text("ok"));
        assert_eq!(read_exactly(&mut client, 10).await, server_text("overflow"));
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        task.await.unwrap();
    }

    #[actix_web::test]
    async fn the_clients_end_stops_the_actor() {
        let (task, mut client) = echo(100).await;
        client.write_all(&client_frame(1, b"last")).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(read_exactly(&mut client, 6).await, server_text("last"));
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the connection ends with the client's side")
            .unwrap();
    }
}
