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
//! The watch closes a connection through its [`Closer`] (serve.rs: the
//! connection's task ends, and its socket closes with it). The closer is
//! let go as soon as the connection is upgraded to a WebSocket (101), which
//! has its own keep-alive (`activity_timeout`).

use crate::metrics::Metrics;
use crate::serve::Closer;
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long actix-web keeps an idle connection open between requests (its
/// default, set explicitly by the server so the two stay the same).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The next-head deadline of one connection, kept in its data
/// (`HttpRequest::conn_data::<Arc<NextHead>>`).
pub struct NextHead {
    /// Ends the connection; `None` once upgraded.
    closer: Mutex<Option<Closer>>,
    /// Requests of the connection started and whose response is not fully
    /// sent yet (more than one only when a client pipelines).
    running: AtomicUsize,
    /// When the next head is due, in milliseconds after `epoch`; moved
    /// forward by each response end.
    deadline_ms: AtomicU64,
    /// Whether a timer task is waiting for the deadline: at most one per
    /// connection, however many requests it serves.
    timer: AtomicBool,
    epoch: Instant,
    timeout: Duration,
    metrics: Metrics,
}

impl NextHead {
    /// Watches the connection `closer` ends, giving each next head
    /// `header_timeout` after the [`KEEP_ALIVE`] wait; `None` when
    /// `header_timeout` is 0 (off).
    pub fn watch(closer: Closer, header_timeout: Duration, metrics: Metrics) -> Option<Arc<Self>> {
        Self::with_timeout(closer, header_timeout, KEEP_ALIVE + header_timeout, metrics)
    }

    fn with_timeout(
        closer: Closer,
        header_timeout: Duration,
        timeout: Duration,
        metrics: Metrics,
    ) -> Option<Arc<Self>> {
        if header_timeout.is_zero() {
            return None;
        }
        Some(Arc::new(NextHead {
            closer: Mutex::new(Some(closer)),
            running: AtomicUsize::new(0),
            deadline_ms: AtomicU64::new(0),
            timer: AtomicBool::new(false),
            epoch: Instant::now(),
            timeout,
            metrics,
        }))
    }

    /// A request head is complete: no deadline while it runs.
    pub fn request_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
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

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn response_ended(self: &Arc<Self>) {
        let deadline = self
            .now_ms()
            .saturating_add(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX));
        self.deadline_ms.store(deadline, Ordering::Release);
        let before = self.running.fetch_sub(1, Ordering::AcqRel);
        if before != 1 || self.lock().is_none() || self.timer.swap(true, Ordering::AcqRel) {
            // Another request runs (its end arms it again), the connection
            // is a WebSocket, or the waiting timer will see the new deadline.
            return;
        }
        let watch = Arc::downgrade(self);
        actix_web::rt::spawn(async move {
            loop {
                let Some(due) = watch.upgrade().map(|w| w.epoch + w.deadline()) else {
                    return;
                };
                tokio::time::sleep_until(due.into()).await;
                let Some(watch) = watch.upgrade() else {
                    return;
                };
                if !watch.wait_more() {
                    return;
                }
            }
        });
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.load(Ordering::Acquire))
    }

    /// The timer woke: closes the connection if its deadline passed with no
    /// request running; says whether the timer must wait on (a later
    /// deadline was set since it went to sleep).
    fn wait_more(&self) -> bool {
        let overdue = |watch: &Self| watch.deadline_ms.load(Ordering::Acquire) <= watch.now_ms();
        if !overdue(self) {
            return true;
        }
        if self.running.load(Ordering::Acquire) == 0 {
            if let Some(closer) = self.lock().as_ref() {
                self.metrics.limit_refused("request_header_timeout");
                closer.close();
            }
            return false;
        }
        // A request runs: the timer ends; its response's end arms a new one.
        // That end may have come just now and seen this timer still waiting:
        // then take the wait on again.
        self.timer.store(false, Ordering::Release);
        self.running.load(Ordering::Acquire) == 0
            && !overdue(self)
            && !self.timer.swap(true, Ordering::AcqRel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Closer>> {
        // Only this connection's thread and its timer take it, never across
        // an await: a poisoned lock still holds a valid closer.
        self.closer
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

    /// A client's socket, and the closer of the task holding the server's
    /// end (as serve.rs's connection tasks do).
    fn connection() -> (TcpStream, Closer) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let task = actix_web::rt::spawn(async move {
            let _server = server;
            std::future::pending::<()>().await;
        });
        (client, Closer::of(&task))
    }

    fn short_watch(closer: Closer) -> Arc<NextHead> {
        let ms = Duration::from_millis(100);
        NextHead::with_timeout(closer, ms, ms, Metrics::new()).unwrap()
    }

    fn closed(client: &mut TcpStream) -> bool {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        matches!(client.read(&mut [0u8; 1]), Ok(0))
    }

    #[actix_web::test]
    async fn an_idle_connection_after_its_response_is_closed_after_the_timeout() {
        let (mut client, closer) = connection();
        let watch = short_watch(closer);
        watch.request_started();
        drop(watch.response_token());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            closed(&mut client),
            "no next head within the timeout: closed"
        );
    }

    #[actix_web::test]
    async fn requests_in_time_keep_it_open_with_one_timer_then_idle_closes_it() {
        let (mut client, closer) = connection();
        let watch = short_watch(closer);
        for _ in 0..6 {
            watch.request_started();
            drop(watch.response_token());
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert!(!closed(&mut client), "each head came within 100 ms");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(closed(&mut client), "then none: closed");
    }

    #[actix_web::test]
    async fn a_running_request_or_a_new_head_or_an_upgrade_disarms_it() {
        for case in ["running", "next", "upgraded"] {
            let (mut client, closer) = connection();
            let watch = short_watch(closer);
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
