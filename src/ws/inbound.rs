//! The bytes an upgrade request's client sends while the app answers it
//! (and, for an answer other than 101, until it is written), handed from
//! the socket to the request's payload stream one read at a time. A
//! WebSocket session reads the socket itself ([`super::context`]); what its
//! handler left unread here is handed to it.
//!
//! actix-http's own payload channel cannot be named outside actix-http, so
//! [`super::socket`] feeds this one: a single slot (one socket read, at
//! most [`super::socket::READ_CHUNK`] bytes), filled only when the reader
//! has taken the previous chunk. The socket is read no faster than the
//! reader consumes: nothing is queued beyond one read.
//!
//! Both ends live in the connection's task (the payload stream is polled by
//! the request's handler, which the upgrade service polls), so the shared
//! state is an `Rc<RefCell>`, never locked across threads.

use actix_http::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// What the slot holds.
#[derive(Debug, Default)]
struct Slot {
    chunk: Option<Bytes>,
    /// The client closed its side, or reading failed (then `error`).
    ended: bool,
    error: Option<std::io::Error>,
    /// The reader's waker, woken when a chunk or the end arrives.
    waker: Option<Waker>,
    /// The socket side's waker, woken when the reader takes a chunk (the
    /// same task in the server; kept right for any reader).
    sender_waker: Option<Waker>,
}

/// The socket's end: puts what it read.
#[derive(Debug)]
pub struct Sender(Rc<RefCell<Slot>>);

/// The payload's end: a stream of the chunks, then the end or an error.
#[derive(Debug)]
pub struct Receiver(Rc<RefCell<Slot>>);

/// A connected pair.
pub fn channel() -> (Sender, Receiver) {
    let slot = Rc::new(RefCell::new(Slot::default()));
    (Sender(slot.clone()), Receiver(slot))
}

impl Sender {
    /// Whether the slot is free for the next read (the reader took the last
    /// chunk); if not, `cx` is woken when it is. False once the reader is
    /// gone: nothing more is wanted.
    pub fn wants(&self, cx: &mut Context<'_>) -> bool {
        if self.reader_gone() {
            return false;
        }
        let mut slot = self.0.borrow_mut();
        if slot.chunk.is_none() {
            return true;
        }
        set_waker(&mut slot.sender_waker, cx);
        false
    }

    /// Whether the payload stream has been dropped (the session ended or
    /// never read).
    pub fn reader_gone(&self) -> bool {
        Rc::strong_count(&self.0) == 1
    }

    /// Puts a chunk in the free slot (call only when [`Sender::wants`]).
    pub fn put(&self, chunk: Bytes) {
        let mut slot = self.0.borrow_mut();
        debug_assert!(slot.chunk.is_none(), "put into a full slot");
        slot.chunk = Some(chunk);
        wake(&mut slot);
    }

    /// Takes back the chunk put and not read (the request's handler did not
    /// read the payload: the bytes are the upgraded protocol's).
    pub fn take_unread(&self) -> Option<Bytes> {
        self.0.borrow_mut().chunk.take()
    }

    /// The client closed its side: the stream ends after the last chunk.
    pub fn end(&self) {
        let mut slot = self.0.borrow_mut();
        slot.ended = true;
        wake(&mut slot);
    }

    /// Reading failed: the stream ends with `error` after the last chunk.
    pub fn fail(&self, error: std::io::Error) {
        let mut slot = self.0.borrow_mut();
        slot.ended = true;
        slot.error = Some(error);
        wake(&mut slot);
    }
}

fn set_waker(waker: &mut Option<Waker>, cx: &Context<'_>) {
    match waker {
        Some(waker) => waker.clone_from(cx.waker()),
        None => *waker = Some(cx.waker().clone()),
    }
}

fn wake(slot: &mut Slot) {
    if let Some(waker) = slot.waker.take() {
        waker.wake();
    }
}

impl Stream for Receiver {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut slot = self.0.borrow_mut();
        if let Some(chunk) = slot.chunk.take() {
            if let Some(waker) = slot.sender_waker.take() {
                waker.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if slot.ended {
            return Poll::Ready(slot.error.take().map(|e| Err(PayloadError::Io(e))));
        }
        set_waker(&mut slot.waker, cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn chunks_pass_one_at_a_time_then_the_end() {
        let waker = futures_util::task::noop_waker();
        let cx = &mut Context::from_waker(&waker);
        let (sender, mut receiver) = channel();
        assert!(sender.wants(cx));
        sender.put(Bytes::from_static(b"ab"));
        assert!(!sender.wants(cx), "one chunk at a time");
        assert_eq!(receiver.next().await.unwrap().unwrap(), "ab");
        assert!(sender.wants(cx));
        sender.put(Bytes::from_static(b"c"));
        sender.end();
        assert_eq!(receiver.next().await.unwrap().unwrap(), "c");
        assert!(receiver.next().await.is_none());
    }

    #[tokio::test]
    async fn a_read_error_ends_the_stream_with_it() {
        let (sender, mut receiver) = channel();
        sender.fail(std::io::ErrorKind::ConnectionReset.into());
        assert!(matches!(
            receiver.next().await,
            Some(Err(PayloadError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset
        ));
        assert!(receiver.next().await.is_none());
    }

    #[test]
    fn nothing_is_wanted_once_the_reader_is_gone() {
        let (sender, receiver) = channel();
        assert!(!sender.reader_gone());
        drop(receiver);
        assert!(sender.reader_gone());
        let waker = futures_util::task::noop_waker();
        assert!(!sender.wants(&mut Context::from_waker(&waker)));
    }
}
