//! An upgraded connection's socket, owned by rusher, serving a [`Served`]:
//! a WebSocket session ([`super::context`]: the client's bytes go to its
//! input, its encoded frames to the socket as they came), or an answer
//! other than 101, written once ([`Body`]: the client's bytes go to the
//! request's payload through [`super::inbound`]).
//!
//! actix-http's HTTP/1 dispatcher would keep serving an upgraded connection
//! with an 8 KiB read and an 8 KiB write buffer for its whole life (most of
//! an idle WebSocket's memory) and copy every outgoing frame into the
//! latter. Here a read lands in the worker thread's scratch buffer and only
//! the bytes read are kept; outgoing chunks (each holds every frame the
//! session encoded in one run) are written straight from the session's own
//! buffers: one chunk with a plain write, several in one vectored write.
//!
//! Bounds, as the dispatcher's: the session is asked for more only while
//! less than [`MAX_OUT_BYTES`] wait to be written, and the socket is read
//! only when what it serves wants more ([`Input::wants_input`]). When the
//! session's output ends, the socket's write side is shut (FIN) and, unless
//! the client has closed its side already, the connection is kept for up
//! to [`LINGER`] reading and discarding, so that the client reads the close
//! frame before the socket goes: closing a socket with unread input sends
//! a reset, and a reset makes the client's kernel discard what it had not
//! read yet (RFC 1122 §4.2.2.13), the close code included.

use super::inbound;
use actix_http::body::{BoxBody, MessageBody};
use actix_web::web::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest single read, in bytes (what the dispatcher read at most).
pub const READ_CHUNK: usize = 8 * 1024;

/// Outgoing bytes held before the session is polled again (actix-http's
/// default `h1_write_buffer_size`).
pub const MAX_OUT_BYTES: usize = 32 * 1024;

/// Outgoing chunks written in one vectored write.
const MAX_OUT_CHUNKS: usize = 32;

/// Outgoing slots kept once written (more are freed when drained).
const KEPT_OUT_SLOTS: usize = 4;

/// How long a closed connection waits for the client to close its side.
pub const LINGER: Duration = Duration::from_secs(1);

/// Read/write rounds in one poll before yielding to the worker's other tasks.
const ROUNDS_PER_POLL: usize = 32;

thread_local! {
    /// One read buffer per worker thread, shared by its connections: a
    /// read's bytes are copied out at once, so none keeps a buffer idle.
    static SCRATCH: RefCell<Box<[u8; READ_CHUNK]>> = RefCell::new(Box::new([0; READ_CHUNK]));
}

/// Reads what is there into the worker's scratch buffer and gives `take`
/// the bytes read (empty at end of stream).
fn poll_read_scratch<T: AsyncRead + Unpin, R>(
    io: &mut T,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]) -> R,
) -> Poll<io::Result<R>> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut buf = ReadBuf::new(&mut scratch[..]);
        Pin::new(io)
            .poll_read(cx, &mut buf)
            .map_ok(|()| take(buf.filled()))
    })
}

/// What a read of the client's side gave.
#[derive(Debug)]
pub enum Read<'a> {
    /// Bytes the client sent (never empty).
    Bytes(&'a [u8]),
    /// The client closed its side.
    End,
    /// Reading failed; nothing more comes.
    Failed(io::Error),
}

/// Where an upgraded connection's client bytes go.
pub trait Input {
    /// Whether a read is wanted now. When not, `cx` is woken once one is
    /// (never, if nothing more is wanted).
    fn wants_input(&mut self, cx: &mut Context<'_>) -> bool;

    /// One read's outcome (only after [`Input::wants_input`] said yes).
    fn input(&mut self, read: Read<'_>);
}

/// What an upgraded connection serves: a WebSocket session
/// ([`super::context`]) or an answer written once ([`Body`]).
pub trait Served: Input {
    /// A poll of the connection begins (something woke it).
    fn poll_begins(&mut self) {}

    /// Runs until it waits; gives the next output chunk, `None` once the
    /// output ended (the connection then closes), `Err` when it failed (the
    /// connection ends at once).
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ()>>>;
}

/// The request's payload stream as an [`Input`]: each read goes to it as
/// one chunk, once it took the last.
pub struct Payload(Option<inbound::Sender>);

impl Payload {
    /// Feeds `sender` (`None`: nowhere, the client's side ended).
    pub fn new(sender: Option<inbound::Sender>) -> Self {
        Payload(sender)
    }

    /// What was put and not read, and whether the client's side is still
    /// open: for what serves the connection after the request.
    pub fn into_unread(self) -> (Option<Bytes>, bool) {
        match self.0 {
            Some(sender) => (sender.take_unread(), true),
            None => (None, false),
        }
    }
}

impl Input for Payload {
    fn wants_input(&mut self, cx: &mut Context<'_>) -> bool {
        // Once the reader is gone nothing more is read; the sender stays,
        // so what it holds and whether the client ended are still known.
        self.0
            .as_ref()
            .is_some_and(|sender| !sender.reader_gone() && sender.wants(cx))
    }

    fn input(&mut self, read: Read<'_>) {
        let Some(sender) = &self.0 else {
            return;
        };
        match read {
            Read::Bytes(bytes) => return sender.put(Bytes::copy_from_slice(bytes)),
            Read::End => sender.end(),
            Read::Failed(error) => sender.fail(error),
        }
        self.0 = None;
    }
}

/// An answer's body, written as it comes, with the client's bytes going
/// to the request's payload meanwhile.
pub struct Body {
    body: BoxBody,
    payload: Payload,
}

impl Body {
    /// Writes `body`, reading the client into `payload`.
    pub fn new(body: BoxBody, payload: Payload) -> Self {
        Body { body, payload }
    }
}

impl Input for Body {
    fn wants_input(&mut self, cx: &mut Context<'_>) -> bool {
        self.payload.wants_input(cx)
    }

    fn input(&mut self, read: Read<'_>) {
        self.payload.input(read);
    }
}

impl Served for Body {
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ()>>> {
        Pin::new(&mut self.body).poll_next(cx).map(|chunk| {
            chunk.map(|chunk| chunk.map_err(|error| tracing::debug!(%error, "answer body failed")))
        })
    }
}

/// What one [`feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// No read was wanted, or none was ready.
    Nothing,
    /// Client bytes went to the input.
    Bytes,
    /// The client's side ended (closed, or reading failed): nothing more
    /// will be read.
    Ended,
}

/// Reads once into `input` if it wants a read.
pub fn feed<T: AsyncRead + Unpin>(
    io: &mut T,
    input: &mut (impl Input + ?Sized),
    cx: &mut Context<'_>,
) -> Fed {
    if !input.wants_input(cx) {
        return Fed::Nothing;
    }
    let read = poll_read_scratch(io, cx, |read| {
        if read.is_empty() {
            input.input(Read::End);
            Fed::Ended
        } else {
            input.input(Read::Bytes(read));
            Fed::Bytes
        }
    });
    match read {
        Poll::Ready(Ok(fed)) => fed,
        Poll::Ready(Err(error)) => {
            input.input(Read::Failed(error));
            Fed::Ended
        }
        Poll::Pending => Fed::Nothing,
    }
}

/// Discards the client's input (never copied out of the scratch buffer)
/// until it closes; ready when it has, or reading failed.
fn drain<T: AsyncRead + Unpin>(io: &mut T, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        match poll_read_scratch(io, cx, |read| read.is_empty()) {
            Poll::Ready(Ok(false)) => continue,
            Poll::Ready(_) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Where the connection is in its life.
enum Phase {
    /// Frames both ways.
    Open,
    /// The session's output ended: write what is left, then shut the write side.
    Closing,
    /// Write side shut: discard the client's input until it closes or the
    /// timer fires.
    Lingering(Pin<Box<tokio::time::Sleep>>),
}

/// Serves an upgraded socket until the session's output ends and the
/// client has closed (or [`LINGER`] passed), or the socket fails.
pub struct Upgraded<T> {
    io: T,
    served: Box<dyn Served>,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Written since the last completed flush (TLS keeps records buffered).
    unflushed: bool,
    /// The client's side has ended: at the end nothing is left to drain.
    client_ended: bool,
    phase: Phase,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Upgraded<T> {
    /// `head`: the response head already encoded, written first;
    /// `served`: what the connection serves from then on.
    pub fn new(io: T, head: Bytes, served: Box<dyn Served>) -> Self {
        let out_bytes = head.len();
        let mut out = VecDeque::new();
        if !head.is_empty() {
            out.push_back(head);
        }
        Upgraded {
            io,
            served,
            out,
            out_bytes,
            unflushed: false,
            client_ended: false,
            phase: Phase::Open,
        }
    }

    /// Takes the output while there is room; true if any came. A failed
    /// output ends the connection.
    fn fill(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        let mut any = false;
        while matches!(self.phase, Phase::Open)
            && self.out_bytes < MAX_OUT_BYTES
            && self.out.len() < MAX_OUT_CHUNKS
        {
            match self.served.poll_output(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    any = true;
                    if !chunk.is_empty() {
                        self.out_bytes += chunk.len();
                        self.out.push_back(chunk);
                    }
                }
                Poll::Ready(Some(Err(()))) => return Err(()),
                Poll::Ready(None) => {
                    self.phase = Phase::Closing;
                    return Ok(true);
                }
                Poll::Pending => break,
            }
        }
        Ok(any)
    }

    /// Writes what waits, in one vectored write; true if any was written.
    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if self.out.is_empty() {
            return Ok(false);
        }
        let io = Pin::new(&mut self.io);
        // One chunk (a wake's frames, the common case): a plain write,
        // which costs the kernel less than a vectored one.
        let result = if self.out.len() == 1 {
            io.poll_write(cx, &self.out[0])
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_OUT_CHUNKS];
            let count = self.out.len().min(MAX_OUT_CHUNKS);
            for (slice, chunk) in slices.iter_mut().zip(&self.out) {
                *slice = IoSlice::new(chunk);
            }
            io.poll_write_vectored(cx, &slices[..count])
        };
        let mut written = match result {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(error)) => return Err(error),
            Poll::Pending => return Ok(false),
        };
        self.out_bytes -= written;
        self.unflushed = true;
        while written > 0 {
            let Some(front) = self.out.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                self.out.pop_front();
            } else {
                let _ = front.split_to(written);
                written = 0;
            }
        }
        // A burst's slots are not kept for an idle connection's life.
        if self.out.is_empty() && self.out.capacity() > KEPT_OUT_SLOTS {
            self.out = VecDeque::new();
        }
        Ok(true)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Upgraded<T> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.served.poll_begins();
        for _ in 0..ROUNDS_PER_POLL {
            if let Phase::Lingering(timer) = &mut this.phase {
                if drain(&mut this.io, cx).is_ready() || timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
            let fed = match this.phase {
                Phase::Open => feed(&mut this.io, &mut *this.served, cx),
                _ => Fed::Nothing,
            };
            this.client_ended |= fed == Fed::Ended;
            let read = fed != Fed::Nothing;
            let Ok(filled) = this.fill(cx) else {
                return Poll::Ready(());
            };
            let wrote = match this.write(cx) {
                Ok(wrote) => wrote,
                Err(error) => {
                    tracing::debug!(%error, "socket write failed");
                    return Poll::Ready(());
                }
            };
            // TLS keeps what it accepted in its records until flushed: a
            // frame must not wait there for the session's next write.
            if this.unflushed {
                match Pin::new(&mut this.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => this.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if matches!(this.phase, Phase::Closing) && this.out.is_empty() {
                // The client has closed its side already: no input can be
                // left unread, so closing sends no reset, and nobody is
                // left to wait for (no shutdown, no linger).
                if this.client_ended && !this.unflushed {
                    return Poll::Ready(());
                }
                match Pin::new(&mut this.io).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {
                        this.phase = Phase::Lingering(Box::pin(tokio::time::sleep(LINGER)));
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !(read || filled || wrote) {
                return Poll::Pending;
            }
        }
        // Busy: let the worker's other connections run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Chunk = Result<Bytes, std::convert::Infallible>;

    /// A session's output: `stream`'s chunks.
    fn streamed(stream: impl futures_util::Stream<Item = Chunk> + 'static) -> BoxBody {
        BoxBody::new(actix_http::body::BodyStream::new(stream))
    }

    /// Serves `io`: `head`, then `body`, the client's bytes going to `sender`.
    fn serve<T: AsyncRead + AsyncWrite + Unpin + 'static>(
        io: T,
        head: &'static [u8],
        body: BoxBody,
        sender: inbound::Sender,
    ) -> actix_web::rt::task::JoinHandle<()> {
        let served = Box::new(Body::new(body, Payload::new(Some(sender))));
        actix_web::rt::spawn(Upgraded::new(io, Bytes::from_static(head), served))
    }

    fn body_of(chunks: Vec<&'static [u8]>) -> BoxBody {
        streamed(futures_util::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    #[actix_web::test]
    async fn head_and_output_are_written_in_order_then_the_socket_is_shut() {
        let (server, mut client) = tokio::io::duplex(64);
        let (sender, mut payload) = inbound::channel();
        sender.put(Bytes::from_static(b"early"));
        let task = serve(
            server,
            b"HEAD|",
            body_of(vec![b"one|", b"", b"two"]),
            sender,
        );
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HEAD|one|two");
        assert_eq!(payload.next().await.unwrap().unwrap(), "early");
        drop(client);
        task.await.unwrap();
    }

    #[actix_web::test]
    async fn what_a_buffering_stream_accepted_is_flushed_without_more_output() {
        // BufWriter holds writes until flushed, as rustls does with records.
        let (server, mut client) = tokio::io::duplex(4096);
        let (sender, _payload) = inbound::channel();
        let first = futures_util::stream::iter([Ok(Bytes::from_static(b"frame"))]);
        let body = streamed(first.chain(futures_util::stream::pending()));
        let task = serve(tokio::io::BufWriter::new(server), b"", body, sender);
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut got))
            .await
            .expect("the frame was flushed")
            .unwrap();
        assert_eq!(&got, b"frame");
        task.abort();
    }

    #[actix_web::test]
    async fn client_bytes_reach_the_payload_one_read_at_a_time_then_its_end() {
        let (server, mut client) = tokio::io::duplex(64);
        let (sender, mut payload) = inbound::channel();
        // A session that never ends its output on its own.
        let body = streamed(futures_util::stream::pending());
        let task = serve(server, b"", body, sender);
        client.write_all(b"abc").await.unwrap();
        assert_eq!(payload.next().await.unwrap().unwrap(), "abc");
        client.write_all(b"def").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(payload.next().await.unwrap().unwrap(), "def");
        assert!(
            payload.next().await.is_none(),
            "the client's end ends the payload"
        );
        task.abort();
    }

    #[actix_web::test]
    async fn a_client_that_stops_reading_holds_back_the_session_not_memory() {
        // 16-byte pipe: the socket fills at once.
        let (server, client) = tokio::io::duplex(16);
        let (sender, _payload) = inbound::channel();
        static CHUNK: [u8; 1024] = [b'x'; 1024];
        let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = polled.clone();
        let stream = futures_util::stream::repeat_with(move || {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Bytes::from_static(&CHUNK))
        });
        let body = streamed(stream);
        let task = serve(server, b"", body, sender);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let taken = polled.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            taken <= MAX_OUT_BYTES / CHUNK.len() + 1,
            "took {taken} chunks with nothing written"
        );
        drop(client);
        task.await.unwrap();
    }

    /// A socket that counts the shutdowns of its write side.
    struct CountsShutdowns<T> {
        io: T,
        shutdowns: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for CountsShutdowns<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for CountsShutdowns<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shutdowns.set(self.shutdowns.get() + 1);
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[actix_web::test]
    async fn after_the_client_closed_the_output_is_written_and_nothing_shut_or_drained() {
        for client_closes_first in [true, false] {
            let (server, mut client) = tokio::io::duplex(64);
            let shutdowns = std::rc::Rc::new(std::cell::Cell::new(0));
            let server = CountsShutdowns {
                io: server,
                shutdowns: shutdowns.clone(),
            };
            let (sender, _payload) = inbound::channel();
            // The output ends a little after the start: the client's close
            // comes first when it closes at once.
            let late = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Bytes::from_static(b"bye"))
            });
            let task = serve(server, b"", streamed(late), sender);
            if client_closes_first {
                client.shutdown().await.unwrap();
            }
            let mut got = Vec::new();
            let mut chunk = [0u8; 16];
            while got.len() < 3 {
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the output was cut");
                got.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(got, b"bye");
            if !client_closes_first {
                client.shutdown().await.unwrap();
            }
            tokio::time::timeout(LINGER / 2, task)
                .await
                .expect("ended once both sides closed")
                .unwrap();
            let expected = usize::from(!client_closes_first);
            assert_eq!(
                shutdowns.get(),
                expected,
                "client closed first: {client_closes_first}"
            );
        }
    }

    #[actix_web::test]
    async fn a_client_that_never_closes_is_let_go_after_the_linger() {
        let (server, mut client) = tokio::io::duplex(64);
        let (sender, _payload) = inbound::channel();
        let task = serve(server, b"bye", body_of(vec![]), sender);
        let mut got = [0u8; 3];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bye");
        // The client keeps its side open: the server lets go after LINGER.
        tokio::time::timeout(LINGER * 2, task)
            .await
            .expect("let go after the linger")
            .unwrap();
        drop(client);
    }
}
