//! The request header timeout for the *next* request of a kept-alive
//! connection (`limits.request_header_timeout_ms`), which actix-web does not
//! enforce.
//!
//! actix-web times only a connection's first request head
//! (`client_request_timeout`). Between requests it runs its keep-alive
//! timer, but clears it at the first byte read and starts no head timer
//! again: a client that sends one complete request, then a single byte of the
//! next one, holds the connection for ever, and it no longer counts as
//! half-open (`half_open`), so `max_half_open_per_ip` does not bound it
//! either. This watch closes such connections: when a response has been
//! sent in full (its body dropped) and no other request of the connection is
//! running, the connection has [`KEEP_ALIVE`] (the idle wait actix-web
//! enforces itself, closing an idle connection uncounted) plus
//! `request_header_timeout_ms` to complete its next request head; the start
//! of a request (a complete head) disarms it. So the watch only ever closes a
//! connection that started a request head and did not finish it, counted as
//! `request_header_timeout` in `rusher_limit_refusals_total`.
//!
//! Closing a connection from outside its dispatcher needs its socket: the
//! watch keeps a duplicate of the file descriptor (`dup`) and shuts the
//! socket down through it (`shutdown` acts on the socket, not the
//! descriptor, so the dispatcher reads end-of-stream and drops the
//! connection). The duplicate lives exactly as long as the connection's data
//! (it is dropped with it, so it never keeps a closed connection's socket
//! open), and is let go as soon as the connection is upgraded to a WebSocket
//! (101), which has its own keep-alive (`activity_timeout`): long-lived
//! sockets do not pay a second descriptor.

use crate::metrics::Metrics;
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

/// How long actix-web keeps an idle connection open between requests (its
/// default, set explicitly by the server so the two stay the same).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The next-head deadline of one connection, kept in its data
/// (`HttpRequest::conn_data::<Arc<NextHead>>`).
pub struct NextHead {
    /// The duplicated socket; `None` once upgraded.
    socket: Mutex<Option<socket2::Socket>>,
    /// Requests of the connection started and whose response is not fully
    /// sent yet (more than one only when a client pipelines).
    running: AtomicUsize,
    /// Bumped by every request start and response end, so a timer armed
    /// before knows it is stale.
    generation: AtomicU64,
    timeout: Duration,
    metrics: Metrics,
}

impl NextHead {
    /// Watches the connection whose socket is `socket` (duplicated here),
    /// giving each next head `header_timeout` after the [`KEEP_ALIVE`] wait;
    /// `None` when `header_timeout` is 0 (off) or the descriptor cannot be
    /// duplicated (the connection is then served without the watch).
    pub fn watch(
        socket: socket2::SockRef<'_>,
        header_timeout: Duration,
        metrics: Metrics,
    ) -> Option<Arc<Self>> {
        Self::with_timeout(socket, header_timeout, KEEP_ALIVE + header_timeout, metrics)
    }

    fn with_timeout(
        socket: socket2::SockRef<'_>,
        header_timeout: Duration,
        timeout: Duration,
        metrics: Metrics,
    ) -> Option<Arc<Self>> {
        if header_timeout.is_zero() {
            return None;
        }
        let socket = socket.try_clone().ok()?;
        Some(Arc::new(NextHead {
            socket: Mutex::new(Some(socket)),
            running: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            timeout,
            metrics,
        }))
    }

    /// A request head is complete: no deadline while it runs.
    pub fn request_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The connection became a WebSocket: the watch is over.
    pub fn upgraded(&self) {
        self.lock().take();
    }

    /// The guard to put into a response body (see [`Watched`]): when the body
    /// is dropped (sent in full, or the connection closed) the deadline is
    /// armed if no other request of the connection runs.
    pub fn response_token(self: &Arc<Self>) -> ResponseEnd {
        ResponseEnd(Arc::downgrade(self))
    }

    fn response_ended(self: &Arc<Self>) {
        let before = self.running.fetch_sub(1, Ordering::AcqRel);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if before != 1 || self.lock().is_none() {
            return;
        }
        let watch = Arc::downgrade(self);
        let timeout = self.timeout;
        actix_web::rt::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(watch) = watch.upgrade() {
                watch.expire(generation);
            }
        });
    }

    /// The timer armed at `generation` fired: close the connection if
    /// nothing happened since.
    fn expire(&self, generation: u64) {
        if self.generation.load(Ordering::Acquire) != generation
            || self.running.load(Ordering::Acquire) != 0
        {
            return;
        }
        if let Some(socket) = self.lock().as_ref() {
            self.metrics.limit_refused("request_header_timeout");
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<socket2::Socket>> {
        // Only this connection's thread and its timer take it, never across
        // an await: a poisoned lock still holds a valid socket.
        self.socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Arms the connection's deadline when dropped (see
/// [`NextHead::response_token`]); holds only a weak reference, so it never
/// keeps the connection's socket alive.
pub struct ResponseEnd(Weak<NextHead>);

impl Drop for ResponseEnd {
    fn drop(&mut self) {
        if let Some(watch) = self.0.upgrade() {
            watch.response_ended();
        }
    }
}

/// A response body carrying a [`ResponseEnd`]: the same bytes, and the
/// deadline armed when the dispatcher drops it after its last chunk.
pub struct Watched<B> {
    body: B,
    _end: Option<ResponseEnd>,
}

impl<B> Watched<B> {
    /// `body`, arming `end` (if any) when dropped.
    pub fn new(body: B, end: Option<ResponseEnd>) -> Self {
        Watched { body, _end: end }
    }
}

impl<B: MessageBody + Unpin> MessageBody for Watched<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn short_watch(server: &TcpStream) -> Arc<NextHead> {
        let ms = Duration::from_millis(100);
        NextHead::with_timeout(socket2::SockRef::from(server), ms, ms, Metrics::new()).unwrap()
    }

    fn closed(client: &mut TcpStream) -> bool {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        matches!(client.read(&mut [0u8; 1]), Ok(0))
    }

    #[actix_web::test]
    async fn an_idle_connection_after_its_response_is_closed_after_the_timeout() {
        let (mut client, server) = pair();
        let watch = short_watch(&server);
        watch.request_started();
        drop(watch.response_token());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            closed(&mut client),
            "no next head within the timeout: closed"
        );
    }

    #[actix_web::test]
    async fn a_running_request_or_a_new_head_or_an_upgrade_disarms_it() {
        for case in ["running", "next", "upgraded"] {
            let (mut client, server) = pair();
            let watch = short_watch(&server);
            watch.request_started();
            let first = watch.response_token();
            match case {
                // A pipelined second request still running.
                "running" => {
                    watch.request_started();
                    drop(first);
                }
                "next" => {
                    drop(first);
                    watch.request_started();
                }
                _ => {
                    watch.upgraded();
                    drop(first);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert!(!closed(&mut client), "{case}: kept open");
        }
    }
}
